"""The benchmark harness (mdanet_sdk.bench) and ``mdanet-sdk benchmark``: tiny configurations, a few seconds."""

from __future__ import annotations

import json
import time
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mdanet_sdk import ops
from mdanet_sdk.bench import (
    BenchmarkReport,
    BenchSettings,
    Stats,
    StageTimer,
    bench_many,
    bench_ops,
    bench_segment,
    machine_info,
    measure_interleaved,
    phantom_dataset,
    plot_throughput,
    random_segmenter,
    run_benchmark,
    segment_stages,
    summary_rows,
    write_json,
)
from mdanet_sdk.cli import app
from mdanet_sdk.data.cases import find_cases
from mdanet_sdk.errors import InputError
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.model import model_summary

#: The stable key set of a forward record (benchmarks/README.md); changing it needs a schema_version bump.
FORWARD_KEYS = {
    "section",
    "backend",
    "preset",
    "model",
    "kind",
    "in_channels",
    "size",
    "batch",
    "precision",
    "device",
    "ops",
    "status",
    "reason",
    "latency_ms",
    "throughput",
    "gflop_per_slice",
    "achieved_gflop_s",
    "peak_fraction",
    "slices_per_s_per_gflop",
    "baseline",
    "ratio",
}
STATS_KEYS = {"median", "q1", "q3", "min", "max", "n"}
TINY: dict[str, Any] = dict(presets=("small",), batch_sizes=(1, 2), size=32, warmup=0, repeats=2, device="cpu")


@pytest.fixture(scope="module")
def tiny_report() -> BenchmarkReport:
    """Forward + peers of the small preset at 32², eager/native/tensorrt: about 2 s on 2 cores."""
    settings = BenchSettings(backends=("eager", "native", "tensorrt"), sections=("forward", "peers"), **TINY)
    return run_benchmark(settings)


