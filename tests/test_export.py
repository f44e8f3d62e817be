"""Export artefacts (TorchScript, ExportedProgram, TensorRT): round trips, metadata, validation, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mdanet_sdk import ops
from mdanet_sdk.cli import app
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.data.phantom import make_phantom, write_dataset
from mdanet_sdk.data.preprocess import PreprocessConfig, preprocess_images
from mdanet_sdk.errors import BackendUnavailableError, CheckpointError, ExportError, InputError
from mdanet_sdk.export import (
    TOLERANCES,
    Artifact,
    BatchRange,
    export_checkpoint,
    export_model,
    load_artifact,
    probe_batch,
    read_metadata,
    tensorrt_unavailable_reason,
)
from mdanet_sdk.inference import Segmenter
from mdanet_sdk.model import build_model
from mdanet_sdk.train.checkpoint import BUNDLED, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit:DeprecationWarning")

SIZE = 64
NATIVE = ops.native_available()
OPS = "native" if NATIVE else "reference"
# Slices of side 56 padded to a multiple of 16: the model grid is 64 x 64.
PREPROCESS = {"size": 56, "multiple": 16, "normalization": "relative", "head_fill": 0.5}
runner = CliRunner()


def _model(ops_impl: str = OPS, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(MDANetConfig.from_preset("small", "mri"), ops=ops_impl).eval()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return _model()


@pytest.fixture(scope="module")
def artefacts(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The small model exported once per format (fp32, dynamic batch 1..64)."""
    out = tmp_path_factory.mktemp("artefacts")
    return {
        fmt: export_model(model, fmt, out / f"small{suffix}", preprocess=PREPROCESS, meta={"note": "test"}).path
        for fmt, suffix in (("torchscript", ".ts"), ("exported", ".pt2"))
    }


@pytest.fixture(scope="module")
def phantom_slices() -> torch.Tensor:
    """13 preprocessed slices ``(13, 2, 64, 64)`` of a synthetic ISLES'22 case, on the artefacts' grid."""
    case = make_phantom("isles22", seed=3, shape=(64, 64, 16))
    slices, _ = preprocess_images(case.images, ("dwi", "adc"), PreprocessConfig(**PREPROCESS))
    return torch.from_numpy(slices[:13])


