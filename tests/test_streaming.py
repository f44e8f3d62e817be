"""Tests of the Segmenter's streaming (mdanet_sdk.inference.pipeline): slices reach the model grid batch by batch and are
restored to the native grid right away, with the same results as preprocessing and restoring whole cases, and
a memory peak that does not grow with the number of slices times the model grid."""

from __future__ import annotations

import dataclasses
import tracemalloc

import nibabel as nib
import numpy as np
import pytest
import torch

from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.data.phantom import make_phantom
from mdanet_sdk.data.preprocess import (
    MAX_SLICES,
    PreprocessConfig,
    preprocess_images,
    restore_probability,
    slice_stack,
)
from mdanet_sdk.errors import InputError
from mdanet_sdk.inference import FailedCase, Segmenter
from mdanet_sdk.model import build_model
from mdanet_sdk.train.checkpoint import Checkpoint, save_checkpoint
from test_inference import split_threshold

# A phantom's 40x36 in-plane grid is padded to 48x48 without resampling, and resampled to 64x58 (then padded
# to 64x64) with size 64.
GRIDS = {"padded": PreprocessConfig(), "resampled": PreprocessConfig(size=64)}


def _full_path(seg: Segmenter, cases) -> list[np.ndarray]:
    """The pre-streaming pipeline: every case's whole (Z, C, H, W) stack, batched across cases exactly as
    the Segmenter batches them, then whole-case restore. Returns each case's native-grid probability."""
    stacks = [preprocess_images(c.images, seg.modalities, seg.preprocess, c.brain_mask) for c in cases]
    slices = np.concatenate([s for s, _ in stacks])
    batches = [
        seg.probabilities(torch.from_numpy(slices[i : i + seg.batch_size]))
        for i in range(0, len(slices), seg.batch_size)
    ]
    model_grid = torch.cat(batches).numpy()
    out, start = [], 0
    for s, geometry in stacks:
        out.append(restore_probability(model_grid[start : start + len(s)], geometry))
        start += len(s)
    return out


@pytest.mark.parametrize("grid", GRIDS)
def test_streamed_segmenter_matches_whole_case_preprocessing(grid, tmp_path) -> None:
    """11 + 9 slices in batches of 4: batches split cases and share slices of two cases."""
    torch.manual_seed(0)
    config = MDANetConfig.from_preset("small", "mri")
    ckpt = save_checkpoint(tmp_path / "c.pt", build_model(config), config, GRIDS[grid], {})
    cases = [make_phantom("isles22", 5, shape=(40, 36, 11)), make_phantom("isles22", 6, shape=(40, 36, 9))]
    seg = Segmenter.from_checkpoint(ckpt, batch_size=4)
    expected = _full_path(seg, cases)
    seg.settings = seg.settings.updated(threshold=split_threshold(expected[0][expected[0] > 0]))
    results = list(seg.predict_many(cases))
    for case, result, probability in zip(cases, results, expected):
        _, geometry = preprocess_images(case.images, seg.modalities, seg.preprocess)
        assert geometry.resamples == (grid == "resampled") and geometry.padded != geometry.resampled
        assert result.probability_canonical.shape == case.images["dwi"].shape
        assert np.abs(result.probability_canonical - probability).max() <= 1e-6
        mask = seg.postprocess(probability, case.images, geometry.head, geometry.parenchyma)
        np.testing.assert_array_equal(result.mask_canonical, mask)
    assert 0 < results[0].mask_canonical.sum() < results[0].mask_canonical.size


