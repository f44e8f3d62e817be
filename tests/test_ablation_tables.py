"""Tables 1-2 (the baselines) and 5-6 (ablations) of the paper, the paper's figures beside ours, and the
transformer bottleneck."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner, Result

from mdanet_sdk.cli import app
from mdanet_sdk.config import PRESETS, MDANetConfig
from mdanet_sdk.data.cases import find_cases
from mdanet_sdk.data.phantom import write_dataset
from mdanet_sdk.errors import CheckpointError, InputError
from mdanet_sdk.model import MDANet, build_model, count_parameters, model_summary
from mdanet_sdk.model.fusion import AttentionFusion, TransformerBlock, TransformerFusion
from mdanet_sdk.data.preprocess import PreprocessConfig
from mdanet_sdk.train.ablation import TABLES, VARIANTS, AblationResult, run_ablation, variants_for
from mdanet_sdk.train.checkpoint import load_checkpoint, save_checkpoint
from mdanet_sdk.train.trainer import TrainConfig

# -- the transformer bottleneck (Table 5) ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ctp", "mri"])
def test_transformer_bottleneck_has_the_papers_parameter_count(kind: str) -> None:
    """Table 5: 61.7 M with the transformer bottleneck; per-group self-attention makes up the difference."""
    with torch.device("meta"):
        model = build_model(MDANetConfig.from_preset("paper", kind, bottleneck="transformer"))
        baseline = build_model(MDANetConfig.from_preset("paper", kind, bottleneck="none"))
    assert count_parameters(model) / 1e6 == pytest.approx(61.7, rel=0.10)
    fusion = model.bottleneck
    assert isinstance(fusion, TransformerFusion) and len(fusion.self_layers) == 2
    a, b = (set(map(id, layer.parameters())) for layer in fusion.self_layers)
    assert a and b and not a & b  # separate weights per group
    c = 1024
    block = 12 * c * c + 15 * c  # attention 4C² + 4C, MLP 8C² + 5C, three layer norms
    assert count_parameters(model) - count_parameters(baseline) == 3 * block + 8 * 8 * c  # + position embedding


def test_transformer_bottleneck_uses_the_position_embedding_at_any_size() -> None:
    torch.manual_seed(0)
    cfg = MDANetConfig.from_preset("small", "ctp", bottleneck="transformer", space_grid=2)
    fusion = MDANet(cfg).bottleneck.eval()
    assert isinstance(fusion, TransformerFusion)
    assert tuple(fusion.position.shape) == (1, 256, 2, 2)
    maps = [torch.randn(2, 256, 2, 2), torch.randn(2, 256, 2, 2)]
    with torch.no_grad():
        before = fusion(maps)
        assert before.shape == (2, 256, 2, 2)
        # Each group has its own self-attention: swapping the groups is no longer a mere sign change...
        assert not fusion([maps[1], maps[0]]).neg().allclose(before, atol=1e-3)
        shared = copy.deepcopy(fusion)
        shared.self_layers[1].load_state_dict(shared.self_layers[0].state_dict())
        # ... which it is with the same weights for both: the output is cross(a, b) - cross(b, a).
        torch.testing.assert_close(shared([maps[1], maps[0]]), -shared(maps), atol=1e-5, rtol=0)
        fusion.position.add_(torch.randn_like(fusion.position))
        assert not fusion(maps).allclose(before, atol=1e-3)  # the embedding is added to the tokens
        assert fusion([torch.randn(1, 256, 4, 4)] * 2).shape == (1, 256, 4, 4)  # resized to another grid
    single = MDANet(cfg.replace(dasc=False)).bottleneck
    assert isinstance(single, TransformerFusion)
    assert len(single.self_layers) == 1 and single([torch.randn(1, 256, 2, 2)]).shape == (1, 256, 2, 2)


def test_old_transformer_checkpoint_is_refused_as_not_fitting(tmp_path: Path) -> None:
    """Weights of the earlier shared-layer transformer bottleneck cannot load into today's network."""
    cfg = MDANetConfig.from_preset("small", "ctp", bottleneck="transformer", space_grid=2)
    old = MDANet(cfg)
    old.bottleneck = AttentionFusion(TransformerBlock(256), TransformerBlock(256))  # the earlier layout
    path = save_checkpoint(tmp_path / "old.pt", old, cfg, PreprocessConfig(size=32))
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path)
    message = str(refused.value)
    assert message.startswith(f"{path} comes from an earlier mdanet-sdk whose transformer bottleneck differed")
    assert "missing ['bottleneck.position'" in message and "unexpected ['bottleneck.self_layer." in message
    assert message.endswith("re-train it with this version.")
    # Either sign alone names the earlier bottleneck: here only the position embedding is missing...
    state = MDANet(cfg).state_dict()
    del state["bottleneck.position"]
    with pytest.raises(CheckpointError, match="comes from an earlier mdanet-sdk"):
        load_checkpoint(save_checkpoint(tmp_path / "position.pt", state, cfg, PreprocessConfig(size=32)))
    # ... while other weights that do not fit are an inconsistent file, as before.
    state = MDANet(cfg).state_dict()
    state["bottleneck.extra"] = torch.zeros(1)
    with pytest.raises(
        CheckpointError, match=r"do not fit its model config \(missing \[\], unexpected \['bottleneck\.extra'"
    ):
        load_checkpoint(save_checkpoint(tmp_path / "extra.pt", state, cfg, PreprocessConfig(size=32)))


