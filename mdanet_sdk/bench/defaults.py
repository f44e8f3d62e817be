"""The segment section's "today → defaults" comparison (issue 17): one phantom case segmented with the bundled
weights of its modality kind, once by **today's behaviour** (fp32, contiguous memory, batch 16, no compile, no
other optimisation) and once by the Segmenter's **defaults**, alternately in one process, as a ratio of medians.

Both variants run the public path ``Segmenter.predict(case).save(out)``, which is what ``mdanet-sdk segment``
does per case. The two are timed round-robin (:func:`~mdanet_sdk.bench.timing.measure_interleaved`), so a busy
neighbour slows both alike; ``ratio`` is today's median over the defaults' median, and ``round_ratio`` the
spread of the per-round ratios (each round runs both variants back to back). What each variant actually ran
with (precision, batch size, memory format of the weights, compiled or not) is read from the built Segmenter,
not from the options passed, so the record says what was compared even if an option is renamed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from mdanet_sdk.bench.records import VOLUMES, BenchSettings, DefaultsRecord
from mdanet_sdk.bench.runners import Progress, one_line, quiet
from mdanet_sdk.bench.segment import phantom_dataset
from mdanet_sdk.bench.timing import Stats, measure_interleaved, sync_for
from mdanet_sdk.errors import MDANetError

__all__ = ["TODAY_OPTIONS", "variant_segmenters", "describe_segmenter", "mask_dice", "bench_defaults"]

#: The Segmenter options that reproduce today's behaviour (before issue 17): fp32, batch 16, contiguous memory,
#: batch norms not folded, not compiled. The defaults' optimisations are each switched off here by name, so a new
#: one needs a line here too (the test of this module checks that today stays contiguous, fp32, batch 16, eager).
TODAY_OPTIONS: dict[str, Any] = {
    "precision": "fp32",
    "batch_size": 16,
    "channels_last": False,
    "optimize": False,
    "compile": False,
}


def variant_segmenters(kind: str, device: torch.device, **common: Any) -> dict[str, Any]:
    """The two :class:`~mdanet_sdk.inference.Segmenter` variants around the bundled weights of ``kind``:
    ``"today"`` (:data:`TODAY_OPTIONS`) and ``"defaults"`` (no option but the device: what a user gets), both
    with the ``common`` options (``--quick`` turns test-time augmentation off in both, a quarter of the work).

    Raises:
        CheckpointError: the bundled weights are missing or damaged.
    """
    from mdanet_sdk.inference import Segmenter

    return {
        "today": Segmenter.from_checkpoint(f"default-{kind}", device=device, **common, **TODAY_OPTIONS),
        "defaults": Segmenter.from_checkpoint(f"default-{kind}", device=device, **common),
    }


def describe_segmenter(segmenter: Any) -> dict[str, Any]:
    """What ``segmenter`` runs with, read from it: ``precision``, ``batch`` (``auto`` when chosen per model grid
    by footprint), ``memory_format`` of its first
    model's convolution weights (``channels_last`` or ``contiguous``) and ``compiled`` (a ``torch.compile``
    wrapper)."""
    model = segmenter.predictor.models[0]
    # A weight whose two layouts differ in memory: 1×1 kernels or a single input channel are both at once.
    weight = next(
        (
            p
            for p in getattr(model, "parameters", list)()
            if p.dim() == 4 and p.shape[1] > 1 and p.shape[2:].numel() > 1
        ),
        None,
    )
    channels_last = (
        weight is not None and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    )
    return {
        "precision": segmenter.precision,
        "batch": "auto" if segmenter.batch_size is None else segmenter.batch_size,  # None: chosen by footprint
        "memory_format": "channels_last" if channels_last else "contiguous",
        "compiled": "Optimized" in type(model).__name__,
    }


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two binary masks; 1.0 when both are empty (they agree)."""
    a, b = a.astype(bool), b.astype(bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _predict_and_save(
    segmenter: Any, source: Any, out: Path, masks: dict[str, np.ndarray], name: str
) -> Callable[[], None]:
    """A call of ``segmenter.predict(source).save(out)`` that keeps the mask in ``masks[name]``."""

    def call() -> None:
        result = segmenter.predict(source)
        result.save(out)
        masks[name] = result.mask

    return call


def _compare(kind: str, source: Any, settings: BenchSettings, workdir: Path, progress: Progress) -> DefaultsRecord:
    """The record of one modality kind: both variants built, timed round-robin, masks compared."""
    device = settings.resolved_device()
    shape = settings.volume_shape(kind)
    record = DefaultsRecord(kind=kind, shape=shape, weights=f"default-{kind}", device=str(device))
    common: dict[str, Any] = {"tta": False} if settings.quick else {}
    try:
        segmenters = variant_segmenters(kind, device, **common)
    except MDANetError as exc:
        record.status, record.reason = "unavailable", str(exc)
        return record
    masks: dict[str, np.ndarray] = {}
    calls = {
        name: _predict_and_save(seg, source, workdir / f"defaults-{kind}-{name}.nii.gz", masks, name)
        for name, seg in segmenters.items()
    }
    progress(f"segment {kind}: today vs defaults ({record.weights})")
    try:
        times = measure_interleaved(
            calls, warmup=max(1, settings.warmup), repeats=max(3, settings.repeats), sync=sync_for(device)
        )
    except Exception as exc:  # noqa: BLE001 - one failing variant is reported, the run goes on
        record.status, record.reason = "error", one_line(exc)
        return record
    for name, seg in segmenters.items():
        total = Stats.of([1e3 * t for t in times[name]])
        record.variants[name] = {
            "options": {**common, **TODAY_OPTIONS} if name == "today" else common,
            **describe_segmenter(seg),
            "total_ms": total,
            "slices_per_s": shape[2] / (total.median / 1e3),
        }
    record.ratio = record.variants["today"]["total_ms"].median / record.variants["defaults"]["total_ms"].median
    record.round_ratio = Stats.of([t / d for t, d in zip(times["today"], times["defaults"])])
    record.mask_dice = mask_dice(masks["today"], masks["defaults"])
    return record


def bench_defaults(settings: BenchSettings, workdir: Path, progress: Progress = quiet) -> list[DefaultsRecord]:
    """Today's behaviour against the defaults, one record per modality kind (its phantom of
    :meth:`BenchSettings.volume_shape`, the bundled weights of that kind)."""
    from mdanet_sdk.data.cases import find_cases

    records = []
    for kind in VOLUMES:
        source = find_cases(phantom_dataset(kind, settings.volume_shape(kind), 1, workdir / "phantoms"))[0]
        records.append(_compare(kind, source, settings, workdir, progress))
    return records
