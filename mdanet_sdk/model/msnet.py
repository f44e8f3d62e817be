"""MSNet (Zhao et al., MICCAI 2021), a baseline of the paper's Tables 1-2: multi-scale subtraction units in
place of the U-Net skips."""

from __future__ import annotations

from typing import cast

from torch import Tensor, nn

from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.model.base import SegmentationModel
from mdanet_sdk.model.blocks import ConvBNReLU, DoubleConv, Encoder

__all__ = ["MSNet", "SubtractionUnit", "MultiScaleSubtraction", "upsample_to"]


def upsample_to(x: Tensor, like: Tensor) -> Tensor:
    """``x`` resized bilinearly to the height and width of ``like``: ``(B, C, h, w) → (B, C, H, W)``."""
    return nn.functional.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class SubtractionUnit(nn.Module):
    """MSNet's subtraction unit ``SU = Conv(|F_A ⊖ F_B|)``: the absolute difference of two adjacent levels'
    features (the deeper one upsampled), then a 3×3 conv-BN-ReLU.

    Shapes:
        ``f_a: (B, C, H, W)``, ``f_b: (B, C, h, w)`` (``h ≤ H``) → ``(B, C, H, W)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(channels, channels)

    def forward(self, f_a: Tensor, f_b: Tensor) -> Tensor:
        return self.conv((f_a - upsample_to(f_b, f_a)).abs())


class MultiScaleSubtraction(nn.Module):
    """The multi-scale subtraction module: a pyramid of :class:`SubtractionUnit` and the complementary
    enhancement features ``CE_i``.

    Order 1 subtracts adjacent encoder levels, ``F^1_i = SU(F_i, F_{i+1})``; order ``n`` subtracts adjacent
    results of order ``n-1``, ``F^n_i = SU(F^{n-1}_i, F^{n-1}_{i+1})``, up to order 4 (10 units for 5 levels).
    Level ``i`` sums the differences of every order it holds, ``CE_i = Conv(Σ_n F^n_i)`` (levels 0-3), so the
    decoder sees the differences across every span of scales.

    Shapes:
        5 features of ``C`` channels, level ``i``: ``(B, C, H/2^i, W/2^i)`` → 4 maps ``CE_i``, same shapes as
        levels 0-3.
    """

    def __init__(self, channels: int, levels: int = 5) -> None:
        super().__init__()
        self.orders = nn.ModuleList(
            nn.ModuleList(SubtractionUnit(channels) for _ in range(levels - order)) for order in range(1, levels)
        )
        self.enhance = nn.ModuleList(ConvBNReLU(channels, channels) for _ in range(levels - 1))

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        sums: list[Tensor] = []  # Σ_n F^n_i, level by level
        previous = features
        for units in self.orders:
            previous = [unit(previous[i], previous[i + 1]) for i, unit in enumerate(cast(nn.ModuleList, units))]
            # order n holds levels 0 .. 4-n: it adds to the first sums, the deeper ones are complete
            sums = [s + f for s, f in zip(sums, previous)] + sums[len(previous) :] if sums else previous
        return [conv(s) for conv, s in zip(self.enhance, sums)]


class MSNet(SegmentationModel):
    """MSNet (Zhao, Zhang and Lu, MICCAI 2021): encoder, multi-scale subtraction, top-down decoder.

    Every encoder level is reduced to ``C = widths[0]`` channels by a 3×3 conv-BN-ReLU (level 0 has them
    already), :class:`MultiScaleSubtraction` turns the five into ``CE_0..CE_3``, and the decoder runs from a
    second reduction of the bottom feature upwards, ``D_i = Conv(Up(D_{i+1}) + CE_i)``, to a 3×3 conv head.
    MSNet's training-only LossNet (a perceptual loss) is no part of the network and not reproduced: every
    baseline here trains with the same loss.

    Zhao et al. use a Res2Net-50 encoder (ImageNet weights, features at 1/2..1/32) and 64 channels; the MDANet
    paper's 20.3 M parameters (Tables 1-2) are instead what this network has with the U-Net encoder (double
    convolutions, widths 64..1024, full resolution down to 1/16, as its other baselines): 21.2 M with CTP
    input, 4.5 % above, the gap being within the details the paper leaves out (e.g. which of the convolutions
    carry batch norms). ``widths`` are the encoder widths; ``widths[0]`` is also MSNet's channel width ``C``.

    Args:
        config: groups (input channels), widths and ``num_classes``; ``architecture`` must be ``"msnet"``.
        ops: recorded only; MSNet calls no MDANet op.

    Shapes:
        ``(B, C, H, W) → (B, num_classes, H, W)``; ``H, W`` multiples of 16.
    """

    architecture = "msnet"

    def __init__(self, config: MDANetConfig | None = None, *, ops: str = "auto") -> None:
        super().__init__(config or MDANetConfig(architecture=self.architecture), ops)
        w, c = self.config.widths, self.config.widths[0]
        self.stems = nn.ModuleList([DoubleConv(self.config.in_channels, c)])
        self.encoder = Encoder(w, msc=False)
        self.reductions = nn.ModuleList(ConvBNReLU(width, c) for width in w[1:])
        self.skips = MultiScaleSubtraction(c, len(w))
        self.bottom = ConvBNReLU(w[-1], c)  # the decoder's entry: a second reduction of the bottom level
        self.decoder = nn.ModuleList(ConvBNReLU(c, c) for _ in w[1:])
        self.head = nn.Conv2d(c, self.config.num_classes, 3, padding=1)

    def forward_train(self, x: Tensor) -> tuple[Tensor, None]:
        self.check_input(x)
        features = self.encoder(self.stems[0](x))
        reduced = [features[0]] + [reduce(f) for reduce, f in zip(self.reductions, features[1:])]
        enhanced = self.skips(reduced)
        d = self.bottom(features[-1])
        for level in range(len(enhanced) - 1, -1, -1):  # from level 3 up to level 0
            d = self.decoder[level](upsample_to(d, enhanced[level]) + enhanced[level])
        return self.head(d), None
