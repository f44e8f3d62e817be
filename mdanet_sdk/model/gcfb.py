"""Graph convolution fusion block (GCFB), paper section 3.3, Eq. 4-7, Figs. 5-7."""

from __future__ import annotations

from typing import Sequence, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdanet_sdk import ops
from mdanet_sdk.model.blocks import split_groups, stack_groups

__all__ = ["GraphConv", "ChannelGraphFusion", "SpaceGraphFusion", "GraphConvFusion"]


class GraphConv(nn.Module):
    """Graph convolution, Eq. 6-7: ``Ĝ = ReLU(Conv1d((G - Conv1d(G))ᵀ)ᵀ) = ReLU(((I - A) G) W)``.

    The first 1-D convolution mixes nodes (its weight is the learnable adjacency ``A``, ``M × M``), the second
    mixes features (the weight matrix ``W``, ``E × E``); both run as one fused operator,
    :func:`mdanet_sdk.ops.graph_conv`.

    Args:
        nodes: ``M``, nodes of the graph (``2N`` for two modality groups).
        features: ``E``, features per node.
        impl: op implementation, ``"auto"``, ``"native"`` or ``"reference"``.

    Shapes:
        ``(B, M, E) → (B, M, E)``.
    """

    def __init__(self, nodes: int, features: int, impl: str = "auto") -> None:
        super().__init__()
        self.node_conv = nn.Conv1d(nodes, nodes, kernel_size=1)
        self.feature_conv = nn.Conv1d(features, features, kernel_size=1)
        self.impl = impl

    def forward(self, g: Tensor) -> Tensor:
        return ops.graph_conv(
            g,
            self.node_conv.weight[:, :, 0],
            cast(Tensor, self.node_conv.bias),  # built with bias=True
            self.feature_conv.weight[:, :, 0],
            cast(Tensor, self.feature_conv.bias),
            impl=self.impl,
        )


