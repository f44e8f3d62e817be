"""mdanet_sdk.train.trainer / sampling / ablation and ``mdanet-sdk train|ablate`` on tiny phantom datasets."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mdanet_sdk.cli import app
from mdanet_sdk.data.cases import find_cases
from mdanet_sdk.data.dataset import kfold_split
from mdanet_sdk.data.phantom import write_dataset
from mdanet_sdk.errors import CheckpointError, InputError
from mdanet_sdk.evaluate import evaluate
from mdanet_sdk.train.ablation import run_ablation
from mdanet_sdk.train.checkpoint import load_checkpoint
from mdanet_sdk.train.sampling import LesionSampler
from mdanet_sdk.train.epoch import EpochTotals
from mdanet_sdk.train.fold import FoldState
from mdanet_sdk.train.events import SplitName
from mdanet_sdk.train.trainer import TrainConfig, TrainEvent, train

#: Tiny budget: 32×32 slices, a few steps per epoch.
TINY = dict(preset="small", size=32, batch_size=4, steps_per_epoch=2, workers=0, quiet=True)


@pytest.fixture(scope="module")
def tiny_mri(tmp_path_factory) -> Path:
    """10 ISLES'22-like phantoms of 32×32×6 voxels."""
    return write_dataset(tmp_path_factory.mktemp("tiny") / "isles22", "isles22", 10, seed=3, shape=(32, 32, 6))


class _Stop(Exception):
    """Raised by the progress callback to interrupt training as a crash would."""


# -- sampling and configuration -------------------------------------------------------------------


def test_sampler_oversamples_lesions_and_is_reproducible() -> None:
    has_lesion = np.zeros(1000, bool)
    has_lesion[:50] = True  # 5 % lesion slices
    sampler = LesionSampler(has_lesion, 4000, lesion_fraction=0.5, seed=1)
    sampler.set_epoch(3)
    first = sampler.indices()
    share = has_lesion[first].mean()
    assert 0.5 < share < 0.56  # p + (1 - p) × 5 % = 52.5 %
    assert np.array_equal(first, sampler.indices())  # same epoch, same draw
    sampler.set_epoch(4)
    assert not np.array_equal(first, sampler.indices())
    other_rank = LesionSampler(has_lesion, 4000, lesion_fraction=0.5, seed=1, rank=1, world_size=2)
    other_rank.set_epoch(3)
    assert not np.array_equal(first, other_rank.indices())


def test_sampler_without_oversampling_partitions_ranks() -> None:
    ranks = [LesionSampler(np.zeros(10, bool), 5, 0.0, seed=2, rank=r, world_size=2) for r in range(2)]
    drawn = np.concatenate([s.indices() for s in ranks])
    assert sorted(drawn.tolist()) == list(range(10))  # one permutation, split between the ranks
    assert len(ranks[0]) == 5


def test_config_validation_and_precision() -> None:
    assert TrainConfig("d", fold="all", folds=5).fold_indices() == [0, 1, 2, 3, 4]
    assert TrainConfig("d", fold="1,3").fold_indices() == [1, 3]
    assert TrainConfig("d", fold=2).fold_indices() == [2]
    for bad in (
        {"fold": "5"},
        {"fold": "x"},
        {"fold": "1,1"},
        {"size": 40},
        {"schedule": "step"},
        {"precision": "fp8"},
        {"epochs": 0},
        {"lesion_fraction": 1.5},
        {"dice": "pixel"},
    ):
        with pytest.raises(InputError):
            TrainConfig("d", **bad)
    # Numbers of the wrong type, or not finite, used to pass (lr=inf trained on NaN) or raise a bare TypeError.
    for bad, message in (
        ({"lr": float("inf")}, "lr must be a finite number"),
        ({"lam": float("nan")}, "lam must be a finite number"),
        ({"epochs": 1.5}, "epochs must be a whole number"),
        ({"batch_size": True}, "batch_size must be a whole number"),
        ({"folds": "2"}, "folds must be a whole number"),
        ({"betas": (0.9, float("inf"))}, "betas must be two finite numbers"),
    ):
        with pytest.raises(InputError, match=message):
            TrainConfig("d", **bad)
    assert TrainConfig("d", seed=np.int64(3), lr=np.float32(0.01), lam=1).seed == 3
    cfg = TrainConfig("d", betas=[0.8, 0.9])
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    # Run configs of earlier versions say amp (off for fp32): they still load, so their runs still resume.
    old = {k: v for k, v in cfg.to_dict().items() if k != "precision"}
    for amp, precision in (("off", "fp32"), ("auto", "auto"), ("bf16", "bf16"), ("fp16", "fp16")):
        assert TrainConfig.from_dict({**old, "amp": amp}) == TrainConfig("d", betas=[0.8, 0.9], precision=precision)


