"""The benchmark's segment section compared with the Segmenter's defaults (today's behaviour against the defaults,
on phantoms and on ``--case`` folders of the user's): ``mdanet_sdk.bench.defaults``."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mdanet_sdk.bench import (
    BenchmarkReport,
    bench_defaults,
    BenchSettings,
    DefaultsRecord,
    machine_info,
    random_segmenter,
    run_benchmark,
    summary_rows,
    write_json,
)
from mdanet_sdk.cli import app
from mdanet_sdk.data.cases import find_cases
from mdanet_sdk.bench import defaults
from mdanet_sdk.errors import CheckpointError, InputError


TODAY = {
    "precision": "fp32",
    "batch": 16,
    "memory_format": "contiguous",
    "compiled": False,
    "retain_memory": False,
    "tta_screen": False,
}


def test_defaults_comparison_alternates_today_and_defaults(tmp_path):
    """Bundled weights on each kind's phantom, both variants timed in one run; the ratio is of their medians."""
    settings = BenchSettings.quick_run(sections=("segment",), slices=2, warmup=0, repeats=3, device="cpu")
    records = bench_defaults(settings, tmp_path)
    assert [(r.kind, r.weights, r.status) for r in records] == [
        ("ctp", "default-ctp", "ok"),
        ("mri", "default-mri", "ok"),
    ]
    for r in records:
        today, new = r.variants["today"], r.variants["defaults"]
        # today is fp32 + contiguous + batch 16 + eager + memory handed back, whatever the defaults become; each
        # variant ran in its own process, so the defaults' process-wide memory setting did not reach today's
        assert {k: today[k] for k in TODAY} == TODAY
        assert new["retain_memory"] is True and new["memory_format"] == "channels_last"
        assert new["tta_screen"] is False  # on by default, but --quick turns TTA off, so there is nothing to screen
        assert today["options"] == {"tta": False, **defaults.TODAY_OPTIONS} and new["options"] == {"tta": False}
        assert today["total_ms"].n == new["total_ms"].n == 3 and r.round_ratio.n == 3
        assert r.ratio == pytest.approx(today["total_ms"].median / new["total_ms"].median)
        assert r.round_ratio.min <= r.round_ratio.median <= r.round_ratio.max
        assert new["slices_per_s"] == pytest.approx(2 / (new["total_ms"].median / 1e3))
        # in fp32 both masks differ by rounding at most; bf16 (on a CPU with native bf16) a little more
        assert r.mask_dice >= (0.99 if new["precision"] == "fp32" else 0.9), r.mask_dice
        for name in ("today", "defaults"):
            assert nib.load(tmp_path / f"defaults-{r.kind}-{name}.nii.gz").shape == r.shape
        assert np.asarray(nib.load(tmp_path / f"defaults-{r.kind}-today.nii.gz").dataobj).sum() > 20  # not two empty
    report = BenchmarkReport(machine=machine_info("cpu"), settings=settings, segment_defaults=records)
    data = json.loads(write_json(report, tmp_path / "b.json").read_text())
    assert [d["variants"]["today"]["total_ms"]["n"] for d in data["segment_defaults"]] == [3, 3]
    rows = [row for row in summary_rows(report) if row["backend"] in ("today", "defaults")]
    new = records[0].variants["defaults"]
    assert [(row["backend"], row["batch"], row["prec"]) for row in rows[:2]] == [
        ("today", "16", "fp32"),
        ("defaults", str(new["batch"]), new["precision"]),
    ]
    assert rows[0]["× base"] == "1.00×" and rows[1]["× base"] == f"{records[0].ratio:.2f}×"
    assert "mask Dice vs today" in rows[1]["notes"]


def test_defaults_comparison_on_a_users_case(tmp_path, monkeypatch):
    """--case adds a record per case found, with the bundled weights of its kind, named by its id."""
    from mdanet_sdk.data.phantom import write_dataset

    # a territorial lesion of 44 voxels that the bundled weights find (46 marked): two empty masks would agree
    data = write_dataset(tmp_path / "mine", "isles22", n_cases=1, seed=7, shape=(48, 48, 3), pattern="territorial")
    monkeypatch.setattr(defaults, "VOLUMES", {})  # the phantoms are the test above's
    settings = BenchSettings.quick_run(sections=("segment",), warmup=0, repeats=3, device="cpu", cases=(str(data),))
    (record,) = bench_defaults(settings, tmp_path / "work")
    (source,) = find_cases(data)
    assert (record.case, record.kind, record.weights, record.shape, record.status) == (
        source.case_id,
        "mri",
        "default-mri",
        (48, 48, 3),
        "ok",
    )
    assert record.ratio is not None and record.ratio > 0 and record.mask_dice is not None
    assert record.mask_dice >= (0.99 if record.variants["defaults"]["precision"] == "fp32" else 0.9)
    assert nib.load(tmp_path / "work" / "case-0" / "defaults-mri-defaults.nii.gz").shape == (48, 48, 3)
    assert np.asarray(nib.load(tmp_path / "work" / "case-0" / "defaults-mri-today.nii.gz").dataobj).sum() > 20
    report = BenchmarkReport(machine=machine_info("cpu"), settings=settings, segment_defaults=[record])
    rows = [row for row in summary_rows(report) if row["backend"] in ("today", "defaults")]
    assert rows[0]["what"] == f"mri {source.case_id} 48×48×3 default-mri"
    with pytest.raises(InputError, match="does not exist"):  # refused before any section runs
        run_benchmark(BenchSettings.quick_run(sections=("segment",), cases=(str(tmp_path / "nowhere"),)), tmp_path)
    with pytest.raises(InputError, match="add segment to --sections"):
        run_benchmark(BenchSettings.quick_run(sections=("ops",), cases=(str(data),)), tmp_path)


