"""The one prediction routine: slices -> probabilities -> native grid -> mask.

:class:`Predictor` holds the networks (one, or a fold ensemble), where and in which precision they run, and
the :class:`~mdanet_sdk.inference.postprocess.PostprocessConfig`. Every path that turns a case into a mask
goes through it: the :class:`~mdanet_sdk.inference.Segmenter` (batches of several cases streamed by
:mod:`~mdanet_sdk.inference.pipeline`), training validation and the benchmark (one case at a time, through
:meth:`Predictor.case_probability`), so they cannot drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mdanet_sdk._text import printable
from mdanet_sdk._values import is_flag, is_whole
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.data.preprocess import SliceStack, restore_probability_into
from mdanet_sdk.device import autocast, is_out_of_memory
from mdanet_sdk.errors import CheckpointError, InputError, MDANetError
from mdanet_sdk.inference.optimize import MAX_AUTO_BATCH, auto_batch_size
from mdanet_sdk.inference.postprocess import PostprocessConfig
from mdanet_sdk.inference.transfer import HostStaging
from mdanet_sdk.pipeline.volume import lesion_probability, tta_flips

__all__ = ["Predictor", "TTA_SCREEN", "check_run_options"]

logger = logging.getLogger(__name__)

#: The default TTA screen of the Segmenter: flips only for slices whose un-flipped probability (the models'
#: mean) reaches a quarter of the threshold somewhere. A voxel of a screened-out slice would need the three flips
#: to average above 1.25x the threshold, while its own un-flipped probability is under a quarter of it, to change
#: the mask.
TTA_SCREEN = 0.25


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
        tta_screen: with TTA, run the three flipped passes only on the slices whose un-flipped probability
            reaches ``tta_screen * threshold`` somewhere (:data:`TTA_SCREEN`); the other slices keep their
            un-flipped probability, far below the threshold, so the mask is the same in substance for a
            fraction of the work (most slices of a case hold no lesion). 0 runs every flip on every slice.
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
        tta_screen: float = 0.0,
    ) -> None:
        if len(names) != len(models):
            raise ValueError("Predictor needs one name per model.")
        self.models, self.names = list(models), list(names)
        self.device, self.precision, self.settings, self.batch_size = device, precision, settings, batch_size
        self.channels_last, self.config = channels_last, config
        if not 0.0 <= tta_screen <= 1.0:
            raise ValueError(f"tta_screen is a fraction of the threshold in [0, 1], got {tta_screen}.")
        self.tta_screen = tta_screen
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

        A batch that runs out of memory is run again in parts of half its size (halved again while they run out
        of memory, down to one slice); the size that fits is kept as :attr:`batch_size` for the batches that
        follow, with one warning per halving. The slices are independent in eval mode, so the probabilities are
        those of the whole batch.

        ``p = 1 / (M F) * sum_m sum_f flip_f(softmax(model_m(flip_f(x)))[:, 1])``, with ``F = 1`` (un-flipped
        only, for every model) on the slices the TTA screen leaves out: those whose un-flipped ``p`` stays under
        ``tta_screen * threshold`` everywhere.

        Args:
            x: ``(B, C, H, W)`` float32 slices on the model grid (H, W multiples of 16), on any device.
            source: what the slices are, for error messages (e.g. ``"case sub-01"``).

        Returns:
            float32 ``(B, H, W)`` on the CPU.

        Raises:
            CheckpointError: a model's logits hold NaN or Inf (damaged weights), a model raised while it ran, or
                it ran out of memory on a single slice.
            InputError: ``x`` itself holds NaN or Inf.
        """
        try:
            return self._probabilities(x, source)
        except _OutOfMemory as exc:
            if x.shape[0] == 1:
                raise CheckpointError(exc.single_slice) from exc
        _release_cached_memory(self.device)
        half = (x.shape[0] + 1) // 2
        if self.batch_size is None or self.batch_size > half:
            logger.warning("mdanet-sdk: the model ran out of memory on %d slices at once; now %d.", len(x), half)
            self.batch_size = half
        parts, start = [], 0
        while start < len(x):  # at the size that fits now, which a part that runs out of memory lowers again
            size = self.batch_size
            parts.append(self.probabilities(x[start : start + size], source))
            start += size
        return torch.cat(parts)

    def _probabilities(self, x: torch.Tensor, source: str) -> torch.Tensor:
        """:meth:`probabilities` of one batch as given (raises :class:`_OutOfMemory`)."""
        x = self._staging.to_device(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # One finiteness flag per model, read once after the un-flipped passes and once after the flips: one device
        # sync each, not one per forward.
        passes = [self._forward(model, x, []) for model in self.models]
        plain = [lesion for lesion, _ in passes]
        finite = [ok for _, ok in passes]
        self._check_finite(finite, x, source)
        total = torch.stack(plain).mean(dim=0)
        flips = tta_flips(self.settings.tta)[1:]
        screened = self._screened(total) if flips else None
        if flips and (screened is None or screened.numel()):
            sub = x if screened is None else x[screened]
            flipped = torch.zeros((sub.shape[0], *x.shape[2:]), dtype=torch.float32, device=self.device)
            for i, (model, first) in enumerate(zip(self.models, plain)):
                flipped += first if screened is None else first[screened]
                for dims in flips:
                    lesion, ok = self._forward(model, sub.flip(dims), dims)
                    flipped += lesion
                    finite[i] = finite[i] & ok
            self._check_finite(finite, x, source)
            flipped /= len(self.models) * (len(flips) + 1)
            if screened is None:
                total = flipped
            else:
                total[screened] = flipped
        return total.cpu()

    def _check_finite(self, finite: list[torch.Tensor], x: torch.Tensor, source: str) -> None:
        """Refuse the first model whose logits were not all finite: NaN logits give NaN probabilities, which pass
        no threshold, a silent "0 lesions"."""
        flags = torch.stack(finite).cpu()
        if not flags.all():
            self._refuse_non_finite(x, self.names[int((~flags).nonzero()[0])], source)

    def _forward(
        self, model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, dims: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probability (B, H, W) flipped back along dims, whether the logits are all finite)``."""
        try:
            with autocast(self.device, self.precision):
                logits = model(x)
        except MDANetError:
            raise
        except (RuntimeError, torch.jit.Error) as exc:  # out of memory, or an exported program's own raise
            if is_out_of_memory(exc):
                raise _OutOfMemory(_what(exc)) from exc
            raise CheckpointError(
                f"the model failed while it ran ({_what(exc)}); its file is damaged or not made by this "
                "mdanet-sdk: re-export or re-download it."
            ) from exc
        lesion = lesion_probability(logits)
        return (lesion.flip(dims) if dims else lesion), torch.isfinite(logits).all()

    def _screened(self, plain: torch.Tensor) -> torch.Tensor | None:
        """Indices of the slices whose un-flipped probability ``plain (B, H, W)`` (the models' mean) reaches the
        screen; ``None``: every slice (no screen, or every slice passes it)."""
        if not self.tta_screen:
            return None
        peak = plain.flatten(1).amax(dim=1)
        passed = torch.nonzero(peak >= self.tta_screen * self.settings.threshold).flatten()
        return None if passed.numel() == plain.shape[0] else passed

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
        for start, last in stack.runs():
            while start < last:  # cut at the size that fits now (a batch that ran out of memory lowers it)
                end = min(last, start + self.batch_for((stack.shape[2], stack.shape[3])))
                x = torch.from_numpy(stack.chunk(start, end))
                restore_probability_into(out, self.probabilities(x, source).numpy(), stack.geometry, start)
                start = end
        return out

    def mask(
        self,
        probability: np.ndarray,
        images: Mapping[str, np.ndarray],
        head: np.ndarray | None = None,
        parenchyma: np.ndarray | None = None,
    ) -> np.ndarray:
        """The post-processed uint8 ``(X, Y, Z)`` mask of a native-grid probability map
        (:meth:`PostprocessConfig.apply`; ``head`` and ``parenchyma`` from the case's :class:`SliceGeometry`);
        ``images`` (modality -> ``(X, Y, Z)``) supply the ADC for the gate."""
        return self.settings.apply(probability, images.get("adc"), head, parenchyma)


class _OutOfMemory(Exception):
    """A forward pass ran out of memory; :meth:`Predictor.probabilities` splits the batch and runs it again."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.single_slice = (
            f"the model ran out of memory on a single slice ({what}); free memory, or run on a device with more "
            "(--device, device=), then run again."
        )


def _release_cached_memory(device: torch.device) -> None:
    """Return the blocks the failed pass left in PyTorch's CUDA cache before the halves run."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _what(exc: Exception) -> str:
    """Torch's own line of an error raised while a model ran (the last of a TorchScript traceback), escaped and
    cut short, since an exported program can raise text of its own choosing."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or ["no message"]
    return printable(lines[-1] if "Traceback of TorchScript" in str(exc) else lines[0])[:160]


def check_run_options(batch_size: Any, prefetch: Any, tta_screen: Any) -> None:
    """The one rule for a Segmenter's (and ``segment()``'s) ``batch_size`` (``None``: chosen from the model
    grid's footprint), ``prefetch`` (whole numbers >= 1) and ``tta_screen`` (True or False)."""
    for name, value in (("batch_size", batch_size), ("prefetch", prefetch)):
        if name == "batch_size" and value is None:
            continue
        if not is_whole(value) or value < 1:
            raise InputError(f"{name} must be a whole number >= 1, got {value!r:.40}.")
    if not is_flag(tta_screen):
        raise InputError(f"tta_screen must be True or False, got {tta_screen!r:.40}.")
