"""The bundled demo weights on what they never saw: own phantoms (dataset seeds 9000+; training used 103, 105,
111, 151, 202 and 211), phantoms of a different, test-only generator (``ood_phantoms.py``) and the real ISLES'22
example case with its expert mask."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from ood_phantoms import ood_case
from ood_variants import delayed_hemisphere, inside_the_head, with_scalp

from mdanet_sdk.data.cases import read_case
from mdanet_sdk.data.phantom import make_phantom
from mdanet_sdk.metrics import case_metrics, dsc
from mdanet_sdk.train.checkpoint import BUNDLED, load_checkpoint

pytestmark = pytest.mark.skipif(not all(p.is_file() for p in BUNDLED.values()), reason="bundled weights not generated")

CASES = 24  # per-case DSC varies widely (a 50-voxel lacune scores 0 or 0.8): fewer cases decide little
OOD_CASES = 12
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "isles22-example"


# Measured with each checkpoint's own post-processing (meta["inference"], chosen on seeds 8000-8035): default-mri
# 0.805, default-ctp 0.741; issue 14's 0.75 / 0.65.
@pytest.mark.slow
@pytest.mark.parametrize(("name", "kind", "threshold"), [("mri", "isles22", 0.75), ("ctp", "isles18", 0.65)])
def test_bundled_weights_segment_unseen_phantoms(name, kind, threshold):
    from mdanet_sdk import Segmenter

    torch.manual_seed(0)
    seg = Segmenter.default(name)
    scores = []
    for i in range(CASES):
        case = make_phantom(kind, 9000 + i)
        result = seg.predict(case)
        assert result.mask.shape == case.label.shape
        scores.append(dsc(result.mask_canonical, case.label))
    assert np.mean(scores) >= threshold, f"{name}: per-case DSC {np.round(scores, 3).tolist()}"


# Randomised own MRI phantoms whose air is Rician noise and whose ADC outside the head is half 0, half noise
# (seeds 9003, 9004, 9011, 9013, 9021 of 9000-9023): per-case DSC 0.80, 0.97, 0.57, 0.24, 0.96 (mean 0.70) since
# the head mask leaves such an ADC background out and the weights were retrained on such masks; 0.00-0.07 when
# the mask called the air head.
def test_bundled_mri_weights_segment_phantoms_with_a_noisy_background():
    from mdanet_sdk import Segmenter

    seg = Segmenter.default("mri")
    scores = []
    for seed in (9003, 9004, 9011, 9013, 9021):
        case = make_phantom("isles22", seed, domain="randomised")
        assert case.info["background"] == "noise"
        scores.append(dsc(seg.predict(case).mask_canonical, case.label))
    assert np.mean(scores) >= 0.6, f"per-case DSC {np.round(scores, 3).tolist()}"


@pytest.mark.parametrize("name", ["default-mri", "default-ctp"])
def test_bundled_checkpoints_say_they_are_synthetic(name):
    ckpt = load_checkpoint(name)
    assert "NOT FOR CLINICAL USE" in ckpt.meta["note"]
    assert ckpt.model_config.widths == (16, 32, 64, 128, 256)  # the small preset
    assert BUNDLED[name].stat().st_size < 8 * 2**20  # a few MB, shipped inside the package
    with zipfile.ZipFile(BUNDLED[name]) as archive:  # no temporary name (host, pid) of the machine that wrote it
        assert {member.split("/", 1)[0] for member in archive.namelist()} == {"archive"}
    # float16 storage must not overflow (a BatchNorm running variance above 65504 became inf once)
    assert all(torch.isfinite(v).all() for v in ckpt.state_dict.values() if v.is_floating_point())
    assert {"tta", "threshold", "min_size"} <= set(ckpt.meta["inference"])  # chosen on held-out phantoms


def test_bundled_mri_weights_gate_on_restricted_diffusion():
    assert load_checkpoint("default-mri").meta["inference"]["max_adc_ratio"] > 0  # chosen: it pays on phantoms


# Issue 14's targets on a generator the weights never saw (geometric shapes, other backgrounds and units).
@pytest.mark.slow
@pytest.mark.parametrize(("name", "threshold"), [("mri", 0.6), ("ctp", 0.5)])
def test_bundled_weights_segment_out_of_distribution_phantoms(name, threshold):
    from mdanet_sdk import Segmenter

    seg = Segmenter.default(name)
    scores = []
    for seed in range(OOD_CASES):
        case = ood_case(name, seed)
        result = seg.predict_arrays(case.images, case.affine)
        scores.append(dsc(result.mask_canonical, case.label))
    assert np.mean(scores) >= threshold, f"{name}: per-case DSC {np.round(scores, 3).tolist()}"


# Perfusion software can leave positive noise in the air of every map (here |N(0, 20 % of tissue)|). The head
# mask then held the cortex but not white matter a few noise sigmas above the air, and OOD seed 0 scored Dice 0.00
# (seeds 0-3: 0.00, 0.95, 0.95, 0.85); since the mask grows from the cortex into such tissue: 0.98, 0.98, 0.96, 0.96.
def test_bundled_ctp_weights_segment_perfusion_maps_with_noise_in_the_air():
    from mdanet_sdk import Segmenter

    seg = Segmenter.default("ctp")
    scores = []
    for seed in range(4):
        case = ood_case("ctp", seed)
        rng = np.random.default_rng(seed)
        air = ~case.masks["head"]
        images = {
            k: np.where(air, np.abs(rng.normal(0.0, 0.2 * np.median(v[case.masks["tissue"]]), v.shape)), v)
            for k, v in case.images.items()
        }
        scores.append(dsc(seg.predict_arrays(images, case.affine).mask_canonical, case.label))
    assert min(scores) >= 0.9, f"per-case DSC {np.round(scores, 3).tolist()}"


# A DWI of SNR 10 or ~7 (Rician noise of 10 % or 15 % of the tissue, everywhere) with fitted noise in the ADC's air, so
# that the ADC cannot give the head mask. OOD seeds 0-3 scored Dice 0.00 / 0.92 / 0.00 / 0.00 (10 %) and 0.00 /
# 0.00 / 0.09 / 0.14 (15 %) when the air's noise, at 5 % of the head's range, was read as tissue on the border and
# the whole field became head; since the border is tested for noise: 1.00 / 0.92 / 0.98 / 0.98 and 0.94 / 0.93 /
# 0.98 / 0.97.
@pytest.mark.parametrize("noise", [0.10, 0.15])
def test_bundled_mri_weights_segment_a_noisy_dwi(noise):
    from mdanet_sdk import Segmenter

    seg = Segmenter.default("mri")
    scores = []
    for seed in range(4):
        case = ood_case("mri", seed)
        rng = np.random.default_rng(seed)
        sigma = noise * float(np.median(case.images["dwi"][case.masks["tissue"]]))
        shape = case.label.shape
        dwi = np.hypot(case.images["dwi"] + sigma * rng.standard_normal(shape), sigma * rng.standard_normal(shape))
        adc = case.images["adc"]
        fitted = rng.uniform(0.0, 3.0 * float(np.median(adc[case.masks["tissue"]])), shape)
        images = {"dwi": dwi.astype(np.float32), "adc": np.where(case.masks["head"], adc, fitted).astype(np.float32)}
        scores.append(dsc(seg.predict_arrays(images, case.affine).mask_canonical, case.label))
    assert min(scores) >= 0.85 and np.mean(scores) >= 0.9, f"per-case DSC {np.round(scores, 3).tolist()}"


# A field of view (or a crop) smaller than the head, its slice border mostly tissue: the head mask took that border
# for background and held what stands out from it (CSF, air in the corners, the core), not the head. Dice 0.00 for
# every case below before the border was recognised as tissue (revision 4; MRI at 60 % of the head's extent, border
# 63-75 % tissue; CTP at 70 %, border 99-100 % tissue); since: 1.00 each (MRI), 0.971 / 0.947 / 0.961 / 0.964 (CTP).
@pytest.mark.parametrize(("kind", "share", "seeds"), [("mri", 0.6, (1, 7, 10, 11)), ("ctp", 0.7, (0, 2, 3, 5))])
def test_bundled_weights_segment_a_box_inside_the_head(kind, share, seeds):
    from mdanet_sdk import Segmenter

    seg = Segmenter.default(kind)
    scores = []
    for seed in seeds:
        case = inside_the_head(ood_case(kind, seed), share)
        scores.append(dsc(seg.predict_arrays(case.images, case.affine).mask_canonical, case.label))
    assert min(scores) >= 0.9, f"per-case DSC {np.round(scores, 3).tolist()}"


# A head that is not skull-stripped: dark bone and 12 mm of scalp around the brain (the brain 44-51 % of the head).
# Normalised by the head's medians, the brain's DWI sat at ~2x and its ADC at ~0.7x: seeds 0-5 scored 0.925 / 0.986 /
# 0.539 / 0.683 / 0.948 / 1.000; with the parenchyma's (revision 4) 0.886 / 0.986 / 0.986 / 0.980 / 0.975 / 1.000.
def test_bundled_mri_weights_segment_a_head_with_skull_and_scalp():
    from mdanet_sdk import Segmenter

    seg = Segmenter.default("mri")
    scores = []
    for seed in range(6):
        case = with_scalp(ood_case("mri", seed), 12.0)
        scores.append(dsc(seg.predict_arrays(case.images, case.affine).mask_canonical, case.label))
    assert min(scores) >= 0.85 and np.mean(scores) >= 0.95, f"per-case DSC {np.round(scores, 3).tolist()}"


# A core in a territory whose Tmax is delayed throughout (60 % of the tissue, on the core's side: a large vessel
# occlusion with a small core). The head's median Tmax was the delayed tissue's, so the core's no longer stood out:
# OOD seeds 0-3 scored Dice 0.031 / 0.957 / 0.894 / 0.733; with the tissue values taken in the half of the head that
# is not delayed (revision 6): 0.947 / 0.976 / 0.935 / 0.907, with 0.01-0.19 x the core's volume marked in the
# delayed tissue (the plain cases: 0.978 / 0.983 / 0.961 / 0.959).
def test_bundled_ctp_weights_find_a_core_in_a_delayed_hemisphere():
    from mdanet_sdk import Segmenter

    seg = Segmenter.default("ctp")
    scores = []
    for seed in range(4):
        case = delayed_hemisphere(ood_case("ctp", seed))
        found = seg.predict_arrays(case.images, case.affine).mask_canonical > 0
        assert (found & case.masks["penumbra"]).sum() <= 0.25 * case.label.sum()
        scores.append(dsc(found, case.label))
    assert min(scores) >= 0.85, f"per-case DSC {np.round(scores, 3).tolist()}"


# Maps not clipped at 0: CSF and air hold noise around 0, half of it negative. In an atrophic brain (here 6 mm of
# CSF under the skull) that is over 5 % of the head, which made every map fall back to z-scores, which the weights
# never saw: OOD seeds 0-3 scored Dice 0.00 / 0.00 / 0.06 / 0.00; noise around 0 now keeps the ratio scale (revision
# 6): 0.979 / 0.981 / 0.956 / 0.964, as the clipped maps (0.978 / 0.983 / 0.961 / 0.959).
def test_bundled_ctp_weights_read_maps_not_clipped_at_zero():
    from scipy import ndimage

    from mdanet_sdk import Segmenter

    seg = Segmenter.default("ctp")
    scores = []
    for seed in range(4):
        case = ood_case("ctp", seed)
        rng = np.random.default_rng(seed)
        tissue, core = case.masks["tissue"], case.label > 0
        depth = ndimage.distance_transform_edt(case.masks["head"], sampling=case.spacing)
        csf = (case.masks["csf"] | (tissue & (depth < 6.0))) & ~core
        images = {}
        for name, image in case.images.items():
            noise = rng.normal(0.0, 0.04 * float(np.median(image[tissue])), image.shape).astype(np.float32)
            images[name] = np.where(csf, noise, image)
        assert float(np.mean(images["cbf"][case.masks["head"]] < 0)) > 0.05
        result = seg.predict_arrays(images, case.affine)
        assert not any("z-scores" in w for w in result.report.warnings)
        scores.append(dsc(result.mask_canonical, case.label))
    assert min(scores) >= 0.9, f"per-case DSC {np.round(scores, 3).tolist()}"


# Deconvolution junk where no blood flows: a skull ring or the CSF at the core's MTT and Tmax (CBF and CBV ~0).
# OOD seeds 0-3 scored Dice 0.83, 0.75, 0.42, 0.54 (ring) and 0.84, 0.89, 0.42, 0.59 (CSF) with the junk read as
# core; since transit times are 0 where CBF and CBV are both under 10 % of tissue: 0.96-0.98 for each.
@pytest.mark.parametrize("where", ["skull ring", "csf"])
def test_bundled_ctp_weights_ignore_transit_times_where_no_blood_flows(where):
    from scipy import ndimage

    from mdanet_sdk import Segmenter

    seg = Segmenter.default("ctp")
    scores = []
    for seed in range(4):
        case = ood_case("ctp", seed)
        head = case.masks["head"]
        region = ndimage.binary_dilation(head, iterations=4) & ~head if where == "skull ring" else case.masks["csf"]
        core = case.label > 0
        images = dict(case.images)
        for k in ("mtt", "tmax"):
            images[k] = np.where(region, np.percentile(images[k][core], 90), images[k]).astype(np.float32)
        scores.append(dsc(seg.predict_arrays(images, case.affine).mask_canonical, case.label))
    assert min(scores) >= 0.9, f"per-case DSC {np.round(scores, 3).tolist()}"


@pytest.mark.skipif(not REAL.is_dir(), reason="shared/data/isles22-example is not available")
def test_bundled_mri_weights_on_the_real_isles22_case():
    """Dice, lesion-wise F1 and volume against the expert mask (835 voxels, 6.68 mL, ~31 embolic foci).

    Measured (fp32 and bf16 alike): Dice 0.375, lesion-wise F1 0.400 (10 components predicted), 1.93 mL found,
    voxel precision 0.84. Issue 14's targets (Dice and F1 >= 0.5, volume within 30 %) are NOT met: most foci are a
    few voxels with DWI 1.1-1.6x tissue. The test holds the weights to what they measure, so that a change that
    loses the lesions they find fails here.
    """
    from mdanet_sdk import Segmenter

    case = read_case(REAL)
    result = Segmenter.default("mri").predict(case)
    scores = case_metrics(result.mask_canonical, case.label, case.reference.voxel_volume_ml)
    assert scores["dsc"] >= 0.35 and scores["lesion_f1"] >= 0.35, scores
    assert 1.6 <= scores["volume_pred_ml"] <= scores["volume_gt_ml"], scores  # under-segments, no false blobs


def _real_arrays():
    """The real case's DWI, ADC and expert mask as stored (voxel order of the files) and their affine."""
    import nibabel as nib

    files = {m: next(REAL.rglob(f"*_{m}.nii.gz")) for m in ("dwi", "adc", "msk")}
    images = {m: nib.load(f) for m, f in files.items()}
    return {m: np.asarray(i.dataobj, dtype=np.float32) for m, i in images.items()}, images["dwi"].affine


