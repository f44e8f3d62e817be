"""What a training run is told (:class:`TrainConfig`) and what it returns (:class:`FoldResult`, :class:`TrainResults`).

The schedule, stopping rule and run folder these settings drive are described in
:mod:`mdanet_sdk.train.trainer`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from mdanet_sdk._values import is_finite, is_whole
from mdanet_sdk.data.layouts import LAYOUT_KIND
from mdanet_sdk.data.preprocess import NORMALIZATIONS
from mdanet_sdk.device import PRECISIONS
from mdanet_sdk.errors import InputError

__all__ = ["TrainConfig", "FoldResult", "TrainResults", "SCHEDULES", "SELECTIONS", "PAPER_PLAIN"]

SCHEDULES = ("cosine", "plateau", "constant")
#: How a fold's checkpoint (``best.pt``) is chosen; see :class:`TrainConfig` ``select``.
SELECTIONS = ("inner", "last", "val")
#: What ``paper_plain`` sets: the paper (section 4.2) gives Adam, lr 1e-3, batch 16, flips, rotations and
#: scaling, and no schedule, stopping rule, slice sampling or intensity augmentation.
PAPER_PLAIN: dict[str, Any] = {
    "lesion_fraction": 0.0,
    "schedule": "constant",
    "patience": 0,
    "intensity_augment": False,
    "dice": "batch",
}
# The ``amp`` values of earlier versions that name a precision differently.
_AMP_PRECISION = {"off": "fp32"}


def precision_from_amp(amp: str) -> str:
    """The precision an ``amp`` value of earlier versions meant: ``off`` is ``fp32``, the others keep their name."""
    return _AMP_PRECISION.get(amp, amp)


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in ``RUN_DIR/config.json`` and in every checkpoint).

    Attributes:
        data_dir: dataset folder (ISLES'22 root, ISLES'18 root, or a generic folder of case folders).
        out_dir: run folder; fold ``K`` goes to ``out_dir/fold_K``.
        layout: ``"auto"`` or one of :data:`~mdanet_sdk.data.layouts.LAYOUTS` (``"isles22"``, ``"isles18"``,
            ``"nnunet"``, ``"flat"``, ``"generic"``; see :func:`~mdanet_sdk.data.layouts.find_cases`).
        label_pattern: where each case's lesion label is, as a glob relative to the case folder with ``{case}``
            for the case id (e.g. ``"{case}_seg.nii.gz"``); default: the layout's lesion-label names.
        kind: ``"mri"`` (DWI | ADC) or ``"ctp"`` (CBF, CBV | MTT, Tmax); default from the layout (required
            for generic folders).
        preset: model preset: MDANet's ``paper`` or ``small`` widths, or a baseline of Tables 1-2 (``unet``,
            ``attention-unet``, ``unetpp``, ``msnet``, ``transunet``, ``swin-unet``; :data:`~mdanet_sdk.config.BASELINE_PRESETS`).
        model_overrides: fields of :class:`~mdanet_sdk.config.MDANetConfig` to change (ablations), e.g.
            ``{"msc": False}``.
        size: in-plane side of the model grid (:class:`~mdanet_sdk.data.preprocess.PreprocessConfig` ``size``).
        normalization: ``"relative"`` (each modality over its median in the head) or ``"zscore"``
            (:class:`~mdanet_sdk.data.preprocess.PreprocessConfig` ``normalization``).
        folds: number of cross-validation folds (k).
        groups: a table of case id → patient (CSV ``case,patient`` lines or a JSON object,
            :func:`~mdanet_sdk.data.dataset.read_groups`); the folds and the inner split then keep each patient's
            cases together (GroupKFold), so no patient is both trained and validated on. ``None``: one case, one
            patient.
        fold: which folds to train: ``"all"``, one index, or a list of indices.
        epochs: maximum number of epochs per fold.
        steps_per_epoch: optimizer steps per epoch (default: one pass over the training slices).
        batch_size: slices per optimizer step over all ranks (the paper's 16); under DDP each of the ``N``
            ranks draws ``batch_size / N`` of them (it must divide).
        lr, betas, weight_decay: Adam settings.
        lam: λ, weight of the similarity loss (0 switches it off).
        dice: ``"batch"`` (one soft Dice over the batch) or ``"slice"`` (mean over the lesion slices, so small
            lesions weigh as much as large ones; :func:`~mdanet_sdk.train.losses.dice_loss`).
        schedule: ``"cosine"``, ``"plateau"`` or ``"constant"`` (:mod:`mdanet_sdk.train.trainer`).
        min_lr_ratio: final learning rate of the cosine schedule, as a fraction of ``lr``.
        patience: early-stopping patience in epochs, counted on the selection split (0: never stop early).
        select: which weights become ``best.pt``, the fold's reported weights. ``"inner"`` (default): the
            epoch with the best mean Dice on an inner validation split held out of the fold's training cases
            (``inner_fraction`` of them, whole patients with ``groups``); it also drives early stopping and the
            plateau schedule, and the fold's validation cases are predicted once, at the end, so its reported
            scores are not the ones that chose it. ``"last"``: the last epoch's weights, trained on all the
            training cases, no early stopping (``patience`` becomes 0; another patience is refused) and no
            plateau schedule; the validation cases are still scored after every epoch, for the curve only.
            ``"val"``: the best epoch on the validation cases themselves (the behaviour of earlier versions,
            and of run configs without ``select``): the reported scores are optimistic, since they chose it.
        inner_fraction: share of a fold's training cases held out by ``select="inner"`` (at least one case).
        lesion_fraction: probability that a batch entry is drawn from the lesion slices.
        augment: the paper's augmentations on training slices.
        intensity_augment: with ``augment``, also the intensity augmentation (bias field, gamma, contrast,
            blur, lower resolution, noise: :mod:`mdanet_sdk.data.augment`), so the model does not rely on one
            scanner's or one generator's intensities; ``False`` gives the paper's augmentations only.
        precision: ``"auto"`` (bf16 on GPUs that support it, else fp16; fp32 on CPU), ``"fp32"``, ``"bf16"``,
            ``"fp16"`` (with a gradient scaler), as :func:`mdanet_sdk.device.resolve_precision` reads it; lower
            precisions run under :func:`mdanet_sdk.device.autocast`. Run configs of earlier versions say
            ``amp`` (``"off"`` for fp32): :meth:`from_dict` reads them.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        workers: data-loader worker processes (default: 4 on GPU, 0 on CPU).
        seed: base seed (reproducibility in :mod:`mdanet_sdk.train.trainer`).
        init: checkpoint file or bundled name (``default-mri``) whose weights start every fold instead of a
            random initialisation (fine-tuning); its model configuration must be this run's.
        resume: continue the folds from their ``last.pt``; a finished fold is skipped.
        trust: accept ``init`` / resume checkpoints that carry no integrity record (written by an older
            mdanet-sdk); damaged files are refused either way.
        quiet: the CLI shows no progress bars or messages (the library never prints; it reports to the
            ``progress`` callback of :func:`~mdanet_sdk.train.trainer.train`).
        paper_plain: turn off what the paper does not describe (:data:`PAPER_PLAIN`): uniform slice sampling
            (``lesion_fraction`` 0), a constant learning rate (the paper names only the initial one), no early
            stopping, no intensity augmentation, the batch Dice. Fields at their defaults are set to these
            values; a field given another value than both is refused, since the run would then not be plain.
            The epochs (the paper gives none) and ``select`` stay as given.
        deterministic: deterministic cuDNN kernels on GPU (slower), and a warning from every kernel that cannot be
            (``torch.use_deterministic_algorithms(warn_only=True)``); on GPU the native DASC backward then sums
            its weight gradients in a fixed order (bitwise reproducible). CPU training is always deterministic.
    """

    data_dir: str
    out_dir: str = "runs/mdanet"
    layout: str = "auto"
    label_pattern: str | None = None
    kind: str | None = None
    preset: str = "paper"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    size: int = 128
    normalization: str = "relative"
    folds: int = 5
    fold: int | str | list[int] = "all"
    groups: str | None = None
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
    select: str = "inner"
    inner_fraction: float = 0.15
    lesion_fraction: float = 0.33
    augment: bool = True
    intensity_augment: bool = True
    precision: str = "auto"
    device: str = "auto"
    workers: int | None = None
    seed: int = 0
    init: str | None = None
    resume: bool = False
    trust: bool = False
    quiet: bool = False
    deterministic: bool = False
    paper_plain: bool = False

    def __post_init__(self) -> None:
        self.data_dir, self.out_dir = str(self.data_dir), str(self.out_dir)
        self.groups = None if self.groups is None else str(self.groups)
        if isinstance(self.kind, str):  # the layouts isles22/isles18, which synth --kind once took, as their kind
            self.kind = LAYOUT_KIND.get(self.kind, self.kind)
        self._check_types()
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
            (
                self.normalization in NORMALIZATIONS,
                f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}",
            ),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (
                self.precision == "auto" or self.precision in PRECISIONS,
                f"precision must be auto, {', '.join(PRECISIONS)}; got {self.precision!r}",
            ),
            (self.workers is None or self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
            (self.select in SELECTIONS, f"select must be one of {', '.join(SELECTIONS)}, got {self.select!r}"),
            (0 < self.inner_fraction <= 0.5, f"inner_fraction must be in (0, 0.5], got {self.inner_fraction}"),
        )
        for ok, message in checks:
            if not ok:
                raise InputError(message + ".")
        self.fold_indices()  # validates `fold`
        if self.paper_plain:
            self._resolve({**PAPER_PLAIN}, "paper_plain (--paper-plain) turns off what the paper does not describe")
        if self.select == "last":
            self._resolve({"patience": 0}, "select='last' (--select last) keeps the last epoch and never stops early")
            if self.schedule == "plateau":
                raise InputError(
                    "the plateau schedule needs a score to follow, which select='last' does not keep; choose "
                    "--schedule cosine or constant, or --select inner."
                )

    def _resolve(self, values: dict[str, Any], why: str) -> None:
        """Set the fields of ``values``: a field still at its default takes the value, one given another value
        than both is refused with a sentence naming ``why``."""
        defaults = {f.name: f.default for f in fields(self)}
        for name, value in values.items():
            current = getattr(self, name)
            if current != value and current != defaults[name]:
                raise InputError(
                    f"{why}, which sets {name} to {value!r}, but {name} = {current!r} was given; drop one of the two."
                )
            setattr(self, name, value)

    def _check_types(self) -> None:
        """Refuse a number of the wrong type (``epochs=1.5``, ``batch_size=True``, ``folds="2"``) or a float that
        is not finite (``lr=inf`` trains nothing but NaN), which the range checks would let through or fail on."""
        for name in ("size", "folds", "epochs", "batch_size", "patience", "seed", "steps_per_epoch", "workers"):
            value = getattr(self, name)
            optional = name in ("steps_per_epoch", "workers") and value is None
            if not optional and not is_whole(value):
                raise InputError(f"{name} must be a whole number, got {value!r}.")
        for name in ("lr", "weight_decay", "lam", "min_lr_ratio", "inner_fraction", "lesion_fraction"):
            value = getattr(self, name)
            if not is_finite(value):
                raise InputError(f"{name} must be a finite number, got {value!r}.")
        betas = list(self.betas) if _sequence(self.betas) else []
        if len(betas) != 2 or not all(is_finite(b) for b in betas):
            raise InputError(f"betas must be two finite numbers, got {self.betas!r:.60}.")
        self.betas = (float(betas[0]), float(betas[1]))
        if not isinstance(self.model_overrides, Mapping):
            raise InputError(
                f"model_overrides must be a dict of MDANetConfig fields, got {self.model_overrides!r:.60}."
            )
        self.model_overrides = dict(self.model_overrides)

    def fold_indices(self) -> list[int]:
        """The folds to train, e.g. ``[0, 1, 2, 3, 4]`` for ``fold="all"``."""
        spec: Any = self.fold
        if isinstance(spec, str):
            spec = spec.strip()
            if spec == "all":
                return list(range(self.folds))
            try:
                spec = [int(part) for part in spec.split(",")]
            except ValueError:
                raise InputError(f"fold must be 'all', an index or a list like 0,2; got {self.fold!r}.") from None
        if is_whole(spec):
            spec = [spec]
        if not _sequence(spec) or not all(is_whole(k) for k in spec):
            raise InputError(f"fold must be 'all', an index or a list like 0,2; got {self.fold!r:.60}.")
        indices = [int(k) for k in spec]
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
        """The config of :meth:`to_dict` (``config.json``, a checkpoint's ``trainer["config"]``); unknown keys
        are ignored, the ``amp`` of earlier versions becomes ``precision`` (``off`` -> ``fp32``) and a config
        without ``select`` chose on the validation cases (``"val"``), so their runs still resume."""
        d = dict(d)
        d.setdefault("select", "val")  # what runs written before `select` existed did
        if "amp" in d and "precision" not in d:
            amp = d.pop("amp")
            d["precision"] = precision_from_amp(amp)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class FoldResult:
    """Outcome of one fold.

    Attributes:
        fold: fold index.
        best_epoch: epoch (0-based) of the weights in ``best.pt``.
        val_dsc: mean per-case DSC of those weights on the fold's validation cases: the fold's reported score.
        selected_on: what chose them (:data:`SELECTIONS`): ``"inner"``, ``"last"`` or ``"val"`` (then
            ``val_dsc`` is optimistic: the validation cases chose the epoch).
        selection_dsc: the mean DSC that chose them (on the inner split, or on the validation cases for
            ``"val"``); ``None`` for ``"last"``.
        epochs_run: epochs trained (fewer than ``epochs`` when stopped early).
        stopped_early: whether early stopping ended the fold.
        val_cases: per-case metrics of the best weights (:func:`~mdanet_sdk.metrics.case_metrics` plus
            ``case_id``), on the native grid.
        checkpoint: path of ``best.pt``.
    """

    fold: int
    best_epoch: int
    val_dsc: float
    selected_on: str
    selection_dsc: float | None
    epochs_run: int
    stopped_early: bool
    val_cases: list[dict[str, Any]]
    checkpoint: str

    @property
    def best_val_dsc(self) -> float:
        """``val_dsc`` under the name of earlier versions (when the validation cases always chose the epoch)."""
        return self.val_dsc


@dataclass
class TrainResults:
    """Outcome of a run: the folds trained now and the summary over every finished fold of ``out_dir``.

    Attributes:
        out_dir: the run folder.
        folds: results of the folds trained (or found finished) by this call.
        summary: metric → (mean, std) over the fold means of all finished folds in ``out_dir``
            (:func:`~mdanet_sdk.metrics.summarize_folds`).
        summary_folds: the indices of the folds that ``summary`` averages (earlier calls' included).
    """

    out_dir: str
    folds: list[FoldResult]
    summary: dict[str, tuple[float, float]]
    summary_folds: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": self.out_dir,
            "folds": [asdict(f) for f in self.folds],
            "summary": {k: list(v) for k, v in self.summary.items()},
            "summary_folds": list(self.summary_folds),
        }


def _sequence(value: Any) -> bool:
    """A list, tuple, range or 1D array (what JSON, numpy and Python give for several numbers), not a string."""
    return isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, (str, bytes)) and np.ndim(value) == 1
