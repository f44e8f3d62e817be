"""The parent side of the GPU check: each step in its own child process with its own time limit (cut to what
is left of the run's budget), the run's one JSON rewritten atomically whenever a step reports, and the summary.

A step that fails, crashes or runs out of time is recorded as such and the next step still runs. The child's
partial results are merged into the JSON every :data:`POLL_S` seconds, so a run killed from outside keeps
everything measured up to a few seconds before.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from mdanet_sdk._files import write_json
from mdanet_sdk.bench.gpu_check.config import STEPS, CheckConfig, Step

__all__ = ["SCHEMA", "SCHEMA_VERSION", "POLL_S", "run_check", "machine_record", "summary_lines", "exit_code"]

SCHEMA = "mdanet-sdk-gpu-check"
SCHEMA_VERSION = 1
#: How often the parent merges a running step's partial results into the JSON.
POLL_S = 2.0
#: Seconds kept back from the budget for the summary; a step that would get less than :data:`MIN_STEP_S` is skipped.
_RESERVE_S = 5.0
MIN_STEP_S = 5.0
#: Characters of a failed step's log kept in the JSON.
_LOG_TAIL = 2000


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def machine_record(device: str) -> dict[str, Any]:
    """The machine as ``mdanet-sdk info`` describes it (:func:`mdanet_sdk.info.collect_info`) plus the host
    (CPU model, cores, memory); on a machine without CUDA, the CPU's."""
    import torch

    from mdanet_sdk.info import collect_info, host_info

    dev = device if device == "cpu" or torch.cuda.is_available() else "cpu"
    return {**collect_info(dev), "host": host_info()}


def _log_tail(path: Path) -> str:
    """The last :data:`_LOG_TAIL` characters of a step's log."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-_LOG_TAIL:]


def _read_partial(path: Path) -> dict[str, Any] | None:
    """The child's result file, or None while it has not written one (or is between two writes)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End the child we started and everything it started (its own process group): SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _run_child(
    step: Step, config_path: Path, logdir: Path, limit: float, on_poll: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Run ``step`` in a child process for at most ``limit`` seconds; its record (status, summary, result...).
    Its log goes to ``logdir``; its result file beside the config, in the scratch folder."""
    result_path = config_path.parent / f"{step.name}.result.json"
    log_path = logdir / f"{step.name}.log"
    result_path.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "mdanet_sdk.bench.gpu_check",
        "--run-step",
        step.target,
        str(config_path),
        str(result_path),
    ]
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = False
        while True:
            try:
                proc.wait(timeout=min(POLL_S, max(0.1, started + limit - time.monotonic())))
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() - started >= limit:
                    timed_out = True
                    _stop(proc)
                    break
                on_poll(_read_partial(result_path) or {})
    record = _read_partial(result_path) or {"status": "running", "summary": None, "reason": None, "result": {}}
    record["seconds"] = round(time.monotonic() - started, 1)
    if timed_out:
        record.update(
            status="timeout", summary=f"timeout: stopped after its {limit:.0f} s limit (partial results kept)"
        )
    elif record["status"] == "running":  # died without a word: a signal, or the interpreter itself failed
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        record.update(status="crashed", summary=f"crashed ({how}) before reporting; see log_tail")
    if record["status"] in ("failed", "crashed", "timeout"):
        record["log_tail"] = _log_tail(log_path)
    record["log"] = str(log_path)
    return record


def run_check(
    config: CheckConfig,
    steps: Sequence[Step] = STEPS,
    say: Callable[[str], None] = print,
    machine: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``steps`` one after the other and return the run's record (also written to ``config.out``).

    Args:
        config: sizes, limits, budget and paths.
        steps: the steps to run (default all of :data:`~mdanet_sdk.bench.gpu_check.config.STEPS`).
        say: where the progress lines go.
        machine: the machine record (default :func:`machine_record` of ``config.device``).
    """
    out = Path(config.out)
    logdir = out.parent / f"{out.stem}-logs"
    logdir.mkdir(parents=True, exist_ok=True)
    Path(config.workdir).mkdir(parents=True, exist_ok=True)
    # Only the JSON and one log per step beside it: what a GPU machine hands back is few files (7 here).
    config_path = Path(config.workdir) / "gpu-check-config.json"
    config.save(config_path)
    deadline = time.monotonic() + config.budget_s
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": _now(),
        "finished": None,
        "seconds": None,
        "dry_run": config.dry_run,
        "machine": machine if machine is not None else machine_record(config.device),
        "config": config.to_dict(),
        "steps": {s.name: {"title": s.title, "status": "pending"} for s in steps},
    }
    started = time.monotonic()
    write_json(out, report)
    for i, step in enumerate(steps, 1):
        entry = report["steps"][step.name]
        limit = min(config.limits.get(step.name, 60.0), deadline - _RESERVE_S - time.monotonic())
        entry["limit_s"] = round(max(limit, 0.0), 1)
        if limit < MIN_STEP_S:
            entry.update(status="skipped", summary="skipped: the run's time budget is spent (raise --budget)")
            say(f"[{i}/{len(steps)}] {step.name}: {entry['summary']}")
            continue
        say(f"[{i}/{len(steps)}] {step.name}: {step.title} (limit {limit:.0f} s) ...")
        entry["status"] = "running"
        write_json(out, report)

        def merge(partial: dict[str, Any], entry: dict[str, Any] = entry) -> None:
            entry.update(partial, status="running")
            write_json(out, report)

        entry.update(_run_child(step, config_path, logdir, limit, merge))
        report["seconds"] = round(time.monotonic() - started, 1)
        write_json(out, report)
        say(f"[{i}/{len(steps)}] {step.name}: {entry['status']} in {entry['seconds']} s — {entry['summary']}")
        if entry.get("log_tail"):
            say("    " + "\n    ".join(entry["log_tail"].strip().splitlines()[-12:]))
    report.update(finished=_now(), seconds=round(time.monotonic() - started, 1))
    write_json(out, report)
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The summary table: one line per step (status, seconds, what it found), then the benchmark rows."""
    lines = [f"{'step':<9} {'status':<8} {'s':>6}  summary", "-" * 100]
    for name, entry in report["steps"].items():
        seconds = entry.get("seconds")
        lines.append(
            f"{name:<9} {entry['status']:<8} {'' if seconds is None else seconds:>6}  {entry.get('summary') or ''}"
        )
    rows = report["steps"].get("bench", {}).get("result", {}).get("rows", [])
    if rows:
        lines += ["", f"{'forward':<40} {'batch':>5} {'ms/batch':>10} {'slices/s':>10} {'× fp32':>7}  notes", "-" * 100]
        for r in rows:
            if r.get("status") != "ok":
                lines.append(
                    f"{r['contender']:<40} {r['batch']:>5} {'':>10} {'':>10} {'':>7}  {r['status']}: {r.get('reason')}"
                )
                continue
            ratio = "" if r.get("ratio") is None else f"{r['ratio']:.2f}×"
            lines.append(
                f"{r['contender']:<40} {r['batch']:>5} {r['latency_ms']['median']:>10.3g} {r['slices_per_s']:>10.4g} "
                f"{ratio:>7}  ops {r['ops']}, first call {r['first_call_s']:.1f} s"
            )
    return lines


def exit_code(report: dict[str, Any]) -> int:
    """0 when no step failed, crashed or ran out of time (skipped steps are not failures), else 1."""
    bad = {"failed", "crashed", "timeout"}
    return 1 if any(e["status"] in bad for e in report["steps"].values()) else 0
