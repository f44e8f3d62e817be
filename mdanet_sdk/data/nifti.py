"""NIfTI input/output on nibabel: validated loading, canonical RAS+ orientation and back, atomic writes.

Every array the data package hands out is in canonical RAS+ voxel order: the voxel axes are permuted and
flipped (never resampled) so that they point as closely as possible to Right, Anterior, Superior, as
:func:`nibabel.as_closest_canonical` does. :func:`to_original` undoes exactly that permutation/flip, and
:func:`save_like` writes a result with the input's own affine, so an output overlays its input voxel for
voxel, whether the input was stored RAS, LPS, LAS or with an oblique affine.

Validation policy of :func:`load_volume` (every problem raises :class:`~mdanet_sdk.errors.InputError`):

- not a NIfTI-1/2 file, a corrupt or truncated gzip stream, an unreadable data type;
- fewer than 3 or more than 4 dimensions (a trailing axis of length 1 is dropped first, so ``(X, Y, Z, 1)``
  is read as 3D); a zero-length axis; a non-finite or singular affine;
- before any voxel is read (:mod:`mdanet_sdk.data.validate`): a path that is not a regular file (a FIFO or
  a device would block or never end); a data type that is not real (complex, RGB); a header declaring more
  than :data:`~mdanet_sdk.data.validate.MAX_VOXELS` voxels, an axis longer than ``MAX_DIM`` or more than
  ``MAX_VOLUMES`` volumes; an uncompressed file smaller than its header declares. Running out of memory
  while reading is an InputError for that file too;
- the values (:func:`~mdanet_sdk.data.validate.check_image`, or ``check_label`` for labels and masks): more
  than 1 % infinite voxels, finite values above 1e20, no finite voxel, an empty image (every finite voxel
  zero) unless ``allow_empty=True`` (labels of lesion-free cases are empty), a constant modality image;
- NaN voxels and a few ±Inf voxels are **not** an error: they are set to 0 and a sentence saying how many
  were replaced is appended to :attr:`Volume.warnings` (and from there to ``Case.warnings``), because
  scanner maps such as ADC or Tmax often carry undefined voxels outside the brain.

MetaImage / NRRD files and DICOM series folders (:mod:`mdanet_sdk.data.formats`) are read into the same
:class:`Volume` as the same image stored as NIfTI, with the same checks.

Every file :func:`save_like` writes carries :data:`PREDICTION_MARK` in its header's ``descrip`` field, so
that dataset readers can tell the SDK's own outputs from ground truth (:func:`is_prediction`).
"""

from __future__ import annotations

import gzip
import math
import os
import stat
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.openers import ImageOpener
import torch
from nibabel.orientations import aff2axcodes, apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform
from nibabel.spatialimages import HeaderDataError

from mdanet_sdk._files import atomic_write
from mdanet_sdk.data.formats import ITK_SUFFIXES, dicom_as_nifti, is_dicom_folder, is_itk, itk_shape, read_itk
from mdanet_sdk.data.validate import (
    check_affine,
    check_declared_size,
    check_memory,
    check_dtype,
    check_image,
    check_label,
    check_regular_file,
)
from mdanet_sdk.errors import InputError
from mdanet_sdk.pipeline import orientation

__all__ = [
    "Volume",
    "atomic_save",
    "load_volume",
    "to_original",
    "save_like",
    "is_prediction",
    "header_descrip",
    "named_like_image",
    "is_own_output",
    "NIFTI_SUFFIXES",
    "IMAGE_SUFFIXES",
    "IMAGE_NAME_SUFFIXES",
    "PREDICTION_MARK",
    "OUTPUT_SUFFIXES",
    "nifti_stem",
    "output_name",
    "header_shape",
]

#: File name endings read and written as NIfTI.
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: File name endings :func:`load_volume` reads: NIfTI, and MetaImage / NRRD (:mod:`mdanet_sdk.data.formats`).
IMAGE_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
#: Every ending that names an image file: :data:`IMAGE_SUFFIXES` and an Analyze pair's ``.hdr``/``.img``.
IMAGE_NAME_SUFFIXES = (".nii.gz", ".nii", ".hdr", ".img", *ITK_SUFFIXES)
#: ``descrip`` header text of every file :func:`save_like` writes: readers never take such a file as a label.
PREDICTION_MARK = "mdanet-sdk prediction"
#: What each output of a case is called: ``<case_id>_seg.nii.gz`` (mask), ``<case_id>_prob.nii.gz``.
OUTPUT_SUFFIXES = {"mask": "_seg", "prob": "_prob"}


