"""The benchmark harness behind ``mdanet-sdk benchmark`` and the ``benchmarks/`` pytest-benchmark suites.

Every figure is a median with its spread (quartiles and extremes) over repeated runs after warm-up, and every
comparison is a ratio to the eager baseline measured in the same run on the same machine. Contenders that are
compared with each other are timed round-robin (:func:`measure_interleaved`), so load from a busy neighbour falls
on all of them alike and their ratios stay fair on a shared machine.

Sections (``BenchSettings.sections``):

- ``forward``: model forward throughput (slices/s) and latency (ms per batch) per backend, preset, batch size and
  precision, with FLOPs per slice (``torch.utils.flop_counter``) and, on a GPU, the fraction of the device peak.
- ``peers``: our ``UNet`` baseline and MONAI's ``BasicUNet`` (optional dependency) through the same loop, so
  slices/s per GFLOP can be compared.
- ``segment``: one phantom volume end to end (load → preprocess → predict → restore → write) with the share of
  time in each stage.
- ``many``: ``Segmenter.predict_many`` over N cases, one fresh process per N: cases/s and peak memory.
- ``ops``: the two native operators against their eager composite, at the shapes a paper-preset forward pass
  actually hands them.

The JSON layout written by :func:`write_json` is documented in ``benchmarks/README.md`` (``schema_version`` 1).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from mdanet_sdk import __version__, ops
from mdanet_sdk._files import atomic_write
from mdanet_sdk._files import write_json as _write_json
from mdanet_sdk.config import MODALITY_GROUPS, PRESETS, MDANetConfig
from mdanet_sdk.errors import BackendUnavailableError, InputError, MDANetError
from mdanet_sdk.model import MDANet, build_model

__all__ = [
    "BACKENDS", "PEERS", "SECTIONS", "VOLUMES", "SCHEMA", "SCHEMA_VERSION",
    "Stats", "StageTimer", "measure", "measure_interleaved", "machine_info", "count_flops", "build_network",
    "Runner", "make_runner", "random_segmenter", "phantom_dataset", "segment_stages", "BenchSettings",
    "ForwardRecord", "SegmentRecord", "ManyRecord", "OpsRecord",
    "BenchmarkReport", "bench_forward", "bench_segment", "bench_many", "bench_ops", "run_benchmark",
    "SUMMARY_COLUMNS", "summary_rows", "write_json", "plot_throughput", "reference_preset",
]

SCHEMA = "mdanet-sdk-benchmark"
SCHEMA_VERSION = 1

#: Forward backends, in table order. ``eager`` is the baseline every ratio refers to.
BACKENDS = ("eager", "native", "torchscript", "exported", "tensorrt")
#: Peer networks run through the eager forward loop (presets of the ``peers`` section).
PEERS = ("unet", "monai-basicunet")
SECTIONS = ("forward", "peers", "segment", "many", "ops")
#: The end-to-end volumes, ``(X, Y, Z)``: a CTP-like (ISLES'18) and an MRI-like (ISLES'22) phantom.
VOLUMES: dict[str, tuple[int, int, int]] = {"ctp": (256, 256, 20), "mri": (112, 112, 73)}
#: Phantom layout of each volume kind (``mdanet_sdk.data.phantom``).
_LAYOUT = {"ctp": "isles18", "mri": "isles22"}

#: Dense tensor-core / vector peaks in TFLOP/s by GPU name fragment (vendor data sheets, no sparsity). "fp32" is
#: the TF32 figure because cuDNN convolutions run in TF32 by default (``torch.backends.cudnn.allow_tf32``).
_GPU_PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100 PCIe": {"fp32": 378.0, "fp16": 756.0, "bf16": 756.0},
    "H100": {"fp32": 494.7, "fp16": 989.4, "bf16": 989.4},
    "H200": {"fp32": 494.7, "fp16": 989.4, "bf16": 989.4},
    "A100": {"fp32": 156.0, "fp16": 312.0, "bf16": 312.0},
    "L4": {"fp32": 60.0, "fp16": 121.0, "bf16": 121.0},
    "T4": {"fp32": 8.1, "fp16": 65.0},
}
_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}
#: The op implementation behind the eager and native backends.
_IMPL = {"eager": "reference", "native": "native"}
#: File suffix of each artefact backend (mdanet_sdk.export's conventions).
_SUFFIX = {"torchscript": ".ts", "exported": ".pt2", "tensorrt": ".pt2"}

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    """The default progress callback: say nothing."""


# ---------------------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stats:
    """Median and spread of repeated measurements (linear-interpolated quartiles, extremes, count)."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> "Stats":
        """Summarise ``samples`` (at least one value)."""
        values = np.asarray(samples, dtype=np.float64)
        if values.size == 0:
            raise ValueError("Stats.of needs at least one sample")
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        return cls(float(median), float(q1), float(q3), float(values.min()), float(values.max()), int(values.size))

    @property
    def iqr(self) -> float:
        """Interquartile range ``q3 - q1``."""
        return self.q3 - self.q1

    def to_dict(self) -> dict[str, float | int]:
        return {k: (v if isinstance(v, int) else float(f"{v:.6g}")) for k, v in asdict(self).items()}


