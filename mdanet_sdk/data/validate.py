"""Checks that refuse hostile or damaged input before and after its voxels are read.

Header checks (:func:`check_regular_file`, :func:`check_declared_size`) run before any voxel is read, so a
200-byte file that declares billions of voxels, or a FIFO named ``dwi.nii.gz``, costs nothing and fails one
case with :class:`~mdanet_sdk.errors.InputError` instead of exhausting memory or blocking the batch.

Value checks (:func:`check_image` for modality images, :func:`check_label` for labels and masks) run on the
voxels and are shared by the file path (:func:`~mdanet_sdk.data.nifti.load_volume`) and the in-memory path,
so both refuse and repair the same things:

- data types that are not real numbers (complex, RGB and other structured types) are refused: casting them
  to float32 would silently drop the imaginary part or the colour channels;
- NaN voxels are set to 0 with a warning, because masked-out backgrounds of ADC or Tmax maps are commonly
  NaN, often for most of the volume;
- ±Inf voxels are not a background convention: more than :data:`MAX_INF_SHARE` of them means the file is
  damaged or overflowed and is refused; fewer are set to 0 with a warning;
- finite values beyond :data:`MAX_ABS_VALUE` are refused (no MRI or CTP map gets near it, and float32
  statistics of such values overflow downstream);
- an image whose finite voxels are all 0 is empty, one whose finite voxels all hold one other value is
  constant: both hold no image and are refused (labels may be empty, and labels and masks may be constant).
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import numpy as np

from mdanet_sdk.errors import InputError

__all__ = [
    "as_path",
    "check_affine",
    "check_memory",
    "check_distinct_images",
    "MAX_VOXELS",
    "MAX_DIM",
    "MAX_VOLUMES",
    "MAX_ABS_VALUE",
    "MAX_INF_SHARE",
    "check_regular_file",
    "check_declared_size",
    "check_dtype",
    "check_image",
    "check_label",
]

#: Most voxels one file may declare (2**28 = 268 million, 1 GiB as float32). A 1 mm³ whole-head MRI is
#: about 17 million voxels and a CT perfusion series about 100 million; more means a damaged header.
MAX_VOXELS = 2**28
#: Longest spatial axis (voxels) a file may declare; 4096 is 0.05 mm over a 20 cm head, far beyond any scan.
MAX_DIM = 4096
#: Most volumes a 4D file may hold along its extra axes: a volume per modality, or a perfusion time series
#: (typically 40-100 time points); more means a damaged header.
MAX_VOLUMES = 256
#: Largest finite magnitude accepted in an image: no MRI or CTP map has values anywhere near it.
MAX_ABS_VALUE = 1e20
#: Largest share of ±Inf voxels repaired (set to 0 with a warning); a larger share refuses the file.
MAX_INF_SHARE = 0.01

_FILE_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def as_path(value: object) -> Path:
    """``value`` (str, bytes or path-like) as a Path; anything else is an InputError, not a TypeError from deep
    inside (a number, None or an array passed where a file or folder was meant)."""
    if isinstance(value, (str, bytes, os.PathLike)):
        return Path(os.fsdecode(value))
    what = "None" if value is None else f"a {type(value).__name__} ({str(value)[:30]!r})"
    raise InputError(
        f"{what} is not a file or folder; give a path (str or pathlib.Path), a mapping modality -> path, or a Case "
        "(images in memory: predict_arrays)."
    )


#: Voxel sizes (mm) outside these bounds are no head scan's: a header in other units, or a damaged affine.
VOXEL_MM = (0.01, 100.0)


def check_affine(affine: np.ndarray, what: str) -> None:
    """Refuse a voxel-to-world affine that is not finite, singular, whose last row is not ``0 0 0 1`` (an inverse
    or transposed matrix), or whose voxel sizes lie outside :data:`VOXEL_MM` (volumes in mL would be off by many
    orders of magnitude without a word)."""
    if affine.shape != (4, 4) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(
            f"{what}: degenerate affine (singular or not finite); give a finite, invertible 4x4 voxel-to-world "
            "matrix in mm (a file: fix its qform/sform)."
        )
    if not np.array_equal(affine[3], [0.0, 0.0, 0.0, 1.0]):
        raise InputError(
            f"{what}: the affine's last row is {' '.join(f'{v:g}' for v in affine[3])}, not 0 0 0 1; give the "
            "4x4 voxel-to-world matrix itself (not its inverse or transpose)."
        )
    sizes = np.linalg.norm(affine[:3, :3], axis=0)
    if sizes.min() < VOXEL_MM[0] or sizes.max() > VOXEL_MM[1]:
        raise InputError(
            f"{what} has voxels of {' x '.join(f'{z:.3g}' for z in sizes)} mm by its affine, no head scan's; "
            "store the affine in millimetres (its units may be metres or microns) and try again."
        )


def check_regular_file(path: str | os.PathLike[str]) -> Path:
    """Raise InputError unless ``path`` (after resolving symlinks) is an existing regular file.

    Opening a FIFO blocks until a writer appears and a device such as ``/dev/zero`` never ends, so anything
    but a regular file is refused from its ``stat`` alone, without opening it.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # follows symlinks: a link to a FIFO is a FIFO
    except FileNotFoundError:
        raise InputError(f"{path} does not exist; check the path.") from None
    except OSError as exc:
        raise InputError(f"{path} cannot be accessed ({exc.strerror}); check the path and its permissions.") from exc
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a plain file")
        raise InputError(f"{path} is not a regular file (it is {kind}); give a .nii or .nii.gz image file.")
    return path


