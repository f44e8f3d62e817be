"""pytest-benchmark: model forward per backend, preset, batch size and precision, and the peers.

Groups hold the contenders that are compared (one preset and batch), so pytest-benchmark's own table shows
their ratios. ``extra_info`` carries what the JSON of ``mdanet-sdk benchmark`` has: backend, preset, batch,
precision, op implementation, GFLOPs per slice.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from _bench_config import DEVICE, SETTINGS, sync
from mdanet_sdk.bench import PEERS, Runner, reference_preset, build_network, count_flops, make_runner
from mdanet_sdk.bench.runners import kind_channels
from mdanet_sdk.errors import BackendUnavailableError

CHANNELS = kind_channels(SETTINGS.kind)
REFERENCE = reference_preset(SETTINGS.presets)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("forward-artefacts")


@functools.cache
def _eager(preset: str) -> torch.nn.Module:
    return build_network(preset, SETTINGS.kind, size=SETTINGS.size).to(DEVICE)


@functools.cache
def _gflops(preset: str) -> float:
    return count_flops(_eager(preset), torch.zeros(1, CHANNELS, SETTINGS.size, SETTINGS.size, device=DEVICE)) / 1e9


@functools.cache
def _runner(preset: str, backend: str, precision: str, workdir: Path) -> Runner:
    return make_runner(
        backend,
        _eager(preset),
        preset,
        SETTINGS.kind,
        size=SETTINGS.size,
        batch_sizes=SETTINGS.batch_sizes,
        precision=precision,
        workdir=workdir,
    )


def _run(benchmark, group: str, preset: str, backend: str, batch: int, precision: str, workdir: Path) -> None:
    try:
        runner = _runner(preset, backend, precision, workdir)
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))
    call = runner.bind(torch.randn(batch, CHANNELS, SETTINGS.size, SETTINGS.size, device=DEVICE), precision)
    benchmark.group = group
    benchmark.extra_info.update(
        backend=backend,
        preset=preset,
        batch=batch,
        precision=precision,
        ops=runner.ops,
        size=SETTINGS.size,
        kind=SETTINGS.kind,
        gflop_per_slice=_gflops(preset),
    )
    benchmark.pedantic(lambda: (call(), sync()), rounds=SETTINGS.repeats, warmup_rounds=SETTINGS.warmup)


@pytest.mark.parametrize("precision", SETTINGS.resolved_precisions())
@pytest.mark.parametrize("batch", SETTINGS.batch_sizes)
@pytest.mark.parametrize("backend", SETTINGS.backends)
@pytest.mark.parametrize("preset", SETTINGS.presets)
def test_forward(benchmark, preset: str, backend: str, batch: int, precision: str, workdir: Path) -> None:
    _run(
        benchmark,
        f"forward {preset} {SETTINGS.size}² batch {batch} {precision}",
        preset,
        backend,
        batch,
        precision,
        workdir,
    )


@pytest.mark.parametrize("precision", SETTINGS.resolved_precisions())
@pytest.mark.parametrize("batch", SETTINGS.batch_sizes)
@pytest.mark.parametrize("network", (REFERENCE, *PEERS))
def test_peers(benchmark, network: str, batch: int, precision: str, workdir: Path) -> None:
    """Eager MDANet next to our U-Net and MONAI's BasicUNet (skipped without MONAI)."""
    try:
        _eager(network)
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))
    _run(benchmark, f"peers {SETTINGS.size}² batch {batch} {precision}", network, "eager", batch, precision, workdir)
