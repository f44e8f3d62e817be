"""Tests of mdanet_sdk.data.preprocess: normalisation, model grid, and the exact inverse mapping."""

from __future__ import annotations

import numpy as np
import pytest

from mdanet_sdk.data.phantom import make_phantom
from mdanet_sdk.data.preprocess import (
    MAX_SLICES,
    PreprocessConfig,
    SliceGeometry,
    head_mask,
    normalize,
    preprocess_case,
    preprocess_images,
    preprocess_label,
    restore,
    restore_probability,
    restore_probability_into,
    slice_stack,
)
from mdanet_sdk.errors import InputError
from mdanet_sdk.metrics import dsc

MRI = ("dwi", "adc")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def phantom():
    """An ISLES'22-like phantom on a grid that is not a multiple of 16 and not square."""
    return make_phantom("isles22", 7, shape=(52, 44, 10), pattern="multiple")


# (native shape, size) → (model grid H, W, resampled in-plane (h, w))
GRIDS = [
    ((52, 44, 10), None, (64, 48), (52, 44)),  # pad only
    ((64, 64, 3), None, (64, 64), (64, 64)),  # nothing to do
    ((52, 44, 10), 64, (64, 64), (64, 54)),  # enlarge, keep aspect
    ((100, 90, 4), 128, (128, 128), (128, 115)),
    ((256, 256, 2), 128, (128, 128), (128, 128)),  # shrink
    ((40, 40, 2), 50, (64, 64), (50, 50)),  # size not a multiple of 16
]


@pytest.mark.parametrize("shape, size, padded, resampled", GRIDS)
def test_model_grid(shape, size, padded, resampled) -> None:
    images = {m: np.random.default_rng(0).random(shape, dtype=np.float32) for m in MRI}
    slices, geom = preprocess_images(images, MRI, PreprocessConfig(size=size))
    assert slices.shape == (shape[2], 2, *padded) and slices.dtype == np.float32
    assert geom.native_shape == shape and geom.resampled == resampled and geom.padded == padded
    assert geom.resamples == (resampled != shape[:2])
    top, left = geom.offset
    assert top == (padded[0] - resampled[0]) // 2 and left == (padded[1] - resampled[1]) // 2


def test_label_round_trip_is_identical_without_resampling(phantom) -> None:
    _, geom = preprocess_images(phantom.images, MRI, PreprocessConfig())
    slices = preprocess_label(phantom.label, geom)
    assert slices.shape == (10, 64, 48) and slices.dtype == np.uint8 and slices.sum() == phantom.label.sum()
    assert np.array_equal(restore(slices, geom), phantom.label)
    assert np.array_equal(restore(slices.astype(np.float32), geom), phantom.label.astype(np.float32))


@pytest.mark.parametrize("size", [64, 80, 112])
def test_label_round_trip_with_resampling(phantom, size) -> None:
    _, geom = preprocess_images(phantom.images, MRI, PreprocessConfig(size=size))
    assert geom.resamples
    slices = preprocess_label(phantom.label, geom)
    back = restore(slices, geom)  # nearest
    assert back.shape == phantom.label.shape and back.dtype == np.uint8
    assert dice(back, phantom.label) >= 0.99
    probability = restore(slices.astype(np.float32), geom)  # linear, as for probability maps
    assert probability.dtype == np.float32 and dice(probability >= 0.5, phantom.label) >= 0.99


def test_restore_puts_every_pixel_back_in_place() -> None:
    """A single-voxel label in a corner lands on the same voxel after an enlarging round trip."""
    label = np.zeros((37, 29, 3), np.uint8)
    label[1, 27, 2] = label[35, 0, 0] = 1
    _, geom = preprocess_images({"dwi": np.ones((37, 29, 3), np.float32)}, ["dwi"], PreprocessConfig(size=96))
    assert np.array_equal(restore(preprocess_label(label, geom), geom), label)


def test_restore_of_a_smooth_image_matches_the_image(phantom) -> None:
    """Images go to the model grid and back with linear interpolation: a smooth field survives."""
    x, y = np.meshgrid(np.arange(52), np.arange(44), indexing="ij")
    smooth = np.repeat((np.sin(x / 6.0) + np.cos(y / 5.0))[..., None], 10, axis=2).astype(np.float32)
    cfg = PreprocessConfig(size=80, clip_percentiles=(0, 100), normalization="zscore")
    slices, geom = preprocess_images({"dwi": smooth}, ["dwi"], cfg)
    back = restore(slices[:, 0], geom)
    assert np.corrcoef(back[2:-2, 2:-2].ravel(), smooth[2:-2, 2:-2].ravel())[0, 1] > 0.999


