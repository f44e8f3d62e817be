"""Intensity augmentation of normalised training slices: what a scanner, a protocol or a perfusion package
may change and the model should not rely on.

Applied after the paper's spatial augmentation, per slice and per channel, each transform with its own
probability (as nnU-Net and SynthSeg do): a smooth multiplicative bias field, gamma, contrast, Gaussian
blur, a lower resolution (down- then up-sampled) and Gaussian noise. Gamma, bias and contrast act on the
channel shifted to be non-negative (its minimum, the background after :func:`~mdanet_sdk.data.preprocess.
normalize`, stays where it was), so the background stays the background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["IntensityAugmentation"]


@dataclass(frozen=True)
class IntensityAugmentation:
    """One draw of the intensity augmentation for a ``(C, H, W)`` slice (``None`` / 1.0 / 0.0: off).

    Attributes:
        bias: per channel, the coefficients of a quadratic bias field (log scale) or None.
        gamma: per channel exponent on the channel scaled to 0..1.
        contrast: per channel factor on the distance from the channel's minimum (the background).
        blur: Gaussian sigma in pixels (all channels: one acquisition).
        low_res: down-sampling factor of the whole slice (>= 1).
        noise: per channel noise sigma relative to the channel's spread.
        seed: of the noise.
    """

    bias: tuple[tuple[float, ...] | None, ...]
    gamma: tuple[float, ...]
    contrast: tuple[float, ...]
    blur: float
    low_res: float
    noise: tuple[float, ...]
    seed: int = 0

    @classmethod
    def draw(cls, rng: np.random.Generator, channels: int) -> IntensityAugmentation:
        """Bias p 0.3, gamma p 0.3 (0.7-1.5, log-uniform), contrast p 0.3 (0.75-1.25), blur p 0.2
        (0.5-1.5 px), low resolution p 0.25 (1-2×), noise p 0.3 (up to 10 % of the spread)."""

        def per_channel(p: float, draw, off):
            return tuple(draw() if rng.random() < p else off for _ in range(channels))

        return cls(
            bias=per_channel(0.3, lambda: tuple(rng.normal(0.0, 0.25, 5)), None),
            gamma=per_channel(0.3, lambda: float(np.exp(rng.uniform(np.log(0.7), np.log(1.5)))), 1.0),
            contrast=per_channel(0.3, lambda: float(rng.uniform(0.75, 1.25)), 1.0),
            blur=float(rng.uniform(0.5, 1.5)) if rng.random() < 0.2 else 0.0,
            low_res=float(rng.uniform(1.0, 2.0)) if rng.random() < 0.25 else 1.0,
            noise=per_channel(0.3, lambda: float(rng.uniform(0.0, 0.1)), 0.0),
            seed=int(rng.integers(2**31)),
        )

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """The augmented float ``(C, H, W)`` slice (a new tensor)."""
        out = image.float().clone()
        height, width = out.shape[-2:]
        rows = torch.linspace(-1.0, 1.0, height)[:, None]
        cols = torch.linspace(-1.0, 1.0, width)[None, :]
        for c in range(out.shape[0]):
            low = out[c].min()
            shifted = out[c] - low
            coefficients = self.bias[c]
            if coefficients is not None:
                a, b, d, e, f = coefficients
                shifted = shifted * torch.exp(a * rows + b * cols + d * rows**2 + e * cols**2 + f * rows * cols)
            top = shifted.max().clamp_min(1e-6)
            shifted = (shifted / top) ** self.gamma[c] * top
            out[c] = shifted * self.contrast[c] + low
        if self.blur > 0:
            out = _gaussian_blur(out, self.blur)
        if self.low_res > 1.0:
            small = (max(1, round(height / self.low_res)), max(1, round(width / self.low_res)))
            out = F.interpolate(
                F.interpolate(out[None], size=small, mode="area"),
                size=(height, width),
                mode="bilinear",
                align_corners=False,
            )[0]
        for c, sigma in enumerate(self.noise):
            if sigma > 0:
                spread = out[c].std().clamp_min(1e-6)
                generator = torch.Generator().manual_seed(self.seed + c)
                out[c] = out[c] + sigma * spread * torch.randn(out[c].shape, generator=generator)
        return out


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(C, H, W)`` with ``sigma`` pixels (edges replicated)."""
    radius = max(1, int(3 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = image.shape[0]
    out = F.pad(image[None], (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return out[0]
