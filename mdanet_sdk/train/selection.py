"""Which cases of a fold train, which choose its checkpoint, which report its score, and how a reader learns it.

A fold's training cases are the other folds' cases; with ``select="inner"`` a share of them (whole patients
when the folds are grouped, :func:`~mdanet_sdk.data.dataset.inner_split`) is held out of training to choose
``best.pt`` and to drive early stopping, so the validation cases, predicted once at the end, report a score
that chose nothing. :func:`fold_cases` makes that division; :class:`FoldCases` describes it for the fold's
checkpoints, ``metrics.json`` and ``val_metrics.json`` (:meth:`FoldCases.describe`, :func:`selection_record`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mdanet_sdk.data.cases import Case
from mdanet_sdk.data.dataset import inner_split
from mdanet_sdk.train.config import TrainConfig

__all__ = ["FoldCases", "fold_cases", "selection_record", "SELECTION_NOTES"]

#: What ``best.pt`` is, and how far the reported validation scores can be trusted, per ``select``.
SELECTION_NOTES = {
    "inner": (
        "best.pt holds the epoch with the best mean DSC on the inner split (training cases held out of training); "
        "the validation cases were predicted once, with those weights, so their scores chose nothing."
    ),
    "last": (
        "best.pt holds the last epoch's weights; the validation cases were scored after every epoch for the "
        "curve only and chose nothing."
    ),
    "val": (
        "best.pt holds the epoch with the best mean DSC on the validation cases themselves: the reported "
        "validation scores are optimistic because they chose the epoch; --select inner or last gives unbiased ones."
    ),
}


@dataclass(frozen=True)
class FoldCases:
    """The cases of one fold.

    Attributes:
        train: the cases the network is trained on.
        inner: training cases held out to choose the checkpoint (``select="inner"``; empty otherwise).
        val: the fold's validation cases, whose scores the fold reports.
        patients: case id → patient when the folds are grouped (``TrainConfig.groups``), else ``None``.
        groups_file: the table ``patients`` came from.
    """

    train: list[Case]
    inner: list[Case]
    val: list[Case]
    patients: Mapping[str, str] | None = None
    groups_file: str | None = None

    def ids(self, part: str) -> list[str]:
        """Case ids of ``part`` (``"train"``, ``"inner"`` or ``"val"``) in the fold's order."""
        cases: list[Case] = getattr(self, part)
        return [c.case_id for c in cases]

    def describe(self) -> dict[str, Any]:
        """The split as a reader needs it: the cases of each part and, when grouped, their patients."""
        out: dict[str, Any] = {
            "grouped": self.patients is not None,
            "val_cases": self.ids("val"),
            "inner_cases": self.ids("inner"),
            "n_train_cases": len(self.train),
        }
        if self.patients is not None:
            patients = self.patients
            out["groups_file"] = self.groups_file
            for part in ("val", "inner"):
                out[f"{part}_patients"] = sorted({patients[c] for c in self.ids(part)})
            out["n_train_patients"] = len({patients[c] for c in self.ids("train")})
        return out


def fold_cases(
    cfg: TrainConfig,
    fold: int,
    train: Sequence[Case],
    val: Sequence[Case],
    patients: Mapping[str, str] | None,
) -> FoldCases:
    """Fold ``fold``'s cases, ``cfg.inner_fraction`` of the training ones held out when ``cfg.select`` is
    ``"inner"`` (seeded by ``(cfg.seed, fold)``, so a resumed run holds out the same ones)."""
    train, val = list(train), list(val)
    inner: list[Case] = []
    if cfg.select == "inner":
        by_id = {c.case_id: c for c in train}
        fit_ids, inner_ids = inner_split(list(by_id), cfg.inner_fraction, seed=(cfg.seed, fold), groups=patients)
        train, inner = [by_id[i] for i in fit_ids], [by_id[i] for i in inner_ids]
    return FoldCases(train, inner, val, patients, cfg.groups if patients is not None else None)


def selection_record(cfg: TrainConfig, best_epoch: int, best_score: float) -> dict[str, Any]:
    """How ``best.pt`` was chosen, for ``metrics.json`` and ``val_metrics.json``."""
    record: dict[str, Any] = {
        "select": cfg.select,
        "best_epoch": best_epoch,
        "selection_dsc": None if cfg.select == "last" else best_score,
        "optimistic": cfg.select == "val",
        "note": SELECTION_NOTES[cfg.select],
    }
    if cfg.select == "inner":
        record["inner_fraction"] = cfg.inner_fraction
    return record
