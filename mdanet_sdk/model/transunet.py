"""TransUNet (Chen et al. 2021), a baseline of the paper's Tables 1-2: a ResNet-50 and ViT hybrid encoder and a
cascaded upsampler (CUP)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mdanet_sdk.config import DEFAULT_MODEL_SIZE, MDANetConfig
from mdanet_sdk.model.base import SIZE_MULTIPLE, SegmentationModel
from mdanet_sdk.model.transformer import TransformerLayer, attention_heads, resize_position_embedding, trunc_normal_

__all__ = ["TransUNet", "ResNetV2", "StdConv2d", "CascadedUpsampler", "VIT_LAYERS", "RESNET_UNITS"]

#: Transformer layers (ViT-B/16 and TransUNet's base model: 12).
VIT_LAYERS = 12
#: Bottleneck units of the three ResNet-50 stages TransUNet keeps (the fourth is replaced by the ViT).
RESNET_UNITS = (3, 4, 9)
#: ViT-B/16's dropout (TransUNet's configs), after the attention projection and in the MLP.
DROPOUT = 0.1


class StdConv2d(nn.Conv2d):
    """A convolution with weight standardisation (BiT's ResNetV2, as TransUNet's encoder): each filter is
    normalised to zero mean and unit variance before it is applied. ``(B, C_in, H, W) → (B, C_out, H', W')``."""

    def forward(self, x: Tensor) -> Tensor:
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, correction=0)
        return self._conv_forward(x, (self.weight - mean) / (var + 1e-5).sqrt(), self.bias)


def group_norm(channels: int) -> nn.GroupNorm:
    """BiT's GroupNorm of 32 groups (fewer when ``channels`` is not a multiple of 32, for small widths)."""
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6)


