"""The fit loop: k-fold cross-validation by case, validation on the native grid, early stopping, resume, DDP.

Defaults follow the paper (section 4.2): Adam, learning rate 1e-3, betas (0.9, 0.999), batch 16, the
augmentations of :class:`~mdanet_sdk.data.dataset.SliceDataset` (flip, rotation ±90°, scale 0.8-1.2) and the
loss ``Dice + CE + λ·similarity`` with λ = 1 (:class:`~mdanet_sdk.train.losses.MDANetLoss`). The paper does not
give a schedule, a stopping rule or the number of epochs; ours (all options of :class:`TrainConfig`):

- **Epoch** = ``ceil(training slices / (batch × ranks))`` steps, unless ``steps_per_epoch`` is set. Each batch
  entry is, with probability ``lesion_fraction`` (0.33), a slice holding lesion, else any slice
  (:class:`~mdanet_sdk.train.sampling.LesionSampler`).
- **Learning rate**: ``schedule="cosine"`` anneals per epoch from ``lr`` to ``lr × min_lr_ratio`` (0.01) over
  ``epochs``; ``"plateau"`` halves it after 5 epochs without a better validation Dice; ``"constant"``.
- **Validation** after every epoch on the fold's held-out cases: each case is predicted slice by slice on the
  model grid, its lesion probabilities are restored to the case's native voxel grid
  (:func:`~mdanet_sdk.data.preprocess.restore`), thresholded at 0.5 and scored against the original label with
  :func:`mdanet_sdk.metrics.case_metrics`; the validation Dice is the mean over cases of the per-case DSC,
  as the paper reports it.
- **Early stopping**: training stops when the validation Dice has not improved by more than 1e-4 for
  ``patience`` (20) epochs (0 disables it). ``best.pt`` holds the weights of the best validation Dice,
  ``last.pt`` those of the last epoch plus everything needed to resume.
- At the end of a fold the best weights predict every validation case once more; the masks are written to
  ``fold_K/predictions/<case_id>_seg.nii.gz`` (the input's own geometry) and the per-case metrics to
  ``fold_K/val_metrics.json``. ``RUN_DIR/results.json`` summarises every finished fold (mean ± std over folds).

Run folder::

    RUN_DIR/config.json  results.json
    RUN_DIR/fold_K/best.pt  last.pt  metrics.csv  metrics.json  val_metrics.json  predictions/

Reproducibility: the model of fold ``K`` is initialised from the seed tuple ``(seed, K)``; every epoch re-seeds Python,
NumPy and torch from ``(seed, K, epoch)`` and draws its slices from the same tuple, so an epoch does not depend
on what ran before it in the process. Resuming from ``last.pt`` (written after every epoch) therefore gives
bit-identical weights on the CPU; a run killed mid-epoch repeats that epoch from its start.

DDP: under ``torchrun --nproc_per_node N`` (``WORLD_SIZE > 1``) the trainer joins the process group (NCCL on
GPU, Gloo on CPU), each rank draws its own slices for the same number of steps, validation cases are split
between ranks and gathered, and only rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor, nn
from torch.utils.data import DataLoader

from mdanet_sdk._files import atomic_write, write_json
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.data.cases import Case, detect_layout, find_cases
from mdanet_sdk.data.dataset import SliceDataset, kfold_split
from mdanet_sdk.data.nifti import save_like
from mdanet_sdk.data.preprocess import NORMALIZATIONS, PreprocessConfig, preprocess_images, restore_probability
from mdanet_sdk.errors import BackendUnavailableError, CheckpointError, InputError
from mdanet_sdk.metrics import case_metrics, summarize_folds
from mdanet_sdk.model import build_model
from mdanet_sdk.train.checkpoint import load_checkpoint, save_checkpoint
from mdanet_sdk.train.losses import MDANetLoss
from mdanet_sdk.train.sampling import LesionSampler

__all__ = [
    "TrainConfig",
    "FoldResult",
    "TrainResults",
    "Trainer",
    "train",
    "seed_everything",
    "resolve_amp",
    "prediction_path",
    "PREDICTION_SUFFIX",
    "LAYOUT_KIND",
]

#: Dataset layout → model kind (modality groups).
LAYOUT_KIND = {"isles22": "mri", "isles18": "ctp"}
#: File name suffix of predicted masks: ``<case_id>_seg.nii.gz``.
PREDICTION_SUFFIX = "_seg.nii.gz"
SCHEDULES = ("cosine", "plateau", "constant")
AMP_MODES = ("auto", "off", "bf16", "fp16")
_MIN_DELTA = 1e-4  # smallest validation-Dice gain that counts as an improvement
_PLATEAU_PATIENCE = 5
_CSV_FIELDS = (
    "epoch", "lr", "loss", "dice_loss", "ce", "sim", "train_dsc", "val_dsc", "val_precision", "val_recall",
    "best_val_dsc", "seconds",
)


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in ``RUN_DIR/config.json`` and in every checkpoint).

    Attributes:
        data_dir: dataset folder (ISLES'22 root, ISLES'18 root, or a generic folder of case folders).
        out_dir: run folder; fold ``K`` goes to ``out_dir/fold_K``.
        layout: ``"auto"``, ``"isles22"``, ``"isles18"`` or ``"generic"``
            (see :func:`~mdanet_sdk.data.cases.find_cases`).
        kind: ``"mri"`` (DWI | ADC) or ``"ctp"`` (CBF, CBV | MTT, Tmax); default from the layout (required
            for generic folders).
        preset: model preset (``paper``, ``small``, ``unet``, ``attention-unet``).
        model_overrides: fields of :class:`~mdanet_sdk.config.MDANetConfig` to change (ablations), e.g.
            ``{"msc": False}``.
        size: in-plane side of the model grid (:class:`~mdanet_sdk.data.preprocess.PreprocessConfig` ``size``).
        normalization: ``"relative"`` (each modality over its median in the head) or ``"zscore"``
            (:class:`~mdanet_sdk.data.preprocess.PreprocessConfig` ``normalization``).
        folds: number of cross-validation folds (k).
        fold: which folds to train: ``"all"``, one index, or a list of indices.
        epochs: maximum number of epochs per fold.
        steps_per_epoch: optimizer steps per epoch (default: one pass over the training slices).
        batch_size: slices per step and rank.
        lr, betas, weight_decay: Adam settings.
        lam: λ, weight of the similarity loss (0 switches it off).
        dice: ``"batch"`` (one soft Dice over the batch) or ``"slice"`` (mean over the lesion slices, so small
            lesions weigh as much as large ones; :func:`~mdanet_sdk.train.losses.dice_loss`).
        schedule: ``"cosine"``, ``"plateau"`` or ``"constant"`` (module docstring).
        min_lr_ratio: final learning rate of the cosine schedule, as a fraction of ``lr``.
        patience: early-stopping patience in epochs (0: never stop early).
        lesion_fraction: probability that a batch entry is drawn from the lesion slices.
        augment: the paper's augmentations on training slices.
        intensity_augment: with ``augment``, also the intensity augmentation (bias field, gamma, contrast,
            blur, lower resolution, noise: :mod:`mdanet_sdk.data.augment`), so the model does not rely on one
            scanner's or one generator's intensities; ``False`` gives the paper's augmentations only.
        amp: mixed precision: ``"auto"`` (bf16 on GPUs that support it, else fp16; off on CPU), ``"off"``,
            ``"bf16"``, ``"fp16"`` (with a gradient scaler).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        workers: data-loader worker processes (default: 4 on GPU, 0 on CPU).
        seed: base seed (module docstring).
        init: checkpoint file or bundled name (``default-mri``) whose weights start every fold instead of a
            random initialisation (fine-tuning); its model configuration must be this run's.
        resume: continue the folds from their ``last.pt``; a finished fold is skipped.
        trust: accept ``init`` / resume checkpoints that carry no integrity record (written by an older
            mdanet-sdk); damaged files are refused either way.
        quiet: no progress bars or messages.
        deterministic: deterministic cuDNN kernels on GPU (slower); CPU training is always deterministic.
    """

    data_dir: str
    out_dir: str = "runs/mdanet"
    layout: str = "auto"
    kind: str | None = None
    preset: str = "paper"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    size: int = 128
    normalization: str = "relative"
    folds: int = 5
    fold: int | str | list[int] = "all"
    epochs: int = 100
    steps_per_epoch: int | None = None
    batch_size: int = 16
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    lam: float = 1.0
    dice: str = "batch"
    schedule: str = "cosine"
    min_lr_ratio: float = 0.01
    patience: int = 20
    lesion_fraction: float = 0.33
    augment: bool = True
    intensity_augment: bool = True
    amp: str = "auto"
    device: str = "auto"
    workers: int | None = None
    seed: int = 0
    init: str | None = None
    resume: bool = False
    trust: bool = False
    quiet: bool = False
    deterministic: bool = False

    def __post_init__(self) -> None:
        self.data_dir, self.out_dir = str(self.data_dir), str(self.out_dir)
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        self.model_overrides = dict(self.model_overrides)
        checks = (
            (self.folds >= 2, f"folds must be >= 2, got {self.folds}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.steps_per_epoch is None or self.steps_per_epoch >= 1, "steps_per_epoch must be >= 1"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.lam >= 0, f"lam must be >= 0, got {self.lam}"),
            (self.dice in ("batch", "slice"), f"dice must be 'batch' or 'slice', got {self.dice!r}"),
            (self.patience >= 0, f"patience must be >= 0, got {self.patience}"),
            (0 < self.min_lr_ratio <= 1, f"min_lr_ratio must be in (0, 1], got {self.min_lr_ratio}"),
            (0 <= self.lesion_fraction <= 1, f"lesion_fraction must be in [0, 1], got {self.lesion_fraction}"),
            (self.size >= 16 and self.size % 16 == 0, f"size must be a multiple of 16 (>= 16), got {self.size}"),
            (self.normalization in NORMALIZATIONS,
             f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (self.amp in AMP_MODES, f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}"),
            (self.workers is None or self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
        )
        for ok, message in checks:
            if not ok:
                raise InputError(message + ".")
        self.fold_indices()  # validates `fold`

    def fold_indices(self) -> list[int]:
        """The folds to train, e.g. ``[0, 1, 2, 3, 4]`` for ``fold="all"``."""
        spec = self.fold
        if isinstance(spec, str):
            spec = spec.strip()
            if spec == "all":
                return list(range(self.folds))
            try:
                spec = [int(part) for part in spec.split(",")]
            except ValueError:
                raise InputError(f"fold must be 'all', an index or a list like 0,2; got {self.fold!r}.") from None
        indices = [int(spec)] if isinstance(spec, int) else [int(k) for k in spec]
        bad = [k for k in indices if not 0 <= k < self.folds]
        if not indices or bad or len(set(indices)) != len(indices):
            raise InputError(f"fold must list distinct indices in 0..{self.folds - 1}; got {self.fold!r}.")
        return indices

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class FoldResult:
    """Outcome of one fold.

    Attributes:
        fold: fold index.
        best_epoch: epoch (0-based) of the best validation Dice.
        best_val_dsc: mean per-case DSC of the best epoch.
        epochs_run: epochs trained (fewer than ``epochs`` when stopped early).
        stopped_early: whether early stopping ended the fold.
        val_cases: per-case metrics of the best weights (:func:`~mdanet_sdk.metrics.case_metrics` plus
            ``case_id``), on the native grid.
        checkpoint: path of ``best.pt``.
    """

    fold: int
    best_epoch: int
    best_val_dsc: float
    epochs_run: int
    stopped_early: bool
    val_cases: list[dict[str, Any]]
    checkpoint: str


@dataclass
class TrainResults:
    """Outcome of a run: the folds trained now and the summary over every finished fold of ``out_dir``.

    Attributes:
        out_dir: the run folder.
        folds: results of the folds trained (or found finished) by this call.
        summary: metric → (mean, std) over the fold means of all finished folds in ``out_dir``
            (:func:`~mdanet_sdk.metrics.summarize_folds`).
    """

    out_dir: str
    folds: list[FoldResult]
    summary: dict[str, tuple[float, float]]

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": self.out_dir, "folds": [asdict(f) for f in self.folds],
                "summary": {k: list(v) for k, v in self.summary.items()}}


def seed_everything(seed: int | Sequence[int]) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA) from one seed or tuple."""
    value = int(np.random.SeedSequence(seed).generate_state(1)[0])
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` mode on ``device`` (None: full precision)."""
    if amp not in AMP_MODES:
        raise InputError(f"amp must be one of {', '.join(AMP_MODES)}, got {amp!r}.")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def prediction_path(folder: str | os.PathLike[str], case_id: str) -> Path:
    """Where a predicted mask of ``case_id`` is written: ``folder/<case_id>_seg.nii.gz``."""
    return Path(folder) / f"{case_id}{PREDICTION_SUFFIX}"


class _Dist:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.owned = False  # whether we created the process group (and must destroy it)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def setup(self, device: torch.device) -> None:
        import torch.distributed as dist

        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.owned = True

    def teardown(self) -> None:
        if self.owned:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owned = False

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, items: list[Any]) -> list[Any]:
        """Every rank's ``items`` concatenated in rank order (on every rank)."""
        if not self.enabled:
            return list(items)
        import torch.distributed as dist

        parts: list[list[Any]] = [[] for _ in range(self.world)]
        dist.all_gather_object(parts, items)
        return [item for part in parts for item in part]

    def sum(self, values: Tensor) -> Tensor:
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(values)
        return values


