"""The one-command GPU check (mdanet_sdk.bench.gpu_check, scripts/gpu_check.sh), on the CPU: arguments, the
JSON, skip messages, step time limits, failing steps that do not stop the others, and a dry run end to end."""

from __future__ import annotations

import json
import math
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from mdanet_sdk import ops
from mdanet_sdk.bench.gpu_check import (
    STEP_NAMES,
    CheckConfig,
    Recorder,
    Skip,
    Step,
    exit_code,
    main,
    parse_args,
    run_check,
)
from mdanet_sdk.bench.gpu_check import op_check, tool_steps, torch_steps
from mdanet_sdk.bench.gpu_check.runner import summary_lines
from mdanet_sdk.ops import reference

ROOT = Path(__file__).resolve().parents[1]

FAKE_STEPS = textwrap.dedent(
    """
    import os, signal, time
    from mdanet_sdk.bench.gpu_check.child import Skip

    def slow(config, rec):
        rec.put("before", 1)          # written before the limit: must survive the kill
        time.sleep(60)
        rec.put("after", 1)

    def broken(config, rec):
        raise ValueError("kernel wrote outside its tile")

    def absent(config, rec):
        raise Skip("no TensorRT here; pip install 'mdanet-sdk[trt]' on a GPU machine")

    def crash(config, rec):
        os.kill(os.getpid(), signal.SIGKILL)

    def fine(config, rec):
        rec.append("rows", {"batch": 1})
        rec.finish("ok", "all good")
    """
)


@pytest.fixture
def fake_steps(tmp_path, monkeypatch):
    """A module of step functions importable by the child processes."""
    (tmp_path / "fake_gpu_steps.py").write_text(FAKE_STEPS)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{ROOT}")
    return lambda name: Step(name, f"fake {name}", f"fake_gpu_steps:{name}")


def _config(tmp_path: Path, **kw) -> CheckConfig:
    return CheckConfig(out=str(tmp_path / "out" / "check.json"), workdir=str(tmp_path / "work"), repo=str(ROOT), **kw)


def test_arguments_defaults_and_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path))
    config, steps = parse_args([])
    assert steps == STEP_NAMES == ("build", "tests", "ops", "tensorrt", "bench", "segment", "train")
    assert config.out == str(tmp_path / "gpu-check.json") and not config.dry_run
    assert (config.device, config.size, config.batch_sizes, config.preset) == ("cuda", 256, (1, 16, 64), "paper")
    assert config.budget_s < 8 * 60  # the slot: under 8 minutes
    config, steps = parse_args(
        ["--skip", "build,tests", "--limit", "bench=200", "--batch-sizes", "2,4", "--budget", "300"]
    )
    assert steps == ("ops", "tensorrt", "bench", "segment", "train")
    assert config.limits["bench"] == 200 and config.limits["ops"] == 45 and config.batch_sizes == (2, 4)
    assert config.budget_s == 300
    dry, _ = parse_args(["--dry-run", "--size", "64"])
    assert (dry.dry_run, dry.device, dry.size, dry.preset, dry.compile_backend) == (True, "cpu", 64, "small", "eager")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "build,fly"], "unknown step 'fly'"),
        (["--limit", "bench"], "STEP=SECONDS"),
        (["--limit", "warp=3"], "STEP=SECONDS"),
        (["--batch-sizes", "1,x"], "positive comma-separated integers"),
        (["--size", "100"], "multiple of 16"),
        (["--budget", "0"], "--budget must be positive"),
    ],
)
def test_wrong_arguments_exit_2_with_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(args)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_out_replaces_only_an_earlier_report(tmp_path, capsys):
    """The JSON is rewritten as results arrive: it must not land on a user's document (the rule of every report)."""
    readme = tmp_path / "README.md"
    readme.write_text("# my notes\n")
    dataset = tmp_path / "dataset_description.json"
    dataset.write_text('{"Name": "my study", "BIDSVersion": "1.8.0"}')
    for out, words in ((readme, "no earlier JSON report"), (dataset, "no earlier JSON report"), (tmp_path, "a folder")):
        with pytest.raises(SystemExit) as exc:
            parse_args(["--out", str(out)])
        assert exc.value.code == 2 and words in capsys.readouterr().err
    assert readme.read_text() == "# my notes\n" and "BIDSVersion" in dataset.read_text()
    earlier = tmp_path / "gpu-check.json"
    earlier.write_text(json.dumps({"schema": "mdanet-sdk-gpu-check", "steps": {}}))
    empty = tmp_path / "mktemp.json"
    empty.touch()
    for out in (earlier, empty, tmp_path / "new.json"):
        assert parse_args(["--out", str(out)])[0].out == str(out)


