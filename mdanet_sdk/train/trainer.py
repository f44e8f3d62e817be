"""The fit loop: k-fold cross-validation by case (or patient), checkpoint selection that does not reuse the
reported scores, validation on the native grid, early stopping, resume, DDP.

:func:`train` / :class:`Trainer` run a :class:`~mdanet_sdk.train.config.TrainConfig`: they load the dataset
once, split it by case (by patient with ``groups``) and train each requested fold (:class:`~mdanet_sdk.train.fold.Fold`). Progress goes to
an optional ``progress`` callback as :class:`~mdanet_sdk.train.events.TrainEvent` records; the library
prints nothing (``mdanet-sdk train`` draws the bars).

Defaults follow the paper (section 4.2): Adam, learning rate 1e-3, betas (0.9, 0.999), batch 16, the
augmentations of :class:`~mdanet_sdk.data.dataset.SliceDataset` (flip, rotation ±90°, scale 0.8-1.2) and the
loss ``Dice + CE + λ·similarity`` with λ = 1 (:class:`~mdanet_sdk.train.losses.MDANetLoss`). The paper does not
give a schedule, a stopping rule or the number of epochs; ours (all options of :class:`TrainConfig`):

- **Folds**: ``folds`` folds of whole cases (:func:`~mdanet_sdk.data.dataset.kfold_split`); with ``groups``
  (case → patient) of whole patients, balanced by case count (GroupKFold), so no patient is trained and
  validated on.
- **Epoch** = ``ceil(training slices / batch)`` optimizer steps of ``batch`` slices (the global batch: under DDP
  each of ``N`` ranks draws ``batch / N``), unless ``steps_per_epoch`` is set. Each batch entry is, with
  probability ``lesion_fraction`` (0.33), a slice holding lesion, else any slice
  (:class:`~mdanet_sdk.train.sampling.LesionSampler`).
- **Learning rate**: ``schedule="cosine"`` anneals per epoch from ``lr`` to ``lr × min_lr_ratio`` (0.01) over
  ``epochs``; ``"plateau"`` halves it after 5 epochs without a better selection Dice; ``"constant"``.
- **Scoring** (:mod:`~mdanet_sdk.train.validation`): each case is predicted by
  :class:`~mdanet_sdk.inference.Predictor`, as ``mdanet-sdk segment`` would, its lesion probabilities restored
  to the case's native voxel grid, thresholded (> 0.5) and scored against the original label with
  :func:`mdanet_sdk.metrics.case_metrics`; a split's Dice is the mean over cases of the per-case DSC, as the
  paper reports it.
- **Checkpoint selection** (``select``, :mod:`~mdanet_sdk.train.selection`): ``"inner"`` (default) holds
  ``inner_fraction`` (15 %) of the fold's training cases (whole patients with ``groups``) out of training and
  scores them after every epoch: their Dice chooses ``best.pt`` and stops early, and the validation cases are
  predicted only at the end. ``"last"`` trains on all the training cases and keeps the last epoch (no early
  stopping); ``"val"`` chooses on the validation cases themselves (optimistic scores; earlier versions).
- **Early stopping**: training stops when the selection Dice has not improved by more than 1e-4 for
  ``patience`` (20) epochs (0 disables it). ``best.pt`` holds the chosen weights, ``last.pt`` those of the last
  epoch plus everything needed to resume.
- At the end of a fold ``best.pt`` predicts every validation case: the fold's reported scores. The masks are
  written to ``fold_K/predictions/<case_id>_seg.nii.gz`` (the input's own geometry), the per-case metrics to
  ``fold_K/val_metrics.json`` with how the weights were chosen and the split (``metrics.json`` too).
  ``RUN_DIR/results.json`` summarises every finished fold (mean ± std over folds).
- ``paper_plain`` turns off what the paper does not describe (lesion oversampling, the schedule, early
  stopping, intensity augmentation; :data:`~mdanet_sdk.train.config.PAPER_PLAIN`).

Run folder::

    RUN_DIR/config.json  results.json
    RUN_DIR/fold_K/best.pt  last.pt  metrics.csv  metrics.json  val_metrics.json  predictions/

Reproducibility: the model of fold ``K`` is initialised from the seed tuple ``(seed, K)``; every epoch re-seeds Python,
NumPy and torch from ``(seed, K, epoch)`` and draws its slices from the same tuple, so an epoch does not depend
on what ran before it in the process. Resuming from ``last.pt`` (written after every epoch) therefore gives
bit-identical weights on the CPU; a run killed mid-epoch repeats that epoch from its start.

DDP: under ``torchrun --nproc_per_node N`` (``WORLD_SIZE > 1``) the trainer joins the process group (NCCL on
GPU, Gloo on CPU), each rank draws its own ``batch / N`` slices for the same number of steps (so a step sees the
global batch, as one process would), scored cases are split between ranks and gathered, and only rank 0
writes logs and checkpoints.
"""

