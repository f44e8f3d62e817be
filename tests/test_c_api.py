"""The C API (libmdanet, mdanet/mdanet.h): C99 programs built by the system compiler against the header alone,
the same masks as `mdanet-sdk segment --model`, and every bad argument answered with a status and a sentence."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mdanet_sdk import ops
from mdanet_sdk.cli import app
from mdanet_sdk.cli.demo import DEMO_SEED
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.data.phantom import write_dataset
from mdanet_sdk.errors import CheckpointError, InputError
from mdanet_sdk.export import BatchRange, export_checkpoint, export_model, load_artifact, probe_batch
from mdanet_sdk.export.engine import c_api_root, open_engine, segment_volume
from mdanet_sdk.inference import Segmenter
from mdanet_sdk.inference.postprocess import PostprocessConfig
from mdanet_sdk.metrics import dsc
from mdanet_sdk.model import build_model

EXAMPLES = Path(__file__).resolve().parents[1] / "export" / "c"
SIZE = 64
CC = shutil.which("cc")

pytestmark = [
    pytest.mark.skipif(not ops.native_available(), reason="the native build (libmdanet) is not installed"),
    pytest.mark.skipif(CC is None, reason="no C compiler (cc) on PATH"),
    pytest.mark.filterwarnings(r"ignore:.*torch\.jit:DeprecationWarning"),
]

# status codes of mdanet.h
OK, INVALID_ARGUMENT, FILE_ERROR, INVALID_ARTIFACT, UNAVAILABLE, OUT_OF_MEMORY = 0, 1, 2, 3, 4, 6


@pytest.fixture(scope="module")
def root() -> Path:
    return c_api_root()


@pytest.fixture(scope="module")
def programs(root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two examples, compiled as strict C99 with every warning an error: the header is plain C."""
    build = tmp_path_factory.mktemp("c-examples")
    built = {}
    for name, extra in (("mdanet_segment", ["nifti1_io.c"]), ("mdanet_run", [])):
        sources = [str(EXAMPLES / f"{name}.c"), *(str(EXAMPLES / e) for e in extra)]
        command = [CC, "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-O1", f"-I{root / 'include'}"]
        command += [*sources, f"-L{root / 'lib'}", "-lmdanet", "-lm", f"-Wl,-rpath,{root / 'lib'}"]
        command += ["-o", str(build / name)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        built[name] = build / name
    return built


@pytest.fixture(scope="module")
def lib(root: Path) -> ctypes.CDLL:
    """libmdanet through ctypes: a foreign caller with nothing but the C ABI."""
    c = ctypes.CDLL(str(root / "lib" / "libmdanet.so"))
    c.mdanet_last_error.restype = ctypes.c_char_p
    c.mdanet_version.restype = ctypes.c_char_p
    c.mdanet_status_name.restype = ctypes.c_char_p
    c.mdanet_open.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    c.mdanet_close.argtypes = [ctypes.c_void_p]
    c.mdanet_run_slices.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
    c.mdanet_run_slices.argtypes += [ctypes.c_void_p, ctypes.c_int64]
    c.mdanet_segment_volume.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int64] * 4
    c.mdanet_segment_volume.argtypes += [ctypes.c_void_p] * 5
    c.mdanet_model_modality.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.POINTER(ctypes.c_char_p)]
    c.mdanet_model_input_shape.argtypes = [ctypes.c_void_p] + [ctypes.POINTER(ctypes.c_int64)] * 3
    return c


@pytest.fixture(scope="module")
def small_artefact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small model as TorchScript (mdanet:: op calls kept), max batch 4."""
    torch.manual_seed(0)
    model = build_model(MDANetConfig.from_preset("small", "mri"), ops="native").eval()
    out = tmp_path_factory.mktemp("c-artefact") / "m.ts"
    return export_model(model, "torchscript", out, preprocess={"size": SIZE}, batch=BatchRange(1, 4, 4)).path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bundled MRI model exported, and the demo's phantom case (smaller grid) as gz and plain .nii."""
    folder = tmp_path_factory.mktemp("c-demo")
    model = export_checkpoint("default-mri", "torchscript", folder / "mri.ts", batch=BatchRange(1, 16, 16)).path
    data = write_dataset(
        folder / "data", "isles22", n_cases=1, seed=DEMO_SEED, pattern="territorial", shape=(96, 96, 24)
    )
    files = {"model": model, "data": data}
    for name in ("dwi", "adc"):
        (gz,) = data.rglob(f"*_{name}.nii.gz")
        image = nib.load(gz)
        nib.save(image, folder / f"{name}.nii")
        files[name] = folder / f"{name}.nii"
    return files