class Bottleneck(nn.Module):
    """TransUNet's ``PreActBottleneck`` (despite its name, normalised after each convolution):
    1×1 → 3×3 (``stride``) → 1×1 standardised convolutions with GroupNorm, a projected residual when the shape
    changes. ``(B, C_in, H, W) → (B, C_out, H / stride, W / stride)``."""

    def __init__(self, c_in: int, c_out: int, c_mid: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.gn1 = StdConv2d(c_in, c_mid, 1, bias=False), group_norm(c_mid)
        self.conv2, self.gn2 = StdConv2d(c_mid, c_mid, 3, stride, padding=1, bias=False), group_norm(c_mid)
        self.conv3, self.gn3 = StdConv2d(c_mid, c_out, 1, bias=False), group_norm(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            # one group per channel for the projection, as TransUNet's gn_proj
            self.downsample = nn.Sequential(StdConv2d(c_in, c_out, 1, stride, bias=False), nn.GroupNorm(c_out, c_out))

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        y = nn.functional.relu(self.gn1(self.conv1(x)))
        y = nn.functional.relu(self.gn2(self.conv2(y)))
        return nn.functional.relu(residual + self.gn3(self.conv3(y)))


class ResNetV2(nn.Module):
    """The CNN part of TransUNet's hybrid encoder: BiT's ResNet-50 root and its first three stages.

    Root: 7×7 stride-2 convolution to ``widths[0]``, GroupNorm, ReLU, 3×3 stride-2 max-pool (padded by 1 so that
    every multiple of 16 halves exactly; TransUNet pads the odd sizes afterwards). Stage ``s`` (0-2) has
    :data:`RESNET_UNITS` bottlenecks of middle width ``widths[s]`` and output ``4 · widths[s]``, stride 2 from
    stage 1 on.

    Shapes:
        ``(B, C, H, W)`` → the stage-2 output ``(B, 4·widths[2], H/16, W/16)`` and the skips, deepest first:
        ``(B, 4·widths[1], H/8, W/8)``, ``(B, 4·widths[0], H/4, W/4)``, ``(B, widths[0], H/2, W/2)``.
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.root = nn.Sequential(
            StdConv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False), group_norm(widths[0]), nn.ReLU()
        )
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        c_in = widths[0]
        for s, units in enumerate(RESNET_UNITS):
            c_out = 4 * widths[s]
            blocks = [
                Bottleneck(c_in if u == 0 else c_out, c_out, widths[s], 2 if s and u == 0 else 1) for u in range(units)
            ]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.body = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = self.root(x)
        skips = [x]
        x = self.pool(x)
        for stage in self.body[:-1]:
            x = stage(x)
            skips.append(x)
        return self.body[-1](x), skips[::-1]


class DecoderBlock(nn.Module):
    """A CUP stage: ×2 bilinear upsampling, concatenation of the skip (when there is one), two 3×3 conv-BN-ReLU.
    ``(B, C_in, h, w)`` and skip ``(B, C_skip, 2h, 2w)`` → ``(B, C_out, 2h, 2w)``."""

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(c_in + c_skip, c_out)
        self.conv2 = conv_bn_relu(c_out, c_out)

    def forward(self, x: Tensor, skip: Tensor | None) -> Tensor:
        x = nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    """TransUNet's ``Conv2dReLU``: 3×3 convolution without bias, batch norm, ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class CascadedUpsampler(nn.Module):
    """TransUNet's decoder (CUP): a 3×3 conv-BN-ReLU from the hidden size to ``widths[3]``, then four
    :class:`DecoderBlock` to ``widths[2], widths[1], widths[0], widths[0] // 4`` channels, the first three
    with the CNN skips (TransUNet's ``n_skip = 3``).

    Shapes:
        hidden map ``(B, D, H/16, W/16)`` and the :class:`ResNetV2` skips → ``(B, widths[0] // 4, H, W)``.
    """

    def __init__(self, hidden: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        outs = (widths[2], widths[1], widths[0], max(1, widths[0] // 4))
        ins = (widths[3], *outs[:3])
        skips = (4 * widths[1], 4 * widths[0], widths[0], 0)
        self.conv_more = conv_bn_relu(hidden, widths[3])
        self.blocks = nn.ModuleList(DecoderBlock(c_in, c_skip, c_out) for c_in, c_skip, c_out in zip(ins, skips, outs))

    def forward(self, x: Tensor, skips: list[Tensor]) -> Tensor:
        x = self.conv_more(x)
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i] if i < len(skips) else None)
        return x


class TransUNet(SegmentationModel):
    """TransUNet (Chen et al. 2021): R50-ViT hybrid encoder, cascaded upsampler, 3×3 segmentation head.

    The ResNet-50 stages (:class:`ResNetV2`) take the stacked modalities to ``H/16``; each position of that map
    is a token (a 1×1 patch embedding, TransUNet's hybrid setting), with a learned position embedding for the
    model grid (``config.space_grid`` tokens per side, resized bilinearly for other grids); :data:`VIT_LAYERS`
    pre-norm transformer layers and a LayerNorm follow, and :class:`CascadedUpsampler` decodes with the CNN
    skips.

    How ``widths`` map: ResNet middle widths ``widths[0..2]`` (outputs 4×), decoder widths ``widths[3]`` (CUP
    head) to ``widths[0] // 4``, ViT hidden size ``D = widths[4]`` with heads of 64 features and an MLP of
    ``4 D``. At widths 64..512 with ``D = 768`` this is R50-ViT-B/16, TransUNet's base model: 105,277,081
    parameters for 3 input channels, 9 classes and a 224 px grid, the 105.28 M reported for it.

    The MDANet paper reports 175.3 M (Tables 1-2), which no published TransUNet configuration has: R50-ViT-B/16
    is 40 % below, R50-ViT-L/16 (D = 1024, 24 layers) about twice above. The paper preset (widths 64..1024) is
    ViT-L's width at ViT-B's depth, D = 1024, 16 heads, 12 layers: 172.9 M at a 256 px grid (CTP), 1.4 %
    below the paper's count, the only combination of TransUNet's hidden sizes and depths that comes near it;
    what the remaining 2.4 M are, the paper does not say.

    Args:
        config: groups (input channels), widths, ``space_grid`` and ``num_classes``; ``architecture`` must be
            ``"transunet"``.
        ops: recorded only; TransUNet calls no MDANet op.

    Shapes:
        ``(B, C, H, W) → (B, num_classes, H, W)``; ``H, W`` multiples of 16.
    """

    architecture = "transunet"

    def __init__(self, config: MDANetConfig | None = None, *, ops: str = "auto") -> None:
        super().__init__(config or MDANetConfig(architecture=self.architecture), ops)
        w, hidden = self.config.widths, self.config.widths[-1]
        grid = self.config.space_grid or DEFAULT_MODEL_SIZE // SIZE_MULTIPLE
        self.encoder = ResNetV2(self.config.in_channels, w)
        self.patch_embedding = nn.Conv2d(4 * w[2], hidden, 1)
        self.position_embedding = nn.Parameter(trunc_normal_(torch.empty(1, grid, grid, hidden)))
        self.embedding_dropout = nn.Dropout(DROPOUT)
        heads = attention_heads(hidden, 64)
        self.transformer = nn.ModuleList(
            TransformerLayer(hidden, heads, 4 * hidden, DROPOUT) for _ in range(VIT_LAYERS)
        )
        self.encoder_norm = nn.LayerNorm(hidden, eps=1e-6)
        self.decoder = CascadedUpsampler(hidden, w)
        self.head = nn.Conv2d(max(1, w[0] // 4), self.config.num_classes, 3, padding=1)

    def forward_train(self, x: Tensor) -> tuple[Tensor, None]:
        self.check_input(x)
        x, skips = self.encoder(x)
        tokens = self.patch_embedding(x).permute(0, 2, 3, 1)  # (B, h, w, D)
        tokens = tokens + resize_position_embedding(self.position_embedding, tokens.shape[1], tokens.shape[2])
        h, w = tokens.shape[1], tokens.shape[2]
        tokens = self.embedding_dropout(tokens.flatten(1, 2))  # (B, h·w, D)
        for layer in self.transformer:
            tokens = layer(tokens)
        hidden = self.encoder_norm(tokens).unflatten(1, (h, w)).permute(0, 3, 1, 2)  # (B, D, h, w)
        return self.head(self.decoder(hidden, skips)), None
