"""Dataset layouts: finding the cases of a dataset folder, as :class:`~mdanet_sdk.data.cases.CaseSource` s,
without reading any voxel.

Layouts understood by :func:`find_cases` (and :func:`~mdanet_sdk.data.cases.read_case`):

- ``"isles22"`` (BIDS): ``rawdata/sub-strokecaseXXXX/ses-0001/dwi/sub-..._dwi.nii.gz`` and ``..._adc.nii.gz``,
  labels in ``derivatives/sub-strokecaseXXXX/ses-0001/sub-..._msk.nii.gz``. Files are found by their BIDS
  suffix (``_dwi``, ``_adc``, ``_msk``; any other suffix such as ``_flair`` on request) anywhere under the
  subject folder, so images directly in ``ses-0001/`` work too. Entry points: the dataset root (holding
  ``rawdata/`` or the ``sub-*`` folders themselves), ``rawdata/``, or one ``sub-*`` folder; the label is
  looked for under the subject folder and in ``derivatives/<subject>`` beside it or one level up.
  Case id: the subject folder name.
- ``"isles18"`` (SMIR): ``TRAINING/case_N/SMIR.Brain.XX.O.CT_CBF.NNNNN/SMIR.Brain.XX.O.CT_CBF.NNNNN.nii``,
  likewise ``CT_CBV``, ``CT_MTT``, ``CT_Tmax`` (and ``CT``, ``CT_4DPWI`` on request as ``ct``, ``pwi``), label
  ``OT``. Entry points: the dataset root (holding ``TRAINING/`` and/or ``TESTING/``), one of those, or one
  ``case_N`` folder. Case id: ``case_N``; when the root holds both splits, ``training_case_N`` /
  ``testing_case_N`` so that ids stay unique.
- ``"generic"``: one 4D NIfTI whose last axis holds ``modalities`` in that order; or a folder with one file
  per modality named after it (``dwi.nii.gz``, ``case7_adc.nii``...) and optionally a label named
  ``label``/``mask``/``msk``/``seg``/``lesion``; or a folder of such case folders.
- ``"auto"``: ISLES'22 if the folder is a ``sub-*`` folder or holds ``rawdata/`` or ``sub-*`` folders,
  ISLES'18 if it holds ``TRAINING``/``TESTING``, case folders with SMIR files or SMIR files itself, else
  generic.

Default modalities and their order follow the model's groups (:data:`LAYOUT_GROUPS`, from
:data:`mdanet_sdk.config.MODALITY_GROUPS`): ISLES'22 ``dwi | adc``, ISLES'18 ``cbf, cbv | mtt, tmax``.

Finding fails with :class:`~mdanet_sdk.errors.InputError` on a missing or ambiguous modality file. A FIFO or
device named like a modality is found, so that loading that case (not finding) refuses it. The SDK's own
outputs (``<case>_seg``/``<case>_prob``, or any file :func:`~mdanet_sdk.data.nifti.save_like` marked) are
never taken as a label or a modality; finding reads their headers, never their voxels.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from mdanet_sdk.config import MODALITY_GROUPS
from mdanet_sdk.data.cases import FOURD_KEY, LABEL_KEY, CaseSource
from mdanet_sdk.data.nifti import NIFTI_SUFFIXES, is_own_output, nifti_stem
from mdanet_sdk.errors import InputError

__all__ = [
    "find_cases",
    "detect_layout",
    "modality_names",
    "LAYOUTS",
    "KIND_LAYOUT",
    "LAYOUT_KIND",
    "LAYOUT_GROUPS",
    "LAYOUT_MODALITIES",
]

LAYOUTS = ("auto", "isles22", "isles18", "generic")
#: The two axes of the vocabulary: the dataset layout of each modality kind (``mri`` -> ``isles22``), and back.
KIND_LAYOUT: dict[str, str] = {"mri": "isles22", "ctp": "isles18"}
LAYOUT_KIND: dict[str, str] = {layout: kind for kind, layout in KIND_LAYOUT.items()}
#: The two modality groups of each dataset layout, as the model declares them.
LAYOUT_GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    layout: MODALITY_GROUPS[kind] for kind, layout in KIND_LAYOUT.items()
}
#: Default modalities of each layout, in model channel order: ``{"isles22": ("dwi", "adc"), ...}``.
LAYOUT_MODALITIES: dict[str, tuple[str, ...]] = {k: g[0] + g[1] for k, g in LAYOUT_GROUPS.items()}

# Modality -> token of its SMIR file name ("SMIR.Brain.XX.O.CT_Tmax.12345.nii"), and back (lowercase).
_ISLES18_NAMES = {
    "cbf": "CT_CBF",
    "cbv": "CT_CBV",
    "mtt": "CT_MTT",
    "tmax": "CT_Tmax",
    "ct": "CT",
    "pwi": "CT_4DPWI",
    LABEL_KEY: "OT",
}
_ISLES18_TOKENS = {token.lower(): name for name, token in _ISLES18_NAMES.items()}
_GENERIC_LABEL_NAMES = ("label", "mask", "msk", "seg", "lesion")


def _is_nifti(path: Path) -> bool:
    # Hidden files are skipped: macOS "._x.nii.gz" resource forks and our own temporary files. A FIFO or a
    # device with a NIfTI name is kept, so that loading its case refuses it (load_volume never opens it).
    return path.name.endswith(NIFTI_SUFFIXES) and not path.name.startswith(".") and not path.is_dir()


def _natural_key(text: str) -> list[int | str]:
    # "case_2" before "case_10".
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _pick(case_id: str, name: str, found: Mapping[str, list[Path]], where: Path) -> Path | None:
    """The single file found for ``name``; None if none, InputError if several."""
    files = sorted(set(found.get(name, [])))
    if len(files) > 1:
        listing = ", ".join(str(f) for f in files)
        raise InputError(
            f"case {case_id}: several {name} files under {where} ({listing}); keep one, or pass the files "
            "by name to read_case({modality: path})."
        )
    return files[0] if files else None


def _source(
    case_id: str, names: tuple[str, ...], found: Mapping[str, list[Path]], where: Path, pattern: str, label: str
) -> CaseSource:
    """The :class:`CaseSource` of one case found on disk. A case that cannot be used (a modality missing or held
    twice) is still returned, with its ``problem``: loading it raises that error, so one broken case fails alone
    and the others of the dataset go on."""
    try:
        return CaseSource(
            case_id, _require(case_id, names, found, where, pattern), _pick(case_id, label, found, where), names
        )
    except InputError as exc:
        paths = {name: files[0] for name, files in found.items() if name in names and files}
        return CaseSource(case_id, paths, None, names, problem=str(exc))


def _require(
    case_id: str, names: Sequence[str], found: Mapping[str, list[Path]], where: Path, pattern: str
) -> dict[str, Path]:
    """Modality → file for every name, raising InputError naming the first missing modality.

    ``pattern`` describes the expected file name, with ``{name}`` standing for the modality and ``{token}``
    for its ISLES'18 file token.
    """
    paths = {}
    for name in names:
        path = _pick(case_id, name, found, where)
        if path is None:
            expected = pattern.format(name=name, token=_ISLES18_NAMES.get(name, name))
            raise InputError(
                f"case {case_id}: no {name} image under {where} (no file named {expected}); "
                "add it or choose other modalities."
            )
        paths[name] = path
    return paths


def _drop_outputs(found: dict[str, list[Path]], case_names: set[str], keys: set[str]) -> dict[str, list[Path]]:
    """``found`` without the SDK's own outputs among the files of ``keys`` (modalities and label)."""
    kept = {k: [p for p in v if k not in keys or not is_own_output(p, case_names)] for k, v in found.items()}
    return {k: v for k, v in kept.items() if v}


