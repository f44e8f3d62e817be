"""What every layout finder shares: the modality vocabulary, which files are images, what a file name means
(a modality, a lesion label, a brain mask), and turning the files found for one case into a CaseSource."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from mdanet_sdk.config import MODALITY_GROUPS
from mdanet_sdk.data.cases import BRAIN_MASK_KEY, LABEL_KEY, CaseSource
from mdanet_sdk.data.formats import is_dicom_folder
from mdanet_sdk.data.nifti import IMAGE_SUFFIXES, is_own_output, is_prediction, nifti_stem
from mdanet_sdk.errors import InputError

#: The two axes of the vocabulary: the dataset layout of each modality kind (``mri`` -> ``isles22``), and back.
KIND_LAYOUT: dict[str, str] = {"mri": "isles22", "ctp": "isles18"}
LAYOUT_KIND: dict[str, str] = {layout: kind for kind, layout in KIND_LAYOUT.items()}
#: The two modality groups of each dataset layout, as the model declares them.
LAYOUT_GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    layout: MODALITY_GROUPS[kind] for kind, layout in KIND_LAYOUT.items()
}
#: Default modalities of each layout, in model channel order: ``{"isles22": ("dwi", "adc"), ...}``.
LAYOUT_MODALITIES: dict[str, tuple[str, ...]] = {k: g[0] + g[1] for k, g in LAYOUT_GROUPS.items()}
#: Every modality a folder is searched for when none are named.
KNOWN_MODALITIES: tuple[str, ...] = sum(LAYOUT_MODALITIES.values(), ())

# Last name parts that mean a lesion label ("label.nii.gz", "case7_lesion.nii.gz", "case7_lesion_mask...",
# "infarct_mask.nii.gz": a lesion mask taken for the brain mask would empty every prediction),
# and those that mean a brain mask written by a skull-stripping tool (BET's "_brain_mask", "_bet_mask",
# FreeSurfer's "brainmask", BIDS "desc-brain_mask"). A bare "mask", "msk" or "seg" means neither: a tissue
# segmentation or a brain mask taken for the lesion is worse than no label.
_LABEL_WORDS = ("label", "lesion", "infarct", "stroke")
_MASK_WORDS = ("mask", "msk", "seg")
_BRAIN_MASK_ENDINGS = (("brain", "mask"), ("bet", "mask"), ("brainmask",), ("mask",))


def is_image(path: Path) -> bool:
    """Whether ``path`` is named as an image file the readers take (hidden files are not)."""
    # Hidden files are skipped: macOS "._x.nii.gz" resource forks and our own temporary files. A FIFO or a
    # device with an image name is kept, so that loading its case refuses it (load_volume never opens it).
    name = path.name
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".") and not path.is_dir()


def list_dir(folder: Path) -> list[Path]:
    """The entries of ``folder``, sorted; an unreadable folder holds nothing (its cases are not found)."""
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (:func:`is_image`), sorted."""
    return [p for p in list_dir(folder) if is_image(p)]


def sub_folders(folder: Path) -> list[Path]:
    """The non-hidden folders (symlinks to folders included) directly in ``folder``."""
    return [p for p in list_dir(folder) if not p.name.startswith(".") and p.is_dir()]