def measure_interleaved(
    fns: Mapping[str, Callable[[], object]],
    *,
    warmup: int = 1,
    repeats: int = 5,
    sync: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Wall time in seconds of each callable, ``repeats`` times each after ``warmup`` untimed rounds.

    The contenders run round-robin and the order rotates every round, so a neighbour's load or a thermal
    drift falls on all of them alike rather than on whichever ran last.

    Args:
        fns: name → a callable taking no argument.
        warmup: untimed rounds first (allocator, oneDNN/cuDNN algorithm caches, lazy initialisation).
        repeats: timed calls of each callable.
        sync: called before and after each timed call (``torch.cuda.synchronize`` on a GPU).

    Returns:
        name → ``repeats`` durations in seconds.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        k = round_ % max(1, len(names))
        for name in names[k:] + names[:k]:
            if sync is not None:
                sync()
            start = time.perf_counter()
            fns[name]()
            if sync is not None:
                sync()
            times[name].append(time.perf_counter() - start)
    return times


def measure(fn: Callable[[], object], *, warmup: int = 1, repeats: int = 5,
            sync: Callable[[], None] | None = None) -> list[float]:
    """Wall time in seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    return measure_interleaved({"fn": fn}, warmup=warmup, repeats=repeats, sync=sync)["fn"]


class StageTimer:
    """Accumulates wall time per named stage: ``with timer.stage("load"): ...``.

    Args:
        sync: called at each stage boundary (``torch.cuda.synchronize`` on a GPU, so asynchronous kernels are
            charged to the stage that launched them).
    """

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self._sync = sync

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self._sync is not None:
            self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self._sync is not None:
                self._sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def _sync_for(device: torch.device) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device.type == "cuda" else None


# ---------------------------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------------------------
def _proc_field(path: str, key: str) -> str | None:
    """The value of ``key: value`` in a /proc text file, or None (not Linux, or no such line)."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip()
    except OSError:
        return None
    return None


def _gpu_peak_tflops(name: str, precision: str) -> float | None:
    for fragment, peaks in _GPU_PEAK_TFLOPS.items():
        if fragment in name:
            return peaks.get(precision)
    return None


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, memory, torch, GPU, and the load at the time.

    Returns:
        A JSON-ready dict (keys documented in ``benchmarks/README.md``).
    """
    device = torch.device(device)
    mem_kb = _proc_field("/proc/meminfo", "MemTotal")
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine(),
        "cpu_isa": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "mdanet_sdk": __version__,
        "native_ops": ops.native_available(),
        "monai": _monai_version(),
        "device": str(device),
        "gpu": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = {
            "name": props.name,
            "memory_gb": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "peak_tflops": {p: _gpu_peak_tflops(props.name, p) for p in ("fp32", "fp16", "bf16")},
        }
    return info


def _monai_version() -> str | None:
    """MONAI's installed version from its metadata (importing MONAI itself takes a second)."""
    from importlib import metadata

    try:
        return metadata.version("monai")
    except metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------------------------
# Networks and backends
# ---------------------------------------------------------------------------------------------------------------
def _kind_channels(kind: str) -> int:
    """Input channels of ``kind``: both modality groups stacked (ctp 4, mri 2)."""
    return sum(len(group) for group in MODALITY_GROUPS[kind])


def build_network(
    preset: str, kind: str = "ctp", ops_impl: str = "reference", seed: int = 0, size: int | None = None
) -> nn.Module:
    """A network in eval mode with seeded random weights.

    Args:
        preset: an :class:`MDANetConfig` preset (``paper``, ``small``, ``unet``, ``attention-unet``) or the
            peer ``monai-basicunet`` (MONAI ``BasicUNet`` at the paper's U-Net widths 64…1024, so it and our
            ``unet`` are the same architecture in two implementations).
        kind: ``ctp`` (4 input channels) or ``mri`` (2).
        ops_impl: implementation of the MDANet ops (``reference`` = eager composite, ``native``).
        seed: weight initialisation seed (the same seed gives every backend the same weights).
        size: the input side the network is built for: the GCFB node grid is its bottleneck (default 128).

    Raises:
        BackendUnavailableError: MONAI is asked for but not installed.
    """
    torch.manual_seed(seed)
    if preset == "monai-basicunet":
        try:
            from monai.networks.nets import BasicUNet
        except Exception as exc:  # noqa: BLE001 - a broken MONAI install is "unavailable" too
            raise BackendUnavailableError(
                f"MONAI is not installed ({type(exc).__name__}); `pip install monai` adds this peer."
            ) from None
        net = BasicUNet(spatial_dims=2, in_channels=_kind_channels(kind), out_channels=2,
                        features=(64, 128, 256, 512, 1024, 64))
        return net.eval()
    return build_model(MDANetConfig.from_preset(preset, kind, ops=ops_impl).resolved(size)).eval()


def count_flops(model: nn.Module, example: Tensor) -> float:
    """Forward FLOPs per slice of ``model`` on ``example`` ``(B, C, H, W)`` (a multiply-add counts as 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(example)
    return counter.get_total_flops() / example.shape[0]


@dataclass
class Runner:
    """A backend ready to run: ``fn(x (B, C, H, W)) → logits (B, 2, H, W)``.

    Attributes:
        fn: the callable.
        ops: the op implementation inside (``reference`` = eager composite, ``native``; None for peers).
        autocast: whether lower precisions come from ``torch.autocast`` around ``fn`` (eager and native);
            artefacts are instead exported in the precision they compute in.
    """

    fn: Callable[[Tensor], Tensor]
    ops: str | None
    autocast: bool = True

    def bind(self, x: Tensor, precision: str = "fp32") -> Callable[[], Tensor]:
        """A call without arguments running ``fn(x)`` under inference mode at ``precision``."""
        ctx_precision = precision if self.autocast else "fp32"

        def call() -> Tensor:
            with torch.inference_mode(), _autocast(x.device, ctx_precision):
                return self.fn(x)

        return call


def make_runner(
    backend: str,
    eager: nn.Module,
    preset: str,
    kind: str,
    *,
    size: int | None = None,
    batch_sizes: Sequence[int] = (1,),
    precision: str = "fp32",
    workdir: Path | None = None,
) -> Runner:
    """``eager``'s weights on ``backend``.

    Args:
        backend: one of :data:`BACKENDS`.
        eager: the baseline network (``ops="reference"``) on the target device, in eval mode.
        preset: its preset (``native`` rebuilds the same config with the native ops).
        kind: ``ctp`` or ``mri``.
        size: slice side an artefact is exported for (artefact backends).
        batch_sizes: batch sizes an artefact must accept (its dynamic batch range spans them).
        precision: what an artefact computes in (``fp32``, ``fp16``, ``bf16``).
        workdir: where artefacts are written (artefact backends).

    Raises:
        BackendUnavailableError: the backend cannot run here; the message says why.
        InputError: unknown backend.
    """
    device = next(eager.parameters()).device
    if backend not in BACKENDS:
        raise InputError(f"Unknown backend {backend!r}: use one of {', '.join(BACKENDS)} or all.")
    peer = not isinstance(eager, MDANet)
    if backend == "eager":
        return Runner(eager, None if peer else "reference")
    if peer:
        raise BackendUnavailableError(f"peers run eager only, not {backend}.")
    if backend == "native":
        return Runner(_native_twin(eager, preset, kind), "native")
    try:
        from mdanet_sdk import export
    except ImportError:
        raise BackendUnavailableError("mdanet_sdk.export is missing from this installation.") from None
    if backend == "tensorrt" and (reason := export.tensorrt_unavailable_reason()):
        raise BackendUnavailableError(reason)
    if size is None or workdir is None:
        raise ValueError(f"the {backend} backend needs size and workdir")
    from mdanet_sdk.data.preprocess import PreprocessConfig

    # An artefact holds what deployment would ship: the native ops when built, else the composite inlined.
    source = _native_twin(eager, preset, kind) if ops.implementation("auto", device) == "native" else eager
    sizes = sorted(set(batch_sizes))
    result = export.export_model(
        source, backend, workdir / f"{preset}-{kind}-{size}-{precision}{_SUFFIX[backend]}",
        preprocess=PreprocessConfig(size=size).to_dict(), meta={"note": "benchmark: random weights"},
        precision=precision, batch=export.BatchRange(sizes[0], sizes[len(sizes) // 2], sizes[-1]),
        size=(size, size), device=device,
    )
    return Runner(export.load_artifact(result.path, device=device), result.ops, autocast=False)


def _native_twin(eager: nn.Module, preset: str, kind: str) -> nn.Module:
    """``eager`` rebuilt with the native ops and the same weights.

    Raises:
        BackendUnavailableError: the native ops are not built.
    """
    device = next(eager.parameters()).device
    ops.implementation("native", device)  # raises, saying why, where the kernels cannot run
    twin = build_model(eager.config.replace(ops="native")).eval().to(device)
    twin.load_state_dict(eager.state_dict())
    return twin


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_AUTOCAST[precision])


# ---------------------------------------------------------------------------------------------------------------
# Settings and records
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchSettings:
    """What to measure.

    Attributes:
        presets: MDANet presets of the forward section (``paper``, ``small``, …).
        backends: forward backends (subset of :data:`BACKENDS`).
        batch_sizes: forward batch sizes.
        size: slice side of the forward and ops sections (a multiple of 16).
        kind: input kind of the forward section: ``ctp`` (4 channels) or ``mri`` (2).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        precisions: forward precisions; None = ``fp32`` on CPU, ``fp32, fp16, bf16`` (autocast) on a GPU.
        warmup: untimed rounds before timing.
        repeats: timed repeats of every measurement.
        sections: which of :data:`SECTIONS` to run.
        slices: Z extent of the end-to-end volumes (None: 20 for ``ctp``, 73 for ``mri``, see :data:`VOLUMES`).
        segment_presets: presets of the segment and many sections.
        segment_batch: slices per forward call in the segment and many sections.
        many_counts: case counts of the many section (one fresh process each).
        quick: label of a ``--quick`` run (stored in the JSON).
    """

    presets: tuple[str, ...] = ("paper", "small")
    backends: tuple[str, ...] = BACKENDS
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    size: int = 256
    kind: str = "ctp"
    device: str = "auto"
    precisions: tuple[str, ...] | None = None
    warmup: int = 1
    repeats: int = 5
    sections: tuple[str, ...] = SECTIONS
    slices: int | None = None
    segment_presets: tuple[str, ...] = ("small",)
    segment_batch: int = 8
    many_counts: tuple[int, ...] = (1, 2, 4, 8)
    quick: bool = False

    @classmethod
    def quick_run(cls, **overrides: Any) -> "BenchSettings":
        """The ``--quick`` settings: every section at small sizes (the small preset, 64² slices, 8-slice volumes,
        3 repeats), about a minute on 2 idle CPU cores."""
        base: dict[str, Any] = dict(
            presets=("small",), batch_sizes=(1, 4), size=64, warmup=1, repeats=3, slices=8,
            segment_presets=("small",), many_counts=(1, 2), quick=True,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "BenchSettings":
        """Settings of the ``benchmarks/`` pytest suites, from environment variables.

        ``MDANET_BENCH_QUICK=1`` starts from :meth:`quick_run`; ``MDANET_BENCH_PRESETS``, ``_BACKENDS``,
        ``_BATCH_SIZES`` (comma-separated), ``_SIZE``, ``_REPEATS``, ``_WARMUP``, ``_DEVICE`` override.
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(f"MDANET_BENCH_{name}", "").strip()
            return value or None

        def names(value: str) -> tuple[str, ...]:
            return tuple(v.strip() for v in value.split(",") if v.strip())

        def ints(value: str) -> tuple[int, ...]:
            try:
                return tuple(int(v) for v in names(value))
            except ValueError:
                raise InputError(
                    f"Expected comma-separated integers like 1,8,32 in the environment; got {value!r}."
                ) from None

        parsers: dict[str, tuple[str, Callable[[str], Any]]] = {
            "PRESETS": ("presets", names), "BACKENDS": ("backends", names), "BATCH_SIZES": ("batch_sizes", ints),
            "SIZE": ("size", lambda v: ints(v)[0]), "REPEATS": ("repeats", lambda v: ints(v)[0]),
            "WARMUP": ("warmup", lambda v: ints(v)[0]), "DEVICE": ("device", str),
        }
        overrides = {key: parse(value) for name, (key, parse) in parsers.items() if (value := get(name))}
        return cls.quick_run(**overrides) if get("QUICK") not in (None, "0") else cls(**overrides)

    def __post_init__(self) -> None:
        for name, values, allowed in (
            ("backend", self.backends, BACKENDS),
            ("section", self.sections, SECTIONS),
            ("precision", self.precisions or (), ("fp32", "fp16", "bf16")),
        ):
            unknown = [v for v in values if v not in allowed]
            if unknown:
                raise InputError(f"Unknown {name} {unknown[0]!r}: use one of {', '.join(allowed)}.")
        for preset in self.presets + self.segment_presets:
            if preset not in PRESETS:
                raise InputError(f"Unknown preset {preset!r} for the benchmark: use paper or small.")
        if self.kind not in VOLUMES:
            raise InputError(f"kind must be ctp or mri; got {self.kind!r}.")
        if self.size < 16 or self.size % 16:
            raise InputError(f"--size must be a positive multiple of 16; got {self.size}.")
        if not self.batch_sizes or min(self.batch_sizes) < 1 or min(self.many_counts or (1,)) < 1:
            raise InputError("Batch sizes and case counts must be positive integers, e.g. --batch-sizes 1,8,32.")
        if self.repeats < 1 or self.warmup < 0:
            raise InputError(f"Need repeats >= 1 and warmup >= 0; got {self.repeats} and {self.warmup}.")
        if self.slices is not None and self.slices < 1:
            raise InputError(f"--slices must be at least 1; got {self.slices}.")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"device must be auto, cpu or cuda; got {self.device!r}.")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError("--device cuda was asked for but this torch sees no CUDA GPU.")

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def resolved_precisions(self) -> tuple[str, ...]:
        if self.precisions:
            return self.precisions
        return ("fp32", "fp16", "bf16") if self.resolved_device().type == "cuda" else ("fp32",)

    def volume_shape(self, kind: str) -> tuple[int, int, int]:
        x, y, z = VOLUMES[kind]
        return x, y, self.slices or z

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["precisions"] = list(self.resolved_precisions())
        return d


