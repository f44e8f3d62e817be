"""The paper's ablations on any dataset and budget: Table 3 (components) and Table 4 (skip fusion).

Each variant is an ordinary cross-validated training run (:func:`~mdanet_sdk.train.trainer.train`) in its own
folder ``OUT/<variant>/``, started from the same base :class:`~mdanet_sdk.train.trainer.TrainConfig` (dataset,
preset, epochs, folds, seed...) with the variant's model switches and λ. Table 3 adds the components to the
U-Net baseline one by one (section 4.5.1): DASC (dual path + difference-aware skips), MSC (multi-scale
convolutions), GCFB (graph-convolution bottleneck), SL (similarity loss, λ = 1; λ = 0 before). The U-Net row is
MDANet with every component switched off, the same network (parameter names included) as the Table 1 baseline
:class:`~mdanet_sdk.model.UNet`; it keeps ``architecture="mdanet"`` so that every row is one config of the same
ablation space and earlier ablation folders resume. Table 4 swaps
the skip fusion of the full MDANet (subtract, the paper's) for add and concat; its "Subtract" row is the last
row of Table 3 and is trained once.

Scores are the validation metrics of each fold's best weights on the native grid; a table cell is the
mean ± std over the fold means (:func:`~mdanet_sdk.metrics.summarize_folds`) in percent, and the F1 column
is F1 (Eq. 16) of the mean precision and the mean recall, as the paper's F1 column (which has no std).

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
from typing import Any

from mdanet_sdk._files import atomic_write
from mdanet_sdk.errors import InputError
from mdanet_sdk.metrics import f1_score
from mdanet_sdk.train.events import ProgressFn
from mdanet_sdk.train.trainer import TrainConfig, train

__all__ = ["Variant", "VARIANTS", "TABLES", "AblationResult", "run_ablation", "variants_for"]


@dataclass(frozen=True)
class Variant:
    """One row of an ablation table.

    Attributes:
        name: folder name of its run.
        label: the row's label in Table 4 (Table 3 rows are labelled by check marks).
        overrides: :class:`~mdanet_sdk.config.MDANetConfig` fields.
        lam: λ of the similarity loss.
    """

    name: str
    label: str
    overrides: dict[str, Any] = field(default_factory=dict, hash=False)
    lam: float = 0.0

    @property
    def marks(self) -> tuple[bool, bool, bool, bool]:
        """Table 3 check marks: DASC, MSC, GCFB, SL."""
        o = self.overrides
        return o.get("dasc", True), o.get("msc", True), o.get("bottleneck", "gcfb") == "gcfb", self.lam > 0


_BASE = {"dasc": False, "msc": False, "bottleneck": "none"}
VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("unet", "U-Net", _BASE),
        Variant("dasc", "+DASC", {**_BASE, "dasc": True}),
        Variant("dasc-msc", "+MSC", {"dasc": True, "msc": True, "bottleneck": "none"}),
        Variant("dasc-msc-gcfb", "+GCFB", {"dasc": True, "msc": True, "bottleneck": "gcfb"}),
        Variant("mdanet", "Subtract", {"skip_fusion": "subtract"}, lam=1.0),
        Variant("skip-add", "Add", {"skip_fusion": "add"}, lam=1.0),
        Variant("skip-concat", "Concat", {"skip_fusion": "concat"}, lam=1.0),
    )
}
#: Table → its variants in the paper's row order.
TABLES: dict[str, tuple[str, ...]] = {
    "3": ("unet", "dasc", "dasc-msc", "dasc-msc-gcfb", "mdanet"),
    "4": ("skip-add", "skip-concat", "mdanet"),
}


def variants_for(tables: Sequence[str]) -> list[Variant]:
    """The distinct variants the given tables need, in training order."""
    unknown = [t for t in tables if t not in TABLES]
    if unknown or not tables:
        raise InputError(f"tables must be among {', '.join(TABLES)}; got {list(tables)!r}.")
    names = list(dict.fromkeys(name for t in tables for name in TABLES[t]))
    return [VARIANTS[name] for name in names]


@dataclass
class AblationResult:
    """Summaries of the variants and the tables written.

    Attributes:
        summaries: variant name → metric → (mean, std) over folds (fractions).
        folds: variant name → number of folds summarised.
        tables: the tables produced.
        files: the markdown, CSV and JSON files written.
    """

    summaries: dict[str, dict[str, tuple[float, float]]]
    folds: dict[str, int]
    tables: tuple[str, ...]
    files: list[Path]

    def markdown(self, title: str = "") -> str:
        """The tables in the paper's format (percent, mean ± std over folds)."""
        lines = [f"# {title}", ""] if title else []
        pct = lambda s, k: f"{100 * s[k][0]:.2f} ± {100 * s[k][1]:.2f}"  # noqa: E731
        for table in self.tables:
            if table == "3":
                lines += [
                    "## Table 3: components ablation",
                    "",
                    "| DASC | MSC | GCFB | SL | DSC (%) | Precision (%) | Recall (%) | F1 score |",
                    "|:-:|:-:|:-:|:-:|---|---|---|---|",
                ]
            else:
                lines += [
                    "## Table 4: skip-connection fusion",
                    "",
                    "| Method | DSC (%) | Precision (%) | Recall (%) |",
                    "|---|---|---|---|",
                ]
            for name in TABLES[table]:
                s = self.summaries[name]
                cells = [pct(s, "dsc"), pct(s, "precision"), pct(s, "recall")]
                if table == "3":
                    marks = ["✓" if m else "" for m in VARIANTS[name].marks]
                    lines.append("| " + " | ".join(marks + cells + [f"{_f1(s):.4f}"]) + " |")
                else:
                    lines.append("| " + " | ".join([VARIANTS[name].label] + cells) + " |")
            lines.append("")
        return "\n".join(lines)

    def csv(self) -> str:
        """One row per (table, variant): switches, means and stds (fractions) and the F1 of the means."""
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(
            [
                "table",
                "variant",
                "label",
                "dasc",
                "msc",
                "gcfb",
                "sl",
                "folds",
                "dsc_mean",
                "dsc_std",
                "precision_mean",
                "precision_std",
                "recall_mean",
                "recall_std",
                "f1",
            ]
        )
        for table in self.tables:
            for name in TABLES[table]:
                s, v = self.summaries[name], VARIANTS[name]
                writer.writerow(
                    [
                        table,
                        name,
                        v.label,
                        *(int(m) for m in v.marks),
                        self.folds[name],
                        *(f"{x:.6f}" for k in ("dsc", "precision", "recall") for x in s[k]),
                        f"{_f1(s):.6f}",
                    ]
                )
        return buf.getvalue()


