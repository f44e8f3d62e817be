"""Transformer pieces shared by TransUNet and Swin-UNet: head counts, the MLP, stochastic depth, the ViT layer,
and resizing a learned position embedding to another token grid."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "attention_heads",
    "Mlp",
    "DropPath",
    "SelfAttention",
    "TransformerLayer",
    "resize_position_embedding",
    "trunc_normal_",
]


def attention_heads(dim: int, head_dim: int) -> int:
    """Heads of a ``dim``-wide attention with heads of about ``head_dim`` features (ViT: 64, Swin: 32).

    The largest divisor of ``dim`` not above ``dim // head_dim`` (at least 1), so that every width the config
    allows splits evenly: 1024 → 16 heads at ``head_dim=64`` (ViT-L), 768 → 12 (ViT-B), 192 → 6 at 32 (Swin).
    """
    most = max(1, dim // head_dim)
    return max(h for h in range(1, most + 1) if dim % h == 0)


class Mlp(nn.Sequential):
    """The transformer MLP: ``Linear(d, 4d)``, GELU, dropout, ``Linear(4d, d)``, dropout; ``(..., d) → (..., d)``."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): in training, drops a residual branch for a whole sample with
    probability ``p`` and scales the kept ones by ``1 / (1 - p)``; the identity in evaluation.

    Shapes:
        ``(B, ...) → (B, ...)``.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class SelfAttention(nn.Module):
    """Multi-head self-attention of ViT (Dosovitskiy et al. 2021) with separate query, key, value and output
    projections, as TransUNet's ``Attention``.

    Shapes:
        ``(B, N, D) → (B, N, D)``.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        # (B, N, D) → (B, heads, N, D / heads); -1 for the batch so that traced artefacts keep it dynamic.
        q, k, v = (
            proj(x).unflatten(-1, (self.heads, -1)).transpose(1, 2) for proj in (self.query, self.key, self.value)
        )
        attention = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)
        return self.dropout(self.out((attention @ v).transpose(1, 2).flatten(2)))


class TransformerLayer(nn.Module):
    """A pre-norm ViT encoder layer: ``x + MSA(LN(x))`` then ``x + MLP(LN(x))`` (TransUNet's ``Block``).

    Args:
        dim: hidden size ``D``.
        heads: attention heads (``D`` divisible by it).
        mlp_dim: MLP hidden size (ViT: ``4 D``).
        dropout: dropout after the MLP layers and the attention projection (ViT-B/16: 0.1).

    Shapes:
        ``(B, N, D) → (B, N, D)``.
    """

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim, eps=1e-6)
        self.attention = SelfAttention(dim, heads, dropout)
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = Mlp(dim, mlp_dim, dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.ffn(self.ffn_norm(x))


def resize_position_embedding(embedding: Tensor, height: int, width: int) -> Tensor:
    """A learned position embedding for a ``grid × grid`` token map, resized to ``height × width`` tokens.

    Bilinear, as ViT does when fine-tuned at another resolution, so that a network trained on one model grid
    runs on another; at its own grid the result equals ``embedding`` exactly (sampling at scale 1 hits the
    grid points).

    Shapes:
        ``embedding: (1, grid, grid, D)`` → ``(1, height, width, D)``.
    """
    resized = nn.functional.interpolate(
        embedding.permute(0, 3, 1, 2), size=(height, width), mode="bilinear", align_corners=False
    )
    return resized.permute(0, 2, 3, 1)


def trunc_normal_(tensor: Tensor, std: float = 0.02) -> Tensor:
    """ViT's and Swin's initialisation of position embeddings and linear weights: normal with ``std``, cut at
    ±2 std, in place.

    By rejection: 6 % more values than needed are drawn (95.4 % fall inside), those inside kept, and drawn
    again in the rare case that they are too few. Exact, and on the CPU several times faster than
    ``nn.init.trunc_normal_``'s inverse-CDF sampling, which took most of the time a 100 M network took to
    build; a handful of tensor operations per weight, whatever its size.
    """
    if tensor.is_meta:  # no values to draw: checkpoint checks build networks on the meta device for the shapes
        return tensor
    with torch.no_grad():
        kept = tensor.new_empty(0)
        while kept.numel() < tensor.numel():
            draw = tensor.new_empty(int(tensor.numel() * 1.06) + 64).normal_(0.0, std)
            kept = torch.cat([kept, draw[draw.abs() <= 2 * std]])
        tensor.copy_(kept[: tensor.numel()].view_as(tensor))
    return tensor
