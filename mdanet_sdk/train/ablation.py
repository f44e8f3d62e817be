"""The paper's comparisons and ablations on any dataset and budget: Tables 1-2 (the baselines), 3 (components),
4 (skip fusion), 5 (bottleneck), 6 (λ).

Each variant is an ordinary cross-validated training run (:func:`~mdanet_sdk.train.trainer.train`) in its own
folder ``OUT/<variant>/``, started from the same base :class:`~mdanet_sdk.train.trainer.TrainConfig` (dataset,
preset, epochs, folds, seed...) with the variant's model switches and λ. Table 3 adds the components to the
U-Net baseline one by one (section 4.5.1): DASC (dual path + difference-aware skips), MSC (multi-scale
convolutions), GCFB (graph-convolution bottleneck), SL (similarity loss, λ = 1; λ = 0 before). The U-Net row is
MDANet with every component switched off, the same network (parameter names included) as the Table 1 baseline
:class:`~mdanet_sdk.model.UNet`; it keeps ``architecture="mdanet"`` so that every row is one config of the same
ablation space and earlier ablation folders resume. Table 4 swaps the skip fusion of the full MDANet
(subtract, the paper's) for add and concat. Table 5 swaps its GCFB bottleneck for none (the groups' maps
subtracted), a non-local and a transformer fusion (section 4.5.3), with λ = 1 as the full MDANet. Table 6
sweeps λ of the similarity loss over 0, 0.25, 0.5, 0.75, 1. A variant several tables share is trained once:
the full MDANet (λ = 1) is the last row of Tables 3, 4 and 5 and of Table 6, and Table 3's fourth row (every
component, λ = 0) is Table 6's first. Tables 1 (ISLES 2018) and 2 (ISLES 2022) compare the baselines, each
``architecture=...`` at the run's preset widths (λ = 0: they have no dual path to compare), with the full
MDANet; their U-Net row is Table 3's, the same network. Both train on whatever dataset is given: the table
number only says which of the paper's tables the paper's figures come from.

Scores are the validation metrics of each fold's best weights on the native grid; a table cell is the
mean ± std over the fold means (:func:`~mdanet_sdk.metrics.summarize_folds`) in percent, and the F1 column
is F1 (Eq. 16) of the mean precision and the mean recall, as the paper's F1 column (which has no std).
Parameters and FLOPs are those of the network a variant trained, for one slice of the run's size
(:func:`~mdanet_sdk.model.model_summary`). Every table prints the paper's figures
(:data:`~mdanet_sdk.train.paper_figures.PAPER_FIGURES`) beside ours.

Runs always resume (``resume=True``): calling the ablation again continues unfinished variants and reuses
finished ones, so a long ablation can be interrupted safely.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from mdanet_sdk._files import atomic_write
from mdanet_sdk.config import BASELINE_PRESETS
from mdanet_sdk.errors import InputError
from mdanet_sdk.metrics import f1_score, mean_std_text
from mdanet_sdk.train.events import ProgressFn
from mdanet_sdk.train.paper_figures import PAPER_FIGURES, paper_figure
from mdanet_sdk.train.trainer import TrainConfig, train

__all__ = ["Variant", "VARIANTS", "TABLES", "AblationResult", "run_ablation", "row_label", "variants_for"]


@dataclass(frozen=True)
class Variant:
    """One row of an ablation table.

    Attributes:
        name: folder name of its run.
        label: the row's label in Tables 1, 2, 4 and 5 (Table 3 rows are labelled by check marks, Table 6 rows
            by λ).
        overrides: :class:`~mdanet_sdk.config.MDANetConfig` fields.
        lam: λ of the similarity loss.
    """

    name: str
    label: str
    overrides: dict[str, Any] = field(default_factory=dict, hash=False)
    lam: float = 0.0

    @property
    def architecture(self) -> str:
        """The network it trains: ``"mdanet"`` or a baseline of Tables 1-2."""
        return str(self.overrides.get("architecture", "mdanet"))

    @property
    def marks(self) -> tuple[bool, bool, bool, bool]:
        """Table 3 check marks: DASC, MSC, GCFB, SL (none for a baseline of Tables 1-2)."""
        o = self.overrides
        if self.architecture != "mdanet":
            return False, False, False, False
        return o.get("dasc", True), o.get("msc", True), o.get("bottleneck", "gcfb") == "gcfb", self.lam > 0


_BASELINES = (
    ("attention-unet", "Attention U-Net"),
    ("unetpp", "U-Net++"),
    ("msnet", "MSNet"),
    ("transunet", "TransUNet"),
    ("swin-unet", "Swin-UNet"),
)
_BASE = {"dasc": False, "msc": False, "bottleneck": "none"}
_FULL = {"skip_fusion": "subtract"}
VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("unet", "U-Net", _BASE),
        Variant("dasc", "+DASC", {**_BASE, "dasc": True}),
        Variant("dasc-msc", "+MSC", {"dasc": True, "msc": True, "bottleneck": "none"}),
        Variant("dasc-msc-gcfb", "+GCFB", {"dasc": True, "msc": True, "bottleneck": "gcfb"}),
        Variant("mdanet", "Subtract", _FULL, lam=1.0),
        Variant("skip-add", "Add", {"skip_fusion": "add"}, lam=1.0),
        Variant("skip-concat", "Concat", {"skip_fusion": "concat"}, lam=1.0),
        Variant("bottleneck-none", "Baseline", {"bottleneck": "none"}, lam=1.0),
        Variant("bottleneck-nonlocal", "Non-local", {"bottleneck": "nonlocal"}, lam=1.0),
        Variant("bottleneck-transformer", "Transformer", {"bottleneck": "transformer"}, lam=1.0),
        *(Variant(f"lambda-{lam:g}", f"λ = {lam:g}", _FULL, lam=lam) for lam in (0.25, 0.5, 0.75)),
        # Tables 1-2: the baselines at the run's widths (U-Net is Table 3's "unet", the same network)
        *(Variant(arch, label, {"architecture": arch}) for arch, label in _BASELINES),
    )
}
#: Table → its variants in the paper's row order.
_COMPARISON = ("unet", *(arch for arch, _ in _BASELINES), "mdanet")
TABLES: dict[str, tuple[str, ...]] = {
    "1": _COMPARISON,
    "2": _COMPARISON,
    "3": ("unet", "dasc", "dasc-msc", "dasc-msc-gcfb", "mdanet"),
    "4": ("skip-add", "skip-concat", "mdanet"),
    "5": ("bottleneck-none", "bottleneck-nonlocal", "bottleneck-transformer", "mdanet"),
    "6": ("dasc-msc-gcfb", "lambda-0.25", "lambda-0.5", "lambda-0.75", "mdanet"),
}
_TITLES = {
    "1": "Table 1: comparison with other networks (the paper's figures: ISLES 2018, CTP)",
    "2": "Table 2: comparison with other networks (the paper's figures: ISLES 2022, MRI)",
    "3": "Table 3: components ablation",
    "4": "Table 4: skip-connection fusion",
    "5": "Table 5: global fusion and modeling at the bottleneck",
    "6": "Table 6: weight λ of the similarity loss",
}
#: Table → its leading (row label) columns and its figure columns, as the paper prints them.
_LEAD = {
    "1": ("Method",),
    "2": ("Method",),
    "3": ("DASC", "MSC", "GCFB", "SL"),
    "4": ("Method",),
    "5": ("Method",),
    "6": ("λ",),
}
_FIGURES = {
    "1": ("dsc", "precision", "recall", "f1", "params_m", "gflops"),
    "2": ("dsc", "precision", "recall", "f1", "params_m", "gflops"),
    "3": ("dsc", "precision", "recall", "f1"),
    "4": ("dsc", "precision", "recall"),
    "5": ("dsc", "params_m", "gflops"),
    "6": ("dsc", "precision", "recall", "f1"),
}
_HEADERS = {
    "dsc": "DSC (%)",
    "precision": "Precision (%)",
    "recall": "Recall (%)",
    "f1": "F1 score",
    "params_m": "Param (M)",
    "gflops": "FLOPs (G)",
}
_PERCENT = ("dsc", "precision", "recall")


def variants_for(tables: Sequence[str]) -> list[Variant]:
    """The distinct variants the given tables need, in training order (a shared variant once).

    Raises:
        InputError: no table, or one that is none of :data:`TABLES`.
    """
    if not tables:
        raise InputError(f"Name at least one ablation table: {', '.join(TABLES)}.")
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise InputError(
            f"Unknown ablation table {unknown[0]!r:.40}: choose among {', '.join(TABLES)} (the paper's Tables 1-6)."
        )
    names = list(dict.fromkeys(name for t in tables for name in TABLES[t]))
    return [VARIANTS[name] for name in names]


def row_label(table: str, name: str) -> str:
    """The label of variant ``name``'s row in ``table`` (Table 6: its λ; Table 5: the paper's "ours" is GCFB)."""
    if table == "6":
        return f"{VARIANTS[name].lam:g}"
    if table == "5" and name == "mdanet":
        return "GCFB (ours)"
    if table in ("1", "2") and name == "mdanet":
        return "MDANet"
    return VARIANTS[name].label


def _cell(figure: str, value: Any, folds: int) -> str:
    """A figure as the paper prints it; ``value`` is percent (mean, std over ``folds`` folds: the mean alone for
    one), F1 or M / G, ``None`` for none."""
    if value is None:
        return "–"
    if figure in _PERCENT:
        return mean_std_text(value[0], value[1], folds)
    return f"{value:.4f}" if figure == "f1" else f"{value:.2f}"


@dataclass
class AblationResult:
    """Summaries of the variants and the tables written.

    Attributes:
        summaries: variant name → metric → (mean, std) over folds (fractions).
        folds: variant name → number of folds summarised.
        tables: the tables produced.
        files: the markdown, CSV and JSON files written.
        models: variant name → ``{"params_m", "gflops", "size"}`` of the network it trained, for one
            ``size × size`` slice (:func:`~mdanet_sdk.model.model_summary`); a variant without a finished
            fold is absent.
    """

    summaries: dict[str, dict[str, tuple[float, float]]]
    folds: dict[str, int]
    tables: tuple[str, ...]
    files: list[Path]
    models: dict[str, dict[str, float]] = field(default_factory=dict)

    def ours(self, name: str, figure: str) -> Any:
        """This run's ``figure`` for variant ``name``, in the paper's units (percent for the scores)."""
        s = self.summaries[name]
        if figure in _PERCENT:
            return 100 * s[figure][0], 100 * s[figure][1]
        if figure == "f1":
            return f1_score(s["precision"][0], s["recall"][0])
        return self.models.get(name, {}).get(figure)

    def markdown(self, title: str = "") -> str:
        """The tables in the paper's format (percent, mean ± std over folds), the paper's figures beside ours."""
        lines = [f"# {title}", ""] if title else []
        data = "ISLES 2022 for Table 2, ISLES 2018 for the others" if "2" in self.tables else "ISLES 2018"
        lines += [f"Columns named Paper hold the paper's figures ({data}; 5-fold cross-validation).", ""]
        for table in self.tables:
            figures = _FIGURES[table]
            headers = [*_LEAD[table], *(_HEADERS[f] for f in figures), *(f"Paper {_HEADERS[f]}" for f in figures)]
            lines += [f"## {_TITLES[table]}", "", "| " + " | ".join(headers) + " |"]
            lines.append(
                "|" + "".join(":-:|" if table == "3" else "---|" for _ in _LEAD[table]) + "---|" * 2 * len(figures)
            )
            for name in TABLES[table]:
                lead = ["✓" if m else "" for m in VARIANTS[name].marks] if table == "3" else [row_label(table, name)]
                cells = [_cell(f, self.ours(name, f), self.folds.get(name, 0)) for f in figures]
                cells += [_cell(f, paper_figure(table, name, f), 5) for f in figures]
                lines.append("| " + " | ".join(lead + cells) + " |")
            lines += self._notes(table)
            lines.append("")
        return "\n".join(lines)

    def _notes(self, table: str) -> list[str]:
        """The lines under a table: how Param and FLOPs were counted, and Table 1's rows left out."""
        notes = []
        if "params_m" in _FIGURES[table]:
            sizes = sorted({int(m["size"]) for n in TABLES[table] if (m := self.models.get(n))})
            where = f"one {sizes[0]}×{sizes[0]} slice" if len(sizes) == 1 else "one slice"
            notes.append(
                f"Param and FLOPs of ours: the network trained, {where} (a multiply-add counts 2). The paper's FLOPs "
                "are closest to our multiply-add counts, half of our FLOPs (it does not say how it counts)."
            )
        if table == "1":
            notes.append(
                "The paper's Table 1 also lists OctopusNet, Abulnaga et al., Pool-UNet and Perf-UNet (published "
                "ISLES 2018 scores, not implemented here); they are omitted."
            )
        return ["", *notes] if notes else []

    def csv(self) -> str:
        """One row per (table, variant): switches, λ, means and stds (fractions), F1 of the means, parameters
        (M) and FLOPs (G) per slice, and the paper's figures (fractions too; empty where it gives none)."""
        scores = [f"{k}_{m}" for k in _PERCENT for m in ("mean", "std")]
        buf = io.StringIO()
        writer = csv.writer(buf)
        ours = [
            "table",
            "variant",
            "label",
            "architecture",
            "dasc",
            "msc",
            "gcfb",
            "sl",
            "lam",
            "folds",
            *scores,
            "f1",
            "params_m",
        ]
        writer.writerow([*ours, "gflops", *(f"paper_{c}" for c in [*scores, "f1", "params_m", "gflops"])])
        for table in self.tables:
            for name in TABLES[table]:
                s, v, model = self.summaries[name], VARIANTS[name], self.models.get(name, {})
                paper = PAPER_FIGURES[table].get(name, {})
                paper_scores = [paper[k][i] / 100 if k in paper else None for k in _PERCENT for i in (0, 1)]
                writer.writerow(
                    [table, name, row_label(table, name), v.architecture, *(int(m) for m in v.marks)]
                    + [f"{v.lam:g}", self.folds[name]]
                    + [f"{x:.6f}" for k in _PERCENT for x in s[k]]
                    + [f"{self.ours(name, 'f1'):.6f}", model.get("params_m", ""), model.get("gflops", "")]
                    + ["" if x is None else f"{x:.4f}" for x in paper_scores]
                    + [paper.get(k, "") for k in ("f1", "params_m", "gflops")]
                )
        return buf.getvalue()

    def to_json(self, budget: dict[str, Any]) -> str:
        """``budget`` (the base training config), folds, summaries (fractions), models and the paper's figures."""
        doc = {
            "budget": budget,
            "tables": list(self.tables),
            "folds": self.folds,
            "summaries": {n: {k: list(v) for k, v in s.items()} for n, s in self.summaries.items()},
            "models": self.models,
            "paper": {t: PAPER_FIGURES[t] for t in self.tables},
        }
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _model_stats(run_dir: Path, size: int, trust: bool) -> dict[str, float] | None:
    """Parameters and FLOPs per slice of the network a variant trained (that of its first finished fold)."""
    from mdanet_sdk.model import model_summary
    from mdanet_sdk.train.checkpoint import load_checkpoint

    best = sorted(run_dir.glob("fold_*/best.pt"))
    if not best:
        return None
    summary = model_summary(load_checkpoint(best[0], trust=trust).model_config, size)
    return {
        "params_m": cast(int, summary["params"]) / 1e6,  # unrounded: the table rounds it once
        "gflops": cast(float, summary["gflops_per_slice"]),
        "size": size,
    }