def _f1(summary: dict[str, tuple[float, float]]) -> float:
    return f1_score(summary["precision"][0], summary["recall"][0])


def _write(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


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
        tables: ``"3"`` and/or ``"4"``.
        progress: the training progress callback of every variant (:func:`~mdanet_sdk.train.trainer.train`).
        announce: called with one line naming each variant before it trains.

    Returns:
        the :class:`AblationResult`.
    """
    out = Path(base.out_dir)
    summaries, folds = {}, {}
    for variant in variants_for(tables):
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
        folds[variant.name] = len(list((out / variant.name).glob("fold_*/val_metrics.json")))
    result = AblationResult(summaries, folds, tuple(tables), [])
    budget = (
        f"{Path(base.data_dir).name}: preset {base.preset}, size {base.size}, {base.epochs} epochs, "
        f"folds {base.fold} of {base.folds}, seed {base.seed}"
    )
    result.files = [
        _write(out / "ablation.md", result.markdown(f"MDANet ablation ({budget})")),
        _write(out / "ablation.csv", result.csv()),
        _write(
            out / "ablation.json",
            json.dumps(
                {
                    "budget": base.to_dict(),
                    "tables": list(tables),
                    "folds": folds,
                    "summaries": {n: {k: list(v) for k, v in s.items()} for n, s in summaries.items()},
                },
                indent=2,
            )
            + "\n",
        ),
    ]
    return result
