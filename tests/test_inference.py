"""Tests of mdanet_sdk.inference: geometry round trips, batching, TTA, ensembles, failures, streaming.

The checkpoints are randomly initialised ``small`` models (no trained weights are needed to test the
plumbing). Their lesion probabilities sit in a narrow band around 0.44, so each test that compares masks
picks a threshold inside that band (:func:`split_threshold`) to get masks that are neither empty nor full.
"""

from __future__ import annotations

import inspect
import logging
import threading

import nibabel as nib
import numpy as np
import pytest
import torch
from nibabel.orientations import axcodes2ornt, ornt_transform

from mdanet_sdk import Segmenter
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.data.phantom import make_phantom
from mdanet_sdk.device import cpu_has_native_bf16
from mdanet_sdk.data.preprocess import PreprocessConfig
from mdanet_sdk.report import CaseReport
from mdanet_sdk.errors import BackendUnavailableError, CheckpointError, InputError
from mdanet_sdk.inference import (
    FailedCase,
    SegmentationResult,
    choose_postprocessing,
    keep_restricted_lesions,
    precision_check,
    remove_small_lesions,
    resolve_device,
    tissue_adc,
)
from mdanet_sdk.inference.postprocess import _lesion_adc_ratios, postprocess
from mdanet_sdk.metrics import dsc
from mdanet_sdk.model import build_model
from mdanet_sdk.train.checkpoint import load_checkpoint, save_checkpoint

ZOOMS = (1.5, 1.5, 3.0)


@pytest.fixture(scope="module")
def inf_checkpoints(tmp_path_factory, ckpt_random):
    """Two random MRI checkpoints (fold 0 and fold 1 of a pretend run)."""
    folder = tmp_path_factory.mktemp("ckpt")
    return [ckpt_random(folder / f"fold{i}.pt", seed=i) for i in range(2)]


def split_threshold(probability: np.ndarray) -> float:
    """A threshold in the widest gap between the middle values, so tiny float noise cannot flip a voxel."""
    values = np.unique(probability)
    middle = values[len(values) // 4 : 3 * len(values) // 4]
    gaps = np.diff(middle)
    i = int(np.argmax(gaps))
    return float(middle[i] + gaps[i] / 2)


def brain(shape, seed: int = 0) -> dict[str, np.ndarray]:
    """A DWI/ADC pair: an ellipsoid 'head' with a bright-DWI / dark-ADC blob, plus noise."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    head = sum(g**2 for g in grid) < 0.8
    blob = sum((g - 0.3) ** 2 for g in grid) < 0.1
    dwi = head * (100 + 80 * blob) + rng.normal(0, 5, shape) * head
    adc = head * (800 - 400 * blob) + rng.normal(0, 20, shape) * head
    return {"dwi": dwi.astype(np.float32), "adc": adc.astype(np.float32)}


def write_case(folder, images, affine, name="case") -> dict[str, object]:
    """Write each image as ``<name>_<modality>.nii.gz``; return the mapping modality → path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for modality, data in images.items():
        img = nib.Nifti1Image(data, affine)
        img.header.set_qform(affine, code=1)
        paths[modality] = folder / f"{name}_{modality}.nii.gz"
        nib.save(img, paths[modality])
    return paths


def _rotation(ax: float, az: float) -> np.ndarray:
    cx, sx, cz, sz = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az)
    return np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])


def _base_affine(oblique: bool) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = (_rotation(np.radians(10), np.radians(20)) if oblique else np.eye(3)) @ np.diag(ZOOMS)
    affine[:3, 3] = (-20.0, 15.0, 8.0)
    return affine


# Each storage: (oblique base affine?, stored axis codes). The same canonical voxels are stored in each order.
STORAGES = {"RAS": (False, "RAS"), "LPS": (False, "LPS"), "oblique": (True, "IRP")}