def _check_base(base: TrainConfig, variants: Sequence[Variant]) -> None:
    """Refuse, before any training, a base config some variant cannot train with.

    Raises:
        InputError: the base preset is a baseline (the MDANet rows would train that baseline), or Swin-UNet
            is among the variants and its windows do not divide ``base.size``.
    """
    if base.preset in BASELINE_PRESETS or base.model_overrides.get("architecture", "mdanet") != "mdanet":
        raise InputError(
            f"The ablation tables vary MDANet, so they start from --preset paper or small, not {base.preset!r:.40} "
            "(the baselines are rows of Tables 1-2)."
        )
    if any(v.architecture == "swin-unet" for v in variants) and not _swin_fits(base.size):
        raise InputError(
            f"Swin-UNet (Tables 1-2) cuts its token grids into 8×8 windows, which --size {base.size} does not "
            "allow: choose 32, 64, 128, 256, 512 or a multiple of 256."
        )


def _swin_fits(size: int) -> bool:
    """Whether Swin-UNet takes ``size × size`` slices: its own input check, on a network with no memory."""
    import torch

    from mdanet_sdk.config import MDANetConfig
    from mdanet_sdk.model import build_model

    with torch.device("meta"):
        model = build_model(MDANetConfig.from_preset("small", "mri", architecture="swin-unet"))
        try:
            model.check_input(torch.empty(1, model.config.in_channels, size, size))
        except InputError:
            return False
    return True