def nifti_stem(name: str | os.PathLike[str]) -> str:
    """A file name without its image ending (any case, any of :data:`IMAGE_SUFFIXES` or an Analyze pair's
    ``.hdr``/``.img``): ``sub-01_dwi.nii.gz`` -> ``sub-01_dwi``, ``case1_adc.mha`` -> ``case1_adc``."""
    name = Path(name).name
    lower = name.lower()
    for suffix in IMAGE_NAME_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def named_like_image(path: str | os.PathLike[str]) -> bool:
    """Whether ``path``'s name ends like an image file (any case, :data:`IMAGE_NAME_SUFFIXES`)."""
    return Path(path).name.lower().endswith(IMAGE_NAME_SUFFIXES)


def output_name(case_id: str, output: Literal["mask", "prob"] = "mask") -> str:
    """The file name of a case's output: ``<case_id>_seg.nii.gz`` for the mask, ``<case_id>_prob.nii.gz``."""
    return f"{case_id}{OUTPUT_SUFFIXES[output]}.nii.gz"


# What nibabel, gzip and zlib raise on a file that is not NIfTI or is damaged.
_READ_ERRORS = (ImageFileError, HeaderDataError, OSError, EOFError, zlib.error, ValueError, TypeError)
_CANONICAL = axcodes2ornt(("R", "A", "S"))


