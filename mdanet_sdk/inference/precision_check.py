"""Does a model keep its masks in a reduced precision? The check behind ``precision="auto"``.

When ``auto`` picks bf16 (a CPU with native bf16, or CUDA), the :class:`~mdanet_sdk.inference.Segmenter`
first runs its models on a built-in probe, in fp32 and in that precision, and compares the masks at the
segmenter's threshold: below :data:`MIN_PROBE_DICE` (the issue's bar for bf16 against fp32) it stays in fp32
and says so. The probe is a small synthetic case of the training generator (:mod:`mdanet_sdk.data.phantom`)
for the bundled modality sets, else a geometric head with a bright blob in every channel; it is 16 slices at
most, so the check costs about two forward passes of one batch each. Its answer is kept per weights digest
(:data:`_CACHE`), so segmenters built again on the same weights in one process do not repeat it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from mdanet_sdk.data.preprocess import PreprocessConfig, slice_stack
from mdanet_sdk.errors import MDANetError

__all__ = ["MIN_PROBE_DICE", "PROBE_SEED", "probe_slices", "probe_dice", "reduced_precision_agrees"]

logger = logging.getLogger(__name__)

#: Dice between the reduced-precision and the fp32 masks of the probe below which ``auto`` keeps fp32.
MIN_PROBE_DICE = 0.99
#: Seed of the probe phantom (fixed: the same probe on every machine).
PROBE_SEED = 17
# (weights digests, precision, device type, threshold) -> Dice of the probe.
_CACHE: dict[tuple[object, ...], float] = {}
_LAYOUTS = {("dwi", "adc"): ("isles22", (96, 96, 12)), ("cbf", "cbv", "mtt", "tmax"): ("isles18", (128, 128, 6))}


def probe_slices(modalities: Sequence[str], preprocess: PreprocessConfig) -> np.ndarray:
    """The probe, float32 ``(Z, C, H, W)`` on the model grid of ``preprocess`` (Z ≤ 16)."""
    from mdanet_sdk.data.phantom import make_phantom

    key = tuple(modalities)
    if key in _LAYOUTS:
        layout, shape = _LAYOUTS[key]
        pattern = "territorial" if layout == "isles22" else None
        images = make_phantom(layout, PROBE_SEED, shape=shape, pattern=pattern).images
    else:
        images = _geometric_head(modalities)
    stack = slice_stack(images, key, preprocess)
    return stack.chunk(0, min(16, len(stack)))


def _geometric_head(modalities: Sequence[str]) -> dict[str, np.ndarray]:
    """An ellipse of textured tissue with a brighter blob, ``(96, 96, 8)`` per modality (modalities of no
    bundled model: the probe only needs a head-like input with something lesion-like in it)."""
    rng = np.random.default_rng(PROBE_SEED)
    x, y = np.meshgrid(np.linspace(-1, 1, 96), np.linspace(-1, 1, 96), indexing="ij")
    head = (x / 0.8) ** 2 + (y / 0.65) ** 2 < 1
    blob = (x - 0.3) ** 2 + (y - 0.1) ** 2 < 0.04
    base = np.where(head, 1.0, 0.0) + np.where(blob, 1.0, 0.0)
    images = {}
    for modality in modalities:
        noise = rng.normal(1.0, 0.05, (96, 96, 8))
        images[modality] = (base[..., None] * noise).astype(np.float32)
    return images


def probe_dice(predictor: object, slices: np.ndarray, precision: str) -> float:
    """Dice between the probe's masks (lesion probability above the predictor's threshold, no TTA) in fp32
    and in ``precision``; 1.0 when both are empty; 0.0 when the reduced precision gives NaN/Inf.

    Args:
        predictor: a :class:`~mdanet_sdk.inference.predictor.Predictor` (it is not changed).
        slices: the probe, ``(Z, C, H, W)``.
        precision: the reduced precision to check, ``"bf16"`` or ``"fp16"``.
    """
    from mdanet_sdk.inference.predictor import Predictor

    assert isinstance(predictor, Predictor)
    threshold = predictor.settings.threshold
    masks = []
    for p in ("fp32", precision):
        run = Predictor(
            predictor.models,
            predictor.names,
            predictor.device,
            p,
            predictor.settings.updated(tta=False),
            channels_last=predictor.channels_last,
        )
        try:
            masks.append(run.probabilities(torch.from_numpy(slices), "the precision probe").numpy() > threshold)
        except MDANetError:  # non-finite logits: the precision cannot hold this model
            return 0.0
    total = int(masks[0].sum()) + int(masks[1].sum())
    return 1.0 if total == 0 else 2.0 * int((masks[0] & masks[1]).sum()) / total


def reduced_precision_agrees(
    predictor: object, modalities: Sequence[str], preprocess: PreprocessConfig, digests: Sequence[str | None]
) -> tuple[bool, float]:
    """Whether ``predictor``'s precision keeps the probe's mask (Dice ≥ :data:`MIN_PROBE_DICE` against fp32).

    Args:
        predictor: the :class:`~mdanet_sdk.inference.predictor.Predictor` to check (its precision).
        modalities: the models' input modalities, in channel order.
        preprocess: the checkpoint's preprocessing (the probe's model grid and normalisation).
        digests: SHA-256 of each model's weights; the answer is cached when none is ``None``.

    Returns:
        ``(agrees, dice)``.
    """
    from mdanet_sdk.inference.predictor import Predictor

    assert isinstance(predictor, Predictor)
    key = (tuple(digests), predictor.precision, predictor.device.type, predictor.settings.threshold)
    cacheable = all(d is not None for d in digests)
    if cacheable and key in _CACHE:
        dice = _CACHE[key]
    else:
        dice = probe_dice(predictor, probe_slices(modalities, preprocess), predictor.precision)
        if cacheable:
            _CACHE[key] = dice
    logger.debug("precision probe: %s vs fp32 Dice %.4f", predictor.precision, dice)
    return dice >= MIN_PROBE_DICE, dice
