"""The forward and peers sections: model forward throughput and latency per backend, preset, batch size and
precision, with FLOPs per slice and (on a GPU) the fraction of the device peak. The backends of one preset, and
the peers with the preset they are compared with, are timed round-robin."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from mdanet_sdk.bench.machine import peak_tflops
from mdanet_sdk.bench.records import BACKENDS, PEERS, BenchSettings, ForwardRecord
from mdanet_sdk.bench.runners import (
    Contender,
    Progress,
    contenders,
    forward_record,
    kind_channels,
    one_line,
    quiet,
)
from mdanet_sdk.bench.timing import Stats, measure_interleaved, sync_for
from mdanet_sdk.device import is_out_of_memory

__all__ = ["bench_forward", "reference_preset"]


def _bind_members(
    members: list[Contender],
    x: torch.Tensor,
    batch: int,
    precision: str,
    settings: BenchSettings,
    device: torch.device,
) -> tuple[dict[int, Callable[[], object]], list[ForwardRecord]]:
    """Bind each member to the batch ``x`` ``(batch, C, H, W)`` and call it once, untimed: ``(calls by member index,
    error records of the members that failed)``. The untimed call weeds out a backend that cannot run this
    batch (static shapes, OOM)."""
    calls: dict[int, Callable[[], object]] = {}
    errors: list[ForwardRecord] = []
    for i, c in enumerate(members):
        runner = c.runners[precision]
        call = runner.bind(x, precision)
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - reported in its record
            errors.append(
                forward_record(
                    settings,
                    device,
                    section=c.section,
                    backend=c.backend,
                    preset=c.preset,
                    model=c.model,
                    ops=runner.ops,
                    batch=batch,
                    precision=precision,
                    status="error",
                    reason=one_line(exc),
                )
            )
            if is_out_of_memory(exc) and device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        calls[i] = call
    return calls, errors


def _measured_record(
    c: Contender,
    batch: int,
    precision: str,
    seconds: list[float],
    settings: BenchSettings,
    device: torch.device,
    peak: dict[str, float | None],
) -> ForwardRecord:
    """The ok record of ``c`` from its timed ``seconds`` per call: latency, throughput, FLOP rates and (where the
    device ``peak`` TFLOP/s of ``precision`` is known) the fraction of it reached."""
    thr = Stats.of([batch / s for s in seconds])
    achieved = c.flops * thr.median / 1e9
    device_peak = peak.get(precision)
    return forward_record(
        settings,
        device,
        section=c.section,
        backend=c.backend,
        preset=c.preset,
        model=c.model,
        ops=c.runners[precision].ops,
        batch=batch,
        precision=precision,
        latency_ms=Stats.of([1e3 * s for s in seconds]),
        throughput=thr,
        gflop_per_slice=c.flops / 1e9,
        achieved_gflop_s=achieved,
        peak_fraction=achieved / (device_peak * 1e3) if device_peak else None,
        slices_per_s_per_gflop=thr.median / (c.flops / 1e9),
    )


def _time_group(
    group: list[Contender], settings: BenchSettings, device: torch.device, progress: Progress
) -> list[ForwardRecord]:
    """Time every contender of ``group`` round-robin at each (batch, precision)."""
    channels = kind_channels(settings.kind)
    peak = peak_tflops(device)
    records: list[ForwardRecord] = []
    for precision in settings.resolved_precisions():
        members = [c for c in group if precision in c.runners]
        for batch in settings.batch_sizes:
            progress(f"forward: batch {batch} {precision}: {', '.join(f'{c.preset}/{c.backend}' for c in members)}")
            x = torch.randn(batch, channels, settings.size, settings.size, device=device)
            calls, errors = _bind_members(members, x, batch, precision, settings, device)
            records += errors
            times = measure_interleaved(
                calls, warmup=max(0, settings.warmup - 1), repeats=settings.repeats, sync=sync_for(device)
            )
            for i, seconds in times.items():
                records.append(_measured_record(members[i], batch, precision, seconds, settings, device, peak))
    return records


def reference_preset(presets: Sequence[str]) -> str:
    """The MDANet preset the peers are compared with: ``paper`` when measured, else the first preset."""
    return "paper" if "paper" in presets or not presets else presets[0]


def _attach_ratios(records: list[ForwardRecord], reference: str) -> None:
    """Set ``baseline``/``ratio``: eager of the same preset; for peers, eager of ``reference``."""
    eager = {(r.preset, r.batch, r.precision): r for r in records if r.backend == "eager" and r.status == "ok"}
    for r in records:
        base_preset = reference if r.section == "peers" else r.preset
        r.baseline = f"eager/{base_preset}"
        base = eager.get((base_preset, r.batch, r.precision))
        if r.throughput is not None and base is not None and base.throughput is not None:
            r.ratio = r.throughput.median / base.throughput.median


def bench_forward(settings: BenchSettings, workdir: Path, progress: Progress = quiet) -> list[ForwardRecord]:
    """The forward section (MDANet presets × backends) and the peers section (eager only).

    Each preset's backends are timed together round-robin; the peers join the group of the preset they are
    compared with (:func:`reference_preset`), whose eager backend is measured even without the forward section.
    """
    device = settings.resolved_device()
    reference = reference_preset(settings.presets)
    presets = list(settings.presets) if "forward" in settings.sections else []
    if "peers" in settings.sections and reference not in presets:
        presets.append(reference)
    records: list[ForwardRecord] = []
    for preset in presets:
        backends = settings.backends if "forward" in settings.sections else ("eager",)
        if "eager" not in backends:  # every ratio needs the eager baseline of the same run
            backends = ("eager", *backends)
        group, failed = contenders("forward", preset, backends, settings, device, workdir, progress)
        if preset == reference and "peers" in settings.sections:
            for peer in PEERS:
                more, more_failed = contenders("peers", peer, ("eager",), settings, device, workdir, progress)
                group, failed = group + more, failed + more_failed
        records += failed + _time_group(group, settings, device, progress)
    rank = {name: i for i, name in enumerate([*presets, *PEERS, *BACKENDS])}
    records.sort(key=lambda r: (r.section, rank[r.preset], rank[r.backend], r.precision, r.batch))
    _attach_ratios(records, reference)
    return records