@pytest.mark.parametrize(
    ("key", "value", "wanted"),
    [
        ("inner_cases", ["a", 3], "a list of strings"),
        ("val_patients", "p1", "a list of strings"),
        ("inner_dsc", "0.7", "a number or null"),
        ("best_dsc", True, "a number or null"),
        ("selected_on", 1, "a string"),
        ("grouped", 1, "true or false"),
        ("n_train_patients", 2.0, "an integer"),
    ],
)
def test_checkpoint_meta_of_the_fold_split_is_typed(key: str, value: object, wanted: str, tmp_path: Path) -> None:
    """The split and selection fields the trainer writes (select, groups) are checked as the older ones are."""
    cfg = MDANetConfig.from_preset("small", "mri")
    good = {
        "selected_on": "inner",
        "grouped": True,
        "inner_cases": ["a"],
        "val_patients": ["p1"],
        "n_train_patients": 2,
        "inner_dsc": 0.7,
        "best_dsc": None,
    }
    state = MDANet(cfg).state_dict()
    meta = load_checkpoint(save_checkpoint(tmp_path / "good.pt", state, cfg, PreprocessConfig(size=32), good)).meta
    assert good.items() <= meta.items()
    with pytest.raises(CheckpointError, match=rf"meta\['{key}'\] = .*, which is not {wanted};"):
        load_checkpoint(save_checkpoint(tmp_path / "bad.pt", state, cfg, PreprocessConfig(size=32), {key: value}))


# -- the tables ------------------------------------------------------------------------------------------------


def _summary(dsc: float, precision: float, recall: float) -> dict[str, tuple[float, float]]:
    return {"dsc": (dsc, 0.01), "precision": (precision, 0.02), "recall": (recall, 0.03)}


