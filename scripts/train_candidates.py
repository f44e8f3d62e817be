#!/usr/bin/env python
"""Train several MRI weight candidates at once on one lent GPU, each sized to end before a wall-clock deadline.

    python scripts/train_candidates.py OUT [--deadline S] [--cases N] [--only finetune,scratch] [--device cuda]

A lent GPU comes for minutes, in one call, with no time to look at results between runs. So this script:

1. writes ``--cases`` "mixed" MRI phantoms (even cases classic, odd ones domain-randomised; dataset seed 141, never
   used for tuning or tests) with every CPU core, and a 12-case probe set (seed 149);
2. probes every candidate at once (they will share the GPU) on the probe set: seconds per optimizer step, seconds
   per validated case and per loaded case;
3. trains every candidate at once, each with the number of epochs that fits before ``--deadline`` seconds after
   the start (cosine schedule over those epochs; best epoch on an inner split); a run still going at the
   deadline is stopped and keeps its best epoch so far;
4. writes each candidate's best fold-0 weights, compacted as the bundled ones are, to ``OUT/cand-NAME.pt`` and a
   summary (probe, epochs, histories) to ``OUT/summary.json``.

Judge the candidates on the CPU afterwards, on every held-out own phantom, the OOD phantoms and the real case:
``scripts/eval_generalization.py --kind mri --checkpoint OUT/cand-NAME.pt --tune --own``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path
from typing import Any, NamedTuple

from make_bundled_weights import Stage, _compact, stage_config

#: The script's start (children read the parent's, so every log line counts from the same moment).
T0 = float(os.environ.setdefault("MDANET_CANDIDATES_T0", str(time.time())))
DATA_SEED, PROBE_SEED = 141, 149
PROBE_CASES = 12
FOLDS = 12  # fold 0 validates; ~8 % of the cases, predicted once at the end
INNER_FRACTION = 0.06  # the inner split that picks the best epoch, predicted every epoch


class Candidate(NamedTuple):
    init: str | None  # starting weights (a bundled name or file); None: random
    lr: float
    seed: int
    dice: str = "batch"


CANDIDATES = {
    "finetune": Candidate("default-mri", 2e-4, 141),
    "scratch": Candidate(None, 1e-3, 142),
    "scratch-slice": Candidate(None, 1e-3, 143, "slice"),
}


class Plan(NamedTuple):
    data: Path
    out: Path
    epochs: int
    steps: int
    inner_fraction: float
    device: str
    workers: int


def train_config(name: str, plan: Plan) -> Any:
    """The :class:`TrainConfig` of candidate ``name`` under ``plan``: a recipe stage (the ``small`` preset at 128²,
    batch 16) on ``plan.data``."""
    c = CANDIDATES[name]
    stage = Stage(DATA_SEED, 0, FOLDS, 128, plan.steps, plan.epochs, 0.6, c.lr, c.seed, "mixed", c.init, c.dice)
    stage = stage._replace(inner_fraction=plan.inner_fraction)
    return stage_config("mri", stage, plan.data, plan.out, c.init, device=plan.device, workers=plan.workers)


def _child(name: str, plan: Plan, report: Path, timed_steps: bool) -> None:
    """Train candidate ``name``; write when each event first happened, the median step and the Dice."""
    from mdanet_sdk.train.trainer import train

    stamps: list[float] = []
    events: dict[str, float] = {}
    started = time.perf_counter()

    def progress(event: Any) -> None:
        now = time.perf_counter()
        if event.what == "step":
            stamps.append(now)
        events.setdefault(f"{event.what}-{event.epoch}", now - started)
        if event.what == "validated":
            print(f"{time.time() - T0:6.0f}s {name}: epoch {event.epoch} inner DSC {event.val_dsc:.3f}", flush=True)

    # step events cost a device sync each: only the probe asks for them
    result = train(train_config(name, plan), progress=progress if timed_steps else _without_steps(progress))
    gaps = sorted(b - a for a, b in zip(stamps[10:], stamps[11:]))  # after cuDNN's autotuning and warm-up
    summary = {"events": events, "seconds": time.perf_counter() - started, "val_dsc": result.folds[0].val_dsc}
    summary["step_s"] = gaps[len(gaps) // 2] if gaps else None
    report.write_text(json.dumps(summary))


def _without_steps(progress: Any) -> Any:
    return lambda event: None if event.what == "step" else progress(event)


def _spawn(name: str, plan: Plan, report: Path, timed_steps: bool) -> Any:
    process = mp.get_context("spawn").Process(target=_child, args=(name, plan, report, timed_steps))
    process.start()
    return process


def epochs_that_fit(probe: dict[str, Any], probe_steps: int, plan: Plan, cases: int, deadline: float) -> int:
    """Epochs of ``plan.steps`` steps that end before ``deadline`` (seconds after the start), from the probe."""
    events, step_s = probe["events"], probe["step_s"]
    load_per_case = events["epoch-0"] / PROBE_CASES  # also counts building the model: errs on the safe side
    inner_probe = max(1, round(PROBE_CASES * (FOLDS - 1) / FOLDS * 0.2))
    val_per_case = max(0.05, (events["validated-0"] - events["epoch-0"] - probe_steps * step_s) / inner_probe)
    inner = max(1, round(cases * (FOLDS - 1) / FOLDS * plan.inner_fraction))
    epoch_s = plan.steps * step_s * 1.15 + inner * val_per_case
    left = deadline - (time.time() - T0) - 1.2 * load_per_case * cases - 30  # 30 s: final validation and saving
    return max(2, int(left // epoch_s))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--deadline", type=float, default=540.0, help="seconds after the start (default 540)")
    parser.add_argument("--cases", type=int, default=420)
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per epoch")
    parser.add_argument("--probe-steps", type=int, default=60)
    parser.add_argument("--max-epochs", type=int, default=80)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workers", type=int, default=4, help="data-loader workers per candidate")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mdanet-candidates"))
    parser.add_argument("--only", default=",".join(CANDIDATES), help="comma-separated candidate names")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only.split(",")) - set(CANDIDATES))
    if unknown:
        parser.error(f"unknown candidate(s) {', '.join(unknown)}; choose from {', '.join(CANDIDATES)}.")
    from mdanet_sdk.data.phantom import write_dataset

    names, work = args.only.split(","), args.work
    shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    write_dataset(work / "probe", "isles22", PROBE_CASES, PROBE_SEED, workers=cores, domain="mixed")
    write_dataset(work / "data", "isles22", args.cases, DATA_SEED, workers=cores, domain="mixed")
    print(f"{time.time() - T0:6.0f}s wrote {args.cases} phantoms", flush=True)

    def plan(data: Path, name: str, epochs: int, steps: int, inner: float) -> Plan:
        return Plan(data, work / f"{data.name}-{name}", epochs, steps, inner, args.device, args.workers)

    probes = {
        n: _spawn(n, plan(work / "probe", n, 1, args.probe_steps, 0.2), work / f"probe-{n}.json", True) for n in names
    }
    for process in probes.values():
        process.join()
    summary: dict[str, Any] = {"cases": args.cases, "probe": {}, "runs": {}}
    runs = {}
    for n in names:
        if not (work / f"probe-{n}.json").is_file():  # its log above says why; the others still run
            print(f"{time.time() - T0:6.0f}s {n}: the probe failed, not trained", flush=True)
            summary["probe"][n] = {"failed": True}
            continue
        probe = json.loads((work / f"probe-{n}.json").read_text())
        run = plan(work / "data", n, 0, args.steps, INNER_FRACTION)
        epochs = min(args.max_epochs, epochs_that_fit(probe, args.probe_steps, run, args.cases, args.deadline))
        summary["probe"][n] = {**probe, "epochs": epochs}
        print(f"{time.time() - T0:6.0f}s {n}: {probe['step_s']:.4f} s/step -> {epochs} epochs", flush=True)
        runs[n] = _spawn(n, run._replace(epochs=epochs), work / f"run-{n}.json", False)
    for n, process in runs.items():
        process.join(timeout=max(1.0, args.deadline + 20 - (time.time() - T0)))
        if process.is_alive():
            process.terminate()
            print(f"{n}: stopped at the deadline; its best epoch so far is kept", flush=True)
    for n in runs:
        summary["runs"][n] = collect(n, work, args.out)
    summary["seconds"] = time.time() - T0
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"{time.time() - T0:6.0f}s done", flush=True)
    return 0


def collect(name: str, work: Path, out: Path) -> dict[str, Any]:
    """Candidate ``name``'s report and history; its best weights, compacted, to ``out/cand-NAME.pt``."""
    from mdanet_sdk.train.checkpoint import load_checkpoint, save_checkpoint

    report = work / f"run-{name}.json"
    entry: dict[str, Any] = json.loads(report.read_text()) if report.is_file() else {"stopped_at_deadline": True}
    fold = work / f"data-{name}" / "fold_0"
    if (fold / "metrics.json").is_file():
        entry["metrics"] = json.loads((fold / "metrics.json").read_text())
    if (fold / "best.pt").is_file():
        best = load_checkpoint(fold / "best.pt")
        weights = {k: _compact(v) for k, v in best.state_dict.items()}
        save_checkpoint(out / f"cand-{name}.pt", weights, best.model_config, best.preprocess, best.meta)
    return entry


if __name__ == "__main__":
    raise SystemExit(main())