def test_config_round_trips_through_the_childs_file(tmp_path):
    config = CheckConfig.dry(out="o.json", workdir="w", repo=".", batch_sizes=(3, 5))
    config.save(tmp_path / "c.json")
    assert CheckConfig.load(tmp_path / "c.json") == config


def test_a_failing_step_does_not_stop_the_others(tmp_path, fake_steps):
    config = _config(tmp_path, limits={"slow": 6, "broken": 60, "absent": 60, "crash": 60, "fine": 60})
    lines: list[str] = []
    steps = [fake_steps(n) for n in ("slow", "broken", "absent", "crash", "fine")]
    report = run_check(config, steps, say=lines.append, machine={"name": "test"})
    s = report["steps"]
    assert [e["status"] for e in s.values()] == ["timeout", "failed", "skipped", "crashed", "ok"]
    assert s["slow"]["result"] == {"before": 1} and 6 <= s["slow"]["seconds"] < 20  # killed at its limit, data kept
    assert "its 6 s limit" in s["slow"]["summary"]
    assert s["broken"]["summary"] == "failed: ValueError: kernel wrote outside its tile"
    assert "ValueError" in s["broken"]["reason"] and "log_tail" in s["broken"]
    assert s["absent"]["summary"] == "skipped: no TensorRT here; pip install 'mdanet-sdk[trt]' on a GPU machine"
    assert s["crash"]["summary"].startswith("crashed (signal 9)")
    assert s["fine"]["result"] == {"rows": [{"batch": 1}]} and s["fine"]["summary"] == "all good"
    assert exit_code(report) == 1
    # the file on disk is the same record, written atomically (no temporary left beside it)
    on_disk = json.loads(Path(config.out).read_text())
    assert on_disk["steps"] == s and on_disk["schema"] == "mdanet-sdk-gpu-check" and on_disk["finished"]
    assert on_disk["machine"] == {"name": "test"} and on_disk["config"]["limits"]["slow"] == 6
    assert sorted(p.name for p in Path(config.out).parent.iterdir()) == ["check-logs", "check.json"]
    assert any(line.startswith("[5/5] fine: ok") for line in lines)
    table = "\n".join(summary_lines(report))
    assert "timeout" in table and "crashed" in table and "all good" in table


def test_the_budget_bounds_the_run(tmp_path, fake_steps):
    config = _config(tmp_path, budget_s=12, limits={"slow": 60, "fine": 60})
    report = run_check(config, [fake_steps("slow"), fake_steps("fine")], say=lambda _: None, machine={})
    assert report["steps"]["slow"]["status"] == "timeout" and report["steps"]["slow"]["limit_s"] <= 7
    assert report["steps"]["fine"]["status"] == "skipped" and "budget" in report["steps"]["fine"]["summary"]
    assert exit_code({"steps": {"a": {"status": "skipped"}, "b": {"status": "ok"}}}) == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the messages of a machine without CUDA")
@pytest.mark.parametrize(
    "step, words",
    [
        (tool_steps.build, "no usable CUDA"),
        (op_check.compare_ops, "no CUDA device"),
        (torch_steps.tensorrt, "TensorRT"),
        (torch_steps.bench, "no CUDA device"),
        (torch_steps.segment, "no CUDA device"),
    ],
)
def test_without_cuda_each_step_skips_saying_why(tmp_path, step, words):
    rec = Recorder(tmp_path / "r.json")
    with pytest.raises(Skip, match=words):
        step(_config(tmp_path), rec)


def test_gpu_tests_are_found_by_their_marker(tmp_path):
    names = [p.name for p in tool_steps.gpu_test_files(ROOT)]
    assert "test_ops.py" in names and "test_export.py" in names and "test_bench.py" not in names
    junit = ET.Element("testsuite")
    for name, outcome in [("a", None), ("b", "failure"), ("c", "skipped"), ("d", None)]:
        case = ET.SubElement(junit, "testcase", classname="tests.test_ops", name=name)
        if outcome:
            ET.SubElement(case, outcome, message="assert 1.5 == 1.0\nmore")
    ET.ElementTree(junit).write(tmp_path / "j.xml")
    counts, failures = tool_steps._junit_counts(tmp_path / "j.xml")
    assert counts == {"passed": 2, "failed": 1, "errors": 0, "skipped": 1}
    assert failures == ["tests.test_ops::b: assert 1.5 == 1.0"]


