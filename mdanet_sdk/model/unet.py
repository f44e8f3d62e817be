"""The baselines of the paper's Table 1, in the same harness as MDANet: U-Net and Attention U-Net."""

from __future__ import annotations

from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.model.mdanet import MDANet

__all__ = ["UNet", "AttentionUNet"]


class UNet(MDANet):
    """U-Net (Ronneberger et al. 2015): single encoder on the stacked modalities, concatenation skips.

    Equal to ``MDANet`` with ``dasc=False, msc=False, bottleneck="none"`` (Table 3, first row).

    Shapes:
        ``(B, C, H, W) → (B, num_classes, H, W)``; ``H, W`` multiples of 16.
    """

    def __init__(self, config: MDANetConfig | None = None) -> None:
        super().__init__((config or MDANetConfig()).replace(architecture="unet"))


class AttentionUNet(MDANet):
    """Attention U-Net (Oktay et al. 2018): U-Net whose skips pass through additive attention gates.

    Shapes:
        ``(B, C, H, W) → (B, num_classes, H, W)``; ``H, W`` multiples of 16.
    """

    def __init__(self, config: MDANetConfig | None = None) -> None:
        super().__init__((config or MDANetConfig()).replace(architecture="attention-unet"))