def _folds_text(done: dict[str, tuple[int, ...]], total: int) -> str:
    """The folds the tables average, e.g. ``folds 0,2 of 5``; when the variants finished different ones, their
    union and that the rows differ (``ablation.csv`` gives each row's count)."""
    union = sorted({k for folds in done.values() for k in folds})
    text = f"folds {','.join(map(str, union)) or 'none'} of {total}"
    return text if len(set(done.values())) <= 1 else f"{text} (not all in every row: see ablation.csv)"


def _write(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def run_ablation(
    base: TrainConfig,
    tables: Sequence[str] = ("3", "4"),
    *,
    progress: ProgressFn | None = None,
    announce: Callable[[str], None] | None = None,
) -> AblationResult:
    """Train every variant the tables need and write ``ablation.md``, ``ablation.csv``, ``ablation.json``.

    Args:
        base: dataset, preset, budget (epochs, folds, ``fold`` subset) and seed shared by all variants;
            ``out_dir`` is the ablation folder. Its ``model_overrides`` are kept unless a variant sets them.
        tables: any of ``"1"`` to ``"6"`` (:data:`TABLES`).
        progress: the training progress callback of every variant (:func:`~mdanet_sdk.train.trainer.train`).
        announce: called with one line naming each variant before it trains.

    Returns:
        the :class:`AblationResult`.

    Raises:
        InputError: no table, or an unknown one; a baseline preset; a size Swin-UNet's windows do not divide
            (Tables 1-2). All before anything trains.
    """
    out = Path(base.out_dir)
    tables = tuple(dict.fromkeys(tables))  # a table named twice is printed once
    variants = variants_for(tables)
    _check_base(base, variants)
    summaries, folds, models, done = {}, {}, {}, {}
    for variant in variants:
        if announce is not None:
            announce(f"ablation: {variant.name} ({variant.label})")
        cfg = replace(
            base,
            out_dir=str(out / variant.name),
            lam=variant.lam,
            resume=True,
            model_overrides={**base.model_overrides, **variant.overrides},
        )
        results = train(cfg, progress)
        summaries[variant.name] = results.summary
        folds[variant.name] = len(results.summary_folds)
        done[variant.name] = tuple(results.summary_folds)
        stats = _model_stats(out / variant.name, base.size, base.trust)
        if stats is not None:
            models[variant.name] = stats
    result = AblationResult(summaries, folds, tables, [], models)
    budget = (
        f"{Path(base.data_dir).name}: preset {base.preset}, size {base.size}, {base.epochs} epochs, "
        f"{_folds_text(done, base.folds)}, seed {base.seed}"
    )
    result.files = [
        _write(out / "ablation.md", result.markdown(f"MDANet ablation ({budget})")),
        _write(out / "ablation.csv", result.csv()),
        _write(out / "ablation.json", result.to_json(base.to_dict())),
    ]
    return result
