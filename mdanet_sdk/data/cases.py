"""Cases: one subject's co-registered modalities and optional lesion label, read and validated.

A :class:`CaseSource` says where one case's files are (dataset layouts are found by
:mod:`mdanet_sdk.data.layouts`, which makes them); :meth:`CaseSource.load` reads it into a :class:`Case`.
:func:`read_case` reads one case from a file, a case folder (any layout) or a mapping modality → file.
Pass ``groups[0] + groups[1]`` of an :class:`~mdanet_sdk.config.MDANetConfig` to :meth:`Case.stack`.

Validation (:class:`~mdanet_sdk.errors.InputError`): a missing modality file; modalities or label on
different grids: canonical (RAS+) shapes must be equal and canonical affines equal within
:data:`AFFINE_TOL_MM` (1e-3 mm, any entry of the 4x4 matrix), so one grid stored in two voxel orders is one
grid; a label with values other than 0 and 1; plus every check of
:func:`~mdanet_sdk.data.nifti.load_volume` (NaN/Inf voxels are set to 0 and reported in ``Case.warnings``).

The layout finders (:func:`~mdanet_sdk.data.layouts.find_cases`, ``detect_layout``, ``LAYOUTS``,
``LAYOUT_GROUPS``, ``LAYOUT_MODALITIES``) stay importable from this module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mdanet_sdk.data.nifti import Volume, load_volume, nifti_stem
from mdanet_sdk.data.validate import as_path, check_distinct_images, check_image
from mdanet_sdk.errors import InputError

__all__ = [
    "Case",
    "CaseSource",
    "read_case",
    "case_name",
    "mapping_keys",
    "mapping_source",
    "AFFINE_TOL_MM",
    "FOURD_KEY",
    "LABEL_KEY",
    "BRAIN_MASK_KEY",
]

#: Largest difference (mm, any affine entry) tolerated between the affines of one case's images.
AFFINE_TOL_MM = 1e-3
#: Key of :attr:`CaseSource.paths` for a single 4D file holding all modalities.
FOURD_KEY = "__4d__"
#: Key of a mapping source (:func:`read_case`) naming the label file.
LABEL_KEY = "label"
#: Key of a mapping source (:func:`read_case`) naming a brain mask file.
BRAIN_MASK_KEY = "brain_mask"
# Moved to mdanet_sdk.data.layouts, which builds on CaseSource and so imports this module: resolved on first
# use (__getattr__ below) so that `from mdanet_sdk.data.cases import find_cases` keeps working.
_LAYOUT_NAMES = frozenset({"find_cases", "detect_layout", "LAYOUTS", "LAYOUT_GROUPS", "LAYOUT_MODALITIES"})


def __getattr__(name: str) -> Any:
    if name in _LAYOUT_NAMES:
        from mdanet_sdk.data import layouts

        return getattr(layouts, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def _brain_mask_warnings(values: np.ndarray, images: dict[str, np.ndarray], path: Path) -> list[str]:
    """Warnings for a brain mask (its voxel ``values``) that does not look like one: under a fifth of the images'
    non-zero support (a lesion mask given as the brain mask: every prediction outside it is dropped), the whole
    field of view, or several non-zero values (a probability map or an image: every non-zero voxel is brain).

    Raises:
        InputError: the mask is one of the case's images itself.
    """
    same = next(
        (m for m, image in images.items() if image.shape == values.shape and np.array_equal(image, values)), None
    )
    if same is not None:
        raise InputError(f"the brain mask {path} is the {same} image itself; give a skull-stripping mask (1 = brain).")
    brain = values != 0
    support = np.count_nonzero(np.any([image != 0 for image in images.values()], axis=0))
    covered = np.count_nonzero(brain)
    warnings = []
    if support and covered < 0.2 * support:
        warnings.append(
            f"the brain mask {path} covers only {100 * covered / support:.0f} % of the head; lesions are looked "
            "for inside it only. If it is a lesion mask, give it as the label, not as the brain mask."
        )
    elif covered == brain.size:
        warnings.append(f"the brain mask {path} covers the whole field of view; lesions are looked for everywhere.")
    if len(np.unique(values[brain][:1_000_000])) > 1:  # 0/1 and 0/255 masks hold one non-zero value
        warnings.append(
            f"the brain mask {path} holds several non-zero values; every non-zero voxel is taken as brain (a "
            "probabilistic mask needs a threshold first, an image is no mask)."
        )
    return warnings


@dataclass
class CaseSource:
    """Where one case's files are; :meth:`load` reads them (finding a dataset reads no voxels).

    Attributes:
        case_id: the case's id.
        paths: modality → file, or ``{FOURD_KEY: file}`` for a 4D file whose last axis holds ``modalities``.
        label_path: the label file, or ``None``.
        modalities: modalities to read, in order; required with a 4D file, else defaults to ``paths``' keys.
        brain_mask_path: a brain mask on the images' grid (non-zero = brain), or ``None``.
        problem: why the case found on disk cannot be used (a modality missing or held twice), or ``None``;
            :meth:`load` raises it, so dataset readers list a broken case instead of failing the whole dataset.
        label_problem: why the case's lesion label cannot be chosen (several candidates), or ``None``; only a
            :meth:`load` that reads the label raises it, so inference, which reads none, is not stopped by it.
        folder: the folder the case was found in (a label pattern is relative to it), or ``None``.
    """

    case_id: str
    paths: dict[str, Path]
    label_path: Path | None = None
    modalities: tuple[str, ...] | None = None
    brain_mask_path: Path | None = None
    problem: str | None = None
    folder: Path | None = None
    label_problem: str | None = None

    def load(self, *, label: bool = True) -> Case:
        """Read, validate and reorient the images and label.

        Args:
            label: read the label; ``False`` (inference) reads no label file at all, and ``Case.label`` is None.

        Returns:
            the :class:`Case`, every array on one canonical RAS+ ``(X, Y, Z)`` grid.

        Raises:
            InputError: a file is unreadable or invalid, a modality is missing, the grids differ, or the
                label is not binary.
        """
        if self.problem is not None:
            raise InputError(self.problem)
        if label and self.label_problem is not None:
            raise InputError(self.label_problem)
        load = self._load_4d if FOURD_KEY in self.paths else self._load_files
        images, reference, warnings = load()
        check_distinct_images(images, self.case_id)
        lesion = None
        if label and self.label_path is not None:
            label_volume = load_volume(self.label_path, allow_empty=True)
            _check_same_grid(self.case_id, "label", label_volume, reference)
            lesion = _as_label(label_volume)
            warnings += label_volume.warnings
        brain_mask = None
        if self.brain_mask_path is not None:
            mask_volume = load_volume(self.brain_mask_path, label=True)
            if mask_volume.data.ndim != 3:
                raise InputError(
                    f"case {self.case_id}: the brain mask {self.brain_mask_path} is 4D {mask_volume.original_shape}; "
                    "give one 3D mask on the images' grid."
                )
            _check_same_grid(self.case_id, "brain mask", mask_volume, reference)
            warnings += _brain_mask_warnings(mask_volume.data, images, self.brain_mask_path)
            brain_mask = np.asarray(mask_volume.data) != 0
        return Case(self.case_id, images, lesion, reference, warnings, brain_mask)

    def _load_files(self) -> tuple[dict[str, np.ndarray], Volume, list[str]]:
        names = self.modalities or tuple(self.paths)
        for name in names:
            if name not in self.paths:
                raise InputError(
                    f"case {self.case_id} has no {name} image (found: {', '.join(self.paths) or 'none'}); "
                    f"add the {name} file or choose other modalities."
                )
        # Decompressing and checking each file mostly releases the GIL: read them side by side (the first
        # failing modality in order raises, as one after the other would).
        with ThreadPoolExecutor(max_workers=max(1, min(len(names), os.cpu_count() or 1))) as pool:
            read = pool.map(lambda name: load_volume(self.paths[name], name=f"{name} ({self.paths[name]})"), names)
            volumes = dict(zip(names, read))
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
                f"modalities are expected ({', '.join(self.modalities)}: those named, else those the model reads); "
                "use the model of this case's modalities (default-mri: DWI, ADC; default-ctp: CBF, CBV, MTT, Tmax) "
                "or name one modality per volume."
            )
        images = {m: np.ascontiguousarray(data[..., i]) for i, m in enumerate(self.modalities)}
        for name in self.modalities:  # load_volume checked the file as a whole; each volume must be an image
            images[name], _ = check_image(images[name], f"the {name} volume of {path}")
        # The reference describes the 3D grid: the first modality, without the modality axis.
        reference = replace(volume, data=images[self.modalities[0]], original_shape=volume.original_shape[:3])
        return images, reference, list(volume.warnings)


def _check_same_grid(case_id: str, what: str, volume: Volume, reference: Volume) -> None:
    """Raise InputError unless ``volume`` is on ``reference``'s grid: canonical shape equal, canonical affine
    within tolerance. Canonical, not stored: the same grid stored in another voxel order (a DICOM series that
    dcm2niix wrote flipped beside a NIfTI) holds the same canonical arrays, voxel for voxel."""
    ref = str(reference.path) if reference.path is not None else "the first modality"
    first = f"{reference.path.name} (the first modality)" if reference.path is not None else ref
    fix = f"resample the {what} onto the grid of {first} first."
    if volume.shape != reference.shape:
        raise InputError(
            f"case {case_id}: the {what} {volume.path} has shape {volume.original_shape} but "
            f"{ref} has {reference.original_shape[:3]}; {fix}"
        )
    diff = float(np.abs(volume.affine - reference.affine).max())
    if diff > AFFINE_TOL_MM:
        raise InputError(
            f"case {case_id}: the affine of the {what} {volume.path} differs from that of {ref} "
            f"by {diff:.4g} mm (tolerance {AFFINE_TOL_MM} mm); {fix}"
        )


def _as_label(volume: Volume) -> np.ndarray:
    """Check that a label is 3D and binary and return it as uint8 ``(X, Y, Z)``."""
    if volume.data.ndim != 3:
        raise InputError(f"label {volume.path} is 4D {volume.original_shape}; give one 3D binary mask.")
    if volume.warnings:  # NaN/Inf voxels, read as 0: whether they are lesion is not the reader's guess
        raise InputError(f"label {volume.path}: {volume.warnings[0]} Give a label of 0 and 1 only.")
    values = np.unique(volume.data)
    if not np.isin(values, (0.0, 1.0)).all():
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if values.size > 6 else "")
        raise InputError(
            f"label {volume.path} holds values other than 0 and 1 ({shown}); binarise it (lesion = 1) first."
        )
    return volume.data.astype(np.uint8)


def case_name(path: Path) -> str:
    """A case name for a path: its name without the NIfTI ending; for ``.`` or a bare ``.nii.gz``, the resolved
    folder's name or the path itself (an id is never empty)."""
    return nifti_stem(path) or nifti_stem(path.resolve()) or str(path)


