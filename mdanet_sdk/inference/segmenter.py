"""Segment stroke lesions with trained MDANet weights: the :class:`Segmenter`.

One core runs every entry point (:meth:`Segmenter.predict`, :meth:`Segmenter.predict_arrays`,
:meth:`Segmenter.predict_many`):

1. a background thread reads each case (:func:`mdanet_sdk.data.cases.read_case`) and normalises it with the
   checkpoint's :class:`~mdanet_sdk.data.preprocess.PreprocessConfig` (the one implementation training used)
   into a lazy :class:`~mdanet_sdk.data.preprocess.SliceStack`, and hands it over through a bounded queue, so
   loading the next case overlaps with the model's work;
2. the calling thread cuts the slices ``(Z, C, H, W)`` of consecutive cases into batches (slices of several
   cases share a batch when their in-plane size agrees), makes each batch's slices on the model grid only
   when it runs, and runs every model (fold ensemble) on every flip (test-time augmentation) under
   :func:`torch.inference_mode`, averaging the softmax lesion probabilities; logits with NaN/Inf (damaged
   weights) raise :class:`~mdanet_sdk.errors.CheckpointError` instead of reporting an empty mask;
3. each batch's probabilities are restored to their case's native grid right away
   (:func:`~mdanet_sdk.data.preprocess.restore_probability_into`; :mod:`mdanet_sdk.pipeline` does 1-3); each
   finished case is thresholded, cleaned of lesions smaller than ``min_size`` voxels (26-connectivity) and,
   for MRI models with ``max_adc_ratio`` set, of lesions without restricted diffusion (:func:`postprocess`),
   summarised in a :class:`~mdanet_sdk.report.CaseReport` and yielded; :meth:`SegmentationResult.save`
   writes it back in the input's own orientation and geometry (:func:`~mdanet_sdk.data.nifti.save_like`).

Cases are yielded one by one in input order, and at most ``prefetch`` loaded cases wait in the queue, so
memory does not grow with the number of cases; within a case it is O(native volume + one batch on the model
grid), so it does not grow with the model grid times the number of slices either (at most
:data:`~mdanet_sdk.data.preprocess.MAX_SLICES` slices are accepted).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from mdanet_sdk.config import MODALITY_GROUPS
from mdanet_sdk.data.cases import BRAIN_MASK_KEY, Case, CaseSource, read_case
from mdanet_sdk.data.nifti import NIFTI_SUFFIXES, Volume, save_like, to_original
from mdanet_sdk.data.validate import check_image
from mdanet_sdk.data.preprocess import (
    NOT_SKULL_STRIPPED,
    PreprocessConfig,
    SliceGeometry,
    slice_stack,
)
from mdanet_sdk.errors import BackendUnavailableError, CheckpointError, InputError, MDANetError
from mdanet_sdk.metrics import dsc, label_lesions
from mdanet_sdk.pipeline import CaseStream, Loaded, Pending
from mdanet_sdk.report import OVERLAY_MODALITIES, CaseReport, lesion_stats, save_overlay
from mdanet_sdk.train.checkpoint import Checkpoint, load_checkpoint

__all__ = [
    "Segmenter",
    "SegmentationResult",
    "FailedCase",
    "CaseInput",
    "resolve_device",
    "resolve_precision",
    "remove_small_lesions",
    "keep_restricted_lesions",
    "adc_in_head",
    "tissue_adc",
    "postprocess",
    "choose_postprocessing",
    "POSTPROCESSING_DEFAULTS",
    "refuse_single_3d",
    "volume_count",
    "kind_for_modalities",
    "BUNDLED_MODALITIES",
]

logger = logging.getLogger(__name__)

#: What :meth:`Segmenter.predict` accepts: a path (4D NIfTI, case folder), a mapping modality → path, a
#: :class:`~mdanet_sdk.data.cases.CaseSource` or an already loaded :class:`~mdanet_sdk.data.cases.Case`.
CaseInput = Union[str, os.PathLike, Mapping[str, Union[str, os.PathLike]], CaseSource, Case]

#: Modalities of the bundled weights (``default-mri``, ``default-ctp``) in channel order; a 4D file with 2
#: volumes is read as the first, one with 4 volumes as the second.
BUNDLED_MODALITIES: dict[str, tuple[str, ...]] = {k: g[0] + g[1] for k, g in MODALITY_GROUPS.items()}
_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Flip sets of the test-time augmentation, as tensor dims of (B, C, H, W): none, H, W, both.
_TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-2,), (-1,), (-2, -1))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for ``device``: ``"auto"`` is CUDA when available, else CPU.

    Raises:
        BackendUnavailableError: CUDA was asked for but is not available.
        InputError: ``device`` is not a device name.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N.") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device {device!r} was asked for but CUDA is not available; use cpu or auto.")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"fp32"``, ``"fp16"`` or ``"bf16"``; ``"auto"`` is bf16 (fp16 where unsupported) on CUDA, fp32 on CPU."""
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision not in _PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use auto, fp32, fp16 or bf16.")
    return precision


