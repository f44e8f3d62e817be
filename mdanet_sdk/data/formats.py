"""Images that are not NIfTI: MetaImage / NRRD through SimpleITK, DICOM series folders through dcm2niix.

Both are optional extras (``pip install 'mdanet-sdk[formats]'``, ``pip install 'mdanet-sdk[dicom]'``); when
one is missing, reading such an image raises a one-line :class:`~mdanet_sdk.errors.InputError` naming it.
:func:`~mdanet_sdk.data.nifti.load_volume` dispatches here, so every check of the NIfTI reader (declared
size, data type, values, affine) applies to these formats too, and the same image stored as NIfTI, ``.mha``
or ``.nrrd`` loads into the same :class:`~mdanet_sdk.data.nifti.Volume`.

- :func:`read_itk`: ``.mha``/``.mhd``/``.nrrd``/``.nhdr``. The header is read first (size, pixel type, and
  the path of a detached data file, which must be a regular file) and checked before any voxel is read.
  ITK's geometry is LPS (direction columns, spacing, origin); the NIfTI affine is RAS, so the first two rows
  are negated: ``affine = diag(-1, -1, 1, 1) @ [[D @ diag(spacing), origin], [0, 1]]``.
- :func:`dicom_as_nifti`: a folder of one DICOM series is converted by ``dcm2niix`` into a temporary folder,
  which is removed when the ``with`` block ends (the caller reads the NIfTI inside it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from mdanet_sdk.data.validate import check_declared_size, check_dtype, check_memory, check_regular_file
from mdanet_sdk.errors import InputError

__all__ = [
    "ITK_SUFFIXES",
    "is_itk",
    "is_dicom_folder",
    "itk_shape",
    "read_itk",
    "dicom_as_nifti",
    "DICOM_TIMEOUT_S",
]

#: File name endings read through SimpleITK (MetaImage and NRRD, with the data inline or detached).
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
#: Longest time one dcm2niix conversion may take (seconds) before the series is refused.
DICOM_TIMEOUT_S = 600
# How many files of a folder are opened to find the DICOM magic ("DICM" at byte 128) when none ends in .dcm.
_DICOM_PROBE = 8
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def is_itk(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is named as an image :func:`read_itk` reads (by its ending, any case)."""
    return Path(path).name.lower().endswith(ITK_SUFFIXES)


