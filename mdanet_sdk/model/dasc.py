"""Difference-aware skip connection (DASC), paper section 3.2, Eq. 1-3, Fig. 4."""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from mdanet_sdk import ops

__all__ = ["DifferenceAwareSkip"]


class DifferenceAwareSkip(nn.Module):
    """DASC: the skip feature is the two groups' difference, refined under the decoder's guidance.

    .. math::
        F_D = F_{m1} - F_{m2} \\quad (1) \\qquad
        W = \\sigma(\\theta_1(\\theta_2(F_D) + \\theta_3(F_{de}))) \\quad (2) \\qquad
        \\hat F_D = F_D + W \\cdot F_D \\quad (3)

    θ2 (``C → C_i``), θ3 (``C_de → C_i``) and θ1 (``C_i → 1``) are point-wise convolutions; ``W`` is a
    one-channel spatial attention map (the map visualised in the paper's Fig. 11-12). The whole gate runs as
    one fused operator, :func:`mdanet_sdk.ops.dasc_gate`.

    Args:
        channels: ``C``, channels of the encoder features at this scale.
        decoder_channels: ``C_de``, channels of the decoder feature ``F_de`` (default ``C``).
        inter_channels: ``C_i`` of the interaction space (default ``C // 2``).
        fusion: ``"subtract"`` (Eq. 1, MDANet), or the Table 4 ablations ``"add"`` (``F_m1 + F_m2``) and
            ``"concat"`` (1×1 conv of ``[F_m1, F_m2]`` back to ``C``) — the gate is the same for all three.
        impl: op implementation, ``"auto"``, ``"native"`` or ``"reference"``.

    Shapes:
        ``f_m1, f_m2: (B, C, H, W)``, ``f_de: (B, C_de, H, W)`` → ``(B, C, H, W)``.
    """

    def __init__(
        self,
        channels: int,
        decoder_channels: int | None = None,
        inter_channels: int | None = None,
        fusion: str = "subtract",
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if fusion not in ("subtract", "add", "concat"):
            raise ValueError(f"fusion must be subtract, add or concat; got {fusion!r}")
        decoder_channels = decoder_channels or channels
        inter_channels = inter_channels or max(1, channels // 2)
        self.fusion = fusion
        self.impl = impl
        self.theta2 = nn.Conv2d(channels, inter_channels, kernel_size=1)
        self.theta3 = nn.Conv2d(decoder_channels, inter_channels, kernel_size=1)
        self.theta1 = nn.Conv2d(inter_channels, 1, kernel_size=1)
        self.merge = nn.Conv2d(2 * channels, channels, kernel_size=1) if fusion == "concat" else None

    def forward(self, f_m1: Tensor, f_m2: Tensor, f_de: Tensor) -> Tensor:
        # The fused op computes F = a - b; express the Table 4 alternatives in that form.
        if self.merge is not None:
            a = self.merge(torch.cat([f_m1, f_m2], dim=1))
            b = torch.zeros_like(a)
        elif self.fusion == "add":
            a, b = f_m1, -f_m2
        else:
            a, b = f_m1, f_m2
        return ops.dasc_gate(
            a,
            b,
            f_de,
            self.theta2.weight.flatten(1),
            self.theta3.weight.flatten(1),
            cast(Tensor, self.theta2.bias) + cast(Tensor, self.theta3.bias),  # convs built with bias=True
            self.theta1.weight.flatten(),
            cast(Tensor, self.theta1.bias),
            impl=self.impl,
        )