def remove_small_lesions(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Drop connected lesions (26-connectivity) of fewer than ``min_size`` voxels.

    Args:
        mask: ``(X, Y, Z)`` binary mask.
        min_size: smallest lesion kept, in voxels; ``<= 1`` keeps everything.

    Returns:
        uint8 ``(X, Y, Z)`` mask.
    """
    mask = np.asarray(mask).astype(np.uint8)
    if min_size <= 1 or not mask.any():
        return mask
    labels, _ = label_lesions(mask)
    keep = np.bincount(labels.ravel()) >= min_size
    keep[0] = False
    return keep[labels].astype(np.uint8)


def tissue_adc(adc: np.ndarray) -> float:
    """The case's parenchymal ADC: the median over brain voxels (``ADC > 0``) after dropping CSF.

    CSF (ADC ~3e-3 mm²/s, about 4x tissue) would pull a plain median up by an amount that depends on atrophy,
    so voxels above 1.5x the plain median are left out first. Unit-free: the ratio to it is what is used.

    Args:
        adc: ``(X, Y, Z)`` ADC map, any unit; ``<= 0`` outside the brain (skull-stripped, as ISLES is).

    Returns:
        the reference ADC in the map's unit (0.0 for a map without positive voxels).
    """
    values = adc[adc > 0]
    if values.size == 0:
        return 0.0
    return float(np.median(values[values <= 1.5 * np.median(values)]))


def adc_in_head(adc: np.ndarray, head: np.ndarray) -> np.ndarray:
    """The ADC map with 0 outside ``head``, as :func:`tissue_adc` expects (a noisy background around an ADC
    map that is not skull-stripped would otherwise drag the tissue reference down). The Segmenter and the
    choice of post-processing both gate through it."""
    return np.where(head, adc, 0.0)


def keep_restricted_lesions(mask: np.ndarray, adc: np.ndarray, max_ratio: float) -> np.ndarray:
    """Keep only the lesions that show restricted diffusion, as acute infarcts do.

    A connected lesion (26-connectivity) stays when its median ADC is at most ``max_ratio`` times the case's
    parenchymal ADC (:func:`tissue_adc`); DWI-bright look-alikes with normal ADC (T2 shine-through,
    susceptibility at the skull base) go. Acute infarcts lower ADC by 30-60 %, hence ratios around 0.75-0.85.

    Args:
        mask: ``(X, Y, Z)`` binary mask.
        adc: ``(X, Y, Z)`` ADC map on the same grid.
        max_ratio: the gate; ``<= 0`` keeps everything.

    Returns:
        uint8 ``(X, Y, Z)`` mask.
    """
    mask = np.asarray(mask).astype(np.uint8)
    if max_ratio <= 0 or not mask.any():
        return mask
    return _restricted(mask, *_lesion_adc_ratios(mask, adc, tissue_adc(adc)), max_ratio)


def _lesion_adc_ratios(
    mask: np.ndarray, adc: np.ndarray, reference: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """Lesion labels and, per label (index 0 = background, ratio inf), median ADC / ``reference``;
    ``None`` for an empty mask or a map without tissue (``reference <= 0``)."""
    labels, n = label_lesions(mask)
    if reference <= 0 or n == 0:
        return labels, None
    median = np.asarray(ndimage.median(adc, labels, np.arange(1, n + 1)), dtype=np.float64)
    return labels, np.concatenate([[np.inf], median / reference])


def _restricted(mask: np.ndarray, labels: np.ndarray, ratios: np.ndarray | None, max_ratio: float) -> np.ndarray:
    """``mask`` without the lesions whose ADC ratio exceeds ``max_ratio`` (all of it when ``ratios`` is None)."""
    return mask if ratios is None else (ratios <= max_ratio)[labels].astype(np.uint8)


def postprocess(
    probability: np.ndarray,
    threshold: float,
    min_size: int = 0,
    adc: np.ndarray | None = None,
    max_adc_ratio: float = 0.0,
) -> np.ndarray:
    """Probability map → mask: threshold, drop lesions under ``min_size`` voxels, then (with an ADC map and
    ``max_adc_ratio > 0``) drop lesions without restricted diffusion (:func:`keep_restricted_lesions`).

    Returns:
        uint8 ``(X, Y, Z)`` mask.
    """
    mask = remove_small_lesions(probability > threshold, min_size)
    if adc is not None and max_adc_ratio > 0:
        mask = keep_restricted_lesions(mask, adc, max_adc_ratio)
    return mask


#: Post-processing when neither the caller nor the checkpoint's ``meta["inference"]`` says otherwise.
POSTPROCESSING_DEFAULTS: dict[str, Any] = {"tta": False, "threshold": 0.5, "min_size": 0, "max_adc_ratio": 0.0}


def choose_postprocessing(
    probabilities: Mapping[bool, Sequence[np.ndarray]],
    labels: Sequence[np.ndarray],
    thresholds: Sequence[float] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
    min_sizes: Sequence[int] = (0, 5, 10, 20),
    tolerance: float = 0.005,
    adc: Sequence[np.ndarray] | None = None,
    max_adc_ratios: Sequence[float] = (0.9, 0.85, 0.8, 0.75, 0.7),
) -> tuple[dict[str, Any], float]:
    """Pick test-time augmentation, threshold, minimum lesion size and (given ADC maps) the restricted-diffusion
    gate on held-out cases (as nnU-Net picks its post-processing on validation folds), to be stored in a
    checkpoint's ``meta["inference"]``.

    Every combination is scored by the mean per-case DSC; the cheapest one within ``tolerance`` of the best
    wins, cheapest meaning no TTA (4x faster) before TTA, then the threshold nearest 0.5, then the smaller
    ``min_size``, then no gate before the loosest one, so a setting is only moved off the defaults when that pays.

    Args:
        probabilities: for ``False`` (no TTA) and optionally ``True`` (TTA), the lesion probability
            ``(X, Y, Z)`` of each held-out case.
        labels: the reference masks ``(X, Y, Z)``, in the same order.
        thresholds: candidate probability thresholds.
        min_sizes: candidate minimum lesion sizes in voxels.
        tolerance: DSC a cheaper setting may lose against the best.
        adc: the ADC map ``(X, Y, Z)`` of each case, to try the gate of :func:`keep_restricted_lesions`.
        max_adc_ratios: candidate gates (tried only with ``adc``).

    Returns:
        ``({"tta", "threshold", "min_size", "max_adc_ratio"}, mean DSC)`` of the chosen setting
        (``max_adc_ratio`` 0.0: no gate).
    """
    if not labels or any(len(p) != len(labels) for p in probabilities.values()):
        raise InputError("choose_postprocessing needs one probability map per label for every TTA setting.")
    if adc is not None and len(adc) != len(labels):
        raise InputError("choose_postprocessing needs one ADC map per label.")
    gates = [0.0, *sorted(max_adc_ratios, reverse=True)] if adc is not None else [0.0]
    references = [tissue_adc(a) for a in adc] if adc is not None else []
    scores: dict[tuple[bool, float, int, float], float] = {}
    for tta in sorted(probabilities):
        for threshold in sorted(thresholds, key=lambda t: abs(t - 0.5)):
            for min_size in sorted(min_sizes):
                per_case = np.empty((len(labels), len(gates)))
                for i, (p, y) in enumerate(zip(probabilities[tta], labels)):
                    mask = remove_small_lesions(p > threshold, min_size)
                    lesions, ratios = _lesion_adc_ratios(mask, adc[i], references[i]) if references else (mask, None)
                    for g, gate in enumerate(gates):
                        per_case[i, g] = dsc(mask if gate <= 0 else _restricted(mask, lesions, ratios, gate), y)
                for g, gate in enumerate(gates):
                    scores[(tta, threshold, min_size, gate)] = float(per_case[:, g].mean())
    best = max(scores.values())
    (tta, threshold, min_size, gate), score = next((k, v) for k, v in scores.items() if v >= best - tolerance)
    return {"tta": tta, "threshold": threshold, "min_size": min_size, "max_adc_ratio": gate}, score


@dataclass
class SegmentationResult:
    """The segmentation of one case.

    ``mask`` and ``probability`` are in the input's own voxel order (the stored order of its files, or the
    order of the arrays given to :meth:`Segmenter.predict_arrays`), so they line up with ``affine``.

    Attributes:
        case: the loaded input (canonical images, and the reference geometry in ``case.reference``).
        mask_canonical: uint8 ``(X, Y, Z)`` mask in canonical RAS+ order.
        probability_canonical: float32 ``(X, Y, Z)`` lesion probability in canonical RAS+ order.
        report: volumes, counts, runtime and model of this case.
    """

    ok: ClassVar[bool] = True

    case: Case
    mask_canonical: np.ndarray
    probability_canonical: np.ndarray
    report: CaseReport

    @property
    def case_id(self) -> str:
        return self.case.case_id

    @cached_property
    def mask(self) -> np.ndarray:
        """uint8 binary mask, same shape and voxel order as the input."""
        return to_original(self.mask_canonical, self.case.reference)

    @cached_property
    def probability(self) -> np.ndarray:
        """float32 lesion probability in [0, 1], same shape and voxel order as the input."""
        return to_original(self.probability_canonical, self.case.reference)

    @property
    def affine(self) -> np.ndarray:
        """The input's 4x4 voxel-to-world affine (that of :attr:`mask` and :attr:`probability`)."""
        return self.case.reference.original_affine

    def save(
        self, mask_path: str | os.PathLike[str], prob_path: str | os.PathLike[str] | None = None
    ) -> tuple[Path, Path | None]:
        """Write the mask (uint8) and optionally the probability map (float32) with the input's geometry.

        Both files get the input's affine, orientation and header (qform/sform codes kept). Writes are atomic,
        and if the probability map cannot be written the mask just written is removed again, so a failure
        leaves no partial output.

        Returns:
            ``(mask_path, prob_path or None)``.
        """
        mask_path = save_like(self.mask_canonical, self.case.reference, mask_path, kind="mask")
        if prob_path is None:
            return mask_path, None
        try:
            return mask_path, save_like(self.probability_canonical, self.case.reference, prob_path, kind="prob")
        except BaseException:
            mask_path.unlink(missing_ok=True)
            raise

    def save_overlay(self, path: str | os.PathLike[str], modality: str | None = None) -> Path:
        """Write a PNG montage of the lesion outline over ``modality`` (default: DWI, else Tmax, else CBF).

        See :func:`mdanet_sdk.report.save_overlay` for which slices are shown.
        """
        images = self.case.images
        if modality is None:
            modality = next((m for m in OVERLAY_MODALITIES if m in images), next(iter(images)))
        if modality not in images:
            raise InputError(f"case {self.case_id} has no {modality!r} image; choose one of {', '.join(images)}.")
        r = self.report
        title = (
            f"{self.case_id} - {modality.upper()} - lesion {r.lesion_volume_ml:.1f} mL, "
            f"{r.n_lesions} lesion{'s' if r.n_lesions != 1 else ''}"
        )
        return save_overlay(
            images[modality], self.mask_canonical, path, zooms=self.case.reference.zooms, title=title
        )


