"""The one prediction routine: slices -> probabilities -> native grid -> mask.

:class:`Predictor` holds the networks (one, or a fold ensemble), where and in which precision they run, and
the :class:`~mdanet_sdk.inference.postprocess.PostprocessConfig`. Every path that turns a case into a mask
goes through it: the :class:`~mdanet_sdk.inference.Segmenter` (batches of several cases streamed by
:mod:`~mdanet_sdk.inference.pipeline`), training validation and the benchmark (one case at a time, through
:meth:`Predictor.case_probability`), so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.data.preprocess import SliceStack, restore_probability_into
from mdanet_sdk.device import autocast
from mdanet_sdk.errors import CheckpointError, InputError
from mdanet_sdk.inference.optimize import MAX_AUTO_BATCH, auto_batch_size
from mdanet_sdk.inference.postprocess import PostprocessConfig
from mdanet_sdk.inference.transfer import HostStaging
from mdanet_sdk.pipeline.volume import lesion_probability, tta_flips

__all__ = ["Predictor"]


class Predictor:
    """Lesion probabilities and masks of preprocessed slices.

    Args:
        models: networks ``(B, C, H, W) -> (B, 2, H, W)`` logits, already on ``device`` and in eval mode.
        names: one name per model, for error messages (e.g. ``["fold0", "fold1"]``).
        device: a resolved :class:`torch.device` (:func:`mdanet_sdk.device.resolve_device`).
        precision: a resolved precision, ``"fp32"``, ``"fp16"`` or ``"bf16"``
            (:func:`mdanet_sdk.device.resolve_precision`); probabilities are always computed in fp32.
        settings: TTA and post-processing.
        batch_size: slices per forward pass; ``None``: chosen per model grid by :meth:`batch_for`.
        channels_last: give the models their input in channels_last order (for models whose weights are
            channels_last, :func:`~mdanet_sdk.inference.optimize.optimize_for_inference`).
        config: the network's config, for the automatic batch size (``None``: 16 slices when automatic).
    """

    def __init__(
        self,
        models: Sequence[Callable[[torch.Tensor], torch.Tensor]],
        names: Sequence[str],
        device: torch.device,
        precision: str,
        settings: PostprocessConfig,
        batch_size: int | None = 16,
        *,
        channels_last: bool = False,
        config: MDANetConfig | None = None,
    ) -> None:
        if len(names) != len(models):
            raise ValueError("Predictor needs one name per model.")
        self.models, self.names = list(models), list(names)
        self.device, self.precision, self.settings, self.batch_size = device, precision, settings, batch_size
        self.channels_last, self.config = channels_last, config
        self._staging = HostStaging(device)

    def batch_for(self, grid: tuple[int, int]) -> int:
        """Slices per forward pass on the model grid ``grid = (H, W)``: ``batch_size``, or when that is ``None``
        :func:`~mdanet_sdk.inference.optimize.auto_batch_size` (16 without a config)."""
        if self.batch_size is not None:
            return self.batch_size
        return auto_batch_size(self.config, grid, self.device) if self.config is not None else MAX_AUTO_BATCH

    @torch.inference_mode()
    def probabilities(self, x: torch.Tensor, source: str = "these slices") -> torch.Tensor:
        """Lesion probability of preprocessed slices, averaged over the models and (with TTA) the flips.

        ``p = 1 / (M F) * sum_m sum_f flip_f(softmax(model_m(flip_f(x)))[:, 1])``.

        Args:
            x: ``(B, C, H, W)`` float32 slices on the model grid (H, W multiples of 16), on any device.
            source: what the slices are, for error messages (e.g. ``"case sub-01"``).

        Returns:
            float32 ``(B, H, W)`` on the CPU.

        Raises:
            CheckpointError: a model's logits hold NaN or Inf (damaged weights).
            InputError: ``x`` itself holds NaN or Inf.
        """
        x = self._staging.to_device(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        total = torch.zeros((x.shape[0], *x.shape[2:]), dtype=torch.float32, device=self.device)
        flips = tta_flips(self.settings.tta)
        for model, name in zip(self.models, self.names):
            finite = torch.ones((), dtype=torch.bool, device=self.device)
            for dims in flips:
                with autocast(self.device, self.precision):
                    logits = model(x.flip(dims) if dims else x)
                # NaN logits give NaN probabilities, which pass no threshold: a silent "0 lesions". One
                # reduction per forward, read once per model (one device sync, not one per flip).
                finite &= torch.isfinite(logits).all()
                lesion = lesion_probability(logits)  # (B, H, W)
                total += lesion.flip(dims) if dims else lesion
            if not finite:
                self._refuse_non_finite(x, name, source)
        return (total / (len(self.models) * len(flips))).cpu()

    def _refuse_non_finite(self, x: torch.Tensor, name: str, source: str) -> None:
        """Raise the error for non-finite logits of model ``name``: the input's fault only if it is not finite."""
        if not torch.isfinite(x).all():
            raise InputError(f"the slices of {source} hold NaN/Inf values; set undefined voxels to 0, then segment.")
        if self.precision == "fp16":  # fp16 overflows near 65504; bf16 has fp32's range
            raise CheckpointError(
                f"model {name} produced non-finite values (NaN/Inf) on {source} in fp16; run it in bf16 or fp32, "
                "and if that fails too its weights are damaged: re-train, re-export or re-download them."
            )
        raise CheckpointError(
            f"model {name} produced non-finite values (NaN/Inf) on {source}; its weights are damaged: re-train, "
            "re-export or re-download them."
        )

    def case_probability(self, stack: SliceStack, source: str = "this case") -> np.ndarray:
        """Lesion probability of one whole case on its native grid.

        Args:
            stack: the case's slices (:func:`~mdanet_sdk.data.preprocess.slice_stack`).
            source: what the case is, for error messages.

        Returns:
            float32 ``(X, Y, Z)`` in [0, 1]: padding cropped, resampled back, clipped, 0 outside the head
            (:func:`~mdanet_sdk.data.preprocess.restore_probability_into`, as the Segmenter's stream does);
            slices without head are 0 without running the network (:meth:`SliceStack.runs`).
        """
        out = np.zeros(stack.geometry.native_shape, np.float32)
        for start, end in stack.runs(self.batch_for((stack.shape[2], stack.shape[3]))):
            x = torch.from_numpy(stack.chunk(start, end))
            restore_probability_into(out, self.probabilities(x, source).numpy(), stack.geometry, start)
        return out

    def mask(
        self, probability: np.ndarray, images: Mapping[str, np.ndarray], head: np.ndarray | None = None
    ) -> np.ndarray:
        """The post-processed uint8 ``(X, Y, Z)`` mask of a native-grid probability map
        (:meth:`PostprocessConfig.apply`); ``images`` (modality -> ``(X, Y, Z)``) supply the ADC for the gate."""
        return self.settings.apply(probability, images.get("adc"), head)
