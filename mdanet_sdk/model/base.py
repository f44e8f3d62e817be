"""What every network of the package shares: its config, its op implementation, the input checks, and the
encoder → decoder → head structure (as ``segmentation_models_pytorch``'s ``SegmentationModel``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from torch import Tensor, nn

from mdanet_sdk.config import BOTTLENECK_STRIDE, MDANetConfig
from mdanet_sdk.errors import InputError
from mdanet_sdk.ops import IMPLEMENTATIONS

__all__ = ["SegmentationModel", "SIZE_MULTIPLE", "IMPLEMENTATIONS", "RENAMED", "upgrade_state_dict"]

#: Input height and width must be multiples of this (4 poolings by 2).
SIZE_MULTIPLE = BOTTLENECK_STRIDE


class SegmentationModel(nn.Module):
    """Base of :class:`~mdanet_sdk.model.MDANet`, :class:`~mdanet_sdk.model.UNet` and
    :class:`~mdanet_sdk.model.AttentionUNet`.

    A subclass builds ``stems`` (first encoder stage), ``encoder``, its skips, ``decoder`` and ``head`` in that
    order (the order fixes the parameter order, hence the optimizer state layout and the seeded initialisation),
    and implements :meth:`forward_train`.

    Args:
        config: the network description; its ``architecture`` must be the subclass's :attr:`architecture`.
        ops: how the MDANet ops compute (:data:`IMPLEMENTATIONS`); it changes how the network computes, never
            its weights, and the baselines, which call no MDANet op, only record it.

    Attributes:
        config: ``config`` with ``space_grid`` resolved (:meth:`~mdanet_sdk.config.MDANetConfig.resolved`): the
            grid the weights are built for, e.g. stored by exports.
        ops: the op implementation the network was built with.
    """

    architecture: ClassVar[str]

    def __init__(self, config: MDANetConfig, ops: str = "auto") -> None:
        super().__init__()
        if config.architecture != self.architecture:
            raise InputError(
                f"{type(self).__name__} builds architecture {self.architecture!r}, the config describes "
                f"{config.architecture!r}; build it with mdanet_sdk.model.build_model(config)."
            )
        if ops not in IMPLEMENTATIONS:
            raise InputError(f"ops must be one of {', '.join(IMPLEMENTATIONS)}; got {ops!r:.80}.")
        self.config = config.resolved()
        self.ops = ops

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes, H, W)`` for input ``(B, C, H, W)``."""
        return self.forward_train(x)[0]

    def forward_train(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """Logits and, for the dual-path MDANet, the groups' first-stage features (the similarity loss's input).

        Returns:
            ``(logits (B, K, H, W), (F_a, F_b))`` with ``F_a, F_b: (B, widths[0], H, W)``, or ``(logits, None)``
            for single-path networks.
        """
        # Each network (MDANet, UNet, AttentionUNet) defines its own; build networks with build_model.
        raise NotImplementedError(
            f"{type(self).__name__} does not define forward_train; build networks with build_model."
        )

    def check_input(self, x: Tensor) -> None:
        """Refuse an input of the wrong channel count or a size the four poolings cannot halve.

        Raises:
            InputError: ``x`` is not ``(B, C, H, W)`` with the config's ``C`` and ``H, W`` multiples of 16.
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


#: Parameter-name prefixes of earlier versions → today's: the head was part of the decoder (``decoder.head``).
RENAMED = {"decoder.head.": "head."}


def upgrade_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with the parameter names of earlier versions (:data:`RENAMED`) changed to today's.

    Checkpoints written before the head left the decoder keep their weights and their integrity record; the
    names are changed once, when the file is loaded. A name whose new form is present too is kept as it is, so
    a file holding both is refused as not fitting its network rather than silently merged.
    """
    upgraded = {}
    for name, tensor in state.items():
        for old, new in RENAMED.items():
            if name.startswith(old) and new + name[len(old) :] not in state:
                name = new + name[len(old) :]
        upgraded[name] = tensor
    return upgraded
