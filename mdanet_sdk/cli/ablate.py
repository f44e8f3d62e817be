"""``mdanet-sdk ablate DATA_DIR``: the paper's Table 3 (components) and Table 4 (skip fusion) on a budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mdanet_sdk.cli._app import command, console
from mdanet_sdk.cli._options import LabelPattern
from mdanet_sdk.cli._progress import train_bars
from mdanet_sdk.cli.train import (
    Amp,
    Batch,
    DataDir,
    Device,
    Epochs,
    Fold,
    Folds,
    Kind,
    Layout,
    LesionFraction,
    Lr,
    Patience,
    Precision,
    Preset,
    Quiet,
    Schedule,
    Seed,
    Size,
    Steps,
    Workers,
    kind_option,
    precision_option,
)

__all__ = ["ablate_command"]


@command("ablate")
def ablate_command(
    data_dir: DataDir,
    out: Annotated[Path, typer.Option("--out", "-o", help="Ablation folder (one run folder per variant).")] = Path(
        "runs/ablation"
    ),
    table: Annotated[list[str] | None, typer.Option("--table", "-t", help="3 and/or 4 (default both).")] = None,
    layout: Layout = "auto",
    label_pattern: LabelPattern = None,
    kind: Kind = None,
    preset: Preset = "paper",
    size: Size = 128,
    fold: Fold = "all",
    folds: Folds = 5,
    epochs: Epochs = 100,
    steps_per_epoch: Steps = None,
    batch_size: Batch = 16,
    lr: Lr = 1e-3,
    schedule: Schedule = "cosine",
    patience: Patience = 20,
    lesion_fraction: LesionFraction = 0.33,
    precision: Precision = "auto",
    amp: Amp = None,
    device: Device = "auto",
    workers: Workers = None,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Train every ablation variant with the same budget; write ablation.md/.csv/.json in OUT.

    Interrupted ablations continue where they stopped when run again with the same options.
    """
    from mdanet_sdk.train.ablation import run_ablation
    from mdanet_sdk.train.trainer import TrainConfig

    base = TrainConfig(
        data_dir=str(data_dir),
        out_dir=str(out),
        layout=layout,
        label_pattern=label_pattern,
        kind=kind_option(kind),
        preset=preset,
        size=size,
        fold=fold,
        folds=folds,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        lr=lr,
        schedule=schedule,
        patience=patience,
        lesion_fraction=lesion_fraction,
        precision=precision_option(precision, amp),
        device=device,
        workers=workers,
        seed=seed,
        quiet=quiet,
    )
    with train_bars(quiet, patience) as progress:
        result = run_ablation(
            base, tuple(table or ("3", "4")), progress=progress, announce=None if quiet else console.rule
        )
    for line in result.markdown().splitlines():  # line by line: the console escapes newlines inside a string
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {', '.join(str(p) for p in result.files)}", highlight=False, markup=False, soft_wrap=True)
