"""Resuming an interrupted run (``skip_existing``): which cases' outputs are complete already.

Our own writes are atomic (a mask is there whole or not at all), but an output folder may hold files from
elsewhere: a copy cut short, a file from another tool. So an existing output counts only when it is whole,
judged cheaply from its header and size, without reading the voxels: a NIfTI whose header loads, which is 3D
on the grid (shape and affine) of the case's input, newer than every input file, marked as made by the same
weights and post-processing as this run's (:func:`~mdanet_sdk.report.results_digest`), and whose data is all there (the file size of a ``.nii``; the length recorded
in the gzip trailer of a ``.nii.gz``); a PNG that ends with its ``IEND`` chunk.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import nibabel as nib
import numpy as np
from nibabel.spatialimages import SpatialImage

from mdanet_sdk._text import without_surrogates
from mdanet_sdk.data.cases import AFFINE_TOL_MM, FOURD_KEY
from mdanet_sdk.data.nifti import PREDICTION_MARK, header_descrip
from mdanet_sdk.errors import InputError
from mdanet_sdk.inference.planning import Job
from mdanet_sdk.report import CaseReport, report_document

__all__ = ["SkippedCase", "outputs_complete", "nifti_complete", "earlier_reports", "run_document"]

_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: the last 8 bytes of every whole PNG


@dataclass
class SkippedCase:
    """A case not run again because its outputs were complete (``skip_existing=True``).

    Attributes:
        case_id: the case's id.
        outputs: its existing files, role (``"mask"``, ``"prob"``, ``"overlay"``) -> path.
    """

    ok: ClassVar[bool] = True
    skipped: ClassVar[bool] = True

    case_id: str
    outputs: dict[str, Path] = field(default_factory=dict)


def _gzip_size(path: Path) -> int | None:
    """The uncompressed size (mod 2**32) a gzip file's trailer records, or ``None`` if it is no gzip file."""
    with open(path, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            return None
        f.seek(-4, os.SEEK_END)
        return int.from_bytes(f.read(4), "little")


def nifti_complete(
    path: Path, shape: Sequence[int] | None = None, affine: np.ndarray | None = None, made_with: str | None = None
) -> bool:
    """Whether ``path`` is a whole 3D NIfTI (of ``shape`` and ``affine``, and written by the weights and settings
    ``made_with`` names (:func:`~mdanet_sdk.report.results_digest`), when given), judged from its header and size.

    A ``.nii.gz`` cut short is caught by its trailer, whose recorded length then is compressed data that
    matches the expected length only by chance (1 in 2**32); a file written as several gzip members is not
    recognised and counts as incomplete (it is redone, never wrongly kept).
    """
    try:
        image = cast(SpatialImage, nib.load(path))
        header = cast(Any, image.header)  # a NIfTI header (nib.load gave a NIfTI image)
        if len(image.shape) != 3 or (shape is not None and tuple(image.shape) != tuple(shape[:3])):
            return False
        if affine is not None and not np.allclose(image.affine, affine, atol=AFFINE_TOL_MM):
            return False  # the input was moved or stored otherwise since: the mask would not line up
        if made_with is not None and header_descrip(header) != f"{PREDICTION_MARK} {made_with}":
            return False  # other weights or settings made it (or an older mdanet-sdk that did not say)
        # The proxy's offset is where the voxels start in this file (the header copy may say 0).
        offset = int(cast(Any, image.dataobj).offset)
        expected = offset + int(np.prod(image.shape)) * header.get_data_dtype().itemsize
        recorded = _gzip_size(path)
        if recorded is None:
            return not path.name.endswith(".gz") and path.stat().st_size >= expected
        return recorded == expected % 2**32
    except Exception:  # noqa: BLE001 - any unreadable or odd file is simply not complete: it is redone
        return False


def _png_complete(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                return False
            f.seek(-len(_PNG_END), os.SEEK_END)
            return f.read() == _PNG_END
    except OSError:
        return False


def _input_grid(job: Job) -> tuple[tuple[int, ...], np.ndarray] | None:
    """The voxel grid (shape, affine) of the case's first input file (header only), or ``None`` if it is no
    readable NIfTI."""
    if job.source is None or not job.source.paths:
        return None
    path = job.source.paths.get(FOURD_KEY) or next(iter(job.source.paths.values()))
    try:
        image = cast(SpatialImage, nib.load(path))
    except Exception:  # noqa: BLE001 - other formats (DICOM, .mha): the mask is judged on its own
        return None
    return tuple(int(n) for n in image.shape[:3]), np.asarray(image.affine)


def _newest_input(job: Job) -> float:
    """When the case's newest input file (images and brain mask) was last changed (0 when unknown)."""
    source = job.source
    paths = [*source.paths.values(), *([source.brain_mask_path] if source.brain_mask_path else [])] if source else []
    try:
        return max((p.stat().st_mtime for p in paths), default=0.0)
    except OSError:
        return 0.0


def outputs_complete(job: Job, made_with: str | None) -> bool:
    """Whether every output the job asks for (mask, probability map, overlay) exists, is whole, lies on the
    input's grid, is newer than every input file (an input replaced since is segmented again) and, for the
    NIfTI outputs, was made by the weights and settings ``made_with`` names (``None``: unknown, so not kept)."""
    if job.error is not None or "mask" not in job.outputs or made_with is None:
        return False
    grid = _input_grid(job)
    shape, affine = grid if grid is not None else (None, None)
    newest = _newest_input(job)
    for role, path in job.outputs.items():
        whole = _png_complete(path) if role == "overlay" else nifti_complete(path, shape, affine, made_with)
        try:
            if not whole or path.stat().st_mtime < newest:
                return False
        except OSError:
            return False
    return True


#: An earlier report larger than this is not read for entries to carry (a report lists ~1 kB per case).
MAX_EARLIER_REPORT_BYTES = 64 * 2**20


def earlier_reports(
    paths: Sequence[Path], skipped: Sequence[SkippedCase], made_with: Mapping[str, str | None]
) -> list[CaseReport]:
    """The report entries of the ``skipped`` cases in an earlier run's JSON report at one of ``paths`` (the first
    that lists the case), so that a resumed run's report still holds every case's volumes.

    An entry is taken only from a report written after the case's kept mask (a mask remade since is not the one
    it describes) and when the weights, inputs and post-processing it names made the kept outputs (``made_with``:
    case id -> :attr:`CaseReport.made_with`); an unreadable or oversized report, or an entry that is not one, is
    passed over."""
    # Reports write undecodable bytes of names as text (without_surrogates): ids are matched as written there.
    wanted = {without_surrogates(case.case_id): case.outputs["mask"] for case in skipped if "mask" in case.outputs}
    made = {without_surrogates(case_id): digest for case_id, digest in made_with.items()}
    found: dict[str, CaseReport] = {}
    for path in paths:
        try:
            status = path.stat()
            if status.st_size > MAX_EARLIER_REPORT_BYTES:
                continue
            written = status.st_mtime
            cases = json.loads(path.read_text(encoding="utf-8")).get("cases", [])
        except (OSError, ValueError, AttributeError, RecursionError, MemoryError):
            continue
        for entry in cases if isinstance(cases, list) else []:
            case_id = entry.get("case_id") if isinstance(entry, dict) else None
            if not isinstance(case_id, str) or case_id not in wanted or case_id in found:
                continue
            try:
                report = CaseReport.from_dict(entry)
                current = written >= wanted[case_id].stat().st_mtime
            except (InputError, OSError):
                continue
            if current and report.made_with == made.get(case_id):
                found[case_id] = report
    return [found[key] for case in skipped if (key := without_surrogates(case.case_id)) in found]


def run_document(
    reports: Sequence[CaseReport],
    failed: Mapping[str, str],
    skipped: Sequence[SkippedCase],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON report of a run (:func:`~mdanet_sdk.report.report_document`) with the skipped cases listed as
    ``"skipped": [{"case", "outputs": {role: path}}]``, and ``extra`` run-level keys (e.g. ``"shard"``)."""
    listed = [{"case": s.case_id, "outputs": {k: str(p) for k, p in s.outputs.items()}} for s in skipped]
    return report_document(reports, failed, {"skipped": listed, **(extra or {})})