def test_normalisation_ignores_gain_and_units(phantom) -> None:
    cfg = PreprocessConfig(size=64)
    a, _ = preprocess_images(phantom.images, MRI, cfg)
    scaled = {"dwi": phantom.images["dwi"] * 37.0, "adc": phantom.images["adc"] * 1000.0}
    b, _ = preprocess_images(scaled, MRI, cfg)
    assert np.allclose(a, b, atol=1e-4)


def test_relative_normalisation_puts_tissue_at_0_and_the_outside_at_minus_1(phantom) -> None:
    slices, geom = preprocess_images(phantom.images, MRI, PreprocessConfig())
    for c, m in enumerate(MRI):
        volume = restore(slices[:, c], geom)
        reference = np.median(phantom.images[m][geom.head & (phantom.images[m] > 0)])
        inside = geom.head & (phantom.images[m] > 0)
        np.testing.assert_allclose(
            volume[inside], np.minimum(phantom.images[m][inside] / reference, 11.0) - 1.0, rtol=1e-5, atol=1e-5
        )
        assert np.all(volume[~geom.head] == -1.0) and abs(np.median(volume[inside])) < 1e-6
    # A map with negative values (CT in HU, a z-scored input) is not a ratio scale: z-scores instead.
    hu = -phantom.images["dwi"]
    z, geom = preprocess_images({"dwi": hu}, ["dwi"], PreprocessConfig())
    assert abs(np.median(restore(z[:, 0], geom)[geom.head])) < 1e-5


def test_noise_around_zero_keeps_a_ratio_scale() -> None:
    from mdanet_sdk.data.normalize import not_a_ratio_scale

    rng = np.random.default_rng(0)
    tissue = rng.normal(40.0, 4.0, 9000)
    for share, sigma, expected in ((0.2, 2.0, False), (0.2, 8.0, False), (0.2, 25.0, True), (0.04, 60.0, False)):
        n = int(share * tissue.size / (1 - share))
        noise = rng.normal(0.0, sigma, n)  # CSF and air of a map not clipped at 0: about half negative
        assert not_a_ratio_scale(np.concatenate([tissue, noise])) is expected, (share, sigma)
    assert not_a_ratio_scale(rng.normal(0.0, 1.0, 9000))  # a z-scored map
    assert not_a_ratio_scale(np.concatenate([tissue, np.full(3000, -1024.0)]))  # air in HU
    assert not_a_ratio_scale(np.zeros(100)) and not not_a_ratio_scale(tissue)


def test_perfusion_tissue_values_come_from_the_half_that_is_not_delayed() -> None:
    import torch

    from mdanet_sdk.pipeline.intensity import perfused_half

    x = np.arange(40)[:, None, None] * np.ones((40, 30, 4))
    head = torch.ones((40, 30, 4), dtype=torch.bool)
    # 90 % delayed: no healthy half; 70 and 60 %: the left half; 35 and 0 %: the head's median is healthy already
    for delayed_from, expected in ((4, None), (12, "left"), (16, "left"), (26, None), (40, None)):
        tmax = torch.from_numpy(np.where(x >= delayed_from, 7.5, 1.0).astype(np.float32))
        maps = [torch.full_like(tmax, 50.0), torch.full_like(tmax, 4.0), tmax * 2, tmax]
        region = perfused_half(maps, ["cbf", "cbv", "mtt", "tmax"], head)
        if expected is None:
            assert region is None, delayed_from
        else:
            assert region is not None and region[:20].all() and not region[20:].any(), delayed_from
    assert perfused_half(maps[:3], ["cbf", "cbv", "cbv2"], head) is None  # no transit time: the whole head


