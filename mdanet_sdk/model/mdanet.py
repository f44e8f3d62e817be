"""MDANet: multimodal difference-aware network (paper section 3, Fig. 3)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.model.base import SegmentationModel
from mdanet_sdk.model.blocks import Encoder, SegmentationHead, UNetDecoder, encoder_block, split_groups, stack_groups
from mdanet_sdk.model.dasc import DifferenceAwareSkip
from mdanet_sdk.model.fusion import build_bottleneck

__all__ = ["MDANet"]


class MDANet(SegmentationModel):
    """MDANet (Fig. 3) and, through its ablation switches, every variant of the paper's Tables 3-5.

    With ``config.dasc`` (MDANet): each modality group gets its own first-stage block (``stems``, independent
    weights), then one parameter-shared ``encoder`` (levels 1-4, MSC blocks when ``config.msc``) encodes both
    groups; the ``bottleneck`` fuses the two groups (GCFB by default) into one difference map; the ``decoder``
    goes back up, at every scale concatenating the groups' difference refined by a :class:`DifferenceAwareSkip`
    under its guidance; the ``head`` gives the logits. Without ``config.dasc`` (Table 3 ablations) one stem and
    the encoder run on the stacked input and the skips are the encoder features (concatenation); with every
    switch off this is the same network, with the same parameter names, as :class:`~mdanet_sdk.model.UNet`.

    Args:
        config: the network description; see :class:`mdanet_sdk.config.MDANetConfig`.
        ops: how the DASC gate and the graph convolution compute: ``"auto"``, ``"native"`` or ``"reference"``.

    Shapes:
        input ``(B, C_a + C_b, H, W)``, the groups' modalities stacked in ``config.modalities`` order;
        output logits ``(B, num_classes, H, W)``.

    Note:
        ``H`` and ``W`` must be multiples of 16; :mod:`mdanet_sdk.data.preprocess` pads slices to that.
    """

    architecture = "mdanet"

    def __init__(self, config: MDANetConfig, *, ops: str = "auto") -> None:
        super().__init__(config, ops)
        config = self.config
        w = config.widths
        self.split = len(config.groups[0])
        if config.dasc:
            self.stems = nn.ModuleList(encoder_block(len(g), w[0], config.msc) for g in config.groups)
        else:
            self.stems = nn.ModuleList([encoder_block(config.in_channels, w[0], config.msc)])
        self.encoder = Encoder(w, config.msc)
        self.bottleneck = build_bottleneck(config, groups=len(self.stems), impl=ops)
        self.skips: nn.ModuleList | None = None
        if config.dasc:
            self.skips = nn.ModuleList(
                DifferenceAwareSkip(w[level], fusion=config.skip_fusion, impl=ops) for level in range(4)
            )
        self.decoder = UNetDecoder(w)
        self.head = SegmentationHead(w[0], config.num_classes)

    def forward_train(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        self.check_input(x)
        if not self.config.dasc:
            return self._single_path(x), None
        f_a, f_b = (stem(g) for stem, g in zip(self.stems, (x[:, : self.split], x[:, self.split :])))
        a, b = self.encode(f_a, f_b)
        bottom = self.bottleneck([a[-1], b[-1]])
        return self.head(self.decode(bottom, a, b)), (f_a, f_b)

    def encode(self, f_a: Tensor, f_b: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Both groups through the shared encoder (section 3.2).

        One pass over both groups stacked along the batch axis, so that in training its batch norms normalise
        with the joint statistics of both groups, as their running averages (used in evaluation) do; one pass
        per group would normalise each group with its own statistics.

        Shapes:
            ``f_a, f_b: (B, widths[0], H, W)`` → two lists of 5 maps, level ``l`` ``(B, widths[l], H/2^l, W/2^l)``.
        """
        levels = [split_groups(f, 2) for f in self.encoder(stack_groups([f_a, f_b]))]
        return [f[0] for f in levels], [f[1] for f in levels]

    def decode(self, bottom: Tensor, a: list[Tensor], b: list[Tensor]) -> Tensor:
        """The decoder with difference-aware skips (Fig. 3).

        At each level the upsampled decoder feature ``F_de`` guides the refinement of the groups' difference
        ``F_D = F_m1 - F_m2`` into ``F̂_D`` (Eq. 1-3, :class:`DifferenceAwareSkip`); ``[F̂_D, F_de]`` is fused by the
        stage's double conv.

        Shapes:
            ``bottom: (B, widths[4], H/16, W/16)``, ``a[l], b[l]: (B, widths[l], H/2^l, W/2^l)`` →
            ``(B, widths[0], H, W)``.
        """
        x, skips = bottom, self.skips
        assert skips is not None  # decode runs only with DASC skips (config.dasc)
        for level, up, conv in self.decoder.stages():
            f_de = up(x)
            x = conv(torch.cat([skips[level](a[level], b[level], f_de), f_de], dim=1))
        return x

    def _single_path(self, x: Tensor) -> Tensor:
        """Logits of the ``dasc=False`` ablations: one encoder on the stacked input, concatenation skips."""
        p = self.encoder(self.stems[0](x))
        x = self.bottleneck([p[-1]])
        for level, up, conv in self.decoder.stages():
            f_de = up(x)
            x = conv(torch.cat([p[level], f_de], dim=1))
        return self.head(x)