def _dict(record: Any) -> dict[str, Any]:
    """A record as JSON-ready data: Stats become dicts, tuples lists, floats 6 significant digits."""
    def convert(value: Any) -> Any:
        if isinstance(value, Stats):
            return value.to_dict()
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, float):
            return float(f"{value:.6g}")
        return value

    return {f.name: convert(getattr(record, f.name)) for f in fields(record)}


@dataclass
class ForwardRecord:
    """One (backend, preset, batch, precision) of the forward and peers sections.

    ``status`` is ``ok``, ``unavailable`` (the backend cannot run here; ``reason`` says why) or ``error`` (it
    failed while running; ``reason`` holds the error). ``ratio`` is median throughput over the median
    throughput of ``baseline`` (``"eager/<preset>"``, same batch and precision, same run). ``ops`` is the op
    implementation inside the backend (``reference``, ``native``, TensorRT ``plugin``; None for peers).
    """

    section: str
    backend: str
    preset: str
    model: str
    kind: str
    in_channels: int
    size: int
    batch: int
    precision: str
    device: str
    ops: str | None = None
    status: str = "ok"
    reason: str | None = None
    latency_ms: Stats | None = None
    throughput: Stats | None = None
    gflop_per_slice: float | None = None
    achieved_gflop_s: float | None = None
    peak_fraction: float | None = None
    slices_per_s_per_gflop: float | None = None
    baseline: str | None = None
    ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass
class SegmentRecord:
    """One phantom volume segmented end to end with one preset and backend.

    ``stages`` maps load, preprocess, predict, restore, write → ``{"ms": Stats, "share": float}`` where
    ``share`` is the stage's median over the sum of the stage medians. ``ratio`` is eager median total time over
    this record's median total time (> 1 is faster than eager). ``segmenter_ms`` is the same case through
    ``Segmenter.predict`` and ``SegmentationResult.save`` (which overlap loading with the model).
    """

    volume: str
    shape: tuple[int, int, int]
    modalities: tuple[str, ...]
    preset: str
    backend: str
    device: str
    precision: str
    batch: int
    status: str = "ok"
    reason: str | None = None
    total_ms: Stats | None = None
    slices_per_s: float | None = None
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    ratio: float | None = None
    segmenter_ms: Stats | None = None

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass
class ManyRecord:
    """``Segmenter.predict_many`` over ``n_cases`` phantom cases in a fresh process.

    ``peak_rss_mb`` is the process's high-water resident set (``VmHWM``); ``setup_rss_mb`` the resident set
    after imports, model and one warm-up case, before ``predict_many``; ``peak_gpu_mb`` is
    ``torch.cuda.max_memory_allocated`` on a GPU (else None).
    """

    n_cases: int
    volume: str
    shape: tuple[int, int, int]
    preset: str
    backend: str
    device: str
    status: str = "ok"
    reason: str | None = None
    seconds: float | None = None
    cases_per_s: float | None = None
    setup_rss_mb: float | None = None
    peak_rss_mb: float | None = None
    peak_gpu_mb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass
class OpsRecord:
    """One native operator call at the shape a paper-preset forward pass gives it, on one backend.

    ``backend`` is ``eager`` (the pure-PyTorch composite, :mod:`mdanet_sdk.ops.reference`) or ``native``;
    ``ratio`` is eager median latency over this backend's median latency (> 1 is faster than eager). Each timed
    sample runs the op ``calls_per_sample`` times back to back (about 20 ms) and ``latency_ms`` is per call.
    """

    op: str
    call: str
    shapes: dict[str, list[int]]
    backend: str
    device: str
    status: str = "ok"
    reason: str | None = None
    latency_ms: Stats | None = None
    ratio: float | None = None
    calls_per_sample: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass
class BenchmarkReport:
    """Everything one run measured; :meth:`to_dict` is the documented JSON layout."""

    machine: dict[str, Any]
    settings: BenchSettings
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    seconds: float = 0.0
    section_seconds: dict[str, float] = field(default_factory=dict)
    load_avg_end: float | None = None
    forward: list[ForwardRecord] = field(default_factory=list)
    segment: list[SegmentRecord] = field(default_factory=list)
    predict_many: list[ManyRecord] = field(default_factory=list)
    ops: list[OpsRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "seconds": round(self.seconds, 1),
            "section_seconds": {k: round(v, 1) for k, v in self.section_seconds.items()},
            "machine": self.machine,
            "load_avg_end": self.load_avg_end,
            "settings": self.settings.to_dict(),
            "forward": [r.to_dict() for r in self.forward],
            "segment": [r.to_dict() for r in self.segment],
            "predict_many": [r.to_dict() for r in self.predict_many],
            "ops": [r.to_dict() for r in self.ops],
        }


# ---------------------------------------------------------------------------------------------------------------
# Forward (and peers)
# ---------------------------------------------------------------------------------------------------------------
def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


@dataclass
class _Contender:
    """One network on one backend, ready to time: a runner per precision."""

    section: str
    backend: str
    preset: str
    model: str
    flops: float
    runners: dict[str, Runner]


def _record(settings: BenchSettings, device: torch.device, **fields_: Any) -> ForwardRecord:
    return ForwardRecord(kind=settings.kind, in_channels=_kind_channels(settings.kind), size=settings.size,
                         device=str(device), **fields_)


def _one_line(exc: BaseException) -> str:
    return (f"{type(exc).__name__}: {exc}".strip().splitlines() or [type(exc).__name__])[0]


def _contenders(section: str, preset: str, backends: Sequence[str], settings: BenchSettings, device: torch.device,
                workdir: Path, progress: Progress) -> tuple[list[_Contender], list[ForwardRecord]]:
    """``preset`` on each backend that can run here, and ``unavailable``/``error`` records for the others."""
    precisions = settings.resolved_precisions()
    ready: list[_Contender] = []
    failed: list[ForwardRecord] = []

    def fail(backend: str, model: str, status: str, reason: str, only: Sequence[str] = precisions) -> None:
        failed.extend(_record(settings, device, section=section, backend=backend, preset=preset, model=model,
                              batch=b, precision=p, status=status, reason=reason)
                      for p in only for b in settings.batch_sizes)

    try:
        eager = build_network(preset, settings.kind, size=settings.size).to(device)
    except BackendUnavailableError as exc:
        fail("eager", preset, "unavailable", str(exc))
        return ready, failed
    model = type(eager).__name__
    flops = count_flops(eager, torch.zeros(1, _kind_channels(settings.kind), settings.size, settings.size,
                                           device=device))
    for backend in backends:
        runners: dict[str, Runner] = {}
        for precision in precisions:
            progress(f"forward {preset}: preparing {backend} {precision}")
            try:
                runners[precision] = make_runner(backend, eager, preset, settings.kind, size=settings.size,
                                                 batch_sizes=settings.batch_sizes, precision=precision,
                                                 workdir=workdir)
            except MDANetError as exc:
                fail(backend, model, "unavailable", str(exc), [precision])
            except Exception as exc:  # noqa: BLE001 - an artefact that fails to build is reported, not fatal
                fail(backend, model, "error", _one_line(exc), [precision])
            else:
                if runners[precision].autocast:  # the same callable serves every precision
                    runners.update(dict.fromkeys(precisions, runners[precision]))
                    break
        if runners:
            ready.append(_Contender(section, backend, preset, model, flops, runners))
    return ready, failed