def mapping_keys(mapping: Any, what: str) -> dict[str, Any]:
    """``mapping``'s entries under the names every mapping of a case is read with (files or arrays): keys are
    case-insensitive and ``mask`` is short for ``brain_mask``.

    Raises:
        InputError: not a mapping, or a key given twice (``mask`` and ``brain_mask``, ``DWI`` and ``dwi``).
    """
    if not isinstance(mapping, Mapping):
        raise InputError(f"a mapping modality -> {what} was expected, got a {type(mapping).__name__}.")
    entries: dict[str, Any] = {}
    for key, value in mapping.items():
        name = str(key).lower()
        name = BRAIN_MASK_KEY if name == "mask" else name
        if name in entries:
            raise InputError(f"the mapping names {name} twice; give one {what} per modality.")
        entries[name] = value
    return entries


def mapping_source(
    mapping: Mapping[Any, Any], modalities: Sequence[str] | None = None, case_id: str | None = None
) -> CaseSource:
    """The case of a mapping modality → file, read one way by :func:`read_case`, ``Segmenter.predict`` and
    ``segment``: keys are case-insensitive, ``mask`` is short for ``brain_mask``, and ``label`` names the lesion
    label (opened only by ``read_case(..., label=True)``; inference never reads it). ``{"dwi": "sub-7_dwi.nii.gz", ...}`` is case ``sub-7`` (the
    first image's name without its modality), ``{"dwi": "sub-7/dwi.nii.gz", ...}`` is named after its folder,
    unless ``case_id`` names it.

    Args:
        mapping: modality → file (str or path-like).
        modalities: the names to read, in channel order (default: the mapping's images in its order).
        case_id: the case's id.

    Raises:
        InputError: a key given twice (``mask`` and ``brain_mask``, ``DWI`` and ``dwi``), a value that is no
            path, or no image.
    """
    paths = {name: as_path(value) for name, value in mapping_keys(mapping, "file").items()}
    label_path, brain_mask = paths.pop(LABEL_KEY, None), paths.pop(BRAIN_MASK_KEY, None)
    if not paths:
        raise InputError(
            "the mapping names no image; map each modality to its file, e.g. {'dwi': 'a.nii.gz', 'adc': 'b.nii.gz'}."
        )
    if not case_id:  # None or "": named after its files
        first, path = next(iter(paths.items()))
        stem = nifti_stem(path)
        suffix = f"_{first}"
        named = stem[: -len(suffix)] if stem.lower().endswith(suffix) else stem
        case_id = (named if stem.lower() != first else "") or case_name(path.parent)
    return CaseSource(case_id, paths, label_path, tuple(modalities) if modalities else tuple(paths), brain_mask)