def natural_key(text: str) -> list[int | str]:
    """Sort key putting ``case_2`` before ``case_10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def role(stem: str, names: Sequence[str]) -> tuple[str, str] | None:
    """What a file name means, and the case prefix before that meaning: ``(role, prefix)`` or None.

    ``role`` is a modality of ``names``, :data:`LABEL_KEY` or :data:`BRAIN_MASK_KEY`; ``prefix`` is what
    comes before it (``"sub01_dwi"`` -> ``("dwi", "sub01")``, ``"sub01_dwi_brain_mask"`` ->
    ``("brain_mask", "sub01")``, ``"label"`` -> ``("label", "")``).
    """
    parts = stem.lower().split("_")
    if parts[-1] in names:
        return parts[-1], "_".join(stem.split("_")[:-1])
    if parts[-1] in _LABEL_WORDS:
        return LABEL_KEY, "_".join(stem.split("_")[:-1])
    if len(parts) > 1 and parts[-1] in _MASK_WORDS and parts[-2] in _LABEL_WORDS:
        return LABEL_KEY, "_".join(stem.split("_")[:-2])
    for ending in _BRAIN_MASK_ENDINGS:
        n = len(ending)
        # A bare "mask" is ambiguous (lesion or brain): only "<something>_mask" is taken as a brain mask.
        if tuple(parts[-n:]) == ending and (len(parts) > n or ending != ("mask",)):
            rest = stem.split("_")[:-n]
            if rest and rest[-1].lower() in names:  # "sub01_dwi_brain_mask": the mask of sub01's images
                rest = rest[:-1]
            return BRAIN_MASK_KEY, "_".join(rest)
    return None


def entry_role(path: Path, names: Sequence[str]) -> tuple[str, str] | None:
    """:func:`role` of an image file, or of a DICOM series folder named after a modality (``dwi/``,
    ``case7_ADC/``); None for anything else (hidden entries, other folders, other files)."""
    if path.name.startswith("."):
        return None
    if is_image(path):
        return role(nifti_stem(path), names)
    found = role(path.name, names)
    if found is None or found[0] not in names or not is_dicom_folder(path):
        return None
    return found


def pick(case_id: str, name: str, found: Mapping[str, list[Path]]) -> Path | None:
    """The single file found for ``name``; None if none, InputError if several."""
    files = sorted(set(found.get(name, [])))
    if len(files) > 1:
        listing = ", ".join(str(f) for f in files)
        what = name.replace("_", " ")
        how = (
            "keep one, or name it with --label-pattern (a glob relative to the case folder)"
            if name in (LABEL_KEY, "msk", "ot")
            else f"keep one, or name the files (CLI: -m {name}=FILE per modality; Python: a mapping {{modality: path}})"
        )
        raise InputError(f"case {case_id}: several {what} files ({listing}); {how}.")
    return files[0] if files else None


def _require(
    case_id: str, names: Sequence[str], found: Mapping[str, list[Path]], where: Path, expected: Callable[[str], str]
) -> dict[str, Path]:
    """Modality → file for every name, raising InputError naming the first missing modality."""
    paths = {}
    for name in names:
        path = pick(case_id, name, found)
        if path is None:
            raise InputError(
                f"case {case_id}: no {name} image under {where} (no file named {expected(name)}); "
                "add it or choose other modalities."
            )
        paths[name] = path
    return paths


def make_source(
    case_id: str,
    names: tuple[str, ...],
    found: Mapping[str, list[Path]],
    where: Path,
    expected: Callable[[str], str],
    label: str | None = LABEL_KEY,
) -> CaseSource:
    """The :class:`CaseSource` of one case found on disk.

    Args:
        found: role → files (modalities, ``label`` and :data:`BRAIN_MASK_KEY`).
        where: the case's folder, for messages (and for a label pattern).
        expected: modality → the file name it is expected under, for messages.
        label: the key of ``found`` holding the lesion label, or None to take no label (a label pattern
            given by the user decides it instead).

    A case that cannot be used (a modality missing, a modality or brain mask held twice) is still returned,
    with its ``problem``: loading it raises that error, so one broken case fails alone and the others of the
    dataset go on. Several lesion labels make its ``label_problem`` instead: inference reads no label.
    """
    label_path, label_problem = None, None
    try:  # the label still counts for evaluation, which reads no image, when the images are broken
        label_path = pick(case_id, label, found) if label is not None else None
    except InputError as exc:
        label_problem = str(exc)
    try:
        paths = _require(case_id, names, found, where, expected)
        brain_mask = pick(case_id, BRAIN_MASK_KEY, found)
        return CaseSource(case_id, paths, label_path, names, brain_mask, folder=where, label_problem=label_problem)
    except InputError as exc:
        paths = {name: files[0] for name, files in found.items() if name in names and files}
        return CaseSource(
            case_id, paths, label_path, names, problem=str(exc), folder=where, label_problem=label_problem
        )


def drop_outputs(found: dict[str, list[Path]], case_names: set[str]) -> dict[str, list[Path]]:
    """``found`` without the SDK's own outputs (named after one of ``case_names``, or marked as predictions)."""
    kept = {k: [p for p in v if not is_own_output(p, case_names)] for k, v in found.items()}
    return {k: v for k, v in kept.items() if v}


def group(files: list[Path], key: Callable[[Path], str | None]) -> dict[str, list[Path]]:
    """``files`` grouped by ``key`` (files whose key is None are left out)."""
    grouped: dict[str, list[Path]] = {}
    for path in files:
        name = key(path)
        if name is not None:
            grouped.setdefault(name, []).append(path)
    return grouped


def apply_label_pattern(source: CaseSource, pattern: str) -> CaseSource:
    """``source`` with its label taken from ``pattern`` (a glob relative to the case folder, ``{case}`` standing
    for the case id); no match: no label; several matches make the case a broken one (``problem``)."""
    if source.folder is None:
        return source
    text = pattern.replace("{case}", glob.escape(source.case_id))
    matches = {Path(m) for m in glob.glob(os.path.join(glob.escape(str(source.folder)), text))}
    used = {*source.paths.values(), source.brain_mask_path}
    # Named by the user, so a "<case>_seg" file is ground truth here; only files marked as ours are refused.
    files = sorted(m for m in matches if is_image(m) and m not in used and not is_prediction(m))
    if len(files) > 1:
        listing = ", ".join(str(f) for f in files)
        problem = (
            f"case {source.case_id}: the label pattern {pattern!r} matches several files ({listing}); "
            "make it match one file per case, e.g. with {case} for the case id."
        )
        return replace(source, label_path=None, label_problem=problem)
    # A broken case keeps its label: evaluation reads no image.
    return replace(source, label_path=files[0] if files else None)
