"""One fold of a cross-validated run: its network, optimizer state, data and bookkeeping, trained epoch by epoch.

A :class:`Fold` is built from the settings every fold of a run shares (:class:`RunContext`), its cases
(:class:`~mdanet_sdk.train.selection.FoldCases`: trained, inner, validation) and the :class:`FoldState` it
continues from (fresh, or read from ``last.pt``). :meth:`Fold.fit` trains the remaining epochs, scoring the
selection split after each one (the inner cases for ``select="inner"``, else the validation cases) and writing
``best.pt``, ``last.pt``, ``metrics.csv`` and ``metrics.json`` (rank 0 only); :meth:`Fold.finish` predicts the
validation cases with ``best.pt``: the fold's reported scores.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from mdanet_sdk._files import atomic_write, write_json
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.data.cases import Case
from mdanet_sdk.data.dataset import SliceDataset
from mdanet_sdk.data.preprocess import PreprocessConfig
from mdanet_sdk.device import autocast
from mdanet_sdk.errors import CheckpointError, InputError
from mdanet_sdk.model import build_model
from mdanet_sdk.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from mdanet_sdk.train.config import FoldResult, TrainConfig
from mdanet_sdk.train.distributed import Dist, per_rank_batch
from mdanet_sdk.train.epoch import EpochTotals, TrainForward, epoch_loader, epoch_seed, seed_everything
from mdanet_sdk.train.events import EpochStats, EventName, ProgressFn, TrainEvent
from mdanet_sdk.train.losses import MDANetLoss
from mdanet_sdk.train.sampling import LesionSampler
from mdanet_sdk.train.selection import FoldCases, selection_record
from mdanet_sdk.train.validation import Validation, mean_scores

__all__ = ["RunContext", "FoldState", "Fold", "init_weights"]

_MIN_DELTA = 1e-4  # smallest gain of the selection split's Dice that counts as an improvement
_PLATEAU_PATIENCE = 5
_CSV_FIELDS = (
    "epoch",
    "lr",
    "loss",
    "dice_loss",
    "ce",
    "sim",
    "slices",
    "train_dsc",
    "inner_dsc",
    "inner_precision",
    "inner_recall",
    "val_dsc",
    "val_precision",
    "val_recall",
    "best_dsc",
    "seconds",
)


@dataclass(frozen=True)
class RunContext:
    """What every fold of a run shares.

    Attributes:
        cfg: the run's settings.
        dist: this process's place in the job.
        device: the resolved device; precision: the resolved precision (:mod:`mdanet_sdk.device`).
        kind: ``"mri"`` or ``"ctp"``.
        model_config: the network, its space grid resolved.
        preprocess: the preprocessing of the inputs.
        progress: where :class:`~mdanet_sdk.train.events.TrainEvent` reports go (rank 0 only), or ``None``.
    """

    cfg: TrainConfig
    dist: Dist
    device: torch.device
    precision: str
    kind: str
    model_config: MDANetConfig
    preprocess: PreprocessConfig
    progress: ProgressFn | None = None


@dataclass
class FoldState:
    """Trainer bookkeeping of a fold, stored in ``last.pt`` under ``"trainer"``.

    ``best_score`` is the selection split's mean Dice of ``best_epoch`` (:class:`~mdanet_sdk.train.config.TrainConfig`
    ``select``: the inner split, the validation cases, or the last epoch's validation Dice for ``"last"``).
    """

    epoch: int = -1  # last finished epoch
    best_score: float = -1.0
    best_epoch: int = -1
    bad_epochs: int = 0
    gain_score: float = -1.0  # the score of the last gain, which the patience counts from
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FoldState":
        """The state of ``asdict`` (``last.pt``); earlier versions' ``best_val_dsc`` is read as ``best_score``."""
        d = dict(d)
        if "best_val_dsc" in d:
            d.setdefault("best_score", d.pop("best_val_dsc"))
        d.setdefault("gain_score", d.get("best_score", -1.0))  # states before ties kept the later weights
        d["history"] = [
            {("best_dsc" if k == "best_val_dsc" else k): v for k, v in row.items()} for row in d.get("history", [])
        ]
        return cls(**d)

    def record(self, epoch: int, score: float, select: str, patience: int) -> bool:
        """Count epoch ``epoch``, whose selection split scored mean Dice ``score``; whether its weights become
        ``best.pt``. A tie keeps the later, longer-trained weights (a selection split whose Dice stays 0 would
        else keep epoch 0's), but only a gain of more than 1e-4 over the score of the last gain resets the
        patience (small gains add up)."""
        self.epoch = epoch
        improved = select == "last" or score > self.gain_score + _MIN_DELTA  # small gains add up
        best = select == "last" or score >= self.best_score
        if best:
            self.best_score, self.best_epoch = score, epoch
        if improved:
            self.gain_score = score
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        self.stopped_early = patience > 0 and self.bad_epochs >= patience
        return best

    def finished(self, epochs: int) -> bool:
        """Whether nothing is left to train (early stop, or ``epochs`` epochs done)."""
        return self.stopped_early or self.epoch + 1 >= epochs

    def result(self, fold: int, fold_dir: Path, cases: list[dict[str, Any]], select: str) -> FoldResult:
        """The fold's outcome with the per-case validation metrics ``cases`` of ``best.pt``, chosen by ``select``."""
        return FoldResult(
            fold=fold,
            best_epoch=self.best_epoch,
            val_dsc=mean_scores(cases)["dsc"],
            selected_on=select,
            selection_dsc=None if select == "last" else self.best_score,
            epochs_run=self.epoch + 1,
            stopped_early=self.stopped_early,
            val_cases=cases,
            checkpoint=str(fold_dir / "best.pt"),
        )