class ChannelGraphFusion(nn.Module):
    """GCFB with channel embedding (Fig. 5, Eq. 4-5), GloRe-style.

    Each group's map ``F_i`` is projected to ``F_θ = θ(F_i)`` (``N × HW``) and ``F_φ = φ(F_i)`` (``E × HW``);
    the graph is ``G_i = F_θ F_φᵀ / HW`` (``N × E``, Eq. 4; the ``1/HW`` keeps it independent of the input
    size). The groups' graphs are stacked into one ``2N``-node graph, updated by :class:`GraphConv`, split
    again and reprojected, ``F̂_i = Ĝ_iᵀ F_θ`` (Eq. 5), then a 1×1 conv-BN back to ``C`` channels is added
    to ``F_i`` (residual). The layers shared by the groups (θ, φ, the conv-BN) run once on the groups
    stacked along the batch axis, so the batch norm sees both groups together in training as in evaluation.

    Shapes:
        list of ``groups`` maps ``(B, C, H, W)`` → list of the same shapes.
    """

    def __init__(self, channels: int, nodes: int, embed: int, groups: int = 2, impl: str = "auto") -> None:
        super().__init__()
        self.nodes = nodes
        self.theta = nn.Conv2d(channels, nodes, kernel_size=1)
        self.phi = nn.Conv2d(channels, embed, kernel_size=1)
        self.gcn = GraphConv(groups * nodes, embed, impl)
        self.extend = nn.Sequential(nn.Conv2d(embed, channels, kernel_size=1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        groups = len(features)
        f = stack_groups(features)  # (G·B, C, H, W)
        f_theta = self.theta(f).flatten(2)  # (G·B, N, HW)
        f_phi = self.phi(f).flatten(2)  # (G·B, E, HW)
        if f_theta.dtype == torch.float16:  # the sum over HW positions would overflow before the division
            graphs = torch.bmm(f_theta / f_theta.shape[-1], f_phi.transpose(1, 2))  # G_i, (G·B, N, E), Eq. 4
        else:
            graphs = torch.bmm(f_theta, f_phi.transpose(1, 2)) / f_theta.shape[-1]
        g_concat = torch.cat(split_groups(graphs, groups), dim=1)  # (B, G·N, E)
        updated = stack_groups(self.gcn(g_concat).split(self.nodes, dim=1))  # Ĝ_i, (G·B, N, E)
        return split_groups(f + self.reproject(updated, f_theta).view(f.shape), groups)

    def reproject(self, updated: Tensor, f_theta: Tensor) -> Tensor:
        """Eq. 5 and the conv-BN: ``BN(W Ĝᵀ F_θ)``, ``(G·B, N, E), (G·B, N, HW) → (G·B, C, HW)``.

        ``Ĝᵀ F_θ`` reaches ~1e5 on real scans, beyond fp16's 65504. So in fp16 evaluation, where the batch norm
        is an affine map ``a ⊙ y + b`` (or already folded into the conv by
        :func:`~mdanet_sdk.inference.optimize.fold_batchnorm`), the product is taken as ``(a ⊙ (W Ĝᵀ)) F_θ + b``,
        which never forms it. fp32 and bf16 keep the plain order: the folded one subtracts two large terms, so
        its last bits would depend on the batch size.
        """
        conv, norm = cast(nn.Conv2d, self.extend[0]), self.extend[1]
        batch_norm = isinstance(norm, nn.BatchNorm2d) and norm.running_mean is not None
        if self.training or f_theta.dtype != torch.float16 or not (batch_norm or isinstance(norm, nn.Identity)):
            back = torch.bmm(updated.transpose(1, 2), f_theta)  # (G·B, E, HW)
            return cast(Tensor, self.extend(back.unsqueeze(-1))).squeeze(-1)
        weight = conv.weight[:, :, 0, 0]  # W, (C, E)
        scale = torch.ones_like(weight[:, 0])
        shift = conv.bias if conv.bias is not None else torch.zeros_like(scale)
        if batch_norm:
            bn = cast(nn.BatchNorm2d, norm)
            scale = torch.rsqrt(cast(Tensor, bn.running_var) + bn.eps)
            shift = (shift - cast(Tensor, bn.running_mean)) * scale
            if bn.weight is not None:
                scale, shift = scale * bn.weight, shift * bn.weight
            if bn.bias is not None:
                shift = shift + bn.bias
        # a (W Ĝᵀ) rather than (a W) Ĝᵀ: a W (~1e-7) would be subnormal in fp16.
        folded = torch.bmm(weight.expand(updated.shape[0], -1, -1), updated.transpose(1, 2)) * scale[:, None]
        return torch.bmm(folded, f_theta) + shift[:, None]  # (G·B, C, HW)


class SpaceGraphFusion(nn.Module):
    """GCFB with space embedding (Fig. 6): every bottleneck position is a node.

    The adjacency has a fixed size, ``groups · grid²`` nodes. ``grid`` is the bottleneck side of the model grid
    the network is trained on (``MDANetConfig.space_grid``; 8 at 128×128, 16 at 256×256), so each position is
    a node (the paper's ``N = HW``); a map of another size is average-pooled to ``grid × grid`` first. Each
    node's ``C`` features get a learnable position embedding, the groups' node sets are stacked into one graph
    and updated by :class:`GraphConv`; the nodes are rearranged back into a map (resized to ``H × W`` if it
    was pooled) and added to the input (residual). It has no batch norm, so it may treat the groups one by one.

    Shapes:
        list of ``groups`` maps ``(B, C, H, W)`` → list of the same shapes.
    """

    def __init__(self, channels: int, grid: int, groups: int = 2, impl: str = "auto") -> None:
        super().__init__()
        self.grid = grid
        self.position = nn.Parameter(torch.zeros(1, grid * grid, channels))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.gcn = GraphConv(groups * grid * grid, channels, impl)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        nodes = []
        for f in features:
            pooled = F.adaptive_avg_pool2d(f, self.grid) if f.shape[-2:] != (self.grid, self.grid) else f
            nodes.append(pooled.flatten(2).transpose(1, 2) + self.position)  # (B, grid², C)
        updated = self.gcn(torch.cat(nodes, dim=1)).split(self.grid * self.grid, dim=1)
        out = []
        for f, g in zip(features, updated):
            back = g.transpose(1, 2).reshape(f.shape[0], f.shape[1], self.grid, self.grid)
            if back.shape[-2:] != f.shape[-2:]:
                back = F.interpolate(back, size=f.shape[-2:], mode="bilinear", align_corners=False)
            out.append(f + back)
        return out


class GraphConvFusion(nn.Module):
    """GCFB: channel-embedding then space-embedding graph fusion, then the groups' difference (section 3.3).

    Args:
        channels: ``C`` at the bottleneck.
        nodes: ``N``, channel-embedding nodes per group.
        embed: ``E``, channel-embedding features per node.
        grid: side of the space-embedding node grid (the bottleneck side at the training size).
        groups: 2 for MDANet (output ``F̂_1 - F̂_2``); 1 for single-path ablations (output ``F̂_1``).
        impl: op implementation.

    Shapes:
        list of ``groups`` maps ``(B, C, H, W)`` → ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, nodes: int, embed: int, grid: int, groups: int = 2, impl: str = "auto") -> None:
        super().__init__()
        self.channel = ChannelGraphFusion(channels, nodes, embed, groups, impl)
        self.space = SpaceGraphFusion(channels, grid, groups, impl)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        out = self.space(self.channel(features))
        return out[0] - out[1] if len(out) == 2 else out[0]