def check_dtype(dtype: np.dtype, name: str) -> None:
    """Raise InputError unless ``dtype`` holds real numbers (bool, integers or floats)."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "biuf" or dtype.fields is not None:
        what = "complex" if dtype.kind == "c" else "structured (e.g. RGB)" if dtype.fields else "non-numeric"
        raise InputError(
            f"{name} holds {what} voxels of type {dtype}; give a real-valued image (e.g. the magnitude or one "
            "channel), converted to float32 or an integer type."
        )


def check_declared_size(
    path: Path, shape: tuple[int, ...], dtype: np.dtype, offset: int, data_file: Path | None
) -> None:
    """Refuse a header whose declared size is absurd or larger than its (uncompressed) file, before reading.

    Args:
        path: the file, for messages.
        shape: the declared data shape.
        dtype: the declared on-disk data type.
        offset: byte offset of the voxels in ``data_file``.
        data_file: the file holding the voxels when it is uncompressed (its size is then checked), or
            ``None`` for a compressed file, whose true size cannot be known without decompressing it.
    """
    shape = tuple(int(n) for n in shape)  # Python ints: a product of numpy int64 wraps around silently
    if any(n < 0 for n in shape):
        raise InputError(f"{path} declares a negative dimension (shape {shape}); its header is damaged, check it.")
    if any(n > MAX_DIM for n in shape[:3]):
        raise InputError(
            f"{path} declares an axis of {max(shape[:3])} voxels (shape {shape}), more than the {MAX_DIM} "
            "any scan has; its header is damaged, re-export or re-download it."
        )
    volumes = math.prod(shape[3:])
    if volumes > MAX_VOLUMES:
        raise InputError(
            f"{path} declares {volumes} volumes (shape {shape}), more than the {MAX_VOLUMES} this SDK reads; "
            "its header is damaged or the file is not a stroke image, check it."
        )
    voxels = math.prod(shape)
    if voxels > MAX_VOXELS:
        raise InputError(
            f"{path} declares {voxels:,} voxels (shape {shape}), more than the {MAX_VOXELS:,} this SDK reads "
            "per file; its header is damaged or the image is far too large, check the file."
        )
    if data_file is not None:
        need = offset + voxels * np.dtype(dtype).itemsize
        size = os.stat(data_file).st_size
        if size < need:
            raise InputError(
                f"{path} is truncated: its header declares {shape} voxels of type {np.dtype(dtype)} "
                f"({need:,} bytes with the header) but the file holds {size:,} bytes; re-export or "
                "re-download it."
            )


#: Peak memory of segmenting a case per voxel of its grid: 67 (MRI) and 72 (CTP) bytes measured on a 512 x 512 x 64
#: case, over the process's own ~0.45 GB; a 4096 x 4096 x 16 one peaked at 13.5 GB (50 bytes per voxel).
PEAK_BYTES_PER_VOXEL = 80


def available_memory() -> int | None:
    """Bytes the system can still give (Linux ``MemAvailable`` + ``SwapFree``, and no more than a cgroup v2
    memory limit leaves, as in a container), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        free = sum(int(fields[k].split()[0]) * 1024 for k in ("MemAvailable", "SwapFree"))
    except (OSError, KeyError, ValueError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit != "max":
            free = min(free, int(limit) - int(used))
    except (OSError, ValueError):
        pass
    return free


def check_memory(path: Path, shape: tuple[int, ...]) -> None:
    """Refuse an image whose grid could not be segmented in the memory left, before reading its voxels: the kernel
    would kill the whole process (every other case of the batch with it) instead. Labels and masks are not
    checked (reading them costs a few bytes per voxel)."""
    need = math.prod(shape[:3]) * PEAK_BYTES_PER_VOXEL
    free = available_memory()
    if free is not None and need > free:
        raise InputError(
            f"{path} has {math.prod(shape[:3]):,} voxels per volume (shape {shape}); segmenting it needs about "
            f"{need / 2**30:.1f} GiB of memory and {free / 2**30:.1f} GiB are free: crop or resample it, or free memory."
        )


def check_image(array: np.ndarray, name: str) -> tuple[np.ndarray, list[str]]:
    """Validate one modality image and return it as float32 with NaN/Inf repaired.

    Args:
        array: the voxels, any shape and real dtype (it is never modified).
        name: how messages call the image, e.g. ``"dwi"`` or ``"dwi (case1/dwi.nii.gz)"``.

    Returns:
        ``(float32 array, warnings)``; the array may be ``array`` itself when it is float32 and needed no
        repair; ``warnings`` holds a sentence when NaN/Inf voxels were set to 0.

    Raises:
        InputError: a non-real dtype, more than :data:`MAX_INF_SHARE` infinite voxels, finite values beyond
            :data:`MAX_ABS_VALUE`, no finite voxel, or every finite voxel 0 (empty) or one value (constant).
    """
    return _check_values(array, name, image=True, allow_empty=False)


def check_distinct_images(images: dict[str, np.ndarray], case: str) -> None:
    """Refuse a case whose modalities include the same image twice (one file given for two modalities): the
    model would answer confidently and wrongly.

    Raises:
        InputError: names the two modalities.
    """
    names = list(images)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            if images[first].shape == images[second].shape and np.array_equal(images[first], images[second]):
                raise InputError(
                    f"case {case}: the {first} and {second} images are identical; give each modality its own file."
                )


def check_label(array: np.ndarray, name: str, *, allow_empty: bool = True) -> tuple[np.ndarray, list[str]]:
    """As :func:`check_image` for a label or mask: a constant array is fine, an empty one if ``allow_empty``."""
    return _check_values(array, name, image=False, allow_empty=allow_empty)


def _check_values(array: np.ndarray, name: str, *, image: bool, allow_empty: bool) -> tuple[np.ndarray, list[str]]:
    src = np.asarray(array)
    check_dtype(src.dtype, name)
    if src.size == 0:
        raise InputError(f"{name} holds no voxels (shape {src.shape}); give a non-empty image.")
    if image and src.dtype == np.bool_:
        raise InputError(f"{name} is a yes/no (bool) array, not an image; pass its intensities.")
    if src.dtype.kind != "f":  # integers and bools are always finite and far below MAX_ABS_VALUE
        low, high = src.min(), src.max()
        _check_content(name, float(low), float(high), 0, 0, image=image, allow_empty=allow_empty)
        return src.astype(np.float32, copy=False), []
    finite = np.isfinite(src)
    n_nan = int(np.count_nonzero(np.isnan(src)))
    n_inf = src.size - int(np.count_nonzero(finite)) - n_nan
    if n_inf > MAX_INF_SHARE * src.size:
        raise InputError(
            f"{n_inf / src.size:.1%} of {name} is infinite: the file is damaged or overflowed; re-export it "
            "from the scanner or the software that computed it."
        )
    # Extremes over finite voxels only; computed on the source dtype, before a float32 cast could overflow.
    low = float(np.min(src, where=finite, initial=np.inf))
    high = float(np.max(src, where=finite, initial=-np.inf))
    if max(abs(low), abs(high)) > MAX_ABS_VALUE and n_nan + n_inf < src.size:
        raise InputError(
            f"{name} holds values up to {max(abs(low), abs(high)):.3g}, but no MRI or CTP map has values above "
            f"{MAX_ABS_VALUE:g}; the file is damaged or badly scaled, check its data type and scaling."
        )
    _check_content(name, low, high, n_nan, n_inf, image=image, allow_empty=allow_empty)
    if n_nan + n_inf == 0:
        return src.astype(np.float32, copy=False), []
    repaired = np.where(finite, src, 0).astype(np.float32, copy=False)  # a new array: the input is kept
    return repaired, [
        f"{name}: {n_nan + n_inf} NaN/Inf voxels were set to 0 ({n_nan} NaN, {n_inf} infinite; "
        f"{(n_nan + n_inf) / src.size:.1%} of the image)."
    ]


def _check_content(
    name: str, low: float, high: float, n_nan: int, n_inf: int, *, image: bool, allow_empty: bool
) -> None:
    """Refuse an image without finite voxels, an empty one (unless allowed) and a constant one (images)."""
    if low > high:  # no finite voxel at all (min over nothing stays +inf)
        raise InputError(f"{name} holds no finite value ({n_nan} NaN and {n_inf} infinite voxels); check the file.")
    undefined = f"; {n_nan} NaN and {n_inf} infinite voxels aside" if n_nan + n_inf else ""
    every = "every finite voxel" if n_nan + n_inf else "every voxel"
    if low == high == 0.0 and not allow_empty:
        raise InputError(f"{name} is empty ({every} is 0{undefined}); check that the right file was given.")
    if low == high and image and low != 0.0:
        raise InputError(f"{name} is constant ({every} is {low:g}{undefined}): it holds no image; check the file.")
