"""Inputs unlike the training phantom: head mask, normalisation, lesions only in the head, warnings, the
domain-randomised phantom and the intensity augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ood_phantoms import ood_case
from ood_variants import inside_the_head
from scipy import ndimage

from mdanet_sdk.data.augment import IntensityAugmentation
from mdanet_sdk.data.phantom import make_phantom
from mdanet_sdk.data.preprocess import (
    PreprocessConfig,
    head_support,
    preprocess_images,
    restore,
    restore_probability,
)
from mdanet_sdk.errors import InputError
from mdanet_sdk.pipeline import intensity

MRI = ("dwi", "adc")


def _ellipsoid_case(seed: int, background: str = "zero", dwi_scale: float = 100.0, adc_scale: float = 1.0):
    """A brain ellipsoid with one lesion (DWI 2×, ADC 0.55×): not the training generator."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(np.arange(96) - 48.0, np.arange(96) - 48.0, np.arange(24) - 12.0, indexing="ij")
    brain = (x / 36) ** 2 + (y / 42) ** 2 + (z / 11) ** 2 < 1
    lesion = ((x - 15) / 6) ** 2 + ((y + 5) / 7) ** 2 + (z / 3) ** 2 < 1
    tissue = 1.0 + 0.08 * rng.standard_normal(brain.shape)
    dwi = np.where(brain, tissue * np.where(lesion, 2.0, 1.0), 0.0) * dwi_scale
    adc = np.where(brain, tissue * np.where(lesion, 0.55, 1.0), 0.0) * 0.8 * adc_scale
    if background == "noise":
        sigma = 0.04 * dwi_scale
        dwi = np.hypot(dwi + sigma * rng.standard_normal(brain.shape), sigma * rng.standard_normal(brain.shape))
    return {"dwi": dwi.astype(np.float32), "adc": adc.astype(np.float32)}, brain, lesion


@pytest.mark.parametrize("background", ["zero", "noise"])
def test_head_support_is_the_brain_whatever_the_background(background) -> None:
    images, brain, _ = _ellipsoid_case(0, background)
    mask, noisy = head_support([images[m] for m in MRI])
    assert (mask & brain).sum() / (mask | brain).sum() > 0.99
    assert noisy == (background == "noise")


@pytest.mark.parametrize("background", ["zero", "noise"])
def test_a_scan_zero_filled_into_a_larger_grid_keeps_its_head_mask(background) -> None:
    """A scan resampled onto a larger grid and zero-filled around its field of view (a registration's output):
    the noise of an MRI that is not skull-stripped used to become head, a square of it (Dice 0 downstream)."""
    images, brain, _ = _ellipsoid_case(3, background)
    frame = ((40, 24), (30, 50), (3, 5))  # registrations fill whole slices too
    wide = [np.pad(images[m], frame) for m in MRI]
    expected, noisy = head_support([images[m] for m in MRI])
    mask, wide_noisy = head_support(wide)
    assert np.array_equal(mask, np.pad(expected, frame)) and wide_noisy == noisy == (background == "noise")
    assert (mask[40:136, 30:126, 3:27] & brain).sum() / (mask[40:136, 30:126, 3:27] | brain).sum() > 0.99
    # A skull-stripped head in zeros is its own field of view: its bounding box's border is mostly zeros.
    assert intensity.stored_field([torch.from_numpy(v) for v in wide]) == (
        [40, 136, 30, 126, 3, 27] if background == "noise" else [0, 160, 0, 176, 0, 32]
    )
    assert torch.jit.script(intensity.stored_field)([torch.from_numpy(v) for v in wide]) == (
        intensity.stored_field([torch.from_numpy(v) for v in wide])
    )
    # Tissue that fills its box (a perfusion map computed in a rectangle) is not a stored field of view: its
    # border lies far from the fill (the CSF-hole test below also holds the mask to it).
    roi = np.zeros((64, 64, 4), np.float32)
    roi[10:54, 12:52] = 50.0 + np.random.default_rng(0).normal(0, 5, (44, 40, 4))
    assert intensity.stored_field([torch.from_numpy(roi)]) == [0, 64, 0, 64, 0, 4]