def _stored_flipped(arrays, affine):
    """The same scan stored with X reversed (as an LPS-ordered file would be)."""
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = arrays["dwi"].shape[0] - 1
    return {m: v[::-1] for m, v in arrays.items()}, affine @ flip, lambda mask: mask[::-1]


def _stored_transposed(arrays, affine):
    """The same scan stored with X and Y swapped."""
    return (
        {m: v.transpose(1, 0, 2) for m, v in arrays.items()},
        affine @ np.eye(4)[[1, 0, 2, 3]],
        lambda mask: mask.transpose(1, 0, 2),
    )


def _other_units(arrays, affine):
    """Another scanner's DWI scale and ADC in mm²/s instead of 1e-6 mm²/s."""
    return {**arrays, "dwi": arrays["dwi"] * 3.7, "adc": arrays["adc"] / 1e6}, affine, lambda mask: mask


def _noisy_air(arrays, affine):
    """A background of Rician-like noise instead of zeros around the skull-stripped brain."""
    rng = np.random.default_rng(0)
    head = arrays["dwi"] > 0
    noisy = {
        m: np.where(head, v, np.abs(rng.normal(0.0, 0.03 * float(np.median(v[head])), v.shape))).astype(np.float32)
        for m, v in arrays.items()
        if m != "msk"
    }
    return {**arrays, **noisy}, affine, lambda mask: mask