@dataclass
class FailedCase:
    """A case that could not be segmented (yielded by ``predict_many(..., errors="yield")``).

    Attributes:
        case_id: the case's id, or the input's name when it could not be read far enough to know it.
        error: one sentence saying what is wrong.
        exception: the error raised.
    """

    ok: ClassVar[bool] = False

    case_id: str
    error: str
    exception: MDANetError = field(repr=False)


def _input_name(item: Any) -> str:
    """A readable name for an input, used before its case id is known."""
    if isinstance(item, (Case, CaseSource)):
        return item.case_id
    if isinstance(item, Mapping):
        item = next(iter(item.values()), "mapping")
    name = Path(item).name
    for suffix in NIFTI_SUFFIXES[::-1]:
        name = name.removesuffix(suffix)
    return name or str(item)


def volume_count(path: str | os.PathLike[str]) -> int | None:
    """Volumes on the last axis of a NIfTI file from its header alone (1 for 3D); ``None`` if unreadable."""
    try:
        shape = nib.load(path).shape
    except Exception:  # noqa: BLE001 - unreadable files get data.nifti.load_volume's precise message later
        return None
    return int(shape[3]) if len(shape) == 4 else 1 if len(shape) == 3 else None


def kind_for_modalities(modalities: Iterable[str]) -> str | None:
    """``"mri"`` or ``"ctp"`` when ``modalities`` are exactly those of the bundled weights of that kind."""
    names = set(modalities)
    return next((kind for kind, mods in BUNDLED_MODALITIES.items() if set(mods) == names), None)