def test_op_calls_come_from_the_model_and_a_wrong_kernel_fails(monkeypatch):
    calls = op_check.paper_calls(32, (1, 2), torch.device("cpu"))
    dasc = sorted(tuple(args[0].shape) for name, args in calls if name == "dasc_gate")
    # the paper preset's four skip levels at 32², for batch 1 and 2 (both kinds make the same calls)
    assert dasc == sorted((b, c, 32 // 2**i, 32 // 2**i) for b in (1, 2) for i, c in enumerate((64, 128, 256, 512)))
    assert sum(name == "graph_conv" for name, _ in calls) == 4
    name, args = next(c for c in calls if c[0] == "dasc_gate")
    # a "native" kernel that is 1 % off fails the fp32 check; one equal to the reference passes
    monkeypatch.setattr(ops, "dasc_gate", lambda *a, impl: reference.dasc_gate(*a) * 1.01)
    entry = op_check.check_call(name, args, torch.device("cpu"))
    assert not entry["ok"] and not entry["checks"]["fp32"]["ok"] and entry["checks"]["fp32"]["value_error"] > 5e-3
    monkeypatch.setattr(ops, "dasc_gate", lambda *a, impl: reference.dasc_gate(*a))
    entry = op_check.check_call(name, args, torch.device("cpu"))
    assert (
        entry["ok"] and set(entry["checks"]) == {"fp32", "channels_last"} and entry["shapes"][0] == list(args[0].shape)
    )


@pytest.mark.slow
def test_dry_run_end_to_end(tmp_path, capsys):
    """The whole pipeline on the CPU at tiny sizes: every step runs or skips saying why, one JSON, a table."""
    out = tmp_path / "dry" / "gpu-check.json"
    status = main(["--dry-run", "--out", str(out), "--workdir", str(tmp_path / "work")])
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    steps = data["steps"]
    assert status == 0, printed
    assert data["dry_run"] and data["machine"]["torch"] == torch.__version__ and "host" in data["machine"]
    assert list(steps) == list(STEP_NAMES)
    assert steps["build"]["status"] == "skipped" and "dry run" in steps["build"]["summary"]
    assert steps["tests"]["status"] == "ok" and len(steps["tests"]["result"]["collected"]) >= 10
    if ops.native_available():
        assert steps["ops"]["status"] == "ok" and len(steps["ops"]["result"]["calls"]) == 6
    else:
        assert steps["ops"]["status"] == "skipped" and "not built" in steps["ops"]["summary"]
    assert steps["tensorrt"]["status"] == "skipped" and "CUDA" in steps["tensorrt"]["summary"]
    rows = steps["bench"]["result"]["rows"]
    ok = [(r["contender"], r["batch"]) for r in rows if r["status"] == "ok"]
    contenders = ["eager fp32", "eager bf16 channels_last", "compiled bf16 channels_last (eager)"]
    if ops.native_available():  # the native ops' gain, measured in the same run
        contenders.append("eager fp32, reference ops")
    assert ok == [(c, b) for b in (1, 2) for c in contenders]
    assert [r["ratio"] for r in rows if r["contender"] == "eager fp32"] == [1.0, 1.0]
    assert rows[-1]["contender"] == "tensorrt fp16" and rows[-1]["status"] == "unavailable"
    trained = steps["train"]["result"]
    assert steps["train"]["status"] == "ok" and trained["steps"] == 4 and trained["step_s"] > 0
    assert len(trained["losses"]) == 4 and all(math.isfinite(v) for v in trained["losses"])
    mri = steps["segment"]["result"]["mri"]
    assert mri["cli"]["exit_status"] == 0 and mri["cli"]["masks"] == 1 and mri["api"]["cases_per_s"] > 0
    assert "step      status" in printed and "eager bf16 channels_last" in printed and str(out) in printed
    # what a device machine hands back is at most 8 files: the JSON and one log per step, nothing else
    handed = sorted(str(p.relative_to(out.parent)) for p in out.parent.rglob("*") if p.is_file())
    assert handed == sorted([out.name, *(f"{out.stem}-logs/{name}.log" for name in STEP_NAMES)])
