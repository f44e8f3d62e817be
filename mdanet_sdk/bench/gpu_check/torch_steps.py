"""Steps (d)-(g) of the GPU check: Torch-TensorRT artefacts, the forward benchmark, end-to-end segmentation of a
phantom set and a short training run. Each is ``fn(config, recorder)`` run in a child process (:mod:`.child`)."""

from __future__ import annotations

import copy
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from mdanet_sdk import ops
from mdanet_sdk.bench.gpu_check.child import Recorder, Skip
from mdanet_sdk.bench.gpu_check.config import CheckConfig
from mdanet_sdk.bench.runners import build_network, kind_channels, one_line
from mdanet_sdk.bench.timing import Stats, measure_interleaved, sync_for
from mdanet_sdk.device import autocast

__all__ = ["trt_artifact_path", "tensorrt", "bench", "segment", "train"]

#: The op implementations of the two TensorRT artefacts: the reference decomposition, and the native plugins.
_TRT_FLAVOURS = {"decomposition": "reference", "plugin": "native"}
#: The modality kind of the forward inputs (4 channels, the larger input).
_KIND = "ctp"


def trt_artifact_path(config: CheckConfig, flavour: str) -> Path:
    """Where step (d) leaves the fp16 artefact of ``flavour`` for step (e) to time."""
    return Path(config.workdir) / f"trt-{config.preset}-{_KIND}-{config.size}-fp16-{flavour}.pt2"


def _tensorrt_reason() -> str | None:
    """Why TensorRT cannot run here, or None."""
    from mdanet_sdk.export import tensorrt_unavailable_reason

    return tensorrt_unavailable_reason()