def _time_group(group: list[_Contender], settings: BenchSettings, device: torch.device,
                progress: Progress) -> list[ForwardRecord]:
    """Time every contender of ``group`` round-robin at each (batch, precision)."""
    channels = _kind_channels(settings.kind)
    peak = (machine_info(device)["gpu"] or {}).get("peak_tflops", {}) if device.type == "cuda" else {}
    records: list[ForwardRecord] = []
    for precision in settings.resolved_precisions():
        members = [c for c in group if precision in c.runners]
        for batch in settings.batch_sizes:
            progress(f"forward: batch {batch} {precision}: {', '.join(f'{c.preset}/{c.backend}' for c in members)}")
            x = torch.randn(batch, channels, settings.size, settings.size, device=device)
            calls: dict[int, Callable[[], object]] = {}
            for i, c in enumerate(members):
                runner = c.runners[precision]
                call = runner.bind(x, precision)
                try:  # one untimed call weeds out a backend that cannot run this batch (static shapes, OOM)
                    call()
                except Exception as exc:  # noqa: BLE001 - reported in its record
                    records.append(_record(settings, device, section=c.section, backend=c.backend, preset=c.preset,
                                           model=c.model, ops=runner.ops, batch=batch, precision=precision,
                                           status="error", reason=_one_line(exc)))
                    if _is_oom(exc) and device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                calls[i] = call
            times = measure_interleaved(calls, warmup=max(0, settings.warmup - 1), repeats=settings.repeats,
                                        sync=_sync_for(device))
            for i, seconds in times.items():
                c = members[i]
                thr = Stats.of([batch / s for s in seconds])
                achieved = c.flops * thr.median / 1e9
                peak_tflops = peak.get(precision)
                records.append(_record(
                    settings, device, section=c.section, backend=c.backend, preset=c.preset, model=c.model,
                    ops=c.runners[precision].ops, batch=batch, precision=precision,
                    latency_ms=Stats.of([1e3 * s for s in seconds]), throughput=thr,
                    gflop_per_slice=c.flops / 1e9, achieved_gflop_s=achieved,
                    peak_fraction=achieved / (peak_tflops * 1e3) if peak_tflops else None,
                    slices_per_s_per_gflop=thr.median / (c.flops / 1e9),
                ))
    return records


def reference_preset(presets: Sequence[str]) -> str:
    """The MDANet preset the peers are compared with: ``paper`` when measured, else the first preset."""
    return "paper" if "paper" in presets or not presets else presets[0]


def _attach_ratios(records: list[ForwardRecord], reference: str) -> None:
    """Set ``baseline``/``ratio``: eager of the same preset; for peers, eager of ``reference``."""
    eager = {(r.preset, r.batch, r.precision): r for r in records if r.backend == "eager" and r.status == "ok"}
    for r in records:
        base_preset = reference if r.section == "peers" else r.preset
        r.baseline = f"eager/{base_preset}"
        base = eager.get((base_preset, r.batch, r.precision))
        if r.throughput is not None and base is not None and base.throughput is not None:
            r.ratio = r.throughput.median / base.throughput.median


def bench_forward(settings: BenchSettings, workdir: Path, progress: Progress = _quiet) -> list[ForwardRecord]:
    """The forward section (MDANet presets × backends) and the peers section (eager only).

    Each preset's backends are timed together round-robin; the peers join the group of the preset they are
    compared with (:func:`reference_preset`), whose eager backend is measured even without the forward section.
    """
    device = settings.resolved_device()
    reference = reference_preset(settings.presets)
    presets = list(settings.presets) if "forward" in settings.sections else []
    if "peers" in settings.sections and reference not in presets:
        presets.append(reference)
    records: list[ForwardRecord] = []
    for preset in presets:
        backends = settings.backends if "forward" in settings.sections else ("eager",)
        if "eager" not in backends:  # every ratio needs the eager baseline of the same run
            backends = ("eager", *backends)
        group, failed = _contenders("forward", preset, backends, settings, device, workdir, progress)
        if preset == reference and "peers" in settings.sections:
            for peer in PEERS:
                more, more_failed = _contenders("peers", peer, ("eager",), settings, device, workdir, progress)
                group, failed = group + more, failed + more_failed
        records += failed + _time_group(group, settings, device, progress)
    rank = {name: i for i, name in enumerate([*presets, *PEERS, *BACKENDS])}
    records.sort(key=lambda r: (r.section, rank[r.preset], rank[r.backend], r.precision, r.batch))
    _attach_ratios(records, reference)
    return records


# ---------------------------------------------------------------------------------------------------------------
# End to end: one volume
# ---------------------------------------------------------------------------------------------------------------
def phantom_dataset(volume: str, shape: tuple[int, int, int], n_cases: int, root: Path) -> Path:
    """Write ``n_cases`` phantoms of ``shape`` in the ISLES layout of ``volume`` under ``root`` (once)."""
    from mdanet_sdk.data.phantom import write_dataset

    out = root / f"{volume}-{'x'.join(map(str, shape))}-{n_cases}"
    if not out.exists():
        write_dataset(out, _LAYOUT[volume], n_cases, seed=0, shape=shape)
    return out


def random_segmenter(preset: str, volume: str, *, device: torch.device | str = "cpu", batch: int = 8,
                     precision: str = "fp32", ops_impl: str = "auto", seed: int = 0) -> Any:
    """A :class:`~mdanet_sdk.inference.Segmenter` around a ``preset`` network with seeded random weights.

    Default preprocessing, no TTA, no lesion-size filter: the timing of a trained model, whose weights do not
    change the work done.

    Args:
        preset: ``paper`` or ``small``.
        volume: ``ctp`` or ``mri`` (modality groups).
        device, batch, precision: as for the Segmenter (``batch`` is its ``batch_size``).
        ops_impl: op implementation of its network (``reference`` = eager, ``native``, ``auto``).
        seed: weight seed (the same seed gives every implementation the same weights).

    Raises:
        BackendUnavailableError: ``ops_impl="native"`` without the native ops built.
    """
    from mdanet_sdk.data.preprocess import PreprocessConfig
    from mdanet_sdk.inference import Segmenter
    from mdanet_sdk.train.checkpoint import Checkpoint

    if ops_impl == "native":
        ops.implementation("native", device)  # raises, saying why, where the kernels cannot run

    class _FixedOps(Checkpoint):
        """A checkpoint whose network is built with ``ops_impl`` (the Segmenter asks for ``"auto"``)."""

        def build_model(self, ops: str = "auto") -> nn.Module:  # noqa: ARG002 - fixed on purpose
            return super().build_model(ops_impl)

    weights = build_network(preset, volume, seed=seed).state_dict()
    checkpoint = _FixedOps(MDANetConfig.from_preset(preset, volume), PreprocessConfig(), dict(weights),
                           {"note": "benchmark: random weights"})
    return Segmenter([checkpoint], device=device, precision=precision, batch_size=batch, tta=False)