def refuse_single_3d(path: Path, modalities: Sequence[str]) -> None:
    """Raise InputError when ``path`` is one 3D volume: a multimodal model needs one file per modality.

    The message says which modalities are needed and how to pass them (CLI ``-m`` options or a mapping).
    """
    if path.is_file() and volume_count(path) == 1:
        example = " ".join(f"-m {m}={m}.nii.gz" for m in modalities)
        mapping = ", ".join(f"'{m}': '{m}.nii.gz'" for m in modalities)
        raise InputError(
            f"{path} is a single 3D volume but the model needs {', '.join(modalities)}; give one file per "
            f"modality (CLI: {example}; Python: predict({{{mapping}}})) or one 4D file with a volume per "
            "modality."
        )


def _case_from_arrays(images: Mapping[str, np.ndarray], affine: np.ndarray, case_id: str) -> Case:
    """A :class:`Case` from ``(X, Y, Z)`` arrays in the caller's voxel order and their affine."""
    if not isinstance(images, Mapping):
        raise InputError(
            f"images must be a mapping modality -> (X, Y, Z) array, e.g. {{'dwi': dwi, 'adc': adc}}; got a "
            f"{type(images).__name__}."
        )
    arrays = {str(m).lower(): np.asarray(a) for m, a in images.items()}
    brain_mask = arrays.pop(BRAIN_MASK_KEY, None)
    if not arrays:
        raise InputError("no image given; pass a mapping modality -> (X, Y, Z) array.")
    shapes = {m: a.shape for m, a in arrays.items()}
    first = next(iter(arrays.values()))
    if first.ndim != 3 or len(set(shapes.values())) != 1:
        raise InputError(f"every image must be one 3D array of the same shape; got {shapes}.")
    try:
        affine = np.asarray(affine, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"affine must be a 4x4 matrix of numbers; got {type(affine).__name__}.") from None
    if affine.shape != (4, 4) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError("affine must be a finite, invertible 4x4 voxel-to-world matrix (mm).")
    warnings = []
    canonical = {}
    if brain_mask is not None:
        if brain_mask.shape != first.shape:
            raise InputError(
                f"the brain mask has shape {brain_mask.shape}; it must be on the images' grid {first.shape}."
            )
        mask_image = nib.Nifti1Image((brain_mask != 0).astype(np.uint8), affine)
        brain_mask = np.asarray(nib.as_closest_canonical(mask_image).dataobj) != 0
    for name, array in arrays.items():
        array, repaired = check_image(array, name)  # the checks and repairs of data.nifti.load_volume
        warnings += repaired
        # nibabel's own reorientation, the same io_orientation that data.nifti.to_original inverts.
        canonical[name] = nib.as_closest_canonical(nib.Nifti1Image(array, affine))
    images = {name: np.ascontiguousarray(img.dataobj, dtype=np.float32) for name, img in canonical.items()}
    first_name = next(iter(images))
    ref = Volume(
        data=images[first_name],
        affine=canonical[first_name].affine,
        header=nib.Nifti1Image(first.astype(np.float32), affine).header,
        original_affine=affine,
        original_shape=tuple(int(n) for n in first.shape),
        orientation=tuple(nib.aff2axcodes(affine)),
        warnings=list(warnings),
    )
    return Case(case_id, images, None, ref, warnings, brain_mask)


