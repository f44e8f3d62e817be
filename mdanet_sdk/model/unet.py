"""The baselines of the paper's Table 1, built from the blocks MDANet uses: U-Net and Attention U-Net."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.model.base import SegmentationModel
from mdanet_sdk.model.blocks import DoubleConv, Encoder, SegmentationHead, UNetDecoder

__all__ = ["UNet", "AttentionUNet", "AttentionGate"]


class AttentionGate(nn.Module):
    """Additive attention gate of Attention U-Net (Oktay et al. 2018).

    ``α = σ(ψ(ReLU(W_x x + W_g g)))``; returns ``α · x``.

    Shapes:
        ``x: (B, C, H, W)`` (skip), ``g: (B, C, H, W)`` (upsampled decoder feature) → ``(B, C, H, W)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        inter = max(1, channels // 2)
        self.w_x = nn.Conv2d(channels, inter, 1)
        self.w_g = nn.Conv2d(channels, inter, 1)
        self.psi = nn.Sequential(nn.Conv2d(inter, 1, 1), nn.Sigmoid())

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        return x * self.psi(nn.functional.relu(self.w_x(x) + self.w_g(g)))


class UNet(SegmentationModel):
    """U-Net (Ronneberger et al. 2015): one encoder on the stacked modalities, concatenation skips.

    Double convolutions throughout, no bottleneck fusion: the first row of Table 3, the same network (and
    parameter names) as :class:`~mdanet_sdk.model.MDANet` with ``dasc=False, msc=False, bottleneck="none"``.
    The config's ablation switches do not apply.

    Args:
        config: groups (input channels), widths and ``num_classes``; ``architecture`` must be ``"unet"``
            (default: the paper widths on the MRI groups).
        ops: recorded only (:class:`~mdanet_sdk.model.base.SegmentationModel`); a U-Net calls no MDANet op.

    Shapes:
        ``(B, C, H, W) → (B, num_classes, H, W)``; ``H, W`` multiples of 16.
    """

    architecture = "unet"

    def __init__(self, config: MDANetConfig | None = None, *, ops: str = "auto") -> None:
        super().__init__(config or MDANetConfig(architecture=self.architecture), ops)
        w = self.config.widths
        # A list of one stem, as in MDANet's single-path ablation, so that both name their weights alike.
        self.stems = nn.ModuleList([DoubleConv(self.config.in_channels, w[0])])
        self.encoder = Encoder(w, msc=False)
        self.skips = self.build_skips()
        self.decoder = UNetDecoder(w)
        self.head = SegmentationHead(w[0], self.config.num_classes)

    def build_skips(self) -> nn.ModuleList | None:
        """The modules on the skip connections: none, the encoder features are concatenated as they are."""
        return None

    def skip(self, level: int, feature: Tensor, f_de: Tensor) -> Tensor:
        """The skip feature at ``level``: the encoder feature itself, ``(B, widths[level], h, w)``.

        ``f_de`` (the upsampled decoder feature) is unused here; the attention gates need it.
        """
        return feature

    def forward_train(self, x: Tensor) -> tuple[Tensor, None]:
        self.check_input(x)
        return self.head(self.decode(self.encode(x))), None

    def encode(self, x: Tensor) -> list[Tensor]:
        """``(B, C, H, W)`` → 5 maps, level ``l`` ``(B, widths[l], H/2^l, W/2^l)``; level 4 is the bottom."""
        return self.encoder(self.stems[0](x))

    def decode(self, features: list[Tensor]) -> Tensor:
        """From the bottom ``features[4]`` up, concatenating :meth:`skip` at each level: ``(B, widths[0], H, W)``."""
        x = features[-1]
        for level, up, conv in self.decoder.stages():
            f_de = up(x)
            x = conv(torch.cat([self.skip(level, features[level], f_de), f_de], dim=1))
        return x


class AttentionUNet(UNet):
    """Attention U-Net (Oktay et al. 2018): U-Net whose skips pass through additive attention gates.

    Args:
        config: as for :class:`UNet`; ``architecture`` must be ``"attention-unet"``.
        ops: recorded only; an Attention U-Net calls no MDANet op.

    Shapes:
        ``(B, C, H, W) → (B, num_classes, H, W)``; ``H, W`` multiples of 16.
    """

    architecture = "attention-unet"

    def build_skips(self) -> nn.ModuleList:
        """One :class:`AttentionGate` per level 0-3, gated by the upsampled decoder feature."""
        return nn.ModuleList(AttentionGate(width) for width in self.config.widths[:4])

    def skip(self, level: int, feature: Tensor, f_de: Tensor) -> Tensor:
        """The encoder feature at ``level`` gated by ``f_de``: ``(B, widths[level], h, w)``."""
        assert self.skips is not None  # built by build_skips
        return self.skips[level](feature, f_de)