def _has_dicom_magic(path: Path) -> bool:
    try:
        if not path.is_file():  # never open a FIFO or a device: it could block
            return False
        with path.open("rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def is_dicom_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder of DICOM files: some non-hidden file ends in ``.dcm``, or one of the first
    few carries the DICOM magic (many scanners write files without an ending)."""
    folder = Path(path)
    try:
        if not folder.is_dir():
            return False
        files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError:
        return False
    if any(p.name.lower().endswith(".dcm") and p.is_file() for p in files):
        return True
    return any(_has_dicom_magic(p) for p in files[:_DICOM_PROBE])


def _sitk() -> Any:
    try:
        import SimpleITK
    except ImportError:
        raise InputError(
            "reading .mha/.mhd/.nrrd/.nhdr images needs SimpleITK; install it: pip install 'mdanet-sdk[formats]'."
        ) from None
    return SimpleITK


_HEADER_BYTES = 1 << 20  # a MetaImage / NRRD header is a few hundred bytes; its data-file line must lie within


def _detached_data_file(path: Path) -> Path | None:
    """The data file a MetaImage (``ElementDataFile``) or NRRD (``data file``) header points to; None for inline
    data (``LOCAL``, or a NRRD without that field).

    File lists (``LIST``) and patterns (``%``, with NRRD's and MetaImage's numeric fields after it) are refused
    rather than left to ITK, which would open files this check never saw (a FIFO blocks forever); so is a header
    whose data-file line does not come within its first MiB (MetaImage requires it last). Any other value is one
    file name, spaces included (SimpleITK writes ``case 1.raw`` for ``case 1.mhd``).
    """
    with path.open("rb") as f:
        head = f.read(_HEADER_BYTES).decode("latin-1")
    nrrd = path.name.lower().endswith((".nrrd", ".nhdr"))
    for line in head.splitlines():
        if not line.strip() and nrrd:
            return None  # the blank line that ends a NRRD header: the data follow inline
        key, sep, value = line.replace(":", "=", 1).partition("=")
        key, value = key.strip().lower(), value.strip()
        if sep and key in ("elementdatafile", "data file", "datafile"):
            if value.upper() == "LOCAL":
                return None
            if value.upper().startswith("LIST") or "%" in value:
                raise InputError(
                    f"{path} stores its voxels in a list or pattern of files ({value[:40]!r}), which is not read "
                    "here; convert the image to one .nii.gz (e.g. with SimpleITK) and give that."
                )
            return path.parent / value
    if len(head) == _HEADER_BYTES or path.name.lower().endswith(".mhd"):
        raise InputError(
            f"{path} has no data-file line in its header's first MiB; it is not a readable image. Convert it to "
            ".nii.gz and give that."
        )
    return None


def _itk_header(sitk: Any, path: Path) -> Any:
    """A reader with ``path``'s header read and checked (size, pixel type, data file); no voxel read yet."""
    data_file = _detached_data_file(path)
    if data_file is not None:
        check_regular_file(data_file)  # a header pointing at a FIFO or /dev/zero would block or never end
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    pixel = str(sitk.GetPixelIDValueAsString(reader.GetPixelID()))
    if "complex" in pixel:
        check_dtype(np.dtype(np.complex64), str(path))
    size = tuple(int(n) for n in reader.GetSize())
    components = int(reader.GetNumberOfComponents())
    if len(size) < 3:
        raise InputError(f"{path} is a {len(size)}D image {size}; give a 3D volume or a 4D image.")
    check_declared_size(path, size + ((components,) if components > 1 else ()), np.dtype(np.float32), 0, None)
    return reader


def itk_shape(path: str | os.PathLike[str]) -> tuple[int, ...]:
    """The voxel shape a MetaImage or NRRD header declares, in NIfTI order ``(X, Y, Z[, T or components])``,
    reading no voxel.

    Raises:
        InputError: as :func:`read_itk`, for problems its header shows.
    """
    sitk = _sitk()
    path = check_regular_file(path)
    try:
        reader = _itk_header(sitk, path)
    except RuntimeError as exc:
        raise InputError(f"{path} is not a readable image ({exc}); re-export or re-download it.") from exc
    components = int(reader.GetNumberOfComponents())
    return tuple(int(n) for n in reader.GetSize()) + ((components,) if components > 1 else ())


def read_itk(path: str | os.PathLike[str], image: bool = True) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Read a MetaImage or NRRD image as an in-memory NIfTI image and its float32 voxels.

    Args:
        path: a ``.mha``, ``.mhd``, ``.nrrd`` or ``.nhdr`` file.
        image: a modality image (not a label or mask): it must fit the free memory
            (:func:`~mdanet_sdk.data.validate.check_memory`).

    Returns:
        ``(image, data)``: ``data`` float32 in NIfTI voxel order ``(X, Y, Z[, C])`` (spatial axes first, a
        time axis or the components of a vector pixel last); ``image`` holds it with the RAS affine and a
        NIfTI header (qform and sform set, mm units).

    Raises:
        InputError: SimpleITK missing, a file that is not a regular file or unreadable, fewer than 3
            dimensions, a complex pixel type, or an absurd declared size.
    """
    sitk = _sitk()
    path = check_regular_file(path)
    try:
        reader = _itk_header(sitk, path)
        if image:
            check_memory(path, tuple(int(n) for n in reader.GetSize()))
        itk_image = reader.Execute()
        voxels = sitk.GetArrayFromImage(itk_image)
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{path} does not fit in memory; free memory, or crop or resample it first.") from None
    except (RuntimeError, OSError, UnicodeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path} is not a readable image ({reason}); re-export or re-download it.") from exc
    dim = itk_image.GetDimension()
    # numpy order is (..., z, y, x[, components]); NIfTI voxel order is (x, y, z, ...): reverse the spatial axes.
    data = np.asarray(voxels).transpose(*reversed(range(dim)), *range(dim, voxels.ndim))
    check_dtype(data.dtype, str(path))
    direction = np.asarray(itk_image.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(itk_image.GetSpacing(), dtype=np.float64)[:3]
    lps[:3, 3] = np.asarray(itk_image.GetOrigin(), dtype=np.float64)[:3]
    affine = _LPS_TO_RAS @ lps
    data = np.ascontiguousarray(data, dtype=np.float32)
    nifti = nib.Nifti1Image(data, affine)
    nifti.header.set_qform(affine, code=1)
    nifti.header.set_sform(affine, code=1)
    nifti.header.set_xyzt_units("mm")
    return nifti, data


def _dcm2niix() -> str:
    """The dcm2niix executable: the one the ``dcm2niix`` wheel ships, else one on PATH."""
    try:
        import dcm2niix

        exe = str(dcm2niix.bin)
        if Path(exe).is_file():
            return exe
    except (ImportError, AttributeError):
        pass
    found = shutil.which("dcm2niix")
    if found is None:
        raise InputError("reading DICOM folders needs dcm2niix; install it: pip install 'mdanet-sdk[dicom]'.")
    return found


@contextmanager
def dicom_as_nifti(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Convert one DICOM series folder to a temporary NIfTI file; the file is removed when the block ends.

    Args:
        folder: a folder holding the files of one series (sub-folders are searched too, as dcm2niix does).

    Yields:
        the ``.nii.gz`` file dcm2niix wrote.

    Raises:
        InputError: dcm2niix missing, failing or timing out, the folder holding no series or several
            (several series, echoes or phase images), or a diffusion series (``.bval`` written).
    """
    folder = Path(folder)
    exe = _dcm2niix()
    with tempfile.TemporaryDirectory(prefix=".mdanet-dicom-") as tmp:
        # -z i: gzip inside dcm2niix (no pigz needed); -b n: no JSON sidecar; -f %s: named by series number.
        command = [exe, "-z", "i", "-b", "n", "-f", "series_%s", "-o", tmp, str(folder)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=DICOM_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InputError(
                f"dcm2niix could not convert the DICOM folder {folder} ({exc}); reinstall it: "
                "pip install 'mdanet-sdk[dicom]', or convert the series to NIfTI yourself."
            ) from exc
        outputs = sorted(Path(tmp).glob("*.nii.gz"))
        if done.returncode != 0 or not outputs:
            said = [line for line in (done.stderr + done.stdout).splitlines() if "error" in line.lower()]
            reason = said[-1].strip() if said else f"exit status {done.returncode}, no image written"
            raise InputError(
                f"dcm2niix found no convertible DICOM series in {folder} ({reason}); check the folder, or "
                "convert it to NIfTI yourself."
            )
        b_values = [v for f in Path(tmp).glob("*.bval") for v in f.read_text(errors="replace").split()]
        if len(outputs) > 1 or len(b_values) > 1:
            what = f"a diffusion series ({len(b_values)} b-values)" if len(b_values) > 1 else "several series"
            raise InputError(
                f"the DICOM folder {folder} holds {what} ({len(outputs)} images); give a folder holding one "
                "3D series per modality (e.g. the trace-weighted DWI, or the ADC map)."
            )
        yield outputs[0]
