"""mdanet_sdk.info: the one description of the installation and machine, printed by ``mdanet-sdk info`` and
reused by the benchmark's machine record."""

from __future__ import annotations

import json
from importlib import metadata

import pytest
import torch
from typer.testing import CliRunner

import mdanet_sdk
from mdanet_sdk import ops
from mdanet_sdk.bench import machine_info
from mdanet_sdk.cli import app
from mdanet_sdk.errors import InputError
from mdanet_sdk.info import NOT_INSTALLED, collect_info, distribution_version, host_info


def test_collect_info_names_versions_device_and_kernels():
    info = collect_info("cpu")
    assert set(info) == {
        "mdanet_sdk",
        "python",
        "torch",
        "cuda",
        "tensorrt",
        "torch_tensorrt",
        "device",
        "native",
        "ops",
    }
    assert info["mdanet_sdk"] == mdanet_sdk.__version__ and info["torch"] == torch.__version__
    assert info["device"].startswith("cpu (")
    assert info["native"]["loaded"] is ops.native_available()
    assert set(info["ops"]) == set(ops.OPS)
    assert collect_info(torch.device("cpu")) == info  # a torch.device is accepted too


def test_collect_info_refuses_a_bad_device():
    with pytest.raises(InputError, match="unknown device"):
        collect_info("tpu9")


def test_distribution_version_reads_metadata():
    assert distribution_version("no-such-distribution-xyz") == NOT_INSTALLED
    assert distribution_version("no-such-distribution-xyz", "numpy") == metadata.version("numpy")


def test_benchmark_machine_record_agrees_with_info():
    info, host, machine = collect_info("cpu"), host_info(), machine_info("cpu")
    assert {k: machine[k] for k in ("torch", "python", "mdanet_sdk")} == {
        k: info[k] for k in ("torch", "python", "mdanet_sdk")
    }
    assert machine["native_ops"] is info["native"]["loaded"]
    assert {k: machine[k] for k in host} == host
    assert machine["device"] == "cpu" and machine["gpu"] is None


def test_cli_prints_collect_info():
    runner = CliRunner()
    result = runner.invoke(app, ["info", "--json", "-", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == collect_info("cpu")
    result = runner.invoke(app, ["info", "--device", "tpu9"])
    assert result.exit_code == 2 and "--device must be auto, cpu, cuda or cuda:N" in result.output


def test_json_file_means_the_same_in_every_command(tmp_path):
    """``--json FILE`` writes the JSON to FILE (``-`` prints it) in info and summary (segment: test_segment_api)."""
    runner = CliRunner()
    for command in (["info", "--device", "cpu"], ["summary", "--preset", "small"]):
        out = tmp_path / f"{command[0]}.json"
        result = runner.invoke(app, [*command, "--json", str(out)])
        assert result.exit_code == 0 and result.output == "", result.output
        printed = runner.invoke(app, [*command, "--json", "-"])
        assert json.loads(out.read_text()) == json.loads(printed.output)


def test_summary_refuses_what_it_would_ignore_and_path_errors_exit_1(tmp_path):
    """``--space-grid`` on a baseline was ignored, ``--size 100000`` failed on the space grid it implied, and an
    unwritable ``--json`` exited 2 where every other path error exits 1."""
    runner = CliRunner()
    for args, message in (
        (["--preset", "unet", "--space-grid", "3"], "space_grid sets MDANet's GCFB"),
        (["--preset", "small", "--size", "100000"], "size must be from 16 to 1024"),
    ):
        result = runner.invoke(app, ["summary", *args])
        assert result.exit_code == 2 and message in result.output, result.output
    (tmp_path / "file").write_text("x")
    result = runner.invoke(app, ["summary", "--preset", "small", "--json", str(tmp_path / "file" / "s.json")])
    assert result.exit_code == 1 and "cannot write" in result.output