@pytest.fixture(scope="session")  # not module: the slow tests, collected first, would split the module's uses
def real_as_stored():
    """The segmenter (no TTA), the real case's arrays and affine as stored, and their mask: computed once for
    every presentation."""
    from mdanet_sdk import Segmenter

    segmenter = Segmenter.default("mri", tta=False)
    arrays, affine = _real_arrays()
    return segmenter, arrays, affine, segmenter.predict_arrays({m: arrays[m] for m in ("dwi", "adc")}, affine).mask


@pytest.mark.skipif(not REAL.is_dir(), reason="shared/data/isles22-example is not available")
@pytest.mark.parametrize("present", [_stored_flipped, _stored_transposed, _other_units, _noisy_air])
def test_real_case_mask_does_not_depend_on_how_its_files_present_it(present, real_as_stored):
    """The real scan in another voxel order, unit or background gives the same lesions (measured: identical voxel
    for voxel, Dice 1.000, for each of these four). Not covered: the scan interpolated onto a finer in-plane grid
    than acquired (README, "The real case")."""
    segmenter, arrays, affine, reference = real_as_stored
    assert reference.sum() > 100  # the scan as stored: lesions found
    changed, changed_affine, back = present(arrays, affine)
    mask = back(segmenter.predict_arrays({m: changed[m] for m in ("dwi", "adc")}, changed_affine).mask)
    assert dsc(mask, reference) >= 0.99


