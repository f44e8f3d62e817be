"""How a report is shown and kept: the CLI table's rows, the JSON file, and the throughput plot."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import numpy as np

from mdanet_sdk._files import atomic_write
from mdanet_sdk._files import write_json as _write_json
from mdanet_sdk.data.targets import check_picture_file, check_report_file
from mdanet_sdk.bench.records import BenchmarkReport, ForwardRecord
from mdanet_sdk.bench.timing import Stats
from mdanet_sdk.errors import InputError

__all__ = ["SUMMARY_COLUMNS", "summary_rows", "write_json", "plot_throughput"]

SUMMARY_COLUMNS = (
    "section",
    "what",
    "backend",
    "batch",
    "prec",
    "median",
    "spread (IQR)",
    "throughput",
    "× base",
    "notes",
)


def _num(value: float) -> str:
    """Three significant digits without exponent notation: 0.0123, 4.56, 78.9, 1,234."""
    return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"


def _ms(value: float) -> str:
    return f"{_num(value)} ms"


def _spread(stats: Stats) -> str:
    return f"{_num(stats.q1)}–{_num(stats.q3)}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def summary_rows(report: BenchmarkReport) -> list[dict[str, str]]:
    """One row per measurement for the CLI table (keys :data:`SUMMARY_COLUMNS`); a backend that cannot run
    here gets a single row saying why."""
    blank = dict.fromkeys(SUMMARY_COLUMNS, "")
    return [
        *_forward_rows(report, blank),
        *_segment_rows(report, blank),
        *_defaults_rows(report, blank),
        *_many_rows(report, blank),
        *_ops_rows(report, blank),
    ]


def _forward_notes(r: ForwardRecord) -> str:
    """The notes of an ok forward row: FLOPs per slice, achieved GFLOP/s, slices/s per GFLOP, share of peak."""
    # _time_group fills every measured field of an ok record
    assert r.gflop_per_slice is not None and r.achieved_gflop_s is not None
    assert r.slices_per_s_per_gflop is not None
    notes = (
        f"{_num(r.gflop_per_slice)} GF/slice · {_num(r.achieved_gflop_s)} GF/s · "
        f"{_num(r.slices_per_s_per_gflop)} sl/s/GF"
    )
    if r.peak_fraction is not None:
        notes += f" · {100 * r.peak_fraction:.1f}% peak"
    if r.section == "peers":
        notes += f" · × vs {r.baseline}"
    return notes


def _forward_rows(report: BenchmarkReport, blank: dict[str, str]) -> list[dict[str, str]]:
    """Rows of the forward and peers sections; one row per preset, backend and failure status that did not run."""
    rows: list[dict[str, str]] = []
    said: set[tuple[str, str, str]] = set()
    for r in report.forward:
        what = f"{r.preset} {r.size}²"
        if r.status != "ok":
            if (r.preset, r.backend, r.status) not in said:
                said.add((r.preset, r.backend, r.status))
                rows.append(
                    {
                        **blank,
                        "section": r.section,
                        "what": what,
                        "backend": r.backend,
                        "notes": f"{r.status}: {r.reason}",
                    }
                )
            continue
        assert r.latency_ms is not None and r.throughput is not None  # filled in every ok record
        rows.append(
            {
                "section": r.section,
                "what": what,
                "backend": r.backend,
                "batch": str(r.batch),
                "prec": r.precision,
                "median": _ms(r.latency_ms.median),
                "spread (IQR)": _spread(r.latency_ms),
                "throughput": f"{_num(r.throughput.median)} slices/s",
                "× base": _ratio(r.ratio),
                "notes": _forward_notes(r),
            }
        )
    return rows


def _segment_rows(report: BenchmarkReport, blank: dict[str, str]) -> list[dict[str, str]]:
    """Rows of the segment section, with each stage's share of the time in the notes."""
    rows: list[dict[str, str]] = []
    for s in report.segment:
        what = f"{s.kind} {'×'.join(map(str, s.shape))} {s.preset}"
        if s.status != "ok" or s.total_ms is None:
            rows.append(
                {**blank, "section": "segment", "what": what, "backend": s.backend, "notes": f"{s.status}: {s.reason}"}
            )
            continue
        assert s.slices_per_s is not None  # set together with total_ms
        shares = ", ".join(f"{k} {100 * v['share']:.0f}%" for k, v in s.stages.items())
        if s.segmenter_ms is not None:
            shares += f"; Segmenter.predict+save {_ms(s.segmenter_ms.median)}"
        rows.append(
            {
                "section": "segment",
                "what": what,
                "backend": s.backend,
                "batch": str(s.batch),
                "prec": s.precision,
                "median": _ms(s.total_ms.median),
                "spread (IQR)": _spread(s.total_ms),
                "throughput": f"{_num(s.slices_per_s)} slices/s",
                "× base": _ratio(s.ratio),
                "notes": shares,
            }
        )
    return rows


def _variant_label(variant: dict[str, Any]) -> str:
    """A variant of the today/defaults comparison in a few words: ``contiguous`` (+ ``compiled``, + ``memory
    kept``, + ``TTA screened``)."""
    compiled = " compiled" if variant["compiled"] else ""
    kept = " memory kept" if variant.get("retain_memory") else ""  # absent in schema-3 files before it
    screened = " TTA screened" if variant.get("tta_screen") else ""  # absent in files before the screen
    return f"{variant['memory_format']}{compiled}{kept}{screened}"


