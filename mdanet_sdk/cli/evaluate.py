"""``mdanet-sdk evaluate PRED_DIR|RUN_DIR GT_DIR``: per-case and aggregate metrics of predicted masks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mdanet_sdk.cli._app import JSON_HELP, command, console, emit_json, err_console, fail, plain
from mdanet_sdk.cli._options import LabelPattern
from mdanet_sdk.errors import MDANetError

if TYPE_CHECKING:
    from mdanet_sdk.evaluate import EvaluationResult

__all__ = ["evaluate_command"]

# Per case F1 equals DSC (mdanet_sdk.metrics), so the table shows DSC only; percentages with one decimal
# keep ten columns within an 80-column terminal.
_COLUMNS = ("DSC %", "prec. %", "rec. %", "HD95 mm", "ASD mm", "|ΔV| mL", "|ΔN|", "lesion F1")


def _mm(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def _case_table(result: EvaluationResult) -> Table:
    """One row per scored case and per skipped case; the fold column only for a run folder."""
    folds = result.over == "folds"
    table = Table(title="per case")
    for name in ("case", *(("fold",) if folds else ()), *_COLUMNS):
        table.add_column(name, justify="left" if name == "case" else "right", overflow="fold")
    for c in result.cases:
        table.add_row(
            plain(c["case_id"] + (" (missing)" if c["missing"] else "")),
            *((str(c["fold"]),) if folds else ()),
            *(f"{100 * c[k]:.1f}" for k in ("dsc", "precision", "recall")),
            _mm(c["hd95_mm"]),
            _mm(c["asd_mm"]),
            f"{c['abs_volume_diff_ml']:.2f}",
            f"{c['abs_lesion_count_diff']:.0f}",
            f"{c['lesion_f1']:.2f}",
        )
    for case_id in result.skipped:
        table.add_row(plain(f"{case_id} (missing)"), *("-" for _ in range(len(table.columns) - 1)))
    return table


def _print_lists(result: EvaluationResult) -> None:
    if result.missing:
        how = "left out of the means"
        if result.missing_policy == "empty":  # a case in no fold of a run has no fold to be scored in
            scored, left = len(result.missing) - len(result.skipped), len(result.skipped)
            parts = [
                f"{scored} scored as empty masks" if scored else "",
                f"{left} in no fold of the run, left out" if left else "",
            ]
            how = "; ".join(p for p in parts if p)
        console.print(
            f"[yellow]{len(result.missing)} ground-truth case(s) without prediction ({escape(how)}):[/] "
            f"{escape(', '.join(result.missing[:10]))}{' ...' if len(result.missing) > 10 else ''}",
            highlight=False,
        )
    if result.unmatched:
        console.print(
            f"[yellow]{len(result.unmatched)} prediction(s) without ground truth:[/] "
            f"{escape(', '.join(result.unmatched[:10]))}",
            highlight=False,
        )


def _fail_cases(result: EvaluationResult) -> None:
    """One error: line per case that could not be scored, and exit code 1 if there was one."""
    for error in result.failed.values():
        fail(error)
    if result.failed:
        raise typer.Exit(1)


@command("evaluate")
def evaluate_command(
    pred: Annotated[
        Path,
        typer.Argument(
            help="Predicted masks (<case>_seg.nii.gz, nnU-Net <case>.nii.gz, DeepISLES <case>/lesion_msk.nii.gz) "
            "or a train run folder."
        ),
    ],
    gt: Annotated[Path, typer.Argument(help="Ground-truth dataset folder (any layout) or folder of label files.")],
    layout: Annotated[
        str,
        typer.Option(help="Layout of GT_DIR (auto detects it): isles22, isles18, generic, or another of segment's."),
    ] = "auto",
    label_pattern: LabelPattern = None,
    pred_pattern: Annotated[
        str | None,
        typer.Option(
            "--pred-pattern",
            metavar="PATTERN",
            help="Read only predictions of this name, relative to PRED, {case} for the case id and * for any "
            "characters, e.g. '{case}/output/lesion.nii.gz' or 'pred_{case}.nii.gz'.",
        ),
    ] = None,
    missing: Annotated[
        str,
        typer.Option(
            metavar="empty|skip|fail",
            help="A ground-truth case without prediction: score it as an empty mask (empty), leave it out of "
            "the means (skip), or stop (fail). It is listed in every case.",
        ),
    ] = "empty",
    threshold: Annotated[
        float | None, typer.Option(help="Binarise predictions as value > T (for probability maps).")
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", metavar="FILE", help=f"{JSON_HELP} Default: PRED/evaluation.json, a CSV beside it."),
    ] = None,
    # The JSON option was -o/--out before --json meant the same in every command; kept for old scripts.
    out: Annotated[Path | None, typer.Option("--out", "-o", hidden=True, help="Deprecated: use --json.")] = None,
    cases: Annotated[bool, typer.Option("--cases/--no-cases", help="Print the per-case table.")] = True,
) -> None:
    """Score predictions against ground truth: DSC, precision, recall, F1, HD95, ASD and the ISLES'22 metrics.

    Predictions are matched by case id, whatever tool named them; a case without one is listed.

    Summary: mean ± std over folds for a run folder, as in the paper; over cases for a prediction folder.

    HD95 and ASD are in mm; a case with exactly one mask empty has none and is left out of their means.

    A case that cannot be scored (an unreadable file, a prediction on another grid) fails alone: the others are
    scored and written, then one error: line per failed case.

    Exit codes: 0 scored; 1 the data, or some cases, cannot be scored (one error: line each); 2 a wrong argument.
    """
    from mdanet_sdk.data.layouts import LAYOUTS
    from mdanet_sdk.evaluate import MISSING_POLICIES, check_pred_pattern, check_report_paths, check_threshold, evaluate
    from mdanet_sdk.evaluate import summary_rows

    if out is not None:
        if json_out is not None:
            raise fail("--out is the old name of --json; give only --json.")
        err_console.print("[yellow]-o/--out is deprecated; use --json.[/]", highlight=False)
    if layout not in LAYOUTS:
        raise fail(f"--layout {layout!r} is not a layout; choose one of {', '.join(LAYOUTS)}.")
    if missing not in MISSING_POLICIES:
        raise fail(f"--missing {missing!r} is not a policy; choose one of {', '.join(MISSING_POLICIES)}.")
    for name, folder in (("PRED", pred), ("GT_DIR", gt)):
        if not folder.is_dir():
            raise fail(f"{name} {folder} is not a folder; check the path.")
    if pred_pattern is not None:
        check_pred_pattern(pred_pattern)  # a wrong argument: exit 2 through @command
    check_threshold(threshold)  # a wrong argument too
    json_path = json_out or out or pred / "evaluation.json"
    csv_path = json_path.with_suffix(".csv")
    if str(json_path) != "-":  # checked before scoring: never replace a prediction, a label or a sidecar
        check_report_paths(json_path, csv_path)
    try:
        result = evaluate(
            pred,
            gt,
            layout=layout,
            label_pattern=label_pattern,
            threshold=threshold,
            pred_pattern=pred_pattern,
            missing=missing,
        )
    except MDANetError as exc:  # the arguments were right; the data cannot be scored
        raise fail(str(exc), 1) from None
    if str(json_path) == "-":  # the JSON alone on stdout (no tables, no CSV), for pipes
        emit_json(result.to_dict(), json_path)
        _fail_cases(result)
        return
    if cases:
        console.print(_case_table(result))
    summary = Table(title=f"mean ± std over {result.over} ({len(result.cases)} cases)")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for name, value in summary_rows(result):
        summary.add_row(name, value)
    console.print(summary)
    _print_lists(result)
    try:
        written = result.save(json_path, csv_path)
    except OSError as exc:
        raise fail(
            f"cannot write {json_path} ({exc.strerror or type(exc).__name__}); choose a writable file.", 1
        ) from None
    console.print(f"wrote {', '.join(str(p) for p in written)}", highlight=False, markup=False, soft_wrap=True)
    _fail_cases(result)