def _open(lib: ctypes.CDLL, path: Path | str, device: str = "cpu") -> tuple[int, ctypes.c_void_p]:
    handle = ctypes.c_void_p()
    status = lib.mdanet_open(str(path).encode(), device.encode(), ctypes.byref(handle))
    return status, handle


def _error(lib: ctypes.CDLL) -> str:
    return lib.mdanet_last_error().decode()


def test_c_program_writes_the_mask_of_mdanet_sdk_segment(programs, demo, tmp_path):
    from typer.testing import CliRunner

    out = tmp_path / "mask.nii"
    done = subprocess.run(
        [str(programs["mdanet_segment"]), str(demo["model"]), str(out), str(demo["dwi"]), str(demo["adc"])],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    ours = np.asarray(nib.load(out).dataobj)
    result = CliRunner().invoke(
        # every slice flipped, as the artefact's own pipeline does: the same computation, so the same mask
        app,
        ["segment", str(demo["data"]), "--model", str(demo["model"]), "--no-tta-screen", "-o", str(tmp_path / "py")],
    )
    assert result.exit_code == 0, result.stdout
    (written,) = (tmp_path / "py").rglob("*_seg.nii.gz")
    expected = np.asarray(nib.load(written).dataobj)
    assert ours.shape == expected.shape == (96, 96, 24)
    assert expected.sum() > 100  # a lesion was found: the comparison is not of two empty masks
    assert np.array_equal(ours, expected)
    assert np.allclose(nib.load(out).affine, nib.load(written).affine, atol=1e-5)


def test_segmenter_through_libmdanet_gives_identical_masks(demo):
    case = {"dwi": str(demo["dwi"]), "adc": str(demo["adc"])}
    torch_path = Segmenter.from_exported(demo["model"], tta=False).predict(case)
    engine_path = Segmenter.from_exported(demo["model"], engine="libmdanet", tta=False).predict(case)
    assert np.array_equal(torch_path.mask, engine_path.mask) and torch_path.mask.sum() > 100
    assert np.abs(torch_path.probability - engine_path.probability).max() < 1e-5
    # The case in a 3x wider field of view: both crop the same box around the head (head_fill).
    dwi = nib.load(demo["dwi"])
    wide = {m: np.pad(np.asarray(nib.load(demo[m]).dataobj), ((96, 96), (96, 96), (0, 0))) for m in ("dwi", "adc")}
    torch_wide = Segmenter.from_exported(demo["model"], tta=False).predict_arrays(wide, dwi.affine)
    engine_wide = Segmenter.from_exported(demo["model"], engine="libmdanet", tta=False).predict_arrays(wide, dwi.affine)
    assert np.array_equal(torch_wide.mask, engine_wide.mask)
    # The box is the head's, not the stored field of view, so the grid differs slightly: measured Dice 0.90.
    assert dsc(torch_wide.mask[96:192, 96:192], torch_path.mask) > 0.85


def test_segment_volume_from_python_turns_any_orientation_back(demo):
    engine = open_engine(demo["model"])
    settings = PostprocessConfig.from_dict(engine.meta["checkpoint"].get("inference", {})).updated(tta=False)
    dwi, adc = (nib.load(demo[m]) for m in ("dwi", "adc"))
    images = {"dwi": np.asarray(dwi.dataobj), "adc": np.asarray(adc.dataobj)}
    mask, probability = segment_volume(engine, images, dwi.affine, settings=settings)
    # The same case stored with its first axis reversed (and the affine saying so) gives the same mask, reversed.
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = images["dwi"].shape[0] - 1
    flipped = {m: a[::-1] for m, a in images.items()}
    mask_f, _ = segment_volume(engine, flipped, dwi.affine @ flip, settings=settings)
    assert mask.sum() > 100 and np.array_equal(mask_f[::-1], mask)
    # the mask is the post-processed probability: every voxel of it above the threshold
    assert probability.dtype == np.float32 and probability.max() <= 1.0
    assert (probability[mask > 0] > settings.threshold).all() and (probability > settings.threshold).sum() >= mask.sum()
    brain = np.zeros(mask.shape, np.uint8)
    brain[:, :, :12] = 1  # lesions only where the given brain mask is
    masked, masked_probability = segment_volume(engine, images, dwi.affine, brain_mask=brain, settings=settings)
    assert mask[:, :, 12:].sum() > 0 and masked[:, :, 12:].sum() == 0  # there was a lesion there before
    # Slices 12+ lie outside the brain mask: not predicted (slice_runs), probability 0; the others predicted.
    assert not masked_probability[:, :, 12:].any() and masked_probability[:, :, :12].max() > 0.5
    with pytest.raises(InputError, match="empty or constant"):
        segment_volume(engine, {"dwi": np.zeros((8, 8, 4)), "adc": np.ones((8, 8, 4))}, np.eye(4))
    with pytest.raises(InputError, match="no 'adc' image"):
        segment_volume(engine, {"dwi": images["dwi"]}, dwi.affine)
    # What mdanet-sdk segment refuses, the artefact's own pipeline refuses too (it answered "0 lesions").
    with pytest.raises(InputError, match="identical"):
        segment_volume(engine, {"dwi": images["dwi"], "adc": images["dwi"].copy()}, dwi.affine)
    broken = images["dwi"].astype(np.float32)
    broken[: broken.shape[0] // 3] = np.inf
    with pytest.raises(InputError, match="infinite"):
        segment_volume(engine, {"dwi": broken, "adc": images["adc"]}, dwi.affine)


@pytest.fixture(scope="module")
def ctp_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ctp")
    return export_checkpoint("default-ctp", "torchscript", folder / "ctp.ts", batch=BatchRange(1, 16, 16)).path


def test_the_exported_pipeline_reads_perfusion_maps_as_python_does(ctp_model):
    """Perfusion maps with noise in the air (the head mask grows) and junk transit times in a bone ring (set to 0):
    the artefact's scripted pipeline gives Python's mask."""
    from ood_phantoms import ood_case
    from scipy import ndimage

    case = ood_case("ctp", 0)
    rng = np.random.default_rng(0)
    head, core = case.masks["head"], case.label > 0
    ring = ndimage.binary_dilation(head, iterations=4) & ~head
    images = {}
    for k, v in case.images.items():
        noisy = np.where(head, v, np.abs(rng.normal(0.0, 0.2 * np.median(v[case.masks["tissue"]]), v.shape)))
        images[k] = np.where(ring, np.percentile(v[core], 90), noisy) if k in ("mtt", "tmax") else noisy
    images = {k: v.astype(np.float32) for k, v in images.items()}
    python = Segmenter.from_exported(ctp_model, tta=False).predict_arrays(images, case.affine)
    engine = open_engine(ctp_model)
    settings = PostprocessConfig.from_dict(engine.meta["checkpoint"].get("inference", {})).updated(tta=False)
    mask, _ = segment_volume(engine, images, case.affine, settings=settings)
    assert np.array_equal(mask, python.mask) and dsc(mask, case.label) > 0.85  # measured 0.88 (no TTA)


def test_the_exported_pipeline_finds_the_head_of_a_noisy_dwi_as_python_does(demo):
    """A DWI of SNR 10 with fitted noise in the ADC's air, whose border the head mask must test for noise
    (pipeline revision 3): the artefact's scripted pipeline gives Python's mask, and finds the lesion."""
    from ood_phantoms import ood_case

    case = ood_case("mri", 0)
    rng = np.random.default_rng(0)
    sigma = 0.1 * float(np.median(case.images["dwi"][case.masks["tissue"]]))
    shape = case.label.shape
    dwi = np.hypot(case.images["dwi"] + sigma * rng.standard_normal(shape), sigma * rng.standard_normal(shape))
    adc = case.images["adc"]
    fitted = rng.uniform(0.0, 3.0 * float(np.median(adc[case.masks["tissue"]])), shape)
    images = {"dwi": dwi.astype(np.float32), "adc": np.where(case.masks["head"], adc, fitted).astype(np.float32)}
    python = Segmenter.from_exported(demo["model"], tta=False).predict_arrays(images, case.affine)
    engine = open_engine(demo["model"])
    settings = PostprocessConfig.from_dict(engine.meta["checkpoint"].get("inference", {})).updated(tta=False)
    mask, _ = segment_volume(engine, images, case.affine, settings=settings)
    assert np.array_equal(mask, python.mask) and dsc(mask, case.label) > 0.9


def test_an_artefact_of_an_older_pipeline_says_to_export_it_again(ctp_model, monkeypatch, caplog):
    """An artefact carries the pipeline of its export, which mdanet_segment_volume runs."""
    from mdanet_sdk.export import engine

    with caplog.at_level("WARNING", logger="mdanet_sdk.export.engine"):
        open_engine(ctp_model)
        assert not caplog.records
        monkeypatch.setattr(engine, "PIPELINE_REVISION", engine.PIPELINE_REVISION + 1)
        open_engine(ctp_model)
        Segmenter.from_exported(ctp_model)  # runs Python's pipeline: nothing to say
    assert len(caplog.records) == 1 and "export it again" in caplog.records[0].getMessage()


def test_c_program_refuses_misaligned_images_and_never_writes_over_an_input(programs, demo, tmp_path):
    adc = nib.load(demo["adc"])
    moved = adc.affine.copy()
    moved[1, 3] += 5.0
    shifted = tmp_path / "adc_moved.nii"
    nib.save(nib.Nifti1Image(np.asarray(adc.dataobj), moved), shifted)
    program, model = str(programs["mdanet_segment"]), str(demo["model"])
    done = subprocess.run(
        [program, model, str(tmp_path / "m.nii"), str(demo["dwi"]), str(shifted)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1 and "is not on the grid" in done.stderr and not (tmp_path / "m.nii").exists()
    copy = tmp_path / "dwi_copy.nii"
    copy.write_bytes(demo["dwi"].read_bytes())
    done = subprocess.run(
        [program, model, str(copy), str(copy), str(demo["adc"])], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 1 and "is an input file" in done.stderr
    assert copy.read_bytes() == demo["dwi"].read_bytes()


def test_slices_runner_matches_python(programs, small_artefact, tmp_path):
    x = probe_batch(7, 2, SIZE, SIZE, seed=11)  # 7 > max batch 4: two chunks, in C as in Python
    x.numpy().tofile(tmp_path / "in.f32")
    run = [str(programs["mdanet_run"]), str(small_artefact), str(tmp_path / "in.f32"), str(tmp_path / "out.f32")]
    done = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "7 slice(s) 2x64x64 -> logits [7, 2, 64, 64]" in done.stderr
    got = np.fromfile(tmp_path / "out.f32", dtype=np.float32).reshape(7, 2, SIZE, SIZE)
    expected = load_artifact(small_artefact)(x).numpy()
    assert np.abs(got - expected).max() <= 1e-4
    np.zeros(2 * SIZE * SIZE + 5, dtype=np.float32).tofile(tmp_path / "bad.f32")
    run[2:4] = [str(tmp_path / "bad.f32"), str(tmp_path / "out2.f32")]
    bad = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "not a whole number of slices of 2x64x64" in bad.stderr
    assert not (tmp_path / "out2.f32").exists()


def test_library_exports_only_the_c_api(root):
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm is not installed")
    listed = subprocess.run(
        [nm, "-D", "--defined-only", str(root / "lib" / "libmdanet.so")], capture_output=True, text=True
    )
    names = [line.split()[-1] for line in listed.stdout.splitlines() if line.strip()]
    header = (root / "include" / "mdanet" / "mdanet.h").read_text()
    assert names and all(n.startswith("mdanet_") for n in names), names
    assert all(f" {n}(" in header for n in names)  # every exported function is declared in the header


def test_metadata_and_bad_arguments_through_ctypes(lib, small_artefact, tmp_path):
    assert lib.mdanet_version().decode() and lib.mdanet_api_version() == 2 and lib.mdanet_artifact_version() == 1
    status, model = _open(lib, small_artefact)
    assert status == OK, _error(lib)
    try:
        name = ctypes.c_char_p()
        assert lib.mdanet_model_modality(model, 1, ctypes.byref(name)) == OK and name.value == b"adc"
        assert lib.mdanet_model_modality(model, 2, ctypes.byref(name)) == INVALID_ARGUMENT
        assert "outside 0..1" in _error(lib)
        c, h, w = (ctypes.c_int64() for _ in range(3))
        assert lib.mdanet_model_input_shape(model, ctypes.byref(c), ctypes.byref(h), ctypes.byref(w)) == OK
        assert (c.value, h.value, w.value) == (2, SIZE, SIZE)
        assert lib.mdanet_model_input_shape(model, None, ctypes.byref(h), ctypes.byref(w)) == INVALID_ARGUMENT
        x = np.zeros((1, 2, SIZE, SIZE), np.float32)
        out = np.zeros((1, 2, SIZE, SIZE), np.float32)
        assert lib.mdanet_run_slices(model, x.ctypes.data, 1, x.size - 1, out.ctypes.data, out.size) == INVALID_ARGUMENT
        assert "slices_len is" in _error(lib)
        assert lib.mdanet_run_slices(model, None, 1, x.size, out.ctypes.data, out.size) == INVALID_ARGUMENT
        assert lib.mdanet_run_slices(model, x.ctypes.data, 0, 0, out.ctypes.data, 0) == INVALID_ARGUMENT
        assert lib.mdanet_run_slices(model, x.ctypes.data, 2**62, x.size, out.ctypes.data, out.size) == INVALID_ARGUMENT
        x[0, 0, 0, 0] = np.nan
        assert lib.mdanet_run_slices(model, x.ctypes.data, 1, x.size, out.ctypes.data, out.size) == INVALID_ARGUMENT
        assert "NaN/Inf" in _error(lib) and not out.any()  # left untouched on failure
        volume = np.ones((3, 8, 8, 8), np.float32)
        mask = np.zeros((8, 8, 8), np.uint8)
        affine = np.eye(4)
        args = (volume.ctypes.data, 3, 8, 8, 8, affine.ctypes.data, None, None, mask.ctypes.data, None)
        assert lib.mdanet_segment_volume(model, *args) == INVALID_ARGUMENT
        assert "reads 2 modalities, given 3" in _error(lib)
        args = (volume.ctypes.data, 2, 8, 8, 8, None, None, None, mask.ctypes.data, None)
        assert lib.mdanet_segment_volume(model, *args) == INVALID_ARGUMENT and "affine is NULL" in _error(lib)
        args = (volume.ctypes.data, 2, 8, 8, 8, affine.ctypes.data, None, None, None, None)
        assert lib.mdanet_segment_volume(model, *args) == INVALID_ARGUMENT and "mask is NULL" in _error(lib)
    finally:
        lib.mdanet_close(model)
    lib.mdanet_close(None)  # a no-op
    lib.mdanet_close(model)  # closed already: a no-op too (it was a double free)
    c = ctypes.c_int64()
    assert lib.mdanet_model_input_shape(model, ctypes.byref(c), ctypes.byref(c), ctypes.byref(c)) == INVALID_ARGUMENT
    assert "not an open handle" in _error(lib)  # it read freed memory and answered MDANET_OK
    assert _open(lib, tmp_path / "missing.ts")[0] == FILE_ERROR
    assert _open(lib, tmp_path)[0] == FILE_ERROR and "is a folder" in _error(lib)
    (tmp_path / "text.ts").write_text("not a model")
    assert _open(lib, tmp_path / "text.ts")[0] == INVALID_ARTIFACT and "not a TorchScript archive" in _error(lib)
    assert _open(lib, small_artefact, "cuda:0")[0] == (OK if torch.cuda.is_available() else UNAVAILABLE)
    assert _open(lib, small_artefact, "tpu")[0] == INVALID_ARGUMENT
    assert lib.mdanet_open(None, None, None) == INVALID_ARGUMENT and "model is NULL" in _error(lib)


def test_one_handle_serves_several_threads(lib, small_artefact):
    status, model = _open(lib, small_artefact)
    assert status == OK
    x = probe_batch(3, 2, SIZE, SIZE, seed=5).numpy()
    expected = load_artifact(small_artefact)(torch.from_numpy(x)).numpy()
    results: list[np.ndarray] = []
    errors: list[str] = []

    def work() -> None:
        out = np.zeros((3, 2, SIZE, SIZE), np.float32)
        if lib.mdanet_run_slices(model, x.ctypes.data, 3, x.size, out.ctypes.data, out.size) != OK:
            errors.append(_error(lib))
        results.append(out)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lib.mdanet_close(model)
    assert not errors and len(results) == 4
    assert all(np.abs(r - expected).max() <= 1e-4 for r in results)


def test_engine_errors_are_the_package_errors(small_artefact, tmp_path):
    with pytest.raises(CheckpointError):
        open_engine(tmp_path / "missing.ts")
    engine = open_engine(small_artefact)
    with pytest.raises(InputError, match="takes slices"):
        engine(torch.zeros(1, 3, SIZE, SIZE))
