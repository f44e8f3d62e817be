"""The out-of-distribution phantom generator (tests/ood_phantoms.py) itself: determinism, geometry, contrast,
units and backgrounds as promised. No model is run here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ood_phantoms import (
    LESION_SHAPES,
    MODALITIES,
    OODCase,
    ood_case,
    ood_ctp_case,
    ood_mri_case,
)

MRI_SEEDS = range(8)
CTP_SEEDS = range(6)
# Tissue varies by a smooth field of up to +-12 %, so a lesion's ratio to the median tissue can be off by that.
FIELD = 1.15


@pytest.fixture(scope="module")
def mri_cases() -> list[OODCase]:
    return [ood_mri_case(s) for s in MRI_SEEDS]


@pytest.fixture(scope="module")
def ctp_cases() -> list[OODCase]:
    return [ood_ctp_case(s) for s in CTP_SEEDS]


def _median(image: np.ndarray, where: np.ndarray) -> float:
    return float(np.median(image[where]))


@pytest.mark.parametrize("kind", ["mri", "ctp"])
def test_same_seed_same_case_other_seed_other_case(kind: str) -> None:
    a, b, c = ood_case(kind, 3), ood_case(kind, 3), ood_case(kind, 4)
    assert a.info == b.info and a.case_id == f"ood-{kind}-0003"
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.affine, b.affine)
    for name in MODALITIES[kind]:
        np.testing.assert_array_equal(a.images[name], b.images[name])
    assert a.info != c.info


def test_bad_kind_or_seed_raises() -> None:
    with pytest.raises(ValueError, match="kind"):
        ood_case("pet", 0)
    with pytest.raises(ValueError, match="seed"):
        ood_mri_case(-1)


def test_shares_no_code_with_the_training_generator() -> None:
    source = (Path(__file__).parent / "ood_phantoms.py").read_text(encoding="utf-8")
    assert "import mdanet_sdk" not in source and "from mdanet_sdk" not in source


@pytest.mark.parametrize("kind", ["mri", "ctp"])
def test_arrays_types_and_affine(kind: str, mri_cases, ctp_cases) -> None:
    for case in mri_cases if kind == "mri" else ctp_cases:
        assert tuple(case.images) == MODALITIES[kind]
        assert all(v.dtype == np.float32 and v.shape == case.shape for v in case.images.values())
        assert case.label.dtype == np.uint8 and set(np.unique(case.label)) == {0, 1}
        # Canonical RAS: a positive diagonal holding the spacing.
        np.testing.assert_allclose(np.diag(case.affine)[:3], case.spacing)
        assert np.count_nonzero(case.affine[:3, :3] - np.diag(np.diag(case.affine)[:3])) == 0
        assert case.voxel_volume_ml == pytest.approx(np.prod(case.spacing) / 1000)


def test_mri_geometry(mri_cases) -> None:
    for case in mri_cases:
        sx, sy, sz = case.spacing
        assert 1.5 <= sx == sy <= 3.0 and 2.0 <= sz <= 5.0
        assert all(96 <= n <= 160 for n in case.shape[:2])
        head = case.masks["head"]
        # The whole head fits in the grid: no head voxel on any face.
        for axis in range(3):
            assert not head.take(0, axis).any() and not head.take(-1, axis).any()
        assert not (case.masks["skull"] & case.masks["brain"]).any()
    assert any(c.info["skull"] for c in mri_cases) and not all(c.info["skull"] for c in mri_cases)


def test_mri_lesions_only_in_tissue(mri_cases) -> None:
    for case in mri_cases:
        lesion = case.label.astype(bool)
        assert lesion.any()
        assert not (lesion & ~case.masks["tissue"]).any()
        assert not (lesion & case.masks["csf"]).any()
        for entry in case.info["lesions"]:
            assert entry["shape"] in LESION_SHAPES
            assert 3 * case.spacing[0] - 1e-6 <= entry["diameter_mm"] <= 30.0


def test_mri_contrast_and_units(mri_cases) -> None:
    for case in mri_cases:
        dwi, adc, lesion = case.images["dwi"], case.images["adc"], case.label.astype(bool)
        normal = case.masks["tissue"] & ~lesion
        d_t, a_t = _median(dwi, normal), _median(adc, normal)
        assert 1.5 / FIELD <= _median(dwi, lesion) / d_t <= 2.5 * FIELD
        assert 0.45 / FIELD <= _median(adc, lesion) / a_t <= 0.7 * FIELD
        # Ventricles: dark in DWI, ADC about 3x tissue.
        assert _median(dwi, case.masks["csf"]) < 0.6 * d_t
        assert 2.5 <= _median(adc, case.masks["csf"]) / a_t <= 3.5
        # The ADC unit is what info says: tissue ~0.7-1.0e-3 mm^2/s.
        assert 0.6e-3 <= a_t * case.info["adc_unit"] <= 1.1e-3
        assert d_t == pytest.approx(case.info["dwi_tissue"], rel=0.15)
    assert {c.info["adc_unit"] for c in mri_cases} == {1e-3, 1e-6}
    scales = [c.info["dwi_tissue"] for c in mri_cases]
    assert min(scales) >= 1.0 and max(scales) <= 5000.0 and max(scales) / min(scales) > 10


def test_mri_backgrounds(mri_cases) -> None:
    assert {c.info["background"] for c in mri_cases} == {"zero", "noisy"}
    for case in mri_cases:
        outside = ~case.masks["head"]
        for name, tissue in (("dwi", case.info["dwi_tissue"]), ("adc", case.info["adc_tissue"])):
            background = case.images[name][outside]
            if case.info["background"] == "zero":
                assert not background.any()
            else:  # Rayleigh noise of 2-5 % of tissue: mean = sigma * sqrt(pi / 2)
                assert np.count_nonzero(background) > 0.99 * background.size
                assert 0.02 <= background.mean() / tissue / np.sqrt(np.pi / 2) <= 0.05 * 1.05


def test_ctp_geometry_and_zero_outside_head(ctp_cases) -> None:
    for case in ctp_cases:
        assert case.shape == (256, 256, 8)
        sx, sy, sz = case.spacing
        assert 0.85 <= sx == sy <= 1.05 and 4.5 <= sz <= 5.5
        outside = ~case.masks["head"]
        assert outside.any() and all(not image[outside].any() for image in case.images.values())
        core, penumbra = case.label.astype(bool), case.masks["penumbra"]
        assert core.any() and penumbra.any()
        assert not (core & ~case.masks["tissue"]).any() and not (core & penumbra).any()


def _physical(case: OODCase) -> dict[str, np.ndarray]:
    """The maps in ml/100g/min, ml/100g and s, undoing the case's drawn gains."""
    return {name: image / case.info[f"{name}_gain"] for name, image in case.images.items()}


