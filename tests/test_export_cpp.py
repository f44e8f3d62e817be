"""The C++ deployment example (export/cpp): builds against the pip torch's libtorch and matches Python."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from mdanet_sdk import ops
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.export import BatchRange, export_model, load_artifact, probe_batch
from mdanet_sdk.model import build_model
from mdanet_sdk.ops import native

SOURCE = Path(__file__).resolve().parents[1] / "export" / "cpp"
TORCH_HEADER = Path(torch.__file__).parent / "include" / "torch" / "script.h"
SIZE = 64

pytestmark = [
    pytest.mark.skipif(not TORCH_HEADER.is_file(), reason=f"the torch install has no C++ headers ({TORCH_HEADER})"),
    pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed"),
    pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler (c++) on PATH"),
    pytest.mark.filterwarnings(r"ignore:.*torch\.jit:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``mdanet_run`` built once, linked to the package's op library when it is built."""
    build = tmp_path_factory.mktemp("export-cpp")
    configure = [
        "cmake",
        "-S",
        str(SOURCE),
        "-B",
        str(build),
        "-DCMAKE_BUILD_TYPE=Release",
        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
        f"-DMDANET_OPS_LIBRARY={native.library_path() or ''}",
    ]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    for step in (configure, ["cmake", "--build", str(build)]):
        done = subprocess.run(step, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return build / "mdanet_run"


@pytest.fixture(scope="module")
def artefact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small model as TorchScript, with mdanet:: op calls when the op library is built; max batch 4."""
    torch.manual_seed(0)
    impl = "native" if ops.native_available() else "reference"
    model = build_model(MDANetConfig.from_preset("small", "mri"), ops=impl).eval()
    out = tmp_path_factory.mktemp("cpp-artefact") / "m.ts"
    return export_model(model, "torchscript", out, preprocess={"size": SIZE}, batch=BatchRange(1, 4, 4)).path


def test_cpp_runner_matches_python(runner, artefact, tmp_path):
    x = probe_batch(7, 2, SIZE, SIZE, seed=11)  # 7 > max batch 4: two chunks, in C++ as in Python
    x.numpy().tofile(tmp_path / "in.f32")
    done = subprocess.run(
        [str(runner), str(artefact), str(tmp_path / "in.f32"), str(tmp_path / "out.f32")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "7 slice(s) 2x64x64 -> logits [7, 2, 64, 64]" in done.stderr
    got = np.fromfile(tmp_path / "out.f32", dtype=np.float32).reshape(7, 2, SIZE, SIZE)
    expected = load_artifact(artefact)(x).numpy()
    assert np.abs(got - expected).max() <= 1e-4
    assert np.array_equal(got.argmax(1), expected.argmax(1))


def test_cpp_runner_rejects_a_partial_slice(runner, artefact, tmp_path):
    np.zeros(2 * SIZE * SIZE + 5, dtype=np.float32).tofile(tmp_path / "bad.f32")
    done = subprocess.run(
        [str(runner), str(artefact), str(tmp_path / "bad.f32"), str(tmp_path / "out.f32")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error:") and "not a whole number of slices of 2x64x64" in done.stderr
    assert not (tmp_path / "out.f32").exists()
