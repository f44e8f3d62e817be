"""The restricted-diffusion gate's tissue ADC (issue 14): taken in the parenchyma of a head that is not
skull-stripped, where the normalisation takes its tissue values, in every path that post-processes a case."""

from __future__ import annotations

import numpy as np
import torch

from mdanet_sdk import Segmenter
from mdanet_sdk.data.preprocess import slice_stack
from mdanet_sdk.inference.postprocess import choose_postprocessing, postprocess
from mdanet_sdk.pipeline import lesions
from mdanet_sdk.pipeline.volume import VolumePipeline


def _head_with_scalp() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """DWI and ADC of a brain (DWI 100, ADC 800) in bone and scalp (DWI 3 and 35, ADC 1300: 1.6x the brain's) that
    outnumber it, with an infarct (DWI 200, ADC 400) and a DWI-bright look-alike of normal ADC (850); images, head,
    infarct, look-alike."""
    x, y, _ = np.meshgrid(np.arange(96) - 48.0, np.arange(96) - 48.0, np.arange(12), indexing="ij")
    r = np.sqrt((x / 28) ** 2 + (y / 34) ** 2)
    brain, bone, scalp = r < 1, (r >= 1) & (r < 1.2), (r >= 1.2) & (r < 1.49)  # 45 / 20 / 35 % of the head
    infarct, look_alike = brain & (np.hypot(x - 10, y) < 4), brain & (np.hypot(x + 10, y) < 4)
    texture = 1 + 0.03 * np.random.default_rng(3).standard_normal(r.shape)
    dwi = np.select([infarct | look_alike, brain, bone, scalp], [200.0, 100.0, 3.0, 35.0], 0.0) * texture
    adc = np.select([infarct, look_alike, brain, bone | scalp], [400.0, 850.0, 800.0, 1300.0], 0.0) * texture
    images = {"dwi": dwi.astype(np.float32), "adc": adc.astype(np.float32)}
    return images, brain | bone | scalp, infarct, look_alike


class _BrightInDwi(torch.nn.Module):
    """A stand-in network: lesion wherever the normalised DWI is above 0.5 (1.5x the tissue's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.zeros_like(x[:, 0]), 40.0 * (x[:, 0] - 0.5)], dim=1)


def test_the_gate_of_a_head_with_skull_and_scalp_compares_with_the_parenchymas_adc() -> None:
    """Where skull and scalp outnumber the brain, the head's tissue ADC was theirs, and the look-alike of normal ADC
    (1.06x) passed a gate of 0.8 as 0.65. The gate compares with the parenchyma's ADC now, as the normalisation
    does: in Python and in the exported pipeline (scripted, run as the C API runs it)."""
    images, head, infarct, look_alike = _head_with_scalp()
    segmenter = Segmenter.default("mri", max_adc_ratio=0.8, device="cpu")
    probability = (infarct | look_alike).astype(np.float32)
    stack = slice_stack(images, ("dwi", "adc"), segmenter.preprocess)
    parenchyma = stack.geometry.parenchyma
    assert parenchyma is not None and np.array_equal(parenchyma, head & (images["dwi"] > 50))
    for given, expected in ((None, infarct | look_alike), (parenchyma, infarct)):
        assert np.array_equal(segmenter.postprocess(probability, images, head, given), expected)
    pipeline = VolumePipeline(
        _BrightInDwi(),
        ["dwi", "adc"],
        {"size": None, "normalization": "relative"},
        {"tta": False, "threshold": 0.5, "min_size": 0, "max_adc_ratio": 0.8},
        (1, 16),
        torch.float32,
    )
    volumes = torch.from_numpy(np.stack([images["dwi"], images["adc"]]))
    scripted = torch.jit.script(pipeline)
    for gate, expected in ((0.0, infarct | look_alike), (0.8, infarct)):
        mask, _ = scripted.segment(volumes, torch.eye(4, dtype=torch.float64), None, 0.5, 0, gate, False, 16)
        assert np.array_equal(mask.numpy().astype(bool), expected)


def test_the_gate_tunes_on_the_reference_it_is_applied_with() -> None:
    """choose_postprocessing reads each case's tissue ADC where the Segmenter will: with the parenchyma it keeps the
    infarct and drops the look-alike at a gate of 0.8 (DSC 1), with the head's reference it cannot."""
    images, head, infarct, look_alike = _head_with_scalp()
    parenchyma = slice_stack(images, ("dwi", "adc"), Segmenter.default("mri").preprocess).geometry.parenchyma
    probability = {False: [(infarct | look_alike).astype(np.float32)]}
    adc = [np.where(head, images["adc"], 0.0)]
    best, score = choose_postprocessing(probability, [infarct], adc=adc, parenchyma=[parenchyma], min_sizes=(0,))
    assert score == 1.0 and 0 < best.max_adc_ratio <= 0.9
    _, head_score = choose_postprocessing(probability, [infarct], adc=adc, min_sizes=(0,))
    assert head_score < 0.9


def test_a_parenchyma_without_positive_adc_falls_back_to_the_whole_map() -> None:
    """An ADC that does not cover the DWI's parenchyma (0 there but for a lesion) must not make the lesion its own
    reference and drop it: the gate then reads the whole map, as the normalisation falls back to the head."""
    images, head, infarct, _ = _head_with_scalp()
    adc = np.where(head & ~infarct & (images["dwi"] > 50), 0.0, images["adc"]).astype(np.float32)
    parenchyma = head & (images["dwi"] > 50)
    kept = postprocess(infarct.astype(np.float32), 0.5, 0, adc, 0.8, parenchyma)
    assert np.array_equal(kept, infarct)
    scripted = torch.jit.script(lesions.postprocess)
    args = (torch.from_numpy(infarct.astype(np.float32)), 0.5, 0, torch.from_numpy(adc), 0.8)
    assert torch.equal(scripted(*args, torch.from_numpy(parenchyma)), torch.from_numpy(kept))
