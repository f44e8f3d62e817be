"""What a benchmark run measures and what it found: :class:`BenchSettings`, one record type per section, and
:class:`BenchmarkReport`, whose :meth:`~BenchmarkReport.to_dict` is the JSON layout documented in
``benchmarks/README.md`` (``schema_version`` 4)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import torch

from mdanet_sdk.bench.timing import Stats
from mdanet_sdk.config import PRESETS
from mdanet_sdk.device import PRECISIONS, resolve_device
from mdanet_sdk.errors import InputError

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "BACKENDS",
    "PEERS",
    "SECTIONS",
    "VOLUMES",
    "BenchSettings",
    "ForwardRecord",
    "SegmentRecord",
    "DefaultsRecord",
    "ManyRecord",
    "OpsRecord",
    "BenchmarkReport",
]

SCHEMA = "mdanet-sdk-benchmark"
#: 2: the segment stages became load, preprocess, predict (which now includes the restore to the native grid),
#: postprocess, write (1 had a restore stage holding restore and post-processing); the segment and predict_many
#: records name the phantom's modality kind ``kind``, as the forward records do (1 called it ``volume``).
#: 3: ``segment_defaults``, today's behaviour against the Segmenter's defaults (:class:`DefaultsRecord`).
#: 4: a :class:`DefaultsRecord` names its ``case`` (``phantom`` or a ``--case`` id); its variants say ``tta_screen``.
SCHEMA_VERSION = 4

#: Forward backends, in table order. ``eager`` is the baseline every ratio refers to.
BACKENDS = ("eager", "native", "torchscript", "exported", "tensorrt")
#: Peer networks run through the eager forward loop (presets of the ``peers`` section).
PEERS = ("unet", "monai-basicunet")
SECTIONS = ("forward", "peers", "segment", "many", "ops")
#: Modality kind → the ``(X, Y, Z)`` of its end-to-end phantom volume: CTP-like (ISLES'18), MRI-like (ISLES'22).
VOLUMES: dict[str, tuple[int, int, int]] = {"ctp": (256, 256, 20), "mri": (112, 112, 73)}


@dataclass(frozen=True)
class BenchSettings:
    """What to measure.

    Attributes:
        presets: MDANet presets of the forward section (``paper``, ``small``, …).
        backends: forward backends (subset of :data:`BACKENDS`).
        batch_sizes: forward batch sizes.
        size: slice side of the forward and ops sections (a multiple of 16).
        kind: modality kind of the forward and ops inputs: ``ctp`` (4 channels) or ``mri`` (2).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        precisions: forward precisions; None = ``fp32`` on CPU, ``fp32, fp16, bf16`` (autocast) on a GPU.
        warmup: untimed rounds before timing.
        repeats: timed repeats of every measurement.
        sections: which of :data:`SECTIONS` to run.
        slices: Z extent of the end-to-end volumes (None: 20 for ``ctp``, 73 for ``mri``, see :data:`VOLUMES`).
        segment_presets: presets of the segment and many sections.
        segment_batch: slices per forward call in the segment and many sections.
        many_counts: case counts of the many section (one fresh process each).
        quick: label of a ``--quick`` run (stored in the JSON).
        cases: case or dataset folders whose cases the segment section also segments by today's behaviour
            and by the defaults (:mod:`~mdanet_sdk.bench.defaults`), besides its phantoms.
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
    cases: tuple[str, ...] = ()

    @classmethod
    def quick_run(cls, **overrides: Any) -> "BenchSettings":
        """The ``--quick`` settings: every section at small sizes (the small preset, 64² slices, 8-slice volumes,
        3 repeats), about a minute on 2 idle CPU cores."""
        base: dict[str, Any] = dict(
            presets=("small",),
            batch_sizes=(1, 4),
            size=64,
            warmup=1,
            repeats=3,
            slices=8,
            segment_presets=("small",),
            many_counts=(1, 2),
            quick=True,
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
                numbers = tuple(int(v) for v in names(value))
            except ValueError:
                numbers = ()
            if not numbers:
                raise InputError(f"Expected comma-separated integers like 1,8,32 in the environment; got {value!r}.")
            return numbers

        parsers: dict[str, tuple[str, Callable[[str], Any]]] = {
            "PRESETS": ("presets", names),
            "BACKENDS": ("backends", names),
            "BATCH_SIZES": ("batch_sizes", ints),
            "SIZE": ("size", lambda v: ints(v)[0]),
            "REPEATS": ("repeats", lambda v: ints(v)[0]),
            "WARMUP": ("warmup", lambda v: ints(v)[0]),
            "DEVICE": ("device", str),
        }
        overrides = {key: parse(value) for name, (key, parse) in parsers.items() if (value := get(name))}
        return cls.quick_run(**overrides) if get("QUICK") not in (None, "0") else cls(**overrides)

    def __post_init__(self) -> None:
        for name, values, allowed in (
            ("backend", self.backends, BACKENDS),
            ("section", self.sections, SECTIONS),
            ("precision", self.precisions or (), PRECISIONS),
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
        self.resolved_device()  # InputError for no device name, BackendUnavailableError for cuda without a GPU

    def resolved_device(self) -> torch.device:
        """The torch device to measure on (:func:`mdanet_sdk.device.resolve_device`)."""
        return resolve_device(self.device)

    def resolved_precisions(self) -> tuple[str, ...]:
        """The forward precisions: those asked for, else all of them on a GPU and fp32 on the CPU (autocast
        to a lower precision on a CPU is slower, not faster)."""
        if self.precisions:
            return self.precisions
        return PRECISIONS if self.resolved_device().type == "cuda" else ("fp32",)

    def volume_shape(self, kind: str) -> tuple[int, int, int]:
        """The ``(X, Y, Z)`` of modality kind ``kind``'s phantom, ``Z`` being :attr:`slices` when set."""
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

    ``kind`` is the phantom's modality kind (``ctp`` or ``mri``, a key of :data:`VOLUMES`). ``stages`` maps
    load, preprocess, predict (including the restore to the native grid), postprocess, write →
    ``{"ms": Stats, "share": float}`` where
    ``share`` is the stage's median over the sum of the stage medians. ``ratio`` is eager median total time over
    this record's median total time (> 1 is faster than eager). ``segmenter_ms`` is the same case through
    ``Segmenter.predict`` and ``SegmentationResult.save`` (which overlap loading with the model).
    """

    kind: str
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
class DefaultsRecord:
    """One phantom case of modality kind ``kind`` segmented with the bundled weights ``weights`` by today's
    behaviour and by the Segmenter's defaults, alternately in one run (:mod:`mdanet_sdk.bench.defaults`).

    ``variants`` maps ``today`` and ``defaults`` → ``{"options": the Segmenter options passed, "precision",
    "batch", "memory_format" (``contiguous``/``channels_last``, of the weights), "compiled", "retain_memory"
    (freed memory kept in the process), "tta_screen" (TTA flips only slices with a lesion candidate),
    "total_ms": Stats of predict + save, "slices_per_s"}``. ``ratio`` is today's median over the defaults' median (> 1: the
    defaults are faster); ``round_ratio`` the Stats of the per-round ratios; ``mask_dice`` the Dice between
    the two variants' masks (1.0 when both are empty). ``case`` is ``"phantom"``, or the id of a case of
    :attr:`BenchSettings.cases`.
    """

    kind: str
    shape: tuple[int, int, int]
    weights: str
    device: str
    status: str = "ok"
    reason: str | None = None
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    ratio: float | None = None
    round_ratio: Stats | None = None
    mask_dice: float | None = None
    case: str = "phantom"

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)


@dataclass
class ManyRecord:
    """``Segmenter.predict_many`` over ``n_cases`` phantom cases of modality kind ``kind`` in a fresh process.

    ``peak_rss_mb`` is the process's high-water resident set (``VmHWM``); ``setup_rss_mb`` the resident set
    after imports, model and one warm-up case, before ``predict_many``; ``peak_gpu_mb`` is
    ``torch.cuda.max_memory_allocated`` on a GPU (else None).
    """

    n_cases: int
    kind: str
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
    segment_defaults: list[DefaultsRecord] = field(default_factory=list)
    predict_many: list[ManyRecord] = field(default_factory=list)
    ops: list[OpsRecord] = field(default_factory=list)

    def unmeasured_cases(self) -> list[DefaultsRecord]:
        """The records of :attr:`BenchSettings.cases` that could not be read or segmented (not phantoms)."""
        return [r for r in self.segment_defaults if r.case != "phantom" and r.status != "ok"]

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
            "segment_defaults": [r.to_dict() for r in self.segment_defaults],
            "predict_many": [r.to_dict() for r in self.predict_many],
            "ops": [r.to_dict() for r in self.ops],
        }
