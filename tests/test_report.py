"""Tests of mdanet_sdk.report: lesion statistics, JSON report, table and overlay PNG."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from matplotlib.image import imread
from rich.console import Console

from mdanet_sdk.errors import InputError
from mdanet_sdk.report import CaseReport, format_slices, lesion_stats, report_table, save_overlay, write_json_report


def _mask() -> np.ndarray:
    """(10, 12, 8) mask: lesion A of 8 voxels + one diagonal (26-connected) voxel, lesion B of 2 voxels."""
    m = np.zeros((10, 12, 8), np.uint8)
    m[2:4, 2:4, 2:4] = 1  # 8 voxels on z = 2, 3
    m[4, 4, 4] = 1  # touches (3, 3, 3) by a corner only: same lesion with 26-connectivity
    m[8, 10, 6:8] = 1  # 2 voxels on z = 6, 7
    return m


def _report(case_id: str = "case_1", **changes) -> CaseReport:
    fields = dict(
        case_id=case_id,
        lesion_volume_ml=0.088,
        n_lesions=2,
        largest_lesion_ml=0.072,
        slices=[2, 3, 4, 6, 7],
        shape=(10, 12, 8),
        voxel_size_mm=(2.0, 2.0, 2.0),
        runtime_s=1.23456,
        device="cpu",
        precision="fp32",
        model="default-mri",
        model_version="0.1.0",
        modalities=("dwi", "adc"),
        threshold=0.5,
        min_size=0,
        tta=False,
    )
    fields.update(changes)
    return CaseReport(**fields)


def test_lesion_stats_counts_26_connected_lesions_and_volumes() -> None:
    stats = lesion_stats(_mask(), voxel_volume_ml=0.008)  # 2 mm isotropic
    assert stats["n_lesions"] == 2
    assert stats["lesion_volume_ml"] == pytest.approx(11 * 0.008)
    assert stats["largest_lesion_ml"] == pytest.approx(9 * 0.008)
    assert stats["slices"] == [2, 3, 4, 6, 7]


def test_lesion_stats_of_an_empty_mask_is_zero() -> None:
    stats = lesion_stats(np.zeros((4, 4, 4), np.uint8), 0.001)
    assert stats == {"lesion_volume_ml": 0.0, "n_lesions": 0, "largest_lesion_ml": 0.0, "slices": []}


def test_lesion_stats_refuses_2d() -> None:
    with pytest.raises(InputError, match="3D"):
        lesion_stats(np.zeros((4, 4), np.uint8), 0.001)


@pytest.mark.parametrize(
    ("slices", "text"), [([], "none"), ([5], "5"), ([3, 4, 5, 9], "3-5, 9"), ([1, 3, 4], "1, 3-4")]
)
def test_format_slices(slices, text) -> None:
    assert format_slices(slices) == text


def test_json_report_round_trip_leaves_no_temporary_file(tmp_path) -> None:
    path = write_json_report([_report()], tmp_path / "out" / "report.json", failed={"case_2": "no adc image"})
    doc = json.loads(path.read_text())
    assert doc["cases"][0]["case_id"] == "case_1"
    assert doc["cases"][0]["runtime_s"] == 1.235
    assert doc["cases"][0]["modalities"] == ["dwi", "adc"]
    assert doc["failed"] == [{"case": "case_2", "error": "no adc image"}]
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's owner-only 0600


def test_a_case_of_a_written_report_reads_back_and_anything_else_is_refused() -> None:
    entry = json.loads(json.dumps(_report(weights_sha256=["ab12", None]).to_dict()))
    back = CaseReport.from_dict(entry)
    assert back.to_dict() == entry and back.shape == (10, 12, 8)
    assert back.made_with == _report(weights_sha256=["ab12", None]).made_with != _report().made_with
    for key, value in [
        ("n_lesions", "lots"),
        ("n_lesions", 2.5),
        ("slices", "abc"),
        ("shape", "abc"),
        ("voxel_size_mm", [1.0, 2.0]),
        ("lesion_volume_ml", True),
        ("lesion_volume_ml", float("nan")),
        ("warnings", {"a": 1}),
        ("device", [1, 2]),
        ("tta", 1),
        ("weights_sha256", [3]),
    ]:
        with pytest.raises(InputError, match=f"its {key} is"):
            CaseReport.from_dict({**entry, key: value})
    with pytest.raises(InputError, match="not a case"):
        CaseReport.from_dict({"case_id": "a"})


def test_table_lists_each_case() -> None:
    console = Console(record=True, width=120)
    console.print(report_table([_report("case_1"), _report("case_7", lesion_volume_ml=12.5, slices=[])]))
    text = console.export_text()
    assert "case_1" in text and "0.09" in text and "2-4, 6-7" in text
    assert "case_7" in text and "12.50" in text and "none" in text
    assert "default-mri" in text and "cpu" in text


def _red_pixels(png) -> int:
    rgb = imread(png)[..., :3]
    return int(((rgb[..., 0] > 0.8) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)).sum())


def test_overlay_outlines_the_lesion(tmp_path) -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(1, 2, (40, 48, 10)).astype(np.float32)
    mask = np.zeros(image.shape, np.uint8)
    mask[10:25, 15:30, 3:6] = 1
    png = save_overlay(image, mask, tmp_path / "o.png", zooms=(1.0, 1.0, 2.0), title="case_1")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # 3 lesion slices -> one row of 3 panels (wider than tall); red outline drawn.
    height, width = imread(png).shape[:2]
    assert width > 2 * height
    assert _red_pixels(png) > 50
    empty = save_overlay(image, np.zeros_like(mask), tmp_path / "e.png")
    assert _red_pixels(empty) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.png", "o.png"]


def test_overlay_refuses_bad_shapes_and_names(tmp_path) -> None:
    with pytest.raises(InputError, match="equal 3D shapes"):
        save_overlay(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), tmp_path / "o.png")
    with pytest.raises(InputError, match=".png"):
        save_overlay(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), tmp_path / "o.jpg")
