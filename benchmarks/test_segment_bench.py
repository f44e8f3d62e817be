"""pytest-benchmark: one phantom volume per modality kind end to end through ``Segmenter.predict`` + ``save``.

Volumes: CTP-like 256×256×20 and MRI-like 112×112×73 (``MDANET_BENCH_SLICES`` is not read here; the CLI's
``--slices`` is). ``extra_info["stages"]`` holds one instrumented pass (load, preprocess, predict, postprocess,
write in seconds; :func:`mdanet_sdk.bench.segment_stages`) and ``extra_info["shares"]`` their fractions.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from _bench_config import DEVICE, SETTINGS, sync
from mdanet_sdk.bench import VOLUMES, phantom_dataset, random_segmenter, segment_stages
from mdanet_sdk.data.cases import find_cases


@pytest.mark.parametrize("preset", SETTINGS.segment_presets)
@pytest.mark.parametrize("kind", VOLUMES)
def test_segment(benchmark, kind: str, preset: str, tmp_path: Path) -> None:
    shape = SETTINGS.volume_shape(kind)
    source = find_cases(phantom_dataset(kind, shape, 1, tmp_path))[0]
    segmenter = random_segmenter(preset, kind, device=DEVICE, batch=SETTINGS.segment_batch)
    out = tmp_path / "mask.nii.gz"
    stages = segment_stages(source, segmenter, out).seconds
    benchmark.group = f"segment {kind}"
    benchmark.extra_info.update(
        kind=kind,
        shape=list(shape),
        preset=preset,
        precision=segmenter.precision,
        stages=stages,
        shares={k: v / sum(stages.values()) for k, v in stages.items()},
    )
    benchmark.pedantic(
        lambda: (segmenter.predict(source).save(out), sync()), rounds=SETTINGS.repeats, warmup_rounds=SETTINGS.warmup
    )
