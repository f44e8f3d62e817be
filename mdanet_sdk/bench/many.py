"""The many section: ``Segmenter.predict_many`` over N phantom cases, one fresh process per N (so each peak
resident set belongs to one N alone): cases/s and peak memory. ``python -m mdanet_sdk.bench SPEC`` runs the
child side (:func:`many_child`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from mdanet_sdk import ops
from mdanet_sdk.bench.records import BenchSettings, ManyRecord
from mdanet_sdk.bench.runners import Progress, quiet
from mdanet_sdk.bench.segment import phantom_dataset, random_segmenter
from mdanet_sdk.info import proc_field

__all__ = ["bench_many", "many_child"]


def _rss_mb(key: str) -> float | None:
    """``VmHWM`` (peak) or ``VmRSS`` (current) of this process in MB, from /proc; getrusage where it lacks."""
    value = proc_field("/proc/self/status", key)
    if value is not None:
        return int(value.split()[0]) / 1024
    if key != "VmHWM":
        return None
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def many_child(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: ``predict_many`` over the first ``n`` cases of ``root``; time and peak memory.

    Args:
        spec: ``root``, ``n``, ``preset``, ``kind``, ``device``, ``batch``, ``out`` (where the masks go).

    Returns:
        ``seconds``, ``cases_per_s``, ``setup_rss_mb``, ``peak_rss_mb``, ``peak_gpu_mb`` (the measured fields of
        a :class:`~mdanet_sdk.bench.records.ManyRecord`).
    """
    from mdanet_sdk.data.cases import find_cases

    device = torch.device(spec["device"])
    out = Path(spec["out"])
    sources = find_cases(spec["root"])[: spec["n"]]
    segmenter = random_segmenter(spec["preset"], spec["kind"], device=device, batch=spec["batch"])
    segmenter.predict(sources[0])  # warm-up: lazy initialisation is not part of the per-case cost
    setup = _rss_mb("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for result in segmenter.predict_many(sources):
        result.save(out / f"{result.case_id}.nii.gz")
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "cases_per_s": len(sources) / seconds,
        "setup_rss_mb": setup,
        "peak_rss_mb": _rss_mb("VmHWM"),
        "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
    }


def bench_many(settings: BenchSettings, workdir: Path, progress: Progress = quiet) -> list[ManyRecord]:
    """The many section: ``predict_many`` on N MRI-like phantoms for each N, each in a fresh process."""
    device = settings.resolved_device()
    # The Segmenter builds its networks with ops="auto": native when built, else the eager composite.
    backend = "native" if ops.implementation("auto", device) == "native" else "eager"
    kind, preset = "mri", settings.segment_presets[0]
    shape = settings.volume_shape(kind)
    # the fields every record shares (a partial, so mypy checks them against ManyRecord)
    record = partial(ManyRecord, kind=kind, shape=shape, preset=preset, backend=backend, device=str(device))
    counts = sorted(set(settings.many_counts))
    progress(f"predict_many: writing {max(counts)} phantoms")
    root = phantom_dataset(kind, shape, max(counts), workdir / "phantoms")
    records = []
    for n in counts:
        progress(f"predict_many: {n} case(s) in a fresh process")
        spec = dict(
            root=str(root),
            n=n,
            preset=preset,
            kind=kind,
            device=str(device),
            batch=settings.segment_batch,
            out=str(workdir / f"many-{n}"),
        )
        proc = subprocess.run(
            [sys.executable, "-m", "mdanet_sdk.bench", json.dumps(spec)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            reason = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            records.append(record(n_cases=n, status="error", reason=reason))
            continue
        records.append(record(n_cases=n, **json.loads(proc.stdout.strip().splitlines()[-1])))
    return records
