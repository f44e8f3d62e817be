"""``mdanet-sdk benchmark``: forward throughput per backend, end-to-end segmentation, predict_many scaling,
native ops and peers, printed as one table (ratios to eager measured in the same run)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from mdanet_sdk.cli._app import JSON_HELP, command, console, emit_json, err_console
from mdanet_sdk.data.targets import check_picture_file, check_report_file
from mdanet_sdk.cli._options import Device
from mdanet_sdk.errors import InputError

if TYPE_CHECKING:  # the harness imports torch: load it only when the command runs, not on every CLI start
    from mdanet_sdk.bench import BenchmarkReport

__all__ = ["benchmark", "render_table"]


def _names(spec: str | None, allowed: tuple[str, ...], what: str) -> tuple[str, ...] | None:
    """``"a,b"`` → ``("a", "b")``; ``"all"`` → ``allowed``; None stays None (the settings' default)."""
    if spec is None:
        return None
    if spec.strip() == "all":
        return allowed
    names = tuple(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))
    if not names:
        raise InputError(f"--{what} needs at least one name; use one or more of {', '.join(allowed)} or all.")
    return names


def _ints(spec: str | None, what: str) -> tuple[int, ...] | None:
    if spec is None:
        return None
    try:
        values = tuple(int(n) for n in spec.split(",") if n.strip())
    except ValueError:
        raise InputError(f"--{what} must be comma-separated integers like 1,8,32; got {spec!r}.") from None
    if not values:
        raise InputError(f"--{what} needs at least one integer, e.g. 1,8,32.")
    return values


def render_table(report: BenchmarkReport) -> Table:
    """The report as one rich table, a section per benchmark, with the machine in the caption."""
    from mdanet_sdk.bench import SUMMARY_COLUMNS, summary_rows

    m = report.machine
    gpu = f", GPU {m['gpu']['name']}" if m.get("gpu") else ""
    table = Table(
        title=f"mdanet-sdk benchmark{' (quick)' if report.settings.quick else ''}",
        caption=(
            f"{m['cpu']}, {m['cpus_usable']} usable cores, {m['torch_threads']} torch threads{gpu}; torch "
            f"{m['torch']}; load {m['load_avg_1m']} → {report.load_avg_end}; {report.seconds:.0f} s. "
            "Median over repeats after warm-up; spread = quartiles; × base = ratio to the baseline measured "
            "alternately in this run (> 1 is faster): eager, or for the today/defaults rows today's behaviour "
            "(fp32, contiguous, batch 16, no compile, memory handed back, every slice flipped for TTA; its own process)."
        ),
    )
    for column in SUMMARY_COLUMNS:
        right = column in ("batch", "median", "spread (IQR)", "throughput", "× base")
        table.add_column(column, justify="right" if right else "left", overflow="fold")
    section = None
    for row in summary_rows(report):
        if section is not None and row["section"] != section:
            table.add_section()
        section = row["section"]
        table.add_row(*(escape(row[c]) for c in SUMMARY_COLUMNS))
    return table


@command("benchmark")
def benchmark(
    preset: Annotated[str | None, typer.Option(help="paper, small (full: paper,small; quick: small).")] = None,
    backend: Annotated[str, typer.Option(help="eager, native, torchscript, exported, tensorrt or all.")] = "all",
    batch_sizes: Annotated[str | None, typer.Option(help="Forward batch sizes (full: 1,8,32; quick: 1,4).")] = None,
    size: Annotated[int | None, typer.Option(help="Slice side, a multiple of 16 (full: 256; quick: 64).")] = None,
    slices: Annotated[int | None, typer.Option(help="Z of the end-to-end volumes (20 CTP, 73 MRI; quick: 8).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", metavar="FILE", help=JSON_HELP)] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of throughput against batch size here.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes, 3 repeats: ~1 min on 2 idle cores.")] = False,
    sections: Annotated[str, typer.Option(help="forward, peers, segment, many, ops or all.")] = "all",
    kind: Annotated[str, typer.Option(help="Forward input kind: ctp (4 channels) or mri (2).")] = "ctp",
    device: Device = "auto",
    repeats: Annotated[int | None, typer.Option(help="Timed repeats per measurement (full: 5; quick: 3).")] = None,
    warmup: Annotated[int | None, typer.Option(help="Untimed warm-up rounds (1).")] = None,
    case: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="PATH",
            help="A case or dataset folder of yours, also segmented by today's behaviour and the defaults "
            "(segment section; every case of a dataset folder, each a full comparison; repeatable).",
        ),
    ] = None,
) -> None:
    """Measure throughput and latency per backend and batch size, end-to-end segmentation, predict_many
    scaling, the native ops and peer networks; print one table with ratios to eager. Exit code 1 when a --case
    could not be read or segmented (one error: line each, after the table and the JSON)."""
    from mdanet_sdk.bench import BACKENDS, SECTIONS, BenchSettings, plot_throughput, run_benchmark, write_json

    options: dict[str, Any] = {
        "presets": _names(preset, ("paper", "small"), "preset"),
        "backends": _names(backend, BACKENDS, "backend"),
        "sections": _names(sections, SECTIONS, "sections"),
        "batch_sizes": _ints(batch_sizes, "batch-sizes"),
        "size": size,
        "slices": slices,
        "kind": kind,
        "device": device,
        "repeats": repeats,
        "warmup": warmup,
        "cases": tuple(str(p) for p in case) if case else None,
    }
    options = {k: v for k, v in options.items() if v is not None}
    settings = BenchSettings.quick_run(**options) if quick else BenchSettings(**options)
    json_file = json_out if json_out is not None and str(json_out) != "-" else None
    if json_file is not None:  # before minutes of timing: never over an image, a sidecar or a model
        check_report_file(json_file)
    if plot is not None:
        check_picture_file(plot, "--plot")
    report = run_benchmark(
        settings,
        progress=lambda line: err_console.print(f"[dim]… {escape(line)}[/]", highlight=False),
        # the JSON file is rewritten after every section, so an interrupted run keeps what it finished
        on_section=(lambda partial: write_json(partial, json_file)) if json_file is not None else None,
    )
    if json_out is not None and json_file is None:  # --json -: stdout holds the JSON alone, instead of the table
        emit_json(report.to_dict(), json_out)
    else:
        console.print(render_table(report))
    if json_file is not None:
        console.print(f"JSON: {write_json(report, json_file)}", markup=False, highlight=False, soft_wrap=True)
    if plot is not None:  # on stderr after --json -, whose stdout holds the JSON alone
        where = err_console if json_out is not None and json_file is None else console
        where.print(f"plot: {plot_throughput(report, plot)}", markup=False, highlight=False, soft_wrap=True)
    failed = report.unmeasured_cases()
    for record in failed:  # as `segment` does: the others are measured and written, the exit code says it
        err_console.print(f"error: case {record.case}: {record.reason}", markup=False, highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)
