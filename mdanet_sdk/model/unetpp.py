"""U-Net++ (Zhou et al. 2018), a baseline of the paper's Tables 1-2: U-Net with nested, dense skip pathways."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.model.base import SegmentationModel
from mdanet_sdk.model.blocks import DoubleConv, Encoder, SegmentationHead

__all__ = ["UNetPlusPlus", "NestedSkips"]


class NestedSkips(nn.Module):
    """The nested dense skip pathways of U-Net++: every node ``X^{i,j}`` with ``j ≥ 1``.

    ``X^{i,j} = H([X^{i,0}, ..., X^{i,j-1}, U(X^{i+1,j-1})])``: ``U`` a 2×2 transposed convolution from level
    ``i+1`` to level ``i`` (as Zhou et al.'s code), ``H`` a double convolution of ``(j+1)·widths[i]`` channels
    to ``widths[i]``. Level ``i`` (0-3) holds nodes ``j = 1 .. 4-i``; ``X^{0,4}`` is the U-Net decoder's output
    place, ``X^{i,0}`` the encoder features.

    Shapes:
        encoder features, level ``i``: ``(B, widths[i], H/2^i, W/2^i)`` → ``X^{0,4}: (B, widths[0], H, W)``.
    """

    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        depth = len(widths) - 1
        # node (i, j) for j = 1..depth-i, keyed "i_j"; ModuleDict keeps the parameter order fixed.
        self.ups = nn.ModuleDict()
        self.convs = nn.ModuleDict()
        for j in range(1, depth + 1):  # column by column: the order the forward pass computes them
            for i in range(depth - j + 1):
                self.ups[f"{i}_{j}"] = nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                self.convs[f"{i}_{j}"] = DoubleConv((j + 1) * widths[i], widths[i])
        self.depth = depth

    def forward(self, features: list[Tensor]) -> Tensor:
        nodes = [[f] for f in features]  # nodes[i][j] = X^{i,j}
        for j in range(1, self.depth + 1):
            for i in range(self.depth - j + 1):
                up = self.ups[f"{i}_{j}"](nodes[i + 1][j - 1])
                nodes[i].append(self.convs[f"{i}_{j}"](torch.cat([*nodes[i], up], dim=1)))
        return nodes[0][self.depth]


class UNetPlusPlus(SegmentationModel):
    """U-Net++ (Zhou et al., DLMIA 2018): the U-Net encoder, nested dense skips in place of plain ones.

    Encoder and convolution blocks are those of :class:`~mdanet_sdk.model.UNet` (double 3×3 conv-BN-ReLU, so
    the baselines differ only in what the paper varies); the segmentation comes from ``X^{0,4}`` (no deep
    supervision: the trainer's loss sees one output, as for every network here).

    ``widths`` are the encoder widths, shared by the nested nodes of each level. At the paper widths (64..1024)
    it has 36.2 M parameters (CTP input), 3 % above the 35.0 M of the MDANet paper's Tables 1-2; Zhou et al.'s
    own network is the same at widths 32..512 (9.05 M with one input channel and one output, the 9.04 M of their
    Table 2). The paper does not say which upsampling its
    implementation used: with bilinear upsampling in place of the transposed convolutions it would be 36.9 M.

    Args:
        config: groups (input channels), widths and ``num_classes``; ``architecture`` must be ``"unetpp"``.
        ops: recorded only; U-Net++ calls no MDANet op.

    Shapes:
        ``(B, C, H, W) → (B, num_classes, H, W)``; ``H, W`` multiples of 16.
    """

    architecture = "unetpp"

    def __init__(self, config: MDANetConfig | None = None, *, ops: str = "auto") -> None:
        super().__init__(config or MDANetConfig(architecture=self.architecture), ops)
        w = self.config.widths
        self.stems = nn.ModuleList([DoubleConv(self.config.in_channels, w[0])])  # X^{0,0}
        self.encoder = Encoder(w, msc=False)  # X^{1,0} .. X^{4,0}
        self.skips = NestedSkips(w)
        self.head = SegmentationHead(w[0], self.config.num_classes)

    def forward_train(self, x: Tensor) -> tuple[Tensor, None]:
        self.check_input(x)
        return self.head(self.skips(self.encoder(self.stems[0](x)))), None
