"""Swin-UNet (Cao et al. 2022), a baseline of the paper's Tables 1-2: a U-shaped pure Swin transformer with patch
merging in the encoder and patch expanding in the decoder.

Token maps are kept channels-last, ``(B, h, w, C)``, throughout: every linear layer and LayerNorm acts on the
last axis, and windows are cut by reshapes of the two spatial axes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mdanet_sdk.config import DEFAULT_MODEL_SIZE, MDANetConfig
from mdanet_sdk.errors import InputError
from mdanet_sdk.model.base import SIZE_MULTIPLE, SegmentationModel
from mdanet_sdk.model.transformer import DropPath, Mlp, attention_heads, resize_position_embedding, trunc_normal_

__all__ = [
    "SwinUNet",
    "SwinBlock",
    "WindowAttention",
    "PatchEmbed",
    "PatchMerging",
    "PatchExpand",
    "PATCH_SIZE",
    "WINDOW_SIZE",
    "DEPTH",
    "window_of",
]

#: Side of the patches the input is cut into (Swin-UNet: 4): tokens at H/4, then H/8, H/16, H/32.
PATCH_SIZE = 4
#: Attention window side. Swin-UNet's 7 fits its 224 px input (token grids 56, 28, 14, 7); 8 fits the grids of
#: the inputs used here (128 px: 32, 16, 8, 4; 256 px: 64, 32, 16, 8).
WINDOW_SIZE = 8
#: Swin blocks per encoder stage and per decoder stage (Swin-UNet: 2 everywhere).
DEPTH = 2
#: Stochastic depth at the deepest block (Swin-UNet's default ``drop_path_rate``), rising linearly from 0.
DROP_PATH = 0.1
#: Features per attention head (Swin: 32).
HEAD_DIM = 32


def window_of(height: int, width: int) -> tuple[int, int]:
    """``(window, shift)`` of a stage on an ``height × width`` token grid, as Swin: the grid itself when it is
    no larger than :data:`WINDOW_SIZE` (then nothing to shift), else :data:`WINDOW_SIZE` shifted by half."""
    if min(height, width) <= WINDOW_SIZE:
        return min(height, width), 0
    return WINDOW_SIZE, WINDOW_SIZE // 2


def window_partition(x: Tensor, window: int) -> Tensor:
    """``(B, h, w, C) → (B · h/window · w/window, window², C)``: the windows, row by row."""
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    x = x.reshape(-1, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: Tensor, window: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: ``(B · nW, window², C) → (B, h, w, C)``."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def shift_mask(h: int, w: int, window: int, shift: int, device: torch.device) -> Tensor:
    """The attention mask of shifted windows: 0 between tokens of one region of the rolled map, -100 between
    tokens that the roll brought together from opposite borders. ``(nW, window², window²)``."""

    def regions(n: int) -> Tensor:  # 0, 1, 2: the strips [0, n - window), [n - window, n - shift), [n - shift, n)
        index = torch.arange(n, device=device)
        return (index >= n - window).long() + (index >= n - shift).long()

    ids = (regions(h)[:, None] * 3 + regions(w)[None, :]).float()[None, :, :, None]  # (1, h, w, 1)
    windows = window_partition(ids, window).squeeze(-1)  # (nW, window²)
    different = windows[:, None, :] != windows[:, :, None]
    return torch.zeros(different.shape, device=device).masked_fill(different, -100.0)


class WindowAttention(nn.Module):
    """Window multi-head self-attention with a learned relative position bias (Swin, Liu et al. 2021).

    The bias table holds one value per head and relative offset within a :data:`WINDOW_SIZE` window; a smaller
    window (a token grid smaller than that) reads the entries of its offsets, so the bias depends on the offset
    only, whatever the grid.

    Shapes:
        windows ``(B · nW, N, C)`` with ``N = window²``, optional mask ``(nW, N, N)`` → ``(B · nW, N, C)``.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.relative_position_bias_table = nn.Parameter(trunc_normal_(torch.empty((2 * WINDOW_SIZE - 1) ** 2, heads)))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def relative_bias(self, window: int) -> Tensor:
        """The bias of every pair of positions of a ``window × window`` window: ``(heads, N, N)``."""
        device = self.relative_position_bias_table.device
        coords = torch.stack(
            torch.meshgrid(torch.arange(window, device=device), torch.arange(window, device=device), indexing="ij")
        ).flatten(1)  # (2, N)
        offset = coords[:, :, None] - coords[:, None, :] + WINDOW_SIZE - 1  # (2, N, N), each in 0 .. 2·WINDOW-2
        index = offset[0] * (2 * WINDOW_SIZE - 1) + offset[1]
        return self.relative_position_bias_table[index].permute(2, 0, 1)

    def forward(self, x: Tensor, window: int, mask: Tensor | None) -> Tensor:
        n, c = x.shape[1], x.shape[2]
        q, k, v = self.qkv(x).reshape(-1, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attention = q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5 + self.relative_bias(window)
        if mask is not None:  # (B·nW, heads, N, N) viewed per window index, so that one mask serves every image
            attention = attention.unflatten(0, (-1, mask.shape[0])) + mask[None, :, None]
            attention = attention.flatten(0, 1)
        return self.proj((attention.softmax(dim=-1) @ v).transpose(1, 2).reshape(-1, n, c))


class SwinBlock(nn.Module):
    """A Swin transformer block: ``x + W-MSA(LN(x))`` (windows shifted by half in odd blocks) then
    ``x + MLP(LN(x))``, both branches with stochastic depth.

    Shapes:
        ``(B, h, w, C) → (B, h, w, C)``; ``h, w`` multiples of the stage's window (:func:`window_of`).
    """

    def __init__(self, dim: int, heads: int, shifted: bool, drop_path: float) -> None:
        super().__init__()
        self.shifted = shifted
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[1], x.shape[2]
        window, shift = window_of(h, w)
        shift = shift if self.shifted else 0
        y = self.norm1(x)
        mask = None
        if shift:
            y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
            mask = shift_mask(h, w, window, shift, x.device).to(x.dtype)
        y = window_reverse(self.attn(window_partition(y, window), window, mask), window, h, w)
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping :data:`PATCH_SIZE` patches, linearly embedded and normalised:
    ``(B, C_in, H, W) → (B, H/4, W/4, C)``."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, PATCH_SIZE, stride=PATCH_SIZE)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """Swin's downsampling: each 2×2 group of tokens concatenated (``4 C_in``), normalised and projected to
    ``C_out`` (Swin: ``2 C_in``). ``(B, h, w, C_in) → (B, h/2, w/2, C_out)``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * c_in)
        self.reduction = nn.Linear(4 * c_in, c_out, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class PatchExpand(nn.Module):
    """Swin-UNet's upsampling: a linear layer to ``scale² · C_out`` features per token, rearranged into a
    ``scale × scale`` block of tokens, then LayerNorm (Swin-UNet: ``C_out = C_in / 2`` at scale 2; the final
    ×4 expand keeps ``C_in``). ``(B, h, w, C_in) → (B, scale·h, scale·w, C_out)``."""

    def __init__(self, c_in: int, c_out: int, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.expand = nn.Linear(c_in, scale * scale * c_out, bias=False)
        self.norm = nn.LayerNorm(c_out)

    def forward(self, x: Tensor) -> Tensor:
        h, w, p = x.shape[1], x.shape[2], self.scale
        x = self.expand(x).unflatten(-1, (p, p, -1))  # (B, h, w, p1, p2, C_out)
        return self.norm(x.permute(0, 1, 3, 2, 4, 5).reshape(-1, p * h, p * w, x.shape[-1]))


def swin_stage(dim: int, drop_paths: list[float]) -> nn.Sequential:
    """:data:`DEPTH` Swin blocks, alternately regular and shifted windows: ``(B, h, w, dim) → (B, h, w, dim)``."""
    heads = attention_heads(dim, HEAD_DIM)
    return nn.Sequential(*(SwinBlock(dim, heads, i % 2 == 1, p) for i, p in enumerate(drop_paths)))


class SwinUNet(SegmentationModel):
    """Swin-UNet (Cao et al., ECCV workshops 2022): patch embedding, four Swin stages joined by patch merging,
    three decoder stages joined by patch expanding with skip connections, a final ×4 patch expand and a 1×1
    projection to the classes.

    Stage ``s`` (0-3) works at ``H / 2^{s+2}`` with ``dims[s] = 3 · widths[s]`` features and heads of 32
    features; stage 3 is the bottleneck (``widths[4]`` is unused). Each decoder stage ``s`` (2, 1, 0)
    concatenates the encoder stage's output (the skip), projects ``2 · dims[s] → dims[s]``, and runs
    :data:`DEPTH` Swin blocks. Inputs get a learned absolute position embedding for the model grid (``H/4 =
    4 · space_grid`` tokens per side, resized bilinearly for other grids).

    At widths 32..256 this is Swin-UNet as published (embedding 96, Swin-T's heads 3..24): 27.17 M parameters
    without the position embedding and with 7×7 windows (their relative position tables are 7392 smaller),
    as Cao et al. report.
    The MDANet paper reports 106.0 M (ISLES 2018) and 105.4 M (ISLES 2022): four times that, i.e. embedding
    192 (Swin-L's width, heads 6..48) at Swin-UNet's depths, which the paper preset (widths 64..1024 → dims
    192..1536) builds: 109.3 M at 256 px (CTP) and 108.7 M at 128 px (MRI), 3 % above. The 0.6 M the paper's two counts
    differ by is what the absolute position embedding of 192 features differs by between a 64² and a 32²
    token grid (ISLES 2018 slices at 256 px, ISLES 2022 at 128 px), which is why it is kept here though
    Swin-UNet's default leaves it off.

    Size constraint: each stage's token grid is cut into :data:`WINDOW_SIZE` windows (or is one window when a
    side is at most 8), so ``H`` and ``W`` must be multiples of 32 whose grids divide so: 32, 64, 128, 256,
    512 and any multiple of 256 do; 96 or 384 do not (:meth:`check_input` says so).

    Args:
        config: groups (input channels), widths, ``space_grid`` and ``num_classes``; ``architecture`` must be
            ``"swin-unet"``.
        ops: recorded only; Swin-UNet calls no MDANet op.

    Shapes:
        ``(B, C, H, W) → (B, num_classes, H, W)``.
    """

    architecture = "swin-unet"

    def __init__(self, config: MDANetConfig | None = None, *, ops: str = "auto") -> None:
        super().__init__(config or MDANetConfig(architecture=self.architecture), ops)
        dims = [3 * width for width in self.config.widths[:4]]
        grid = PATCH_SIZE * (self.config.space_grid or DEFAULT_MODEL_SIZE // SIZE_MULTIPLE)
        blocks = DEPTH * len(dims)  # in Python: a tensor would have no values when built on the meta device
        rates = [DROP_PATH * i / (blocks - 1) for i in range(blocks)]
        paths = [rates[DEPTH * s : DEPTH * (s + 1)] for s in range(len(dims))]
        self.patch_embed = PatchEmbed(self.config.in_channels, dims[0])
        self.absolute_pos_embed = nn.Parameter(trunc_normal_(torch.empty(1, grid, grid, dims[0])))
        self.encoder = nn.ModuleList(swin_stage(dim, p) for dim, p in zip(dims, paths))
        self.merging = nn.ModuleList(PatchMerging(dims[s], dims[s + 1]) for s in range(3))
        self.norm = nn.LayerNorm(dims[3])
        self.expanding = nn.ModuleList(PatchExpand(dims[s + 1], dims[s]) for s in (2, 1, 0))
        self.concat_back_dim = nn.ModuleList(nn.Linear(2 * dims[s], dims[s]) for s in (2, 1, 0))
        self.decoder = nn.ModuleList(swin_stage(dims[s], paths[s]) for s in (2, 1, 0))
        self.norm_up = nn.LayerNorm(dims[0])
        self.up = PatchExpand(dims[0], dims[0], scale=PATCH_SIZE)
        self.head = nn.Conv2d(dims[0], self.config.num_classes, 1, bias=False)
        self.apply(_init_weights)

    def check_input(self, x: Tensor) -> None:
        """:meth:`SegmentationModel.check_input`, and token grids that the windows divide.

        Raises:
            InputError: the input's size does not fit the windows of every stage.
        """
        super().check_input(x)
        height, width = int(x.shape[-2]), int(x.shape[-1])
        for stage in range(4):
            scale = PATCH_SIZE * 2**stage
            h, w = height // scale, width // scale
            window = window_of(h, w)[0]
            if height % scale or width % scale or h % window or w % window:
                raise InputError(
                    f"Swin-UNet cuts the token grids of an input (1/4 to 1/32 of its side) into {WINDOW_SIZE}×"
                    f"{WINDOW_SIZE} windows, which {height}×{width} does not allow; pad the slices to 32, 64, 128, "
                    "256, 512 or a multiple of 256 pixels."
                )

    def forward_train(self, x: Tensor) -> tuple[Tensor, None]:
        self.check_input(x)
        x = self.patch_embed(x)  # (B, H/4, W/4, dims[0])
        x = x + resize_position_embedding(self.absolute_pos_embed, x.shape[1], x.shape[2])
        skips = []
        for s, stage in enumerate(self.encoder):
            x = stage(x)
            if s < len(self.merging):
                skips.append(x)
                x = self.merging[s](x)
        x = self.norm(x)  # bottleneck (B, H/32, W/32, dims[3])
        for expand, project, stage, skip in zip(self.expanding, self.concat_back_dim, self.decoder, skips[::-1]):
            x = stage(project(torch.cat([expand(x), skip], dim=-1)))
        x = self.up(self.norm_up(x))  # (B, H, W, dims[0])
        return self.head(x.permute(0, 3, 1, 2)), None


def _init_weights(module: nn.Module) -> None:
    """Swin's initialisation: linear weights truncated normal (std 0.02), their biases 0; LayerNorms 1, 0."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