def test_fresh_process_matches_eager_for_batch_1_and_13(model, artefacts, phantom_slices, tmp_path):
    """Each artefact loads in a new interpreter (only mdanet_sdk imported) and reproduces the eager logits."""
    x = phantom_slices
    assert x.shape == (13, 2, SIZE, SIZE)
    np.save(tmp_path / "x.npy", x.numpy())
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        import numpy as np, torch
        import mdanet_sdk.export as export
        out, x = Path(sys.argv[1]), torch.from_numpy(np.load(sys.argv[1] + "/x.npy"))
        for fmt, path in zip(("torchscript", "exported"), sys.argv[2:]):
            artifact = export.load_artifact(path)
            for n in (1, 13):
                np.save(out / f"{fmt}-{n}.npy", artifact(x[:n]).numpy())
        print("model code imported:", "mdanet_sdk.model" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), str(artefacts["torchscript"]), str(artefacts["exported"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "model code imported: False" in done.stdout
    with torch.inference_mode():
        expected = model(x).numpy()
    for fmt in ("torchscript", "exported"):
        for n in (1, 13):
            got = np.load(tmp_path / f"{fmt}-{n}.npy")
            assert got.shape == (n, 2, SIZE, SIZE)
            np.testing.assert_allclose(got, expected[:n], rtol=0, atol=1e-5, err_msg=f"{fmt} batch {n}")
            assert np.array_equal(got.argmax(1), expected[:n].argmax(1)), f"{fmt} batch {n}: masks differ"


def test_metadata_travels_in_the_file(artefacts, model):
    for fmt, path in artefacts.items():
        config, preprocess, meta = read_metadata(path)
        assert config == model.config
        assert preprocess == PREPROCESS  # its grid (56 padded to 64) is already the artefact's
        assert meta["format"] == fmt and meta["precision"] == "fp32" and meta["ops"] == OPS
        assert meta["input_shape"] == [2, SIZE, SIZE]
        assert meta["modalities"] == ["dwi", "adc"]
        assert meta["batch"] == {"min": 1, "opt": 16, "max": 64}
        assert meta["checkpoint"] == {"note": "test"}
        artifact = load_artifact(path)
        assert isinstance(artifact, Artifact) and artifact.input_shape == (2, SIZE, SIZE)
        assert artifact.model_config.modalities == ("dwi", "adc")


def test_an_artefact_names_no_temporary_file(artefacts):
    # The zip members are named below "archive/", not the temporary file's name (which held the host and pid).
    for path in artefacts.values():
        with zipfile.ZipFile(path) as archive:
            assert {name.split("/", 1)[0] for name in archive.namelist()} == {"archive"}, path.name


@pytest.mark.skipif(not NATIVE, reason="the native mdanet op library is not built (pip install --no-build-isolation .)")
def test_torchscript_graph_calls_the_custom_ops(artefacts):
    graph = str(torch.jit.load(str(artefacts["torchscript"])).inlined_graph)
    assert graph.count("mdanet::dasc_gate") == 4  # one DASC per decoder level
    assert graph.count("mdanet::graph_conv") == 2  # channel and space embeddings of the GCFB
    with zipfile.ZipFile(artefacts["exported"]) as archive:
        program = next(archive.read(n).decode() for n in archive.namelist() if n.endswith("models/model.json"))
    assert "mdanet.dasc_gate" in program and "mdanet.graph_conv" in program


def test_reference_export_inlines_the_math(tmp_path):
    path = export_model(_model("reference"), "torchscript", tmp_path / "ref.ts", preprocess=PREPROCESS).path
    graph = str(torch.jit.load(str(path)).inlined_graph)
    assert "mdanet::" not in graph and "aten::einsum" in graph
    assert read_metadata(path)[2]["ops"] == "reference"


def test_non_square_artifact_chunks_pads_and_checks_shapes(tmp_path, model):
    result = export_model(
        model, "torchscript", tmp_path / "b.ts", preprocess=PREPROCESS, size=(48, 64), batch=BatchRange(2, 2, 4)
    )
    _, preprocess, meta = read_metadata(result.path)
    assert meta["input_shape"] == [2, 48, 64] and preprocess == PREPROCESS  # no square size to set
    artifact = load_artifact(result.path)
    x = probe_batch(9, 2, 48, 64, seed=3)
    with torch.inference_mode():
        expected = model(x)
    torch.testing.assert_close(artifact(x), expected, rtol=0, atol=1e-5)  # 9 > max 4: three chunks
    torch.testing.assert_close(artifact(x[:1]), expected[:1], rtol=0, atol=1e-5)  # 1 < min 2: padded
    with pytest.raises(InputError, match=r"\(B, 2, 48, 64\)"):
        artifact(torch.zeros(1, 2, 64, 48))


def test_bf16_export_is_held_to_its_tolerance(tmp_path, model):
    result = export_model(
        model, "torchscript", tmp_path / "bf16.ts", preprocess=PREPROCESS, precision="bf16", size=(48, 48)
    )
    assert 0 < result.max_abs_diff <= result.tolerance
    assert result.tolerance == pytest.approx(TOLERANCES["bf16"])  # random weights: max |logit| < 1
    _, preprocess, meta = read_metadata(result.path)
    assert preprocess == {**PREPROCESS, "size": 48} and meta["precision"] == "bf16"  # slices resampled to 48
    artifact = load_artifact(result.path)
    assert artifact(probe_batch(2, 2, 48, 48)).dtype == torch.float32
    # A checkpoint trained on stored voxels (size None) exported at a fixed size is resampled, never cropped.
    native = export_model(
        model, "torchscript", tmp_path / "native.ts", preprocess={**PREPROCESS, "size": None}, size=(48, 48)
    )
    assert read_metadata(native.path)[1] == {**PREPROCESS, "size": 48, "head_fill": 0.0}


def test_failed_validation_leaves_no_file(tmp_path, model, monkeypatch):
    from mdanet_sdk.export import writers

    def drifting(path, device="cpu"):  # an artefact whose logits are off by 1e-3
        artifact = load_artifact(path, device)
        inner = artifact.module
        artifact.module = lambda x: inner(x) + 1e-3
        return artifact

    target = tmp_path / "keep.ts"
    target.write_bytes(
        export_model(model, "torchscript", tmp_path / "keep.ts", preprocess=PREPROCESS).path.read_bytes()
    )
    previous = target.read_bytes()
    monkeypatch.setattr(writers, "load_artifact", drifting)  # what validation reloads with
    with pytest.raises(ExportError, match="differs from the eager model by 0.001"):
        export_model(model, "torchscript", target, preprocess=PREPROCESS)
    assert target.read_bytes() == previous  # the old artefact is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.ts"]  # and no temporary is left


def test_export_never_replaces_a_file_that_is_not_an_artefact(tmp_path, model, artefacts):
    """``export -o`` used to write a TorchScript zip over a scan or another checkpoint, under any file name."""
    scan, checkpoint = tmp_path / "victim_dwi.nii.gz", tmp_path / "other.pt"
    scan.write_bytes(b"a scan")
    checkpoint.write_bytes(b"PK a checkpoint")
    for output, message in (
        (scan, "is a .ts file"),
        (tmp_path / "x.onnx", "is a .ts file"),
        (tmp_path / "x.pt2", "is a .ts file"),
        (tmp_path, "is a .ts file"),
    ):
        with pytest.raises(InputError, match=message):
            export_model(model, "torchscript", output, preprocess=PREPROCESS)
    (tmp_path / "folder.ts").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        export_model(model, "torchscript", tmp_path / "folder.ts", preprocess=PREPROCESS)
    stale = tmp_path / "old.ts"
    stale.write_bytes(b"PK a checkpoint")
    with pytest.raises(InputError, match="not an mdanet-sdk artefact"):
        export_model(model, "torchscript", stale, preprocess=PREPROCESS)
    result = runner.invoke(app, ["export", "default-mri", "-o", str(checkpoint)])
    assert result.exit_code == 2 and "is a .ts file" in result.output
    assert scan.read_bytes() == b"a scan" and checkpoint.read_bytes() == stale.read_bytes() == b"PK a checkpoint"
    again = tmp_path / "again.ts"  # an earlier artefact is replaced
    again.write_bytes(artefacts["torchscript"].read_bytes())
    assert export_model(model, "torchscript", again, preprocess=PREPROCESS).warnings == ()
    coarse = export_model(model, "torchscript", tmp_path / "coarse.ts", preprocess=PREPROCESS, size=(32, 32))
    assert "trained on a 64x64 grid" in coarse.warnings[0]


def test_options_an_artefact_cannot_honour_are_refused(artefacts):
    """``--model X.ts --compile`` ran uncompiled without a word; ``ops`` and ``optimize`` were ignored too."""
    for option in ({"compile": True}, {"ops": "reference"}, {"optimize": False}):
        with pytest.raises(InputError, match="apply to checkpoints"):
            Segmenter.from_exported(artefacts["torchscript"], **option)
    assert Segmenter.from_exported(artefacts["torchscript"], ops="auto", compile=False).modalities == ("dwi", "adc")
    with pytest.raises(CheckpointError, match="is a folder"):
        Segmenter.from_exported(artefacts["torchscript"].parent)
    if not torch.cuda.is_available():  # said as a missing GPU, not as native ops built without CUDA
        with pytest.raises(BackendUnavailableError, match="CUDA is not available"):
            export_checkpoint("default-mri", "torchscript", artefacts["torchscript"].parent / "gpu.ts", device="cuda")
    for artefact in artefacts.values():  # given where a checkpoint belongs: said so, not torch's weights_only text
        with pytest.raises(CheckpointError, match="is an exported artefact, not a checkpoint; run it with --model"):
            Segmenter.from_checkpoint(artefact)


def test_device_takes_the_packages_names(tmp_path, model):
    exported = export_model(model, "torchscript", tmp_path / "auto.ts", preprocess=PREPROCESS, device="auto")
    assert exported.path.is_file() and read_metadata(exported.path)[2]["format"] == "torchscript"  # was RuntimeError
    with pytest.raises(InputError, match="unknown device 'gpu'"):
        export_model(model, "torchscript", tmp_path / "gpu.ts", preprocess=PREPROCESS, device="gpu")


def test_size_is_required_without_a_preprocessing_size(tmp_path, model):
    with pytest.raises(InputError, match="--size H W"):
        export_model(model, "torchscript", tmp_path / "x.ts", preprocess={"size": None})
    with pytest.raises(InputError, match="multiples of 16"):
        export_model(model, "torchscript", tmp_path / "x.ts", preprocess=PREPROCESS, size=(100, 64))
    with pytest.raises(InputError, match="1 <= min <= opt <= max"):
        BatchRange(4, 2, 8)
    with pytest.raises(InputError, match="<= 4096"):  # refused before any export work, not by the reload
        BatchRange(1, 16, 5000)
    # Without an opt of its own, TensorRT's tuning point lies inside the range: --max-batch 8 of a TorchScript
    # export used to be refused for the TensorRT-only --opt-batch 16.
    assert [BatchRange(max=8).opt, BatchRange(min=32, max=64).opt, BatchRange().opt] == [8, 32, 16]
    with pytest.raises(InputError, match="from 16 to 1024"):
        export_model(model, "torchscript", tmp_path / "x.ts", preprocess=PREPROCESS, size=(2048, 2048))
    for option, value, message in (("--format", "onnx", "format must be one of"), ("--precision", "fp8", "precision")):
        result = runner.invoke(app, ["export", "default-mri", option, value, "-o", str(tmp_path / "x.pt2")])
        assert result.exit_code == 2 and message in result.output
    assert not list(tmp_path.iterdir())


def test_not_an_artefact_is_refused(tmp_path, artefacts):
    other = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="no mdanet-sdk metadata"):
        load_artifact(other)
    (tmp_path / "text.ts").write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable export artefact"):
        load_artifact(tmp_path / "text.ts")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_artifact(tmp_path / "missing.ts")
    # An artefact from a newer mdanet-sdk: same file, metadata version bumped.
    files = {"mdanet/meta.json": "", "mdanet/model_config.json": "", "mdanet/preprocess.json": ""}
    module = torch.jit.load(str(artefacts["torchscript"]), _extra_files=files)
    files["mdanet/meta.json"] = json.dumps({**json.loads(files["mdanet/meta.json"]), "artifact_version": 99})
    torch.jit.save(module, str(tmp_path / "newer.ts"), _extra_files=files)
    with pytest.raises(CheckpointError, match="artefact version 99, newer"):
        load_artifact(tmp_path / "newer.ts")


def test_tensorrt_without_gpu_says_so_in_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: the no-GPU message cannot be shown here")
    result = runner.invoke(app, ["export", "default-mri", "--format", "tensorrt", "-o", str(tmp_path / "m.pt2")])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "needs a CUDA GPU" in result.output
    assert not list(tmp_path.iterdir())
    with pytest.raises(BackendUnavailableError, match="CUDA"):  # the Python API refuses the same way
        export_model(_model(), "tensorrt", tmp_path / "m.pt2", preprocess=PREPROCESS)


def test_tensorrt_reason_names_the_missing_package(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_trt(name, *args, **kwargs):
        if name in ("tensorrt", "torch_tensorrt"):
            raise ImportError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(builtins, "__import__", no_trt)
    reason = tensorrt_unavailable_reason()
    assert reason is not None and "pip install 'mdanet-sdk[trt]'" in reason and "tensorrt" in reason


def test_native_ops_requested_without_library(tmp_path, monkeypatch):
    monkeypatch.setattr(ops, "native_available", lambda: False)
    from mdanet_sdk.export import export_checkpoint

    with pytest.raises(BackendUnavailableError, match="--ops reference"):
        export_checkpoint("default-mri", "torchscript", tmp_path / "m.ts", ops="native")


# -- checkpoint → CLI export → Segmenter / segment --model ----------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint_file(model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small model as a checkpoint whose preprocessing resamples slices to 56 (grid 64)."""
    path = tmp_path_factory.mktemp("checkpoint") / "small.pt"
    return save_checkpoint(path, model, model.config, PreprocessConfig(**PREPROCESS), {"note": "random small"})


@pytest.fixture(scope="module")
def phantom_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic ISLES'22 case folder (64 x 64 x 16) in the real dataset layout."""
    root = write_dataset(tmp_path_factory.mktemp("isles22"), "isles22", n_cases=1, seed=5, shape=(64, 64, 16))
    return next((root / "rawdata").glob("sub-*"))


def test_exported_segmenter_matches_the_checkpoint(checkpoint_file, artefacts, phantom_case, tmp_path):
    result = runner.invoke(app, ["export", str(checkpoint_file), "-o", str(tmp_path / "cli.ts")])
    assert result.exit_code == 0, result.output
    assert f"ops {OPS}" in result.output and "input (B, 2, 64, 64) with B in 1..64" in result.output
    _, _, meta = read_metadata(tmp_path / "cli.ts")
    assert meta["checkpoint"]["note"] == "random small" and meta["checkpoint"]["source"] == str(checkpoint_file)

    eager = Segmenter.from_checkpoint(checkpoint_file, device="cpu", precision="fp32").predict(phantom_case)
    for path in (tmp_path / "cli.ts", artefacts["exported"]):
        segmenter = Segmenter.from_exported(path, device="cpu")
        assert segmenter.modalities == ("dwi", "adc") and segmenter.preprocess == PreprocessConfig(**PREPROCESS)
        got = segmenter.predict(phantom_case)
        assert got.probability.shape == eager.probability.shape == (64, 64, 16)
        np.testing.assert_allclose(got.probability, eager.probability, rtol=0, atol=1e-5, err_msg=path.name)
        assert np.array_equal(got.mask, eager.mask)

    out = tmp_path / "out"
    result = runner.invoke(
        app, ["segment", "--model", str(tmp_path / "cli.ts"), str(phantom_case), "-o", str(out), "-q"]
    )
    assert result.exit_code == 0, result.output
    (mask_file,) = out.glob("*_seg.nii.gz")
    assert np.array_equal(np.asarray(nib.load(mask_file).dataobj), eager.mask)  # input's own voxel order


@pytest.mark.skipif(not BUNDLED["default-mri"].is_file(), reason="the bundled default-mri weights are not shipped yet")
def test_bundled_weights_export_and_segment_alike(phantom_case, tmp_path):
    result = runner.invoke(app, ["export", "default-mri", "-o", str(tmp_path / "mri.ts")])
    assert result.exit_code == 0, result.output
    eager = Segmenter.from_checkpoint("default-mri", device="cpu", precision="fp32").predict(phantom_case)
    exported = Segmenter.from_exported(tmp_path / "mri.ts", device="cpu").predict(phantom_case)
    np.testing.assert_allclose(exported.probability, eager.probability, rtol=0, atol=1e-4)
    assert np.array_equal(exported.mask, eager.mask)
    # the artefact carries the checkpoint's recommended post-processing too
    recommended = load_checkpoint("default-mri").meta["inference"]
    for r in (eager, exported):
        assert (r.report.tta, r.report.threshold, r.report.min_size, r.report.max_adc_ratio) == (
            recommended["tta"],
            recommended["threshold"],
            recommended["min_size"],
            recommended["max_adc_ratio"],
        )


def test_segment_refuses_model_and_checkpoint_together(checkpoint_file, artefacts, phantom_case):
    result = runner.invoke(
        app, ["segment", "--model", str(artefacts["torchscript"]), "-c", str(checkpoint_file), str(phantom_case)]
    )
    assert result.exit_code == 2 and "either a checkpoint or an exported model, not both" in result.output
    with pytest.raises(InputError, match="computes in fp32"):
        Segmenter.from_exported(artefacts["torchscript"], device="cpu", precision="bf16")


# -- TensorRT (GPU only) ------------------------------------------------------------------------------------
needs_trt = pytest.mark.skipif(tensorrt_unavailable_reason() is not None, reason=str(tensorrt_unavailable_reason()))


@pytest.mark.gpu
@needs_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_decomposition_round_trip(tmp_path, precision):
    model = _model("reference").cuda()
    result = export_model(
        model, "tensorrt", tmp_path / "m.pt2", preprocess=PREPROCESS, precision=precision, batch=BatchRange(1, 8, 16)
    )
    assert result.ops == "reference" and result.max_abs_diff <= result.tolerance
    artifact = load_artifact(result.path, "cuda")
    x = probe_batch(13, 2, SIZE, SIZE, seed=7).cuda()
    with torch.inference_mode():
        expected = model(x)
    assert (artifact(x) - expected).abs().max().item() <= result.tolerance


@pytest.mark.gpu
@needs_trt
@pytest.mark.skipif(not NATIVE, reason="TensorRT plugins run the native CUDA kernels, which are not built")
def test_tensorrt_plugins_round_trip(tmp_path):
    model = _model("native").cuda()
    result = export_model(model, "tensorrt", tmp_path / "p.pt2", preprocess=PREPROCESS, batch=BatchRange(1, 4, 8))
    assert result.ops == "plugin" and result.max_abs_diff <= result.tolerance
    assert load_artifact(result.path, "cuda")(probe_batch(5, 2, SIZE, SIZE).cuda()).shape == (5, 2, SIZE, SIZE)


def test_export_never_writes_over_its_checkpoint_and_says_why_a_path_fails(checkpoint_file, tmp_path):
    """``-o`` naming the checkpoint itself used to replace the trained weights with the artefact; a folder as
    ``-o`` used to end in an IsADirectoryError traceback. Both are one ``error:`` line now."""
    own = tmp_path / "own.pt"
    own.write_bytes(checkpoint_file.read_bytes())
    same = runner.invoke(app, ["export", str(own), "-o", str(own)])
    assert same.exit_code == 2 and "is a .ts file" in same.output
    renamed = tmp_path / "own.ts"  # a checkpoint under an artefact's name is still not an artefact
    renamed.write_bytes(checkpoint_file.read_bytes())
    same = runner.invoke(app, ["export", str(renamed), "-o", str(renamed)])
    assert same.exit_code == 2 and "not an mdanet-sdk artefact" in same.output
    assert own.read_bytes() == renamed.read_bytes() == checkpoint_file.read_bytes()
    (tmp_path / "folder.ts").mkdir()
    folder = runner.invoke(app, ["export", str(own), "-o", str(tmp_path / "folder.ts")])
    assert folder.exit_code == 2 and "is a folder" in folder.output and "Traceback" not in folder.output
    assert folder.exception is None or isinstance(folder.exception, SystemExit)