@pytest.mark.parametrize("adc_background", ["salt", "fitted-noise"])
def test_an_adc_background_of_zeros_and_noise_does_not_become_head(adc_background) -> None:
    """Outside the head an ADC map is often half 0 (clipped negative fits) and half noise: its border's MAD is 0,
    so on its own it would call half the air head. The DWI's clean support decides; the warning is given."""
    images, brain, lesion = _ellipsoid_case(4, "noise")
    rng = np.random.default_rng(4)
    hit = rng.random(brain.shape) < 0.5
    values = 2.4 if adc_background == "salt" else rng.uniform(0.0, 3.0, brain.shape)
    images["adc"] = np.where(brain, images["adc"], np.where(hit, values, 0.0)).astype(np.float32)
    mask, noisy = head_support([images[m] for m in MRI])
    assert (mask & brain).sum() / (mask | brain).sum() > 0.99 and noisy
    slices, geom = preprocess_images(images, MRI, PreprocessConfig())
    adc = restore(slices[:, 1], geom)
    # Tissue is the reference (~0), the lesion 0.55× of it: the air did not enter the statistics.
    assert abs(np.median(adc[brain & ~lesion])) < 0.05 and abs(np.median(adc[lesion]) + 0.45) < 0.05


def _noisy_dwi(sigma: float, seed: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """A brain ellipsoid (tissue 100, 5 % texture) in Rician noise of ``sigma`` everywhere: DWI of SNR 100 / sigma."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(np.arange(96) - 48.0, np.arange(96) - 48.0, np.arange(16) - 8.0, indexing="ij")
    brain = (x / 36) ** 2 + (y / 42) ** 2 + (z / 9) ** 2 < 1
    tissue = np.where(brain, 100.0 * (1 + 0.05 * rng.standard_normal(brain.shape)), 0.0)
    dwi = np.hypot(tissue + sigma * rng.standard_normal(brain.shape), sigma * rng.standard_normal(brain.shape))
    return dwi.astype(np.float32), brain


def _tissue_level_noise(volume: torch.Tensor) -> tuple[float, float]:
    """The border's median and robust sigma, after asserting that the sigma reaches tissue level (over 5 % of the
    volume's 99.9th-percentile difference from that median: :func:`intensity.support`'s "tissue on the border")."""
    border = intensity._border(volume)
    middle = float(border.median())
    noise = 1.4826 * float((border - middle).abs().median())
    assert noise > 0.05 * float((volume - middle).abs().flatten().quantile(0.999))
    return middle, noise


@pytest.mark.parametrize("sigma", [10.0, 20.0])
def test_a_noisy_dwi_keeps_its_head_in_noisy_air(sigma) -> None:
    """Clinical DWI at b = 1000 can have an SNR of 5-10 in white matter. Its air's noise then reaches 5 % of the
    head's range, the level that meant "tissue on the border" and made the whole field head (IoU 0.38; the probe's
    10 % noise cases: Dice 0). The border is noise around 0, white, and the head stands above it: it is noise, and
    the head grows from its 8-sigma voxels into connected ones above 4 (at SNR 5 white matter lies under 8)."""
    dwi, brain = _noisy_dwi(sigma)
    volume = torch.from_numpy(dwi)
    _tissue_level_noise(volume)
    mask, noisy = head_support([dwi], ["dwi"])
    assert (mask & brain).sum() / (mask | brain).sum() > 0.99 and noisy
    assert torch.equal(torch.jit.script(intensity.support)(volume)[0], intensity.support(volume)[0])
    # The same head cut to its brain (the border is tissue, as noisy): the 1 % rule, the whole field.
    inner = torch.from_numpy(np.ascontiguousarray(dwi[24:-24, 24:-24, 5:11]))
    middle, noise = _tissue_level_noise(inner)
    found = (inner - middle).abs() > 8 * noise
    assert not intensity._border_is_noise(inner, found, middle, noise)
    assert intensity.support(inner)[0].float().mean() > 0.95


def test_a_bright_lesion_in_a_noisy_tissue_border_is_not_a_head_over_a_noise_floor() -> None:
    """A field of view inside a DWI of SNR 4 with a lesion of 3x tissue: only the lesion stands 8 sigmas out of the
    tissue border, so "a border under a third of what stands out is a noise floor (several coils' sum of squares)"
    made the lesion the head (0.016 of the field; tried and withdrawn, 2026-12-06); the whole field is head."""
    dwi, _ = _noisy_dwi(25.0)
    inner = torch.from_numpy(np.ascontiguousarray(dwi[24:-24, 24:-24, 5:11]))
    lesion = torch.zeros(inner.shape, dtype=torch.bool)
    lesion[20:28, 20:30, 2:5] = True
    found = intensity.support(torch.where(lesion, 3.0 * inner, inner))[0]
    assert found.float().mean() > 0.8  # 0.89: all but the voxels at the median's level


def test_a_border_at_tissue_level_is_noise_only_when_all_three_tests_say_so() -> None:
    """:func:`intensity._border_is_noise` on a noisy DWI, and on that DWI changed so that each test alone fails."""
    dwi, brain = _noisy_dwi(10.0)

    def verdict(volume: np.ndarray) -> bool:
        tensor = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
        middle, noise = _tissue_level_noise(tensor)
        return intensity._border_is_noise(tensor, (tensor - middle).abs() > 8 * noise, middle, noise)

    assert verdict(dwi)
    assert not verdict(dwi + 40.0)  # noise around a level 3.4 sigmas above 0: an offset, or several coils' sum
    field = ndimage.gaussian_filter(np.random.default_rng(1).standard_normal(dwi.shape), (3, 3, 0))
    smooth = 12.0 + 7.0 * field / field.std()  # the air's median and spread, varying smoothly as tissue does
    assert not verdict(np.where(brain, dwi, smooth))
    assert not verdict(-dwi)  # what stands out lies below the border's median: not a head above its air


def test_a_perfusion_map_cut_to_the_brain_is_not_read_as_noise() -> None:
    """A Tmax map's 0 is healthy tissue: cut to a box inside the brain, with white noise of ~1 s, its border is
    noise around 0 by every test, yet it is tissue. Perfusion maps skip the noise test (review, 2026-12-05: the
    head mask had shrunk to the lesion, Dice 0.044 against 0.985)."""
    rng = np.random.default_rng(3)
    shape = (64, 64, 6)
    tmax = np.abs(rng.normal(0.0, 1.0, shape))
    tmax[24:40, 24:40] += 10.0  # a core of Tmax 10 s, away from the border
    cbf = 50.0 * (1 + 0.1 * rng.standard_normal(shape))
    volumes = [cbf.astype(np.float32), tmax.astype(np.float32)]
    assert intensity.support(torch.from_numpy(volumes[1]), magnitude=True)[0].float().mean() < 0.1
    mask, _ = head_support(volumes, ["cbf", "tmax"])
    assert mask.mean() > 0.95  # the 1 % rule: the whole field but voxels at the median's level


@pytest.mark.parametrize(("kind", "seed", "share"), [("mri", 1, 0.6), ("ctp", 2, 0.7)])
def test_a_box_inside_the_head_is_head_everywhere(kind, seed, share) -> None:
    """A field of view (or a crop) smaller than the head: the slice border is 70 % (MRI) or all (CTP) tissue, and
    what stands out from it lies below it (lesion, CSF, air in the corners). The border was taken for background,
    so the head mask held the lesion's surroundings and CSF and missed every lesion voxel (Dice 0; revision 3)."""
    case = inside_the_head(ood_case(kind, seed), share)
    volumes = [case.images[name] for name in case.images]
    mask, noisy = head_support(volumes, list(case.images))
    assert mask.all() and not noisy
    scripted = torch.jit.script(intensity.head_support)
    assert scripted([torch.from_numpy(v) for v in volumes], list(case.images))[0].all()