def test_stats_median_quartiles_extremes():
    s = Stats.of([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (s.median, s.q1, s.q3, s.min, s.max, s.n) == (3.0, 2.0, 4.0, 1.0, 5.0, 5)
    assert s.iqr == 2.0
    assert Stats.of([2.0, 4.0]).median == 3.0
    with pytest.raises(ValueError):
        Stats.of([])


def test_measure_interleaved_rotates_and_counts():
    calls: list[str] = []

    def call(name: str) -> None:
        calls.append(name)
        time.sleep(0.02 if name == "b" else 0.0)

    times = measure_interleaved({n: (lambda n=n: call(n)) for n in "abc"}, warmup=1, repeats=3)
    assert calls[:3] == ["a", "b", "c"]  # warm-up round
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # each round starts one later
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    # each call timed alone (medians: a neighbour's load may stall one call)
    assert min(times["b"]) >= 0.019 and np.median(times["a"]) < 0.01 and np.median(times["c"]) < 0.01


def test_stage_timer_accumulates_per_stage():
    timer = StageTimer()
    with timer.stage("slow"):
        time.sleep(0.1)  # far above the two short stages, whatever a loaded machine adds to them
    with timer.stage("fast"):
        time.sleep(0.005)
    with timer.stage("fast"):
        time.sleep(0.005)
    assert list(timer.seconds) == ["slow", "fast"]
    assert timer.seconds["slow"] >= 0.1 and 0.01 <= timer.seconds["fast"] < timer.seconds["slow"]
    assert timer.total == pytest.approx(sum(timer.seconds.values()))


def test_machine_info_names_the_machine():
    info = machine_info("cpu")
    assert info["cpu"] and info["cpu_count"] >= 1 and info["torch_threads"] >= 1
    assert info["torch"] == torch.__version__ and info["gpu"] is None
    assert info["native_ops"] is ops.native_available()


def test_one_record_per_backend_preset_batch_precision(tiny_report):
    fwd = [r for r in tiny_report.forward if r.section == "forward"]
    keys = [(r.backend, r.preset, r.batch, r.precision) for r in fwd]
    assert sorted(keys) == sorted((b, "small", n, "fp32") for b in ("eager", "native", "tensorrt") for n in (1, 2))
    by = {(r.backend, r.batch): r for r in fwd}
    for n in (1, 2):
        eager = by["eager", n]
        assert eager.status == "ok" and eager.ratio == 1.0 and eager.baseline == "eager/small"
        assert eager.latency_ms.n == 2 and eager.latency_ms.min <= eager.latency_ms.median <= eager.latency_ms.max
        # throughput and latency describe the same runs: slices/s = batch / seconds
        assert eager.throughput.max == pytest.approx(n / (eager.latency_ms.min / 1e3), rel=1e-6)
        trt = by["tensorrt", n]
        assert trt.status == "unavailable" and "CUDA" in trt.reason and trt.ratio is None
        native = by["native", n]
        assert native.status == ("ok" if ops.native_available() else "unavailable")
    # FLOPs per slice agree with model_summary (the README's model table)
    expected = model_summary(MDANetConfig.from_preset("small", "ctp"), 32)["gflops_per_slice"]
    assert by["eager", 1].gflop_per_slice == pytest.approx(expected, abs=1e-3)
    assert by["eager", 1].peak_fraction is None  # no device peak on a CPU


def test_peers_are_compared_with_eager_mdanet(tiny_report):
    peers = {(r.preset, r.batch): r for r in tiny_report.forward if r.section == "peers"}
    assert {p for p, _ in peers} == {"unet", "monai-basicunet"}
    unet = peers["unet", 1]
    assert unet.status == "ok" and unet.baseline == "eager/small" and unet.ratio > 0
    # the U-Net baseline does ~11x the small preset's work per slice at any size
    assert (
        8 < unet.gflop_per_slice / model_summary(MDANetConfig.from_preset("small", "ctp"), 32)["gflops_per_slice"] < 14
    )
    monai = peers["monai-basicunet", 1]
    if monai.status == "ok":  # same U-Net widths, MONAI's implementation: FLOPs within 10 %
        assert monai.gflop_per_slice == pytest.approx(unet.gflop_per_slice, rel=0.1)
    else:
        assert monai.status == "unavailable" and "MONAI" in monai.reason


def test_json_schema_is_stable(tiny_report, tmp_path):
    path = write_json(tiny_report, tmp_path / "out" / "bench.json")
    data = json.loads(path.read_text())
    assert data["schema"] == "mdanet-sdk-benchmark" and data["schema_version"] == 4
    assert set(data) == {
        "schema",
        "schema_version",
        "created",
        "seconds",
        "section_seconds",
        "machine",
        "load_avg_end",
        "settings",
        "forward",
        "segment",
        "segment_defaults",
        "predict_many",
        "ops",
    }
    assert set(data["section_seconds"]) == {"forward"}
    assert all(set(r) == FORWARD_KEYS for r in data["forward"])
    ok = [r for r in data["forward"] if r["status"] == "ok"]
    assert ok and all(set(r["latency_ms"]) == STATS_KEYS for r in ok)
    assert data["settings"]["precisions"] == ["fp32"] and data["settings"]["size"] == 32
    assert [p.name for p in path.parent.iterdir()] == ["bench.json"]  # atomic write leaves no temp file


def test_plot_is_a_png(tiny_report, tmp_path):
    path = plot_throughput(tiny_report, tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    empty = BenchmarkReport(machine=tiny_report.machine, settings=tiny_report.settings)
    with pytest.raises(InputError, match="Nothing to plot"):
        plot_throughput(empty, tmp_path / "empty.png")


def test_table_rows_show_ratios_and_reasons(tiny_report):
    rows = summary_rows(tiny_report)
    eager = [r for r in rows if r["backend"] == "eager" and r["section"] == "forward"]
    assert [r["× base"] for r in eager] == ["1.00×", "1.00×"]
    trt = [r for r in rows if r["backend"] == "tensorrt"]
    assert len(trt) == 1 and trt[0]["notes"].startswith("unavailable:")  # one row, not one per batch


def test_ops_section_uses_the_shapes_of_a_paper_forward():
    records = bench_ops(BenchSettings(size=32, warmup=0, repeats=1, device="cpu"))
    eager = {r.call: r for r in records if r.backend == "eager"}
    dasc = sorted((r.shapes["f_m1"] for r in eager.values() if r.op == "dasc_gate"), key=lambda s: s[1])
    assert dasc == [[1, 64, 32, 32], [1, 128, 16, 16], [1, 256, 8, 8], [1, 512, 4, 4]]
    graph = sorted(r.shapes["g"] for r in eager.values() if r.op == "graph_conv")
    # Channel graph 2N x E; space graph 2·grid² x C with the node grid the 2×2 bottleneck of a 32² input.
    assert graph == [[1, 8, 1024], [1, 512, 512]]
    assert all(r.ratio == 1.0 and r.latency_ms.n == 5 for r in eager.values())
    native = [r for r in records if r.backend == "native"]
    assert len(native) == 6 and all(r.status == ("ok" if ops.native_available() else "unavailable") for r in native)


def test_segment_section_times_every_stage(tmp_path):
    settings = BenchSettings(
        sections=("segment",),
        slices=2,
        segment_presets=("small",),
        warmup=0,
        repeats=1,
        backends=("eager", "native"),
        device="cpu",
    )
    records = bench_segment(settings, tmp_path)
    native_ok = ops.native_available()
    assert [(r.kind, r.backend) for r in records if r.status == "ok"] == [
        (v, b) for v in ("ctp", "mri") for b in ("eager", "native") if b == "eager" or native_ok
    ]
    for r in records:
        if r.status != "ok":
            continue
        assert r.shape == ((256, 256, 2) if r.kind == "ctp" else (112, 112, 2))
        assert list(r.stages) == ["load", "preprocess", "predict", "postprocess", "write"]
        assert sum(v["share"] for v in r.stages.values()) == pytest.approx(1.0)
        # one repeat: the total is exactly the staged sum; the Segmenter did the same case once
        assert r.total_ms.median == pytest.approx(sum(v["ms"].median for v in r.stages.values()))
        assert r.segmenter_ms.n == 1 and r.segmenter_ms.median > 0
        mask = nib.load(tmp_path / f"seg-{r.kind}-small-{r.backend}.nii.gz")
        assert mask.shape == r.shape and mask.get_data_dtype() == "uint8"
    assert {r.ratio for r in records if r.backend == "eager"} == {1.0}
    # the JSON names the modality kind `kind`, as the forward records do
    assert all(r.to_dict()["kind"] == r.kind and "volume" not in r.to_dict() for r in records)


@pytest.mark.parametrize("kind", ["mri", "ctp"])
def test_staged_mask_is_the_segmenters_bit_for_bit(tmp_path, kind):
    """The timed stages run the Segmenter's own prediction routine: same mask, same file contents."""
    shape = (48, 40, 5)
    source = find_cases(phantom_dataset(kind, shape, 1, tmp_path))[0]
    segmenter = random_segmenter("small", kind, batch=2)  # 5 slices: batches of 2, 2 and 1
    # Threshold at the median probability inside the head: half the voxels sit near it, so any difference in
    # how the probabilities are computed flips some of them.
    probability = segmenter.predict(source).probability_canonical
    segmenter.settings = segmenter.settings.updated(threshold=float(np.median(probability[probability > 0])))
    timer = segment_stages(source, segmenter, tmp_path / "staged.nii.gz")
    assert list(timer.seconds) == ["load", "preprocess", "predict", "postprocess", "write"]
    result = segmenter.predict(source)
    result.save(tmp_path / "segmenter.nii.gz")
    staged = nib.load(tmp_path / "staged.nii.gz")
    reference = nib.load(tmp_path / "segmenter.nii.gz")
    assert np.array_equal(np.asarray(staged.dataobj), result.mask)
    assert np.array_equal(np.asarray(staged.dataobj), np.asarray(reference.dataobj))
    assert staged.get_data_dtype() == reference.get_data_dtype() == np.uint8
    assert np.array_equal(staged.affine, reference.affine)
    assert 0 < result.mask.sum() < result.mask.size


def test_many_section_reports_peak_memory_from_a_fresh_process(tmp_path):
    settings = BenchSettings(sections=("many",), slices=2, segment_presets=("small",), many_counts=(2,), device="cpu")
    (record,) = bench_many(settings, tmp_path)
    assert record.status == "ok", record.reason
    assert record.n_cases == 2 and record.kind == "mri" and record.shape == (112, 112, 2)
    assert record.to_dict()["kind"] == "mri" and "volume" not in record.to_dict()
    assert record.backend == ("native" if ops.implementation("auto") == "native" else "eager")
    assert record.cases_per_s == pytest.approx(2 / record.seconds)
    # the child imported torch and built a network: hundreds of MB, and the peak is at least the setup level
    assert 100 < record.setup_rss_mb <= record.peak_rss_mb and record.peak_gpu_mb is None
    assert len(list((tmp_path / "many-2").glob("*.nii.gz"))) == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(backends=("cuda-graphs",)), "Unknown backend"),
        (dict(size=30), "multiple of 16"),
        (dict(presets=("huge",)), "Unknown preset"),
        (dict(batch_sizes=(0,)), "positive"),
        (dict(sections=("forward", "fp64")), "Unknown section"),
    ],
)
def test_settings_reject_bad_values(kwargs, message):
    with pytest.raises(InputError, match=message):
        BenchSettings(**kwargs)


