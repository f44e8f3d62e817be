"""Cases: one subject's co-registered modalities and optional lesion label, and the dataset readers.

Layouts understood by :func:`find_cases` / :func:`read_case`:

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
  ``label``/``mask``/``msk``/``seg``/``lesion``; or a folder of such case folders. :func:`read_case` also
  takes a mapping modality → file.
- ``"auto"``: ISLES'22 if the folder is a ``sub-*`` folder or holds ``rawdata/`` or ``sub-*`` folders,
  ISLES'18 if it holds ``TRAINING``/``TESTING``, case folders with SMIR files or SMIR files itself, else
  generic.

Default modalities and their order follow the model's groups (:data:`LAYOUT_GROUPS`, from
:data:`mdanet_sdk.config.MODALITY_GROUPS`): ISLES'22 ``dwi | adc``, ISLES'18 ``cbf, cbv | mtt, tmax``; pass
``groups[0] + groups[1]`` of an :class:`~mdanet_sdk.config.MDANetConfig` to :meth:`Case.stack`.

Validation (:class:`~mdanet_sdk.errors.InputError`): a missing or ambiguous modality file; modalities or label
on different grids: stored shapes must be equal and affines equal within :data:`AFFINE_TOL_MM` (1e-3 mm, any
entry of the 4x4 matrix); a label with values other than 0 and 1; plus every check of
:func:`~mdanet_sdk.data.nifti.load_volume` (NaN/Inf voxels are set to 0 and reported in ``Case.warnings``).
A FIFO or device named like a modality is found, so that loading that case (not finding) refuses it. The
SDK's own outputs (``<case>_seg``/``<case>_prob``, or any file :func:`~mdanet_sdk.data.nifti.save_like`
marked) are never taken as a label or a modality; finding reads their headers, never their voxels.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mdanet_sdk.config import MODALITY_GROUPS
from mdanet_sdk.data.nifti import NIFTI_SUFFIXES, Volume, is_own_output, load_volume
from mdanet_sdk.data.validate import check_image
from mdanet_sdk.errors import InputError

__all__ = [
    "Case",
    "CaseSource",
    "find_cases",
    "read_case",
    "detect_layout",
    "LAYOUTS",
    "LAYOUT_GROUPS",
    "LAYOUT_MODALITIES",
    "AFFINE_TOL_MM",
    "FOURD_KEY",
    "BRAIN_MASK_KEY",
]

LAYOUTS = ("auto", "isles22", "isles18", "generic")
#: The two modality groups of each dataset layout, as the model declares them.
LAYOUT_GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "isles22": MODALITY_GROUPS["mri"],
    "isles18": MODALITY_GROUPS["ctp"],
}
#: Default modalities of each layout, in model channel order: ``{"isles22": ("dwi", "adc"), ...}``.
LAYOUT_MODALITIES: dict[str, tuple[str, ...]] = {k: g[0] + g[1] for k, g in LAYOUT_GROUPS.items()}
#: Largest difference (mm, any affine entry) tolerated between the affines of one case's images.
AFFINE_TOL_MM = 1e-3
#: Key of :attr:`CaseSource.paths` for a single 4D file holding all modalities.
FOURD_KEY = "__4d__"

_LABEL = "label"
#: Key of a mapping source (:func:`read_case`) naming a brain mask file.
BRAIN_MASK_KEY = "brain_mask"
# Modality -> token of its SMIR file name ("SMIR.Brain.XX.O.CT_Tmax.12345.nii"), and back (lowercase).
_ISLES18_NAMES = {
    "cbf": "CT_CBF",
    "cbv": "CT_CBV",
    "mtt": "CT_MTT",
    "tmax": "CT_Tmax",
    "ct": "CT",
    "pwi": "CT_4DPWI",
    _LABEL: "OT",
}
_ISLES18_TOKENS = {token.lower(): name for name, token in _ISLES18_NAMES.items()}
_GENERIC_LABEL_NAMES = ("label", "mask", "msk", "seg", "lesion")


@dataclass
class Case:
    """One subject: co-registered images on one canonical RAS+ grid and an optional label.

    Attributes:
        case_id: e.g. ``"sub-strokecase0001"`` or ``"case_12"``.
        images: modality → float32 ``(X, Y, Z)``, in the layout's channel order.
        label: uint8 ``(X, Y, Z)`` with values {0, 1}, or ``None`` when the dataset has none.
        reference: geometry of the first modality (``data`` is that image); pass it to
            :func:`~mdanet_sdk.data.nifti.save_like` to write results back in the input's space.
        warnings: sentences about repaired input problems (e.g. NaN voxels set to 0).
        brain_mask: bool ``(X, Y, Z)`` given by the user (e.g. from a skull-stripping tool), or ``None``:
            normalisation statistics are taken inside it and lesions are kept only there.
    """

    case_id: str
    images: dict[str, np.ndarray]
    label: np.ndarray | None
    reference: Volume
    warnings: list[str] = field(default_factory=list)
    brain_mask: np.ndarray | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        """Names of the images, in order."""
        return tuple(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Canonical grid ``(X, Y, Z)`` shared by every image and the label."""
        return self.reference.shape

    def stack(self, modalities: Sequence[str]) -> np.ndarray:
        """Stack images along a new first axis.

        Args:
            modalities: names in channel order, e.g. ``cfg.groups[0] + cfg.groups[1]``.

        Returns:
            float32 ``(C, X, Y, Z)`` with ``C = len(modalities)``.

        Raises:
            InputError: a requested modality is not in this case, or none was requested.
        """
        if not modalities:
            raise InputError("no modalities requested; name at least one, e.g. ('dwi', 'adc').")
        for name in modalities:
            if name not in self.images:
                raise InputError(
                    f"case {self.case_id} has no {name!r} image (it has {', '.join(self.images)}); "
                    "provide that modality or choose the model's modalities accordingly."
                )
        return np.stack([self.images[m] for m in modalities]).astype(np.float32, copy=False)


