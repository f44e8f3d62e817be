"""One benchmark run: the sections of :class:`~mdanet_sdk.bench.records.BenchSettings` in order, into one
:class:`~mdanet_sdk.bench.records.BenchmarkReport`."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

from mdanet_sdk.bench.defaults import bench_defaults, user_cases
from mdanet_sdk.bench.forward import bench_forward
from mdanet_sdk.bench.machine import machine_info
from mdanet_sdk.bench.many import bench_many
from mdanet_sdk.bench.native_ops import bench_ops
from mdanet_sdk.bench.records import BenchmarkReport, BenchSettings
from mdanet_sdk.bench.runners import Progress, quiet
from mdanet_sdk.bench.segment import bench_segment
from mdanet_sdk.errors import InputError

__all__ = ["run_benchmark"]


def run_benchmark(
    settings: BenchSettings,
    workdir: Path | None = None,
    progress: Progress = quiet,
    on_section: Callable[[BenchmarkReport], object] | None = None,
) -> BenchmarkReport:
    """Run the sections of ``settings`` and return the report.

    Args:
        settings: what to measure.
        workdir: scratch folder for phantoms, artefacts and outputs (a temporary folder, removed after, if None).
        progress: called with one short line before each step.
        on_section: called with the report so far after each section (the CLI writes the JSON there, so an
            interrupted long run keeps the sections it finished); what it returns is ignored.

    Raises:
        InputError: ``settings.cases`` without the segment section, or a path of it that holds no case (checked
            before anything runs).
    """
    if settings.cases:
        if "segment" not in settings.sections:
            raise InputError("--case is measured in the segment section; add segment to --sections.")
        user_cases(settings.cases)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mdanet-bench-")))
        workdir.mkdir(parents=True, exist_ok=True)
        report = BenchmarkReport(machine=machine_info(settings.resolved_device()), settings=settings)
        steps: list[tuple[str, Callable[[], None]]] = [
            ("forward", lambda: setattr(report, "forward", bench_forward(settings, workdir, progress))),
            ("segment", lambda: setattr(report, "segment", bench_segment(settings, workdir, progress))),
            ("segment", lambda: setattr(report, "segment_defaults", bench_defaults(settings, workdir, progress))),
            ("many", lambda: setattr(report, "predict_many", bench_many(settings, workdir, progress))),
            ("ops", lambda: setattr(report, "ops", bench_ops(settings, progress))),
        ]
        for name, step in steps:
            wanted = {"forward", "peers"} if name == "forward" else {name}
            if wanted & set(settings.sections):
                started = time.perf_counter()
                step()
                report.section_seconds[name] = report.section_seconds.get(name, 0.0) + time.perf_counter() - started
                report.seconds = time.perf_counter() - start
                if on_section is not None:
                    on_section(report)
    report.seconds = time.perf_counter() - start
    report.load_avg_end = report.machine["load_avg_1m"] and round(os.getloadavg()[0], 2)
    return report