def stored(images, storage: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``images`` (canonical RAS order) re-stored with another axis order, same voxel → world mapping."""
    oblique, codes = STORAGES[storage]
    affine = _base_affine(oblique)
    transform = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(tuple(codes)))
    out = {m: nib.Nifti1Image(a, affine).as_reoriented(transform) for m, a in images.items()}
    first = next(iter(out.values()))
    assert nib.aff2axcodes(first.affine) == tuple(codes)
    return {m: np.asarray(img.dataobj) for m, img in out.items()}, first.affine


def test_mask_keeps_the_input_geometry_in_every_orientation(inf_checkpoints, tmp_path) -> None:
    """RAS, LPS and oblique storage of one volume (a 37x29x6 matrix: not multiples of 16) give one world mask."""
    images = brain((37, 29, 6))
    reference = Segmenter.from_checkpoint(inf_checkpoints[0]).predict_arrays(*stored(images, "RAS"))
    seg = Segmenter.from_checkpoint(inf_checkpoints[0], threshold=split_threshold(reference.probability))
    canonical_masks = []
    for storage in STORAGES:
        arrays, affine = stored(images, storage)
        files = write_case(tmp_path / storage, arrays, affine)
        affine = nib.load(files["dwi"]).affine  # as stored (float32 in the header)
        result = seg.predict(files)
        assert result.mask.shape == arrays["dwi"].shape and result.mask.dtype == np.uint8
        np.testing.assert_array_equal(result.affine, affine)
        mask_path, prob_path = result.save(tmp_path / f"{storage}_seg.nii.gz", tmp_path / f"{storage}_prob.nii.gz")
        saved = nib.load(mask_path)
        assert saved.shape == arrays["dwi"].shape
        np.testing.assert_array_equal(saved.affine, affine)
        assert nib.aff2axcodes(saved.affine) == tuple(STORAGES[storage][1])
        assert saved.get_data_dtype() == np.uint8 and nib.load(prob_path).get_data_dtype() == np.float32
        np.testing.assert_array_equal(np.asarray(saved.dataobj), result.mask)
        canonical_masks.append(np.asarray(nib.as_closest_canonical(saved).dataobj))
    first = canonical_masks[0]
    assert 0.05 < first.mean() < 0.95  # a real mask, not all 0 or all 1
    for other in canonical_masks[1:]:
        np.testing.assert_array_equal(other, first)


def test_predict_arrays_matches_files_and_keeps_array_order(inf_checkpoints, tmp_path) -> None:
    arrays, affine = stored(brain((32, 24, 5)), "LPS")
    seg = Segmenter.from_checkpoint(inf_checkpoints[0])
    from_arrays = seg.predict_arrays(arrays, affine, case_id="mine")
    from_files = seg.predict(write_case(tmp_path, arrays, affine))
    assert from_arrays.case_id == "mine" and from_arrays.probability.shape == (32, 24, 5)
    np.testing.assert_allclose(from_arrays.probability, from_files.probability, atol=1e-6)
    with pytest.raises(InputError, match="same shape"):
        seg.predict_arrays({"dwi": arrays["dwi"], "adc": arrays["adc"][:-1]}, affine)
    with pytest.raises(InputError, match="mapping modality"):
        seg.predict_arrays([arrays["dwi"], arrays["adc"]], affine)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="4x4 matrix of numbers"):
        seg.predict_arrays(arrays, "eye")  # type: ignore[arg-type]


def test_same_mask_for_every_batch_size(inf_checkpoints, tmp_path) -> None:
    """Batch sizes 1, 7 and 64 cut three cases (5, 9 and 4 slices) differently; the results agree."""
    cases = [stored(brain((32, 32, z), seed=z), "RAS") for z in (5, 9, 4)]
    seg = Segmenter.from_checkpoint(inf_checkpoints[0], batch_size=1)
    seg.settings = seg.settings.updated(threshold=split_threshold(seg.predict_arrays(*cases[0]).probability))
    files = [write_case(tmp_path / f"c{i}", *c) for i, c in enumerate(cases)]
    runs = {}
    for batch_size in (1, 7, 64):
        seg.batch_size = batch_size
        runs[batch_size] = list(seg.predict_many(files))
    for batch_size in (7, 64):
        for a, b in zip(runs[1], runs[batch_size]):
            np.testing.assert_allclose(a.probability, b.probability, atol=1e-5)
            np.testing.assert_array_equal(a.mask, b.mask)
    assert 0 < runs[1][0].mask.sum() < runs[1][0].mask.size


def _slices(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 2, 32, 32, generator=torch.Generator().manual_seed(0))


def test_tta_averages_the_four_flips(inf_checkpoints) -> None:
    plain = Segmenter.from_checkpoint(inf_checkpoints[0])
    tta = Segmenter.from_checkpoint(inf_checkpoints[0], tta=True, tta_screen=False)
    x = _slices()
    expected = torch.stack(
        [
            plain.probabilities(x.flip(d)).flip([a - 1 for a in d]) if d else plain.probabilities(x)
            for d in ((), (2,), (3,), (2, 3))
        ]
    ).mean(0)
    got = tta.probabilities(x)
    assert got.shape == (3, 32, 32)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert (got - plain.probabilities(x)).abs().max() > 1e-4  # the flips do change the probabilities


def test_fold_ensemble_averages_the_folds(inf_checkpoints) -> None:
    folds = [Segmenter.from_checkpoint(p) for p in inf_checkpoints]
    ensemble = Segmenter.from_checkpoint(inf_checkpoints)
    assert ensemble.name == "fold0+fold1"
    x = _slices()
    p0, p1, both = folds[0].probabilities(x), folds[1].probabilities(x), ensemble.probabilities(x)
    torch.testing.assert_close(both, (p0 + p1) / 2, atol=1e-6, rtol=0)
    assert (p0 - p1).abs().max() > 1e-3


def test_ensemble_refuses_folds_of_different_runs(inf_checkpoints, tmp_path, ckpt_random) -> None:
    other = ckpt_random(tmp_path / "ctp.pt", kind="ctp")
    with pytest.raises(CheckpointError, match="modalities or preprocessing differ"):
        Segmenter.from_checkpoint([inf_checkpoints[0], other])


def test_an_ensemble_whose_folds_recommend_other_post_processing_must_be_told_which(inf_checkpoints, tmp_path) -> None:
    """The first checkpoint's recommendation used to win silently: ``-c A -c B`` and ``-c B -c A`` differed."""
    fold = load_checkpoint(inf_checkpoints[1])
    strict = save_checkpoint(
        tmp_path / "strict.pt",
        fold.state_dict,
        fold.model_config,
        fold.preprocess,
        {**fold.meta, "inference": {"tta": False, "threshold": 0.9, "min_size": 0, "max_adc_ratio": 0.0}},
    )
    for order in ([inf_checkpoints[0], strict], [strict, inf_checkpoints[0]]):
        with pytest.raises(InputError, match="recommend different post-processing") as refused:
            Segmenter.from_checkpoint(order)
        assert "--threshold" in str(refused.value) and "strict.pt" in str(refused.value)
    told = [
        Segmenter.from_checkpoint(o, threshold=0.5, tta=False)
        for o in ([inf_checkpoints[0], strict], [strict, inf_checkpoints[0]])
    ]
    assert told[0].settings == told[1].settings and told[0].settings.threshold == 0.5


def test_device_and_precision_auto_on_cpu(inf_checkpoints, caplog) -> None:
    if torch.cuda.is_available():
        pytest.skip("checks the CPU fallback")
    with caplog.at_level(logging.INFO, logger="mdanet_sdk.inference"):
        seg = Segmenter.from_checkpoint(inf_checkpoints[0])
    # bf16 only where the CPU has native bf16 and the probe found the same mask (inference.precision_check)
    key = (tuple(seg.weights_sha256), "bf16", "cpu", seg.predictor.settings.threshold)  # precision_check's key
    probe = precision_check._CACHE.get(key, 0.0)
    expected = "bf16" if cpu_has_native_bf16() and probe >= precision_check.MIN_PROBE_DICE else "fp32"
    assert seg.device == torch.device("cpu") and seg.precision == expected
    assert f"on cpu ({expected})" in caplog.text
    with pytest.raises(BackendUnavailableError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="unknown precision"):
        Segmenter.from_checkpoint(inf_checkpoints[0], precision="fp8")


def test_remove_small_lesions_uses_26_connectivity() -> None:
    mask = np.zeros((8, 8, 8), np.uint8)
    mask[1, 1, 1] = mask[2, 2, 2] = mask[3, 3, 3] = 1  # a diagonal chain: one 3-voxel lesion
    mask[6, 6, 6] = 1  # a lone voxel
    kept = remove_small_lesions(mask, 2)
    assert kept.sum() == 3 and kept[6, 6, 6] == 0
    assert remove_small_lesions(mask, 0).sum() == 4


def test_min_size_and_threshold_shape_the_mask(inf_checkpoints) -> None:
    arrays, affine = stored(brain((32, 32, 6)), "RAS")
    result = Segmenter.from_checkpoint(inf_checkpoints[0]).predict_arrays(arrays, affine)
    threshold = split_threshold(result.probability)
    loose = Segmenter.from_checkpoint(inf_checkpoints[0], threshold=threshold).predict_arrays(arrays, affine)
    strict = Segmenter.from_checkpoint(inf_checkpoints[0], threshold=threshold, min_size=50).predict_arrays(
        arrays, affine
    )
    np.testing.assert_array_equal(loose.mask, result.probability > threshold)
    np.testing.assert_array_equal(strict.mask, remove_small_lesions(loose.mask, 50))
    assert strict.report.n_lesions <= loose.report.n_lesions
    assert loose.report.lesion_volume_ml == pytest.approx(loose.mask.sum() * np.prod(ZOOMS) / 1000)


def test_checkpoint_recommended_postprocessing_is_the_default(inf_checkpoints, tmp_path) -> None:
    torch.manual_seed(0)
    config = MDANetConfig.from_preset("small", "mri")
    recommended = {"tta": True, "threshold": 0.3, "min_size": 7, "max_adc_ratio": 0.8}
    path = save_checkpoint(
        tmp_path / "tuned.pt", build_model(config), config, PreprocessConfig(), {"inference": recommended}
    )
    seg = Segmenter.from_checkpoint(path)
    assert (seg.tta, seg.threshold, seg.min_size, seg.max_adc_ratio) == (True, 0.3, 7, 0.8)
    report = seg.predict_arrays(*stored(brain((32, 32, 6)), "RAS")).report
    assert (report.tta, report.threshold, report.min_size, report.max_adc_ratio) == (True, 0.3, 7, 0.8)
    mine = Segmenter.from_checkpoint(path, tta=False, threshold=0.6, min_size=0, max_adc_ratio=0)  # caller wins
    assert (mine.tta, mine.threshold, mine.min_size, mine.max_adc_ratio) == (False, 0.6, 0, 0.0)
    plain = Segmenter.from_checkpoint(inf_checkpoints[0])  # no recommendation: the built-in defaults
    assert (plain.tta, plain.threshold, plain.min_size, plain.max_adc_ratio) == (False, 0.5, 0, 0.0)


def test_choose_postprocessing_moves_off_the_defaults_only_when_it_pays() -> None:
    labels, faint, sharp, clean = [], [], [], []
    for i in range(3):
        y = np.zeros((16, 16, 8), np.uint8)
        y[4 + i : 7 + i, 4:7, 2:5] = 1  # a 27-voxel lesion
        speck = np.zeros(y.shape, np.float32)
        speck[12, 12, 5:7] = 0.9  # a 2-voxel false positive: DSC 0.964 unless min_size removes it
        labels.append(y)
        faint.append(0.35 * y + speck)  # an under-calling model: only a low threshold finds the lesion
        sharp.append(0.9 * y + speck)
        clean.append(0.9 * y.astype(np.float32))
    setting, score = choose_postprocessing({False: faint, True: sharp}, labels)
    assert setting.to_dict() == {"tta": False, "threshold": 0.3, "min_size": 5, "max_adc_ratio": 0.0} and score == 1.0
    blind = [np.zeros(y.shape, np.float32) for y in labels]
    assert choose_postprocessing({False: blind, True: sharp}, labels)[0].to_dict() == {
        "tta": True,
        "threshold": 0.5,
        "min_size": 5,
        "max_adc_ratio": 0.0,
    }
    assert choose_postprocessing({False: clean, True: clean}, labels)[0].to_dict() == {
        "tta": False,
        "threshold": 0.5,
        "min_size": 0,
        "max_adc_ratio": 0.0,
    }
    with pytest.raises(InputError, match="one probability map per label"):
        choose_postprocessing({False: faint[:2]}, labels)


def restricted_case(unit: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A mask with two lesions and the ADC map (1e-3 mm²/s times ``unit``) they lie in: tissue 0.8, a CSF
    block 3.0, 0 outside; lesion A (27 voxels) restricted at 0.4, look-alike B (8 voxels) at tissue ADC 0.8."""
    adc = np.zeros((20, 20, 10), np.float32)
    adc[2:18, 2:18, 1:9] = 0.8
    adc[8:12, 8:12, 1:9] = 3.0  # 128 CSF voxels (6 %): must not pull the reference up
    mask = np.zeros(adc.shape, np.uint8)
    mask[3:6, 3:6, 2:5] = 1
    adc[3:6, 3:6, 2:5] = 0.4
    mask[14:16, 14:16, 6:8] = 1
    return mask, adc * unit


def test_restricted_diffusion_gate_keeps_lesions_with_low_adc_in_any_unit() -> None:
    mask, adc = restricted_case()
    assert tissue_adc(adc) == pytest.approx(0.8)
    assert tissue_adc(np.zeros_like(adc)) == 0.0
    only_a = np.zeros_like(mask)
    only_a[3:6, 3:6, 2:5] = 1
    for unit in (1.0, 1000.0):  # 1e-3 or 1e-6 mm²/s: the gate is a ratio
        np.testing.assert_array_equal(keep_restricted_lesions(mask, adc * unit, 0.8), only_a)
    np.testing.assert_array_equal(keep_restricted_lesions(mask, adc, 1.01), mask)  # B's ratio is 1.0
    np.testing.assert_array_equal(keep_restricted_lesions(mask, adc, 0.0), mask)  # 0: off
    np.testing.assert_array_equal(keep_restricted_lesions(mask, np.zeros_like(adc), 0.8), mask)  # no ADC: kept
    outside = mask.copy()
    outside[0:2, 0:2, 0:2] = 1  # a DWI-bright blob in the air around the brain, where ADC is 0
    np.testing.assert_array_equal(keep_restricted_lesions(outside, adc, 0.8), only_a)
    np.testing.assert_array_equal(postprocess(outside.astype(np.float32), 0.5, 0, adc, 0.8), only_a)
    labels, ratios = _lesion_adc_ratios(outside, adc, tissue_adc(adc))  # what choosing the gate reads
    assert ratios is not None and np.isinf(ratios[labels[0, 0, 0]])


def test_choose_postprocessing_gates_on_adc_when_a_lookalike_costs_dice() -> None:
    mask, adc = restricted_case()
    label = np.zeros_like(mask)
    label[3:6, 3:6, 2:5] = 1  # B is a DWI-bright look-alike the model calls with confidence
    probability = [0.9 * mask.astype(np.float32)] * 2
    setting, score = choose_postprocessing({False: probability}, [label] * 2, adc=[adc] * 2)
    assert setting.to_dict() == {"tta": False, "threshold": 0.5, "min_size": 0, "max_adc_ratio": 0.9} and score == 1.0
    assert choose_postprocessing({False: probability}, [label] * 2, min_sizes=(0,))[0].max_adc_ratio == 0.0
    assert choose_postprocessing({False: probability}, [mask] * 2, adc=[adc] * 2)[0].max_adc_ratio == 0.0
    with pytest.raises(InputError, match="one ADC map per label"):
        choose_postprocessing({False: probability}, [label] * 2, adc=[adc])


def bright_dwi_model(x: torch.Tensor) -> torch.Tensor:
    """A stand-in network ``(B, 2, H, W) -> (B, 2, H, W)`` logits: lesion wherever the normalised DWI is bright
    (over 1.4× the median of the head, with the checkpoints' relative normalisation)."""
    lesion = 10.0 * (x[:, 0] - 0.4)
    return torch.stack([torch.zeros_like(lesion), lesion], dim=1)


def test_what_the_gate_removed_is_reported_and_warned_of_when_it_outweighs_the_mask() -> None:
    from types import SimpleNamespace

    from mdanet_sdk.inference.postprocess import PostprocessConfig
    from mdanet_sdk.inference.results import gate_removals

    probability = np.zeros((20, 20, 10), np.float32)
    probability[2:6, 2:6, 2:6] = 0.9  # 64 voxels, kept
    probability[10:18, 10:18, 2:8] = 0.9  # 384 voxels, removed by the gate
    probability[15:17, 2:4, 8] = 0.9  # 4 voxels: under the minimum size, never the gate's
    kept = np.zeros(probability.shape, np.uint8)
    kept[2:6, 2:6, 2:6] = 1
    gated = SimpleNamespace(settings=PostprocessConfig(threshold=0.5, min_size=5, max_adc_ratio=0.8))
    counts, warning = gate_removals(gated, probability, kept, 0.008)  # 2 mm voxels: 3.07 mL removed, 0.51 kept
    assert counts == {"gate_removed_lesions": 1, "gate_removed_ml": pytest.approx(3.072)}
    assert warning is not None and "removed 1 lesion(s) of 3.1 mL" in warning and "(0.5 mL)" in warning
    assert gate_removals(gated, probability, kept, 0.001)[1] is None  # 0.38 mL removed: under 1 mL
    more = kept.copy()
    more[10:18, 2:10, 2:8] = 1  # keeps more than it removed
    assert gate_removals(gated, probability, more, 0.008)[1] is None
    off = SimpleNamespace(settings=PostprocessConfig(threshold=0.5, min_size=5, max_adc_ratio=0.0))
    assert gate_removals(off, probability, kept, 0.008) == ({"gate_removed_lesions": 0, "gate_removed_ml": 0.0}, None)


def test_segmenter_gate_drops_lesions_with_normal_adc(inf_checkpoints, tmp_path, ckpt_random) -> None:
    images = brain((32, 32, 8))
    blob = (images["adc"] > 0) & (images["adc"] < 600)  # the restricted lesion of brain()
    lookalike = blob[::-1, ::-1]  # its mirror image: DWI as bright, ADC normal
    images["dwi"] = images["dwi"] + 80 * lookalike
    arrays, affine = stored(images, "RAS")
    ckpt = load_checkpoint(inf_checkpoints[0])
    loose = Segmenter([ckpt], models=[bright_dwi_model]).predict_arrays(arrays, affine)
    gated = Segmenter([ckpt], models=[bright_dwi_model], max_adc_ratio=0.8).predict_arrays(arrays, affine)
    assert loose.report.n_lesions == 2 and gated.report.n_lesions == 1 and gated.report.max_adc_ratio == 0.8
    expected = keep_restricted_lesions(loose.mask_canonical, images["adc"], 0.8)
    np.testing.assert_array_equal(gated.mask_canonical, expected)
    assert gated.mask_canonical[blob].all() and not gated.mask_canonical[lookalike].any()
    voxel_ml = float(np.prod(np.linalg.norm(affine[:3, :3], axis=0))) / 1000
    assert (loose.report.gate_removed_lesions, loose.report.gate_removed_ml) == (0, 0.0)
    assert gated.report.gate_removed_lesions == 1
    assert gated.report.gate_removed_ml == pytest.approx(lookalike.sum() * voxel_ml)
    assert CaseReport.from_dict(gated.report.to_dict()).gate_removed_ml == round(gated.report.gate_removed_ml, 3)
    older = {k: v for k, v in gated.report.to_dict().items() if not k.startswith("gate_")}  # schema 3: not said
    assert CaseReport.from_dict(older).gate_removed_ml is None
    ctp = ckpt_random(tmp_path / "ctp.pt", kind="ctp")
    with pytest.raises(InputError, match="needs a model with an adc input"):
        Segmenter.from_checkpoint(ctp, max_adc_ratio=0.8)
    with pytest.raises(InputError, match="0 \\(off\\) or positive"):
        Segmenter.from_checkpoint(inf_checkpoints[0], max_adc_ratio=-1)


def test_failed_cases_name_the_case_and_the_others_go_on(inf_checkpoints, tmp_path) -> None:
    good = write_case(tmp_path / "good", brain((32, 24, 5)), _base_affine(False), "good")
    no_adc = {"dwi": good["dwi"]}
    corrupt = tmp_path / "broken_dwi.nii.gz"
    corrupt.write_bytes(good["dwi"].read_bytes()[:200])  # a truncated gzip stream
    shifted = _base_affine(False)
    shifted[0, 3] += 5.0
    mismatched = {
        "dwi": good["dwi"],
        "adc": write_case(tmp_path / "moved", {"adc": brain((32, 24, 5))["adc"]}, shifted, "moved")["adc"],
    }
    seg = Segmenter.from_checkpoint(inf_checkpoints[0])
    out = list(seg.predict_many([good, no_adc, {"dwi": corrupt, "adc": good["adc"]}, mismatched, good], errors="yield"))
    assert [r.ok for r in out] == [True, False, False, False, True]
    assert isinstance(out[0], SegmentationResult) and isinstance(out[1], FailedCase)
    assert out[1].case_id == "good" and "case good has no adc image" in out[1].error  # the id of its mapping
    assert "broken_dwi" in out[2].error and "not a readable NIfTI" in out[2].error
    assert "affine" in out[3].error and "differs" in out[3].error
    assert all("\n" not in r.error for r in out[1:4])
    with pytest.raises(InputError, match="no adc image"):
        list(seg.predict_many([good, no_adc]))


def test_single_3d_file_is_refused_with_instructions(inf_checkpoints, tmp_path) -> None:
    path = write_case(tmp_path, {"dwi": brain((16, 16, 4))["dwi"]}, np.eye(4))["dwi"]
    with pytest.raises(InputError, match=r"needs dwi, adc.*-m dwi=dwi.nii.gz -m adc=adc.nii.gz"):
        Segmenter.from_checkpoint(inf_checkpoints[0]).predict(path)


def test_predict_many_streams_with_a_bounded_queue(inf_checkpoints, tmp_path) -> None:
    """Results come out one by one while inputs are pulled lazily, at most `prefetch` cases ahead."""
    files = write_case(tmp_path, brain((32, 32, 4)), _base_affine(False))
    pulled = []

    def cases():
        for i in range(20):
            pulled.append(i)
            yield files

    seg = Segmenter.from_checkpoint(inf_checkpoints[0], batch_size=4, prefetch=2)
    results = seg.predict_many(cases())
    assert inspect.isgenerator(results) and pulled == []  # nothing happens before the first result is asked
    assert next(results).case_id == "case"  # case_dwi.nii.gz, ... (data.cases.mapping_source)
    # The first case is done, at most `prefetch` cases wait in the queue and one more is being loaded.
    assert len(pulled) <= 1 + 2 + 1
    results.close()
    assert not any(t.name == "mdanet-sdk-loader" for t in threading.enumerate())
    assert len(pulled) < 20


def test_resampling_preprocess_restores_the_native_grid(tmp_path, ckpt_random) -> None:
    """A checkpoint whose preprocessing resamples slices to 64x64 returns the probability on the input's grid, in
    place: a stand-in network that marks the bright-DWI blob on the model grid must find it on the stored one."""
    ckpt = ckpt_random(tmp_path / "s64.pt", preprocess=PreprocessConfig(size=64))
    images = brain((50, 40, 5))
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in (50, 40, 5)], indexing="ij")
    blob = (sum((g - 0.3) ** 2 for g in grid) < 0.1).astype(np.float32)  # brain()'s blob: DWI 1.8x the head's
    arrays, affine = stored({**images, "blob": blob}, "LPS")
    seg = Segmenter([load_checkpoint(ckpt)], models=[bright_dwi_model], tta=False)
    result = seg.predict_arrays({"dwi": arrays["dwi"], "adc": arrays["adc"]}, affine)
    assert result.mask.shape == result.probability.shape == (50, 40, 5)
    # measured 1.00; mirrored 0.00, shifted by 3 voxels 0.61
    assert dsc(result.probability > 0.5, arrays["blob"] > 0.5) > 0.9


def _damaged(seg: Segmenter, index: int = 0) -> Segmenter:
    """``seg`` with the first parameter of model ``index`` set to NaN after loading (damaged weights)."""
    with torch.no_grad():
        next(seg.predictor.models[index].parameters()).fill_(float("nan"))
    return seg


def test_nan_weights_raise_instead_of_reporting_no_lesion(inf_checkpoints) -> None:
    """NaN logits used to give NaN probabilities, which pass no threshold: "0.00 mL, 0 lesions"."""
    case = make_phantom("isles22", 5, shape=(32, 24, 5))
    seg = _damaged(Segmenter.from_checkpoint(inf_checkpoints[0]))
    with pytest.raises(
        CheckpointError,
        match=r"model fold0 produced non-finite values \(NaN/Inf\) on case "
        r"phantom-5; its weights are damaged: re-train, re-export",
    ):
        seg.predict(case)
    ensemble = _damaged(Segmenter.from_checkpoint(inf_checkpoints), index=1)  # names the damaged fold
    with pytest.raises(CheckpointError, match="model fold1 produced"):
        ensemble.probabilities(_slices())
    healthy = Segmenter.from_checkpoint(inf_checkpoints[0])
    with pytest.raises(InputError, match="NaN/Inf values"):  # NaN input is not blamed on the weights
        healthy.probabilities(torch.full((1, 2, 16, 16), float("nan")))


def test_nan_weights_fail_predict_many_even_when_yielding_errors(inf_checkpoints, tmp_path) -> None:
    """A damaged model would fail every case, so predict_many raises (errors="yield" is for unreadable
    inputs) before yielding any result: no output of a case it touched is written, and the loader stops."""
    cases = [make_phantom("isles22", seed, shape=(32, 24, 5)) for seed in (5, 6)]
    seg = _damaged(Segmenter.from_checkpoint(inf_checkpoints[0], batch_size=3))
    written = []
    with pytest.raises(CheckpointError, match="non-finite values.*case phantom-5"):
        for result in seg.predict_many([*cases, {"dwi": tmp_path / "missing.nii.gz"}], errors="yield"):
            written.append(result.save(tmp_path / f"{result.case_id}.nii.gz"))
    assert written == [] and list(tmp_path.iterdir()) == []
    assert not any(t.name == "mdanet-sdk-loader" for t in threading.enumerate())
