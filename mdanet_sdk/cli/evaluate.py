"""``mdanet-sdk evaluate PRED_DIR|RUN_DIR GT_DIR``: per-case and aggregate metrics of predicted masks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mdanet_sdk.cli._app import JSON_HELP, command, console, emit_json, err_console, fail, plain

__all__ = ["evaluate_command"]


@command("evaluate")
def evaluate_command(
    pred: Annotated[Path, typer.Argument(help="Folder of <case_id>_seg.nii.gz masks, or a train run folder.")],
    gt: Annotated[Path, typer.Argument(help="Ground-truth dataset folder (any layout) or folder of label files.")],
    layout: Annotated[str, typer.Option(help="Layout of GT_DIR: auto, isles22, isles18, generic.")] = "auto",
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
    """Score predictions against ground truth: DSC, precision, recall, F1 and the ISLES'22 metrics.

    Predictions are matched by case id (<case_id>_seg.nii.gz). For a run folder the summary is the
    mean ± std over folds, as in the paper; for a prediction folder, over cases.
    """
    from mdanet_sdk.evaluate import evaluate, summary_rows

    if out is not None:
        if json_out is not None:
            raise fail("--out is the old name of --json; give only --json.")
        err_console.print("[yellow]-o/--out is deprecated; use --json.[/]", highlight=False)
    result = evaluate(pred, gt, layout=layout, threshold=threshold)
    json_path = json_out or out or pred / "evaluation.json"
    if str(json_path) == "-":  # the JSON alone on stdout (no tables, no CSV), for pipes
        emit_json(result.to_dict(), json_path)
        return
    written = result.save(json_path, json_path.with_suffix(".csv"))
    if cases:
        table = Table(title="per case")
        for name in ("case", "fold", "DSC %", "precision %", "recall %", "F1 %", "|ΔV| mL", "|ΔN|", "lesion F1"):
            table.add_column(name, justify="left" if name == "case" else "right")
        for c in result.cases:
            table.add_row(
                plain(c["case_id"]),
                "-" if c["fold"] is None else str(c["fold"]),
                *(f"{100 * c[k]:.2f}" for k in ("dsc", "precision", "recall", "f1")),
                f"{c['abs_volume_diff_ml']:.2f}",
                f"{c['abs_lesion_count_diff']:.0f}",
                f"{c['lesion_f1']:.3f}",
            )
        console.print(table)
    summary = Table(title=f"mean ± std over {result.over} ({len(result.cases)} cases)")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for name, value in summary_rows(result):
        summary.add_row(name, value)
    console.print(summary)
    if result.missing:
        console.print(
            f"[yellow]{len(result.missing)} ground-truth case(s) without prediction:[/] "
            f"{escape(', '.join(result.missing[:10]))}",
            highlight=False,
        )
    if result.unmatched:
        console.print(
            f"[yellow]{len(result.unmatched)} prediction(s) without ground truth:[/] "
            f"{escape(', '.join(result.unmatched[:10]))}",
            highlight=False,
        )
    console.print(f"wrote {', '.join(str(p) for p in written)}", highlight=False, markup=False, soft_wrap=True)
