"""``mdanet-sdk segment``: lesion masks, probability maps, reports and overlays for one or many cases.

Parses the options and calls :func:`mdanet_sdk.segment` (inputs, weights and output names:
:mod:`mdanet_sdk.inference.planning`). Exit code 0 when every case was segmented, 1 when any failed (one
``error:`` line per failed case; the other cases are still written), 2 for a usage error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from mdanet_sdk.cli._app import command, console, err_console
from mdanet_sdk.cli._progress import case_bars
from mdanet_sdk.errors import InputError

__all__ = ["segment"]

_DEFAULT = "Default: the checkpoint's, else"


def _parse_mapping(items: list[str]) -> dict[str, Path]:
    """``["dwi=a.nii.gz", "adc=b.nii.gz"]`` → ``{"dwi": Path("a.nii.gz"), ...}``."""
    mapping: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"-m expects MODALITY=FILE, e.g. -m dwi=a.nii.gz; got {item!r}.")
        if name.lower() in mapping:
            raise InputError(f"-m names {name.lower()} twice; give one file per modality.")
        mapping[name.lower()] = Path(path)
    return mapping


def _print(text: str, style: str) -> None:
    err_console.print(
        f"[bold {style}]{'error' if style == 'red' else 'warning'}:[/] {escape(text)}", highlight=False, soft_wrap=True
    )


def _summarise(done: list[Any], failed: list[Any], report_error: str | None, report: Path | None, quiet: bool) -> None:
    """One ``error:`` line per failed case, one ``warning:`` line per doubt, then (unless quiet) the table and
    what was written where."""
    for case in failed:
        named = case.error.startswith(f"case {case.case_id}:")
        _print(case.error if named else f"{case.case_id}: {case.error}", "red")
    if report_error:
        _print(report_error, "red")
    if quiet:
        return
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
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(help="Cases: 4D NIfTI files, case folders (ISLES'22/'18, dwi.nii.gz...) or dataset roots."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("-o", "--out", help="Output folder, or the mask file for one case. Default: current folder."),
    ] = None,
    checkpoint: Annotated[
        list[str] | None,
        typer.Option(
            "--checkpoint",
            "-c",
            help="Checkpoint file or bundled name (default-mri, default-ctp); repeat for a fold "
            "ensemble. Default: the bundled weights that fit each case.",
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Exported artefact (mdanet-sdk export, .ts/.pt2) to run instead of a checkpoint."),
    ] = None,
    prob: Annotated[bool, typer.Option("--prob", help="Also write <case>_prob.nii.gz (float32).")] = False,
    tta: Annotated[
        bool | None,
        typer.Option(
            "--tta/--no-tta", help="Average over flipped copies (4x slower). Default: as the checkpoint recommends."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Slices per forward pass.")] = 16,
    device: Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda, cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto (bf16/fp16 on GPU, fp32 on CPU), fp32, fp16, bf16.")] = "auto",
    threshold: Annotated[float | None, typer.Option(help=f"Lesion probability threshold. {_DEFAULT} 0.5.")] = None,
    min_size: Annotated[
        int | None, typer.Option("--min-size", min=0, help=f"Drop lesions smaller than this (voxels). {_DEFAULT} 0.")
    ] = None,
    max_adc_ratio: Annotated[
        float | None,
        typer.Option(
            "--max-adc-ratio",
            min=0.0,
            help=f"MRI: drop lesions whose median ADC is above this multiple of the tissue ADC (0: off). {_DEFAULT} 0.",
        ),
    ] = None,
    report: Annotated[Path | None, typer.Option("--report", "--json", help="Write a JSON report of all cases.")] = None,
    overlay: Annotated[
        Path | None,
        typer.Option("--overlay", help="PNG of the lesion outline (a folder, or a .png name used as stem)."),
    ] = None,
    modality: Annotated[
        list[str] | None,
        typer.Option("-m", "--modality", help="One case from one file per modality: -m dwi=a.nii.gz -m adc=b.nii.gz."),
    ] = None,
    modalities: Annotated[
        str | None, typer.Option("--modalities", help="Order of the volumes in 4D files, e.g. dwi,adc.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors (for pipelines).")] = False,
    trust: Annotated[
        bool,
        typer.Option(
            "--trust",
            help="Load a checkpoint or artefact that has no integrity record (your own file from an older "
            "mdanet-sdk). Damaged files are refused either way.",
        ),
    ] = False,
) -> None:
    """Segment stroke lesions; write masks (and probability maps, a JSON report, overlays)."""
    from mdanet_sdk.inference import FailedCase, SegmentationResult
    from mdanet_sdk.inference.batch import segment as segment_cases

    mapping = _parse_mapping(modality or [])
    items: list[Path | dict[str, Path]] = [*([mapping] if mapping else []), *(inputs or [])]
    if not items:
        raise InputError("no input given; pass case files or folders, or -m dwi=a.nii.gz -m adc=b.nii.gz.")
    done: list[SegmentationResult] = []
    failed: list[FailedCase] = []
    report_error: str | None = None
    with case_bars(quiet) as progress:
        outcomes = segment_cases(
            items,
            out,
            checkpoint=checkpoint,
            model=model,
            prob=prob,
            overlay=overlay,
            report=report,
            modalities=modalities,
            trust=trust,
            progress=progress,
            device=device,
            precision=precision,
            batch_size=batch_size,
            tta=tta,
            threshold=threshold,
            min_size=min_size,
            max_adc_ratio=max_adc_ratio,
        )
        try:
            for outcome in outcomes:
                if isinstance(outcome, FailedCase):
                    failed.append(outcome)
                else:
                    done.append(outcome)
        except InputError as exc:  # the report could not be written; the masks are
            report_error = str(exc)
    _summarise(done, failed, report_error, None if report_error else report, quiet)
    if failed or report_error:
        raise typer.Exit(1)
