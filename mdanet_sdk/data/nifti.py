"""NIfTI input/output on nibabel, with atomic writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nibabel as nib

__all__ = ["atomic_save"]


def atomic_save(img: nib.Nifti1Image, path: str | os.PathLike[str]) -> Path:
    """Save ``img`` to ``path`` (gzip when it ends in ``.gz``) via a temporary file in the same folder.

    The temporary file is renamed over ``path`` only once it is complete, so a crash or an error never
    leaves a half-written file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.endswith(".gz") else ".nii"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        nib.save(img, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
