"""Segment stroke lesions with trained MDANet weights.

- :mod:`.segmenter`: :class:`Segmenter`, the Python entry point (one case, arrays, or many streamed).
- :mod:`.predictor`: :class:`Predictor`, the one prediction routine (slices -> probabilities -> mask), shared by
  the Segmenter, training validation and the benchmark.
- :mod:`.postprocess`: :class:`PostprocessConfig` and the probability -> mask steps.
- :mod:`.pipeline`: cases streamed through the model in bounded memory.
- :mod:`.inputs`: what an input can be and how it is read.
- :mod:`.results`: :class:`SegmentationResult`, :class:`FailedCase`; :mod:`.resume`: :class:`SkippedCase`.
- :mod:`.batch`: :func:`segment`, files and folders in, files out (what ``mdanet-sdk segment`` runs).
"""

from __future__ import annotations

from mdanet_sdk.device import resolve_device, resolve_precision
from mdanet_sdk.inference.inputs import (
    BUNDLED_MODALITIES,
    CaseInput,
    kind_for_modalities,
    refuse_single_3d,
    volume_count,
)
from mdanet_sdk.inference.postprocess import (
    POSTPROCESSING_DEFAULTS,
    PostprocessConfig,
    adc_in_head,
    choose_postprocessing,
    keep_restricted_lesions,
    postprocess,
    remove_small_lesions,
    tissue_adc,
)
from mdanet_sdk.inference.predictor import Predictor
from mdanet_sdk.inference.results import FailedCase, SegmentationResult
from mdanet_sdk.inference.segmenter import Segmenter
from mdanet_sdk.inference.batch import segment  # noqa: E402 - needs the Segmenter
from mdanet_sdk.inference.resume import SkippedCase

__all__ = [
    "Segmenter",
    "segment",
    "Predictor",
    "PostprocessConfig",
    "SegmentationResult",
    "FailedCase",
    "SkippedCase",
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