class Segmenter:
    """Lesion segmentation with one checkpoint, or a fold ensemble of compatible checkpoints.

    Build it with :meth:`from_checkpoint` or :meth:`default`; then :meth:`predict`, :meth:`predict_arrays`
    or :meth:`predict_many`.

    Args:
        checkpoints: loaded checkpoints; several are a fold ensemble and must share the model's modalities
            and the preprocessing.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        precision: ``"auto"`` (bf16, or fp16 where unsupported, on CUDA; fp32 on CPU), ``"fp32"``,
            ``"fp16"``, ``"bf16"`` (autocast; probabilities are always computed in fp32).
        batch_size: slices per forward pass.
        tta: average over the 4 in-plane flips (none, H, W, both).
        threshold: a voxel is lesion when its probability is above this.
        min_size: lesions of fewer voxels are removed (26-connectivity); 0 keeps all.
        max_adc_ratio: lesions whose median ADC is above this multiple of the case's parenchymal ADC are
            removed (:func:`keep_restricted_lesions`; models with an ``adc`` input); 0 keeps all.
            ``tta``, ``threshold``, ``min_size`` and ``max_adc_ratio`` left at ``None`` take the values the
            (first) checkpoint recommends in ``meta["inference"]`` (see :func:`choose_postprocessing`), else
            ``False``, ``0.5``, ``0``, ``0``.
        prefetch: cases loaded ahead by the background thread.
        ops: implementation of the MDANet operators: ``"auto"`` (native kernels when built), ``"native"``,
            ``"reference"`` (pure PyTorch); it changes speed, not results beyond float rounding.
        models: already loaded networks ``(B, C, H, W) -> logits``, one per checkpoint, used instead of
            building them from the checkpoints (:meth:`from_exported` passes an export artefact).

    Attributes:
        device: the :class:`torch.device` used (also logged at INFO level).
        precision: the precision used.
        modalities: the model's input modalities in channel order, e.g. ``("dwi", "adc")``.
        model_config: the :class:`~mdanet_sdk.config.MDANetConfig` of the (first) checkpoint.
        preprocess: the checkpoint's :class:`~mdanet_sdk.data.preprocess.PreprocessConfig`.
        name: the checkpoint name(s), e.g. ``"default-mri"`` or ``"fold0+fold1"``.
    """

    def __init__(
        self,
        checkpoints: Sequence[Checkpoint],
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        batch_size: int = 16,
        tta: bool | None = None,
        threshold: float | None = None,
        min_size: int | None = None,
        max_adc_ratio: float | None = None,
        prefetch: int = 2,
        ops: str = "auto",
        models: Sequence[Callable[[torch.Tensor], torch.Tensor]] | None = None,
    ) -> None:
        if not checkpoints:
            raise InputError("no checkpoint given; pass at least one checkpoint path or bundled name.")
        if batch_size < 1 or prefetch < 1:
            raise InputError(f"batch_size and prefetch must be >= 1, got {batch_size} and {prefetch}.")
        given = {
            k: v
            for k, v in dict(tta=tta, threshold=threshold, min_size=min_size, max_adc_ratio=max_adc_ratio).items()
            if v is not None
        }
        settings = {**POSTPROCESSING_DEFAULTS, **checkpoints[0].meta.get("inference", {}), **given}
        tta, threshold, min_size = bool(settings["tta"]), float(settings["threshold"]), int(settings["min_size"])
        max_adc_ratio = float(settings["max_adc_ratio"])
        if not 0.0 < threshold < 1.0:
            raise InputError(f"threshold must be between 0 and 1 (exclusive), got {threshold}.")
        if min_size < 0:
            raise InputError(f"min_size must be >= 0 voxels, got {min_size}.")
        first = checkpoints[0]
        if max_adc_ratio < 0 or (max_adc_ratio > 0 and "adc" not in first.model_config.modalities):
            raise InputError(
                f"max_adc_ratio must be 0 (off) or positive, and needs a model with an adc input; got "
                f"{max_adc_ratio} for a model reading {', '.join(first.model_config.modalities)}."
            )
        for ckpt in checkpoints[1:]:
            if ckpt.model_config.modalities != first.model_config.modalities or ckpt.preprocess != first.preprocess:
                raise CheckpointError(
                    f"{ckpt.path} does not match {first.path} (modalities or preprocessing differ); an ensemble "
                    "needs folds of one training run."
                )
        if first.model_config.num_classes != 2:
            raise CheckpointError(
                f"{first.path} predicts {first.model_config.num_classes} classes; the Segmenter needs a "
                "two-class (background, lesion) model."
            )
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.batch_size, self.tta, self.threshold, self.min_size = batch_size, tta, float(threshold), min_size
        self.max_adc_ratio = max_adc_ratio
        self.prefetch = prefetch
        self.model_config = first.model_config
        self.modalities: tuple[str, ...] = first.model_config.modalities
        self.preprocess: PreprocessConfig = first.preprocess
        names = [_checkpoint_name(c) for c in checkpoints]
        self.name = "+".join(names)
        self.model_version = str(first.meta.get("package_version", ""))
        self._models = (
            list(models) if models is not None else [c.build_model(ops=ops).to(self.device).eval() for c in checkpoints]
        )
        # One name per model, to say which one is broken (numbered when models were given without one each).
        numbered = [f"{self.name} #{i + 1}" for i in range(len(self._models))]
        self._model_names = names if len(names) == len(self._models) else numbered
        logger.info(
            "mdanet-sdk Segmenter: %s on %s (%s), %d model(s), tta=%s, threshold=%g, min_size=%d, max_adc_ratio=%g",
            self.name, self.device, self.precision, len(self._models), tta, threshold, min_size, max_adc_ratio,
        )

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        device: str | torch.device = "auto",
        precision: str = "auto",
        *,
        trust: bool = False,
        **options: Any,
    ) -> "Segmenter":
        """Load one checkpoint, or a list of fold checkpoints to ensemble.

        Args:
            path: a checkpoint file or bundled name (``"default-mri"``, ``"default-ctp"``), or a list of them.
            device: see :class:`Segmenter`.
            precision: see :class:`Segmenter`.
            trust: load a checkpoint that carries no integrity record (written by an older mdanet-sdk or by
                hand); damaged files are refused either way (:func:`~mdanet_sdk.train.checkpoint.load_checkpoint`).
            options: ``batch_size``, ``tta``, ``threshold``, ``min_size``, ``max_adc_ratio``, ``prefetch``, ``ops``.

        Raises:
            CheckpointError: a file is missing, damaged, not a checkpoint, or the folds are incompatible.
        """
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        checkpoints = [load_checkpoint(p, trust=trust) for p in paths]
        return cls(checkpoints, device=device, precision=precision, **options)

    @classmethod
    def default(cls, kind: Literal["mri", "ctp"] = "mri", **options: Any) -> "Segmenter":
        """The bundled weights: ``"mri"`` (ISLES'22 DWI+ADC, ``default-mri``) or ``"ctp"`` (ISLES'18, ``default-ctp``).

        Args:
            kind: ``"mri"`` or ``"ctp"``.
            options: as for :meth:`from_checkpoint` (``device``, ``precision``, ``batch_size``...).
        """
        if kind not in ("mri", "ctp"):
            raise InputError(f"kind must be 'mri' or 'ctp', got {kind!r}.")
        return cls.from_checkpoint(f"default-{kind}", **options)

    @classmethod
    def from_exported(
        cls,
        path: str | os.PathLike[str],
        device: str | torch.device = "auto",
        precision: str = "auto",
        *,
        trust: bool = False,
        **options: Any,
    ) -> "Segmenter":
        """Run an artefact of ``mdanet-sdk export`` (TorchScript, ExportedProgram or TensorRT).

        Pre- and post-processing are those of the eager model; the model config and the preprocessing come
        from the file (:func:`mdanet_sdk.export.load_artifact`).

        Args:
            path: the ``.ts`` / ``.pt2`` artefact.
            device: see :class:`Segmenter` (TensorRT artefacts need CUDA).
            precision: ``"auto"`` or the artefact's own precision, which it always computes in.
            trust: load an artefact that carries no integrity record (see :func:`mdanet_sdk.export.load_artifact`).
            options: ``batch_size``, ``tta``, ``threshold``, ``min_size``, ``max_adc_ratio``, ``prefetch``.

        Raises:
            CheckpointError: not an artefact, damaged, unsafe, or from a newer mdanet-sdk.
            BackendUnavailableError: it needs the native ops, CUDA or TensorRT, which are missing here.
            InputError: ``precision`` differs from the artefact's.
        """
        from mdanet_sdk.export import load_artifact

        artifact = load_artifact(path, resolve_device(device), trust=trust)
        if precision not in ("auto", artifact.precision):
            raise InputError(
                f"{artifact.path.name} computes in {artifact.precision}; drop --precision or export it again with "
                f"--precision {precision}."
            )
        described = Checkpoint(
            artifact.model_config, PreprocessConfig.from_dict(artifact.preprocess), {},
            dict(artifact.meta.get("checkpoint", {})), artifact.path,
        )
        # precision fp32: no autocast around the artefact, whose dtypes are fixed inside it.
        return cls([described], device=artifact.device, precision="fp32", models=[artifact], **options)

    def __repr__(self) -> str:
        return (
            f"Segmenter({self.name!r}, modalities={self.modalities}, device={str(self.device)!r}, "
            f"precision={self.precision!r}, batch_size={self.batch_size}, tta={self.tta})"
        )

    # -- entry points -----------------------------------------------------------------------------------
    def predict(self, case: CaseInput, *, modalities: Sequence[str] | None = None) -> SegmentationResult:
        """Segment one case.

        Args:
            case: a 4D NIfTI (volumes in the model's modality order unless ``modalities`` says otherwise), an
                ISLES'22/ISLES'18/generic case folder, a mapping modality → file, a ``CaseSource`` or a
                ``Case``.
            modalities: the order of the volumes in a 4D file (e.g. ``("adc", "dwi")``).

        Raises:
            InputError: the case cannot be read (missing modality, corrupt file, mismatched geometry...).
        """
        (result,) = self.predict_many([case], modalities=modalities)
        assert isinstance(result, SegmentationResult)
        return result

    def predict_arrays(
        self, images: Mapping[str, np.ndarray], affine: np.ndarray, *, case_id: str = "arrays"
    ) -> SegmentationResult:
        """Segment a case given as arrays, e.g. ``predict_arrays({"dwi": dwi, "adc": adc}, affine)``.

        Args:
            images: modality → ``(X, Y, Z)`` array, all of one shape, in any voxel order that ``affine``
                describes (as ``nibabel`` gives them).
            affine: 4x4 voxel-to-world matrix in mm.
            case_id: name used in the report.

        Returns:
            the result; its ``mask`` and ``probability`` have the arrays' shape and voxel order.
        """
        return self.predict(_case_from_arrays(images, affine, case_id))

    def predict_many(
        self,
        cases: Iterable[CaseInput],
        *,
        modalities: Sequence[str] | None = None,
        errors: Literal["raise", "yield"] = "raise",
        progress: Callable[[str, str, int], None] | None = None,
    ) -> Iterator[SegmentationResult | FailedCase]:
        """Segment many cases, yielding each result as soon as it is ready, in input order.

        Slices of consecutive cases share batches; the next case is read and preprocessed in a background
        thread while the model works (at most ``prefetch`` cases ahead); ``cases`` may be a lazy iterable.

        Args:
            cases: inputs as for :meth:`predict`.
            modalities: the order of the volumes in 4D files.
            errors: ``"raise"``: the first case that cannot be read raises its error; ``"yield"``: it is
                yielded as a :class:`FailedCase` and the others go on. Either way a model that produces
                NaN/Inf raises :class:`~mdanet_sdk.errors.CheckpointError` (it would fail every case), before
                the result of any case in that batch is yielded, so no partial result of it is ever written;
                the results yielded before it are complete.
            progress: called as ``progress(event, case_id, n)`` with ``("loaded", id, n_slices)`` when a case
                reaches the model, ``("slices", id, n)`` after each batch, ``("done", id, 0)`` and
                ``("failed", id, 0)``.

        Yields:
            a :class:`SegmentationResult` per case, or a :class:`FailedCase` (``errors="yield"`` only).

        Raises:
            CheckpointError: a model produced NaN/Inf (damaged weights).
        """
        if errors not in ("raise", "yield"):
            raise InputError(f"errors must be 'raise' or 'yield', got {errors!r}.")
        notify = progress or (lambda event, case_id, n: None)
        stream = CaseStream(
            lambda item: self._prepare(item, modalities),
            lambda x, source: self.probabilities(x, source=source),
            self._finish,
            self.batch_size,
            self.prefetch,
        )
        yield from stream.run(cases, errors, notify)

    # -- background loading ----------------------------------------------------------------------------
    def _load(self, item: CaseInput, modalities: Sequence[str] | None) -> Case:
        if isinstance(item, Case):
            return item
        if isinstance(item, CaseSource):
            return item.load()
        if isinstance(item, Mapping):
            return read_case(item, modalities=self.modalities)
        refuse_single_3d(Path(item), self.modalities)
        return read_case(item, modalities=modalities or self.modalities)

    def _prepare(self, item: CaseInput, modalities: Sequence[str] | None) -> Loaded | FailedCase:
        """Background thread: read and normalise one case (its slices reach the model grid batch by batch)."""
        started = time.perf_counter()
        try:
            case = self._load(item, modalities)
            return Loaded(case, slice_stack(case.images, self.modalities, self.preprocess, case.brain_mask), started)
        except MDANetError as exc:
            return FailedCase(_input_name(item), str(exc), exc)

    # -- model -----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def probabilities(self, x: torch.Tensor, *, source: str = "these slices") -> torch.Tensor:
        """Lesion probability of preprocessed slices, averaged over the models and (with TTA) the flips.

        Args:
            x: ``(B, C, H, W)`` float32 slices from :func:`~mdanet_sdk.data.preprocess.preprocess_images`
                (H, W multiples of 16), on any device.
            source: what the slices are, for error messages (e.g. ``"case sub-01"``).

        Returns:
            float32 ``(B, H, W)`` on the CPU.

        Raises:
            CheckpointError: a model's logits hold NaN or Inf (damaged weights).
            InputError: ``x`` itself holds NaN or Inf.
        """
        x = x.to(self.device, non_blocking=True)
        total = torch.zeros((x.shape[0], *x.shape[2:]), dtype=torch.float32, device=self.device)
        flips = _TTA_FLIPS if self.tta else _TTA_FLIPS[:1]
        for model, name in zip(self._models, self._model_names):
            finite = torch.ones((), dtype=torch.bool, device=self.device)
            for dims in flips:
                with torch.autocast(
                    self.device.type, dtype=_PRECISIONS[self.precision], enabled=self.precision != "fp32"
                ):
                    logits = model(x.flip(dims) if dims else x)
                # NaN logits give NaN probabilities, which pass no threshold: a silent "0 lesions". One
                # reduction per forward, read once per model (one device sync, not one per flip).
                finite &= torch.isfinite(logits).all()
                lesion = logits.float().softmax(dim=1)[:, 1]  # (B, H, W)
                total += lesion.flip(dims) if dims else lesion
            if not finite:
                self._refuse_non_finite(x, name, source)
        return (total / (len(self._models) * len(flips))).cpu()

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

    def postprocess(
        self, probability: np.ndarray, images: Mapping[str, np.ndarray], head: np.ndarray | None = None
    ) -> np.ndarray:
        """This segmenter's :func:`postprocess` of a native-grid ``(X, Y, Z)`` probability map, with the
        case's images (modality → ``(X, Y, Z)``; the ``adc`` one feeds the gate) and, when known, the head
        mask (:attr:`SliceGeometry.head`): the gate's tissue ADC is then taken inside it, so a noisy
        background around an ADC map that is not skull-stripped does not move it."""
        adc = images.get("adc")
        if adc is not None and head is not None and self.max_adc_ratio:
            adc = adc_in_head(adc, head)
        return postprocess(probability, self.threshold, self.min_size, adc, self.max_adc_ratio)

    def _finish(self, pending: Pending) -> SegmentationResult:
        """Mask and report of a case whose slices are all predicted (and restored to its native grid)."""
        loaded = pending.loaded
        case = loaded.case
        probability = pending.probability
        mask = self.postprocess(probability, case.images, loaded.geometry.head)
        ref = case.reference
        warnings = [*case.warnings, *loaded.geometry.warnings,
                    *_volume_warnings(mask, loaded.geometry, case.reference.voxel_volume_ml)]
        report = CaseReport(
            case_id=case.case_id,
            **lesion_stats(mask, ref.voxel_volume_ml),
            shape=tuple(ref.original_shape[:3]),
            voxel_size_mm=ref.zooms,
            runtime_s=time.perf_counter() - loaded.started,
            device=str(self.device),
            precision=self.precision,
            model=self.name,
            model_version=self.model_version,
            modalities=self.modalities,
            threshold=self.threshold,
            min_size=self.min_size,
            max_adc_ratio=self.max_adc_ratio,
            tta=self.tta,
            warnings=warnings,
        )
        return SegmentationResult(case, mask, probability, report)