@dataclass
class CaseSource:
    """Where one case's files are; :meth:`load` reads them (finding a dataset reads no voxels).

    Attributes:
        case_id: the case's id.
        paths: modality → file, or ``{FOURD_KEY: file}`` for a 4D file whose last axis holds ``modalities``.
        label_path: the label file, or ``None``.
        modalities: modalities to read, in order; required with a 4D file, else defaults to ``paths``' keys.
        brain_mask_path: a brain mask on the images' grid (non-zero = brain), or ``None``.
    """

    case_id: str
    paths: dict[str, Path]
    label_path: Path | None = None
    modalities: tuple[str, ...] | None = None
    brain_mask_path: Path | None = None

    def load(self) -> Case:
        """Read, validate and reorient the images and label.

        Returns:
            the :class:`Case`, every array on one canonical RAS+ ``(X, Y, Z)`` grid.

        Raises:
            InputError: a file is unreadable or invalid, a modality is missing, the grids differ, or the
                label is not binary.
        """
        load = self._load_4d if FOURD_KEY in self.paths else self._load_files
        images, reference, warnings = load()
        label = None
        if self.label_path is not None:
            label_volume = load_volume(self.label_path, allow_empty=True)
            _check_same_grid(self.case_id, "label", label_volume, reference)
            label = _as_label(label_volume)
            warnings += label_volume.warnings
        brain_mask = None
        if self.brain_mask_path is not None:
            mask_volume = load_volume(self.brain_mask_path, label=True)
            _check_same_grid(self.case_id, "brain mask", mask_volume, reference)
            brain_mask = np.asarray(mask_volume.data) != 0
        return Case(self.case_id, images, label, reference, warnings, brain_mask)

    def _load_files(self) -> tuple[dict[str, np.ndarray], Volume, list[str]]:
        names = self.modalities or tuple(self.paths)
        for name in names:
            if name not in self.paths:
                raise InputError(
                    f"case {self.case_id} has no {name} image (found: {', '.join(self.paths) or 'none'}); "
                    f"add the {name} file or choose other modalities."
                )
        volumes = {name: load_volume(self.paths[name], name=f"{name} ({self.paths[name]})") for name in names}
        reference = volumes[names[0]]
        for name, volume in volumes.items():
            if volume.data.ndim != 3:
                raise InputError(
                    f"case {self.case_id}: the {name} file {volume.path} is 4D {volume.original_shape}; "
                    "give one 3D volume per modality, or the 4D file alone with its modality order."
                )
            _check_same_grid(self.case_id, f"{name} image", volume, reference)
        warnings = [w for v in volumes.values() for w in v.warnings]
        return {name: v.data for name, v in volumes.items()}, reference, warnings

    def _load_4d(self) -> tuple[dict[str, np.ndarray], Volume, list[str]]:
        path = self.paths[FOURD_KEY]
        if not self.modalities:
            raise InputError(
                f"{path} holds several modalities; say which is on each volume of the last axis, "
                "e.g. modalities=('dwi', 'adc')."
            )
        volume = load_volume(path)
        data = volume.data if volume.data.ndim == 4 else volume.data[..., None]
        if data.shape[-1] != len(self.modalities):
            raise InputError(
                f"{path} holds {data.shape[-1]} volumes on its last axis but {len(self.modalities)} "
                f"modalities were named ({', '.join(self.modalities)}); name one modality per volume."
            )
        images = {m: np.ascontiguousarray(data[..., i]) for i, m in enumerate(self.modalities)}
        for name in self.modalities:  # load_volume checked the file as a whole; each volume must be an image
            images[name], _ = check_image(images[name], f"the {name} volume of {path}")
        # The reference describes the 3D grid: the first modality, without the modality axis.
        reference = replace(volume, data=images[self.modalities[0]], original_shape=volume.original_shape[:3])
        return images, reference, list(volume.warnings)