def test_every_table_prints_the_papers_figures_beside_ours() -> None:
    """Tables 3-6 in the paper's format; ours first, then the paper's, with "–" where a figure is missing."""
    names = [v.name for v in variants_for(["3", "4", "5", "6"])]
    summaries = {n: _summary(0.4 + i / 100, 0.5, 0.6) for i, n in enumerate(names)}
    models = {n: {"params_m": 1.234, "gflops": 0.5, "size": 64} for n in names if n != "bottleneck-nonlocal"}
    result = AblationResult(summaries, dict.fromkeys(names, 2), ("3", "4", "5", "6"), [], models)
    md = result.markdown()
    # Table 3: the U-Net row (no marks), ours 40.00 ± 1.00 ..., F1 of the means 2·0.5·0.6/1.1, then the paper's.
    assert (
        "|  |  |  |  | 40.00 ± 1.00 | 50.00 ± 2.00 | 60.00 ± 3.00 | 0.5455 | 53.34 ± 0.85 | 57.09 ± 3.99 | "
        "56.90 ± 3.40 | 0.5680 |" in md
    )
    i = names.index("skip-add")
    assert (
        f"| Add | {40 + i}.00 ± 1.00 | 50.00 ± 2.00 | 60.00 ± 3.00 | 56.22 ± 1.27 | 58.32 ± 2.71 | 60.06 ± 0.50 |" in md
    )
    assert "| Method | DSC (%) | Param (M) | FLOPs (G) | Paper DSC (%) | Paper Param (M) | Paper FLOPs (G) |" in md
    i = names.index("bottleneck-nonlocal")
    assert f"| Non-local | {40 + i}.00 ± 1.00 | – | – | 56.98 ± 1.60 | 27.60 | 11.22 |" in md
    i = names.index("mdanet")
    assert f"| GCFB (ours) | {40 + i}.00 ± 1.00 | 1.23 | 0.50 | 58.34 ± 2.11 | 25.30 | 11.22 |" in md
    assert "one 64×64 slice" in md
    assert "| λ | DSC (%) | Precision (%) | Recall (%) | F1 score | Paper DSC (%) |" in md
    i = names.index("lambda-0.75")
    assert f"| 0.75 | {40 + i}.00 ± 1.00 | 50.00 ± 2.00 | 60.00 ± 3.00 | 0.5455 | 58.25 ± 2.21 | 61.54 ± 3.96 |" in md
    assert "| 0 | " in md and "| 1 | " in md
    assert md.count("| Subtract | ") == 1 and md.count("## Table") == 4


def test_the_title_names_every_fold_the_table_averages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After split ``--fold`` calls the table averages the folds of all of them, and its title says which; a
    variant with one finished fold shows its mean alone (a std of one fold would read as "no spread")."""
    import mdanet_sdk.train.ablation as ablation
    from mdanet_sdk.train.config import TrainResults

    finished = {"skip-add": [0, 2], "skip-concat": [2], "mdanet": [0, 2]}

    def train(cfg: TrainConfig, progress: object = None) -> TrainResults:
        done = finished[Path(cfg.out_dir).name]
        return TrainResults(cfg.out_dir, [], _summary(0.5, 0.6, 0.7), done)

    monkeypatch.setattr(ablation, "train", train)
    base = TrainConfig(tmp_path / "data", tmp_path / "abl", folds=5, fold=2)  # this call: fold 2 only
    result = run_ablation(base, ("4",))
    md = result.files[0].read_text(encoding="utf-8")
    title = md.splitlines()[0]
    assert "folds 0,2 of 5 (not all in every row: see ablation.csv)" in title
    assert result.folds == {"skip-add": 2, "skip-concat": 1, "mdanet": 2}
    assert _row(md, "Add")[1] == "50.00 ± 1.00" and _row(md, "Concat")[1] == "50.00"


def test_tables_share_variants_and_refuse_unknown_tables() -> None:
    names = [v.name for v in variants_for(["3", "4", "5", "6"])]
    assert len(names) == len(set(names)) == 13  # 5 + 2 + 3 + 3: the full MDANet and "every component, λ = 0" once each
    assert [v.name for v in variants_for(["6", "5"])][:2] == ["dasc-msc-gcfb", "lambda-0.25"]
    assert [VARIANTS[n].lam for n in TABLES["6"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert VARIANTS["dasc-msc-gcfb"].overrides.get("bottleneck") == "gcfb"  # Table 6's λ = 0 is the full MDANet
    assert {VARIANTS[n].overrides.get("bottleneck", "gcfb") for n in TABLES["5"]} == {
        "none",
        "nonlocal",
        "transformer",
        "gcfb",
    }
    assert all(VARIANTS[n].lam == 1.0 for n in TABLES["5"])
    for bad, message in (([], "Name at least one"), (["7"], "Unknown ablation table '7'"), (["5", "x"], "'x'")):
        with pytest.raises(InputError, match=message):
            variants_for(bad)


# -- mdanet-sdk ablate --table 5 / 6 on phantoms ---------------------------------------------------------------


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 ISLES'22-like phantoms of 32×32×4 voxels."""
    return write_dataset(tmp_path_factory.mktemp("tables") / "isles22", "isles22", 8, seed=5, shape=(32, 32, 4))