def _shifted(images, case):
    tissue = float(np.median(images["dwi"][case.masks["tissue"]]))
    return {**images, "dwi": np.where(case.masks["brain"], images["dwi"] + 0.3 * tissue, 0.0)}


def _low_noise(images, case):
    from scipy import ndimage

    return {m: np.where(case.masks["brain"], ndimage.gaussian_filter(v, 0.7), 0.0) for m, v in images.items()}


def _high_contrast(images, case):
    lesion = case.label > 0
    return {
        "dwi": np.where(lesion, images["dwi"] * 1.4, images["dwi"]),
        "adc": np.where(lesion, images["adc"] * 0.8, images["adc"]),
    }


def _noisy_background(images, case):
    rng = np.random.default_rng(1)
    sigma = 0.05 * float(np.median(images["dwi"][case.masks["tissue"]]))
    noise = np.hypot(sigma * rng.standard_normal(case.label.shape), sigma * rng.standard_normal(case.label.shape))
    return {**images, "dwi": np.where(case.masks["brain"], images["dwi"], noise)}


@pytest.mark.parametrize(
    "change",
    [
        lambda images, case: images,
        _shifted,
        lambda images, case: {"dwi": images["dwi"] * 0.01, "adc": images["adc"] * 1000.0},  # scale and units
        _low_noise,
        _high_contrast,
        _noisy_background,
    ],
    ids=["as-drawn", "shifted", "scaled", "low-noise", "high-contrast", "noisy-background"],
)
def test_bundled_mri_probability_is_high_on_lesions_and_low_elsewhere_on_shifted_inputs(change):
    """Issue 14: the normalisation must not collapse on plausible inputs unlike the phantom."""
    from scipy import ndimage

    from mdanet_sdk import Segmenter

    case = ood_case("mri", 2)  # a zero-background case with lesions of a few mL
    images = {m: v.astype(np.float32) for m, v in change(dict(case.images), case).items()}
    probability = Segmenter.default("mri").predict_arrays(images, case.affine).probability_canonical
    lesion = case.label > 0
    elsewhere = ~ndimage.binary_dilation(lesion, iterations=2)
    assert probability[lesion].mean() > 0.5
    # Confident false positives (before any post-processing) stay a small fraction of the lesion's volume.
    assert (probability[elsewhere] > 0.5).sum() < 0.25 * lesion.sum()


