"""``mdanet-sdk ablate DATA_DIR``: the paper's Tables 1-6 on a budget, the paper's figures beside ours.

Tables 1 / 2 (the baselines against MDANet), 3 (components), 4 (skip fusion), 5 (bottleneck: none, non-local,
transformer, GCFB) and 6 (λ of the similarity loss); ``--table`` picks them (repeated or comma-separated),
Tables 3 and 4 by default.
"""

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
    Groups,
    InnerFraction,
    Kind,
    Layout,
    LesionFraction,
    Lr,
    PaperPlain,
    Patience,
    Precision,
    Preset,
    Quiet,
    Schedule,
    Seed,
    Select,
    Size,
    Steps,
    Workers,
    precision_option,
)

__all__ = ["ablate_command"]


@command("ablate")
def ablate_command(
    data_dir: DataDir,
    out: Annotated[Path, typer.Option("--out", "-o", help="Ablation folder (one run folder per variant).")] = Path(
        "runs/ablation"
    ),
    table: Annotated[
        list[str] | None,
        typer.Option(
            "--table",
            "-t",
            help="Paper table(s) to reproduce: 1 / 2 (the baselines vs MDANet, paper figures of ISLES 2018 / "
            "2022), 3 (components), 4 (skip fusion), 5 (bottleneck), 6 (λ sweep); repeat or comma-separate "
            "(default 3 and 4).",
        ),
    ] = None,
    layout: Layout = "auto",
    label_pattern: LabelPattern = None,
    kind: Kind = None,
    preset: Preset = "paper",
    size: Size = 128,
    fold: Fold = "all",
    folds: Folds = 5,
    groups: Groups = None,
    epochs: Epochs = 100,
    steps_per_epoch: Steps = None,
    batch_size: Batch = 16,
    lr: Lr = 1e-3,
    schedule: Schedule = "cosine",
    patience: Patience = 20,
    select: Select = "inner",
    inner_fraction: InnerFraction = 0.15,
    paper_plain: PaperPlain = False,
    lesion_fraction: LesionFraction = 0.33,
    precision: Precision = "auto",
    amp: Amp = None,
    device: Device = "auto",
    workers: Workers = None,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Train every variant of the chosen paper tables with the same budget; write ablation.md/.csv/.json in OUT.

    Each table is printed in the paper's format with the paper's figures beside ours. A variant several
    tables share (the full MDANet) is trained once, and every variant as `mdanet-sdk train` would with the
    same options (--groups, --select, --inner-fraction and --paper-plain included). Interrupted ablations
    continue where they stopped when run again with the same options.
    """
    from mdanet_sdk.train.ablation import run_ablation, variants_for
    from mdanet_sdk.train.trainer import TrainConfig

    named = [t.strip() for value in (table or ["3,4"]) for t in value.split(",")]
    tables = tuple(dict.fromkeys(t for t in named if t))
    variants_for(tables)  # an unknown table is refused before any dataset work

    base = TrainConfig(
        data_dir=str(data_dir),
        out_dir=str(out),
        layout=layout,
        label_pattern=label_pattern,
        kind=kind,
        preset=preset,
        size=size,
        fold=fold,
        folds=folds,
        groups=None if groups is None else str(groups),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        lr=lr,
        schedule=schedule,
        patience=patience,
        select=select,
        inner_fraction=inner_fraction,
        paper_plain=paper_plain,
        lesion_fraction=lesion_fraction,
        precision=precision_option(precision, amp),
        device=device,
        workers=workers,
        seed=seed,
        quiet=quiet,
    )
    # cfg.patience: what --select last and --paper-plain resolved it to (0: no early stopping)
    with train_bars(quiet, base.patience) as progress:
        result = run_ablation(base, tables, progress=progress, announce=None if quiet else console.rule)
    for line in result.markdown().splitlines():  # line by line: the console escapes newlines inside a string
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {', '.join(str(p) for p in result.files)}", highlight=False, markup=False, soft_wrap=True)
