"""MDANet: multimodal difference-aware network (paper section 3, Fig. 3)."""

from __future__ import annotations

from torch import Tensor, nn

from mdanet_sdk.config import BOTTLENECK_STRIDE, MDANetConfig
from mdanet_sdk.errors import InputError
from mdanet_sdk.model.blocks import Encoder, UNetDecoder, encoder_block, split_groups, stack_groups
from mdanet_sdk.model.dasc import DifferenceAwareSkip
from mdanet_sdk.model.fusion import build_bottleneck

__all__ = ["MDANet", "AttentionGate"]

#: Input height and width must be multiples of this (4 poolings by 2).
SIZE_MULTIPLE = BOTTLENECK_STRIDE


class AttentionGate(nn.Module):
    """Additive attention gate of Attention U-Net (Oktay et al. 2018), the Table 1 baseline.

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


class MDANet(nn.Module):
    """MDANet and, through its ablation switches, every variant of the paper's Tables 1 and 3-5.

    With ``config.dasc`` (MDANet): each modality group gets its own first-stage block (independent weights),
    then one parameter-shared encoder (levels 1-4, MSC blocks when ``config.msc``) encodes both groups in one
    pass, stacked along the batch axis (so its batch norms see both groups, in training as in evaluation); the
    bottleneck fuses the two groups (GCFB by default) into one difference map; at every scale a
    :class:`DifferenceAwareSkip` refines the groups' difference under the decoder's guidance; a U-Net decoder
    and a 1×1 head give the logits. Without ``config.dasc`` there is a single encoder on the stacked input and
    concatenation skips (the U-Net baseline), or attention-gated skips for ``architecture="attention-unet"``.

    Args:
        config: the network description; see :class:`mdanet_sdk.config.MDANetConfig`.

    Shapes:
        input ``(B, C_a + C_b, H, W)``, the groups' modalities stacked in ``config.modalities`` order;
        output logits ``(B, num_classes, H, W)``.

    Note:
        ``H`` and ``W`` must be multiples of 16; :mod:`mdanet_sdk.data.preprocess` pads slices to that.
    """

    def __init__(self, config: MDANetConfig) -> None:
        super().__init__()
        if config.architecture != "mdanet":
            # The baselines are fixed points of the ablation space (paper Table 3, first row).
            config = config.replace(dasc=False, msc=False, bottleneck="none")
        self.config = config.resolved()  # the grid the weights are built for, e.g. stored by exports
        config = self.config
        w = config.widths
        self.split = len(config.groups[0])
        if config.dasc:
            self.stems = nn.ModuleList(encoder_block(len(g), w[0], config.msc) for g in config.groups)
        else:
            self.stems = nn.ModuleList([encoder_block(config.in_channels, w[0], config.msc)])
        self.encoder = Encoder(w, config.msc)
        self.bottleneck = build_bottleneck(config, groups=len(self.stems))
        if config.dasc:
            self.skips = nn.ModuleList(
                DifferenceAwareSkip(w[i], fusion=config.skip_fusion, impl=config.ops) for i in range(4)
            )
        elif config.architecture == "attention-unet":
            self.skips = nn.ModuleList(AttentionGate(w[i]) for i in range(4))
        else:
            self.skips = None
        self.decoder = UNetDecoder(w, config.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes, H, W)`` for input ``(B, C_a + C_b, H, W)``."""
        return self.forward_train(x)[0]

    def forward_train(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """Logits and, for the dual-path model, the two groups' first-stage features for the similarity loss.

        Returns:
            ``(logits (B, K, H, W), (F_a, F_b))`` with ``F_a, F_b: (B, widths[0], H, W)``, or
            ``(logits, None)`` for single-path variants.
        """
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise InputError(
                f"Expected input (B, {self.config.in_channels}, H, W) with modalities "
                f"{', '.join(self.config.modalities)}; got shape {tuple(x.shape)}."
            )
        if x.shape[-2] % SIZE_MULTIPLE or x.shape[-1] % SIZE_MULTIPLE:
            raise InputError(
                f"Input height and width must be multiples of {SIZE_MULTIPLE}, got {tuple(x.shape[-2:])}; "
                "pad the slices (mdanet_sdk.data.preprocess does)."
            )
        if not self.config.dasc:
            return self._single_path(x), None
        f_a, f_b = (stem(g) for stem, g in zip(self.stems, (x[:, : self.split], x[:, self.split :])))
        # One pass of the shared encoder over both groups stacked along the batch axis, so that in training its
        # batch norms normalise with the joint statistics of both groups, as their running averages (used in
        # evaluation) do; one pass per group would normalise each group with its own statistics.
        levels = [split_groups(f, 2) for f in self.encoder(stack_groups([f_a, f_b]))]
        a, b = [f[0] for f in levels], [f[1] for f in levels]
        bottom = self.bottleneck([a[-1], b[-1]])
        skips = self.skips
        logits = self.decoder(bottom, lambda lvl, up: skips[lvl](a[lvl], b[lvl], up))
        return logits, (f_a, f_b)

    def _single_path(self, x: Tensor) -> Tensor:
        """Logits of the single-encoder variants (U-Net, Attention U-Net, ``dasc=False`` ablations)."""
        p = self.encoder(self.stems[0](x))
        bottom = self.bottleneck([p[-1]])
        skips = self.skips
        if skips is None:
            return self.decoder(bottom, lambda lvl, up: p[lvl])
        return self.decoder(bottom, lambda lvl, up: skips[lvl](p[lvl], up))