def _group(files: list[Path], key: Callable[[Path], str | None]) -> dict[str, list[Path]]:
    grouped: dict[str, list[Path]] = {}
    for path in files:
        name = key(path)
        if name is not None:
            grouped.setdefault(name, []).append(path)
    return grouped


# ISLES 2022 ----------------------------------------------------------------------------------------------


def _bids_suffix(path: Path) -> str:
    return nifti_stem(path).rsplit("_", 1)[-1].lower()


def _isles22_subjects(root: Path) -> list[Path]:
    if root.name.startswith("sub-"):
        return [root]
    base = root / "rawdata" if (root / "rawdata").is_dir() else root
    return [p for p in base.iterdir() if p.is_dir() and p.name.startswith("sub-")]


def _find_isles22(root: Path, modalities: tuple[str, ...]) -> list[CaseSource]:
    sources = []
    for subject in _isles22_subjects(root):
        found = _group([p for p in subject.rglob("*") if _is_nifti(p)], _bids_suffix)
        for derivatives in (subject.parent / "derivatives", subject.parent.parent / "derivatives"):
            if (derivatives / subject.name).is_dir():
                masks = [p for p in (derivatives / subject.name).rglob("*") if _is_nifti(p)]
                found.setdefault("msk", []).extend(p for p in masks if _bids_suffix(p) == "msk")
        found = _drop_outputs(found, {subject.name}, {*modalities, "msk"})
        sources.append(_source(subject.name, modalities, found, subject, "*_{name}.nii(.gz)", "msk"))
    return sources