def segment_stages(source: Any, segmenter: Any, out: Path) -> StageTimer:
    """load → preprocess → predict → restore → write of one case through ``segmenter``, each stage timed.

    ``Segmenter.predict`` overlaps loading with the model in a background thread and reports no stage times,
    so this calls its steps one after the other: the case reader, the preprocessing, ``Segmenter.probabilities``
    batch by batch, :func:`~mdanet_sdk.data.preprocess.restore` + ``Segmenter.postprocess``, and
    :func:`~mdanet_sdk.data.nifti.save_like`.

    Args:
        source: a :class:`~mdanet_sdk.data.cases.CaseSource` (anything with ``load() -> Case``).
        segmenter: the :class:`~mdanet_sdk.inference.Segmenter`.
        out: where the mask is written.

    Returns:
        the timer; ``timer.seconds`` maps each stage to its wall time.
    """
    from mdanet_sdk.data.nifti import save_like
    from mdanet_sdk.data.preprocess import preprocess_images, restore_probability

    batch = segmenter.batch_size
    timer = StageTimer(_sync_for(segmenter.device))
    with timer.stage("load"):
        case = source.load()
    with timer.stage("preprocess"):
        slices, geometry = preprocess_images(case.images, segmenter.modalities, segmenter.preprocess)
    with timer.stage("predict"):
        x = torch.from_numpy(slices)
        prob = torch.cat([segmenter.probabilities(x[i:i + batch]) for i in range(0, len(x), batch)]).numpy()
    with timer.stage("restore"):
        mask = segmenter.postprocess(restore_probability(prob, geometry), case.images, geometry.head)
    with timer.stage("write"):
        save_like(mask, case.reference, out, kind="mask")
    return timer


def bench_segment(settings: BenchSettings, workdir: Path, progress: Progress = _quiet) -> list[SegmentRecord]:
    """The segment section: each volume kind × segment preset × (eager, native), stages timed, and the same
    case through ``Segmenter.predict`` + ``save`` (``segmenter_ms``) as a check on the staged sum.

    The backends of one (volume, preset) run round-robin, like the forward contenders.
    """
    from mdanet_sdk.data.cases import find_cases

    device = settings.resolved_device()
    precision = settings.resolved_precisions()[0]
    records: list[SegmentRecord] = []
    for volume in VOLUMES:
        shape = settings.volume_shape(volume)
        progress(f"segment {volume}: writing a {'x'.join(map(str, shape))} phantom")
        source = find_cases(phantom_dataset(volume, shape, 1, workdir / "phantoms"))[0]
        for preset in settings.segment_presets:
            base = dict(volume=volume, shape=shape, modalities=MDANetConfig.from_preset(preset, volume).modalities,
                        preset=preset, device=str(device), precision=precision, batch=settings.segment_batch)
            timers: dict[str, list[StageTimer]] = {}
            calls: dict[str, Callable[[], object]] = {}
            for backend in dict.fromkeys(("eager", *[b for b in settings.backends if b == "native"])):
                try:
                    segmenter = random_segmenter(preset, volume, device=device, batch=settings.segment_batch,
                                                 precision=precision, ops_impl=_IMPL[backend])
                except MDANetError as exc:
                    records.append(SegmentRecord(backend=backend, status="unavailable", reason=str(exc), **base))
                    continue
                out = workdir / f"seg-{volume}-{preset}-{backend}.nii.gz"
                timers[backend] = []
                calls[f"{backend} staged"] = lambda b=backend, seg=segmenter, o=out: timers[b].append(
                    segment_stages(source, seg, o))
                calls[f"{backend} segmenter"] = lambda seg=segmenter, o=out: seg.predict(source).save(o)
            progress(f"segment {volume}: {preset} {', '.join(timers)}")
            times = measure_interleaved(calls, warmup=settings.warmup, repeats=settings.repeats,
                                        sync=_sync_for(device))
            for backend, runs in timers.items():
                runs = runs[settings.warmup:]
                stage_ms = {k: Stats.of([1e3 * t.seconds[k] for t in runs]) for k in runs[0].seconds}
                medians = sum(v.median for v in stage_ms.values())
                total = Stats.of([1e3 * t.total for t in runs])
                records.append(SegmentRecord(
                    backend=backend, total_ms=total, slices_per_s=shape[2] / (total.median / 1e3),
                    stages={k: {"ms": v, "share": v.median / medians} for k, v in stage_ms.items()},
                    segmenter_ms=Stats.of([1e3 * t for t in times[f"{backend} segmenter"]]), **base,
                ))
    eager_ms = {(r.volume, r.preset): r.total_ms.median for r in records if r.backend == "eager" and r.total_ms}
    for r in records:
        if r.total_ms is not None and (r.volume, r.preset) in eager_ms:
            r.ratio = eager_ms[(r.volume, r.preset)] / r.total_ms.median
    return records