#: A predicted lesion larger than this share of the head is implausible (a failure, or not a stroke case).
IMPLAUSIBLE_LESION_SHARE = 1.0 / 3.0
#: Adult brains (CSF included) hold 1.0-1.7 L; a larger head mask holds a skull and scalp.
LARGEST_BRAIN_ML = 2200.0


def _volume_warnings(mask: np.ndarray, geometry: SliceGeometry, voxel_ml: float) -> list[str]:
    """One sentence each when the head is larger than a brain (a skull and scalp with zero air around them:
    not skull-stripped) and when the lesion covers an implausible share of the head."""
    head = int(geometry.head.sum()) if geometry.head is not None else mask.size
    warnings = []
    if head * voxel_ml > LARGEST_BRAIN_ML and not geometry.given_mask and NOT_SKULL_STRIPPED not in geometry.warnings:
        warnings.append(f"The head mask holds {head * voxel_ml / 1000:.1f} L, more than a brain: the input does not "
                        "look skull-stripped; pass a brain mask for reliable results.")
    share = float(mask.sum()) / max(head, 1)
    if share > IMPLAUSIBLE_LESION_SHARE:
        warnings.append(f"The predicted lesion covers {share:.0%} of the head, which is implausible for a stroke: "
                        "check the input's modalities, orientation and skull-stripping.")
    return warnings


def _checkpoint_name(ckpt: Checkpoint) -> str:
    """``"default-mri"`` for a bundled checkpoint, else the file name without ``.pt``."""
    return Path(ckpt.path).name.removesuffix(".pt") if ckpt.path is not None else "checkpoint"