# ISLES 2018 ----------------------------------------------------------------------------------------------


def _smir_modality(path: Path) -> str | None:
    for token in nifti_stem(path).split("."):
        if token.lower() in _ISLES18_TOKENS:
            return _ISLES18_TOKENS[token.lower()]
    return None


def _smir_files(folder: Path) -> list[Path]:
    # Each image sits one folder down (SMIR.Brain.XX.O.CT_CBF.N/SMIR...nii). Looking exactly that deep keeps
    # a split folder (TRAINING/case_N/SMIR.../...nii, two levels further) from passing for a case.
    return [p for p in folder.glob("*/*") if _is_nifti(p) and _smir_modality(p)]


def _isles18_cases(root: Path) -> list[tuple[str, Path]]:
    """(case id, folder) of every ISLES'18 case at or under ``root``."""
    if _smir_files(root):
        return [(root.name, root)]
    splits = [p for p in root.iterdir() if p.is_dir() and p.name.upper() in ("TRAINING", "TESTING")] or [root]
    return [
        (f"{split.name.lower()}_{case.name}" if len(splits) > 1 else case.name, case)
        for split in splits
        for case in split.iterdir()
        if case.is_dir() and _smir_files(case)
    ]


def _find_isles18(root: Path, modalities: tuple[str, ...]) -> list[CaseSource]:
    sources = []
    for case_id, folder in _isles18_cases(root):
        found = _group(_smir_files(folder), _smir_modality)
        found = _drop_outputs(found, {case_id, folder.name}, {*modalities, LABEL_KEY})
        sources.append(_source(case_id, modalities, found, folder, "SMIR.*.{token}.*.nii", LABEL_KEY))
    return sources


# Generic -------------------------------------------------------------------------------------------------


def _generic_name(path: Path, modalities: Sequence[str]) -> str | None:
    stem = nifti_stem(path).lower()
    for name in (stem, stem.rsplit("_", 1)[-1]):
        if name in modalities:
            return name
        if name in _GENERIC_LABEL_NAMES:
            return LABEL_KEY
    return None


def _generic_folder(folder: Path, modalities: tuple[str, ...] | None) -> CaseSource | None:
    """The case held by ``folder`` as one file per modality, or None if it holds none of them."""
    names = modalities or sum(LAYOUT_MODALITIES.values(), ())
    found = _group([p for p in folder.iterdir() if _is_nifti(p)], lambda p: _generic_name(p, names))
    # Our outputs are named after the case id: the folder's name, or the "<id>" of "<id>_dwi.nii.gz" files.
    ids = {
        nifti_stem(p)[: -len(m) - 1] for m, ps in found.items() for p in ps if nifti_stem(p).lower().endswith(f"_{m}")
    }
    found = _drop_outputs(found, {folder.name, *ids}, set(found))
    if not set(found) - {LABEL_KEY}:
        return None
    if modalities is None:  # the layout whose modalities are all there, else the one with most of them (broken)
        modalities = max(LAYOUT_MODALITIES.values(), key=lambda m: (set(m) <= set(found), len(set(m) & set(found))))
        found = {k: v for k, v in found.items() if k in modalities or k == LABEL_KEY}
    return _source(folder.name, modalities, found, folder, "{name}.nii(.gz) or *_{name}.nii(.gz)", LABEL_KEY)