@pytest.fixture
def one_thread() -> object:
    """One intra-op thread: on a few shared cores, two OpenMP threads waiting on each other make the tiny
    trainings of this module ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ablate(data: Path, out: Path, *args: str) -> Result:
    tiny = ["--preset", "small", "--size", "32", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "4"]
    return CliRunner().invoke(app, ["ablate", str(data), "--out", str(out), *tiny, "--workers", "0", "--quiet", *args])


def _row(md: str, label: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith(f"| {label} | "))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_ablate_tables_5_and_6_train_once_and_print_ours_beside_the_papers(
    phantoms: Path, tmp_path: Path, one_thread: object
) -> None:
    out = tmp_path / "abl"
    res = _ablate(phantoms, out, "--table", "5", "--folds", "4", "--fold", "0")
    assert res.exit_code == 0, res.output
    folders = {"bottleneck-none": "none", "bottleneck-nonlocal": "nonlocal", "bottleneck-transformer": "transformer"}
    for name, bottleneck in {**folders, "mdanet": "gcfb"}.items():
        ckpt = load_checkpoint(out / name / "fold_0" / "best.pt")
        assert (ckpt.model_config.bottleneck, json.loads((out / name / "config.json").read_text())["lam"]) == (
            bottleneck,
            1.0,
        )
    assert (
        "| Method | DSC (%) | Param (M) | FLOPs (G) | Paper DSC (%) | Paper Param (M) | Paper FLOPs (G) |" in res.output
    )
    md = (out / "ablation.md").read_text(encoding="utf-8")
    transformer = _row(md, "Transformer")
    results = json.loads((out / "bottleneck-transformer" / "results.json").read_text())
    mean, std = (100 * x for x in results["summary"]["dsc"])
    trained = load_checkpoint(out / "bottleneck-transformer" / "fold_0" / "best.pt")
    params = count_parameters(trained.build_model())
    assert transformer[3] == f"{model_summary(trained.model_config, 32)['gflops_per_slice']:.2f}"
    assert (results["summary_folds"], std) == ([0], 0.0)  # one fold: its mean alone, no "± 0.00" (the paper's have 5)
    assert transformer[1:] == [f"{mean:.2f}", f"{params / 1e6:.2f}", transformer[3], "57.14 ± 1.48"] + [
        "61.70",
        "15.83",
    ]
    assert float(transformer[3]) > float(_row(md, "Baseline")[3]) > 0  # attention adds FLOPs
    assert _row(md, "GCFB (ours)")[-3:] == ["58.34 ± 2.11", "25.30", "11.22"] and "one 32×32 slice" in md
    assert all(line in res.output for line in md.splitlines() if line.startswith("| "))  # printed as written
    best = out / "mdanet" / "fold_0" / "best.pt"
    trained = best.stat().st_mtime_ns

    res = _ablate(phantoms, out, "--table", "6", "--folds", "4", "--fold", "0")
    assert res.exit_code == 0, res.output
    assert best.stat().st_mtime_ns == trained  # the full MDANet (λ = 1) of Table 5 is Table 6's last row
    assert "| λ | DSC (%) | Precision (%) | Recall (%) | F1 score | Paper DSC (%) |" in res.output
    lams = {n: json.loads((out / n / "config.json").read_text())["lam"] for n in ("dasc-msc-gcfb", "lambda-0.5")}
    assert lams == {"dasc-msc-gcfb": 0.0, "lambda-0.5": 0.5}
    md = (out / "ablation.md").read_text(encoding="utf-8")
    assert _row(md, "0.25")[-4:] == ["58.19 ± 2.38", "61.67 ± 4.80", "61.16 ± 2.88", "0.6142"]
    assert "## Table 5" not in md and "| Baseline |" not in res.output
    rows = list(csv.DictReader((out / "ablation.csv").open(encoding="utf-8")))
    assert [(r["variant"], r["lam"], r["folds"]) for r in rows] == [
        ("dasc-msc-gcfb", "0", "1"),
        ("lambda-0.25", "0.25", "1"),
        ("lambda-0.5", "0.5", "1"),
        ("lambda-0.75", "0.75", "1"),
        ("mdanet", "1", "1"),
    ]
    summary = json.loads((out / "lambda-0.75" / "results.json").read_text())["summary"]
    precision, recall = summary["precision"][0], summary["recall"][0]
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    assert float(rows[3]["f1"]) == pytest.approx(f1, abs=1e-6) and rows[3]["paper_f1"] == "0.6236"
    assert float(rows[3]["dsc_mean"]) == pytest.approx(summary["dsc"][0], abs=1e-6)
    doc = json.loads((out / "ablation.json").read_text(encoding="utf-8"))
    assert doc["tables"] == ["6"] and doc["paper"]["6"]["mdanet"]["f1"] == 0.6195
    assert doc["models"]["lambda-0.5"]["params_m"] == doc["models"]["mdanet"]["params_m"]  # λ changes no weight


def test_ablate_refuses_an_unknown_table_before_any_work(phantoms: Path, tmp_path: Path) -> None:
    res = _ablate(phantoms, tmp_path / "abl", "--table", "5,7")
    assert res.exit_code == 2
    assert "Unknown ablation table '7': choose among 1, 2, 3, 4, 5, 6 (the paper's Tables 1-6)." in res.output
    assert not (tmp_path / "abl").exists()
    res = _ablate(phantoms, tmp_path / "abl", "--table", " , ")
    assert res.exit_code == 2 and "Name at least one ablation table: 1, 2, 3, 4, 5, 6." in res.output


def test_ablate_forwards_the_cross_validation_options_as_train_does(
    phantoms: Path, tmp_path: Path, one_thread: object
) -> None:
    """--select, --paper-plain, --groups and --inner-fraction reach every variant's run, as with `train`."""
    cases = [c.case_id for c in find_cases(phantoms)]
    assert len(cases) == 8
    patient = {c: f"p{i // 2}" for i, c in enumerate(cases)}  # two cases per patient
    groups = tmp_path / "groups.csv"
    groups.write_text("case,patient\n" + "".join(f"{c},{p}\n" for c, p in patient.items()))
    out = tmp_path / "abl"
    args = ("--table", "4", "--folds", "4", "--fold", "0", "--select", "last", "--paper-plain", "--groups", str(groups))
    res = _ablate(phantoms, out, *args)
    assert res.exit_code == 0, res.output
    for name in ("skip-add", "skip-concat", "mdanet"):
        config = json.loads((out / name / "config.json").read_text())
        plain = {k: config[k] for k in ("select", "paper_plain", "lesion_fraction", "schedule", "patience", "groups")}
        assert plain == {"select": "last", "paper_plain": True, "lesion_fraction": 0.0, "schedule": "constant"} | {
            "patience": 0,
            "groups": str(groups),
        }
        metrics = json.loads((out / name / "fold_0" / "metrics.json").read_text())
        assert (metrics["selection"]["select"], metrics["selection"]["selection_dsc"]) == ("last", None)
        split = metrics["split"]
        assert split["grouped"] and split["inner_cases"] == [] and split["n_train_patients"] == 3
        (held_out,) = split["val_patients"]  # the validation cases are one whole patient: both its cases
        assert sorted(split["val_cases"]) == sorted(c for c, p in patient.items() if p == held_out)
    # Values `train` refuses are refused here too, before any work: --inner-fraction reaches the config...
    res = _ablate(phantoms, tmp_path / "bad", "--table", "4", "--inner-fraction", "0.9")
    assert res.exit_code == 2 and "inner_fraction must be in (0, 0.5], got 0.9" in res.output
    # ... and so does --paper-plain, which refuses a schedule it would override.
    res = _ablate(phantoms, tmp_path / "bad", "--table", "4", "--paper-plain", "--schedule", "plateau")
    assert res.exit_code == 2 and "paper_plain (--paper-plain)" in res.output
    assert not (tmp_path / "bad").exists()


