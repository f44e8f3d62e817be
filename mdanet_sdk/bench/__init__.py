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
- ``segment``: one phantom case end to end through the Segmenter's :class:`~mdanet_sdk.inference.Predictor`
  (load → preprocess → predict → postprocess → write) with the share of time in each stage.
  Beside it, today's behaviour (fp32, contiguous, batch 16, no compile, memory handed back) against the
  Segmenter's defaults on the bundled weights of each kind, each in its own process, alternately in one run, as
  a ratio (:mod:`.defaults`).
- ``many``: ``Segmenter.predict_many`` over N cases, one fresh process per N: cases/s and peak memory.
- ``ops``: the two native operators against their eager composite, at the shapes a paper-preset forward pass
  actually hands them.

Modules, one job each:

- :mod:`.timing`: :class:`Stats`, :func:`measure_interleaved`, :func:`measure`, :class:`StageTimer`.
- :mod:`.machine`: :func:`machine_info`, the machine record (built on :mod:`mdanet_sdk.info`).
- :mod:`.records`: :class:`BenchSettings`, the record types, :class:`BenchmarkReport` (the JSON layout).
- :mod:`.runners`: networks and backends: :func:`build_network`, :class:`Runner`, :func:`make_runner`.
- :mod:`.forward`, :mod:`.segment`, :mod:`.many`, :mod:`.native_ops`: one section each; :mod:`.defaults`: the
  today → defaults comparison of the segment section.
- :mod:`.gpu_check`: ``scripts/gpu_check.sh``, the one-command GPU check (its own JSON, not this report).
- :mod:`.run`: :func:`run_benchmark`, the sections in order.
- :mod:`.render`: the CLI table's rows, :func:`write_json`, :func:`plot_throughput`.

The JSON layout written by :func:`write_json` is documented in ``benchmarks/README.md`` (``schema_version`` 4).
"""

from __future__ import annotations

from mdanet_sdk.bench.defaults import bench_defaults
from mdanet_sdk.bench.forward import bench_forward, reference_preset
from mdanet_sdk.bench.machine import machine_info
from mdanet_sdk.bench.many import bench_many
from mdanet_sdk.bench.native_ops import bench_ops
from mdanet_sdk.bench.records import (
    BACKENDS,
    PEERS,
    SCHEMA,
    SCHEMA_VERSION,
    SECTIONS,
    VOLUMES,
    BenchmarkReport,
    BenchSettings,
    DefaultsRecord,
    ForwardRecord,
    ManyRecord,
    OpsRecord,
    SegmentRecord,
)
from mdanet_sdk.bench.render import SUMMARY_COLUMNS, plot_throughput, summary_rows, write_json
from mdanet_sdk.bench.run import run_benchmark
from mdanet_sdk.bench.runners import Runner, build_network, count_flops, make_runner
from mdanet_sdk.bench.segment import bench_segment, phantom_dataset, random_segmenter, segment_stages
from mdanet_sdk.bench.timing import StageTimer, Stats, measure, measure_interleaved

__all__ = [
    "BACKENDS",
    "PEERS",
    "SECTIONS",
    "VOLUMES",
    "SCHEMA",
    "SCHEMA_VERSION",
    "Stats",
    "StageTimer",
    "measure",
    "measure_interleaved",
    "machine_info",
    "count_flops",
    "build_network",
    "Runner",
    "make_runner",
    "random_segmenter",
    "phantom_dataset",
    "segment_stages",
    "BenchSettings",
    "ForwardRecord",
    "SegmentRecord",
    "DefaultsRecord",
    "ManyRecord",
    "OpsRecord",
    "BenchmarkReport",
    "bench_forward",
    "bench_segment",
    "bench_defaults",
    "bench_many",
    "bench_ops",
    "run_benchmark",
    "SUMMARY_COLUMNS",
    "summary_rows",
    "write_json",
    "plot_throughput",
    "reference_preset",
]
