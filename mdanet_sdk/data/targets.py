"""Where results may be written: a mask or probability map never replaces an image mdanet-sdk did not write,
and a JSON or CSV report replaces only an earlier report (never an image, its metadata sidecar, a model, a
training run's records or a user's document)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from mdanet_sdk.data.nifti import IMAGE_NAME_SUFFIXES, NIFTI_SUFFIXES, header_shape, is_prediction, named_like_image
from mdanet_sdk.errors import InputError

__all__ = ["check_output_file", "check_report_file"]


def check_output_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as a :class:`~pathlib.Path` if a result may be written there: a ``.nii``/``.nii.gz`` name that is
    not a folder and does not hold an image other than an earlier prediction (:func:`is_prediction`; every file
    :func:`save_like` writes is marked). So an input scan or an expert mask is never replaced, whatever its
    name; an unreadable leftover may be.

    Raises:
        InputError: what is wrong, and what to do.
    """
    path = Path(path)
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise InputError(f"output {path} must end in .nii or .nii.gz; choose such a file name.")
    if path.is_dir():
        raise InputError(f"output {path} is a folder; give a file name ending in .nii.gz.")
    if path.exists() and header_shape(path) is not None and not is_prediction(path):
        raise InputError(
            f"output {path} is an existing image that mdanet-sdk did not write (an input or a label?); "
            "choose another output name, or remove that file first."
        )
    return path


def check_picture_file(path: str | os.PathLike[str], what: str = "picture") -> Path:
    """``path`` as a :class:`~pathlib.Path` if a PNG may be written there: a ``.png`` name, not a folder, and no
    existing file other than a PNG (an earlier plot or overlay may be replaced; a mask, a scan or a checkpoint
    named ``.png`` may not).

    Raises:
        InputError: what is wrong, and what to do.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"{what} {path} must be a .png file; choose such a file name.")
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; give a file name such as plot.png.")
    if path.exists():
        with open(path, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                raise InputError(f"{what} {path} exists and is no PNG (an image, a model?); choose another name.")
    return path


def _is_text(path: Path) -> bool:
    """Whether the start of a file reads as UTF-8 text without NUL bytes (a report, not a model or archive)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return True  # the write will say why it fails
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the end of the 4 KiB read
            return False
    return b"\0" not in head


#: The files a training run keeps about itself: in its folder, and in each ``fold_N`` beside the checkpoints.
_RUN_RECORDS = frozenset({"config.json", "results.json", "metrics.json", "val_metrics.json", "metrics.csv"})


def _run_record(path: Path) -> bool:
    """Whether ``path`` is an existing record of a training run (its folder holds ``config.json`` and ``fold_*``
    folders, or is a fold holding ``best.pt`` / ``last.pt``)."""
    if path.name not in _RUN_RECORDS or not path.is_file():
        return False
    folder = path.parent
    run = (folder / "config.json").is_file() and any(p.is_dir() for p in folder.glob("fold_*"))
    return run or any((folder / name).is_file() for name in ("best.pt", "last.pt"))


#: An existing file this large is no report of ours (a segment report of 10 000 cases is ~10 MB).
_MAX_REPORT_BYTES = 256 << 20


#: Top-level keys that together mark a JSON report of ours, by the command that writes it (every version):
#: segment's run and shard reports, evaluate, info, summary; benchmark and gpu_check name their ``schema``.
_REPORT_KEYS = (
    {"cases", "failed"},
    {"over", "summary", "f1_of_means"},
    {"mdanet_sdk", "torch", "device"},
    {"preset", "params", "gflops_per_slice"},
)


def _earlier_report(path: Path, kind: Literal["json", "csv"]) -> bool:
    """Whether the existing file ``path`` may be replaced by a ``kind`` report: an empty file (``mktemp``'s), or a
    report of ours (JSON: an object with the keys of one of :data:`_REPORT_KEYS` or an ``mdanet-sdk``
    schema; CSV: evaluate's per-case table, whose header starts ``case_id,fold,``), not a user's document that
    happens to be JSON or CSV (a BIDS ``dataset_description.json``, nnU-Net's ``dataset.json``, a cohort table)."""
    size = path.stat().st_size
    if size == 0:
        return True
    if size > _MAX_REPORT_BYTES:
        return False
    try:
        with open(path, encoding="utf-8") as f:
            if kind == "csv":
                return f.readline().startswith("case_id,fold,")
            doc = json.load(f)
    except (OSError, ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return False
    if not isinstance(doc, dict):
        return False
    return str(doc.get("schema", "")).startswith("mdanet-sdk") or any(keys <= doc.keys() for keys in _REPORT_KEYS)


def check_report_file(path: str | os.PathLike[str], kind: Literal["json", "csv"] = "json") -> Path:
    """``path`` as a :class:`~pathlib.Path` if a JSON or CSV report may be written there: not a folder, not named
    or readable like an image, not an existing file other than an earlier report of that ``kind`` (a checkpoint,
    a document, a script; :func:`_earlier_report`), not a training run's own records, and not named as the
    sidecar of an image beside it (``sub-01_dwi.json`` next to ``sub-01_dwi.nii.gz``: BIDS keeps the acquisition's
    parameters there), whether that sidecar exists yet or not. A scan, a mask, its metadata or a user's file is
    never replaced by a report, and a report never poses as an image's metadata.

    Raises:
        InputError: what is wrong, and what to do.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"report {path} is a folder; give a file name such as report.json.")
    if named_like_image(path) or (path.exists() and header_shape(path) is not None):
        raise InputError(f"report {path} is named or stored like an image; choose a name such as report.json.")
    if path.is_file() and not _is_text(path):
        raise InputError(
            f"report {path} exists and holds binary data (a model, an archive?); choose a name such as report.json."
        )
    if _run_record(path):
        raise InputError(
            f"report {path} would replace the training run's own {path.name}, which resuming and adding folds "
            "read; choose another name, such as evaluation.json."
        )
    stem = path.name.rsplit(".", 1)[0]
    image = next((p for p in (path.with_name(stem + s) for s in IMAGE_NAME_SUFFIXES) if p.exists()), None)
    if image is not None:
        raise InputError(
            f"report {path} is named as the metadata sidecar of {image.name} beside it; choose another name, "
            f"such as {stem}_report{path.suffix or '.json'}."
        )
    if path.is_file() and not _earlier_report(path, kind):
        raise InputError(
            f"report {path} exists and is no earlier {kind.upper()} report of mdanet-sdk (a document, a dataset's "
            "metadata, a script?); choose another name, or remove that file first."
        )
    return path