def read_case(
    source: str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]],
    layout: str = "auto",
    modalities: Sequence[str] | None = None,
    *,
    case_id: str | None = None,
    label_pattern: str | None = None,
    label: bool = True,
) -> Case:
    """Read one case from a file, a case folder, or a mapping modality → file.

    Args:
        source: a 4D NIfTI (with ``modalities``), a folder holding exactly one case, or a mapping such as
            ``{"dwi": "a.nii.gz", "adc": "b.nii.gz", "label": "m.nii.gz"}`` (key ``"label"`` is the label,
            ``"brain_mask"`` a brain mask).
        layout: as in :func:`find_cases` (ignored for a mapping).
        modalities: names to read, in channel order (default: the layout's, or the mapping's keys).
        case_id: id for a mapping source (default: :func:`mapping_source`'s, e.g. ``sub-7`` for ``sub-7_dwi.nii.gz``).
        label_pattern: where the label is, as in :func:`find_cases` (ignored for a mapping).
        label: read the label (``False``: no label file is opened, e.g. for inference).

    Returns:
        the loaded :class:`Case`.

    Raises:
        InputError: the source holds no case or several, or any check of :meth:`CaseSource.load` fails.
    """
    from mdanet_sdk.data.layouts import find_cases, modality_names  # layouts imports this module

    if isinstance(source, Mapping):
        return mapping_source(source, modality_names("generic", modalities), case_id).load(label=label)
    sources = find_cases(as_path(source), layout, modalities, label_pattern=label_pattern)
    if len(sources) != 1:
        raise InputError(
            f"{source} holds {len(sources)} cases; point at one case (file or folder), or use find_cases() "
            "to read them all."
        )
    found = sources[0] if case_id is None else replace(sources[0], case_id=case_id)
    return found.load(label=label)