def _export_trt(config: CheckConfig, flavour: str, device: torch.device) -> dict[str, Any]:
    """Export, validate (inside :func:`export_model`) and load back one fp16 artefact; check a batch of a size
    the profile did not optimise for against the eager network."""
    from mdanet_sdk.data.preprocess import PreprocessConfig
    from mdanet_sdk.export import BatchRange, export_model, load_artifact, probe_batch

    sizes = sorted(config.batch_sizes)
    model = build_network(config.preset, _KIND, ops_impl=_TRT_FLAVOURS[flavour], size=config.size).to(device)
    started = time.perf_counter()
    result = export_model(
        model,
        "tensorrt",
        trt_artifact_path(config, flavour),
        preprocess=PreprocessConfig(size=config.size).to_dict(),
        meta={"note": "gpu check: random weights"},
        precision="fp16",
        batch=BatchRange(sizes[0], sizes[len(sizes) // 2], sizes[-1]),
        size=(config.size, config.size),
        device=device,
    )
    export_s = time.perf_counter() - started
    artifact = load_artifact(result.path, device)
    x = probe_batch(max(1, sizes[-1] // 3), kind_channels(_KIND), config.size, config.size, seed=3).to(device)
    with torch.inference_mode():
        probe_diff = float((artifact(x).float() - model(x)).abs().max())
    return {
        "status": "ok" if probe_diff <= result.tolerance else "failed",
        "ops": result.ops,
        "export_s": round(export_s, 1),
        "max_abs_diff": result.max_abs_diff,
        "tolerance": result.tolerance,
        "probe_batch": x.shape[0],
        "probe_max_abs_diff": probe_diff,
        "bytes": result.path.stat().st_size,
    }


def tensorrt(config: CheckConfig, rec: Recorder) -> None:
    """(d) The fp16 TensorRT artefacts, decomposition and plugin, each exported, validated and loaded back."""
    if (reason := _tensorrt_reason()) is not None:
        raise Skip(reason)
    device = torch.device(config.device)
    for flavour in _TRT_FLAVOURS:
        if flavour == "plugin" and ops.implementation("auto", device) != "native":
            rec.put(flavour, {"status": "skipped", "reason": "the native CUDA ops are not built (step build)"})
            continue
        try:
            rec.put(flavour, _export_trt(config, flavour, device))
        except Exception as exc:  # noqa: BLE001 - one flavour failing leaves the other to try
            rec.put(flavour, {"status": "failed", "reason": one_line(exc)})
    states = {f: rec.data["result"][f]["status"] for f in _TRT_FLAVOURS}
    summary = ", ".join(f"{f} {s}" for f, s in states.items())
    rec.finish("failed" if "failed" in states.values() else "ok", f"fp16 at {config.size}²: {summary}")


def _contenders(config: CheckConfig, device: torch.device) -> tuple[dict[str, Any], dict[str, str]]:
    """Name → ``(callable on x, precision, channels_last, ops)`` of each forward contender that can be built
    here, and name → why for those that cannot."""
    impl = ops.implementation("auto", device)
    eager = build_network(config.preset, _KIND, ops_impl=impl, size=config.size).to(device)
    cl = copy.deepcopy(eager).to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
    ready: dict[str, Any] = {
        "eager fp32": (eager, "fp32", False, impl),
        "eager bf16 channels_last": (cl, "bf16", True, impl),
        f"compiled bf16 channels_last ({config.compile_backend})": (
            torch.compile(cl, backend=config.compile_backend),
            "bf16",
            True,
            impl,
        ),
    }
    if impl == "native":  # what the native ops buy, in the same run (same seed, so the same weights)
        reference_net = build_network(config.preset, _KIND, ops_impl="reference", size=config.size)
        ready["eager fp32, reference ops"] = (reference_net.to(device), "fp32", False, "reference")
    missing: dict[str, str] = {}
    path = trt_artifact_path(config, "decomposition")
    if (reason := _tensorrt_reason()) is not None:
        missing["tensorrt fp16"] = reason
    elif not path.is_file():
        missing["tensorrt fp16"] = "no artefact: step tensorrt did not leave one"
    else:
        from mdanet_sdk.export import load_artifact

        ready["tensorrt fp16"] = (load_artifact(path, device), "fp32", False, "reference (TensorRT)")
    return ready, missing


def _bound(fn: Callable[[Tensor], Tensor], x: Tensor, precision: str, device: torch.device) -> Callable[[], Tensor]:
    def call() -> Tensor:
        with torch.inference_mode(), autocast(device, precision):
            return fn(x)

    return call


def _bench_batch(config: CheckConfig, batch: int, ready: dict[str, Any], device: torch.device) -> list[dict[str, Any]]:
    """The rows of one batch size: a first (untimed, compiling) call each, then every contender round-robin."""
    x = torch.randn(batch, kind_channels(_KIND), config.size, config.size, device=device)
    calls: dict[str, Callable[[], Tensor]] = {}
    rows: dict[str, dict[str, Any]] = {}
    for name, (fn, precision, channels_last, impl) in ready.items():
        xi = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        rows[name] = {"contender": name, "batch": batch, "precision": precision, "ops": impl, "status": "ok"}
        started = time.perf_counter()
        try:
            _bound(fn, xi, precision, device)()
            if (sync := sync_for(device)) is not None:
                sync()
        except Exception as exc:  # noqa: BLE001 - reported in its row
            rows[name].update(status="error", reason=one_line(exc))
            continue
        rows[name]["first_call_s"] = round(time.perf_counter() - started, 2)
        calls[name] = _bound(fn, xi, precision, device)
    times = measure_interleaved(calls, warmup=1, repeats=config.repeats, sync=sync_for(device))
    for name, seconds in times.items():
        latency = Stats.of([1e3 * s for s in seconds])
        rows[name].update(latency_ms=latency.to_dict(), slices_per_s=batch / (latency.median / 1e3))
    base = rows.get("eager fp32", {}).get("slices_per_s")
    for row in rows.values():
        row["ratio"] = row["slices_per_s"] / base if base and "slices_per_s" in row else None
    return list(rows.values())


def bench(config: CheckConfig, rec: Recorder) -> None:
    """(e) Forward throughput of each contender at each batch size, rows written as each batch finishes."""
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Skip("no CUDA device: torch.cuda.is_available() is False")
    ready, missing = _contenders(config, device)
    rec.put("preset", config.preset)
    rec.put("size", config.size)
    rec.put("kind", _KIND)
    rec.put("unavailable", missing)
    for batch in config.batch_sizes:
        for row in _bench_batch(config, batch, ready, device):
            rec.append("rows", row)
    for name, reason in missing.items():
        rec.append("rows", {"contender": name, "batch": "-", "status": "unavailable", "reason": reason})
    rows = [r for r in rec.data["result"]["rows"] if r["status"] == "ok" and r.get("ratio") is not None]
    best = max(rows, key=lambda r: r["ratio"], default=None)
    errors = [r for r in rec.data["result"]["rows"] if r["status"] == "error"]
    summary = (
        f"{len(rows)} rows; best {best['contender']} ×{best['ratio']:.2f} at batch {best['batch']}"
        if best
        else "no row"
    )
    rec.finish("failed" if errors or not rows else "ok", summary + (f"; {len(errors)} errors" if errors else ""))


def _cli_segment(folder: Path, out: Path, device: str, timeout: float) -> dict[str, Any]:
    """``mdanet-sdk segment FOLDER -o OUT --device DEVICE`` as a user runs it: exit status, seconds, masks."""
    from mdanet_sdk.data.nifti import output_name

    command = [
        sys.executable,
        "-c",
        "from mdanet_sdk.cli import main; main()",
        "segment",
        str(folder),
        "-o",
        str(out),
        "--device",
        device,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    print(done.stdout[-5000:], done.stderr[-5000:], sep="\n")
    masks = list(out.glob(output_name("*", "mask"))) if out.is_dir() else []
    last = (done.stderr.strip().splitlines() or [""])[-1]
    return {
        "exit_status": done.returncode,
        "seconds": round(time.perf_counter() - started, 2),
        "masks": len(masks),
        "last_error_line": last if done.returncode else None,
    }


def _api_segment(kind: str, folder: Path, out: Path, device: torch.device) -> dict[str, Any]:
    """``Segmenter.default(kind).predict_many`` over the phantoms after one warm-up case: cases/s."""
    from mdanet_sdk.data.cases import find_cases
    from mdanet_sdk.data.nifti import output_name
    from mdanet_sdk.inference import Segmenter
    from mdanet_sdk.inference.results import SegmentationResult

    sources = find_cases(folder)
    segmenter = Segmenter.from_checkpoint(f"default-{kind}", device=device)
    segmenter.predict(sources[0])  # warm-up: allocator, kernels, autotuning
    started = time.perf_counter()
    for result in segmenter.predict_many(sources):  # errors raise (the default): the step fails, saying why
        assert isinstance(result, SegmentationResult)  # FailedCase only with errors="yield"
        result.save(out / output_name(result.case_id, "mask"))
    seconds = time.perf_counter() - started
    return {
        "precision": segmenter.precision,
        "batch": segmenter.batch_size,
        "seconds": round(seconds, 3),
        "cases_per_s": len(sources) / seconds,
    }


def segment(config: CheckConfig, rec: Recorder) -> None:
    """(f) The phantom set of each kind through the command line and through the Segmenter."""
    from mdanet_sdk.bench.records import VOLUMES
    from mdanet_sdk.bench.segment import phantom_dataset

    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Skip("no CUDA device: torch.cuda.is_available() is False")
    bad = []
    for kind in config.kinds:
        shape = config.phantom_shape or VOLUMES[kind]
        folder = phantom_dataset(kind, shape, config.n_cases, Path(config.workdir) / "phantoms")
        entry: dict[str, Any] = {"shape": list(shape), "cases": config.n_cases}
        entry["cli"] = _cli_segment(folder, Path(config.workdir) / f"segment-cli-{kind}", config.device, timeout=600)
        rec.put(kind, entry)  # kept if the step runs out of time in what follows
        try:
            entry["api"] = _api_segment(kind, folder, Path(config.workdir) / f"segment-api-{kind}", device)
        except Exception as exc:  # noqa: BLE001 - reported; the other kind still runs
            entry["api"] = {"error": one_line(exc)}
        if entry["cli"]["exit_status"] != 0 or entry["cli"]["masks"] != config.n_cases or "error" in entry["api"]:
            bad.append(kind)
        rec.put(kind, entry)
    parts = [f"{k}: {rec.data['result'][k]['api'].get('cases_per_s', 0):.2f} cases/s" for k in config.kinds]
    rec.finish("failed" if bad else "ok", ("failed for " + ", ".join(bad) + "; " if bad else "") + "; ".join(parts))


def train(config: CheckConfig, rec: Recorder) -> None:
    """(g) A short training run of the ``small`` preset on MRI phantoms: the steady seconds per optimizer step
    (the first epoch's first steps, which compile and warm up, left out), finite losses, the fold's Dice; so a
    GPU session knows how much of a recipe a slot holds."""
    from mdanet_sdk.bench.segment import phantom_dataset
    from mdanet_sdk.train.config import TrainConfig
    from mdanet_sdk.train.events import TrainEvent
    from mdanet_sdk.train.trainer import train as run_training

    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Skip("no CUDA device: torch.cuda.is_available() is False")
    shape = config.phantom_shape or (112, 112, 24)
    data = phantom_dataset("mri", shape, config.train_cases, Path(config.workdir) / "phantoms")
    stamps: list[float] = []
    losses: list[float] = []

    def progress(event: TrainEvent) -> None:
        if event.what == "step" and event.stats is not None:
            stamps.append(time.perf_counter())
            losses.append(event.stats.loss)

    run = Path(config.workdir) / "train-run"
    shutil.rmtree(run, ignore_errors=True)  # scratch: a rerun in the same workdir starts afresh
    rec.put("ops", ops.implementation("auto", device))
    batch = 16
    started = time.perf_counter()
    results = run_training(
        TrainConfig(
            data_dir=str(data),
            out_dir=str(run),
            layout="isles22",
            kind="mri",
            preset="small",
            size=config.train_size,
            folds=3,
            fold=0,
            epochs=config.train_epochs,
            steps_per_epoch=config.train_steps,
            batch_size=batch,
            patience=0,
            device=config.device,
            seed=0,
        ),
        progress=progress,
    )
    warm = stamps[min(3, len(stamps) // 2) :]  # after the first steps' compilation and warm-up
    gaps = [b - a for a, b in zip(warm, warm[1:])]
    step_s = sorted(gaps)[len(gaps) // 2] if gaps else float("nan")
    fold = results.folds[0]
    finite = bool(losses) and all(math.isfinite(v) for v in losses)
    rec.put("size", config.train_size)
    rec.put("steps", len(stamps))
    rec.put("seconds", round(time.perf_counter() - started, 1))
    rec.put("step_s", step_s)
    rec.put("slices_per_s", batch / step_s if gaps else None)
    rec.put("losses", [round(v, 4) for v in losses[:: max(1, len(losses) // 10)]])
    rec.put("val_dsc", fold.val_dsc)
    summary = f"{len(stamps)} steps, {step_s:.3f} s/step ({batch / step_s:.0f} slices/s), val DSC {fold.val_dsc:.3f}"
    rec.finish("ok" if finite and len(stamps) == config.train_epochs * config.train_steps else "failed", summary)