def _defaults_rows(report: BenchmarkReport, blank: dict[str, str]) -> list[dict[str, str]]:
    """Rows of the today → defaults comparison: today's row, then the defaults' row with the ratio to today."""
    rows: list[dict[str, str]] = []
    for d in report.segment_defaults:
        case = "" if d.case == "phantom" else f" {d.case}"
        what = f"{d.kind}{case} {'×'.join(map(str, d.shape))} {d.weights}" if d.weights else d.case
        if d.status != "ok":
            rows.append(
                {
                    **blank,
                    "section": "segment",
                    "what": what,
                    "backend": "today → defaults",
                    "notes": f"{d.status}: {d.reason}",
                }
            )
            continue
        for name, v in d.variants.items():
            notes = _variant_label(v)
            if name == "defaults" and d.round_ratio is not None:
                notes += f"; × today per round {_spread(d.round_ratio)}; mask Dice vs today {d.mask_dice:.4f}"
            rows.append(
                {
                    "section": "segment",
                    "what": what,
                    "backend": name,
                    "batch": str(v["batch"]),
                    "prec": v["precision"],
                    "median": _ms(v["total_ms"].median),
                    "spread (IQR)": _spread(v["total_ms"]),
                    "throughput": f"{_num(v['slices_per_s'])} slices/s",
                    "× base": _ratio(1.0 if name == "today" else d.ratio),
                    "notes": notes,
                }
            )
    return rows


def _many_rows(report: BenchmarkReport, blank: dict[str, str]) -> list[dict[str, str]]:
    """Rows of the predict_many section (one run each), with the peak memory in the notes."""
    rows: list[dict[str, str]] = []
    for m in report.predict_many:
        what = f"{m.n_cases} × {m.kind} {'×'.join(map(str, m.shape))} {m.preset}"
        if m.status != "ok":
            rows.append(
                {**blank, "section": "many", "what": what, "backend": m.backend, "notes": f"{m.status}: {m.reason}"}
            )
            continue
        assert m.cases_per_s is not None  # an ok record holds the child's measurements
        mem = f"peak RSS {m.peak_rss_mb:,.0f} MB (after setup {m.setup_rss_mb:,.0f} MB)"
        if m.peak_gpu_mb is not None:
            mem += f", GPU {m.peak_gpu_mb:,.0f} MB"
        rows.append(
            {
                **blank,
                "section": "many",
                "what": what,
                "backend": m.backend,
                "median": _ms(1e3 * (m.seconds or 0.0)),
                "throughput": f"{_num(m.cases_per_s)} cases/s",
                "notes": mem + " (one run)",
            }
        )
    return rows


def _ops_rows(report: BenchmarkReport, blank: dict[str, str]) -> list[dict[str, str]]:
    """Rows of the ops section (batch 1, fp32)."""
    rows: list[dict[str, str]] = []
    for o in report.ops:
        if o.status != "ok" or o.latency_ms is None:
            rows.append(
                {**blank, "section": "ops", "what": o.call, "backend": o.backend, "notes": f"{o.status}: {o.reason}"}
            )
            continue
        rows.append(
            {
                **blank,
                "section": "ops",
                "what": o.call,
                "backend": o.backend,
                "batch": "1",
                "prec": "fp32",
                "median": _ms(o.latency_ms.median),
                "spread (IQR)": _spread(o.latency_ms),
                "× base": _ratio(o.ratio),
            }
        )
    return rows


def write_json(report: BenchmarkReport, path: str | os.PathLike[str]) -> Path:
    """Write ``report.to_dict()`` to ``path`` as indented JSON, atomically.

    Raises:
        InputError: ``path`` is an image, a sidecar, a model or a run's record
            (:func:`~mdanet_sdk.data.targets.check_report_file`).
    """
    check_report_file(path)
    return _write_json(path, report.to_dict())


def plot_throughput(report: BenchmarkReport, path: str | os.PathLike[str]) -> Path:
    """PNG of forward throughput (slices/s, median with IQR bars) against batch size: one panel per preset,
    one line per backend and precision; peers share a panel. Written atomically.

    Raises:
        InputError: ``path`` is no place for a PNG (:func:`~mdanet_sdk.data.targets.check_picture_file`), or the
            report has no successful forward record to plot.
    """
    import matplotlib

    check_picture_file(path, "plot")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in report.forward if r.status == "ok" and r.throughput is not None]
    if not ok:
        raise InputError("Nothing to plot: the run has no forward measurement (add the forward section).")
    panels = list(dict.fromkeys("peers" if r.section == "peers" else r.preset for r in ok))
    reference = next((r.baseline for r in ok if r.section == "peers"), None)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        lines: dict[str, list[ForwardRecord]] = {}
        for r in ok:
            if panel == "peers" and r.section == "peers":
                lines.setdefault(f"{r.preset} {r.precision}", []).append(r)
            elif panel == "peers" and f"{r.backend}/{r.preset}" == reference:
                lines.setdefault(f"MDANet {r.preset} (eager) {r.precision}", []).append(r)
            elif r.section != "peers" and r.preset == panel:
                lines.setdefault(f"{r.backend} {r.precision}", []).append(r)
        batches = sorted({r.batch for recs in lines.values() for r in recs})
        for label, recs in lines.items():
            recs.sort(key=lambda r: r.batch)
            thr = [cast(Stats, r.throughput) for r in recs]  # ok holds only records with a throughput
            med = np.array([t.median for t in thr])
            err = np.array([[m - t.q1, t.q3 - m] for m, t in zip(med, thr)]).T
            ax.errorbar([r.batch for r in recs], med, yerr=err, marker="o", capsize=3, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlabel("batch size")
        ax.set_ylabel("slices / s")
        ax.set_title(f"{panel} ({ok[0].kind}, {ok[0].size}², {ok[0].device})")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    m = report.machine
    fig.suptitle(f"mdanet-sdk benchmark — {m['cpu']}, {m['torch_threads']} threads, torch {m['torch']}", fontsize=9)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