@pytest.mark.parametrize("kind", ["mri", "ctp"])
def test_a_textured_background_brighter_than_tissue_in_adc_or_tmax_stays_background(kind) -> None:
    """Fitted noise can leave an ADC's air above tissue, deconvolution junk a Tmax's: what stands out from such a
    border lies below it too, yet it is background (review, 2026-12-05: with the tissue-border rule read from any
    map the whole field was head, Dice 0.939 → 0.003 and 0.983 → 0.000)."""
    case = ood_case(kind, 1)
    rng = np.random.default_rng(1)
    head = case.masks["head"]
    images = dict(case.images)
    if kind == "mri":
        tissue = float(np.median(images["adc"][case.masks["tissue"]]))
        images["adc"] = np.where(head, images["adc"], 3 * tissue * (1 + 0.06 * rng.standard_normal(head.shape)))
    else:
        images["tmax"] = np.where(head, images["tmax"], 12.0 + rng.standard_normal(head.shape))
        for name in ("cbf", "cbv"):
            tissue = float(np.median(images[name][head]))
            images[name] = np.where(head, images[name], np.abs(rng.normal(0.0, 0.15 * tissue, head.shape)))
    mask, _ = head_support([v.astype(np.float32) for v in images.values()], list(images))
    assert (mask & head).sum() / (mask | head).sum() > 0.9


