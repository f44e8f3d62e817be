"""Cross-validation as a reader expects (issue 18): folds grouped by patient, a checkpoint chosen without the
reported fold's scores (``select``), the global DDP batch, and ``paper_plain``."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from mdanet_sdk.cli import app
from mdanet_sdk.data.cases import find_cases
from mdanet_sdk.data.dataset import kfold_split
from mdanet_sdk.data.phantom import write_dataset
from mdanet_sdk.errors import InputError
from mdanet_sdk.train import fold as fold_module
from mdanet_sdk.train.checkpoint import load_checkpoint, save_checkpoint
from mdanet_sdk.train.config import PAPER_PLAIN, TrainConfig
from mdanet_sdk.train.distributed import per_rank_batch
from mdanet_sdk.train.fold import FoldState
from mdanet_sdk.train.trainer import Trainer, train

TINY = dict(preset="small", size=32, batch_size=4, steps_per_epoch=1, workers=0, quiet=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """10 ISLES'22-like phantoms of 32×32×4 voxels."""
    return write_dataset(tmp_path_factory.mktemp("cv") / "isles22", "isles22", 10, seed=7, shape=(32, 32, 4))


@pytest.fixture(scope="module")
def ids(data: Path) -> list[str]:
    return [s.case_id for s in find_cases(data)]


# -- checkpoint selection -------------------------------------------------------------------------

# Scores of the epoch whose weights are scored: the inner split and the validation cases disagree on the best.
_SCORES = {"inner": [0.2, 0.6, 0.4, 0.8], "val": [0.9, 0.1, 0.3, 0.2]}


def _scripted_validation(monkeypatch: pytest.MonkeyPatch, val_ids: set[str]) -> list[tuple[str, int]]:
    """Replace the validation pass by scripted scores: which epoch's weights are scored is recognised from a
    fingerprint of the weights (a new fingerprint is the next epoch), which cases from their ids. Returns the
    log of (split, epoch) calls."""
    seen: dict[float, int] = {}
    calls: list[tuple[str, int]] = []

    def run(self: Any, model: torch.nn.Module, save_dir: Path | None = None) -> list[dict[str, Any]]:
        fingerprint = float(sum(p.detach().double().sum() for p in model.parameters()))
        epoch = seen.setdefault(fingerprint, len(seen))
        split = "val" if {item.case.case_id for item in self.cases} <= val_ids else "inner"
        calls.append((split, epoch))
        score = _SCORES[split][epoch]
        return [
            {"case_id": item.case.case_id, "dsc": score, "precision": score, "recall": score} for item in self.cases
        ]

    monkeypatch.setattr(fold_module.Validation, "run", run)
    return calls


@pytest.mark.parametrize(
    "select, best_epoch, val_dsc, selection_dsc",
    [("inner", 1, 0.1, 0.6), ("val", 0, 0.9, 0.9), ("last", 2, 0.3, None)],
)
def test_select_chooses_best_pt_on_its_split(
    data: Path,
    ids: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    select: str,
    best_epoch: int,
    val_dsc: float,
    selection_dsc: float | None,
) -> None:
    val_ids = set(kfold_split(ids, 5, seed=0)[0][1])
    calls = _scripted_validation(monkeypatch, val_ids)
    run = tmp_path / select
    (result,) = train(TrainConfig(data, run, epochs=3, fold=0, select=select, patience=0, **TINY)).folds
    assert (result.best_epoch, result.selected_on, result.selection_dsc) == (best_epoch, select, selection_dsc)
    assert result.val_dsc == pytest.approx(val_dsc)  # the validation score of the chosen weights
    if select == "inner":  # the validation cases are predicted once, with best.pt; never during training
        assert calls == [("inner", 0), ("inner", 1), ("inner", 2), ("val", 1)]
    else:
        assert calls == [("val", 0), ("val", 1), ("val", 2), ("val", best_epoch)]
    fold_dir = run / "fold_0"
    best, last = load_checkpoint(fold_dir / "best.pt"), load_checkpoint(fold_dir / "last.pt")
    assert best.meta["epoch"] == best_epoch and best.meta["selected_on"] == select
    same = all(torch.equal(best.state_dict[k], last.state_dict[k]) for k in best.state_dict)
    assert same == (select == "last")
    metrics = json.loads((fold_dir / "metrics.json").read_text())
    assert metrics["selection"]["select"] == select and metrics["selection"]["best_epoch"] == best_epoch
    assert metrics["selection"]["optimistic"] == (select == "val")
    assert ("optimistic" in metrics["selection"]["note"]) == (select == "val")
    column = "inner_dsc" if select == "inner" else "val_dsc"
    assert [row[column] for row in metrics["history"]] == pytest.approx(_SCORES[column[:-4]][:3])
    assert metrics["split"]["val_cases"] == sorted(val_ids, key=ids.index) and not metrics["split"]["grouped"]
    inner = metrics["split"]["inner_cases"]
    assert (len(inner), metrics["split"]["n_train_cases"]) == ((1, 7) if select == "inner" else (0, 8))
    assert not set(inner) & val_ids
    rows = list(csv.DictReader((fold_dir / "metrics.csv").open()))
    assert [float(r["best_dsc"]) for r in rows] == pytest.approx(
        {"inner": [0.2, 0.6, 0.6], "val": [0.9, 0.9, 0.9], "last": [0.9, 0.1, 0.3]}[select]
    )
    saved = json.loads((fold_dir / "val_metrics.json").read_text())
    assert saved["selection"]["select"] == select and saved["val_dsc"] == pytest.approx(val_dsc)


