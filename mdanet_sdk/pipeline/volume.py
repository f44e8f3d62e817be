"""A whole case in, its mask out: the network with the package's pre- and post-processing, for export.

:class:`VolumePipeline` wraps a captured network (``forward`` is the network's, so the artefact still maps
slices to logits) and adds :meth:`VolumePipeline.segment`, which does for one case given as arrays in their
stored voxel order with their affine what ``mdanet-sdk segment`` does for files: reorient to RAS+ (nibabel's
rule), head mask or the given brain mask, normalisation, slices on the model grid, lesion probability (with
test-time flips), back to the native grid, threshold, lesion size and ADC gate, and back to the stored order.
Every step is a function of this package (:mod:`.orientation`, :mod:`.intensity`, :mod:`.slicing`,
:mod:`.lesions`) that the Python Segmenter calls too; the artefact carries them scripted, so the C API
(``mdanet_segment_volume``) runs the same code without Python.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from mdanet_sdk.pipeline.intensity import head_support, normalize_volumes
from mdanet_sdk.pipeline.lesions import postprocess
from mdanet_sdk.pipeline.orientation import from_canonical, io_orientation, to_canonical
from mdanet_sdk.pipeline.slicing import (
    box_shape,
    head_box,
    lesion_support,
    lowest_values,
    model_grid,
    restore_probability_range,
    slice_runs,
    to_model_grid,
)

__all__ = ["VolumePipeline", "tta_flips", "lesion_probability"]


def tta_flips(tta: bool) -> List[List[int]]:
    """The axes of each test-time flip of ``(B, C, H, W)`` slices: none, H, W, both; none alone without TTA."""
    none: List[int] = []
    if tta:
        return [none, [-2], [-1], [-2, -1]]
    return [none]


def lesion_probability(logits: Tensor) -> Tensor:
    """Lesion probability ``(B, H, W)`` (float32 softmax of class 1) of logits ``(B, K, H, W)``."""
    return logits.to(torch.float32).softmax(dim=1)[:, 1]


class VolumePipeline(nn.Module):
    """A captured network plus the whole-case pipeline, scripted into TorchScript artefacts.

    Args:
        network: the captured network ``(B, C, H, W) -> logits (B, K, H, W)`` (traced).
        modalities: its input modalities in channel order.
        preprocess: the checkpoint's preprocessing (``PreprocessConfig.to_dict()``).
        postprocess: the recommended post-processing (``PostprocessConfig.to_dict()``).
        batch: ``(min, max)`` batch the network was captured for.
        dtype: the dtype the network computes in.
        max_slices: most slices along Z a case may hold (:data:`mdanet_sdk.data.preprocess.MAX_SLICES`).
        max_inf_share, max_abs_value: the share of infinite voxels and the magnitude an image may not exceed
            (:data:`mdanet_sdk.data.validate.MAX_INF_SHARE`, ``MAX_ABS_VALUE``), so the C API refuses what
            ``mdanet-sdk segment`` refuses.
    """

    def __init__(
        self,
        network: nn.Module,
        modalities: List[str],
        preprocess: dict,
        postprocess: dict,
        batch: Tuple[int, int],
        dtype: torch.dtype,
        max_slices: int = 2048,
        max_inf_share: float = 0.01,
        max_abs_value: float = 1e20,
    ) -> None:
        super().__init__()
        self.network = network
        self.modalities = modalities
        size = preprocess.get("size")
        self.size: Optional[int] = None if size is None else int(size)
        self.multiple = int(preprocess.get("multiple", 16))
        self.normalization = str(preprocess.get("normalization", "zscore"))
        self.head_fill = float(preprocess.get("head_fill", 0.0))
        clip = preprocess.get("clip_percentiles", (0.5, 99.5))
        self.clip_low, self.clip_high = float(clip[0]), float(clip[1])
        self.tta = bool(postprocess["tta"])
        self.threshold = float(postprocess["threshold"])
        self.min_size = int(postprocess["min_size"])
        self.max_adc_ratio = float(postprocess["max_adc_ratio"])
        self.batch_min, self.batch_max = int(batch[0]), int(batch[1])
        self.dtype = dtype
        self.max_slices = int(max_slices)
        self.max_inf_share, self.max_abs_value = float(max_inf_share), float(max_abs_value)
        # Where the network's weights are (torch.jit.load's map_location moves it with them).
        self.register_buffer("anchor", torch.zeros(0, dtype=dtype), persistent=True)

    def forward(self, x: Tensor) -> Tensor:
        """The network's logits ``(B, K, H, W)`` for slices ``(B, C, H, W)``."""
        return self.network(x)

    def _logits(self, x: Tensor) -> Tensor:
        """Logits of any number of slices, in chunks of the captured batch range (padded up to its minimum)."""
        outputs: List[Tensor] = []
        for chunk in x.split(self.batch_max):
            n = chunk.shape[0]
            chunk = chunk.to(self.anchor.device, self.dtype)
            if n < self.batch_min:
                pad = torch.zeros([self.batch_min - n] + list(chunk.shape[1:]), dtype=chunk.dtype, device=chunk.device)
                chunk = torch.cat([chunk, pad])
            outputs.append(self.network(chunk)[:n].to(torch.float32))
        return torch.cat(outputs)

    def probability(self, x: Tensor, tta: bool) -> Tensor:
        """Lesion probability ``(B, H, W)`` of model-grid slices, averaged over the flips (``tta``)."""
        flips = tta_flips(tta)
        total = torch.zeros([x.shape[0], x.shape[2], x.shape[3]], dtype=torch.float32)
        for dims in flips:
            flipped = x.flip(dims) if len(dims) > 0 else x
            lesion = lesion_probability(self._logits(flipped)).cpu()
            if not bool(torch.isfinite(lesion).all().item()):
                raise RuntimeError("the model produced NaN/Inf: its weights are damaged; re-train or re-export it")
            total += lesion.flip(dims) if len(dims) > 0 else lesion
        return total / float(len(flips))

    def _check(self, volumes: Tensor, affine: Tensor, brain_mask: Optional[Tensor]) -> None:
        """Refuse what ``mdanet-sdk segment`` refuses, as ValueError (the C API's MDANET_INVALID_ARGUMENT)."""
        if volumes.dim() != 4 or volumes.shape[0] != len(self.modalities):
            raise ValueError(
                "volumes must be (C, X, Y, Z) with C = "
                + str(len(self.modalities))
                + " modalities ("
                + ", ".join(self.modalities)
                + ")"
            )
        if volumes.shape[3] > self.max_slices:
            raise ValueError("the volume holds more than " + str(self.max_slices) + " slices along Z; crop it")
        if affine.shape != [4, 4] or not bool(torch.isfinite(affine).all().item()):
            raise ValueError("affine must be a finite 4x4 voxel-to-world matrix")
        if abs(float(torch.linalg.det(affine[:3, :3].to(torch.float64)).item())) < 1e-12:
            raise ValueError("the affine is degenerate (singular); fix its qform/sform")
        for c in range(volumes.shape[0]):
            name = self.modalities[c]
            finite = volumes[c][torch.isfinite(volumes[c])]
            if finite.numel() == 0 or bool((finite == finite[0]).all().item()):
                raise ValueError("the " + name + " image is empty or constant; give the real image")
            if int(torch.isinf(volumes[c]).sum().item()) > self.max_inf_share * volumes[c].numel():
                share = str(100.0 * self.max_inf_share)
                raise ValueError("more than " + share + " % of the " + name + " image is infinite; re-export it")
            if float(finite.abs().max().item()) > self.max_abs_value:
                limit = str(self.max_abs_value)
                raise ValueError("the " + name + " image holds values above " + limit + ": damaged or badly scaled")
            for d in range(c):
                if bool(torch.equal(volumes[c], volumes[d])):
                    raise ValueError(
                        "the " + self.modalities[d] + " and " + name + " images are identical; give each its own image"
                    )
        if brain_mask is not None:
            if brain_mask.shape != volumes.shape[1:]:
                raise ValueError("the brain mask must be on the images' grid (X, Y, Z)")
            if not bool((brain_mask != 0).any().item()):
                raise ValueError("the brain mask is empty; give a mask of the brain or none")

    @torch.jit.export
    def segment(
        self,
        volumes: Tensor,
        affine: Tensor,
        brain_mask: Optional[Tensor],
        threshold: float,
        min_size: int,
        max_adc_ratio: float,
        tta: bool,
        batch_size: int,
    ) -> Tuple[Tensor, Tensor]:
        """Mask and lesion probability of one case.

        Args:
            volumes: float32 ``(C, X, Y, Z)``, the modalities in :attr:`modalities` order, in their stored voxel
                order; NaN/Inf voxels are taken as 0 (as ``mdanet-sdk segment`` repairs them).
            affine: ``(4, 4)`` voxel-to-world matrix (float64) of that order.
            brain_mask: optional ``(X, Y, Z)`` (non-zero = brain) in the same order, replacing the head mask.
            threshold, min_size, max_adc_ratio, tta: the post-processing (:attr:`threshold` ... recommend).
            batch_size: slices per forward pass (at most the captured maximum is run at once).

        Returns:
            ``(mask uint8 (X, Y, Z), probability float32 (X, Y, Z))`` in the stored voxel order.
        """
        self._check(volumes, affine, brain_mask)
        if max_adc_ratio > 0 and "adc" not in self.modalities:
            raise ValueError("max_adc_ratio needs a model with an adc input; set it to 0")
        ornt = io_orientation(affine)
        canonical = to_canonical(torch.nan_to_num(volumes.to(torch.float32), 0.0, 0.0, 0.0).permute(1, 2, 3, 0), ornt)
        images: List[Tensor] = [canonical[..., c].contiguous() for c in range(canonical.shape[3])]
        if brain_mask is not None:
            head = to_canonical(brain_mask, ornt) != 0
        else:
            head = head_support(images, self.modalities)[0]
        normalised, _, parenchyma = normalize_volumes(
            images, head, self.normalization, self.clip_low, self.clip_high, self.modalities
        )
        shape = list(images[0].shape)
        fill, least = 0.0, 0
        size = self.size
        if size is not None:  # without resampling the network sees stored voxels: nothing to crop
            fill, least = self.head_fill, size
        box = head_box(head, fill, least)
        inner = box_shape(box)
        resampled, padded, offset = model_grid([inner[0], inner[1], shape[2]], self.size, self.multiple)
        lowest = lowest_values(normalised)
        support = lesion_support(head, brain_mask is not None)
        probability = torch.zeros(shape, dtype=torch.float32)  # slices without head stay 0, unpredicted
        for start, end in slice_runs(support, shape[2], batch_size):
            x = to_model_grid(normalised, lowest, start, end, box, resampled, padded, offset)
            probability[..., start:end] = restore_probability_range(
                self.probability(x, tta), shape[:2], box, resampled, offset, support[..., start:end]
            )
        adc: Optional[Tensor] = None
        if max_adc_ratio > 0 and "adc" in self.modalities:
            adc = torch.where(head, images[self.modalities.index("adc")], torch.zeros_like(images[0]))
        mask = postprocess(probability, threshold, min_size, adc, max_adc_ratio, parenchyma)
        return from_canonical(mask, ornt).contiguous(), from_canonical(probability, ornt).contiguous()
