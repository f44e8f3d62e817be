"""Tiny images for the layout and format tests: every image holds ``10 * case + modality index + 1`` in every voxel
but one (0), so a test can tell which case and modality a loaded array came from."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (8, 8, 4)
MRI = ("dwi", "adc")
# An oblique, anisotropic, LPS-like affine: the format round trips must keep every entry of it.
_C, _S = np.cos(0.3), np.sin(0.3)
OBLIQUE = np.eye(4)
OBLIQUE[:3, :3] = np.array([[-_C, -_S, 0.0], [_S, -_C, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([1.5, 2.0, 3.0])
OBLIQUE[:3, 3] = [12.0, -30.5, 7.25]


def image(value: float, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    data = np.full(shape, value, np.float32)
    data[(-1,) * len(shape)] = 0.0
    return data


def label(case: int) -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[case % SHAPE[0], 1:3, 1] = 1
    return mask


def write(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """``data`` as a NIfTI-1 file at ``path`` (qform and sform both the affine, identity by default)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine)
    img.header.set_qform(img.affine, code=1)
    img.header.set_sform(img.affine, code=1)
    nib.save(img, path)
    return path


def holds(image: np.ndarray, value: float) -> bool:
    """Whether ``image`` is one made by :func:`image` with ``value``."""
    return image.max() == value and np.count_nonzero(image == value) == image.size - 1