# ---------------------------------------------------------------------------------------------------------------
# predict_many: one fresh process per case count
# ---------------------------------------------------------------------------------------------------------------
def _rss_mb(key: str) -> float | None:
    """``VmHWM`` (peak) or ``VmRSS`` (current) of this process in MB, from /proc; getrusage where it lacks."""
    value = _proc_field("/proc/self/status", key)
    if value is not None:
        return int(value.split()[0]) / 1024
    if key != "VmHWM":
        return None
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _many_child(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: ``predict_many`` over the first ``n`` cases of ``root``; time and peak memory."""
    from mdanet_sdk.data.cases import find_cases

    device = torch.device(spec["device"])
    out = Path(spec["out"])
    sources = find_cases(spec["root"])[: spec["n"]]
    segmenter = random_segmenter(spec["preset"], spec["volume"], device=device, batch=spec["batch"])
    segmenter.predict(sources[0])  # warm-up: lazy initialisation is not part of the per-case cost
    setup = _rss_mb("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for result in segmenter.predict_many(sources):
        result.save(out / f"{result.case_id}.nii.gz")
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "cases_per_s": len(sources) / seconds,
        "setup_rss_mb": setup,
        "peak_rss_mb": _rss_mb("VmHWM"),
        "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
    }


def bench_many(settings: BenchSettings, workdir: Path, progress: Progress = _quiet) -> list[ManyRecord]:
    """The many section: ``predict_many`` on N MRI-like phantoms for each N, each in a fresh process."""
    device = settings.resolved_device()
    # The Segmenter builds its networks with ops="auto": native when built, else the eager composite.
    backend = "native" if ops.implementation("auto", device) == "native" else "eager"
    volume, preset = "mri", settings.segment_presets[0]
    shape = settings.volume_shape(volume)
    base = dict(volume=volume, shape=shape, preset=preset, backend=backend, device=str(device))
    counts = sorted(set(settings.many_counts))
    progress(f"predict_many: writing {max(counts)} phantoms")
    root = phantom_dataset(volume, shape, max(counts), workdir / "phantoms")
    records = []
    for n in counts:
        progress(f"predict_many: {n} case(s) in a fresh process")
        spec = dict(root=str(root), n=n, preset=preset, volume=volume, device=str(device),
                    batch=settings.segment_batch, out=str(workdir / f"many-{n}"))
        proc = subprocess.run([sys.executable, "-m", "mdanet_sdk.bench", json.dumps(spec)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            reason = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            records.append(ManyRecord(n_cases=n, status="error", reason=reason, **base))
            continue
        records.append(ManyRecord(n_cases=n, **json.loads(proc.stdout.strip().splitlines()[-1]), **base))
    return records


# ---------------------------------------------------------------------------------------------------------------
# Native ops against the eager composite
# ---------------------------------------------------------------------------------------------------------------
_OPS = ("dasc_gate", "graph_conv")


@contextlib.contextmanager
def _captured_op_calls() -> Iterator[list[tuple[str, tuple[Tensor, ...]]]]:
    """Record the arguments of every ``ops.dasc_gate``/``ops.graph_conv`` call made inside the block.

    The model calls the ops through the :mod:`mdanet_sdk.ops` module attribute, so wrapping the attribute for the
    length of one forward pass yields exactly the tensors (shapes, strides, weights) the network uses.
    """
    calls: list[tuple[str, tuple[Tensor, ...]]] = []
    originals = {name: getattr(ops, name) for name in _OPS}

    def spy(name: str) -> Callable[..., Tensor]:
        def wrapper(*args: Tensor, **kwargs: Any) -> Tensor:
            calls.append((name, args))
            return originals[name](*args, **kwargs)
        return wrapper

    try:
        for name in _OPS:
            setattr(ops, name, spy(name))
        yield calls
    finally:
        for name, fn in originals.items():
            setattr(ops, name, fn)


def _loops(fns: Mapping[str, Callable[[], object]], target_s: float = 0.02,
           sync: Callable[[], None] | None = None) -> dict[str, int]:
    """Calls per timed sample so that one sample lasts about ``target_s``: a kernel of microseconds timed
    alone would measure the timer and the scheduler instead (as ``timeit`` autoranges)."""
    once = {name: min(measure(fn, warmup=1, repeats=2, sync=sync)) for name, fn in fns.items()}
    return {name: max(1, min(1000, round(target_s / max(t, 1e-7)))) for name, t in once.items()}


def bench_ops(settings: BenchSettings, progress: Progress = _quiet) -> list[OpsRecord]:
    """The ops section: each distinct op call of a paper-preset forward (batch 1, ``settings.size``), eager vs
    native, timed round-robin."""
    from mdanet_sdk.ops import reference

    device = settings.resolved_device()
    model = build_network("paper", settings.kind, size=settings.size).to(device)
    x = torch.randn(1, _kind_channels(settings.kind), settings.size, settings.size, device=device)
    with torch.inference_mode(), _captured_op_calls() as calls:
        model(x)
    try:
        ops.implementation("native", device)
        native_reason = None
    except BackendUnavailableError as exc:
        native_reason = str(exc)
    seen: set[tuple[str, tuple[tuple[int, ...], ...]]] = set()
    records: list[OpsRecord] = []
    for name, args in calls:
        key = (name, tuple(tuple(a.shape) for a in args))
        if key in seen:
            continue
        seen.add(key)
        arg_names = ("f_m1", "f_m2", "f_de") if name == "dasc_gate" else ("g",)
        shapes = {n: list(a.shape) for n, a in zip(arg_names, args)}
        call = f"{name}[{'x'.join(map(str, args[0].shape))}]"
        base = dict(op=name, call=call, shapes=shapes, device=str(device))
        fns: dict[str, Callable[[], object]] = {"eager": lambda f=getattr(reference, name), a=args: f(*a)}
        if native_reason is None:
            fns["native"] = lambda f=getattr(ops, name), a=args: f(*a, impl="native")
        else:
            records.append(OpsRecord(backend="native", status="unavailable", reason=native_reason, **base))
        progress(f"ops: {call}")
        with torch.inference_mode():
            loops = _loops(fns, sync=_sync_for(device))
            times = measure_interleaved(
                {b: (lambda f=f, k=loops[b]: [f() for _ in range(k)]) for b, f in fns.items()},
                warmup=settings.warmup, repeats=max(settings.repeats, 5), sync=_sync_for(device),
            )
        eager_ms = Stats.of([1e3 * s / loops["eager"] for s in times["eager"]]).median
        for backend, seconds in times.items():
            lat = Stats.of([1e3 * s / loops[backend] for s in seconds])
            records.append(OpsRecord(backend=backend, latency_ms=lat, ratio=eager_ms / lat.median,
                                     calls_per_sample=loops[backend], **base))
    return sorted(records, key=lambda r: (r.op, r.call, r.backend))


# ---------------------------------------------------------------------------------------------------------------
# The run, the table, the JSON and the plot
# ---------------------------------------------------------------------------------------------------------------
def run_benchmark(settings: BenchSettings, workdir: Path | None = None, progress: Progress = _quiet,
                  on_section: Callable[[BenchmarkReport], None] | None = None) -> BenchmarkReport:
    """Run the sections of ``settings`` and return the report.

    Args:
        settings: what to measure.
        workdir: scratch folder for phantoms, artefacts and outputs (a temporary folder, removed after, if None).
        progress: called with one short line before each step.
        on_section: called with the report so far after each section (the CLI writes the JSON there, so an
            interrupted long run keeps the sections it finished).
    """
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mdanet-bench-")))
        workdir.mkdir(parents=True, exist_ok=True)
        report = BenchmarkReport(machine=machine_info(settings.resolved_device()), settings=settings)
        steps: list[tuple[str, Callable[[], None]]] = [
            ("forward", lambda: setattr(report, "forward", bench_forward(settings, workdir, progress))),
            ("segment", lambda: setattr(report, "segment", bench_segment(settings, workdir, progress))),
            ("many", lambda: setattr(report, "predict_many", bench_many(settings, workdir, progress))),
            ("ops", lambda: setattr(report, "ops", bench_ops(settings, progress))),
        ]
        for name, step in steps:
            wanted = {"forward", "peers"} if name == "forward" else {name}
            if wanted & set(settings.sections):
                started = time.perf_counter()
                step()
                report.section_seconds[name] = time.perf_counter() - started
                report.seconds = time.perf_counter() - start
                if on_section is not None:
                    on_section(report)
    report.seconds = time.perf_counter() - start
    report.load_avg_end = report.machine["load_avg_1m"] and round(os.getloadavg()[0], 2)
    return report


SUMMARY_COLUMNS = ("section", "what", "backend", "batch", "prec", "median", "spread (IQR)", "throughput",
                   "× eager", "notes")


def _num(value: float) -> str:
    """Three significant digits without exponent notation: 0.0123, 4.56, 78.9, 1,234."""
    return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"


def _ms(value: float) -> str:
    return f"{_num(value)} ms"


def _spread(stats: Stats) -> str:
    return f"{_num(stats.q1)}–{_num(stats.q3)}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def summary_rows(report: BenchmarkReport) -> list[dict[str, str]]:
    """One row per measurement for the CLI table (keys :data:`SUMMARY_COLUMNS`); a backend that cannot run
    here gets a single row saying why."""
    rows: list[dict[str, str]] = []
    blank = dict.fromkeys(SUMMARY_COLUMNS, "")
    said: set[tuple[str, str, str]] = set()
    for r in report.forward:
        what = f"{r.preset} {r.size}²"
        if r.status != "ok":
            if (r.preset, r.backend, r.status) not in said:
                said.add((r.preset, r.backend, r.status))
                rows.append({**blank, "section": r.section, "what": what, "backend": r.backend,
                             "notes": f"{r.status}: {r.reason}"})
            continue
        assert r.latency_ms is not None and r.throughput is not None
        notes = f"{_num(r.gflop_per_slice)} GF/slice · {_num(r.achieved_gflop_s)} GF/s · " \
                f"{_num(r.slices_per_s_per_gflop)} sl/s/GF"
        if r.peak_fraction is not None:
            notes += f" · {100 * r.peak_fraction:.1f}% peak"
        if r.section == "peers":
            notes += f" · × vs {r.baseline}"
        rows.append({"section": r.section, "what": what, "backend": r.backend, "batch": str(r.batch),
                     "prec": r.precision, "median": _ms(r.latency_ms.median), "spread (IQR)": _spread(r.latency_ms),
                     "throughput": f"{_num(r.throughput.median)} slices/s", "× eager": _ratio(r.ratio),
                     "notes": notes})
    for s in report.segment:
        what = f"{s.volume} {'×'.join(map(str, s.shape))} {s.preset}"
        if s.status != "ok" or s.total_ms is None:
            rows.append({**blank, "section": "segment", "what": what, "backend": s.backend,
                         "notes": f"{s.status}: {s.reason}"})
            continue
        shares = ", ".join(f"{k} {100 * v['share']:.0f}%" for k, v in s.stages.items())
        if s.segmenter_ms is not None:
            shares += f"; Segmenter.predict+save {_ms(s.segmenter_ms.median)}"
        rows.append({"section": "segment", "what": what, "backend": s.backend, "batch": str(s.batch),
                     "prec": s.precision, "median": _ms(s.total_ms.median), "spread (IQR)": _spread(s.total_ms),
                     "throughput": f"{_num(s.slices_per_s)} slices/s", "× eager": _ratio(s.ratio), "notes": shares})
    for m in report.predict_many:
        what = f"{m.n_cases} × {m.volume} {'×'.join(map(str, m.shape))} {m.preset}"
        if m.status != "ok":
            rows.append({**blank, "section": "many", "what": what, "backend": m.backend,
                         "notes": f"{m.status}: {m.reason}"})
            continue
        mem = f"peak RSS {m.peak_rss_mb:,.0f} MB (after setup {m.setup_rss_mb:,.0f} MB)"
        if m.peak_gpu_mb is not None:
            mem += f", GPU {m.peak_gpu_mb:,.0f} MB"
        rows.append({**blank, "section": "many", "what": what, "backend": m.backend,
                     "median": _ms(1e3 * (m.seconds or 0.0)), "throughput": f"{_num(m.cases_per_s)} cases/s",
                     "notes": mem + " (one run)"})
    for o in report.ops:
        if o.status != "ok" or o.latency_ms is None:
            rows.append({**blank, "section": "ops", "what": o.call, "backend": o.backend,
                         "notes": f"{o.status}: {o.reason}"})
            continue
        rows.append({**blank, "section": "ops", "what": o.call, "backend": o.backend, "batch": "1",
                     "prec": "fp32", "median": _ms(o.latency_ms.median), "spread (IQR)": _spread(o.latency_ms),
                     "× eager": _ratio(o.ratio)})
    return rows


def write_json(report: BenchmarkReport, path: str | os.PathLike[str]) -> Path:
    """Write ``report.to_dict()`` to ``path`` as indented JSON, atomically."""
    return _write_json(path, report.to_dict())


def plot_throughput(report: BenchmarkReport, path: str | os.PathLike[str]) -> Path:
    """PNG of forward throughput (slices/s, median with IQR bars) against batch size: one panel per preset,
    one line per backend and precision; peers share a panel. Written atomically.

    Raises:
        InputError: the report has no successful forward record to plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in report.forward if r.status == "ok" and r.throughput is not None]
    if not ok:
        raise InputError("Nothing to plot: the run has no forward measurement (add the forward section).")
    panels = list(dict.fromkeys("peers" if r.section == "peers" else r.preset for r in ok))
    reference = next((r.baseline for r in ok if r.section == "peers"), None)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        lines: dict[str, list[ForwardRecord]] = {}
        for r in ok:
            if panel == "peers" and r.section == "peers":
                lines.setdefault(f"{r.preset} {r.precision}", []).append(r)
            elif panel == "peers" and f"{r.backend}/{r.preset}" == reference:
                lines.setdefault(f"MDANet {r.preset} (eager) {r.precision}", []).append(r)
            elif r.section != "peers" and r.preset == panel:
                lines.setdefault(f"{r.backend} {r.precision}", []).append(r)
        batches = sorted({r.batch for recs in lines.values() for r in recs})
        for label, recs in lines.items():
            recs.sort(key=lambda r: r.batch)
            med = np.array([r.throughput.median for r in recs])  # type: ignore[union-attr]
            err = np.array([[m - r.throughput.q1, r.throughput.q3 - m]  # type: ignore[union-attr]
                            for m, r in zip(med, recs)]).T
            ax.errorbar([r.batch for r in recs], med, yerr=err, marker="o", capsize=3, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlabel("batch size")
        ax.set_ylabel("slices / s")
        ax.set_title(f"{panel} ({ok[0].kind}, {ok[0].size}², {ok[0].device})")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    m = report.machine
    fig.suptitle(f"mdanet-sdk benchmark — {m['cpu']}, {m['torch_threads']} threads, torch {m['torch']}", fontsize=9)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)


if __name__ == "__main__":
    # The many section's child process: one JSON spec in argv, one JSON result line on stdout.
    print(json.dumps(_many_child(json.loads(sys.argv[1]))))