def test_epoch_totals_give_mean_losses_and_hard_dice() -> None:
    logits = torch.zeros(2, 2, 2, 2)
    logits[:, 1, 0, :] = 1.0  # lesion predicted in row 0 of both slices
    y = torch.zeros(2, 2, 2, dtype=torch.int64)
    y[0, 0, 0] = y[0, 1, 0] = 1  # one hit, one miss
    parts = {"total": torch.tensor(3.0), "dice": torch.tensor(1.0), "ce": torch.tensor(2.0)}
    sums = EpochTotals.zeros(torch.device("cpu")) + EpochTotals.of_batch(logits, y, parts)
    totals = EpochTotals.from_tensor(sums)
    assert (totals.samples, totals.tp, totals.fp, totals.fn) == (2, 1, 3, 1)
    stats = totals.stats()
    assert (stats.loss, stats.dice_loss, stats.ce, stats.sim) == (3.0, 1.0, 2.0, 0.0)
    assert stats.train_dsc == pytest.approx(2 / 6)
    assert EpochTotals().stats().train_dsc == 1.0  # no lesion predicted or labelled


def test_kfold_split_is_by_case(tiny_mri: Path) -> None:
    ids = [s.case_id for s in find_cases(tiny_mri)]
    splits = kfold_split(ids, k=5, seed=0)
    assert len(splits) == 5
    val = [c for _, v in splits for c in v]
    assert sorted(val) == sorted(ids) and len(val) == len(set(val))  # every case validated exactly once
    for train_ids, val_ids in splits:
        assert not set(train_ids) & set(val_ids) and sorted(train_ids + val_ids) == sorted(ids)


# -- cross-validation run, evaluation -------------------------------------------------------------


def test_five_folds_validate_every_case_once_and_evaluate(tiny_mri: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    results = train(TrainConfig(tiny_mri, run, epochs=1, **{**TINY, "steps_per_epoch": 1}))
    assert [f.fold for f in results.folds] == [0, 1, 2, 3, 4]
    val = [c["case_id"] for f in results.folds for c in f.val_cases]
    ids = [s.case_id for s in find_cases(tiny_mri)]
    assert sorted(val) == sorted(ids) and len(set(val)) == len(ids)
    for k in range(5):
        # By default an inner split of the training cases chose best.pt; the validation cases only report.
        fold = results.folds[k]
        assert fold.selected_on == "inner" and fold.selection_dsc is not None
        assert np.mean([c["dsc"] for c in fold.val_cases]) == pytest.approx(fold.val_dsc, abs=1e-12)
        ckpt = load_checkpoint(run / f"fold_{k}" / "best.pt")
        assert ckpt.meta["fold"] == k and ckpt.model_config.preset == "small" and ckpt.preprocess.size == 32
        assert sorted(ckpt.meta["val_cases"]) == sorted(c["case_id"] for c in results.folds[k].val_cases)
        # 8 training cases: round(15 %) = 1 held out, 7 trained on; none of them is validated.
        assert len(ckpt.meta["inner_cases"]) == 1 and ckpt.meta["n_train_cases"] == 7
        assert not set(ckpt.meta["inner_cases"]) & set(ckpt.meta["val_cases"])
        assert ckpt.meta["inner_dsc"] == pytest.approx(fold.selection_dsc) and ckpt.meta["val_dsc"] is None
        assert "synthetic" in ckpt.meta["training_data"]  # tiny_mri is written by the phantom writer
    # The run folder evaluates against the dataset: the same per-case scores, mean ± std over folds.
    report = evaluate(run, tiny_mri)
    assert report.over == "folds" and len(report.cases) == len(ids) and not report.missing
    assert report.summary["dsc"] == pytest.approx(results.summary["dsc"], abs=1e-9)
    saved = json.loads((run / "results.json").read_text())
    assert saved["summary"]["dsc"] == pytest.approx(list(results.summary["dsc"]))


# -- resume ---------------------------------------------------------------------------------------


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).state_dict