def _wider_field_of_view(volume: np.ndarray) -> np.ndarray:
    """The volume zero-filled around its head to about twice its in-plane field of view (voxels unchanged; the
    same margin on both sides, so that reorienting the case moves nothing)."""
    x, y, _ = volume.shape
    return np.pad(volume, ((x // 2, x // 2), (y // 2, y // 2), (0, 0)))


# A field of view twice as wide around the same head: before the slices were cropped around the head
# (PreprocessConfig.head_fill) the head shrank to half its size on the model grid and these OOD cases scored DSC
# 0.000 and 0.000 (seeds 0 and 7; 0.899 and 0.924 as drawn); with the crop 1.000 and 0.963. Seed 3 has a noisy
# background: zero-filled, the square of noise was taken for head (0.000) until the head mask looked inside
# the stored field of view (0.979; measured).
@pytest.mark.parametrize("seed", [0, 3, 7])
def test_bundled_mri_weights_find_the_lesions_in_a_wider_field_of_view(seed):
    from mdanet_sdk import Segmenter

    case = ood_case("mri", seed)
    images = {m: _wider_field_of_view(v.astype(np.float32)) for m, v in case.images.items()}
    result = Segmenter.default("mri").predict_arrays(images, case.affine)
    assert dsc(result.mask_canonical, _wider_field_of_view(case.label)) >= 0.9


@pytest.mark.skipif(not REAL.is_dir(), reason="shared/data/isles22-example is not available")
def test_real_case_in_fp16_matches_fp32(real_as_stored):
    """fp16 (GPUs without bf16 take it under ``precision="auto"``) gives the fp32 lesions: the graph fusion's
    back-projection reaches ~1e5 on this scan, beyond fp16's range, and must not be formed there (measured on
    CPU autocast: mask Dice 0.998 against fp32; before the fix the run failed with non-finite values)."""
    from mdanet_sdk import Segmenter

    _, arrays, affine, reference = real_as_stored
    fp16 = Segmenter.default("mri", tta=False, precision="fp16")
    mask = fp16.predict_arrays({m: arrays[m] for m in ("dwi", "adc")}, affine).mask
    assert dsc(mask, reference) >= 0.98


@pytest.mark.skipif(not REAL.is_dir(), reason="shared/data/isles22-example is not available")
@pytest.mark.slow
def test_fp16_artefact_of_the_mri_weights_finds_the_fp32_lesions(real_as_stored, tmp_path):
    """An fp16 TorchScript artefact of default-mri (the TensorRT fp16 deployment's precision) segments the real
    case as the checkpoint does. Its running variances (up to 1.25e9) do not fit fp16, so the export folds the
    batch norms first; before, the export refused itself (artefact off by 13.1 on the probe batch). Measured:
    the same 241 voxels as the fp32 artefact."""
    from mdanet_sdk import Segmenter
    from mdanet_sdk.export import export_checkpoint

    _, arrays, affine, reference = real_as_stored
    artefact = export_checkpoint("default-mri", "torchscript", tmp_path / "mri16.ts", precision="fp16").path
    mask = Segmenter.from_exported(artefact, tta=False).predict_arrays({m: arrays[m] for m in ("dwi", "adc")}, affine)
    assert dsc(mask.mask, reference) >= 0.98