def _check_same_grid(case_id: str, what: str, volume: Volume, reference: Volume) -> None:
    """Raise InputError unless ``volume`` is on ``reference``'s stored grid (shape, affine within tol.)."""
    fix = "resample every modality and the label onto one grid (that of the first modality) first."
    if volume.original_shape[:3] != reference.original_shape[:3]:
        raise InputError(
            f"case {case_id}: the {what} {volume.path} has shape {volume.original_shape[:3]} but "
            f"{reference.path} has {reference.original_shape[:3]}; {fix}"
        )
    diff = float(np.abs(volume.original_affine - reference.original_affine).max())
    if diff > AFFINE_TOL_MM:
        raise InputError(
            f"case {case_id}: the affine of the {what} {volume.path} differs from that of {reference.path} "
            f"by {diff:.4g} mm (tolerance {AFFINE_TOL_MM} mm); {fix}"
        )


def _as_label(volume: Volume) -> np.ndarray:
    """Check that a label is 3D and binary and return it as uint8 ``(X, Y, Z)``."""
    if volume.data.ndim != 3:
        raise InputError(f"label {volume.path} is 4D {volume.original_shape}; give one 3D binary mask.")
    values = np.unique(volume.data)
    if not np.isin(values, (0.0, 1.0)).all():
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if values.size > 6 else "")
        raise InputError(
            f"label {volume.path} holds values other than 0 and 1 ({shown}); binarise it (lesion = 1) first."
        )
    return volume.data.astype(np.uint8)


# ----------------------------------------------------------------------------------------------- finding


def _is_nifti(path: Path) -> bool:
    # Hidden files are skipped: macOS "._x.nii.gz" resource forks and our own temporary files. A FIFO or a
    # device with a NIfTI name is kept, so that loading its case refuses it (load_volume never opens it).
    return path.name.endswith(NIFTI_SUFFIXES) and not path.name.startswith(".") and not path.is_dir()


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


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
    return _stem(path).rsplit("_", 1)[-1].lower()


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
        paths = _require(subject.name, modalities, found, subject, "*_{name}.nii(.gz)")
        label = _pick(subject.name, "msk", found, subject)
        sources.append(CaseSource(subject.name, paths, label, modalities))
    return sources


# ISLES 2018 ----------------------------------------------------------------------------------------------


def _smir_modality(path: Path) -> str | None:
    for token in _stem(path).split("."):
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
        found = _drop_outputs(found, {case_id, folder.name}, {*modalities, _LABEL})
        paths = _require(case_id, modalities, found, folder, "SMIR.*.{token}.*.nii")
        sources.append(CaseSource(case_id, paths, _pick(case_id, _LABEL, found, folder), modalities))
    return sources


# Generic -------------------------------------------------------------------------------------------------


def _generic_name(path: Path, modalities: Sequence[str]) -> str | None:
    stem = _stem(path).lower()
    for name in (stem, stem.rsplit("_", 1)[-1]):
        if name in modalities:
            return name
        if name in _GENERIC_LABEL_NAMES:
            return _LABEL
    return None