def test_interrupted_run_resumes_to_identical_weights(tiny_mri: Path, tmp_path: Path) -> None:
    cfg = dict(epochs=3, fold=0, seed=5, lesion_fraction=0.5, **TINY)
    train(TrainConfig(tiny_mri, tmp_path / "a", **cfg))

    events: list[TrainEvent] = []

    def crash(event: TrainEvent) -> None:
        events.append(event)
        if event.what == "step" and event.epoch == 1 and event.step == 2:  # mid-epoch (epoch 0 finished, saved)
            raise _Stop

    with pytest.raises(_Stop):
        train(TrainConfig(tiny_mri, tmp_path / "b", **cfg), crash)
    assert [(e.what, e.epoch, e.step) for e in events] == [
        ("epoch", 0, 0),
        ("step", 0, 1),
        ("step", 0, 2),
        ("validated", 0, 0),
        ("epoch", 1, 0),
        ("step", 1, 1),
        ("step", 1, 2),
    ]
    assert events[3].stats is not None and events[3].val_dsc == events[3].best_val_dsc and events[3].best_epoch == 0
    assert load_checkpoint(tmp_path / "b" / "fold_0" / "last.pt").meta["epoch"] == 0
    with pytest.raises(InputError, match="--resume"):
        train(TrainConfig(tiny_mri, tmp_path / "b", **cfg))
    # A resumed fold continues its optimizer and schedule: any other setting would mix two runs in one.
    changed = [{"model_overrides": {"msc": False}}, {"lr": 0.05}, {"lam": 0.0}, {"schedule": "constant"}]
    for change in changed:
        with pytest.raises(InputError, match=rf"holds a run with other settings \({next(iter(change))} .*resume it"):
            train(TrainConfig(tiny_mri, tmp_path / "b", resume=True, **{**cfg, **change}))
    with pytest.raises(InputError, match=r"epochs 3 there, 5 now"):
        train(TrainConfig(tiny_mri, tmp_path / "b", resume=True, **{**cfg, "epochs": 5}))
    result = train(TrainConfig(tiny_mri, tmp_path / "b", resume=True, **cfg))
    assert result.folds[0].epochs_run == 3
    a, b = _weights(tmp_path / "a" / "fold_0" / "last.pt"), _weights(tmp_path / "b" / "fold_0" / "last.pt")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    rows = list(csv.DictReader((tmp_path / "b" / "fold_0" / "metrics.csv").open()))
    rows_a = list(csv.DictReader((tmp_path / "a" / "fold_0" / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert [r["loss"] for r in rows] == [r["loss"] for r in rows_a]
    # A finished fold is not trained again.
    again = train(TrainConfig(tiny_mri, tmp_path / "b", resume=True, **cfg))
    assert again.folds[0].val_cases == result.folds[0].val_cases


def test_init_starts_from_given_weights(tiny_mri: Path, tmp_path: Path) -> None:
    first = train(TrainConfig(tiny_mri, tmp_path / "a", epochs=1, fold=0, **TINY))
    start = _weights(Path(first.folds[0].checkpoint))
    # With a learning rate of 1e-12 Adam moves every weight by about 1e-12: the weights stay the init's.
    tuned = train(
        TrainConfig(
            tiny_mri, tmp_path / "b", epochs=1, fold=0, lr=1e-12, init=first.folds[0].checkpoint, seed=5, **TINY
        )
    )
    after = _weights(Path(tuned.folds[0].checkpoint))
    convs = [k for k in start if k.endswith("conv.weight") or k.endswith(".0.weight")]
    assert convs and all(torch.allclose(start[k], after[k], rtol=0, atol=1e-9) for k in convs)
    scratch = _weights(
        Path(
            train(TrainConfig(tiny_mri, tmp_path / "c", epochs=1, fold=0, lr=1e-12, seed=5, **TINY)).folds[0].checkpoint
        )
    )
    assert not any(torch.allclose(start[k], scratch[k], rtol=0, atol=1e-3) for k in convs)
    with pytest.raises(CheckpointError, match="--init"):  # another architecture cannot start this run
        train(
            TrainConfig(
                tiny_mri,
                tmp_path / "d",
                epochs=1,
                fold=0,
                init=first.folds[0].checkpoint,
                model_overrides={"msc": False},
                **TINY,
            )
        )
    assert not (tmp_path / "d").exists()  # refused before config.json, so the corrected command can use "d"


def test_bf16_autocast_step(tiny_mri: Path, tmp_path: Path) -> None:
    seen: set[torch.dtype] = set()  # what the convolutions of the network in training computed in

    def record(module: torch.nn.Module, inputs: object, output: object) -> None:
        if isinstance(module, torch.nn.Conv2d) and module.training and isinstance(output, torch.Tensor):
            seen.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        result = train(TrainConfig(tiny_mri, tmp_path / "bf16", epochs=1, fold=0, precision="bf16", **TINY))
    finally:
        handle.remove()
    assert seen == {torch.bfloat16}
    history = json.loads((tmp_path / "bf16" / "fold_0" / "metrics.json").read_text())["history"]
    assert np.isfinite(history[0]["loss"]) and history[0]["loss"] > 0
    weights = _weights(Path(result.folds[0].checkpoint))
    assert all(w.dtype != torch.bfloat16 for w in weights.values())  # autocast never changes the stored weights


# -- CLI ------------------------------------------------------------------------------------------


def test_cli_train_then_evaluate(tiny_mri: Path, tmp_path: Path) -> None:
    run = tmp_path / "cli"
    args = [
        "train",
        str(tiny_mri),
        "--out",
        str(run),
        "--preset",
        "small",
        "--size",
        "32",
        "--fold",
        "1",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "1",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--dice",
        "slice",
        "--precision",
        "fp32",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "fold 1 epoch 1/1" in res.output and "val DSC %" in res.output and "inner" in res.output
    assert "validation over finished folds (fold 1 alone: no spread)" in res.output  # not "± 0.00"
    assert (run / "fold_1" / "best.pt").is_file() and not (run / "fold_0").exists()
    assert json.loads((run / "config.json").read_text())["dice"] == "slice"
    res = CliRunner().invoke(app, ["evaluate", str(run), str(tiny_mri), "--no-cases"])
    assert res.exit_code == 0 and "mean ± std over folds (2 cases)" in res.output
    bad = CliRunner().invoke(app, ["train", str(tmp_path / "nope"), "--out", str(run)])
    assert bad.exit_code == 2 and "does not exist" in bad.output


@pytest.mark.parametrize("kind", ["mri", "isles22"])  # isles22: what synth --kind took before; read as mri
def test_cli_synth_then_train_mri(tmp_path: Path, kind: str) -> None:
    data = tmp_path / "synth"
    res = CliRunner().invoke(app, ["synth", str(data), "--kind", kind, "--cases", "4", "--shape", "32x32x4"])
    assert res.exit_code == 0, res.output
    run = tmp_path / "run"
    args = [
        "train",
        str(data),
        "--kind",
        kind,
        "--out",
        str(run),
        "--preset",
        "small",
        "--size",
        "32",
        "--folds",
        "2",
        "--fold",
        "0",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "1",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--quiet",
    ]
    res = CliRunner().invoke(app, [*args, "--amp", "off"])  # the deprecated spelling of --precision fp32
    assert res.exit_code == 0, res.output
    assert "--amp is deprecated" in res.output and "fold 0 epoch" not in res.output  # --quiet: no bars
    config = json.loads((run / "config.json").read_text())
    assert (config["kind"], config["precision"]) == ("mri", "fp32") and "amp" not in config
    assert load_checkpoint(run / "fold_0" / "best.pt").model_config.groups == (("dwi",), ("adc",))
    assert len(list((run / "fold_0" / "predictions").glob("*_seg.nii.gz"))) == 2
    bad = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "bad"), "--precision", "fp8"])
    assert bad.exit_code == 2 and "precision" in bad.output


def test_ablation_smoke(tiny_mri: Path, tmp_path: Path) -> None:
    base = TrainConfig(tiny_mri, tmp_path / "abl", epochs=1, fold=0, **{**TINY, "steps_per_epoch": 1})
    result = run_ablation(base, ("3", "4"))
    assert sorted(p.name for p in (tmp_path / "abl").iterdir() if p.is_dir()) == sorted(
        ["unet", "dasc", "dasc-msc", "dasc-msc-gcfb", "mdanet", "skip-add", "skip-concat"]
    )
    configs = {
        n: load_checkpoint(tmp_path / "abl" / n / "fold_0" / "best.pt").model_config
        for n in ("unet", "dasc-msc", "skip-concat")
    }
    assert (configs["unet"].dasc, configs["unet"].msc, configs["unet"].bottleneck) == (False, False, "none")
    assert (configs["dasc-msc"].dasc, configs["dasc-msc"].msc, configs["dasc-msc"].bottleneck) == (True, True, "none")
    assert configs["skip-concat"].skip_fusion == "concat"
    md = (tmp_path / "abl" / "ablation.md").read_text()
    assert "| DASC | MSC | GCFB | SL | DSC (%) | Precision (%) | Recall (%) | F1 score |" in md
    assert "|  |  |  |  | " in md and "| ✓ | ✓ | ✓ | ✓ | " in md and "| Add | " in md
    rows = list(csv.DictReader((tmp_path / "abl" / "ablation.csv").open()))
    assert [r["variant"] for r in rows] == [
        "unet",
        "dasc",
        "dasc-msc",
        "dasc-msc-gcfb",
        "mdanet",
        "skip-add",
        "skip-concat",
        "mdanet",
    ]
    dsc = result.summaries["mdanet"]["dsc"][0]
    assert float(rows[4]["dsc_mean"]) == pytest.approx(dsc, abs=1e-6) and rows[4]["folds"] == "1"


@pytest.mark.parametrize(
    ("split", "label", "phrase"),
    [
        ("inner", "inner DSC", "no better inner-split Dice for 3 epochs"),
        ("val", "val DSC", "no better validation Dice for 3 epochs"),
        (None, "DSC", "no better Dice on the selection split for 3 epochs"),  # a producer that does not say
    ],
)
def test_progress_bar_names_the_split_it_scored(
    split: SplitName | None, label: str, phrase: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under --select inner the epoch's Dice is the inner split's: the bar and the stop line say so."""
    from mdanet_sdk.cli._app import console
    from mdanet_sdk.cli._progress import train_bars
    from mdanet_sdk.train.events import EpochStats

    monkeypatch.setattr(console, "_width", 160)  # the whole bar on one line
    stats = EpochStats(loss=0.5, dice_loss=0.3, ce=0.1, sim=0.1, train_dsc=0.42)
    with console.capture() as captured, train_bars(False, 3) as progress:
        assert progress is not None
        progress(TrainEvent("epoch", 2, 4, 10, 2))
        progress(TrainEvent("step", 2, 4, 10, 2, step=1, stats=stats))
        progress(
            TrainEvent("validated", 2, 4, 10, 2, stats=stats, val_dsc=0.61, best_val_dsc=0.7, best_epoch=1, split=split)
        )
        progress(TrainEvent("stopped", 2, 4, 10, 2, split=split))
    text = captured.get()
    assert f"loss 0.5000  dice 0.420  {label} 0.610 (best 0.700 @ 2)" in text
    assert f"fold 2: {phrase}, stopping." in text
    assert (" val DSC" in text) == (split == "val") and ("inner" in text) == (split == "inner")


def test_folds_added_to_a_run_must_share_its_settings(tiny_mri: Path, tmp_path: Path) -> None:
    """Another split (``folds``) or other settings added to a run folder used to be accepted (and a refused call
    rewrote the run's config.json first); now refused before anything is written, while a fold with the same
    settings is added."""
    cfg = dict(epochs=1, seed=5, lesion_fraction=0.5, folds=2, **TINY)
    train(TrainConfig(tiny_mri, tmp_path / "run", fold=0, **cfg))
    config = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(InputError, match="other settings"):
        train(TrainConfig(tiny_mri, tmp_path / "run", fold=1, **{**cfg, "folds": 3}))
    with pytest.raises(InputError, match="other settings"):
        train(TrainConfig(tiny_mri, tmp_path / "run", fold=0, **{**cfg, "lr": 0.05}))
    assert (tmp_path / "run" / "config.json").read_text() == config and not (tmp_path / "run" / "fold_1").exists()
    second = train(TrainConfig(tiny_mri, tmp_path / "run", fold=1, **cfg))
    assert (tmp_path / "run" / "fold_1" / "best.pt").is_file()
    # results.json lists both folds that its summary averages (it used to keep the last call's fold only).
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [f["fold"] for f in results["folds"]] == [0, 1] and [f.fold for f in second.folds] == [1]
    mean = np.mean([np.mean([c["dsc"] for c in f["val_cases"]]) for f in results["folds"]])
    assert results["summary"]["dsc"][0] == pytest.approx(mean)


def test_a_dataset_without_any_lesion_is_refused(tmp_path: Path) -> None:
    """All-empty labels used to train and report a validation DSC of 100 %."""
    root = write_dataset(tmp_path / "isles22", "isles22", 3, seed=3, shape=(32, 32, 6))
    for mask in root.rglob("*_msk.nii.gz"):
        image = nib.load(mask)
        nib.save(nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine), mask)
    with pytest.raises(InputError, match="has a lesion voxel"):
        train(TrainConfig(root, tmp_path / "run", epochs=1, folds=2, fold=0, **TINY))
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_split_that_cannot_be_made_writes_nothing(tmp_path: Path) -> None:
    """Two cases in two folds leave one training case, none for the inner split that picks best.pt: refused
    before config.json is written (it used to be left in the fresh run folder)."""
    root = write_dataset(tmp_path / "isles22", "isles22", 2, seed=3, shape=(32, 32, 6))
    with pytest.raises(InputError, match="cannot be divided into training and inner validation"):
        train(TrainConfig(root, tmp_path / "run", epochs=1, folds=2, fold=0, **TINY))
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_selection_split_without_gain_keeps_the_latest_weights() -> None:
    """An inner split whose Dice stays 0 (a lesion too small to find early) used to keep epoch 0's weights as
    best.pt; a tie now keeps the later weights, while the patience still counts it as no gain."""
    state = FoldState()
    chosen = [state.record(epoch, score, "inner", 2) for epoch, score in enumerate([0.0, 0.0, 0.0])]
    assert chosen == [True, True, True] and state.best_epoch == 2 and state.stopped_early
    state = FoldState()
    chosen = [state.record(epoch, score, "inner", 3) for epoch, score in enumerate([0.5, 0.7, 0.6, 0.70005, 0.8])]
    assert chosen == [True, True, False, True, True] and state.best_epoch == 4 and not state.stopped_early
    assert state.bad_epochs == 0 and state.best_score == 0.8
    state = FoldState()
    assert [state.record(e, s, "inner", 2) for e, s in enumerate([0.5, 0.4, 0.5])] == [True, False, True]
    assert state.stopped_early and state.best_epoch == 2