def test_robust_z_score_inside_the_head(phantom) -> None:
    cfg = PreprocessConfig(normalization="zscore")
    slices, geom = preprocess_images(phantom.images, MRI, cfg)
    mask = head_mask([phantom.images[m] for m in MRI])
    assert np.array_equal(mask, phantom.masks["brain"])  # skull-stripped: the head is the brain
    for c, m in enumerate(MRI):
        volume = restore(slices[:, c], geom)
        inside = volume[mask]
        q25, median, q75 = np.percentile(inside, [25, 50, 75])
        assert abs(median) < 1e-5 and (q75 - q25) / 1.349 == pytest.approx(1.0, abs=1e-4)
        low, high = np.percentile(phantom.images[m][mask], cfg.clip_percentiles)
        scale = (np.percentile(phantom.images[m][mask], 75) - np.percentile(phantom.images[m][mask], 25)) / 1.349
        assert inside.max() == pytest.approx((high - np.median(phantom.images[m][mask])) / scale, rel=1e-4)
        # Background (and the padding) are the clipped low end: the channel's minimum.
        assert np.allclose(volume[~mask], volume.min()) and volume.min() == pytest.approx(
            (low - np.median(phantom.images[m][mask])) / scale, rel=1e-4
        )
        assert np.allclose(slices[:, c, :, geom.padded[1] - 1], volume.min())


def test_head_mask_finds_a_non_zero_background() -> None:
    ct = np.full((30, 30, 4), -1000.0, np.float32)
    ct[5:25, 8:22] = 35.0
    mask = head_mask([ct])
    assert mask.sum() == 20 * 14 * 4 and mask[10, 10, 0] and not mask[0, 0, 0]
    assert head_mask([np.zeros((8, 8, 2), np.float32)]).all()  # nothing to find: use every voxel
    flat = normalize(np.full((4, 4), 3.0), np.ones((4, 4), bool))
    assert np.array_equal(flat, np.zeros((4, 4), np.float32))  # zero spread: no division by zero


def test_preprocess_case_and_geometry_dict(phantom) -> None:
    slices, label, geom = preprocess_case(phantom, MRI, PreprocessConfig(size=64))
    assert slices.shape == (10, 2, 64, 64) and label.shape == (10, 64, 64)
    assert isinstance(geom, SliceGeometry) and geom.to_dict()["padded"] == [64, 64]
    assert geom.slices_shape == (10, 64, 64)


def test_config_round_trip_and_validation() -> None:
    cfg = PreprocessConfig(size=128, multiple=32, clip_percentiles=(1, 99))
    d = cfg.to_dict()
    assert d == {
        "size": 128,
        "multiple": 32,
        "clip_percentiles": [1.0, 99.0],
        "normalization": "relative",
        "head_fill": 0.5,
    }
    assert PreprocessConfig.from_dict(d) == cfg
    legacy = {k: v for k, v in d.items() if k not in ("normalization", "head_fill")}  # written before the fields
    assert PreprocessConfig.from_dict(legacy).normalization == "zscore"
    assert PreprocessConfig.from_dict(legacy).head_fill == 0.0
    with pytest.raises(InputError, match="newer"):
        PreprocessConfig.from_dict({**d, "spacing": 1.0})
    for bad in (
        {"size": 0},
        {"size": 12.5},
        {"multiple": 0},
        {"clip_percentiles": (50, 10)},
        {"clip_percentiles": (1,)},
        {"normalization": "minmax"},
        {"head_fill": 0.95},
        {"head_fill": -0.1},
        {"head_fill": 1e-17},
        {"head_fill": True},
        {"head_fill": "0.5"},
    ):
        with pytest.raises(InputError):
            PreprocessConfig(**bad)


def test_errors_name_the_problem(phantom) -> None:
    with pytest.raises(InputError, match="'tmax'"):
        preprocess_images(phantom.images, ["dwi", "tmax"], PreprocessConfig())
    with pytest.raises(InputError, match="one grid"):
        preprocess_images({"dwi": np.ones((8, 8, 2)), "adc": np.ones((8, 9, 2))}, MRI, PreprocessConfig())
    with pytest.raises(InputError, match="no modalities"):
        preprocess_images(phantom.images, [], PreprocessConfig())
    _, geom = preprocess_images(phantom.images, MRI, PreprocessConfig())
    with pytest.raises(InputError, match="do not match"):
        restore(np.zeros((10, 48, 64), np.float32), geom)
    with pytest.raises(InputError, match="does not match"):
        preprocess_label(np.zeros((52, 44, 9), np.uint8), geom)