# -- Tables 1-2: the baselines beside MDANet --------------------------------------------------------------------


def test_comparison_tables_share_the_unet_and_mdanet_rows() -> None:
    """Tables 1-2: the six baselines at the run's widths, then the full MDANet; U-Net is Table 3's network."""
    assert (
        TABLES["1"]
        == TABLES["2"]
        == (
            "unet",
            "attention-unet",
            "unetpp",
            "msnet",
            "transunet",
            "swin-unet",
            "mdanet",
        )
    )
    assert len(variants_for(["1", "2", "3", "4", "5", "6"])) == 13 + 5  # the five new networks only
    assert [VARIANTS[n].architecture for n in TABLES["2"]][1:-1] == list(TABLES["2"][1:-1])
    assert all(VARIANTS[n].marks == (False,) * 4 and VARIANTS[n].lam == 0 for n in TABLES["1"][:-1])
    with torch.device("meta"):
        ablated = build_model(MDANetConfig.from_preset("small", "mri", **VARIANTS["unet"].overrides))
        baseline = build_model(MDANetConfig.from_preset("small", "mri", architecture="unet"))
    assert [(k, tuple(v.shape)) for k, v in ablated.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in baseline.state_dict().items()
    ]


def test_table_1_prints_the_isles_2018_figures_and_says_which_rows_are_left_out() -> None:
    names = list(TABLES["1"])
    summaries = {n: _summary(0.3 + i / 100, 0.4, 0.5) for i, n in enumerate(names)}
    models = {n: {"params_m": 2.5 + i, "gflops": 0.125, "size": 32} for i, n in enumerate(names)}
    md = AblationResult(summaries, dict.fromkeys(names, 2), ("1",), [], models).markdown()
    assert "## Table 1: comparison with other networks (the paper's figures: ISLES 2018, CTP)" in md
    assert "| Method | DSC (%) | Precision (%) | Recall (%) | F1 score | Param (M) | FLOPs (G) | Paper DSC (%) |" in md
    # ours: 35.00 ± 1.00, 40.00 ± 2.00, 50.00 ± 3.00, F1 of the means 2·0.4·0.5/0.9, 7.50 M, 0.12 G
    assert (
        "| TransUNet | 34.00 ± 1.00 | 40.00 ± 2.00 | 50.00 ± 3.00 | 0.4444 | 6.50 | 0.12 | 52.34 ± 3.73 | "
        "53.42 ± 6.64 | 59.05 ± 5.11 | 0.5571 | 175.30 | 19.19 |" in md
    )
    assert _row(md, "Swin-UNet")[-6:] == ["48.50 ± 3.85", "51.42 ± 5.01", "55.25 ± 8.27", "0.5275", "106.00", "6.14"]
    assert _row(md, "MDANet")[-6:] == ["58.34 ± 2.11", "60.22 ± 3.69", "64.03 ± 2.89", "0.6195", "25.30", "11.22"]
    assert "OctopusNet, Abulnaga et al., Pool-UNet and Perf-UNet" in md and "they are omitted" in md
    assert "(ISLES 2018; 5-fold cross-validation)" in md and "| Perf-UNet |" not in md


