"""The segment section: one phantom case end to end, each stage timed (load → preprocess → predict →
postprocess → write), through the same :class:`~mdanet_sdk.inference.Predictor` the Segmenter runs, plus the
same case through ``Segmenter.predict`` + ``save`` as a check on the staged sum."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch

from mdanet_sdk import ops
from mdanet_sdk.bench.records import VOLUMES, BenchSettings, SegmentRecord
from mdanet_sdk.bench.runners import BACKEND_OPS, Progress, build_network, quiet
from mdanet_sdk.bench.timing import StageTimer, Stats, measure_interleaved, sync_for
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.errors import MDANetError

__all__ = ["phantom_dataset", "random_segmenter", "segment_stages", "bench_segment"]


def phantom_dataset(kind: str, shape: tuple[int, int, int], n_cases: int, root: Path) -> Path:
    """Write ``n_cases`` phantoms of modality kind ``kind`` and ``shape`` ``(X, Y, Z)`` under ``root``, in the
    dataset layout of that kind (:data:`~mdanet_sdk.data.phantom.KIND_LAYOUT`), once: an existing folder is
    reused."""
    from mdanet_sdk.data.phantom import KIND_LAYOUT, write_dataset

    out = root / f"{kind}-{'x'.join(map(str, shape))}-{n_cases}"
    if not out.exists():
        write_dataset(out, KIND_LAYOUT[kind], n_cases, seed=0, shape=shape)
    return out


def random_segmenter(
    preset: str,
    kind: str,
    *,
    device: torch.device | str = "cpu",
    batch: int = 8,
    precision: str = "fp32",
    ops_impl: str = "auto",
    seed: int = 0,
) -> Any:
    """A :class:`~mdanet_sdk.inference.Segmenter` around a ``preset`` network with seeded random weights.

    Default preprocessing, no TTA, no lesion-size filter: the timing of a trained model, whose weights do not
    change the work done.

    Args:
        preset: ``paper`` or ``small``.
        kind: the modality kind, ``ctp`` or ``mri`` (the network's modality groups).
        device, batch, precision: as for the Segmenter (``batch`` is its ``batch_size``).
        ops_impl: op implementation of its network (``reference`` = eager, ``native``, ``auto``): the
            Segmenter's ``ops``.
        seed: weight seed (the same seed gives every implementation the same weights).

    Raises:
        BackendUnavailableError: ``ops_impl="native"`` without the native ops built.
    """
    from mdanet_sdk.data.preprocess import PreprocessConfig
    from mdanet_sdk.inference import Segmenter
    from mdanet_sdk.train.checkpoint import Checkpoint

    if ops_impl == "native":
        # A native network is built without complaint and fails only when it runs: say why now instead.
        ops.implementation("native", device)
    weights = build_network(preset, kind, seed=seed).state_dict()
    checkpoint = Checkpoint(
        MDANetConfig.from_preset(preset, kind), PreprocessConfig(), dict(weights), {"note": "benchmark: random weights"}
    )
    return Segmenter([checkpoint], device=device, precision=precision, batch_size=batch, tta=False, ops=ops_impl)


def segment_stages(source: Any, segmenter: Any, out: Path) -> StageTimer:
    """One case through ``segmenter``'s :class:`~mdanet_sdk.inference.Predictor`, each stage timed.

    ``Segmenter.predict`` overlaps loading with the model in a background thread and reports no stage times,
    so this runs the same steps one after the other: ``load`` (the case reader), ``preprocess``
    (:func:`~mdanet_sdk.data.preprocess.slice_stack`: head mask and normalisation; the slices are resampled to
    the model grid batch by batch inside the next stage, as in the Segmenter), ``predict``
    (:meth:`Predictor.case_probability`: model grid → probabilities → native grid), ``postprocess``
    (:meth:`Predictor.mask`) and ``write`` (:func:`~mdanet_sdk.data.nifti.save_like`). The mask written is the
    one ``segmenter.predict(source).save(out)`` writes.

    Args:
        source: a :class:`~mdanet_sdk.data.cases.CaseSource` (anything with ``load() -> Case``).
        segmenter: the :class:`~mdanet_sdk.inference.Segmenter`.
        out: where the mask is written.

    Returns:
        the timer; ``timer.seconds`` maps each stage to its wall time.
    """
    from mdanet_sdk.data.nifti import save_like
    from mdanet_sdk.data.preprocess import slice_stack

    predictor = segmenter.predictor
    timer = StageTimer(sync_for(predictor.device))
    with timer.stage("load"):
        case = source.load()
    with timer.stage("preprocess"):
        stack = slice_stack(case.images, segmenter.modalities, segmenter.preprocess, case.brain_mask)
    with timer.stage("predict"):
        probability = predictor.case_probability(stack, f"case {case.case_id}")
    with timer.stage("postprocess"):
        mask = predictor.mask(probability, case.images, stack.geometry.head, stack.geometry.parenchyma)
    with timer.stage("write"):
        save_like(mask, case.reference, out, output="mask")
    return timer


def _staged_call(source: Any, segmenter: Any, out: Path, runs: list[StageTimer]) -> Callable[[], None]:
    """A call of :func:`segment_stages` that keeps its timer in ``runs``."""
    return lambda: runs.append(segment_stages(source, segmenter, out))


def _segmenter_call(source: Any, segmenter: Any, out: Path) -> Callable[[], object]:
    """A call of ``segmenter.predict(source).save(out)``."""
    return lambda: segmenter.predict(source).save(out)


def _segment_group(
    source: Any, kind: str, preset: str, settings: BenchSettings, workdir: Path, progress: Progress
) -> list[SegmentRecord]:
    """The records of one (kind, preset): eager and native, staged and through the Segmenter, round-robin."""
    device = settings.resolved_device()
    precision = settings.resolved_precisions()[0]
    shape = settings.volume_shape(kind)
    # the fields every record of the group shares (a partial, so mypy checks them against SegmentRecord)
    record = partial(
        SegmentRecord,
        kind=kind,
        shape=shape,
        preset=preset,
        device=str(device),
        modalities=MDANetConfig.from_preset(preset, kind).modalities,
        precision=precision,
        batch=settings.segment_batch,
    )
    records: list[SegmentRecord] = []
    timers: dict[str, list[StageTimer]] = {}
    calls: dict[str, Callable[[], object]] = {}
    for backend in dict.fromkeys(("eager", *[b for b in settings.backends if b == "native"])):
        try:
            segmenter = random_segmenter(
                preset,
                kind,
                device=device,
                batch=settings.segment_batch,
                precision=precision,
                ops_impl=BACKEND_OPS[backend],
            )
        except MDANetError as exc:
            records.append(record(backend=backend, status="unavailable", reason=str(exc)))
            continue
        out = workdir / f"seg-{kind}-{preset}-{backend}.nii.gz"
        timers[backend] = []
        calls[f"{backend} staged"] = _staged_call(source, segmenter, out, timers[backend])
        calls[f"{backend} segmenter"] = _segmenter_call(source, segmenter, out)
    progress(f"segment {kind}: {preset} {', '.join(timers)}")
    times = measure_interleaved(calls, warmup=settings.warmup, repeats=settings.repeats, sync=sync_for(device))
    for backend, runs in timers.items():
        runs = runs[settings.warmup :]
        stage_ms = {k: Stats.of([1e3 * t.seconds[k] for t in runs]) for k in runs[0].seconds}
        medians = sum(v.median for v in stage_ms.values())
        total = Stats.of([1e3 * t.total for t in runs])
        records.append(
            record(
                backend=backend,
                total_ms=total,
                slices_per_s=shape[2] / (total.median / 1e3),
                stages={k: {"ms": v, "share": v.median / medians} for k, v in stage_ms.items()},
                segmenter_ms=Stats.of([1e3 * t for t in times[f"{backend} segmenter"]]),
            )
        )
    return records


def bench_segment(settings: BenchSettings, workdir: Path, progress: Progress = quiet) -> list[SegmentRecord]:
    """The segment section: each modality kind's phantom × segment preset × (eager, native), stages timed, and
    the same case through ``Segmenter.predict`` + ``save`` (``segmenter_ms``) as a check on the staged sum.

    The backends of one (kind, preset) run round-robin, like the forward contenders.
    """
    from mdanet_sdk.data.cases import find_cases

    records: list[SegmentRecord] = []
    for kind in VOLUMES:
        shape = settings.volume_shape(kind)
        progress(f"segment {kind}: writing a {'x'.join(map(str, shape))} phantom")
        source = find_cases(phantom_dataset(kind, shape, 1, workdir / "phantoms"))[0]
        for preset in settings.segment_presets:
            records += _segment_group(source, kind, preset, settings, workdir, progress)
    eager_ms = {(r.kind, r.preset): r.total_ms.median for r in records if r.backend == "eager" and r.total_ms}
    for r in records:
        if r.total_ms is not None and (r.kind, r.preset) in eager_ms:
            r.ratio = eager_ms[(r.kind, r.preset)] / r.total_ms.median
    return records