def test_ctp_core_penumbra_and_csf_values(ctp_cases) -> None:
    for case in ctp_cases:
        maps, core, penumbra = _physical(case), case.label.astype(bool), case.masks["penumbra"]
        normal = case.masks["tissue"] & ~core & ~penumbra
        cbf, cbv = _median(maps["cbf"], normal), _median(maps["cbv"], normal)
        assert 40 <= cbf <= 60 and 3.2 <= cbv <= 4.8 and 0.6 <= _median(maps["tmax"], normal) <= 1.5
        assert 10 - 0.1 <= _median(maps["tmax"], core) <= 12 + 0.1
        assert 6 - 0.1 <= _median(maps["tmax"], penumbra) <= 8 + 0.1
        assert 0.2 / FIELD <= _median(maps["cbf"], core) / cbf <= 0.3 * FIELD
        assert 0.35 / FIELD <= _median(maps["cbv"], core) / cbv <= 0.5 * FIELD
        assert 0.6 / FIELD <= _median(maps["cbf"], penumbra) / cbf <= 0.8 * FIELD
        assert 0.95 / FIELD <= _median(maps["cbv"], penumbra) / cbv <= 1.08 * FIELD
        # Central volume principle in normal tissue; CSF is not perfused.
        mtt = 60 * maps["cbv"][normal] / maps["cbf"][normal]
        assert np.median(maps["mtt"][normal] / mtt) == pytest.approx(1.0, abs=0.1)
        for name in ("cbf", "cbv", "mtt", "tmax"):
            assert _median(maps[name], case.masks["csf"]) < 0.05 * _median(maps[name], normal)


def test_ctp_unit_variants(ctp_cases) -> None:
    more = ctp_cases + [ood_ctp_case(s) for s in range(len(CTP_SEEDS), 10)]
    assert {c.info["tmax_unit"] for c in more} == {"s", "ms"}
    assert len({c.info["cbf_gain"] for c in more}) > 1