def test_inner_selection_stops_early_on_inner_scores(
    data: Path, ids: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The inner Dice falls at epoch 2: patience 1 stops there, of 4 epochs (the validation Dice, falling after
    # epoch 0, would have stopped at epoch 1).
    _scripted_validation(monkeypatch, set(kfold_split(ids, 5, seed=0)[0][1]))
    (result,) = train(TrainConfig(data, tmp_path / "stop", epochs=4, fold=0, patience=1, **TINY)).folds
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1


def test_resume_keeps_the_selection(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"

    def stop_after_the_first_epoch(event: Any) -> None:
        if event.what == "validated":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(data, run, epochs=2, fold=0, **TINY), stop_after_the_first_epoch)
    with pytest.raises(InputError, match="select 'inner' there, 'val' now"):
        train(TrainConfig(data, run, epochs=2, fold=0, resume=True, select="val", **TINY))
    with pytest.raises(InputError, match="inner_fraction 0.15 there, 0.4 now"):
        train(TrainConfig(data, run, epochs=2, fold=0, resume=True, inner_fraction=0.4, **TINY))
    # A run begun before the crop to the head existed (its checkpoints read as head_fill 0) resumes as it was.
    last = load_checkpoint(run / "fold_0" / "last.pt")
    old = replace(last.preprocess, head_fill=0.0)
    save_checkpoint(run / "fold_0" / "last.pt", last.state_dict, last.model_config, old, last.meta, **last.resume)
    resumed = train(TrainConfig(data, run, epochs=2, fold=0, resume=True, **TINY)).folds[0]
    assert resumed.epochs_run == 2 and resumed.selected_on == "inner"
    assert load_checkpoint(run / "fold_0" / "last.pt").preprocess.head_fill == 0.0
    meta = load_checkpoint(run / "fold_0" / "last.pt").meta
    assert meta["inner_cases"] == json.loads((run / "fold_0" / "metrics.json").read_text())["split"]["inner_cases"]
    assert resumed.checkpoint == str(run / "fold_0" / "best.pt")


def test_state_and_config_of_earlier_versions_read_as_select_val() -> None:
    old = {"epoch": 2, "best_val_dsc": 0.5, "best_epoch": 1, "bad_epochs": 1, "stopped_early": False}
    state = FoldState.from_dict({**old, "history": [{"epoch": 0, "val_dsc": 0.5, "best_val_dsc": 0.5}]})
    assert (state.best_score, state.best_epoch, state.history[0]["best_dsc"]) == (0.5, 1, 0.5)
    config = TrainConfig("d").to_dict()
    del config["select"]
    assert TrainConfig.from_dict(config).select == "val"


# -- grouped folds --------------------------------------------------------------------------------


def test_grouped_run_keeps_patients_together(data: Path, ids: list[str], tmp_path: Path) -> None:
    patients = {case: f"patient{i // 2}" for i, case in enumerate(ids)}  # 5 patients of 2 cases
    table = tmp_path / "groups.csv"
    table.write_text("case,patient\n" + "".join(f"{c},{p}\n" for c, p in patients.items()))
    run = tmp_path / "grouped"
    train(TrainConfig(data, run, epochs=1, folds=2, fold=0, groups=table, **TINY))
    split = json.loads((run / "fold_0" / "metrics.json").read_text())["split"]
    assert split["grouped"] and split["groups_file"] == str(table)
    val, inner = set(split["val_cases"]), set(split["inner_cases"])
    train_ids = set(ids) - val - inner
    assert len(val) in (4, 6) and len(inner) == 2  # whole patients: 15 % of 6 training cases rounds to one patient
    for a, b in ((val, inner), (val, train_ids), (inner, train_ids)):
        assert not {patients[c] for c in a} & {patients[c] for c in b}
    assert split["val_patients"] == sorted({patients[c] for c in val})
    assert load_checkpoint(run / "fold_0" / "best.pt").meta["grouped"] is True
    # A case without a patient, or more folds than patients, is refused before any training.
    table.write_text("".join(f"{c},{p}\n" for c, p in list(patients.items())[1:]))
    with pytest.raises(InputError, match=rf"no patient in the groups table \(e.g. '{ids[0]}'\)"):
        train(TrainConfig(data, tmp_path / "missing", epochs=1, groups=table, **TINY))
    table.write_text("".join(f"{c},{p}\n" for c, p in patients.items()))
    with pytest.raises(InputError, match="5 patients, fewer than the 6 folds; lower --folds"):
        train(TrainConfig(data, tmp_path / "many", epochs=1, folds=6, groups=table, **TINY))
    assert not (tmp_path / "missing").exists() and not (tmp_path / "many").exists()


def test_cli_groups_select_and_paper_plain(data: Path, ids: list[str], tmp_path: Path) -> None:
    table = tmp_path / "groups.json"
    table.write_text(json.dumps({case: i // 2 for i, case in enumerate(ids)}))
    run = tmp_path / "cli"
    args = ["train", str(data), "--out", str(run), "--preset", "small", "--size", "32", "--fold", "0"]
    args += ["--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "4", "--workers", "0", "--quiet"]
    res = CliRunner().invoke(app, [*args, "--groups", str(table), "--select", "last", "--paper-plain"])
    assert res.exit_code == 0, res.output
    config = json.loads((run / "config.json").read_text())
    assert config["groups"] == str(table) and config["select"] == "last" and config["paper_plain"]
    assert {k: config[k] for k in PAPER_PLAIN} == PAPER_PLAIN
    assert " last " in res.output and "val DSC %" in res.output
    bad = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b"), "--paper-plain", "--schedule", "plateau"])
    assert bad.exit_code == 2 and "--paper-plain" in bad.output and "schedule = 'plateau'" in bad.output
    bad = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "c"), "--select", "best"])
    assert bad.exit_code == 2 and "select must be one of inner, last, val" in bad.output


# -- configuration --------------------------------------------------------------------------------


def test_paper_plain_and_select_last_resolve_the_config() -> None:
    plain = TrainConfig("d", paper_plain=True)
    assert (plain.lesion_fraction, plain.schedule, plain.patience, plain.intensity_augment, plain.dice) == (
        0.0,
        "constant",
        0,
        False,
        "batch",
    )
    assert (plain.lr, plain.batch_size, plain.betas, plain.epochs, plain.select) == (
        1e-3,
        16,
        (0.9, 0.999),
        100,
        "inner",
    )
    assert TrainConfig.from_dict(plain.to_dict()) == plain and replace(plain, fold=0).schedule == "constant"
    assert TrainConfig("d", paper_plain=True, lesion_fraction=0.0, schedule="constant").patience == 0
    for conflict in ({"schedule": "plateau"}, {"patience": 5}, {"lesion_fraction": 0.5}, {"dice": "slice"}):
        with pytest.raises(InputError, match="paper_plain .* drop one of the two"):
            TrainConfig("d", paper_plain=True, **conflict)
    assert TrainConfig("d").schedule == "cosine" and TrainConfig("d").patience == 20  # off: untouched
    last = TrainConfig("d", select="last")
    assert last.patience == 0 and last.schedule == "cosine"
    with pytest.raises(InputError, match="never stops early"):
        TrainConfig("d", select="last", patience=5)
    with pytest.raises(InputError, match="plateau schedule needs a score"):
        TrainConfig("d", select="last", schedule="plateau")
    for bad in ({"select": "best"}, {"inner_fraction": 0.0}, {"inner_fraction": 0.6}):
        with pytest.raises(InputError):
            TrainConfig("d", **bad)


def test_global_batch_splits_across_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [per_rank_batch(16, world) for world in (1, 2, 4, 8, 16)] == [16, 8, 4, 2, 1]
    for batch, world, suggestion in ((16, 3, 15), (5, 2, 4), (1, 2, 2)):
        with pytest.raises(
            InputError, match=f"--batch-size {batch} is the global batch.*multiple of {world} \\(e.g. {suggestion}\\)"
        ):
            per_rank_batch(batch, world)
    monkeypatch.setenv("WORLD_SIZE", "3")  # torchrun's environment: refused before the process group is joined
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(InputError, match="among the 3 processes"):
        Trainer(TrainConfig("d", batch_size=16, device="cpu"))
    assert Trainer(TrainConfig("d", batch_size=12, device="cpu")).dist.world == 3