class _TrainForward(nn.Module):
    """``forward = model.forward_train``, so DDP's gradient hooks see the training forward pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        return self.model.forward_train(x)


@dataclass
class _ValCase:
    """A validation case, preprocessed once per fold."""

    index: int  # position in the fold's validation cases
    case: Case
    slices: np.ndarray  # (Z, C, H, W) float32 on the model grid
    geometry: Any  # preprocess.SliceGeometry, to restore the native grid


@dataclass
class _FoldState:
    """Trainer bookkeeping stored in ``last.pt`` under ``"trainer"``."""

    epoch: int = -1  # last finished epoch
    best_val_dsc: float = -1.0
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


def _worker_init(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; derive NumPy's and Python's from it.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class Trainer:
    """Runs :class:`TrainConfig`: loads the dataset once, then trains the requested folds one after another.

    Args:
        config: the run's settings.
        console: where progress and messages go (default: a new rich console on stdout).
        on_step: called after every optimizer step as ``on_step(fold, epoch, step)`` (``step`` counts from 1
            within the epoch); an exception it raises aborts training as an interruption would.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        console: Console | None = None,
        on_step: Callable[[int, int, int], None] | None = None,
    ) -> None:
        self.cfg = config
        self.dist = _Dist()
        self.console = console or Console()
        self.on_step = on_step
        self.out = Path(config.out_dir)
        self.device = self._device()
        self.amp_dtype = resolve_amp(config.amp, self.device)

    # -- setup -----------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        name = self.cfg.device
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(name)
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise BackendUnavailableError("device cuda was requested but no CUDA GPU is usable; use --device cpu.")
            if device.index is None:
                device = torch.device("cuda", self.dist.local_rank if self.dist.enabled else 0)
        elif device.type != "cpu":
            raise InputError(f"device must be auto, cpu, cuda or cuda:N; got {self.cfg.device!r}.")
        return device

    def _kind(self) -> tuple[str, str]:
        layout = self.cfg.layout
        if layout == "auto":
            layout = detect_layout(self.cfg.data_dir)
        kind = self.cfg.kind or LAYOUT_KIND.get(layout)
        if kind is None:
            raise InputError(
                f"{self.cfg.data_dir} has the generic layout; say which modalities it holds with --kind mri "
                "(dwi, adc) or --kind ctp (cbf, cbv, mtt, tmax)."
            )
        return layout, kind

    def model_config(self) -> MDANetConfig:
        """The network this run trains, its GCFB space-embedding grid resolved.

        Unless ``model_overrides`` fixes ``space_grid``, the grid is that of the weights this run continues
        (``--init``, or a fold's ``last.pt`` when resuming: their position embedding and adjacency have that
        size), else the bottleneck of the model grid, ``size // 16`` (one node per bottleneck position).
        """
        _, kind = self._kind()
        config = MDANetConfig.from_preset(self.cfg.preset, kind, **self.cfg.model_overrides)
        if config.space_grid is None:
            config = config.replace(space_grid=self._weights_space_grid()).resolved(self.cfg.size)
        return config

    def _weights_space_grid(self) -> int | None:
        """``space_grid`` of the checkpoint this run starts from (resume, else ``--init``), if any."""
        resumed = sorted(self.out.glob("fold_*/last.pt")) if self.cfg.resume else []
        source = resumed[0] if resumed else self.cfg.init
        return None if source is None else load_checkpoint(source, trust=self.cfg.trust).model_config.grid

    def preprocess_config(self) -> PreprocessConfig:
        """The preprocessing of this run (stored in its checkpoints)."""
        return PreprocessConfig(size=self.cfg.size, normalization=self.cfg.normalization)

    def _load_cases(self, layout: str, modalities: Sequence[str]) -> list[Case]:
        sources = find_cases(self.cfg.data_dir, layout, modalities)
        unlabelled = [s.case_id for s in sources if s.label_path is None]
        if unlabelled:
            raise InputError(
                f"{len(unlabelled)} case(s) of {self.cfg.data_dir} have no lesion label (e.g. {unlabelled[0]}); "
                "training needs a label for every case."
            )
        if len(sources) < self.cfg.folds:
            raise InputError(
                f"{self.cfg.data_dir} holds {len(sources)} cases, fewer than the {self.cfg.folds} folds; "
                "lower --folds or add cases."
            )
        return [s.load() for s in sources]

    # -- entry point -----------------------------------------------------------------------------
    def fit(self) -> TrainResults:
        """Train every requested fold (skipping finished ones when resuming) and summarise the run."""
        self.dist.setup(self.device)
        try:
            layout, _ = self._kind()
            model_config = self.model_config()
            cases = self._load_cases(layout, model_config.modalities)
            by_id = {c.case_id: c for c in cases}
            splits = kfold_split(list(by_id), k=self.cfg.folds, seed=self.cfg.seed)
            if self.dist.main:
                write_json(self.out / "config.json", self.cfg.to_dict())
            results = []
            for k in self.cfg.fold_indices():
                train_ids, val_ids = splits[k]
                results.append(
                    self._fit_fold(k, [by_id[i] for i in train_ids], [by_id[i] for i in val_ids], model_config)
                )
            summary = self._summarize()
            out = TrainResults(str(self.out), results, summary)
            if self.dist.main:
                write_json(self.out / "results.json", out.to_dict())
            return out
        finally:
            self.dist.teardown()

    def _summarize(self) -> dict[str, tuple[float, float]]:
        """Mean ± std over the fold means of every finished fold in the run folder."""
        per_fold = []
        for path in sorted(self.out.glob("fold_*/val_metrics.json")):
            per_fold.append(json.loads(path.read_text())["cases"])
        return summarize_folds(per_fold) if per_fold else {}

    # -- one fold --------------------------------------------------------------------------------
    def _fit_fold(
        self, fold: int, train_cases: list[Case], val_cases: list[Case], model_config: MDANetConfig
    ) -> FoldResult:
        cfg = self.cfg
        fold_dir = self.out / f"fold_{fold}"
        pcfg = self.preprocess_config()
        val_ids = [c.case_id for c in val_cases]
        state, resume = _FoldState(), None
        if (fold_dir / "last.pt").exists():
            if not cfg.resume:
                raise InputError(
                    f"{fold_dir} already holds a training run; pass --resume to continue it, or choose another --out."
                )
            resume = self._check_resumable(fold_dir / "last.pt", model_config, pcfg, val_ids)
            state = _FoldState(**resume.resume["trainer"]["state"])
        finished = state.stopped_early or state.epoch + 1 >= cfg.epochs
        if finished and (fold_dir / "val_metrics.json").exists():
            saved = json.loads((fold_dir / "val_metrics.json").read_text())
            return self._fold_result(fold, fold_dir, state, saved["cases"])

        seed_everything((cfg.seed, fold))
        model = build_model(model_config).to(self.device)
        loss_fn = MDANetLoss(lam=cfg.lam, per_slice=cfg.dice == "slice")
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        scheduler = self._scheduler(optimizer)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        if resume is None and cfg.init is not None:
            model.load_state_dict(self._init_weights(model_config))
        if resume is not None:
            model.load_state_dict(resume.state_dict)
            optimizer.load_state_dict(resume.resume["optimizer"])
            scheduler.load_state_dict(resume.resume["scheduler"])
            if "scaler" in resume.resume:
                scaler.load_state_dict(resume.resume["scaler"])

        val_set = self._prepare_val(val_cases, model_config.modalities, pcfg)
        meta_base = {
            "fold": fold, "folds": cfg.folds, "seed": cfg.seed, "val_cases": val_ids,
            "n_train_cases": len(train_cases), "kind": self._kind()[1],
            "note": f"mdanet-sdk train on {cfg.data_dir} (fold {fold} of {cfg.folds})",
        }
        if not finished:
            self._train_epochs(fold, fold_dir, model, train_cases, val_set, loss_fn, optimizer, scheduler, scaler,
                               state, model_config, pcfg, meta_base)
        self.dist.barrier()  # rank 0 has written best.pt before any rank reads it
        # Final pass with the best weights: predictions and per-case metrics of the fold.
        best = load_checkpoint(fold_dir / "best.pt", trust=self.cfg.trust)
        model.load_state_dict(best.state_dict)
        metrics = self._validate(model, val_set, fold_dir / "predictions")
        if self.dist.main:
            write_json(fold_dir / "val_metrics.json", {"fold": fold, "best_epoch": state.best_epoch, "cases": metrics})
        self.dist.barrier()
        return self._fold_result(fold, fold_dir, state, metrics)

    def _init_weights(self, model_config: MDANetConfig) -> dict[str, torch.Tensor]:
        """The state dict of ``cfg.init``, after checking that it fits ``model_config``."""
        init = load_checkpoint(self.cfg.init, trust=self.cfg.trust)
        theirs = replace(init.model_config.resolved(), ops=model_config.ops)  # the ops backend is no weight
        if theirs != model_config:
            raise CheckpointError(
                f"--init {self.cfg.init} holds a network ({theirs.preset}, inputs {theirs.groups}) other than "
                f"this run's ({model_config.preset}, inputs {model_config.groups}); choose the checkpoint's "
                "--preset, --kind and model options."
            )
        return init.state_dict

    def _fold_result(self, fold: int, fold_dir: Path, state: _FoldState, cases: list[dict[str, Any]]) -> FoldResult:
        return FoldResult(
            fold=fold, best_epoch=state.best_epoch, best_val_dsc=state.best_val_dsc, epochs_run=state.epoch + 1,
            stopped_early=state.stopped_early, val_cases=cases, checkpoint=str(fold_dir / "best.pt"),
        )

    def _check_resumable(self, path: Path, model_config: MDANetConfig, pcfg: PreprocessConfig, val_ids: list[str]):
        ck = load_checkpoint(path, trust=self.cfg.trust)
        if "trainer" not in ck.resume or "optimizer" not in ck.resume:
            raise CheckpointError(f"{path} holds no training state to resume from; start a new run in another --out.")
        if ck.model_config != model_config or ck.model_config.preset != model_config.preset:
            raise CheckpointError(
                f"{path} was trained with another model config ({ck.model_config.preset}, "
                f"{ck.model_config.to_dict()}); resume with the same --preset/--kind, or choose another --out."
            )
        if ck.preprocess.to_dict() != pcfg.to_dict():
            raise CheckpointError(
                f"{path} was trained with another preprocessing ({ck.preprocess.to_dict()}); resume with the same "
                "--size and --normalization."
            )
        if list(ck.meta.get("val_cases", [])) != val_ids:
            raise CheckpointError(
                f"{path} was trained on another split (different cases, --folds or --seed); resume with the same "
                "data and settings, or choose another --out."
            )
        return ck

    def _scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        cfg = self.cfg
        if cfg.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=cfg.epochs, eta_min=cfg.lr * cfg.min_lr_ratio
            )
        if cfg.schedule == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=0.5, patience=_PLATEAU_PATIENCE
            )
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)

    def _prepare_val(self, cases: list[Case], modalities: Sequence[str], pcfg: PreprocessConfig) -> list[_ValCase]:
        out = []
        for index in range(self.dist.rank, len(cases), self.dist.world):  # each rank validates its share
            slices, geometry = preprocess_images(cases[index].images, modalities, pcfg)
            out.append(_ValCase(index, cases[index], slices, geometry))
        return out

    def _loader(self, dataset: SliceDataset, sampler: LesionSampler, epoch_seed: int) -> DataLoader:
        workers = self.cfg.workers if self.cfg.workers is not None else (4 if self.device.type == "cuda" else 0)
        return DataLoader(
            dataset, batch_size=self.cfg.batch_size, sampler=sampler, num_workers=workers,
            pin_memory=self.device.type == "cuda", drop_last=True, worker_init_fn=_worker_init,
            generator=torch.Generator().manual_seed(epoch_seed),
        )

    def _train_epochs(self, fold, fold_dir, model, train_cases, val_set, loss_fn, optimizer, scheduler, scaler,
                      state: _FoldState, model_config, pcfg, meta_base) -> None:
        cfg, dist = self.cfg, self.dist
        fold_seed = cfg.seed * 1000 + fold
        dataset = SliceDataset(train_cases, model_config.modalities, pcfg, augment=cfg.augment, seed=fold_seed,
                               intensity=cfg.intensity_augment)
        steps = cfg.steps_per_epoch or max(1, math.ceil(len(dataset) / (cfg.batch_size * dist.world)))
        sampler = LesionSampler(dataset.has_lesion(), steps * cfg.batch_size, cfg.lesion_fraction,
                                seed=fold_seed, rank=dist.rank, world_size=dist.world)
        net: nn.Module = _TrainForward(model)
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = not cfg.deterministic
            torch.backends.cudnn.deterministic = cfg.deterministic
        progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
            console=self.console, disable=cfg.quiet or not dist.main, transient=False,
        )
        with progress:
            for epoch in range(state.epoch + 1, cfg.epochs):
                epoch_seed = int(np.random.SeedSequence((cfg.seed, fold, epoch)).generate_state(1)[0])
                seed_everything(epoch_seed)
                sampler.set_epoch(epoch)
                dataset.set_epoch(epoch)
                task = progress.add_task(f"fold {fold} epoch {epoch + 1}/{cfg.epochs}", total=steps, stats="")
                start = time.perf_counter()
                lr = optimizer.param_groups[0]["lr"]
                train_stats = self._train_epoch(
                    fold, epoch, net, self._loader(dataset, sampler, epoch_seed), loss_fn, optimizer, scaler,
                    lambda s: progress.update(task, advance=1, stats=s),
                )
                val_metrics = self._validate(model, val_set, None)
                val = {k: float(np.mean([m[k] for m in val_metrics])) for k in ("dsc", "precision", "recall")}
                if cfg.schedule == "plateau":
                    scheduler.step(val["dsc"])
                else:
                    scheduler.step()
                state.epoch = epoch
                if val["dsc"] > state.best_val_dsc + _MIN_DELTA:
                    state.best_val_dsc, state.best_epoch, state.bad_epochs = val["dsc"], epoch, 0
                    self._save(fold_dir / "best.pt", model, model_config, pcfg, meta_base, state, val["dsc"])
                else:
                    state.bad_epochs += 1
                state.stopped_early = cfg.patience > 0 and state.bad_epochs >= cfg.patience
                state.history.append({
                    "epoch": epoch, "lr": lr, **train_stats, "val_dsc": val["dsc"],
                    "val_precision": val["precision"], "val_recall": val["recall"],
                    "best_val_dsc": state.best_val_dsc, "seconds": time.perf_counter() - start,
                })
                self._save(fold_dir / "last.pt", model, model_config, pcfg, meta_base, state, val["dsc"],
                           optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                           scaler=scaler.state_dict() if scaler.is_enabled() else None)
                self._write_logs(fold_dir, state.history)
                progress.update(task, stats=f"{_stats_text(train_stats)}  val DSC {val['dsc']:.3f} "
                                f"(best {state.best_val_dsc:.3f} @ {state.best_epoch + 1})")
                if state.stopped_early:
                    if not cfg.quiet and dist.main:
                        self.console.print(
                            f"fold {fold}: no better validation Dice for {cfg.patience} epochs, stopping."
                        )
                    break

    def _train_epoch(self, fold, epoch, net, loader, loss_fn, optimizer, scaler, report) -> dict[str, float]:
        net.train()
        # Sums over the epoch: loss terms × samples, samples, and hard-prediction confusion counts.
        totals = torch.zeros(8, dtype=torch.float64, device=self.device)
        for step, (x, y) in enumerate(loader, start=1):
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            with self._autocast():
                logits, stems = net(x)
                loss, parts = loss_fn(logits, y, stems)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            with torch.no_grad():
                pred = logits.argmax(1) == 1
                truth = y == 1
                n = x.shape[0]
                totals += torch.stack([
                    parts["total"].double() * n, parts["dice"].double() * n, parts["ce"].double() * n,
                    parts.get("sim", torch.zeros((), device=self.device)).double() * n,
                    torch.tensor(n, dtype=torch.float64, device=self.device),
                    (pred & truth).sum().double(), (pred & ~truth).sum().double(), (~pred & truth).sum().double(),
                ])
            if self.on_step is not None:
                self.on_step(fold, epoch, step)
            if not self.cfg.quiet:
                report(_stats_text(_epoch_stats(totals.tolist())))
        return _epoch_stats(self.dist.sum(totals).tolist())

    def _autocast(self) -> torch.autocast:
        """Mixed precision of the run (a disabled context in full precision)."""
        dtype = self.amp_dtype or torch.float32
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.amp_dtype is not None)

    @torch.inference_mode()
    def _predict(self, model: nn.Module, slices: np.ndarray) -> np.ndarray:
        """Lesion probabilities ``(Z, H, W)`` of preprocessed slices ``(Z, C, H, W)``."""
        out = []
        for start in range(0, len(slices), self.cfg.batch_size):
            x = torch.from_numpy(slices[start : start + self.cfg.batch_size]).to(self.device)
            with self._autocast():
                logits = model(x)
            out.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu().numpy())
        return np.concatenate(out, axis=0)

    def _validate(self, model: nn.Module, val_set: list[_ValCase], save_dir: Path | None) -> list[dict[str, Any]]:
        """Per-case metrics on the native grid (all ranks' cases, in the fold's case order)."""
        model.eval()
        mine = []
        for item in val_set:
            prob = restore_probability(self._predict(model, item.slices), item.geometry)
            mask = (prob >= 0.5).astype(np.uint8)
            if save_dir is not None:
                save_like(mask, item.case.reference, prediction_path(save_dir, item.case.case_id), kind="mask")
            scores = case_metrics(mask, item.case.label, item.case.reference.voxel_volume_ml)
            mine.append((item.index, {"case_id": item.case.case_id, **scores}))
        model.train()
        return [scores for _, scores in sorted(self.dist.gather(mine), key=lambda pair: pair[0])]

    def _save(self, path, model, model_config, pcfg, meta_base, state: _FoldState, val_dsc: float, **resume) -> None:
        if not self.dist.main:
            return
        meta = {**meta_base, "epoch": state.epoch, "val_dsc": val_dsc, "best_val_dsc": state.best_val_dsc,
                "best_epoch": state.best_epoch}
        trainer = {"config": self.cfg.to_dict(), "state": asdict(state)}
        save_checkpoint(path, model, model_config, pcfg, meta, trainer=trainer if resume else None, **resume)

    def _write_logs(self, fold_dir: Path, history: list[dict[str, float]]) -> None:
        if not self.dist.main:
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
        atomic_write(fold_dir / "metrics.csv", lambda tmp: tmp.write_text(buf.getvalue()))
        write_json(fold_dir / "metrics.json", history)


def _epoch_stats(t: Sequence[float]) -> dict[str, float]:
    """Mean losses and the running hard Dice from the summed totals of :meth:`Trainer._train_epoch`."""
    loss, dice, ce, sim, n, tp, fp, fn = t
    n = max(n, 1.0)
    denom = 2 * tp + fp + fn
    return {"loss": loss / n, "dice_loss": dice / n, "ce": ce / n, "sim": sim / n,
            "train_dsc": 1.0 if denom == 0 else 2 * tp / denom}


def _stats_text(stats: dict[str, float]) -> str:
    return f"loss {stats['loss']:.4f}  dice {stats['train_dsc']:.3f}"


def train(config: TrainConfig, **kwargs: Any) -> TrainResults:
    """Train as :class:`TrainConfig` says; ``kwargs`` go to :class:`Trainer` (``console``, ``on_step``)."""
    return Trainer(config, **kwargs).fit()
