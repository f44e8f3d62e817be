"""The native build: the op library is built and loadable on its own, the CUDA sources compile with nvcc, and
``mdanet-sdk info`` reports which kernels run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import mdanet_sdk
from mdanet_sdk import ops
from mdanet_sdk.cli import app
from mdanet_sdk.ops import native

ROOT = Path(__file__).resolve().parents[1]
SKIPPED_NATIVE = os.environ.get("MDANET_SKIP_NATIVE", "").lower() in ("1", "on", "true", "yes")
needs_native = pytest.mark.skipif(not ops.native_available(), reason="native ops not built")


def _nvcc() -> str | None:
    fallback = "/usr/local/cuda/bin/nvcc"
    return shutil.which("nvcc") or (fallback if os.access(fallback, os.X_OK) else None)


@pytest.mark.skipif(SKIPPED_NATIVE, reason="installed with MDANET_SKIP_NATIVE")
def test_native_ops_are_built_and_match_this_install():
    assert ops.native_available(), native.load_error()
    info = native.build_info()
    assert info["version"] == mdanet_sdk.__version__
    assert info["torch_version"] == torch.__version__, "built against another torch: reinstall the package"
    assert info["openmp"] >= 201107 and info["num_threads"] == torch.get_num_threads()
    assert Path(info["library_path"]).name == "libmdanet_ops.so" and Path(info["library_path"]).is_file()
    assert native.library_path() == info["library_path"]
    assert info["cuda"] == bool(info["cuda_archs"]) == native.cuda_built()


@needs_native
def test_op_library_loads_without_the_python_package(tmp_path):
    # What a deployment does: load the library by path into a process that never imports mdanet_sdk.
    script = (
        "import sys, torch\n"
        "torch.ops.load_library(sys.argv[1])\n"
        "g = torch.ones(1, 2, 3)\n"
        "out = torch.ops.mdanet.graph_conv(g, torch.zeros(2, 2), torch.zeros(2), torch.eye(3), torch.zeros(3))\n"
        "print(float(out.sum()), 'mdanet_sdk' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, native.library_path()], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["6.0", "False"]


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not found")
def test_every_cuda_source_compiles_for_sm80_and_sm90(tmp_path):
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "compile_cuda.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NVCC": _nvcc(), "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for source in sorted((ROOT / "csrc" / "cuda").glob("*.cu")):
        obj = (tmp_path / source.name).with_suffix(".o").read_bytes()
        # Both architectures' machine code is embedded in the object's fatbinary.
        assert b".nv_fatbin" in obj and b"sm_80" in obj and b"sm_90" in obj, source.name


def test_info_json_reports_versions_and_op_kernels():
    result = CliRunner().invoke(app, ["info", "--json", "-", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["mdanet_sdk"] == mdanet_sdk.__version__ and info["torch"] == torch.__version__
    assert info["tensorrt"] == "not installed" or info["tensorrt"][0].isdigit()
    expected = "native-cpu" if ops.native_available() else "reference"
    assert info["ops"] == {"dasc_gate": expected, "graph_conv": expected}
    assert info["native"]["loaded"] is ops.native_available()


def test_info_table_and_bad_device():
    runner = CliRunner()
    result = runner.invoke(app, ["info", "--device", "cpu"])
    assert result.exit_code == 0 and "dasc_gate" in result.output and "TensorRT" in result.output
    result = runner.invoke(app, ["info", "--device", "tpu9"])
    assert result.exit_code == 2 and "--device must be" in result.output