def test_slices_without_head_are_not_predicted(tmp_path) -> None:
    """A phantom with 5 empty slices above and below: those the lesion support (the head grown by 2 voxels)
    does not reach never go through the network, and the probabilities and mask are those of predicting
    every slice (their probability is 0 either way)."""
    torch.manual_seed(0)
    config = MDANetConfig.from_preset("small", "mri")
    ckpt = save_checkpoint(tmp_path / "c.pt", build_model(config), config, GRIDS["padded"], {})
    phantom = make_phantom("isles22", 5, shape=(40, 36, 8))
    padded = dataclasses.replace(
        phantom, images={k: np.pad(v, ((0, 0), (0, 0), (5, 5))) for k, v in phantom.images.items()}, label=None
    )
    seg = Segmenter.from_checkpoint(ckpt, batch_size=4)
    seen: list[int] = []
    seg.predictor.models[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    expected = _full_path(seg, [padded])[0]
    assert sum(seen) == 18  # the whole-case path runs every slice
    seen.clear()
    result = seg.predict(padded)
    stack = slice_stack(padded.images, seg.modalities, seg.preprocess)
    support = stack.geometry.lesion_support
    assert support is not None
    needed = np.flatnonzero(support.any((0, 1)))
    assert stack.runs() == [(int(needed[0]), int(needed[-1]) + 1)] and 8 <= len(needed) < 18
    assert sum(seen) == len(needed)
    assert np.abs(result.probability_canonical - expected).max() <= 1e-6
    assert not result.probability_canonical[..., :3].any() and not result.probability_canonical[..., -3:].any()
    np.testing.assert_allclose(seg.predictor.case_probability(stack), expected, atol=1e-6)


def _stand_in_segmenter(size: int) -> Segmenter:
    """A Segmenter whose model is one 1x1 convolution: it costs nothing, so the test measures the pipeline."""
    described = Checkpoint(MDANetConfig.from_preset("small", "mri"), PreprocessConfig(size=size), {}, {}, None)
    torch.manual_seed(0)
    return Segmenter([described], models=[torch.nn.Conv2d(2, 2, 1).eval()], batch_size=16)


def _case(depth: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    dwi = np.zeros((16, 16, depth), np.float32)
    adc = np.zeros((16, 16, depth), np.float32)
    dwi[3:13, 3:13] = 100 + rng.normal(0, 5, (10, 10, depth))
    adc[3:13, 3:13] = 800 + rng.normal(0, 20, (10, 10, depth))
    return {"dwi": dwi, "adc": adc}


def test_memory_does_not_grow_with_slices_times_model_grid() -> None:
    """A 16x16x1000 case on a 64x64 model grid: the native volume is 1 MiB per modality, the model-grid stack
    31 MiB. Peak traced (numpy) memory of predict, measured on one machine in one run: 66.8 MiB before
    streaming (the whole stack, its resampled and padded copies, a model-grid probability), 8.7 MiB with it
    (native volumes and a batch); on a 128x128 grid 254.3 MiB before and 9.5 MiB with it."""
    seg = _stand_in_segmenter(64)
    images = _case(1000)
    tracemalloc.start()
    try:
        result = seg.predict_arrays(images, np.eye(4))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.probability.shape == (16, 16, 1000)
    assert peak < 20 * 2**20, f"predict peaked at {peak / 2**20:.1f} MiB"


def test_too_many_slices_are_refused(tmp_path) -> None:
    """More than MAX_SLICES slices along Z: an InputError (a FailedCase with errors="yield"), not minutes of work."""
    seg = _stand_in_segmenter(32)
    images = _case(MAX_SLICES + 1)
    with pytest.raises(InputError, match=rf"holds {MAX_SLICES + 1} slices.*crop or resample it"):
        seg.predict_arrays(images, np.eye(4))
    files = {}
    for modality, array in images.items():
        files[modality] = tmp_path / f"big_{modality}.nii.gz"
        nib.save(nib.Nifti1Image(array, np.eye(4)), files[modality])
    fine = make_phantom("isles22", 5, shape=(16, 16, 3))
    out = list(seg.predict_many([files, fine], errors="yield"))
    assert isinstance(out[0], FailedCase) and f"{MAX_SLICES + 1} slices" in out[0].error and out[1].ok