def _find_generic(root: Path, modalities: tuple[str, ...] | None) -> list[CaseSource]:
    if not root.is_dir():  # a file, or a FIFO/device that loading will refuse (never iterdir() it)
        if not _is_nifti(root):
            raise InputError(f"{root} is not a .nii or .nii.gz file; give a NIfTI image or a case folder.")
        return [CaseSource(nifti_stem(root), {FOURD_KEY: root}, None, modalities)]
    own = _generic_folder(root, modalities)
    if own is not None:
        return [own]
    cases = (_generic_folder(p, modalities) for p in root.iterdir() if p.is_dir())
    return [case for case in cases if case is not None]


_FINDERS = {"isles22": _find_isles22, "isles18": _find_isles18}  # and _find_generic, which takes None


def detect_layout(root: str | os.PathLike[str]) -> str:
    """Guess the layout of a file or folder: ``"isles22"``, ``"isles18"`` or ``"generic"`` (module doc)."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root} does not exist; check the path.")
    if root.is_dir() and _isles22_subjects(root):
        return "isles22"
    if root.is_dir() and _isles18_cases(root):
        return "isles18"
    return "generic"


def modality_names(layout: str, modalities: Sequence[str] | None) -> tuple[str, ...] | None:
    """The modalities to read from a ``layout`` dataset: ``modalities`` lowercased, or the layout's defaults
    (:data:`LAYOUT_MODALITIES`; None for ``"generic"``, which finds them by file name).

    Raises:
        InputError: ``modalities`` is empty or names one modality twice.
    """
    if modalities is None:
        return LAYOUT_MODALITIES.get(layout)
    names = tuple(str(m).lower() for m in modalities)
    if not names or len(set(names)) != len(names):
        raise InputError(f"modalities must be distinct names, at least one, got {list(modalities)!r}.")
    return names


def find_cases(
    root: str | os.PathLike[str], layout: str = "auto", modalities: Sequence[str] | None = None
) -> list[CaseSource]:
    """Find every case of a dataset without reading any voxel.

    Args:
        root: dataset root, a split/rawdata folder, one case folder, or a 4D file (see module docstring).
        layout: ``"auto"``, ``"isles22"``, ``"isles18"`` or ``"generic"``.
        modalities: names to read, in channel order; default: the layout's (:data:`LAYOUT_MODALITIES`).
            Required for a generic 4D file.

    Returns:
        one :class:`CaseSource` per case, sorted by case id (numbers in natural order).

    Raises:
        InputError: unknown layout, nothing found, or a case lacking a modality / holding it twice.
    """
    root = Path(root)
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}.")
    if layout == "auto":
        layout = detect_layout(root)
    elif not root.exists():
        raise InputError(f"{root} does not exist; check the path.")
    if layout != "generic" and not root.is_dir():
        raise InputError(f"{root} is not a folder; an {layout} dataset is read from its folder.")
    names = modality_names(layout, modalities)
    if layout == "generic":
        sources = _find_generic(root, names)
    else:
        assert names is not None  # LAYOUT_MODALITIES holds the isles22 and isles18 defaults
        sources = _FINDERS[layout](root, names)
    if not sources:
        raise InputError(
            f"no {layout} cases found in {root}; expected an ISLES'22 (rawdata/sub-*/...) or ISLES'18 "
            "(TRAINING/case_N/SMIR...nii) dataset, a 4D NIfTI, or files named after their modality "
            "(dwi.nii.gz, ...); check the path or pass layout= and modalities=."
        )
    return sorted(sources, key=lambda s: _natural_key(s.case_id))