def test_defaults_comparison_records_a_case_it_cannot_read(tmp_path, monkeypatch):
    from mdanet_sdk.data.phantom import write_dataset

    # a territorial lesion of 44 voxels that the bundled weights find (46 marked): two empty masks would agree
    data = write_dataset(tmp_path / "mine", "isles22", n_cases=1, seed=7, shape=(48, 48, 3), pattern="territorial")
    (source,) = find_cases(data)
    next(iter(source.paths.values())).write_bytes(b"not a NIfTI file")
    monkeypatch.setattr(defaults, "VOLUMES", {})
    settings = BenchSettings.quick_run(sections=("segment",), warmup=0, device="cpu", cases=(str(data),))
    (record,) = bench_defaults(settings, tmp_path / "work")
    assert (record.case, record.status, record.ratio) == (source.case_id, "unavailable", None)
    assert record.reason
    report = BenchmarkReport(machine=machine_info("cpu"), settings=settings, segment_defaults=[record])
    (row,) = [row for row in summary_rows(report) if row["backend"] == "today → defaults"]
    assert row["what"] == source.case_id and row["notes"].startswith("unavailable: ")


def test_cli_exits_1_with_one_line_per_case_it_could_not_measure(tmp_path, monkeypatch):
    import mdanet_sdk.bench as bench

    data = tmp_path / "mine"
    data.mkdir()
    settings = BenchSettings.quick_run(sections=("segment",), device="cpu", cases=(str(data),))
    unreadable = DefaultsRecord(
        kind="?", shape=(0, 0, 0), weights="", device="cpu", status="unavailable", reason="not a NIfTI file.", case="c7"
    )
    phantom = DefaultsRecord(kind="mri", shape=(8, 8, 2), weights="default-mri", device="cpu", status="error")
    report = BenchmarkReport(machine=machine_info("cpu"), settings=settings, segment_defaults=[phantom, unreadable])
    monkeypatch.setattr(bench, "run_benchmark", lambda *a, **k: report)
    out = tmp_path / "b.json"
    result = CliRunner().invoke(app, ["benchmark", "--sections", "segment", "--case", str(data), "--json", str(out)])
    assert result.exit_code == 1, result.output
    assert "error: case c7: not a NIfTI file." in result.output and "error: case phantom" not in result.output
    assert json.loads(out.read_text())["segment_defaults"][1]["case"] == "c7"  # the report is written all the same
    report.segment_defaults = [phantom]  # a phantom the weights could not run is a row of the table, not a failure
    assert CliRunner().invoke(app, ["benchmark", "--sections", "segment"]).exit_code == 0


def test_defaults_comparison_reports_missing_weights(tmp_path, monkeypatch):
    def missing(kind, device, common, source, workdir):
        raise CheckpointError(f"default-{kind} is not bundled with this installation.")

    monkeypatch.setattr(defaults, "start_variants", missing)
    settings = BenchSettings.quick_run(slices=1, device="cpu")
    records = bench_defaults(settings, tmp_path)
    assert [(r.status, r.ratio, r.variants) for r in records] == [("unavailable", None, {})] * 2
    report = BenchmarkReport(machine=machine_info("cpu"), settings=settings, segment_defaults=records)
    rows = [row for row in summary_rows(report) if row["backend"] == "today → defaults"]
    assert [row["notes"] for row in rows] == [
        f"unavailable: default-{k} is not bundled with this installation." for k in ("ctp", "mri")
    ]


def test_describe_segmenter_reads_what_runs():
    segmenter = random_segmenter("small", "mri", batch=3)
    model = segmenter.predictor.models[0]
    model.to(memory_format=torch.contiguous_format)
    assert defaults.describe_segmenter(segmenter) == {**TODAY, "batch": 3, "retain_memory": segmenter.retains_memory}
    segmenter.tta = True  # the screen (on by default) shows once there are flips to screen
    assert defaults.describe_segmenter(segmenter)["tta_screen"] is True
    model.to(memory_format=torch.channels_last)
    assert defaults.describe_segmenter(segmenter)["memory_format"] == "channels_last"
    segmenter.predictor.models[0] = torch.compile(model, backend="eager")  # a wrapper, not compiled until called
    assert defaults.describe_segmenter(segmenter)["compiled"] is True