def test_settings_from_env():
    s = BenchSettings.from_env(
        {"MDANET_BENCH_QUICK": "1", "MDANET_BENCH_BATCH_SIZES": "2, 4", "MDANET_BENCH_PRESETS": "paper"}
    )
    assert s.quick and s.size == 64 and s.batch_sizes == (2, 4) and s.presets == ("paper",)
    assert BenchSettings.from_env({}) == BenchSettings()
    with pytest.raises(InputError, match="integers"):
        BenchSettings.from_env({"MDANET_BENCH_SIZE": "big"})


def test_cli_prints_one_table_and_writes_json_and_plot(tmp_path):
    out, png = tmp_path / "b.json", tmp_path / "b.png"
    result = CliRunner().invoke(
        app,
        [
            "benchmark",
            "--quick",
            "--sections",
            "forward",
            "--preset",
            "small",
            "--backend",
            "eager,tensorrt",
            "--size",
            "32",
            "--batch-sizes",
            "1,2",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--json",
            str(out),
            "--plot",
            str(png),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "mdanet-sdk benchmark (quick)" in result.output and "1.00×" in result.output
    data = json.loads(out.read_text())
    assert data["settings"]["quick"] is True and data["settings"]["batch_sizes"] == [1, 2]
    assert {(r["backend"], r["batch"]) for r in data["forward"]} == {
        ("eager", 1),
        ("eager", 2),
        ("tensorrt", 1),
        ("tensorrt", 2),
    }
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_json_dash_prints_the_json_alone():
    result = CliRunner().invoke(
        app,
        [
            "benchmark",
            "--quick",
            "--sections",
            "forward",
            "--preset",
            "small",
            "--backend",
            "eager",
            "--size",
            "32",
            "--batch-sizes",
            "1",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--json",
            "-",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # no table, no "JSON:" line: stdout is the JSON (progress is on stderr)
    assert data["schema"] == "mdanet-sdk-benchmark" and [r["backend"] for r in data["forward"]] == ["eager"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--backend", "cuda-graphs"], "Unknown backend"),
        (["--batch-sizes", "1,x"], "comma-separated integers"),
        (["--size", "100"], "multiple of 16"),
    ],
)
def test_cli_bad_options_exit_2_with_one_line(args, message):
    result = CliRunner().invoke(app, ["benchmark", "--sections", "forward", *args])
    assert result.exit_code == 2
    assert message in result.output
