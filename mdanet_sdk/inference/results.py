"""What segmenting a case gives: :class:`SegmentationResult` (mask, probability, report) or :class:`FailedCase`,
and the plausibility warnings a result carries."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from mdanet_sdk.data.cases import Case
from mdanet_sdk._files import file_key
from mdanet_sdk.data.nifti import save_like, to_original
from mdanet_sdk.data.targets import check_output_file
from mdanet_sdk.data.preprocess import NOT_SKULL_STRIPPED, SliceGeometry
from mdanet_sdk.errors import InputError, MDANetError
from mdanet_sdk.inference.postprocess import remove_small_lesions
from mdanet_sdk.report import OVERLAY_MODALITIES, CaseReport, lesion_stats, save_overlay

if TYPE_CHECKING:
    from mdanet_sdk.inference.pipeline import Loaded
    from mdanet_sdk.inference.segmenter import Segmenter

__all__ = [
    "SegmentationResult",
    "FailedCase",
    "finish_case",
    "volume_warnings",
    "gate_removals",
    "GATE_WARNING_ML",
    "IMPLAUSIBLE_LESION_SHARE",
    "LARGEST_BRAIN_ML",
]


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
        outputs: the files written for it by :func:`mdanet_sdk.segment` (``"mask"``, ``"prob"``, ``"overlay"``
            -> path); empty for results of the :class:`Segmenter`, which writes nothing itself.
    """

    ok: ClassVar[bool] = True

    case: Case
    mask_canonical: np.ndarray
    probability_canonical: np.ndarray
    report: CaseReport
    outputs: dict[str, Path] = field(default_factory=dict)

    @property
    def case_id(self) -> str:
        """The case's id (made unique within a run by :func:`mdanet_sdk.segment`)."""
        return self.report.case_id

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

        Both files get the input's affine, orientation and header (qform/sform codes kept). Both names are
        checked before anything is written (:func:`~mdanet_sdk.data.targets.check_output_file`: an input scan or
        a label is never replaced), writes are atomic, and if the probability map cannot be written the mask
        just written is removed again, so a failure leaves no partial output.

        Returns:
            ``(mask_path, prob_path or None)``.

        Raises:
            InputError: a name that is not ``.nii``/``.nii.gz``, names an existing image that is not an earlier
                prediction, or one file for both outputs (also through links or ``..``); nothing is written
                then.
        """
        mask_path = check_output_file(mask_path)
        if prob_path is not None:
            prob_path = check_output_file(prob_path)
            if file_key(prob_path) == file_key(mask_path):
                raise InputError(f"the mask and the probability map would both be {mask_path}; give two file names.")
        mask_path = self._write(self.mask_canonical, mask_path, "mask")
        if prob_path is None:
            return mask_path, None
        try:
            return mask_path, self._write(self.probability_canonical, prob_path, "prob")
        except BaseException:
            mask_path.unlink(missing_ok=True)
            raise

    def _write(self, array: np.ndarray, path: Path, output: Literal["mask", "prob"]) -> Path:
        try:
            return save_like(array, self.case.reference, path, output, self.report.made_with)
        except OSError as exc:  # its own message names the temporary file, not the output
            raise InputError(
                f"cannot write {path} ({exc.strerror or type(exc).__name__}); check that its folder exists and "
                "can be written, or choose another."
            ) from exc

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
        return save_overlay(images[modality], self.mask_canonical, path, zooms=self.case.reference.zooms, title=title)


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
    outputs: dict[str, Path] = field(default_factory=dict)  # always empty: a failed case writes nothing


#: A predicted lesion larger than this share of the head is implausible (a failure, or not a stroke case).
IMPLAUSIBLE_LESION_SHARE = 1.0 / 3.0
#: Adult brains (CSF included) hold 1.0-1.7 L; a larger head mask holds a skull and scalp.
LARGEST_BRAIN_ML = 2200.0
#: The restricted-diffusion gate's removals are told in a warning from this volume on (when they outweigh the mask).
GATE_WARNING_ML = 1.0


def volume_warnings(mask: np.ndarray, geometry: SliceGeometry, voxel_ml: float) -> list[str]:
    """One sentence each when the head is larger than a brain (a skull and scalp with zero air around them:
    not skull-stripped) and when the lesion covers an implausible share of the head."""
    head = int(geometry.head.sum()) if geometry.head is not None else mask.size
    warnings = []
    if head * voxel_ml > LARGEST_BRAIN_ML and not geometry.given_mask and NOT_SKULL_STRIPPED not in geometry.warnings:
        warnings.append(
            f"The head mask holds {head * voxel_ml / 1000:.1f} L, more than a brain: the input does not "
            "look skull-stripped; pass a brain mask for reliable results."
        )
    share = float(mask.sum()) / max(head, 1)
    if share > IMPLAUSIBLE_LESION_SHARE:
        warnings.append(
            f"The predicted lesion covers {share:.0%} of the head, which is implausible for a stroke: "
            "check the input's modalities, orientation and skull-stripping."
        )
    return warnings


def gate_removals(
    segmenter: Segmenter, probability: np.ndarray, mask: np.ndarray, voxel_ml: float
) -> tuple[dict[str, Any], str | None]:
    """What the restricted-diffusion gate removed from ``mask``: ``{"gate_removed_lesions", "gate_removed_ml"}`` (the
    lesions above the threshold and minimum size that are not in ``mask``), and a warning (or None) when it removed
    at least :data:`GATE_WARNING_ML` and more than it kept: a lesion whose ADC has pseudo-normalised, or look-alikes
    that the user should see, since the mask alone then says "no lesion"."""
    settings = segmenter.settings
    if settings.max_adc_ratio <= 0:
        return {"gate_removed_lesions": 0, "gate_removed_ml": 0.0}, None
    ungated = remove_small_lesions(probability > settings.threshold, settings.min_size)
    removed = lesion_stats((ungated != 0) & (mask == 0), voxel_ml)
    ml, kept = removed["lesion_volume_ml"], float(np.count_nonzero(mask)) * voxel_ml
    warning = None
    if ml >= GATE_WARNING_ML and ml > kept:
        warning = (
            f"The restricted-diffusion gate removed {removed['n_lesions']} lesion(s) of {ml:.1f} mL in all, more "
            f"than it kept ({kept:.1f} mL): their median ADC is above {settings.max_adc_ratio:g}x tissue "
            "(pseudo-normalised lesions or DWI-bright look-alikes); look at them with --max-adc-ratio 0."
        )
    return {"gate_removed_lesions": removed["n_lesions"], "gate_removed_ml": ml}, warning


def finish_case(segmenter: Segmenter, loaded: Loaded, mask: np.ndarray, probability: np.ndarray) -> SegmentationResult:
    """The result of a case whose mask is made: its :class:`~mdanet_sdk.report.CaseReport` says what was found
    (volumes, counts, the warnings of its input, geometry and volume) and what produced it (``segmenter``'s
    model, weights, device, precision and settings).

    Args:
        segmenter: the :class:`~mdanet_sdk.inference.Segmenter` that segmented it.
        loaded: the case as loaded (``case``, ``geometry``, ``started``).
        mask: uint8 ``(X, Y, Z)`` canonical mask.
        probability: float32 ``(X, Y, Z)`` canonical lesion probability.
    """
    case, geometry = loaded.case, loaded.geometry
    ref = case.reference
    gate, gate_warning = gate_removals(segmenter, probability, mask, ref.voxel_volume_ml)
    warnings = [*case.warnings, *geometry.warnings, *volume_warnings(mask, geometry, ref.voxel_volume_ml)]
    warnings += [gate_warning] if gate_warning else []
    report = CaseReport(
        case_id=case.case_id,
        **lesion_stats(mask, ref.voxel_volume_ml),
        shape=tuple(ref.original_shape[:3]),
        voxel_size_mm=ref.zooms,
        runtime_s=time.perf_counter() - loaded.started,
        device=str(segmenter.device),
        precision=segmenter.precision,
        model=segmenter.name,
        model_version=segmenter.model_version,
        modalities=segmenter.modalities,
        **segmenter.settings.to_dict(),
        **gate,
        tta_screen=segmenter.tta_screen and segmenter.tta,
        warnings=warnings,
        weights_sha256=list(segmenter.weights_sha256),
        notice=segmenter.notice,
    )
    return SegmentationResult(case, mask, probability, report)