def test_a_constant_border_brighter_than_the_head_is_still_background() -> None:
    """What stands out lies below such a border too, but a constant is a fill (vendor software), not tissue."""
    rng = np.random.default_rng(4)
    x, y, _ = np.meshgrid(np.arange(64) - 32.0, np.arange(64) - 32.0, np.arange(6), indexing="ij")
    brain = (x / 26) ** 2 + (y / 28) ** 2 < 1
    cbf = 50.0 * (1 + 0.05 * rng.standard_normal(brain.shape))
    mask, noisy = head_support([np.where(brain, cbf, 100.0).astype(np.float32)], ["cbf"])
    assert np.array_equal(mask, brain) and not noisy
    # The same air with texture is read as tissue: over half of what stands out (the head) lies below it.
    air = 100.0 * (1 + 0.05 * rng.standard_normal(brain.shape))
    assert head_support([np.where(brain, cbf, air).astype(np.float32)], ["cbf"])[0].all()


def _head_with_scalp(lesion_share: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """DWI and ADC of a brain (DWI 100, ADC 800, CSF 30 / 2400) in dark bone and a thick scalp (DWI 35, ADC 1200),
    with a lesion (DWI 200, ADC 400) filling ``lesion_share`` of the brain from one side; and brain, head masks."""
    rng = np.random.default_rng(5)
    x, y, z = np.meshgrid(np.arange(96) - 48.0, np.arange(96) - 48.0, np.arange(12) - 6.0, indexing="ij")
    r = np.sqrt((x / 30) ** 2 + (y / 36) ** 2)
    brain, bone, scalp = r < 1, (r >= 1.05) & (r < 1.2), (r >= 1.2) & (r < 1.55)
    csf = (np.abs(x) < 4) & (np.abs(y) < 14)
    lesion = brain & (x > 30 - 60 * lesion_share)
    dwi = np.select([lesion, csf, brain, bone, scalp], [200.0, 30.0, 100.0, 3.0, 35.0], 0.0)
    adc = np.select([lesion, csf, brain, bone, scalp], [400.0, 2400.0, 800.0, 240.0, 1200.0], 0.0)
    texture = 1 + 0.03 * rng.standard_normal(dwi.shape)
    return (dwi * texture).astype(np.float32), (adc * texture).astype(np.float32), brain, brain | bone | scalp


def test_tissue_values_of_a_head_with_skull_and_scalp_are_the_parenchymas() -> None:
    """Where skull and scalp make up half the head, its median DWI is the scalp's (0.35x the brain's) and its ADC is
    raised (1.5x): the brain's tissue was normalised to +1.9 in DWI, as bright as a lesion (an independent probe's
    heads with skull, scalp and neck: Dice 0.01-0.64). The references are now the parenchyma's."""
    dwi, adc, brain, head = _head_with_scalp()
    volumes = [torch.from_numpy(dwi), torch.from_numpy(adc)]
    mask = torch.from_numpy(head)
    region = intensity.reference_region(volumes, ["dwi", "adc"], mask)
    assert region is not None and torch.equal(
        region, torch.from_numpy(brain & (dwi > 50))
    )  # parenchyma: no CSF, bone or scalp
    normalised, _, parenchyma = intensity.normalize_volumes(volumes, mask, "relative", 0.5, 99.5, ["dwi", "adc"])
    assert parenchyma is not None and torch.equal(parenchyma, region)
    tissue = torch.from_numpy(brain & (dwi > 50) & (dwi < 150))
    assert normalised[0][tissue].median().abs() < 0.02 and normalised[1][tissue].median().abs() < 0.02
    scripted = torch.jit.script(intensity.normalize_volumes)
    assert torch.equal(scripted(volumes, mask, "relative", 0.5, 99.5, ["dwi", "adc"])[0], normalised)
    # Skull-stripped, the head's medians stay the references (as in training); so with a lesion of 40 % of it.
    for share in (0.0, 0.4):
        dwi, adc, brain, _ = _head_with_scalp(share)
        inside = torch.from_numpy(brain)
        stripped = [torch.from_numpy(np.where(brain, v, 0.0).astype(np.float32)) for v in (dwi, adc)]
        assert intensity.reference_region(stripped, ["dwi", "adc"], inside) is None
    # Perfusion maps have no DWI to find the parenchyma in: their references are the head's.
    assert intensity.reference_region(volumes, ["cbf", "tmax"], mask) is None


def test_perfusion_maps_with_zero_csf_keep_the_ventricles_in_the_head() -> None:
    cbf = np.zeros((64, 64, 4), np.float32)
    cbf[10:54, 12:52] = 50.0
    cbf[28:36, 24:40] = 0.0  # CSF: no perfusion
    mask, noisy = head_support([cbf], ["cbf"])
    assert mask[10:54, 12:52].all() and mask.sum() == 44 * 40 * 4 and not noisy


def test_perfusion_tissue_a_few_noise_sigmas_above_noisy_air_is_head() -> None:
    """Perfusion software can leave positive noise in the air. White matter (CBF 25) then lies only ~7 noise
    sigmas above it, under the 8 that make a voxel head by itself; connected to the cortex it is head (with the
    8-sigma rule alone the mask held the patchy cortex only, IoU 0.12). A blob as far above the air but not
    connected to the head stays out, as it would not with a plain 4-sigma threshold."""
    rng = np.random.default_rng(0)
    x, y, _ = np.meshgrid(np.arange(128) - 64.0, np.arange(128) - 64.0, np.arange(8), indexing="ij")
    r = (x / 50) ** 2 + (y / 58) ** 2
    brain = r < 1
    grey = brain & (r > 0.75) & (np.cos(5 * np.arctan2(y, x)) > 0)  # cortex in patches: white matter reaches out
    cbf = np.where(grey, 58.0, 25.0) * (1 + 0.05 * rng.standard_normal(brain.shape))
    air = np.abs(rng.normal(0.0, 5.0, brain.shape))
    blob = np.zeros_like(brain)
    blob[2:16, 2:16] = True  # 1568 voxels, 2 % of the head: not a speck
    volume = np.where(brain, cbf, np.where(blob, 20.0 + air / 5, air)).astype(np.float32)
    mask, noisy = head_support([volume], ["cbf"])
    assert (mask & brain).sum() / (mask | brain).sum() > 0.999 and noisy
    # Magnitude images (DWI) do not grow: 4-8 sigmas above their air lie scalp and partial volume.
    assert (head_support([volume], ["dwi"])[0] & brain).sum() / brain.sum() < 0.2
    found, _ = intensity.support(torch.from_numpy(volume), grow_sigmas=4.0)
    near = ndimage.binary_dilation(brain, iterations=2)  # the few noise voxels touching the head join it
    assert not found.numpy()[blob].any() and not (found.numpy() & ~near).any()  # before any speck removal
    plain, _ = intensity.support(torch.from_numpy(volume), seed_sigmas=4.0, grow_sigmas=4.0)
    assert plain.numpy()[blob].all()  # the blob does stand 4 sigmas out: only its isolation keeps it out
    # Without the noise nothing changes: the 1 % rule alone, the same mask.
    clean, clean_noisy = head_support([np.where(brain, cbf, 0.0).astype(np.float32)], ["cbf"])
    assert np.array_equal(clean, brain) and not clean_noisy


def test_transit_times_are_zero_where_no_blood_flows() -> None:
    """Deconvolution junk in bone (CBF and CBV 0, Tmax 14 s) looks like an infarct core; transit times are
    undefined without blood, so they become 0 before the relative normalisation. A core (CBF 25 %, CBV 40 %) and a
    severe one (CBF 5 %, CBV 30 %: only one map under 10 %) keep their Tmax of 11 s, and tissue its reference."""
    x, y, _ = np.meshgrid(np.arange(96) - 48.0, np.arange(96) - 48.0, np.arange(6), indexing="ij")
    r = (x / 36) ** 2 + (y / 40) ** 2
    brain, bone = r < 1, (r >= 1) & (r < 1.3)
    core = ((x - 12) / 8) ** 2 + (y / 8) ** 2 < 1
    severe = ((x + 12) / 6) ** 2 + (y / 6) ** 2 < 1
    maps = {
        "cbf": np.where(brain, np.where(core, 10.0, np.where(severe, 2.0, 40.0)), 0.0),
        "cbv": np.where(brain, np.where(core, 1.2, np.where(severe, 0.9, 3.0)), 0.0),
        "mtt": np.where(brain, np.where(core | severe, 7.0, 4.5), np.where(bone, 14.0, 0.0)),
        "tmax": np.where(brain, np.where(core | severe, 11.0, 1.0), np.where(bone, 14.0, 0.0)),
    }
    maps = {k: v.astype(np.float32) for k, v in maps.items()}
    names = ["cbf", "cbv", "mtt", "tmax"]
    slices, geom = preprocess_images(maps, names, PreprocessConfig())
    tmax = restore(slices[:, 3], geom)
    assert np.allclose(tmax[bone], -1.0)  # the background's value: no transit time
    assert np.allclose(tmax[brain & ~core & ~severe], 0.0)  # the reference is the tissue's 1 s
    assert np.allclose(tmax[core | severe], 10.0)
    # The exported pipeline runs the scripted function: the same numbers.
    volumes, head = [torch.from_numpy(maps[k]) for k in names], torch.from_numpy(brain | bone)
    eager = intensity.normalize_volumes(volumes, head, "relative", 0.5, 99.5, names)[0]
    assert torch.equal(
        torch.jit.script(intensity.normalize_volumes)(volumes, head, "relative", 0.5, 99.5, names)[0], eager
    )
    # Z-score checkpoints keep what they were trained on; without CBF and CBV nothing is known about blood.
    zscored = intensity.normalize_volumes(volumes, head, "zscore", 0.5, 99.5, names)[0]
    assert torch.equal(
        zscored, intensity.normalize_volumes(volumes, head, "zscore", 0.5, 99.5, ["a", "b", "c", "d"])[0]
    )
    kept = intensity.undefined_transit_times(volumes[2:], names[2:], head)
    assert len(kept) == 2 and all(a is b for a, b in zip(kept, volumes[2:]))


@pytest.mark.parametrize(
    "change",
    [
        {"dwi_scale": 1.0},  # another scanner's scale
        {"dwi_scale": 5000.0, "adc_scale": 1000.0},  # ADC in 1e-6 mm²/s
        {"background": "noise"},
    ],
    ids=["scale", "units", "noisy-background"],
)
def test_normalised_slices_do_not_depend_on_scale_units_or_background(change) -> None:
    """The normalised brain is the same, and the background a constant, whatever the scale or background."""
    cfg = PreprocessConfig()  # no resampling: restore is the exact inverse
    base, brain, lesion = _ellipsoid_case(1)
    other, _, _ = _ellipsoid_case(1, **change)
    a, geom_a = preprocess_images(base, MRI, cfg)
    b, geom_b = preprocess_images(other, MRI, cfg)
    for c in range(2):
        va, vb = restore(a[:, c], geom_a), restore(b[:, c], geom_b)
        # Noise moves single voxels, not the tissue's and the lesion's levels; scale and units change nothing.
        tol = 0.15 if "background" in change else 1e-3
        for region in (brain & ~lesion, lesion):
            assert abs(np.median(va[region]) - np.median(vb[region])) < tol * (1.0 + abs(np.median(va[region])))
        outside = ~geom_b.head
        assert np.ptp(vb[outside]) == 0.0  # a noisy background becomes one constant
    assert bool(geom_b.warnings) == ("background" in change)


def test_lesion_probability_is_zero_outside_the_head() -> None:
    images, brain, _ = _ellipsoid_case(2)
    slices, geom = preprocess_images(images, MRI, PreprocessConfig())
    probability = restore_probability(np.ones(slices[:, 0].shape, np.float32), geom)
    assert np.array_equal(geom.head, brain)
    # Lesions may lie in the head and a 2-voxel margin (the automatic mask may miss dark tissue at its edge).
    margin = ndimage.binary_dilation(brain, iterations=2)
    assert probability[~margin].max() == 0.0 and probability[margin].min() == 1.0


def test_a_head_touching_the_border_is_still_found() -> None:
    images, brain, _ = _ellipsoid_case(5)
    cropped = {m: v[10:-10, 10:-10] for m, v in images.items()}  # the brain now touches every in-plane edge
    mask, noisy = head_support([cropped[m] for m in MRI])
    inner = brain[10:-10, 10:-10]
    assert (mask & inner).sum() / (mask | inner).sum() > 0.99 and not noisy


def test_a_brain_mask_replaces_the_automatic_head() -> None:
    images, brain, lesion = _ellipsoid_case(3, "noise")
    given = brain & ~lesion
    slices, geom = preprocess_images(images, MRI, PreprocessConfig(), brain_mask=given.astype(np.uint8))
    assert np.array_equal(geom.head, given) and geom.warnings == ()
    assert restore_probability(np.ones(slices[:, 0].shape, np.float32), geom)[lesion].max() == 0.0
    with pytest.raises(InputError, match="brain mask"):
        preprocess_images(images, MRI, PreprocessConfig(), brain_mask=np.zeros((4, 4, 4)))


def _ratios(phantom, names):
    label = phantom.label > 0
    tissue = phantom.masks["brain"] & ~phantom.masks["csf"] & ~label & ~phantom.masks["mimic"]
    return [float(np.median(phantom.images[m][label]) / np.median(phantom.images[m][tissue])) for m in names]


def test_randomised_mri_phantoms_span_the_lesion_contrasts_backgrounds_and_slice_thicknesses() -> None:
    phantoms = [make_phantom("isles22", seed, domain="randomised", shape=(None, None, None)) for seed in range(12)]
    dwi, adc = np.array([_ratios(p, MRI) for p in phantoms]).T
    # Medians over the label include partial volume at the lesion edge: below the drawn factor.
    assert 0.95 < dwi.min() and dwi.max() < 3.6 and dwi.max() - dwi.min() > 0.8 and dwi.mean() > 1.5
    assert 0.35 < adc.min() and adc.max() < 1.05 and adc.max() - adc.min() > 0.2
    assert {p.info["background"] for p in phantoms} >= {"zero", "noise", "skull"}
    slices = [p.info["spacing_mm"][2] for p in phantoms]
    assert min(slices) < 2.0 and max(slices) > 4.0
    for p in phantoms:  # lesions stay in brain tissue whatever the background
        assert not (p.label.astype(bool) & ~p.masks["brain"]).any()


def test_randomised_ctp_core_follows_isles18_and_classic_phantoms_are_unchanged() -> None:
    for seed in range(4):
        p = make_phantom("isles18", seed, domain="randomised")
        cbf, cbv, _mtt, tmax = _ratios(p, ("cbf", "cbv", "mtt", "tmax"))
        assert cbf < 0.35 and cbv < 0.85 and tmax > 3.0
    classic = make_phantom("isles22", 3)
    assert classic.info["domain"] == "classic"
    assert np.array_equal(classic.images["dwi"], make_phantom("isles22", 3, domain="classic").images["dwi"])
    with pytest.raises(InputError, match="domain"):
        make_phantom("isles22", 0, domain="other")


def test_intensity_augmentation_keeps_the_background_and_is_deterministic() -> None:
    image = torch.full((2, 64, 64), -1.5)
    image[:, 16:48, 16:48] = torch.randn(2, 32, 32).clamp_min(-1.4)  # the background is the minimum
    rng = np.random.default_rng(0)
    draws = [IntensityAugmentation.draw(rng, 2) for _ in range(50)]
    changed = 0
    for aug in draws:
        out = aug(image)
        assert out.shape == image.shape and torch.isfinite(out).all()
        assert torch.equal(out, aug(image))
        changed += int(not torch.allclose(out, image))
        if aug.blur == 0 and aug.low_res == 1.0 and not any(aug.noise):  # pointwise only: background stays
            assert torch.allclose(out[:, :4, :4], image[:, :4, :4], atol=1e-5)
    assert changed > 35  # most draws change something


def test_the_adc_gate_reads_tissue_adc_inside_the_head_only() -> None:
    """A noisy ADC background (near 0) must not drag the tissue reference down and gate every lesion away."""
    from mdanet_sdk import Segmenter

    images, brain, lesion = _ellipsoid_case(4)
    images["adc"] = np.where(brain, images["adc"], 0.02 + 0.01 * np.random.default_rng(0).random(brain.shape))
    probability = lesion.astype(np.float32)
    segmenter = Segmenter.default("mri", max_adc_ratio=0.8, device="cpu")
    assert segmenter.postprocess(probability, images, brain).sum() == lesion.sum()
    assert segmenter.postprocess(probability, images).sum() == 0  # the reason for passing the head


def test_a_brain_mask_reaches_the_segmenter_from_arrays_files_and_the_command(tmp_path) -> None:
    """`{"brain_mask": ...}` with arrays or files, and `-m brain_mask=...`: no lesion outside the given mask."""
    import nibabel as nib
    from typer.testing import CliRunner

    from mdanet_sdk import Segmenter
    from mdanet_sdk.cli import app

    images, brain, lesion = _ellipsoid_case(6)
    given = brain.copy()
    given[:, :, :12] = False  # the lower half only
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    segmenter = Segmenter.default("mri", device="cpu")
    result = segmenter.predict_arrays({**images, "brain_mask": given.astype(np.uint8)}, affine)
    assert result.probability_canonical[~given].max() == 0.0
    paths = {}
    for name, array in {**images, "brain_mask": given.astype(np.uint8)}.items():
        paths[name] = tmp_path / f"case_{name}.nii.gz"
        nib.save(nib.Nifti1Image(array, affine), paths[name])
    assert segmenter.predict(paths).probability_canonical[~given].max() == 0.0
    out = tmp_path / "mask.nii.gz"
    args = ["segment", *[f"-m{k}={v}" for k, v in paths.items()], "-o", str(out), "--prob", "--quiet"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    probability = np.asarray(nib.load(tmp_path / "case_prob.nii.gz").dataobj)
    assert probability[~given].max() == 0.0


def test_inputs_that_are_not_skull_stripped_are_reported() -> None:
    """A noisy background, or a skull and scalp with zero air around them (a head larger than a brain)."""
    from ood_phantoms import ood_mri_case

    from mdanet_sdk import Segmenter

    segmenter = Segmenter.default("mri", device="cpu")
    for seed, expected in ((1, "more than a brain"), (3, "noisy, non-zero background"), (2, None)):
        case = ood_mri_case(seed)  # 1: skull ring, zero air; 3: noisy background; 2: skull-stripped
        warnings = segmenter.predict_arrays(case.images, case.affine).report.warnings
        said = [w for w in warnings if "skull-stripped" in w]
        assert said == [] if expected is None else len(said) == 1 and expected in said[0], warnings
