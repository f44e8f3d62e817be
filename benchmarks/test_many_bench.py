"""pytest-benchmark: ``Segmenter.predict_many`` over N MRI-like phantoms, for each N of the settings.

The timed target segments and writes all N cases; ``extra_info`` adds cases/s and the peak memory of the same
work in a fresh process per N (``mdanet_sdk.bench.bench_many``), which should stay flat as N grows.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from _bench_config import DEVICE, SETTINGS, sync
from mdanet_sdk.bench import ManyRecord, bench_many, phantom_dataset, random_segmenter
from mdanet_sdk.data.cases import find_cases

COUNTS = sorted(set(SETTINGS.many_counts))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("many")


@pytest.fixture(scope="module")
def memory(workdir: Path) -> dict[int, ManyRecord]:
    """Peak memory per N, one fresh process each (also writes the phantoms the timed runs read)."""
    return {r.n_cases: r for r in bench_many(SETTINGS, workdir)}


@pytest.mark.parametrize("n_cases", COUNTS)
def test_predict_many(benchmark, n_cases: int, memory: dict[int, ManyRecord], workdir: Path, tmp_path: Path) -> None:
    dataset = phantom_dataset("mri", SETTINGS.volume_shape("mri"), max(COUNTS), workdir / "phantoms")
    sources = find_cases(dataset)[:n_cases]
    segmenter = random_segmenter(SETTINGS.segment_presets[0], "mri", device=DEVICE, batch=SETTINGS.segment_batch)

    def run() -> None:
        for result in segmenter.predict_many(sources):
            result.save(tmp_path / f"{result.case_id}.nii.gz")
        sync()

    benchmark.group = "predict_many"
    benchmark.pedantic(run, rounds=max(1, SETTINGS.repeats // 2), warmup_rounds=min(1, SETTINGS.warmup))
    record = memory[n_cases]
    timed = benchmark.stats  # None under --benchmark-disable: the run above was a smoke test, not a measurement
    benchmark.extra_info.update(
        n_cases=n_cases,
        cases_per_s=n_cases / timed.stats.median if timed else None,
        status=record.status,
        peak_rss_mb=record.peak_rss_mb,
        setup_rss_mb=record.setup_rss_mb,
        peak_gpu_mb=record.peak_gpu_mb,
    )
