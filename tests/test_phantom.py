"""Tests of mdanet_sdk.data.phantom: physics of the lesion contrast, anatomy, variability, determinism, layout."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from mdanet_sdk.data.cases import Case, find_cases
from mdanet_sdk.data.phantom import PATTERNS, PHANTOM_MODALITIES, case_seed, make_phantom, write_dataset
from mdanet_sdk.errors import InputError

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "isles22-example" / "rawdata" / "sub-strokecase0001"
SMALL = {"isles22": (48, 48, 24), "isles18": (64, 64, 3)}
# Direction of the lesion's effect per modality (paper Figs. 1 and 13): +1 brighter, -1 darker.
DIRECTION = {"dwi": 1, "adc": -1, "cbf": -1, "cbv": -1, "mtt": 1, "tmax": 1}


def _normal(ph) -> np.ndarray:
    """Normal-appearing brain: brain minus lesion minus look-alikes."""
    return ph.masks["brain"] & (ph.label == 0) & ~ph.masks["mimic"]


@pytest.mark.parametrize("layout", ["isles22", "isles18"])
@pytest.mark.parametrize("seed", range(6))
def test_lesion_moves_the_two_groups_in_opposite_directions(layout, seed) -> None:
    ph = make_phantom(layout, seed, shape=SMALL[layout])
    lesion, normal = ph.label.astype(bool), _normal(ph)
    assert lesion.sum() >= 1
    for modality in PHANTOM_MODALITIES[layout]:
        if modality == "ct":
            continue
        ratio = ph.images[modality][lesion].mean() / ph.images[modality][normal].mean()
        if DIRECTION[modality] > 0:
            assert ratio > 1.1, (modality, ratio)
        else:
            assert ratio < 0.9, (modality, ratio)


@pytest.mark.parametrize("layout", ["isles22", "isles18"])
def test_deterministic_per_seed(layout) -> None:
    a, b, c = (make_phantom(layout, s, shape=SMALL[layout]) for s in (5, 5, 6))
    for m in PHANTOM_MODALITIES[layout]:
        assert np.array_equal(a.images[m], b.images[m])
        assert not np.array_equal(a.images[m], c.images[m])
    assert np.array_equal(a.label, b.label) and np.array_equal(a.affine, b.affine)
    assert a.info == b.info


@pytest.mark.parametrize("layout", ["isles22", "isles18"])
def test_phantom_is_a_case_on_a_canonical_grid(layout) -> None:
    ph = make_phantom(layout=layout, seed=1, shape=SMALL[layout])
    assert isinstance(ph, Case) and ph.layout == layout
    assert ph.shape == SMALL[layout] and ph.modalities == PHANTOM_MODALITIES[layout]
    assert all(v.dtype == np.float32 and v.shape == SMALL[layout] for v in ph.images.values())
    assert ph.label.dtype == np.uint8 and set(np.unique(ph.label)) <= {0, 1}
    assert nib.aff2axcodes(ph.affine) == ("R", "A", "S")
    assert ph.stack(PHANTOM_MODALITIES[layout][:2]).shape == (2, *SMALL[layout])


def test_default_geometry_is_isles_like() -> None:
    for seed in range(4):
        mri = make_phantom("isles22", seed)
        x, y, z = mri.shape
        assert 96 <= x <= 128 and x <= y <= x + 16 and 40 <= z <= 80
        assert np.allclose(mri.reference.zooms[:2], mri.info["spacing_mm"][:2], atol=1e-3)
        assert 1.85 <= mri.reference.zooms[0] <= 2.15 and 2.0 <= mri.reference.zooms[2] <= 3.5
    ctp = make_phantom("isles18", 0)
    assert ctp.shape[:2] == (256, 256) and 2 <= ctp.shape[2] <= 8
    assert 0.78 <= ctp.reference.zooms[0] <= 1.0 and ctp.reference.zooms[2] == pytest.approx(5.0)


def test_small_grids_hold_a_whole_coarser_brain() -> None:
    ph = make_phantom("isles22", 2, shape=(32, 32, 16))
    brain = ph.masks["brain"]
    # No brain on the outermost in-plane voxels: the voxels grew so that the head fits.
    assert not brain[[0, -1]].any() and not brain[:, [0, -1]].any()
    assert ph.reference.zooms[0] > 4.0 and 0.2 < brain.mean() < 0.6


def test_lesions_respect_the_brain() -> None:
    for seed in range(8):
        ph = make_phantom("isles22", seed, shape=SMALL["isles22"])
        lesion = ph.label.astype(bool)
        assert not (lesion & ~ph.masks["brain"]).any()
        assert not (lesion & ph.masks["csf"]).any()
        assert not (lesion & ph.masks["mimic"]).any()


def test_csf_is_dark_in_dwi_and_bright_in_adc() -> None:
    ph = make_phantom("isles22", 3, shape=(64, 64, 32))
    csf, tissue = ph.masks["csf"], _normal(ph) & ~ph.masks["csf"]
    dwi, adc = ph.images["dwi"], ph.images["adc"]
    assert dwi[csf].mean() < 0.75 * dwi[tissue].mean()
    assert adc[csf].mean() > 2.5 * adc[tissue].mean()
    assert (dwi[~ph.masks["brain"]] == 0).all() and (adc[~ph.masks["brain"]] == 0).all()  # skull-stripped


def test_patterns_range_from_territorial_to_embolic() -> None:
    sizes = {}
    for pattern in PATTERNS["isles22"]:
        ph = make_phantom("isles22", 11, shape=(96, 96, 64), pattern=pattern)
        labelled, count = ndimage.label(ph.label)
        sizes[pattern] = (count, ph.label.sum() * ph.reference.voxel_volume_ml)
    assert sizes["territorial"][1] > 3.0  # ml
    assert sizes["embolic"][0] >= 3 and sizes["embolic"][1] < sizes["territorial"][1]
    assert sizes["lacunar"][1] < 2.0
    ph = make_phantom("isles22", 4, shape=SMALL["isles22"], pattern="multiple", n_lesions=3)
    assert [lesion["type"] for lesion in ph.info["lesions"]] == ["multiple"] * 3


def test_confounders_flag_one_group_only() -> None:
    found = 0
    for seed in range(12):
        ph = make_phantom("isles22", seed, shape=(64, 64, 32))
        types = {m["type"] for m in ph.info["mimics"]}
        region = ph.masks["mimic"] & ~ph.masks["csf"]
        if not types or not types <= {"t2-shine-through", "susceptibility"} or region.sum() < 20:
            continue
        # T2 shine-through and susceptibility: DWI bright without the ADC drop of an infarct.
        normal, lesion = _normal(ph) & ~ph.masks["csf"], ph.label.astype(bool)
        dwi, adc = ph.images["dwi"], ph.images["adc"]
        assert dwi[region].mean() > 1.1 * np.median(dwi[normal])
        assert adc[region].mean() > 0.9 * np.median(adc[normal]) > 1.2 * np.median(adc[lesion])
        found += 1
    assert found >= 2
    ctp = make_phantom("isles18", 0, shape=SMALL["isles18"])
    penumbra = ctp.masks["mimic"] & ctp.masks["brain"] & ~ctp.masks["csf"]
    normal = _normal(ctp) & ~ctp.masks["csf"]
    assert ctp.images["tmax"][penumbra].mean() > 2 * ctp.images["tmax"][normal].mean()


def test_intensity_scale_and_units_vary_between_cases() -> None:
    cases = [make_phantom("isles22", s, shape=(32, 32, 12)) for s in range(10)]
    units = {c.info["units"]["adc"] for c in cases}
    assert units == {"1e-3 mm^2/s", "1e-6 mm^2/s"}
    for c in cases:
        tissue_adc = np.median(c.images["adc"][_normal(c) & ~c.masks["csf"]])
        assert 0.5 < tissue_adc < 1.1 if c.info["units"]["adc"] == "1e-3 mm^2/s" else 500 < tissue_adc < 1100
    gains = [c.info["dwi_gain"] for c in cases]
    assert max(gains) / min(gains) > 3.0


@pytest.mark.skipif(not REAL.is_dir(), reason="shared/data/isles22-example is not present")
def test_intensity_distribution_resembles_the_real_isles22_case() -> None:
    """Unit-free statistics of the real DWI/ADC case vs. phantoms of its grid."""

    def stats(dwi, adc, brain):
        median = np.median(adc[brain])
        tissue, csf = brain & (adc < 1.2 * median), brain & (adc > 2.5 * median)
        return np.array(
            [
                np.median(adc[csf]) / np.median(adc[tissue]),  # CSF/tissue ADC ≈ 3.6
                np.median(dwi[csf]) / np.median(dwi[tissue]),  # CSF/tissue DWI ≈ 0.44
                (brain & (adc > 1.5 * median)).sum() / brain.sum(),  # CSF incl. partial volume ≈ 0.33
                brain.mean(),  # share of the grid that is brain ≈ 0.16
            ]
        )

    folder = REAL / "ses-0001" / "dwi"
    dwi = nib.load(next(folder.glob("*_dwi.nii.gz"))).get_fdata()
    adc = nib.load(next(folder.glob("*_adc.nii.gz"))).get_fdata()
    real = stats(dwi, adc, dwi > 0)
    for seed in range(3):
        ph = make_phantom("isles22", seed, shape=dwi.shape)
        synthetic = stats(ph.images["dwi"], ph.images["adc"], ph.masks["brain"])
        assert np.all(np.abs(synthetic / real - 1.0) < [0.2, 0.5, 0.35, 0.6]), (seed, synthetic, real)


def test_generation_is_fast() -> None:
    make_phantom("isles22", 0, shape=(64, 64, 32))  # warm-up (imports, caches)
    start = time.process_time()
    make_phantom("isles22", 1, shape=(128, 144, 80))  # the largest default grid
    make_phantom("isles18", 1, shape=(256, 256, 8))
    assert time.process_time() - start < 4.0  # ~0.8 s of CPU on an idle machine


def test_invalid_options_raise_input_error(tmp_path) -> None:
    with pytest.raises(InputError, match="layout"):
        make_phantom("isles19", 0)
    with pytest.raises(InputError, match="pattern"):
        make_phantom("isles18", 0, pattern="embolic")
    with pytest.raises(InputError, match="shape"):
        make_phantom("isles22", 0, shape=(8, 8, 8))
    with pytest.raises(InputError, match="n_lesions"):
        make_phantom("isles22", 0, n_lesions=0)
    with pytest.raises(InputError, match="n_cases"):
        write_dataset(tmp_path / "x", "isles22", 0)
    with pytest.raises(InputError, match="workers"):
        write_dataset(tmp_path / "x", "isles22", 2, workers=0)
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="is a file"):
        write_dataset(tmp_path / "file", "isles22", 1)


def test_write_dataset_in_parallel_writes_the_same_dataset(tmp_path) -> None:
    """Cases written by worker processes hold the same voxels and records as cases written one by one."""
    options = {"shape": (24, 24, 6), "domain": "mixed"}
    serial = write_dataset(tmp_path / "serial", "isles22", 5, seed=7, **options)
    parallel = write_dataset(tmp_path / "parallel", "isles22", 5, seed=7, workers=2, **options)
    assert (serial / "phantoms.json").read_text() == (parallel / "phantoms.json").read_text()
    domains = [c["info"]["domain"] for c in json.loads((parallel / "phantoms.json").read_text())["cases"]]
    assert domains == ["classic", "randomised", "classic", "randomised", "classic"]
    files = sorted(p.relative_to(serial) for p in serial.rglob("*.nii.gz"))
    assert len(files) == 15
    for rel in files:
        a, b = nib.load(serial / rel), nib.load(parallel / rel)
        assert np.array_equal(a.get_fdata(), b.get_fdata()) and np.array_equal(a.affine, b.affine)


def test_write_dataset_isles22_layout(tmp_path) -> None:
    root = write_dataset(tmp_path / "ds", "isles22", 3, seed=4, shape=(32, 32, 12))
    for i in range(1, 4):
        sub = f"sub-strokecase{i:04d}"
        for suffix in ("dwi", "adc"):
            assert (root / "rawdata" / sub / "ses-0001" / "dwi" / f"{sub}_ses-0001_{suffix}.nii.gz").is_file()
        mask = root / "derivatives" / sub / "ses-0001" / f"{sub}_ses-0001_msk.nii.gz"
        assert mask.is_file() and nib.load(mask).get_data_dtype() == np.uint8
    assert json.loads((root / "dataset_description.json").read_text())["DatasetType"] == "raw"
    record = json.loads((root / "phantoms.json").read_text())
    assert [c["seed"] for c in record["cases"]] == [case_seed(4, i) for i in range(3)] == [4000, 4001, 4002]

    orientations = set()
    for i, source in enumerate(find_cases(root)):
        case, ph = source.load(), make_phantom("isles22", case_seed(4, i), shape=(32, 32, 12))
        orientations.add(case.reference.orientation)
        assert case.case_id == f"sub-strokecase{i + 1:04d}"
        assert np.array_equal(case.label, ph.label)
        for m in ("dwi", "adc"):
            assert np.array_equal(case.images[m], ph.images[m])  # exact, whatever the stored orientation
        assert np.allclose(case.reference.affine, ph.affine, atol=1e-4)
        header = nib.load(source.paths["dwi"]).header
        assert int(header["qform_code"]) == 2 and int(header["sform_code"]) == 1
    assert orientations <= {("L", "A", "S"), ("R", "A", "S")}


def test_write_dataset_isles18_layout(tmp_path) -> None:
    root = write_dataset(tmp_path / "ds", "isles18", 2, seed=1, shape=(40, 40, 2))
    for case in ("case_1", "case_2"):
        folders = sorted(p.name for p in (root / "TRAINING" / case).iterdir())
        tokens = sorted(name.split(".")[4] for name in folders)
        assert tokens == sorted(["CT_CBF", "CT_CBV", "CT_MTT", "CT_Tmax", "CT", "OT"])
        for name in folders:
            assert name.startswith("SMIR.Brain.XX.O.") and (root / "TRAINING" / case / name / f"{name}.nii").is_file()
    sources = find_cases(root)
    assert [s.case_id for s in sources] == ["case_1", "case_2"]
    case, ph = sources[1].load(), make_phantom("isles18", case_seed(1, 1), shape=(40, 40, 2))
    assert list(case.images) == ["cbf", "cbv", "mtt", "tmax"]
    assert all(np.array_equal(case.images[m], ph.images[m]) for m in case.images)
    assert np.array_equal(case.label, ph.label) and case.reference.zooms[2] == pytest.approx(5.0, abs=1e-4)


def test_cli_synth_writes_n_cases(tmp_path) -> None:
    from typer.testing import CliRunner

    from mdanet_sdk.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["synth", str(tmp_path / "mri"), "--cases", "3", "--seed", "2", "--shape", "32x32x_"])
    assert result.exit_code == 0, result.output
    sources = find_cases(tmp_path / "mri")
    assert [s.case_id for s in sources] == ["sub-strokecase0001", "sub-strokecase0002", "sub-strokecase0003"]
    assert all(s.label_path is not None for s in sources)
    assert sources[0].load().shape[:2] == (32, 32)
    result = runner.invoke(
        app, ["synth", str(tmp_path / "ctp"), "--kind", "ctp", "--cases", "2", "--shape", "32x32x2", "--workers", "2"]
    )
    assert result.exit_code == 0, result.output
    assert [s.case_id for s in find_cases(tmp_path / "ctp")] == ["case_1", "case_2"]
    result = runner.invoke(app, ["synth", str(tmp_path / "bad"), "--shape", "32x32"])
    assert result.exit_code == 2 and "--shape" in result.output


def test_cli_synth_kind_is_the_modality_kind(tmp_path) -> None:
    """``--kind mri`` writes the ISLES'22 layout (as ``--kind isles22`` did, file for file); an unknown kind is
    a usage error."""
    from typer.testing import CliRunner

    from mdanet_sdk.cli import app

    runner = CliRunner()
    args = ["--cases", "2", "--seed", "1", "--shape", "32x32x4"]
    result = runner.invoke(app, ["synth", str(tmp_path / "mri"), "--kind", "mri", *args])
    assert result.exit_code == 0, result.output
    assert "mri" in result.output and "isles22" in result.output
    sources = find_cases(tmp_path / "mri")
    assert [s.case_id for s in sources] == ["sub-strokecase0001", "sub-strokecase0002"]
    assert sources[0].modalities == ("dwi", "adc") and all(s.label_path is not None for s in sources)
    assert (tmp_path / "mri" / "rawdata").is_dir() and (tmp_path / "mri" / "dataset_description.json").is_file()
    assert runner.invoke(app, ["synth", str(tmp_path / "old"), "--kind", "isles22", *args]).exit_code == 0
    files = sorted(p.relative_to(tmp_path / "mri") for p in (tmp_path / "mri").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "old") for p in (tmp_path / "old").rglob("*") if p.is_file())
    assert all((tmp_path / "mri" / f).read_bytes() == (tmp_path / "old" / f).read_bytes() for f in files)
    result = runner.invoke(app, ["synth", str(tmp_path / "bad"), "--kind", "pet"])
    assert result.exit_code == 2 and "--kind" in result.output
    assert not (tmp_path / "bad").exists()


def test_write_dataset_never_replaces_real_data_and_never_leaves_half_a_dataset(tmp_path, monkeypatch) -> None:
    """synth used to write its cases over a real ISLES'22 copy of the same names (and mark the whole folder as
    synthetic), and an interrupted run left complete-looking cases without phantoms.json."""
    import mdanet_sdk.data.phantom.writer as writer
    from typer.testing import CliRunner

    from mdanet_sdk.cli import app

    real = tmp_path / "real"
    scan = real / "rawdata/sub-strokecase0001/ses-0001/dwi/sub-strokecase0001_ses-0001_dwi.nii.gz"
    scan.parent.mkdir(parents=True)
    scan.write_bytes(b"a real scan")
    with pytest.raises(InputError, match="did not write"):
        write_dataset(real, "isles22", 1, shape=(24, 24, 2))
    assert scan.read_bytes() == b"a real scan" and not (real / "phantoms.json").exists()

    ds = write_dataset(tmp_path / "ds", "isles22", 3, seed=1, shape=(24, 24, 2))
    smaller = write_dataset(ds, "isles22", 1, seed=2, shape=(24, 24, 2))  # an earlier synth dataset: replaced whole
    assert [s.case_id for s in find_cases(smaller)] == ["sub-strokecase0001"]
    (ds / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="notes.txt"):
        write_dataset(ds, "isles22", 1, shape=(24, 24, 2))
    (ds / "notes.txt").unlink()
    (ds / "rawdata" / "sub-real01").mkdir()  # a real case added to a synthetic dataset is never removed
    with pytest.raises(InputError, match="sub-real01"):
        write_dataset(ds, "isles22", 1, shape=(24, 24, 2))
    assert (ds / "rawdata" / "sub-real01").is_dir()

    calls = []

    def interrupted(*args):
        if calls:
            raise KeyboardInterrupt
        calls.append(args)
        return real_write(*args)

    real_write = writer._write_case
    monkeypatch.setattr(writer, "_write_case", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path / "cut", "isles22", 3, shape=(24, 24, 2))
    monkeypatch.setattr(writer, "_write_case", real_write)
    assert list((tmp_path / "cut").iterdir()) == []  # no half dataset, no hidden leftover

    here, target = tmp_path / "here", tmp_path / "target"
    here.mkdir()
    target.mkdir()
    (tmp_path / "link").symlink_to(target, target_is_directory=True)
    monkeypatch.chdir(here)
    for out in (Path("."), tmp_path / "link"):  # the working folder (or a mount point) and a link stay in place
        write_dataset(out, "isles22", 1, shape=(24, 24, 2))
    assert [s.case_id for s in find_cases(here)] == [s.case_id for s in find_cases(target)] == ["sub-strokecase0001"]
    assert (tmp_path / "link").is_symlink()

    (target / "rawdata" / ".DS_Store").write_text("")  # hidden files a file browser leaves never block a rerun
    write_dataset(target, "isles22", 1, shape=(24, 24, 2))

    runner = CliRunner()
    for args, expected in ((["--seed", "-5"], "seed"), (["--shape", "100000x100000x1"], "shape must be")):
        result = runner.invoke(app, ["synth", str(tmp_path / "bad"), *args])
        assert result.exit_code == 2 and expected in result.output and "Traceback" not in result.output
    assert not (tmp_path / "bad").exists()
