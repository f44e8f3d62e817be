"""Probability map -> lesion mask, and the settings that govern it (:class:`PostprocessConfig`).

The one post-processing of the package: :meth:`PostprocessConfig.apply` thresholds a native-grid probability
map, removes lesions under ``min_size`` voxels (26-connectivity) and, for models with an ADC input, lesions
without restricted diffusion (:func:`keep_restricted_lesions`). The Segmenter, training validation and the
benchmark all call it through :class:`~mdanet_sdk.inference.predictor.Predictor`. The computations are
:mod:`mdanet_sdk.pipeline.lesions` (torch, scriptable, carried by exported artefacts so that the C API
post-processes as Python does); this module takes and returns numpy arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from mdanet_sdk._values import is_flag, is_real
from mdanet_sdk.errors import InputError
from mdanet_sdk.metrics import dsc
from mdanet_sdk.pipeline import lesions
from mdanet_sdk.pipeline.morphology import label

__all__ = [
    "PostprocessConfig",
    "POSTPROCESSING_DEFAULTS",
    "remove_small_lesions",
    "keep_restricted_lesions",
    "adc_in_head",
    "tissue_adc",
    "postprocess",
    "choose_postprocessing",
]


def _number(value: Any, name: str) -> float:
    """``value`` as a float, or an :class:`InputError` naming ``name`` (text, None and bools are no numbers)."""
    if not is_real(value):
        raise InputError(f"{name} must be a number, got {value!r:.40}.")
    return float(value)


@dataclass(frozen=True)
class PostprocessConfig:
    """How a model's probabilities become a mask; a checkpoint recommends one in ``meta["inference"]``.

    Attributes:
        tta: average over the 4 in-plane flips (none, H, W, both) before thresholding.
        threshold: a voxel is lesion when its probability is above this; in (0, 1).
        min_size: lesions of fewer voxels are removed (26-connectivity); 0 keeps all.
        max_adc_ratio: lesions whose median ADC is above this multiple of the case's parenchymal ADC are
            removed (:func:`keep_restricted_lesions`; models with an ``adc`` input); 0 keeps all.
    """

    tta: bool = False
    threshold: float = 0.5
    min_size: int = 0
    max_adc_ratio: float = 0.0

    def __post_init__(self) -> None:
        # The bounds a checkpoint's meta["inference"] is held to (train/checkpoint_checks.py INFERENCE_SETTINGS).
        if not is_flag(self.tta):
            raise InputError(f"tta must be true or false, got {self.tta!r:.40}.")
        threshold, min_size = _number(self.threshold, "threshold"), _number(self.min_size, "min_size")
        max_adc_ratio = _number(self.max_adc_ratio, "max_adc_ratio")
        if not 0.0 < threshold < 1.0:
            raise InputError(f"threshold must be between 0 and 1 (exclusive), got {self.threshold}.")
        if not 0 <= min_size <= 10**9 or min_size != round(min_size):
            raise InputError(f"min_size must be a whole number of voxels from 0 to 10^9, got {self.min_size}.")
        if not 0.0 <= max_adc_ratio <= 10.0:
            raise InputError(f"max_adc_ratio must be 0 (off) or positive, up to 10; got {self.max_adc_ratio}.")
        # Normalised types, so equal settings compare (and serialise) equal whatever numbers were passed.
        object.__setattr__(self, "tta", bool(self.tta))
        object.__setattr__(self, "threshold", threshold)
        object.__setattr__(self, "min_size", int(min_size))
        object.__setattr__(self, "max_adc_ratio", max_adc_ratio)

    def to_dict(self) -> dict[str, Any]:
        """``{"tta", "threshold", "min_size", "max_adc_ratio"}``: what checkpoints store and reports show."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PostprocessConfig":
        """The settings of a (partial) dict; missing keys take the defaults.

        Raises:
            InputError: a key this package does not know, or a value out of bounds.
        """
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise InputError(
                f"unknown post-processing settings {unknown}; use tta, threshold, min_size, max_adc_ratio."
            )
        return cls(**d)

    def updated(self, **changes: Any) -> "PostprocessConfig":
        """A copy with the settings in ``changes`` that are not ``None`` (a caller's explicit choices)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def apply(
        self,
        probability: np.ndarray,
        adc: np.ndarray | None = None,
        head: np.ndarray | None = None,
        parenchyma: np.ndarray | None = None,
    ) -> np.ndarray:
        """Mask of a native-grid probability map.

        Args:
            probability: float ``(X, Y, Z)`` lesion probability.
            adc: the case's ``(X, Y, Z)`` ADC map on the same grid, for the gate (``max_adc_ratio > 0``).
            head: the head mask :attr:`SliceGeometry.head`, when known: the gate's tissue ADC is then taken
                inside it, so a noisy background around an ADC map that is not skull-stripped does not move it.
            parenchyma: :attr:`SliceGeometry.parenchyma`, with ``head``: in a head that is not skull-stripped, the
                tissue ADC is taken there, where the normalisation took its tissue values, so that scalp and muscle
                (ADC ~1.5x tissue) do not raise it and let lesions of normal ADC through.

        Returns:
            uint8 ``(X, Y, Z)`` mask.
        """
        if adc is not None and head is not None and self.max_adc_ratio:
            adc = adc_in_head(adc, head)
        return postprocess(probability, self.threshold, self.min_size, adc, self.max_adc_ratio, parenchyma)


#: The settings when neither the caller nor the checkpoint's ``meta["inference"]`` says otherwise.
POSTPROCESSING_DEFAULTS: dict[str, Any] = PostprocessConfig().to_dict()


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


def _region(mask: np.ndarray | None) -> torch.Tensor | None:
    """A bool tensor of an optional mask (the gate's parenchyma)."""
    return None if mask is None else _tensor(np.asarray(mask) != 0)


def remove_small_lesions(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Drop connected lesions (26-connectivity) of fewer than ``min_size`` voxels.

    Args:
        mask: ``(X, Y, Z)`` binary mask.
        min_size: smallest lesion kept, in voxels; ``<= 1`` keeps everything.

    Returns:
        uint8 ``(X, Y, Z)`` mask.
    """
    return lesions.remove_small_lesions(_tensor(np.asarray(mask) != 0), int(min_size)).numpy()


def tissue_adc(adc: np.ndarray, parenchyma: np.ndarray | None = None) -> float:
    """The case's parenchymal ADC: the median over brain voxels (``ADC > 0``) after dropping CSF.

    CSF (ADC ~3e-3 mm²/s, about 4x tissue) would pull a plain median up by an amount that depends on atrophy,
    so voxels above 1.5x the plain median are left out first. Unit-free: the ratio to it is what is used.

    Args:
        adc: ``(X, Y, Z)`` ADC map, any unit; ``<= 0`` outside the brain (skull-stripped, as ISLES is) or outside
            the head mask (:func:`adc_in_head`).
        parenchyma: bool ``(X, Y, Z)``, :attr:`SliceGeometry.parenchyma`: in a head that is not skull-stripped, the
            reference is taken there (unless under half of it holds a positive ADC); None: over the whole map.

    Returns:
        the reference ADC in the map's unit (0.0 for a map without positive voxels).
    """
    adc_t = _tensor(np.asarray(adc, dtype=np.float32))
    return lesions.tissue_adc(adc_t, _region(parenchyma))


def adc_in_head(adc: np.ndarray, head: np.ndarray) -> np.ndarray:
    """The ADC map with 0 outside ``head``, as :func:`tissue_adc` expects (a noisy background around an ADC
    map that is not skull-stripped would otherwise drag the tissue reference down). The Segmenter and the
    choice of post-processing both gate through it."""
    return np.where(head, adc, 0.0)


def keep_restricted_lesions(
    mask: np.ndarray, adc: np.ndarray, max_ratio: float, parenchyma: np.ndarray | None = None
) -> np.ndarray:
    """Keep only the lesions that show restricted diffusion, as acute infarcts do.

    A connected lesion (26-connectivity) stays when its median ADC is at most ``max_ratio`` times the case's
    parenchymal ADC (:func:`tissue_adc`) and above 0 (outside the brain, by the map's convention); DWI-bright look-alikes with normal ADC (T2 shine-through,
    susceptibility at the skull base) go. Acute infarcts lower ADC by 30-60 %, hence ratios around 0.75-0.85.

    Args:
        mask: ``(X, Y, Z)`` binary mask.
        adc: ``(X, Y, Z)`` ADC map on the same grid.
        max_ratio: the gate; ``<= 0`` keeps everything.
        parenchyma: where the tissue ADC is taken (:func:`tissue_adc`).

    Returns:
        uint8 ``(X, Y, Z)`` mask.
    """
    adc_t = _tensor(np.asarray(adc, dtype=np.float32))
    mask_t = _tensor(np.asarray(mask) != 0)
    return lesions.keep_restricted_lesions(mask_t, adc_t, float(max_ratio), _region(parenchyma)).numpy()


def _lesion_adc_ratios(mask: np.ndarray, adc: np.ndarray, reference: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Lesion labels and, per label value (index 0 = background, ratio inf), median ADC / ``reference``;
    ``None`` for an empty mask or a map without tissue (``reference <= 0``). The ratios of
    :func:`keep_restricted_lesions`, computed once for several gates."""
    labels = label(_tensor(np.asarray(mask) != 0), full=True)
    if reference <= 0 or not bool(labels.any()):
        return labels.numpy(), None
    names, medians = lesions.lesion_medians(_tensor(np.asarray(adc, dtype=np.float32)), labels)
    ratios = torch.full((labels.numel() + 1,), float("inf"), dtype=torch.float64)
    ratios[names] = torch.where(medians > 0, medians / reference, float("inf"))  # ADC <= 0: outside the brain
    return labels.numpy(), ratios.numpy()


def _restricted(mask: np.ndarray, labels: np.ndarray, ratios: np.ndarray | None, max_ratio: float) -> np.ndarray:
    """``mask`` without the lesions whose ADC ratio exceeds ``max_ratio`` (all of it when ``ratios`` is None)."""
    return np.asarray(mask).astype(np.uint8) if ratios is None else (ratios <= max_ratio)[labels].astype(np.uint8)


def postprocess(
    probability: np.ndarray,
    threshold: float,
    min_size: int = 0,
    adc: np.ndarray | None = None,
    max_adc_ratio: float = 0.0,
    parenchyma: np.ndarray | None = None,
) -> np.ndarray:
    """Probability map → mask: threshold, drop lesions under ``min_size`` voxels, then (with an ADC map and
    ``max_adc_ratio > 0``) drop lesions without restricted diffusion (:func:`keep_restricted_lesions`;
    ``parenchyma``: where the tissue ADC is taken, :func:`tissue_adc`).

    Returns:
        uint8 ``(X, Y, Z)`` mask.
    """
    adc_t = None if adc is None else _tensor(np.asarray(adc, dtype=np.float32))
    probability_t = _tensor(np.asarray(probability, dtype=np.float32))
    return lesions.postprocess(
        probability_t, float(threshold), int(min_size), adc_t, float(max_adc_ratio), _region(parenchyma)
    ).numpy()


def choose_postprocessing(
    probabilities: Mapping[bool, Sequence[np.ndarray]],
    labels: Sequence[np.ndarray],
    thresholds: Sequence[float] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
    min_sizes: Sequence[int] = (0, 5, 10, 20),
    tolerance: float = 0.005,
    adc: Sequence[np.ndarray] | None = None,
    max_adc_ratios: Sequence[float] = (0.9, 0.85, 0.8, 0.75, 0.7),
    parenchyma: Sequence[np.ndarray | None] | None = None,
) -> tuple["PostprocessConfig", float]:
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
        parenchyma: each case's :attr:`SliceGeometry.parenchyma`, so that the gate is chosen on the tissue ADC it
            will be applied with (:func:`tissue_adc`; None: the whole ADC map of every case).

    Returns:
        ``(setting, mean DSC)`` of the chosen setting (``max_adc_ratio`` 0.0: no gate); ``setting.to_dict()``
        is what a checkpoint stores.
    """
    if not labels or any(len(p) != len(labels) for p in probabilities.values()):
        raise InputError("choose_postprocessing needs one probability map per label for every TTA setting.")
    if adc is not None and len(adc) != len(labels):
        raise InputError("choose_postprocessing needs one ADC map per label.")
    if parenchyma is not None and len(parenchyma) != len(labels):
        raise InputError("choose_postprocessing needs one parenchyma (or None) per label.")
    gates = [0.0, *sorted(max_adc_ratios, reverse=True)] if adc is not None else [0.0]
    regions = list(parenchyma) if parenchyma is not None else [None] * len(labels)
    references = [tissue_adc(a, r) for a, r in zip(adc, regions)] if adc is not None else []
    scores: dict[tuple[bool, float, int, float], float] = {}
    for tta in sorted(probabilities):
        for threshold in sorted(thresholds, key=lambda t: abs(t - 0.5)):
            for min_size in sorted(min_sizes):
                per_case = np.empty((len(labels), len(gates)))
                for i, (p, y) in enumerate(zip(probabilities[tta], labels)):
                    mask = remove_small_lesions(p > threshold, min_size)
                    lesions, ratios = (
                        _lesion_adc_ratios(mask, adc[i], references[i]) if adc is not None else (mask, None)
                    )
                    for g, gate in enumerate(gates):
                        per_case[i, g] = dsc(mask if gate <= 0 else _restricted(mask, lesions, ratios, gate), y)
                for g, gate in enumerate(gates):
                    scores[(tta, threshold, min_size, gate)] = float(per_case[:, g].mean())
    best = max(scores.values())
    (tta, threshold, min_size, gate), score = next((k, v) for k, v in scores.items() if v >= best - tolerance)
    return PostprocessConfig(tta=tta, threshold=threshold, min_size=min_size, max_adc_ratio=gate), score
