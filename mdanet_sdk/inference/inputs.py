"""What the Segmenter accepts and how an input is read: paths, modality mappings, arrays; which bundled weights
fit a file."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import nibabel as nib
import numpy as np

from mdanet_sdk.config import MODALITY_GROUPS
from mdanet_sdk.data.cases import BRAIN_MASK_KEY, LABEL_KEY, Case, CaseSource, mapping_keys, mapping_source
from mdanet_sdk.data.nifti import Volume, header_shape, nifti_stem, to_canonical
from mdanet_sdk.data.preprocess import require_modalities
from mdanet_sdk.data.validate import check_affine, check_distinct_images, check_image
from mdanet_sdk.errors import InputError

__all__ = [
    "CaseInput",
    "BUNDLED_MODALITIES",
    "input_name",
    "volume_count",
    "kind_for_modalities",
    "refuse_single_3d",
    "refuse_diffusion_series",
    "DIFFUSION_SIDECARS",
    "case_from_arrays",
]

#: What :meth:`Segmenter.predict` accepts: a path (4D NIfTI, case folder), a mapping modality → path, a
#: :class:`~mdanet_sdk.data.cases.CaseSource` or an already loaded :class:`~mdanet_sdk.data.cases.Case`.
CaseInput = Union[str, os.PathLike, Mapping[str, Union[str, os.PathLike]], CaseSource, Case]

#: Modalities of the bundled weights (``default-mri``, ``default-ctp``) in channel order; a 4D file with 2
#: volumes is read as the first, one with 4 volumes as the second.
BUNDLED_MODALITIES: dict[str, tuple[str, ...]] = {k: g[0] + g[1] for k, g in MODALITY_GROUPS.items()}


def input_name(item: Any) -> str:
    """A readable name for an input, used before its case id is known."""
    if isinstance(item, (Case, CaseSource)):
        return item.case_id
    if isinstance(item, Mapping):
        try:  # the id the case will have (data.cases.mapping_source), when the mapping is one
            return mapping_source(item).case_id
        except InputError:
            item = next(iter(item.values()), "mapping")
    return (nifti_stem(item) if isinstance(item, (str, os.PathLike)) else "") or str(item)[:40]


def volume_count(path: str | os.PathLike[str]) -> int | None:
    """Volumes on the last axis of an image file from its header alone (1 for 3D); ``None`` if unreadable."""
    shape = header_shape(path)
    if shape is None:  # unreadable files get data.nifti.load_volume's precise message later
        return None
    return int(shape[3]) if len(shape) == 4 else 1 if len(shape) == 3 else None


def kind_for_modalities(modalities: Iterable[str]) -> str | None:
    """``"mri"`` or ``"ctp"`` when ``modalities`` are exactly those of the bundled weights of that kind."""
    names = set(modalities)
    return next((kind for kind, mods in BUNDLED_MODALITIES.items() if set(mods) == names), None)


def refuse_single_3d(path: Path, modalities: Sequence[str], diffusion: bool = False) -> None:
    """Raise InputError when ``path`` is one 3D volume: a multimodal model needs one file per modality; with
    ``diffusion`` (no volume order given), also when it is a diffusion series (:func:`refuse_diffusion_series`).

    The message says which modalities are needed and how to pass them (CLI ``-m`` options or a mapping).
    """
    single = path.is_file() and volume_count(path) == 1
    if diffusion and path.is_file() and not single:
        refuse_diffusion_series(path)
    if single:
        example = " ".join(f"-m {m}={m}.nii.gz" for m in modalities)
        mapping = ", ".join(f"'{m}': '{m}.nii.gz'" for m in modalities)
        raise InputError(
            f"{path} is a single 3D volume but the model needs {', '.join(modalities)}; give one file per "
            f"modality (CLI: {example}; Python: predict({{{mapping}}})) or one 4D file with a volume per "
            "modality."
        )


#: Files beside a 4D NIfTI that make it a diffusion series (one volume per b-value or direction): FSL and
#: dcm2niix name them ``<stem>.bval``/``<stem>.bvec``; HCP-style folders hold bare ``bvals``/``bvecs``.
DIFFUSION_SIDECARS = (".bval", ".bvec", ".bvals", ".bvecs")


def refuse_diffusion_series(path: Path) -> None:
    """Raise InputError when a 4D file has a b-value/b-vector sidecar: its volumes are diffusion weightings, not
    DWI and ADC maps, and reading them as such would give a confident but meaningless mask."""
    stem = nifti_stem(path).lower()
    names = {stem + suffix for suffix in DIFFUSION_SIDECARS} | {"bvals", "bvecs"}
    try:  # any case: "scan.BVAL" from a Windows or DICOM tool is a sidecar too
        sidecar = next((p for p in sorted(path.parent.iterdir()) if p.name.lower() in names and p.is_file()), None)
    except OSError:
        sidecar = None
    if sidecar is not None:
        raise InputError(
            f"{path} is a diffusion series ({sidecar.name} beside it), not one volume per modality; segment its "
            "DWI and ADC maps (CLI: -m dwi=... -m adc=...; Python: a mapping), or give the order of its volumes "
            "(--modalities; modalities=)."
        )


def _as_array(value: Any, name: str) -> np.ndarray:
    """``value`` (an array, a torch tensor, nested lists) as a numpy array."""
    try:
        if hasattr(value, "detach"):  # a torch tensor: off the autograd graph and the GPU, in a dtype numpy has
            value = value.detach().cpu()
            value = value.float() if value.dtype.is_floating_point and value.element_size() < 4 else value
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError, NotImplementedError) as exc:
        raise InputError(f"the {name} array cannot be read as numbers ({exc}); pass a numpy array.") from None


def _affine(affine: Any) -> np.ndarray:
    """A copy of ``affine`` (the result keeps it) as a checked float64 4x4 voxel-to-world matrix."""
    try:
        affine = np.array(affine, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"affine must be a 4x4 matrix of numbers; got {type(affine).__name__}.") from None
    if affine.shape != (4, 4):
        raise InputError(f"affine must be a 4x4 voxel-to-world matrix; got shape {affine.shape}.")
    check_affine(affine, "the images")
    return affine


def _brain_mask(value: Any, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """A brain-mask array as a canonical bool ``(X, Y, Z)``: non-zero is brain, NaN is not."""
    mask = _as_array(value, "brain_mask")
    if mask.shape != shape:
        raise InputError(f"the brain mask has shape {mask.shape}; it must be on the images' grid {shape}.")
    if mask.dtype.kind not in "biuf":
        raise InputError(f"the brain mask holds {mask.dtype} values; give a mask of 0 and 1.")
    inside = np.nan_to_num(mask.astype(np.float32, copy=False)) != 0
    return np.array(to_canonical(inside, affine)[0], order="C")


def case_from_arrays(
    images: Mapping[str, np.ndarray], affine: np.ndarray, case_id: str, modalities: Sequence[str] | None = None
) -> Case:
    """A :class:`Case` from ``(X, Y, Z)`` arrays in the caller's voxel order and their affine.

    Keys are read as a mapping of files is (:func:`~mdanet_sdk.data.cases.mapping_keys`: any case, ``mask`` for
    ``brain_mask``); a ``label`` is not read (inference never reads one), and with ``modalities`` only those
    images are (as for files). The case holds copies: the caller may reuse its arrays and affine afterwards.

    Raises:
        InputError: no mapping, a key given twice, a missing modality, arrays that are not 3D images of one shape,
            a bad affine or brain mask.
    """
    if not isinstance(images, Mapping):
        raise InputError(
            f"images must be a mapping modality -> (X, Y, Z) array, e.g. {{'dwi': dwi, 'adc': adc}}; got a "
            f"{type(images).__name__}."
        )
    arrays = mapping_keys(images, "array")
    arrays.pop(LABEL_KEY, None)
    brain_mask = arrays.pop(BRAIN_MASK_KEY, None)
    if modalities is not None:
        require_modalities(arrays, modalities)  # named before any extra array is looked at
        arrays = {m: arrays[m] for m in modalities}
    arrays = {m: _as_array(a, m) for m, a in arrays.items()}
    if not arrays:
        raise InputError("no image given; pass a mapping modality -> (X, Y, Z) array.")
    shapes = {m: a.shape for m, a in arrays.items()}
    first = next(iter(arrays.values()))
    if first.ndim != 3 or len(set(shapes.values())) != 1:
        raise InputError(f"every image must be one 3D array of the same shape; got {shapes}.")
    affine = _affine(affine)
    mask = None if brain_mask is None else _brain_mask(brain_mask, first.shape, affine)
    warnings, canonical = [], {}
    for name, array in arrays.items():
        array, repaired = check_image(array, name)  # the checks and repairs of data.nifti.load_volume
        warnings += repaired
        # the reorientation of data.nifti.load_volume, which data.nifti.to_original inverts; a copy, never a view
        # of the caller's array (which it may reuse), with no negative stride left on an axis of length 1 (numpy
        # calls such a view contiguous; torch refuses it)
        data, canonical_affine = to_canonical(np.asarray(array, dtype=np.float32), affine)
        canonical[name] = np.array(data, order="C"), canonical_affine
    images = {name: data for name, (data, _) in canonical.items()}
    first_name = next(iter(images))
    ref = Volume(
        data=images[first_name],
        affine=canonical[first_name][1],
        header=nib.Nifti1Image(first.astype(np.float32), affine).header,
        original_affine=affine,
        original_shape=tuple(int(n) for n in first.shape),
        orientation=tuple(nib.aff2axcodes(affine)),
        warnings=list(warnings),
    )
    check_distinct_images(images, case_id)
    return Case(case_id, images, None, ref, warnings, mask)
