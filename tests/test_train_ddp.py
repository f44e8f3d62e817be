"""Training in separate processes: ``torchrun`` DDP on CPU (Gloo), and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mdanet_sdk.data.phantom import write_dataset
from mdanet_sdk.evaluate import evaluate
from mdanet_sdk.train.checkpoint import load_checkpoint
from mdanet_sdk.train.trainer import TrainConfig, train

CLI = Path(sys.executable).with_name("mdanet-sdk")
TINY_ARGS = ["--preset", "small", "--size", "32", "--batch-size", "4", "--workers", "0", "--fold", "0", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    # 6 cases: fold 0 of 5 validates 2, so that each of two ranks scores one and rank 0 gathers both
    return write_dataset(tmp_path_factory.mktemp("ddp") / "isles18", "isles18", 6, seed=4, shape=(32, 32, 4))


def _env() -> dict[str, str]:
    # One thread per process: two ranks on a 2-core CI machine must not oversubscribe it.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.mark.skipif(not CLI.exists(), reason="the mdanet-sdk console script is not installed")
def test_torchrun_two_processes_write_one_checkpoint(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "--no-python",
        str(CLI),
        "train",
        str(data),
        "--out",
        str(run),
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
        *TINY_ARGS,
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert time.perf_counter() - start < 60
    fold = run / "fold_0"
    assert sorted(p.name for p in fold.glob("*.pt")) == ["best.pt", "last.pt"]
    assert not list(fold.glob(".*.tmp")) and not list(run.glob("fold_[1-9]"))
    ckpt = load_checkpoint(fold / "last.pt")
    assert ckpt.meta["epoch"] == 0 and ckpt.model_config.groups == (("cbf", "cbv"), ("mtt", "tmax"))
    assert "module." not in next(iter(ckpt.state_dict))
    # Rank 0 wrote one log row.
    metrics = json.loads((fold / "metrics.json").read_text())
    assert len(metrics["history"]) == 1 and metrics["selection"]["select"] == "inner"
    # --batch-size 4 is the global batch: 2 steps of 2 slices on each of the 2 ranks (not 2 × 4 per rank).
    assert metrics["history"][0]["slices"] == 2 * 4
    assert len(metrics["split"]["inner_cases"]) == 1 and 0 <= metrics["history"][0]["inner_dsc"] <= 1
    val = json.loads((fold / "val_metrics.json").read_text())["cases"]
    # both ranks' cases, in the fold's order, scored as the written masks score against the labels
    assert [c["case_id"] for c in val] == metrics["split"]["val_cases"] and len(val) == 2
    assert len(list((fold / "predictions").glob("*_seg.nii.gz"))) == 2
    scored = {c["case_id"]: c["dsc"] for c in evaluate(run, data).cases}
    assert [scored[c["case_id"]] for c in val] == pytest.approx([c["dsc"] for c in val], abs=1e-9)
    assert proc.stdout.count("val DSC %") == 1  # only rank 0 prints the result table


@pytest.mark.skipif(not CLI.exists(), reason="the mdanet-sdk console script is not installed")
def test_sigkill_mid_epoch_then_resume(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "killed"
    cmd = [str(CLI), "train", str(data), "--out", str(run), "--epochs", "3", "--steps-per-epoch", "25", *TINY_ARGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    last = run / "fold_0" / "last.pt"
    deadline = time.monotonic() + 90
    try:
        while not last.exists():  # end of epoch 0: the process is now inside epoch 1
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            assert time.monotonic() < deadline, "no checkpoint after 90 s"
            time.sleep(0.05)
        time.sleep(0.2)  # into epoch 1 (25 steps + validation take longer)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(last).meta["epoch"] <= 1  # killed before the run finished
    cfg = TrainConfig(
        data,
        run,
        preset="small",
        size=32,
        batch_size=4,
        workers=0,
        fold=0,
        epochs=3,
        steps_per_epoch=25,
        quiet=True,
        resume=True,
    )
    result = train(cfg)
    assert result.folds[0].epochs_run == 3
    history = json.loads((run / "fold_0" / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [0, 1, 2]