from __future__ import annotations

import functools
import json
import os
import reprlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from mdanet_sdk._files import file_key, write_json
from mdanet_sdk.config import BASELINE_PRESETS, MDANetConfig
from mdanet_sdk.data.cases import Case, CaseSource, detect_layout, find_cases
from mdanet_sdk.data.layouts import LAYOUT_KIND
from mdanet_sdk.data.layouts.orphans import orphan_labels
from mdanet_sdk.data.dataset import kfold_split, read_groups
from mdanet_sdk.data.preprocess import PreprocessConfig
from mdanet_sdk.device import resolve_device, resolve_precision
from mdanet_sdk.errors import CheckpointError, InputError
from mdanet_sdk.metrics import summarize_folds
from mdanet_sdk.train.checkpoint import Checkpoint, load_checkpoint
from mdanet_sdk.train.config import FoldResult, TrainConfig, TrainResults
from mdanet_sdk.train.distributed import Dist, per_rank_batch
from mdanet_sdk.train.epoch import seed_everything
from mdanet_sdk.train.events import EpochStats, ProgressFn, TrainEvent
from mdanet_sdk.train.fold import Fold, FoldState, RunContext, init_weights
from mdanet_sdk.train.selection import FoldCases, fold_cases

__all__ = [
    "TrainConfig",
    "FoldResult",
    "TrainResults",
    "TrainEvent",
    "EpochStats",
    "Trainer",
    "train",
    "seed_everything",
]


#: Settings that may differ between the calls that train the folds of one run: which folds, and how this
#: process runs them; the rest decide the split and the weights.
PER_CALL_SETTINGS = frozenset(
    {"fold", "resume", "trust", "quiet", "device", "workers", "out_dir", "deterministic", "precision"}
)


#: Settings that name files: compared as resolved paths (``groups`` by its table where the run stored it).
_PATH_SETTINGS = frozenset({"data_dir", "init", "groups"})


#: How a setting is shown in a refusal: paths whole, a groups table by its first rows.
_BRIEF = reprlib.Repr()
_BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxdict = 300, 300, 3

#: The key of ``config.json`` that holds the ``--groups`` table's content (case -> patient).
GROUPS_TABLE = "groups_table"