def test_ablate_table_2_trains_every_network_and_prints_ours_beside_the_papers(
    phantoms: Path, tmp_path: Path, one_thread: object
) -> None:
    out = tmp_path / "abl"
    res = _ablate(phantoms, out, "--table", "2", "--folds", "4", "--fold", "0", "--select", "last")
    assert res.exit_code == 0, res.output
    md = (out / "ablation.md").read_text(encoding="utf-8")
    assert "## Table 2: comparison with other networks (the paper's figures: ISLES 2022, MRI)" in res.output
    labels = ["U-Net", "Attention U-Net", "U-Net++", "MSNet", "TransUNet", "Swin-UNet", "MDANet"]
    table = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| Method")]
    assert [line.split(" | ")[0][2:] for line in table] == labels
    assert all(line in res.output for line in table)  # printed as written
    paper = {  # the paper's Table 2, as printed
        "U-Net": ["63.93 ± 3.26", "74.55 ± 1.98", "62.11 ± 5.07", "0.6764", "30.00", "2.69"],
        "Attention U-Net": ["68.20 ± 0.86", "72.95 ± 2.47", "70.65 ± 2.01", "0.7173", "29.90", "2.47"],
        "U-Net++": ["69.57 ± 1.24", "74.94 ± 1.19", "70.91 ± 1.53", "0.7286", "35.00", "6.66"],
        "MSNet": ["68.66 ± 1.30", "74.59 ± 2.65", "69.42 ± 2.69", "0.7184", "20.30", "1.73"],
        "TransUNet": ["69.75 ± 1.23", "75.03 ± 2.11", "69.80 ± 1.90", "0.7228", "175.30", "4.61"],
        "Swin-UNet": ["55.08 ± 3.02", "56.36 ± 4.00", "65.40 ± 3.69", "0.6039", "105.40", "6.10"],
        "MDANet": ["70.44 ± 0.97", "75.30 ± 2.71", "72.22 ± 1.63", "0.7368", "25.30", "3.57"],
    }
    rows = {r["variant"]: r for r in csv.DictReader((out / "ablation.csv").open(encoding="utf-8"))}
    assert list(rows) == list(TABLES["2"])
    widths = {}
    for name, label in zip(TABLES["2"], labels, strict=True):
        ckpt = load_checkpoint(out / name / "fold_0" / "best.pt")
        arch = "mdanet" if name == "unet" else name
        assert (ckpt.model_config.architecture, ckpt.model_config.widths) == (arch, PRESETS["small"])
        summary = json.loads((out / name / "results.json").read_text())["summary"]
        ours = [f"{100 * summary[k][0]:.2f}" for k in ("dsc", "precision", "recall")]  # one fold: the mean alone
        params = count_parameters(ckpt.build_model()) / 1e6
        cells = _row(md, label)
        gflops = model_summary(ckpt.model_config, 32)["gflops_per_slice"]
        assert cells[1:4] == ours and cells[5] == f"{params:.2f}" and cells[6] == f"{gflops:.2f}"
        assert cells[7:] == paper[label]
        assert (rows[name]["architecture"], float(rows[name]["params_m"])) == (arch, pytest.approx(params, abs=1e-3))
        assert float(rows[name]["dsc_mean"]) == pytest.approx(summary["dsc"][0], abs=1e-6)
        widths[name] = params
    assert widths["transunet"] > widths["unetpp"] > widths["unet"] > widths["msnet"]  # the paper's order
    assert rows["swin-unet"]["paper_params_m"] == "105.4" and rows["mdanet"]["lam"] == "1"
    doc = json.loads((out / "ablation.json").read_text(encoding="utf-8"))
    assert doc["tables"] == ["2"] and doc["paper"]["2"]["unetpp"]["gflops"] == 6.66
    assert set(doc["models"]) == set(TABLES["2"]) and doc["models"]["msnet"]["size"] == 32

    # Table 1 is the same networks: nothing trains again, only the paper's figures change.
    best = {n: (out / n / "fold_0" / "best.pt").stat().st_mtime_ns for n in TABLES["1"]}
    res = _ablate(phantoms, out, "--table", "1", "--folds", "4", "--fold", "0", "--select", "last")
    assert res.exit_code == 0, res.output
    assert {n: (out / n / "fold_0" / "best.pt").stat().st_mtime_ns for n in TABLES["1"]} == best
    assert _row(res.output, "U-Net++")[1:4] == _row(md, "U-Net++")[1:4]
    assert _row(res.output, "U-Net++")[7:] == ["55.04 ± 2.61", "55.96 ± 5.03", "62.47 ± 3.06", "0.5886", "35.00"] + [
        "26.69"
    ]


@pytest.mark.parametrize("size", [48, 96])
def test_tables_1_and_2_refuse_a_size_swin_unet_cannot_take_before_training(
    phantoms: Path, tmp_path: Path, size: int
) -> None:
    res = _ablate(phantoms, tmp_path / "abl", "--table", "3,2", "--size", str(size))
    assert res.exit_code == 2
    assert f"Swin-UNet (Tables 1-2) cuts its token grids into 8×8 windows, which --size {size} does not" in res.output
    assert not (tmp_path / "abl").exists()


def test_ablations_refuse_a_baseline_preset(phantoms: Path, tmp_path: Path) -> None:
    """With a baseline preset every MDANet row would train that baseline."""
    base = TrainConfig(data_dir=str(phantoms), out_dir=str(tmp_path / "abl"), preset="msnet", size=32)
    with pytest.raises(InputError, match=r"start from --preset paper or small, not 'msnet'"):
        run_ablation(base, ("1",))
    assert not (tmp_path / "abl").exists()
