"""The networks: MDANet (one module per paper component) and the Table 1 baselines, and how to build them."""

from __future__ import annotations

from torch import nn

from mdanet_sdk.errors import InputError
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.model.base import IMPLEMENTATIONS, SegmentationModel, upgrade_state_dict
from mdanet_sdk.model.blocks import MultiScaleConv
from mdanet_sdk.model.dasc import DifferenceAwareSkip
from mdanet_sdk.model.gcfb import GraphConv, GraphConvFusion
from mdanet_sdk.model.mdanet import MDANet
from mdanet_sdk.model.msnet import MSNet
from mdanet_sdk.model.swinunet import SwinUNet
from mdanet_sdk.model.transunet import TransUNet
from mdanet_sdk.model.unet import AttentionUNet, UNet
from mdanet_sdk.model.unetpp import UNetPlusPlus

__all__ = [
    "MDANet",
    "UNet",
    "AttentionUNet",
    "UNetPlusPlus",
    "MSNet",
    "TransUNet",
    "SwinUNet",
    "SegmentationModel",
    "MultiScaleConv",
    "DifferenceAwareSkip",
    "GraphConv",
    "GraphConvFusion",
    "IMPLEMENTATIONS",
    "NETWORKS",
    "build_model",
    "count_parameters",
    "model_summary",
    "upgrade_state_dict",
]

#: ``MDANetConfig.architecture`` → the network class.
NETWORKS: dict[str, type[SegmentationModel]] = {
    "mdanet": MDANet,
    "unet": UNet,
    "attention-unet": AttentionUNet,
    "unetpp": UNetPlusPlus,
    "msnet": MSNet,
    "transunet": TransUNet,
    "swin-unet": SwinUNet,
}


def build_model(config: MDANetConfig, ops: str = "auto") -> SegmentationModel:
    """The network ``config`` describes: MDANet, or the baseline its ``architecture`` names (:data:`NETWORKS`).

    Args:
        config: the network description (weights are not loaded here).
        ops: how the MDANet ops compute (``"auto"``: native when built, ``"native"``, ``"reference"``); it
            changes how the network computes, never its weights.

    Raises:
        InputError: ``ops`` is none of the three.
    """
    return NETWORKS[config.architecture](config, ops=ops)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (shared modules counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def model_summary(config: MDANetConfig, size: int = 256) -> dict[str, object]:
    """Parameter count and forward FLOPs for one ``size × size`` slice (``torch.utils.flop_counter``).

    The network is the one trained at that size: an unset ``config.space_grid`` becomes ``size // 16``
    (:meth:`~mdanet_sdk.config.MDANetConfig.resolved`), which changes the GCFB's parameter count. FLOPs are
    counted on the reference ops: the counter cannot see inside the native kernels (same arithmetic).

    Returns:
        ``{"preset", "architecture", "groups", "size", "space_grid", "params", "params_m", "gflops_per_slice",
        "gmacs_per_slice"}``; FLOPs count a multiply-add as 2 (MACs as 1) and cover convolutions and matrix
        products (not element-wise ops).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mdanet_sdk.data.preprocess import PreprocessConfig

    low, high = PreprocessConfig.SIZE_RANGE
    if not low <= size <= high:
        raise InputError(f"size must be from {low} to {high} pixels (the model grids mdanet-sdk reads), got {size}.")
    model = build_model(config.resolved(size), ops="reference").eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(1, config.in_channels, size, size))
    except (ValueError, RuntimeError) as exc:  # e.g. a bottleneck of 1×1 with one value per channel
        raise InputError(
            f"the {config.preset} network cannot run on {size}×{size} slices ({str(exc)[:120]}); choose a larger size."
        ) from None
    params = count_parameters(model)
    flops = counter.get_total_flops()
    return {
        "preset": config.preset,
        "architecture": config.architecture,
        "groups": [list(g) for g in config.groups],
        "size": size,
        "space_grid": (
            model.config.space_grid
            if isinstance(model, MDANet) and model.config.bottleneck in ("gcfb", "transformer")
            else None
        ),
        "params": params,
        "params_m": round(params / 1e6, 3),
        "gflops_per_slice": round(flops / 1e9, 3),
        "gmacs_per_slice": round(flops / 2e9, 3),
    }