class Trainer:
    """Runs :class:`TrainConfig`: loads the dataset once, then trains the requested folds one after another.

    Args:
        config: the run's settings.
        progress: called with a :class:`~mdanet_sdk.train.events.TrainEvent` when an epoch starts, after every
            optimizer step, after every validation and on early stopping (rank 0 only); an exception it
            raises aborts training as an interruption would.

    Raises:
        InputError: an unknown device or precision, or a batch that does not divide among the DDP ranks.
        BackendUnavailableError: CUDA was asked for but is not available.
    """

    def __init__(self, config: TrainConfig, *, progress: ProgressFn | None = None) -> None:
        self.cfg = config
        self.dist = Dist()
        self.progress = progress
        self.out = Path(config.out_dir)
        self.device = self.dist.pin(resolve_device(config.device))
        self.precision = resolve_precision(config.precision, self.device)
        per_rank_batch(config.batch_size, self.dist.world)  # refused before any work

    # -- setup -----------------------------------------------------------------------------------
    def _kind(self) -> tuple[str, str]:
        layout = self.cfg.layout
        if layout == "auto":
            layout = detect_layout(self.cfg.data_dir)
        kind = self.cfg.kind or LAYOUT_KIND.get(layout)
        if kind is None:
            raise InputError(
                f"{self.cfg.data_dir} has the {layout} layout, which does not say the modality kind; say which "
                "modalities it holds with --kind mri "
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
        overrides = dict(self.cfg.model_overrides)
        if self.cfg.preset in BASELINE_PRESETS:  # a GCFB grid a baseline has not: earlier versions stored one
            overrides.pop("space_grid", None)
        config = MDANetConfig.from_preset(self.cfg.preset, kind, **overrides)
        if config.space_grid is None:
            config = config.replace(space_grid=self._weights_space_grid()).resolved(self.cfg.size)
        return config

    @functools.cached_property
    def _resumed(self) -> tuple[int, float] | None:
        """``(space_grid, head_fill)`` of the first ``fold_*/last.pt`` (by name) when this run resumes one; read
        once per :meth:`fit`."""
        resumed = sorted(self.out.glob("fold_*/last.pt")) if self.cfg.resume else []
        if not resumed:
            return None
        ck = load_checkpoint(resumed[0], trust=self.cfg.trust)
        return ck.model_config.grid, ck.preprocess.head_fill

    def _weights_space_grid(self) -> int | None:
        """``space_grid`` of the checkpoint this run starts from (resume, else ``--init``), if any."""
        if self._resumed is not None:
            return self._resumed[0]
        return None if self.cfg.init is None else load_checkpoint(self.cfg.init, trust=self.cfg.trust).model_config.grid

    def preprocess_config(self) -> PreprocessConfig:
        """The preprocessing of this run (stored in its checkpoints). A resumed run keeps the crop to the head
        that its checkpoints were trained with (none for runs begun before ``head_fill`` existed)."""
        cfg = PreprocessConfig(size=self.cfg.size, normalization=self.cfg.normalization)
        return cfg if self._resumed is None else replace(cfg, head_fill=self._resumed[1])

    def _load_cases(self, layout: str, modalities: Sequence[str]) -> list[Case]:
        sources = find_cases(self.cfg.data_dir, layout, modalities, label_pattern=self.cfg.label_pattern)
        broken = [s.problem or s.label_problem for s in sources if s.problem or s.label_problem]
        if broken:  # training on a silently smaller dataset would change what the folds mean
            raise InputError(
                f"{len(broken)} case(s) of {self.cfg.data_dir} cannot be read ({broken[0]}); fix or remove them "
                "before training."
            )
        orphans = orphan_labels(self.cfg.data_dir, sources) if self.cfg.label_pattern is None else []
        if orphans:  # a case whose images are missing or misnamed would silently leave the folds
            raise InputError(
                f"{len(orphans)} lesion label(s) of {self.cfg.data_dir} belong to no case found (e.g. {orphans[0]}): "
                "its images are missing or named in a way no layout reads; add or rename them (dwi.nii.gz, "
                "adc.nii.gz, ...), or remove the label, before training."
            )
        _refuse_shared_files(self.cfg.data_dir, sources)
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
        cases = [s.load() for s in sources]
        if not any(c.label is not None and c.label.any() for c in cases):  # every Dice would be a perfect 1
            raise InputError(
                f"none of the {len(cases)} cases of {self.cfg.data_dir} has a lesion voxel in its label: there is "
                "nothing to learn or score; check the labels (or --label-pattern)."
            )
        return cases

    # -- entry point -----------------------------------------------------------------------------
    def fit(self) -> TrainResults:
        """Train every requested fold (skipping finished ones when resuming) and summarise the run."""
        self.dist.setup(self.device)
        self.__dict__.pop("_resumed", None)  # read the run folder as it is now, also when this Trainer ran before
        try:
            layout, kind = self._kind()
            model_config = self.model_config()
            run = RunContext(
                self.cfg,
                self.dist,
                self.device,
                self.precision,
                kind,
                model_config,
                self.preprocess_config(),
                self.progress,
            )
            patients = None if self.cfg.groups is None else read_groups(self.cfg.groups)
            cases = self._load_cases(layout, model_config.modalities)
            by_id = {c.case_id: c for c in cases}
            splits = kfold_split(list(by_id), k=self.cfg.folds, seed=self.cfg.seed, groups=patients)
            stored = self._check_run_folder(patients)
            if self.cfg.init is not None and not (self.cfg.resume and stored):  # refused before anything is written
                init_weights(self.cfg, model_config)
            parts = {  # every fold's split first: a split that cannot be made is refused before anything is written
                k: fold_cases(self.cfg, k, [by_id[i] for i in splits[k][0]], [by_id[i] for i in splits[k][1]], patients)
                for k in self.cfg.fold_indices()
            }
            if self.dist.main and not (self.cfg.resume and stored):
                record = _resolved(self.cfg.to_dict())  # a later call may name them from another directory
                if patients is not None:  # its content, which a later call's folds must share (not only its name)
                    record[GROUPS_TABLE] = patients
                write_json(self.out / "config.json", record)
            results = [self._fit_fold(run, k, cases) for k, cases in parts.items()]
            out = TrainResults(str(self.out), results, *self._summarize())
            if self.dist.main:
                write_json(self.out / "results.json", self._run_results(out))
            return out
        finally:
            self.dist.teardown()

    def _check_run_folder(self, patients: dict[str, str] | None = None) -> bool:
        """Whether the run folder already holds a run's ``config.json``; refuse (before anything is written) to
        add folds to it, or resume one of its folds, with other settings, which would mix splits or settings in
        one run and make its ``config.json`` describe weights it did not train (a resumed fold would continue
        its optimizer and schedule under other settings). A resumed run keeps its own ``config.json``."""
        path = self.out / "config.json"
        if not path.is_file():
            return False
        try:
            raw = json.loads(path.read_text())
            stored = json.loads(json.dumps(TrainConfig.from_dict(raw).to_dict()))
        except (OSError, ValueError, TypeError, InputError, AttributeError):
            raise InputError(f"{path} is not a readable run config; choose another --out.") from None
        if isinstance(raw.get(GROUPS_TABLE), dict) and patients is not None:  # a table edited in place counts
            stored["groups"], current_table = raw[GROUPS_TABLE], patients
        else:
            current_table = None
        current = json.loads(json.dumps(self.cfg.to_dict()))  # as stored: tuples become lists
        stored, current = _resolved(stored), _resolved(current)  # the same file, however it was named
        if current_table is not None:  # compared by content: the case -> patient table
            current["groups"] = current_table
        # When every fold to run resumes from its last.pt, which records its split (_check_resumable) and holds its
        # weights, the data may have moved (staged to a node's scratch disk) and --init is not read; a fold that
        # starts now would be split from, and trained on, what these settings name.
        resuming = all((self.out / f"fold_{k}" / "last.pt").is_file() for k in self.cfg.fold_indices())
        exempt = PER_CALL_SETTINGS | ({"data_dir", "init"} if self.cfg.resume and resuming else set())
        differ = [k for k in current if k not in exempt and stored.get(k) != current[k]]
        if differ:
            brief = _BRIEF.repr  # a groups table is shown by its first rows
            shown = ", ".join(f"{k} {brief(stored.get(k))} there, {brief(current[k])} now" for k in differ[:4])
            what = "resume it" if self.cfg.resume else "add folds"
            raise InputError(
                f"{self.out} holds a run with other settings ({shown}); {what} with the same settings, or "
                "choose another --out."
            )
        return True

    def _run_results(self, out: TrainResults) -> dict[str, Any]:
        """``results.json``: ``out`` with the folds that earlier calls finished in this run folder (their entries
        of the ``results.json`` this replaces), so that it lists every fold its summary averages."""
        doc = out.to_dict()
        try:
            earlier = json.loads((self.out / "results.json").read_text(encoding="utf-8")).get("folds", [])
        except (OSError, ValueError, AttributeError):
            earlier = []
        now = {fold["fold"] for fold in doc["folds"]}
        kept = [
            fold
            for fold in (earlier if isinstance(earlier, list) else [])
            if isinstance(fold, dict)
            and isinstance(fold.get("fold"), int)
            and fold["fold"] not in now
            and (self.out / f"fold_{fold['fold']}" / "val_metrics.json").is_file()
        ]
        doc["folds"] = sorted([*kept, *doc["folds"]], key=lambda fold: fold["fold"])
        return doc

    def _summarize(self) -> tuple[dict[str, tuple[float, float]], list[int]]:
        """Mean ± std over the fold means of every finished fold in the run folder, and those folds' indices."""
        per_fold = {}
        for path in self.out.glob("fold_*/val_metrics.json"):
            index = path.parent.name.removeprefix("fold_")
            if index.isdigit():
                per_fold[int(index)] = json.loads(path.read_text())["cases"]
        folds = sorted(per_fold)
        return (summarize_folds([per_fold[k] for k in folds]) if folds else {}), folds

    def _fit_fold(self, run: RunContext, fold: int, cases: FoldCases) -> FoldResult:
        """Train fold ``fold`` from scratch, ``--init`` or its ``last.pt``; a finished fold is only read back."""
        fold_dir = self.out / f"fold_{fold}"
        state, resume = FoldState(), None
        if (fold_dir / "last.pt").exists():
            if not self.cfg.resume:
                raise InputError(
                    f"{fold_dir} already holds a training run; pass --resume to continue it, or choose another --out."
                )
            resume = self._check_resumable(fold_dir / "last.pt", run, cases)
            state = FoldState.from_dict(resume.resume["trainer"]["state"])
        finished = state.finished(self.cfg.epochs)
        if finished and (fold_dir / "val_metrics.json").exists():
            saved = json.loads((fold_dir / "val_metrics.json").read_text())
            return state.result(fold, fold_dir, saved["cases"], self.cfg.select)
        unit = Fold(run, fold, cases, state, resume)
        if not finished:
            unit.fit()
        return unit.finish()

    def _check_resumable(self, path: Path, run: RunContext, cases: FoldCases) -> Checkpoint:
        """``path`` loaded, after checking that it continues this run: same network, preprocessing, split and
        checkpoint selection."""
        ck = load_checkpoint(path, trust=self.cfg.trust)
        if "trainer" not in ck.resume or "optimizer" not in ck.resume:
            raise CheckpointError(f"{path} holds no training state to resume from; start a new run in another --out.")
        model_config = run.model_config
        if ck.model_config != model_config or ck.model_config.preset != model_config.preset:
            raise CheckpointError(
                f"{path} was trained with another model config ({ck.model_config.preset}, "
                f"{ck.model_config.to_dict()}); resume with the same --preset/--kind, or choose another --out."
            )
        if ck.preprocess.to_dict() != run.preprocess.to_dict():
            raise CheckpointError(
                f"{path} was trained with another preprocessing ({ck.preprocess.to_dict()}); resume with the same "
                "--size and --normalization."
            )
        if list(ck.meta.get("val_cases", [])) != cases.ids("val"):
            raise CheckpointError(
                f"{path} was trained on another split (different cases, --folds, --seed or --groups); resume with "
                "the same data and settings, or choose another --out."
            )
        config = ck.resume["trainer"].get("config")
        theirs = config.get("select", "val") if isinstance(config, dict) else "val"  # "val": before `select`
        if theirs != self.cfg.select:
            raise CheckpointError(
                f"{path} chose its checkpoint with --select {theirs}, this run with --select {self.cfg.select}; "
                f"resume with --select {theirs}, or choose another --out."
            )
        if list(ck.meta.get("inner_cases", [])) != cases.ids("inner"):
            raise CheckpointError(
                f"{path} held out other inner cases (another --inner-fraction or --groups); resume with the same "
                "settings, or choose another --out."
            )
        return ck


def _resolved(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its file settings (:data:`_PATH_SETTINGS`) as absolute, resolved paths; a groups table
    stored in their place is left as it is."""
    return {k: str(Path(v).resolve()) if k in _PATH_SETTINGS and isinstance(v, str) else v for k, v in config.items()}


def _refuse_shared_files(root: str | os.PathLike[str], sources: Sequence[CaseSource]) -> None:
    """Refuse two cases that read one image file (a case folder linked under another name, a hard link): one could
    be validated on while the other is trained on. Labels may share a file (two empty masks are one object in a
    git-annex or DVC store)."""
    owner: dict[tuple[object, ...], str] = {}
    for source in sources:
        for path in set(source.paths.values()):
            first = owner.setdefault(file_key(path), source.case_id)
            if first != source.case_id:
                raise InputError(
                    f"cases {first} and {source.case_id} of {root} read the same file ({path}): a linked or copied "
                    "case would be trained on and validated on at once; remove one of them before training."
                )


def train(config: TrainConfig, progress: ProgressFn | None = None) -> TrainResults:
    """Train as :class:`TrainConfig` says, reporting to ``progress`` (:class:`Trainer`)."""
    return Trainer(config, progress=progress).fit()