def _generic_folder(folder: Path, modalities: tuple[str, ...] | None) -> CaseSource | None:
    """The case held by ``folder`` as one file per modality, or None if it holds none of them."""
    names = modalities or sum(LAYOUT_MODALITIES.values(), ())
    found = _group([p for p in folder.iterdir() if _is_nifti(p)], lambda p: _generic_name(p, names))
    # Our outputs are named after the case id: the folder's name, or the "<id>" of "<id>_dwi.nii.gz" files.
    ids = {_stem(p)[: -len(m) - 1] for m, ps in found.items() for p in ps if _stem(p).lower().endswith(f"_{m}")}
    found = _drop_outputs(found, {folder.name, *ids}, set(found))
    if modalities is None:  # the first layout whose modalities are all there
        modalities = next((m for m in LAYOUT_MODALITIES.values() if set(m) <= set(found)), None)
        if modalities is None:
            return None
        found = {k: v for k, v in found.items() if k in modalities or k == _LABEL}
    if not set(found) - {_LABEL}:
        return None
    paths = _require(folder.name, modalities, found, folder, "{name}.nii(.gz) or *_{name}.nii(.gz)")
    return CaseSource(folder.name, paths, _pick(folder.name, _LABEL, found, folder), modalities)


def _find_generic(root: Path, modalities: tuple[str, ...] | None) -> list[CaseSource]:
    if not root.is_dir():  # a file, or a FIFO/device that loading will refuse (never iterdir() it)
        if not _is_nifti(root):
            raise InputError(f"{root} is not a .nii or .nii.gz file; give a NIfTI image or a case folder.")
        return [CaseSource(_stem(root), {FOURD_KEY: root}, None, modalities)]
    own = _generic_folder(root, modalities)
    if own is not None:
        return [own]
    cases = (_generic_folder(p, modalities) for p in root.iterdir() if p.is_dir())
    return [case for case in cases if case is not None]


_FINDERS = {"isles22": _find_isles22, "isles18": _find_isles18, "generic": _find_generic}


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


def _modalities(layout: str, modalities: Sequence[str] | None) -> tuple[str, ...] | None:
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
    sources = _FINDERS[layout](root, _modalities(layout, modalities))
    if not sources:
        raise InputError(
            f"no {layout} cases found in {root}; expected an ISLES'22 (rawdata/sub-*/...) or ISLES'18 "
            "(TRAINING/case_N/SMIR...nii) dataset, a 4D NIfTI, or files named after their modality "
            "(dwi.nii.gz, ...); check the path or pass layout= and modalities=."
        )
    return sorted(sources, key=lambda s: _natural_key(s.case_id))


def read_case(
    source: str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]],
    layout: str = "auto",
    modalities: Sequence[str] | None = None,
    *,
    case_id: str | None = None,
) -> Case:
    """Read one case from a file, a case folder, or a mapping modality → file.

    Args:
        source: a 4D NIfTI (with ``modalities``), a folder holding exactly one case, or a mapping such as
            ``{"dwi": "a.nii.gz", "adc": "b.nii.gz", "label": "m.nii.gz"}`` (key ``"label"`` is the label,
            ``"brain_mask"`` a brain mask).
        layout: as in :func:`find_cases` (ignored for a mapping).
        modalities: names to read, in channel order (default: the layout's, or the mapping's keys).
        case_id: id for a mapping source (default: the first image's file name without suffix).

    Returns:
        the loaded :class:`Case`.

    Raises:
        InputError: the source holds no case or several, or any check of :meth:`CaseSource.load` fails.
    """
    if isinstance(source, Mapping):
        paths = {str(k).lower(): Path(v) for k, v in source.items()}
        label = paths.pop(_LABEL, None)
        brain_mask = paths.pop(BRAIN_MASK_KEY, None)
        if not paths:
            raise InputError("the mapping names no image; map modality to file, e.g. {'dwi': 'dwi.nii.gz'}.")
        names = _modalities("generic", modalities) or tuple(paths)
        return CaseSource(case_id or _stem(next(iter(paths.values()))), paths, label, names, brain_mask).load()
    sources = find_cases(source, layout, modalities)
    if len(sources) != 1:
        raise InputError(
            f"{source} holds {len(sources)} cases; point at one case (file or folder), or use find_cases() "
            "to read them all."
        )
    return sources[0].load() if case_id is None else replace(sources[0], case_id=case_id).load()
