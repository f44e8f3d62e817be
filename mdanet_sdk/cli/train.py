"""``mdanet-sdk train DATA_DIR``: k-fold cross-validated training (also under ``torchrun``).

The options shared with ``mdanet-sdk ablate`` are declared once here as annotated types.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mdanet_sdk.cli._options import Device, LabelPattern, Precision
from mdanet_sdk.errors import InputError
from mdanet_sdk.cli._app import command, console, err_console
from mdanet_sdk.cli._progress import train_bars

__all__ = ["train_command", "print_results", "precision_option"]

DataDir = Annotated[Path, typer.Argument(help="Dataset folder: ISLES'22 root, ISLES'18 root, or generic case folders.")]
Layout = Annotated[str, typer.Option(help="auto, isles22, isles18, nnunet, flat or generic.")]
Kind = Annotated[
    str | None,
    typer.Option(
        help="mri (dwi|adc) or ctp (cbf,cbv|mtt,tmax), as in `synth --kind`; default from the layout. The former "
        "synth values isles22/isles18 are read as mri/ctp."
    ),
]


Preset = Annotated[
    str,
    typer.Option(
        help="Model preset: paper, small (MDANet); unet, attention-unet, unetpp, msnet, transunet, swin-unet (the "
        "baselines of Tables 1-2 at paper width)."
    ),
]
Size = Annotated[int, typer.Option(help="In-plane side of the model grid (multiple of 16).")]
Fold = Annotated[str, typer.Option(help="Folds to train: all, an index, or a list like 0,2.")]
Folds = Annotated[int, typer.Option(help="Number of cross-validation folds.")]
Epochs = Annotated[int, typer.Option(help="Maximum epochs per fold.")]
Steps = Annotated[int | None, typer.Option(help="Steps per epoch (default: one pass over the training slices).")]
Batch = Annotated[
    int,
    typer.Option(
        help="Slices per optimizer step, the global batch (the paper's 16): under torchrun each of N processes "
        "draws batch/N (must divide)."
    ),
]
Lr = Annotated[float, typer.Option(help="Adam learning rate.")]
Schedule = Annotated[str, typer.Option(help="cosine, plateau or constant.")]
Patience = Annotated[int, typer.Option(help="Early-stopping patience in epochs, on the --select split (0: off).")]
Groups = Annotated[
    Path | None,
    typer.Option(
        help="Table of case → patient (CSV 'case,patient' lines, header optional, or JSON {case: patient}): "
        "folds and the inner split keep each patient's cases together (GroupKFold)."
    ),
]
Select = Annotated[
    str,
    typer.Option(
        help="What chooses best.pt, the fold's reported weights. inner: the best epoch on an inner split "
        "(--inner-fraction of the training cases, whole patients with --groups, held out of training; also "
        "drives early stopping); the validation cases are predicted once, at the end. last: the last epoch, "
        "trained on all training cases, no early stopping. val: the best epoch on the validation cases "
        "themselves (earlier versions): the reported scores are optimistic."
    ),
]
InnerFraction = Annotated[
    float, typer.Option(help="Share of each fold's training cases held out by --select inner (at least one case).")
]
PaperPlain = Annotated[
    bool,
    typer.Option(
        "--paper-plain",
        help="Only what the paper describes: uniform slice sampling (lesion fraction 0), constant learning rate, "
        "no early stopping, no intensity augmentation, batch Dice. Those of --lesion-fraction, --schedule, "
        "--patience, --intensity-aug and --dice that the command has then keep these values; giving one another "
        "value than its default is refused. --epochs and --select stay yours (--select last: every training "
        "case, the last epoch).",
    ),
]
LesionFraction = Annotated[float, typer.Option(help="Share of batch entries drawn from lesion slices.")]
Amp = Annotated[str | None, typer.Option(hidden=True, help="Deprecated: use --precision (off = fp32).")]
Workers = Annotated[int | None, typer.Option(help="Data-loader workers (default 4 on GPU, 0 on CPU).")]
Seed = Annotated[int, typer.Option(help="Base random seed.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def _is_main_process() -> bool:
    from mdanet_sdk.train.distributed import Dist

    return Dist().main


def precision_option(precision: str, amp: str | None) -> str:
    """``--precision``, or the deprecated ``--amp`` when given (its ``off`` is ``fp32``)."""
    from mdanet_sdk.train.config import precision_from_amp

    if amp is None:
        return precision
    if precision != "auto":
        raise InputError("--amp is the old name of --precision; give only --precision.")
    err_console.print("--amp is deprecated; use --precision (auto, fp32, fp16, bf16).", highlight=False)
    return precision_from_amp(amp)


def print_results(results, title: str) -> None:  # noqa: ANN001 - a TrainResults
    """Rich table of the folds of a :class:`~mdanet_sdk.train.trainer.TrainResults` and its summary."""
    table = Table(title=title)
    for name in ("fold", "val DSC %", "chosen on", "epoch", "epochs", "early stop", "checkpoint"):
        table.add_column(name, justify="left" if name == "checkpoint" else "right")
    for f in results.folds:
        table.add_row(
            str(f.fold),
            f"{100 * f.val_dsc:.2f}",
            f.selected_on + (" (optimistic)" if f.selected_on == "val" else ""),
            str(f.best_epoch + 1),
            str(f.epochs_run),
            "yes" if f.stopped_early else "no",
            f.checkpoint,
        )
    console.print(table)
    from mdanet_sdk.metrics import mean_std_text

    s, n = results.summary, len(results.summary_folds)
    if s:
        over = f"(fold {results.summary_folds[0]} alone: no spread)" if n == 1 else "(mean ± std of fold means)"
        console.print(
            f"validation over finished folds {over}: "
            + ", ".join(f"{k} {mean_std_text(s[k][0], s[k][1], n, 100)} %" for k in ("dsc", "precision", "recall")),
            highlight=False,
        )


@command("train")
def train_command(
    data_dir: DataDir,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (fold_K/ subfolders).")] = Path("runs/mdanet"),
    layout: Layout = "auto",
    label_pattern: LabelPattern = None,
    kind: Kind = None,
    preset: Preset = "paper",
    size: Size = 128,
    space_grid: Annotated[
        int | None,
        typer.Option(
            help="Side of the GCFB space-embedding node grid (default: the bottleneck, size / 16, or the --init "
            "weights' grid)."
        ),
    ] = None,
    fold: Fold = "all",
    folds: Folds = 5,
    groups: Groups = None,
    epochs: Epochs = 100,
    steps_per_epoch: Steps = None,
    batch_size: Batch = 16,
    lr: Lr = 1e-3,
    lam: Annotated[float, typer.Option(help="λ, weight of the similarity loss.")] = 1.0,
    dice: Annotated[
        str,
        typer.Option(
            help="batch: one soft Dice over the batch; slice: mean over the lesion slices (small lesions weigh more)."
        ),
    ] = "batch",
    schedule: Schedule = "cosine",
    patience: Patience = 20,
    select: Select = "inner",
    inner_fraction: InnerFraction = 0.15,
    paper_plain: PaperPlain = False,
    lesion_fraction: LesionFraction = 0.33,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="Paper augmentations.")] = True,
    normalization: Annotated[
        str, typer.Option(help="relative (each modality over its median in the head) or zscore (median and IQR).")
    ] = "relative",
    intensity_aug: Annotated[
        bool,
        typer.Option(
            "--intensity-aug/--no-intensity-aug",
            help="Also augment intensities (bias, gamma, contrast, blur, resolution, noise).",
        ),
    ] = True,
    precision: Precision = "auto",
    amp: Amp = None,
    device: Device = "auto",
    workers: Workers = None,
    seed: Seed = 0,
    init: Annotated[
        str | None,
        typer.Option(help="Start from these weights (checkpoint file or default-mri/default-ctp): fine-tuning."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue from each fold's last.pt (a fold without one, or a new --out, starts from scratch).",
        ),
    ] = False,
    trust: Annotated[
        bool,
        typer.Option(
            "--trust",
            help="Accept --init/--resume checkpoints without an integrity record (from an older mdanet-sdk).",
        ),
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Train MDANet with k-fold cross-validation by case (or patient, --groups); best.pt / last.pt per fold.

    Works unchanged under torchrun --nproc_per_node N --no-python mdanet-sdk train ... (DDP).
    """
    from mdanet_sdk.train.trainer import TrainConfig, train

    cfg = TrainConfig(
        data_dir=str(data_dir),
        out_dir=str(out),
        layout=layout,
        label_pattern=label_pattern,
        kind=kind,
        preset=preset,
        model_overrides={} if space_grid is None else {"space_grid": space_grid},
        size=size,
        fold=fold,
        folds=folds,
        groups=None if groups is None else str(groups),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        lr=lr,
        lam=lam,
        dice=dice,
        schedule=schedule,
        patience=patience,
        select=select,
        inner_fraction=inner_fraction,
        paper_plain=paper_plain,
        lesion_fraction=lesion_fraction,
        augment=augment,
        intensity_augment=intensity_aug,
        normalization=normalization,
        precision=precision_option(precision, amp),
        device=device,
        workers=workers,
        seed=seed,
        init=init,
        resume=resume,
        trust=trust,
        quiet=quiet,
    )
    with train_bars(quiet or not _is_main_process(), cfg.patience) as progress:
        results = train(cfg, progress)
    if _is_main_process():
        print_results(results, f"mdanet-sdk train: {out}")
