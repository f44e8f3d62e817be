"""Blocks shared by MDANet and the baselines: conv-BN-ReLU, double conv, MSC, encoder, decoder, head."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "ConvBNReLU",
    "DoubleConv",
    "MultiScaleConv",
    "encoder_block",
    "Encoder",
    "UNetDecoder",
    "SegmentationHead",
    "stack_groups",
    "split_groups",
]


def stack_groups(features: Sequence[Tensor]) -> Tensor:
    """The modality groups' maps stacked along the batch axis: ``G × (B, ...) → (G·B, ...)``.

    A module shared by the groups runs once on the stack, so its batch norms normalise with the statistics of
    all groups together in training, as their running averages do in evaluation.
    """
    return torch.cat(list(features), dim=0)


def split_groups(x: Tensor, groups: int) -> list[Tensor]:
    """Inverse of :func:`stack_groups`: ``(G·B, ...) → G × (B, ...)``.

    A reshape rather than ``chunk``, so that ``torch.export`` keeps the batch dynamic.
    """
    return list(x.unflatten(0, (groups, -1)).unbind(0))


class ConvBNReLU(nn.Sequential):
    """3×3 convolution, batch norm, ReLU: ``(B, C_in, H, W) → (B, C_out, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Sequential):
    """The U-Net block: two :class:`ConvBNReLU`, ``(B, C_in, H, W) → (B, C_out, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(ConvBNReLU(in_channels, out_channels), ConvBNReLU(out_channels, out_channels))


class MultiScaleConv(nn.Module):
    """Multi-scale convolution (MSC) encoder block, paper Fig. 3(a).

    Three parallel branches of 1, 2 and 3 stacked 3×3 conv-BN-ReLU layers see receptive fields of 3, 5 and 7
    pixels; their outputs (about ``C_out / 3`` channels each, summing to ``C_out``) are concatenated, so no
    1×1 projection is needed. With a third of the channels per branch the block has fewer parameters than
    the U-Net double convolution it replaces.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out`` (at least 3).

    Shapes:
        ``(B, C_in, H, W) → (B, C_out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        third = out_channels // 3
        widths = (out_channels - 2 * third, third, third)
        self.branches = nn.ModuleList(
            nn.Sequential(*(ConvBNReLU(in_channels if i == 0 else width, width) for i in range(depth)))
            for depth, width in zip((1, 2, 3), widths)
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


def encoder_block(in_channels: int, out_channels: int, msc: bool) -> nn.Module:
    """An MSC block when ``msc`` (MDANet), else the U-Net double convolution (ablation, Table 3)."""
    return MultiScaleConv(in_channels, out_channels) if msc else DoubleConv(in_channels, out_channels)


class Encoder(nn.Module):
    """Levels 1-4 of the encoder: max-pool 2×2 then an encoder block, widths ``widths[0] → widths[4]``.

    In MDANet one instance is applied to both modality groups (parameter sharing, section 3.2).

    Shapes:
        ``(B, widths[0], H, W)`` → list of 5 maps, level ``l`` of shape ``(B, widths[l], H/2^l, W/2^l)``
        (level 0 is the input itself).
    """

    def __init__(self, widths: Sequence[int], msc: bool) -> None:
        super().__init__()
        self.levels = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), encoder_block(widths[i], widths[i + 1], msc)) for i in range(len(widths) - 1)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        features = [x]
        for level in self.levels:
            features.append(level(features[-1]))
        return features


class UNetDecoder(nn.Module):
    """U-Net decoder: four stages from the bottleneck up, each a 2×2 transposed conv then a double conv.

    Stage ``i`` works at encoder level ``3 - i``: ``ups[i]`` upsamples ``(B, widths[4-i], h, w)`` to the decoder
    feature ``F_de: (B, widths[3-i], 2h, 2w)``, and ``convs[i]`` fuses ``[skip, F_de]`` (``2 · widths[3-i]``
    channels) back to ``widths[3-i]``. What the skip is differs per network (the encoder feature, an
    attention-gated one, or the DASC-refined difference of Eq. 1-3, which needs ``F_de`` first), so each network
    runs the stages itself in its ``decode`` loop over :meth:`stages`.

    Shapes:
        bottom ``(B, widths[4], H/16, W/16)`` → ``(B, widths[0], H, W)`` after the last stage.
    """

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        deep = list(reversed(widths))  # 1024, 512, 256, 128, 64
        self.ups = nn.ModuleList(nn.ConvTranspose2d(deep[i], deep[i + 1], 2, stride=2) for i in range(4))
        self.convs = nn.ModuleList(DoubleConv(2 * deep[i + 1], deep[i + 1]) for i in range(4))

    def stages(self) -> Iterator[tuple[int, nn.Module, nn.Module]]:
        """``(level, up, conv)`` of each stage, from the bottleneck up (levels 3, 2, 1, 0)."""
        return zip(range(len(self.ups) - 1, -1, -1), self.ups, self.convs)


class SegmentationHead(nn.Conv2d):
    """The 1×1 convolution from the last decoder feature to the class logits.

    Shapes:
        ``(B, C, H, W) → (B, num_classes, H, W)``.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(in_channels, num_classes, kernel_size=1)