@pytest.mark.parametrize("size", [None, 64])
def test_slice_stack_chunks_are_the_whole_stack_bit_for_bit(phantom, size) -> None:
    """The Segmenter makes model-grid slices chunk by chunk; resampling and padding per chunk must not change
    a bit (padded only: 52x44 → 64x48; resampled: → 64x54, padded to 64x64)."""
    cfg = PreprocessConfig(size=size)
    whole, geom = preprocess_images(phantom.images, MRI, cfg)
    stack = slice_stack(phantom.images, MRI, cfg)
    assert stack.shape == whole.shape and len(stack) == 10 and stack.geometry == geom
    chunks = [stack.chunk(a, min(a + 3, 10)) for a in range(0, 10, 3)]
    assert all(c.dtype == np.float32 and c.flags.c_contiguous for c in chunks)
    assert np.array_equal(np.concatenate(chunks), whole)
    assert stack.chunk(4, 4).shape == (0, 2, *geom.padded)
    with pytest.raises(InputError, match="outside this case's 10 slices"):
        stack.chunk(8, 11)


@pytest.mark.parametrize("size", [None, 64])
def test_probability_restores_range_by_range_as_a_whole(phantom, size) -> None:
    _, geom = preprocess_images(phantom.images, MRI, PreprocessConfig(size=size))
    probability = np.random.default_rng(1).uniform(-0.2, 1.2, geom.slices_shape).astype(np.float32)
    whole = restore_probability(probability, geom)
    out = np.full(geom.native_shape, np.nan, np.float32)
    for start, end in ((0, 4), (4, 5), (5, 10)):
        assert restore_probability_into(out, probability[start:end], geom, start) is out
    assert np.array_equal(out, whole) and 0.0 <= whole.min() and whole.max() <= 1.0
    assert whole[~geom.lesion_support].max() == 0.0
    with pytest.raises(InputError, match="from slice 8 do not match"):
        restore_probability_into(out, probability[:3], geom, 8)
    with pytest.raises(InputError, match="do not match"):
        restore_probability_into(out, probability[:3, :16], geom, 0)


def test_more_than_max_slices_is_refused() -> None:
    images = {"dwi": np.random.default_rng(0).random((4, 4, MAX_SLICES + 1), dtype=np.float32)}
    with pytest.raises(
        InputError,
        match=rf"\(4, 4, {MAX_SLICES + 1}\) holds {MAX_SLICES + 1} slices along its "
        "slicing axis Z.*crop or resample it",
    ):
        slice_stack(images, ["dwi"], PreprocessConfig())
    with pytest.raises(InputError, match=f"{MAX_SLICES + 1} slices"):
        preprocess_images(images, ["dwi"], PreprocessConfig())
    images = {"dwi": images["dwi"][..., :MAX_SLICES]}
    assert preprocess_images(images, ["dwi"], PreprocessConfig())[0].shape == (MAX_SLICES, 1, 16, 16)


@pytest.mark.parametrize("size", [82, 64])
def test_a_wide_field_of_view_is_cropped_around_the_head_and_restored_in_place(phantom, size) -> None:
    """A head in a field of view 3x wider (zero-filled) goes onto the model grid as its box only; restoring puts
    the box back in place, 0 outside it, and labels round-trip exactly where nothing is resampled."""
    pad = ((52, 52), (44, 44), (0, 0))
    images = {m: np.pad(phantom.images[m], pad) for m in MRI}
    label = np.pad(phantom.label, pad)
    slices, geom = preprocess_images(images, MRI, PreprocessConfig(size=size))
    # The head spans x 59..98 and y 45..85 (41 voxels): a box of side ceil(41 / 0.5) = 82 around it.
    assert geom.native_shape == (156, 132, 10) and geom.box == (38, 120, 24, 106)
    assert slices.shape == ((10, 2, 96, 96) if size == 82 else (10, 2, 64, 64))
    restored = restore(preprocess_label(label, geom), geom)
    # Resampled to 64: the 56-voxel label keeps Dice 0.85 through the round trip (0.64 from the whole 156 x 132).
    assert np.array_equal(restored, label) if size == 82 else dsc(restored, label) > 0.8
    probability = restore_probability(np.ones(geom.slices_shape, np.float32), geom)
    assert probability[:38].max() == 0 and probability[120:].max() == 0 and probability[:, :24].max() == 0
    assert probability[38:120, 24:106].max() == 1
    for cfg in (PreprocessConfig(size=size, head_fill=0.0), PreprocessConfig(size=None), PreprocessConfig(size=128)):
        # 0: never crop, as checkpoints written before head_fill; no resampling: the stored voxels whatever the
        # field of view; a box of fewer voxels than the model grid (82 < 128) would magnify them: cropped to 128.
        _, other = preprocess_images(images, MRI, cfg)
        assert other.box == ((15, 143, 1, 129) if cfg.size == 128 else (0, 156, 0, 132))
