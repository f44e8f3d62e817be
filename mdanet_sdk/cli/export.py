"""``mdanet-sdk export``: write a checkpoint as a TorchScript, ExportedProgram or TensorRT artefact.

The artefact is validated against the eager model before it is kept (see :mod:`mdanet_sdk.export`); it
carries the model config and preprocessing, so ``mdanet-sdk segment --model FILE`` needs nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mdanet_sdk.cli._app import command, console, err_console

__all__ = ["export"]


@command("export")
def export(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint file, or a bundled name: default-mri, default-ctp.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Artefact file to write (.ts or .pt2).")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="torchscript, exported (torch.export .pt2) or tensorrt.")
    ] = "torchscript",
    precision: Annotated[str, typer.Option(help="fp32, fp16 or bf16.")] = "fp32",
    min_batch: Annotated[int, typer.Option(help="Smallest batch the artefact accepts.")] = 1,
    opt_batch: Annotated[
        int, typer.Option(help="Batch TensorRT tunes for (0: 16, within --min-batch..--max-batch).")
    ] = 0,
    max_batch: Annotated[int, typer.Option(help="Largest batch the artefact accepts.")] = 64,
    size: Annotated[
        Optional[tuple[int, int]],
        typer.Option(help="In-plane H W, multiples of 16 (default: the checkpoint's preprocessing size)."),
    ] = None,
    ops: Annotated[
        Optional[str],
        typer.Option(
            help="native: keep the mdanet:: custom ops (TensorRT: as plugins); reference: inline the reference "
            "math. Default: native, except reference for tensorrt."
        ),
    ] = None,
    device: Annotated[Optional[str], typer.Option(help="Capture device (default cpu; cuda for tensorrt).")] = None,
    trust: Annotated[
        bool,
        typer.Option(
            "--trust",
            help="Accept a checkpoint without an integrity record (your own, from an older mdanet-sdk).",
        ),
    ] = False,
) -> None:
    """Export a checkpoint as a deployable artefact, validated against the eager model."""
    from mdanet_sdk.export import BatchRange, export_checkpoint

    result = export_checkpoint(
        checkpoint,
        fmt,
        output,
        ops=ops,
        precision=precision,
        batch=BatchRange(min_batch, opt_batch, max_batch),
        size=size,
        device=device,
        trust=trust,
    )
    c, h, w = result.input_shape
    console.print(
        f"wrote {result.path} ({result.format}, {result.precision}, ops {result.ops}, input (B, {c}, {h}, {w}) "
        f"with B in {result.batch.min}..{result.batch.max}); max |artefact - eager| = {result.max_abs_diff:.3g} "
        f"<= {result.tolerance:.3g}, {result.seconds:.1f} s",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
    for warning in result.warnings:
        err_console.print(f"warning: {warning}", style="yellow", highlight=False, soft_wrap=True, markup=False)