@dataclass
class Volume:
    """One NIfTI image in canonical RAS+ voxel order, with what is needed to write results back.

    Attributes:
        data: float32 voxels in canonical order, ``(X, Y, Z)`` or ``(X, Y, Z, C)`` (modalities last).
        affine: 4x4 voxel-to-world (mm) matrix of ``data``.
        header: the original nibabel header (a copy; its shape and dtype are those of the file).
        original_affine: 4x4 affine of the file as stored.
        original_shape: shape of the file as stored (length-1 axes after the third dropped: :func:`image_shape`).
        orientation: axis codes of the stored voxel axes, e.g. ``("L", "A", "S")``.
        path: the file it was read from, or ``None``.
        warnings: sentences about repaired problems (e.g. NaN voxels set to 0).
    """

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    original_affine: np.ndarray
    original_shape: tuple[int, ...]
    orientation: tuple[str, ...]
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Canonical spatial shape ``(X, Y, Z)``."""
        x, y, z = self.data.shape[:3]
        return int(x), int(y), int(z)

    @property
    def zooms(self) -> tuple[float, float, float]:
        """Canonical voxel sizes in mm along X, Y, Z (lengths of the affine's columns)."""
        x, y, z = np.linalg.norm(self.affine[:3, :3], axis=0)
        return float(x), float(y), float(z)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (|det| of the affine's 3x3 part, mm³ / 1000)."""
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0


def atomic_save(img: nib.Nifti1Image, path: str | os.PathLike[str]) -> Path:
    """Save ``img`` to ``path`` (gzip when it ends in ``.gz``) through a temporary file that is renamed when
    complete, so a crash or an error never leaves a half-written file behind."""
    return atomic_write(path, lambda tmp: nib.save(img, tmp))


def _check_header(path: Path, img: nib.Nifti1Pair) -> int:
    """Refuse a non-real data type or an absurd / truncated declared size before any voxel is read.

    Returns:
        the bytes of the data file up to its last voxel (the stored ``vox_offset``: header and extensions).
    """
    header = img.header
    check_dtype(header.get_data_dtype(), str(path))
    data_name = img.file_map["image"].filename
    assert data_name is not None  # nib.load names the file it read the voxels from
    data_file = Path(data_name)
    if data_file != path:  # the .img of a .hdr/.img pair must be a regular file too
        check_regular_file(data_file)
    # A compressed stream's length is unknown without decompressing it: MAX_VOXELS bounds it instead, and
    # nibabel's own truncation errors become InputError in _read.
    compressed = data_file.name.lower().endswith((".gz", ".bz2", ".zst"))
    stored = _stored_header(img)
    _check_geometry(path, stored)
    shape = tuple(int(n) for n in header.get_data_shape())
    offset = int(header.get_data_offset())
    if "header" not in img.file_map and float(stored["vox_offset"]) < type(header).single_vox_offset:
        # nibabel would read the header's own bytes as the first voxels and shift the whole image
        raise InputError(
            f"{path} declares its voxels at byte {float(stored['vox_offset']):g}, inside its "
            f"{type(header).single_vox_offset}-byte header (vox_offset); the file is damaged or mis-written: "
            "re-export it."
        )
    check_declared_size(path, shape, header.get_data_dtype(), offset, None if compressed else data_file)
    return max(offset, int(float(stored["vox_offset"]))) + math.prod(shape) * header.get_data_dtype().itemsize


def _stored_header(img: nib.Nifti1Pair) -> Any:
    """``img``'s header as stored: nibabel's loaded copy has zero voxel sizes and offsets replaced already."""
    name = img.file_map["header" if "header" in img.file_map else "image"].filename
    assert name is not None  # nib.load names the file it read the header from
    with ImageOpener(name) as f:
        return type(img.header).from_fileobj(f, check=False)


def _check_geometry(path: Path, header: Any) -> None:
    """Refuse geometry that nibabel would read as millimetres wrongly: spatial units of metres or microns
    (volumes would be off by 1e9), and a zero voxel size where the affine comes from ``pixdim`` (nibabel
    takes 1 mm instead, so volumes in mL would be wrong without a word). ``header`` is the one stored."""
    unit = {1: "meter", 3: "micron"}.get(int(header["xyzt_units"]) & 7)  # NIfTI codes; others read as mm
    if unit is not None:
        raise InputError(
            f"{path} gives its geometry in {unit}s (xyzt_units); mdanet-sdk reads millimetres, so volumes and "
            "sizes would be wrong: store the affine in mm and set the units to mm."
        )
    spatial = min(3, int(header["dim"][0]))
    if int(header["sform_code"]) == 0 and any(float(z) == 0.0 for z in header["pixdim"][1 : 1 + spatial]):
        raise InputError(
            f"{path} declares a voxel size of 0 (pixdim {[float(z) for z in header['pixdim'][1:4]]}) and no "
            "sform; set the real voxel size in its header (e.g. with nibabel's set_zooms)."
        )


def _read(path: Path, image: bool) -> tuple[nib.Nifti1Pair, np.ndarray]:
    """Open ``path`` with nibabel and read its voxels as float32, mapping every failure to InputError; an
    ``image`` (not a label or mask) must fit the free memory (:func:`~mdanet_sdk.data.validate.check_memory`)."""
    check_regular_file(path)
    try:
        img = nib.load(path)
        if not isinstance(img, nib.Nifti1Pair):  # Nifti1Image, Nifti2Image and the .hdr/.img pairs
            raise InputError(
                f"{path} is a {type(img).__name__}, not a NIfTI image; convert it to .nii or .nii.gz first."
            )
        expected = _check_header(path, img)
        if image:
            check_memory(path, tuple(int(n) for n in img.shape))
        data = np.asarray(img.get_fdata(dtype=np.float32, caching="unchanged"))
        _check_gzip_stream(Path(str(img.file_map["image"].filename)), expected)
    except InputError:
        raise
    except MemoryError:
        raise InputError(
            f"{path} does not fit in memory when read as float32; free memory, or crop or resample it first."
        ) from None
    except _READ_ERRORS as exc:
        raise InputError(
            f"{path} is not a readable NIfTI file ({' '.join(str(exc).split())}); check that it is a complete .nii "
            "or .nii.gz image, or re-export / re-download it."
        ) from exc
    return img, data


_TRAILING_BYTES = 1 << 20  # what a .nii.gz may hold past its voxels before it is refused


def _check_gzip_stream(path: Path, expected: int) -> None:
    """Decompress a gzip file to its end, which checks its CRC and length: nibabel reads only the voxels, so a
    damaged byte that still decompresses would otherwise pass unnoticed (raises OSError / EOFError). The
    stream may not go on far past the ``expected`` bytes (header and voxels): gigabytes of appended zeros would
    cost minutes of CPU per case."""
    if not path.name.lower().endswith(".gz"):
        return
    read = 0
    with gzip.open(path, "rb") as stream:
        while chunk := stream.read(1 << 24):
            read += len(chunk)
            if read > expected + _TRAILING_BYTES:
                raise InputError(
                    f"{path} holds more data than its header declares ({expected} bytes of header and voxels, "
                    "then over 1 MiB more); the file is damaged or crafted: re-export it."
                )


def image_shape(shape: Iterable[int]) -> tuple[int, ...]:
    """A stored shape without its length-1 axes after the third: ``(X, Y, Z, 1)`` and ``(X, Y, Z, 1, 1)`` are
    3D volumes, ``(X, Y, Z, 1, C)`` (NIfTI's 5th axis for components) is 4D."""
    shape = tuple(int(n) for n in shape)
    return shape[:3] + tuple(n for n in shape[3:] if n != 1)


def header_shape(path: str | os.PathLike[str]) -> tuple[int, ...] | None:
    """The voxel shape an image file's header declares (NIfTI, MetaImage or NRRD; :func:`image_shape`),
    reading no voxel; ``None`` when the header cannot be read (:func:`load_volume` then says why)."""
    try:
        if is_itk(path):
            shape = tuple(itk_shape(path))
        else:
            check_regular_file(path)
            shape = tuple(nib.load(path).shape)  # type: ignore[attr-defined]
        return image_shape(shape) if all(n >= 1 for n in shape) else None
    except (InputError, *_READ_ERRORS):
        return None


def is_prediction(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a regular NIfTI file whose header carries :data:`PREDICTION_MARK` (reads the header
    only; an unreadable file is not a prediction, and its reader reports it)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # never open a FIFO or device: it could block
            return False
        # nibabel types .header as FileBasedHeader (ignored below); NIfTI / Analyze headers are mappings, and
        # any other header raises KeyError, handled here.
        text = header_descrip(nib.load(path).header)
    except (*_READ_ERRORS, KeyError):
        return False
    return text.startswith(PREDICTION_MARK)


def header_descrip(header: Any) -> str:
    """The ``descrip`` text of a NIfTI header (where :func:`save_like` marks its outputs).

    Raises:
        KeyError: the header has no ``descrip`` (not NIfTI or Analyze).
    """
    descrip = np.asarray(header["descrip"]).item()
    return descrip.decode("latin-1") if isinstance(descrip, bytes) else str(descrip)


def is_own_output(path: str | os.PathLike[str], case_names: Iterable[str]) -> bool:
    """Whether ``path`` is one of the SDK's outputs: named ``<case>_seg`` or ``<case>_prob`` (``mdanet-sdk
    segment`` writes these beside the inputs when ``-o`` is the case folder) for one of ``case_names``, or
    carrying :data:`PREDICTION_MARK` (:func:`is_prediction`, which catches renamed outputs)."""
    stem = nifti_stem(path).lower()
    ours = {f"{name.lower()}{suffix}" for name in case_names for suffix in OUTPUT_SUFFIXES.values()}
    return stem in ours or is_prediction(path)


def load_volume(
    path: str | os.PathLike[str], *, allow_empty: bool = False, label: bool = False, name: str | None = None
) -> Volume:
    """Read and validate a 3D or 4D NIfTI image and reorient it to canonical RAS+.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file; also (:mod:`mdanet_sdk.data.formats`, optional extras) a
            ``.mha``/``.mhd``/``.nrrd``/``.nhdr`` file or a folder holding one DICOM series.
        allow_empty: accept an image whose voxels are all zero (a label of a lesion-free case); implies
            ``label``.
        label: the file is a label or mask, not a modality image: its values are checked with
            :func:`~mdanet_sdk.data.validate.check_label` (a constant array is fine).
        name: how messages call the image, e.g. ``"dwi (case1/dwi.nii.gz)"``; default: the path.

    Returns:
        a :class:`Volume` whose ``data`` is float32 ``(X, Y, Z)`` or ``(X, Y, Z, C)`` in RAS+ order; for other
        formats its ``header`` is a NIfTI header made from the image's geometry (results are written as NIfTI).

    Raises:
        InputError: see the module docstring for the full list of checks.
    """
    path = Path(path)
    if is_dicom_folder(path):
        with dicom_as_nifti(path) as converted:  # removed when the block ends; the voxels are in memory then
            volume = load_volume(converted, allow_empty=allow_empty, label=label, name=name or str(path))
        return replace(volume, path=path)
    image = not (label or allow_empty)
    img, data = read_itk(path, image) if is_itk(path) else _read(path, image)
    if data.size == 0:
        raise InputError(f"{path} has a zero-length axis {data.shape}; it holds no voxels, re-export it.")
    data = data.reshape(image_shape(data.shape))
    if data.ndim not in (3, 4):
        raise InputError(
            f"{path} has {data.ndim} dimensions {data.shape}; expected a 3D volume (X, Y, Z) or a 4D image "
            "with modalities on the last axis; split or convert it first."
        )
    affine = np.asarray(img.affine, dtype=np.float64)
    check_affine(affine, str(path))

    what = name or str(path)
    if label or allow_empty:
        data, warnings = check_label(data, what, allow_empty=allow_empty)
    else:
        data, warnings = check_image(data, what)

    canonical, canonical_affine = to_canonical(data, affine)
    return Volume(
        data=canonical,
        affine=canonical_affine,
        header=img.header.copy(),
        original_affine=affine,
        original_shape=tuple(int(n) for n in data.shape),
        orientation=tuple(aff2axcodes(affine)),
        path=path,
        warnings=warnings,
    )


def io_orientation(affine: np.ndarray) -> np.ndarray:
    """nibabel's orientation array (voxel axis → world axis and direction) of a ``(4, 4)`` affine, by the rule of
    :func:`mdanet_sdk.pipeline.orientation.io_orientation` (nibabel's own), which exported artefacts apply to the
    C API's volumes: one rule for files and arrays."""
    return np.array(orientation.io_orientation(torch.from_numpy(np.asarray(affine, dtype=np.float64))), dtype=float)


def to_canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``array`` ``(X, Y, Z, ...)`` in canonical RAS+ voxel order, and the affine of that order."""
    ornt = io_orientation(affine)
    return np.ascontiguousarray(apply_orientation(array, ornt)), affine @ inv_ornt_aff(ornt, array.shape[:3])


def to_original(array_canonical: np.ndarray, ref: Volume) -> np.ndarray:
    """Put an array in canonical order back into ``ref``'s stored voxel order.

    Args:
        array_canonical: ``(X, Y, Z)`` or ``(X, Y, Z, ...)`` on ``ref``'s canonical grid.
        ref: the volume it was computed from.

    Returns:
        the same values, axes permuted/flipped to the stored order: a new contiguous array of the same dtype,
        never a view of ``array_canonical`` (a result's ``mask`` edited by its caller must not change what it
        saves).

    Raises:
        InputError: the array's spatial shape is not ``ref.shape``.
    """
    array = np.asarray(array_canonical)
    if array.shape[:3] != ref.shape:
        raise InputError(
            f"array of shape {array.shape} does not match the reference grid {ref.shape}; "
            "restore it to the input's native grid before writing it back."
        )
    # load_volume applied io_orientation(original_affine) (stored -> canonical); apply its inverse.
    back = ornt_transform(_CANONICAL, io_orientation(ref.original_affine))
    return np.array(apply_orientation(array, back), order="C")  # a copy also when the input was RAS+ already


def _as_output(array: np.ndarray, output: str) -> np.ndarray:
    """Validate and cast a result: uint8 {0..255} integers for masks, finite float32 for probabilities."""
    if output not in ("mask", "prob"):
        raise InputError(f"output must be 'mask' or 'prob', got {output!r}.")
    if not np.all(np.isfinite(array)):
        raise InputError(f"the {output} to save holds NaN or Inf values; fix the result before saving it.")
    if output == "prob":
        return array.astype(np.float32)
    if array.dtype != bool and (np.any(array != np.round(array)) or array.min() < 0 or array.max() > 255):
        raise InputError(
            "a mask must hold integer labels 0..255; threshold probabilities first or save with output='prob'."
        )
    return array.astype(np.uint8)


def save_like(
    array_canonical: np.ndarray,
    ref: Volume,
    path: str | os.PathLike[str],
    output: Literal["mask", "prob"] = "mask",
    made_with: str = "",
) -> Path:
    """Write a canonical-order result in ``ref``'s stored orientation, affine and header, atomically.

    The header is a copy of ``ref``'s with the qform/sform codes and units kept, the data type set to
    uint8 (``output="mask"``) or float32 (``output="prob"``), intensity scaling and display range reset, and
    ``descrip`` set to :data:`PREDICTION_MARK` followed by ``made_with`` (what made the result:
    :func:`~mdanet_sdk.report.results_digest`), when given.

    Args:
        array_canonical: ``(X, Y, Z)`` result on ``ref``'s canonical grid.
        ref: the input volume (its geometry is used).
        path: output file; ``.nii.gz`` is gzip-compressed, ``.nii`` is not.
        output: ``"mask"`` (integer labels) or ``"prob"`` (probabilities).
        made_with: up to 58 characters naming the weights and settings (``--skip-existing`` compares them).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: bad file name, output, shape or values; nothing is written then.
    """
    path = Path(path)
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise InputError(f"output {path} must end in .nii or .nii.gz; choose such a file name.")
    data = _as_output(to_original(array_canonical, ref), output)
    header = ref.header.copy()
    header.set_data_dtype(data.dtype)
    header.set_slope_inter(None, None)  # never rescale masks/probabilities by the input's slope
    header["cal_min"] = header["cal_max"] = 0  # the input's display window would hide a mask
    header.set_intent("none")
    # Marks the file as ours, so that a later evaluate/train never reads it back as ground truth.
    header["descrip"] = f"{PREDICTION_MARK} {made_with}"[:80].rstrip()
    img = nib.Nifti1Image(data, ref.original_affine, header)
    return atomic_save(img, path)