class Fold:
    """One fold: the network (seeded from ``(seed, index)``), Adam, the schedule, the gradient scaler, the
    training cases, the :class:`~mdanet_sdk.train.validation.Validation` of the validation cases (and of the
    inner cases with ``select="inner"``) and the state.

    Args:
        run: the shared settings.
        index: fold index ``K``; the fold's files go to ``out_dir/fold_K``.
        cases: the fold's training, inner and validation cases.
        state: where training continues from.
        resume: the ``last.pt`` that ``state`` came from (its weights, optimizer, schedule and scaler are
            loaded), or ``None`` to start from a random initialisation or ``cfg.init``.

    Raises:
        CheckpointError: ``cfg.init`` holds another network than this run's.
    """

    def __init__(
        self,
        run: RunContext,
        index: int,
        cases: FoldCases,
        state: FoldState,
        resume: Checkpoint | None = None,
    ) -> None:
        cfg = run.cfg
        self.run, self.index, self.state = run, index, state
        self.dir = Path(cfg.out_dir) / f"fold_{index}"
        self.cases = cases
        seed_everything((cfg.seed, index))  # the initial weights depend on the fold only
        self.model = build_model(run.model_config).to(run.device)
        self.loss_fn = MDANetLoss(lam=cfg.lam, per_slice=cfg.dice == "slice")
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
        self.scheduler = _scheduler(cfg, self.optimizer)
        self.scaler = torch.amp.GradScaler(run.device.type, enabled=run.precision == "fp16")
        if resume is None and cfg.init is not None:
            self.model.load_state_dict(init_weights(cfg, run.model_config))
        if resume is not None:
            self.model.load_state_dict(resume.state_dict)
            self.optimizer.load_state_dict(resume.resume["optimizer"])
            self.scheduler.load_state_dict(resume.resume["scheduler"])
            if "scaler" in resume.resume:
                self.scaler.load_state_dict(resume.resume["scaler"])
        self.validation = self._validation(cases.val)
        # The split whose Dice chooses best.pt and stops early ("val" and "last" score the validation cases).
        self.selection = self._validation(cases.inner) if cfg.select == "inner" else self.validation
        self.split = cases.describe()
        self.meta_base = {
            "fold": index,
            "folds": cfg.folds,
            "seed": cfg.seed,
            "selected_on": cfg.select,
            **self.split,
            "kind": run.kind,
            "note": f"mdanet-sdk train on {cfg.data_dir} (fold {index} of {cfg.folds})",
        }
        if _synthetic(Path(cfg.data_dir)):  # the report of every segmentation with these weights says so
            self.meta_base["training_data"] = "synthetic phantoms (mdanet-sdk synth)"

    def _validation(self, cases: list[Case]) -> Validation:
        run = self.run
        return Validation(
            self.index,
            cases,
            run.model_config.modalities,
            run.preprocess,
            run.dist,
            run.device,
            run.precision,
            run.cfg.batch_size,
        )

    # -- training ------------------------------------------------------------------------------------
    def fit(self) -> None:
        """Train the epochs after ``state.epoch`` until ``cfg.epochs`` or early stopping, validating and
        saving after each one."""
        cfg, run = self.run.cfg, self.run
        fold_seed = cfg.seed * 1000 + self.index
        dataset = SliceDataset(
            self.cases.train,
            run.model_config.modalities,
            run.preprocess,
            augment=cfg.augment,
            seed=fold_seed,
            intensity=cfg.intensity_augment,
        )
        # batch_size is the global batch: each rank draws its share, DDP averages their gradients.
        batch = per_rank_batch(cfg.batch_size, run.dist.world)
        steps = cfg.steps_per_epoch or max(1, math.ceil(len(dataset) / cfg.batch_size))
        sampler = LesionSampler(
            dataset.has_lesion(),
            steps * batch,
            cfg.lesion_fraction,
            seed=fold_seed,
            rank=run.dist.rank,
            world_size=run.dist.world,
        )
        net = run.dist.wrap(TrainForward(self.model), run.device)
        if run.device.type == "cuda":
            torch.backends.cudnn.benchmark = not cfg.deterministic
            torch.backends.cudnn.deterministic = cfg.deterministic
            if cfg.deterministic:  # kernels that cannot be (e.g. the native DASC backward's atomics) then warn
                torch.use_deterministic_algorithms(True, warn_only=True)
        workers = cfg.workers if cfg.workers is not None else (4 if run.device.type == "cuda" else 0)
        for epoch in range(self.state.epoch + 1, cfg.epochs):
            seed = epoch_seed(cfg.seed, self.index, epoch)
            seed_everything(seed)
            sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)
            self._report("epoch", epoch, steps)
            start = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            loader = epoch_loader(dataset, sampler, batch, workers, run.device, seed)
            totals = self.run_epoch(epoch, net, loader, steps)
            stats = totals.stats()
            self._refuse_divergence(epoch, lr, stats)
            self._end_epoch(epoch, lr, stats, int(totals.samples), start)
            self._report(
                "validated",
                epoch,
                steps,
                stats=stats,
                val_dsc=self.state.history[-1][f"{self._split_name}_dsc"],
                best_val_dsc=self.state.best_score,
                best_epoch=self.state.best_epoch,
                split=self._split_name,
            )
            if self.state.stopped_early:
                self._report("stopped", epoch, steps, split=self._split_name)
                break

    def _refuse_divergence(self, epoch: int, lr: float, stats: EpochStats) -> None:
        """Weights that are not finite after an epoch: validating them would blame the file. (A non-finite loss
        alone is not divergence: under fp16 the gradient scaler skips such a step and the weights stay finite.)"""
        finite = torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all()
        if not bool(finite):
            raise InputError(
                f"training of fold {self.index} diverged in epoch {epoch} (its mean loss is {stats.loss}); "
                f"lower --lr (now {lr:g}) and train again (last.pt keeps the epoch before, if any)."
            )

    def run_epoch(self, epoch: int, net: nn.Module, loader: DataLoader, steps: int) -> EpochTotals:
        """One pass of ``loader`` through ``net`` (the training forward, DDP-wrapped under torchrun), one
        optimizer step per batch; the sums over all ranks."""
        device = self.run.device
        net.train()
        sums = EpochTotals.zeros(device)
        for step, (x, y) in enumerate(loader, start=1):
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            with autocast(device, self.run.precision):
                logits, stems = net(x)
                loss, parts = self.loss_fn(logits, y, stems)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            sums += EpochTotals.of_batch(logits, y, parts)
            if self._reporting:  # running means cost a device sync: only when someone listens
                self._report("step", epoch, steps, step=step, stats=EpochTotals.from_tensor(sums).stats())
        return EpochTotals.from_tensor(self.run.dist.sum(sums))

    @property
    def _split_name(self) -> str:
        """``"inner"`` or ``"val"``: the cases :attr:`selection` scores (their history columns)."""
        return "inner" if self.run.cfg.select == "inner" else "val"

    def _end_epoch(self, epoch: int, lr: float, stats: EpochStats, slices: int, start: float) -> None:
        """Score the selection split, step the schedule, keep the chosen weights, check early stopping, write
        last.pt and logs (``slices``: training slices the epoch drew over all ranks)."""
        cfg, state, name = self.run.cfg, self.state, self._split_name
        scores = mean_scores(self.selection.run(self.model))
        if cfg.schedule == "plateau":  # never with select="last" (refused by TrainConfig)
            self.scheduler.step(scores["dsc"])
        else:
            self.scheduler.step()
        epoch_scores = {f"{name}_dsc": scores["dsc"]}
        if state.record(epoch, scores["dsc"], cfg.select, cfg.patience):
            self.save("best.pt", epoch_scores, resumable=False)
        state.history.append(
            {
                "epoch": epoch,
                "lr": lr,
                **asdict(stats),
                "slices": slices,
                **{f"{name}_{k}": scores[k] for k in ("dsc", "precision", "recall")},
                "best_dsc": state.best_score,
                "seconds": time.perf_counter() - start,
            }
        )
        self.save("last.pt", epoch_scores, resumable=True)
        self._write_logs()

    @property
    def _reporting(self) -> bool:
        return self.run.progress is not None and self.run.dist.main

    def _report(self, what: EventName, epoch: int, steps: int, **details: Any) -> None:
        if self.run.progress is not None and self.run.dist.main:
            self.run.progress(TrainEvent(what, self.index, epoch, self.run.cfg.epochs, steps, **details))

    # -- files ---------------------------------------------------------------------------------------
    def save(self, name: str, scores: dict[str, float], *, resumable: bool) -> None:
        """Write ``fold_K/name`` (rank 0 only): the weights and metadata (with this epoch's ``scores``, e.g.
        ``{"inner_dsc": 0.71}``), plus with ``resumable`` the optimizer, schedule, scaler and :class:`FoldState`
        that resuming needs."""
        run, state = self.run, self.state
        if not run.dist.main:
            return
        meta = {
            **self.meta_base,
            "epoch": state.epoch,
            "val_dsc": scores.get("val_dsc"),
            "inner_dsc": scores.get("inner_dsc"),
            "best_dsc": state.best_score,
            "best_epoch": state.best_epoch,
        }
        path = self.dir / name
        if not resumable:
            save_checkpoint(path, self.model, run.model_config, run.preprocess, meta, trainer=None)
            return
        save_checkpoint(
            path,
            self.model,
            run.model_config,
            run.preprocess,
            meta,
            trainer={"config": run.cfg.to_dict(), "state": asdict(state)},
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
        )

    def _write_logs(self) -> None:
        if not self.run.dist.main:
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.state.history)
        atomic_write(self.dir / "metrics.csv", lambda tmp: tmp.write_text(buf.getvalue()))
        write_json(self.dir / "metrics.json", {**self._record(), "history": self.state.history})

    def _record(self) -> dict[str, Any]:
        """What a reader of ``metrics.json`` / ``val_metrics.json`` needs to trust the scores: the split (grouped
        or not, which cases of which patients) and how ``best.pt`` was chosen."""
        selection = selection_record(self.run.cfg, self.state.best_epoch, self.state.best_score)
        return {"fold": self.index, "selection": selection, "split": self.split}

    def finish(self) -> FoldResult:
        """Predict the validation cases with ``best.pt`` (the fold's reported scores): masks to
        ``fold_K/predictions/``, per-case metrics and how the weights were chosen to ``fold_K/val_metrics.json``;
        returns the fold's result."""
        dist = self.run.dist
        dist.barrier()  # rank 0 has written best.pt before any rank reads it
        best = load_checkpoint(self.dir / "best.pt", trust=self.run.cfg.trust)
        self.model.load_state_dict(best.state_dict)
        cases = self.validation.run(self.model, self.dir / "predictions")
        if dist.main:
            record = self._record()
            write_json(
                self.dir / "val_metrics.json",
                {**record, "best_epoch": self.state.best_epoch, "val_dsc": mean_scores(cases)["dsc"], "cases": cases},
            )
        dist.barrier()
        return self.state.result(self.index, self.dir, cases, self.run.cfg.select)


def _scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> Any:
    """The learning-rate schedule of ``cfg.schedule`` (stepped once per epoch)."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=cfg.epochs, eta_min=cfg.lr * cfg.min_lr_ratio
        )
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=_PLATEAU_PATIENCE)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def init_weights(cfg: TrainConfig, model_config: MDANetConfig) -> dict[str, torch.Tensor]:
    """The state dict of ``cfg.init``, after checking that it fits ``model_config``."""
    assert cfg.init is not None  # only called for runs that start from a checkpoint
    init = load_checkpoint(cfg.init, trust=cfg.trust)
    theirs = init.model_config.resolved()
    if theirs != model_config:
        raise CheckpointError(
            f"--init {cfg.init} holds a network ({theirs.preset}, inputs {theirs.groups}) other than "
            f"this run's ({model_config.preset}, inputs {model_config.groups}); choose the checkpoint's "
            "--preset, --kind and model options."
        )
    return init.state_dict


def _synthetic(data_dir: Path) -> bool:
    """Whether ``data_dir`` (or the dataset root above its split folder) was written by ``mdanet-sdk synth``."""
    return any((folder / "phantoms.json").is_file() for folder in (data_dir, data_dir.parent))
