"""``mdanet-sdk segment``: lesion masks, probability maps, reports and overlays for one or many cases.

Parses the options and calls :func:`mdanet_sdk.segment` (inputs, weights and output names:
:mod:`mdanet_sdk.inference.planning`; resuming: :mod:`~mdanet_sdk.inference.resume`; ``--shard`` and
``torchrun``: :mod:`~mdanet_sdk.inference.sharding`). Exit code 0 when every case (of this shard) was segmented
or skipped, 1 when any failed (one ``error:`` line per failed case; the other cases are still written), 2 for a
usage error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from mdanet_sdk.cli._app import command, console, emit_json, err_console
from mdanet_sdk.cli import _options as opt
from mdanet_sdk.cli._progress import case_bars
from mdanet_sdk.errors import InputError

__all__ = ["segment"]


def _parse_mapping(items: list[str], brain_mask: Path | None) -> dict[str, Path]:
    """``["dwi=a.nii.gz", "adc=b.nii.gz"]`` → ``{"dwi": Path("a.nii.gz"), ...}``; ``mask=`` is short for
    ``brain_mask=`` (which ``--brain-mask`` must not repeat)."""
    from mdanet_sdk.data.cases import BRAIN_MASK_KEY  # here: the data modules load numpy and nibabel

    mapping: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"-m expects MODALITY=FILE, e.g. -m dwi=a.nii.gz; got {item!r}.")
        name = BRAIN_MASK_KEY if name.lower() == "mask" else name.lower()
        if name in mapping:
            raise InputError(f"-m names {name} twice; give one file per modality.")
        mapping[name] = Path(path)
    if brain_mask is not None and BRAIN_MASK_KEY in mapping:
        raise InputError("the brain mask is given twice (--brain-mask and -m brain_mask=); give it once.")
    return mapping


def _print(text: str, style: str) -> None:
    err_console.print(
        f"[bold {style}]{'error' if style == 'red' else 'warning'}:[/] {escape(text)}", highlight=False, soft_wrap=True
    )


def _summarise(
    done: list[Any], failed: list[Any], skipped: list[Any], report_error: str | None, report: Path | None, quiet: bool
) -> None:
    """One ``error:`` line per failed case, one ``warning:`` line per doubt, then (unless quiet) the skipped
    count, the table and what was written where."""
    for case in failed:
        named = case.error.startswith(f"case {case.case_id}:")
        _print(case.error if named else f"{case.case_id}: {case.error}", "red")
    if report_error:
        _print(report_error, "red")
    if quiet:
        return
    if skipped:
        n = len(skipped)
        console.print(f"skipped {n} case{'s' if n != 1 else ''} whose outputs are complete (--skip-existing)")
    for result in done:  # doubts about a case, one line each (and in the report)
        for warning in result.report.warnings:
            _print(f"{result.case_id}: {warning}", "yellow")
    from mdanet_sdk.report import report_table

    if done:
        console.print(report_table([r.report for r in done]))
    for result in done:
        written = ", ".join(str(p) for p in result.outputs.values())
        console.print(f"{result.case_id}: {written}", highlight=False, soft_wrap=True, markup=False)
    if report is not None:
        console.print(f"report: {report}", highlight=False, soft_wrap=True, markup=False)


@command("segment")
def segment(
    inputs: opt.Inputs = None,
    out: opt.Out = None,
    checkpoint: opt.Checkpoints = None,
    model: opt.Model = None,
    prob: opt.Prob = False,
    tta: opt.Tta = None,
    batch_size: opt.BatchSize = None,
    compiled: opt.Compile = False,
    cuda_graphs: opt.CudaGraphs = None,
    tta_screen: opt.TtaScreen = True,
    device: opt.Device = "auto",
    precision: opt.Precision = "auto",
    threshold: opt.Threshold = None,
    min_size: opt.MinSize = None,
    max_adc_ratio: opt.MaxAdcRatio = None,
    report: opt.Report = None,
    overlay: opt.Overlay = None,
    modality: opt.Modality = None,
    modalities: opt.Modalities = None,
    brain_mask: opt.BrainMask = None,
    skip_existing: opt.SkipExisting = False,
    shard: opt.Shard = None,
    quiet: opt.Quiet = False,
    trust: opt.Trust = False,
) -> None:
    """Segment stroke lesions; write masks (and probability maps, a JSON report, overlays)."""
    from mdanet_sdk.inference import FailedCase, SegmentationResult
    from mdanet_sdk.inference.batch import segment as segment_cases
    from mdanet_sdk.inference.resume import SkippedCase, run_document
    from mdanet_sdk.inference.sharding import current_shard

    mapping = _parse_mapping(modality or [], brain_mask)
    items: list[Path | dict[str, Path]] = [*([mapping] if mapping else []), *(inputs or [])]
    if not items:
        raise InputError("no input given; pass case files or folders, or -m dwi=a.nii.gz -m adc=b.nii.gz.")
    done: list[SegmentationResult] = []
    failed: list[FailedCase] = []
    skipped: list[SkippedCase] = []
    report_error: str | None = None
    printed = report is not None and str(report) == "-"  # --json -: the report alone on stdout
    quiet = quiet or printed
    with case_bars(quiet) as progress:
        outcomes = segment_cases(
            items,
            out,
            checkpoint=checkpoint,
            model=model,
            prob=prob,
            overlay=overlay,
            report=None if printed else report,
            modalities=modalities,
            brain_mask=brain_mask,
            skip_existing=skip_existing,
            shard=shard,
            trust=trust,
            progress=progress,
            device=device,
            precision=precision,
            batch_size=batch_size,
            compile=compiled,
            cuda_graphs=cuda_graphs,
            tta_screen=tta_screen,
            tta=tta,
            threshold=threshold,
            min_size=min_size,
            max_adc_ratio=max_adc_ratio,
        )
        try:
            for outcome in outcomes:
                if isinstance(outcome, FailedCase):
                    failed.append(outcome)
                elif isinstance(outcome, SkippedCase):
                    skipped.append(outcome)
                else:
                    done.append(outcome)
        except InputError as exc:  # the report could not be written or merged; the masks are
            report_error = str(exc)
    sharded = current_shard(shard) is not None  # a sharded run names its reports itself, as it writes them
    _summarise(done, failed, skipped, report_error, None if report_error or printed or sharded else report, quiet)
    if printed:
        failures = {c.case_id: c.error for c in failed}
        emit_json(run_document([r.report for r in done], failures, skipped), Path("-"))
    if failed or report_error:
        raise typer.Exit(1)
