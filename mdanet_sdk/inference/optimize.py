"""Behaviour-preserving speed-ups of a built network for inference, and the CPU batch size chosen by footprint.

* :func:`fold_batchnorm`: every ``Conv2d`` directly followed by a ``BatchNorm2d`` in an ``nn.Sequential``
  absorbs the batch norm (eval statistics), ``w' = w·γ/σ``, ``b' = (b - μ)·γ/σ + β``: one pass over each
  feature map fewer, the same function up to float rounding (~1e-6 relative).
* :func:`optimize_for_inference`: the folding, then the weights in ``channels_last`` (NHWC) order, the layout
  oneDNN's CPU convolutions run fastest in (the inputs are made channels_last by the
  :class:`~mdanet_sdk.inference.predictor.Predictor`); optionally ``torch.compile``, or on CUDA the forward
  replayed from CUDA graphs (:class:`~mdanet_sdk.inference.cuda_graphs.GraphedNetwork`).
* :func:`auto_batch_size`: slices per forward pass from the activation footprint of one slice, since on a
  CPU a batch whose activations leave the cache is slower per slice (measured: the ``paper`` preset at 256²
  runs 2.1 slices/s at batch 1 and 1.4 at batch 4).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.inference.cuda_graphs import GraphedNetwork

if TYPE_CHECKING:
    from mdanet_sdk.train.checkpoint import Checkpoint

__all__ = [
    "ACTIVATION_BUDGET",
    "MAX_AUTO_BATCH",
    "auto_batch_size",
    "build_networks",
    "fold_batchnorm",
    "optimize_for_inference",
]

logger = logging.getLogger(__name__)

#: Bytes of the largest activation of one batch that a CPU forward keeps efficient: the widest full-resolution
#: map of both modality groups (``2 · widths[0] · H · W`` fp32 values per slice). Measured on a 2-core Xeon
#: (2 MiB L2 per core): the ``small`` preset at 128² (2 MiB per slice) runs as fast per slice at batch 16 as at
#: 4; the ``paper`` preset at 256² (32 MiB per slice) is fastest at batch 1.
ACTIVATION_BUDGET = 32 * 2**20
#: The auto batch size never exceeds this (more gains nothing on a CPU and delays the first result).
MAX_AUTO_BATCH = 16


def auto_batch_size(config: MDANetConfig, grid: tuple[int, int], device: torch.device) -> int:
    """Slices per forward pass when the user gives none.

    On CUDA :data:`MAX_AUTO_BATCH` (a GPU wants large batches). On a CPU the largest batch whose widest
    activation (``2 · widths[0] · H · W · 4`` bytes per slice) fits :data:`ACTIVATION_BUDGET`, between 1 and
    :data:`MAX_AUTO_BATCH`.

    Args:
        config: the network's config (its ``widths``).
        grid: the model grid ``(H, W)`` of the slices (for a checkpoint with a fixed preprocessing ``size``,
            ``(size, size)``).
        device: where the network runs.
    """
    if device.type == "cuda":
        return MAX_AUTO_BATCH
    per_slice = 2 * config.widths[0] * grid[0] * grid[1] * 4
    return max(1, min(MAX_AUTO_BATCH, ACTIVATION_BUDGET // max(1, per_slice)))


def fold_batchnorm(model: nn.Module) -> int:
    """Fold, in place, each ``BatchNorm2d`` that directly follows a ``Conv2d`` in an ``nn.Sequential`` into that
    convolution (the batch norm becomes ``nn.Identity``). ``model`` must be in eval mode: the fold uses the
    running statistics, so a model that is trained afterwards would not be the same network.

    Returns:
        how many batch norms were folded.

    Raises:
        ValueError: ``model`` is in training mode.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (it folds the running statistics).")
    folded = 0
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats:
                module._modules[first] = fuse_conv_bn_eval(conv, norm)
                module._modules[second] = nn.Identity()
                folded += 1
    return folded


def optimize_for_inference(
    model: nn.Module,
    device: torch.device,
    *,
    fold: bool = True,
    channels_last: bool = False,
    compile: bool = False,
    cuda_graphs: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model`` (in eval mode, on ``device``) made faster for inference, in place where it is a module.

    Args:
        model: a network the caller owns (it is changed in place).
        device: where it runs.
        fold: fold the batch norms into the convolutions (:func:`fold_batchnorm`).
        channels_last: store the 4-D weights in channels_last order.
        compile: wrap it in ``torch.compile`` (inductor): compiled on the first batch (~28 s on a 2-core CPU
            for the ``small`` preset) and once more for the first shorter batch, then ~1.2x faster per batch.
        cuda_graphs: on CUDA and without ``compile``, replay each batch shape's forward from a CUDA graph
            (:class:`~mdanet_sdk.inference.cuda_graphs.GraphedNetwork`); ignored elsewhere.

    Returns:
        the module, or its compiled or graphed wrapper.
    """
    if fold:
        folded = fold_batchnorm(model)
        logger.debug("folded %d batch norms into their convolutions", folded)
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
    if compile:
        # Default dynamism: the first batch shape compiles a static graph; a second one (a case's last, shorter
        # batch) recompiles once with a dynamic batch size, which then serves every remainder.
        return torch.compile(model)
    if cuda_graphs and device.type == "cuda":
        return GraphedNetwork(model)
    return model


def build_networks(
    checkpoints: Sequence[Checkpoint],
    device: torch.device,
    *,
    ops: str = "auto",
    fold: bool = True,
    channels_last: bool = False,
    compile: bool = False,
    cuda_graphs: bool = False,
) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """Each checkpoint's network built with op implementation ``ops``, on ``device``, in eval mode, and made
    faster for inference (:func:`optimize_for_inference` with ``fold``, ``channels_last``, ``compile``,
    ``cuda_graphs``)."""
    options = {"fold": fold, "channels_last": channels_last, "compile": compile, "cuda_graphs": cuda_graphs}
    return [optimize_for_inference(c.build_model(ops=ops).to(device).eval(), device, **options) for c in checkpoints]
