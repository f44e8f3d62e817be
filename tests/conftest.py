"""Shared pytest fixtures. Each group of fixtures is prefixed by its owner (``io_``: NIfTI IO and readers)."""

from __future__ import annotations

import os

# Under pytest-xdist (``-n auto``) each worker computes on one thread: two workers on two cores finish the suite
# sooner than one worker on two threads, as most tests are serial Python and NumPy. Set before NumPy (OpenBLAS)
# and torch are imported here: both read it once, at import.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` run first, so that no worker is left with a two-minute test while the others idle
    (with ``--dist worksteal`` the others take over the rest of its queue)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def _write_nifti(
    path: Path,
    data: np.ndarray,
    affine: np.ndarray | None = None,
    *,
    qform_code: int = 1,
    sform_code: int = 1,
) -> Path:
    """Write ``data`` (any shape, its own dtype) as a NIfTI-1 file with the given affine and codes."""
    img = nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine)
    img.header.set_qform(img.affine if qform_code else None, code=qform_code)
    img.header.set_sform(img.affine, code=sform_code)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


@pytest.fixture
def io_write_nifti() -> Callable[..., Path]:
    """``write(path, data, affine=None, *, qform_code=1, sform_code=1) -> path``: a tiny NIfTI on disk."""
    return _write_nifti


def _random_checkpoint(
    path: Path,
    kind: str = "mri",
    *,
    seed: int = 0,
    preprocess: object | None = None,
    meta: dict | None = None,
    config: object | None = None,
) -> Path:
    """A randomly initialised network (default: the ``small`` preset of ``kind``) saved as a sealed checkpoint:
    for tests of files, geometry and messages, not of segmentation quality."""
    import torch

    from mdanet_sdk.config import MDANetConfig
    from mdanet_sdk.data.preprocess import PreprocessConfig
    from mdanet_sdk.model import build_model
    from mdanet_sdk.train.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    config = config or MDANetConfig.from_preset("small", kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, build_model(config), config, preprocess or PreprocessConfig(), meta or {})


@pytest.fixture(scope="session")
def ckpt_random() -> Callable[..., Path]:
    """``make(path, kind="mri", *, seed=0, preprocess=None, meta=None, config=None) -> path``: a random checkpoint."""
    return _random_checkpoint
