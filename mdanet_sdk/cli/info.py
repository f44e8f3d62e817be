"""``mdanet-sdk info``: prints :func:`mdanet_sdk.info.collect_info` (versions, the device, the native op library,
and which kernel each op runs) as a table or as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mdanet_sdk.cli._app import JSON_HELP, command, console, emit_json, plain
from mdanet_sdk.cli._options import Device
from mdanet_sdk.errors import InputError
from mdanet_sdk.info import collect_info

__all__ = ["info"]


def _resolve(device: str) -> Any:
    """The ``--device`` option as a torch device, its errors phrased with the option's name."""
    from mdanet_sdk.device import resolve_device

    try:
        return resolve_device(device)
    except InputError:
        raise InputError(f"--device must be auto, cpu, cuda or cuda:N; got {device!r}.") from None


def _rows(info: dict[str, Any]) -> list[tuple[str, str]]:
    cuda, native = info["cuda"], info["native"]
    rows = [
        ("mdanet-sdk", info["mdanet_sdk"]),
        ("python", info["python"]),
        ("torch", info["torch"]),
        ("CUDA (torch)", f"{cuda['torch_cuda'] or 'none'}; available: {'yes' if cuda['available'] else 'no'}"),
        ("TensorRT", info["tensorrt"]),
        ("Torch-TensorRT", info["torch_tensorrt"]),
        ("device", info["device"]),
    ]
    if native["loaded"]:
        cuda_kernels = f"yes ({native['cuda_version']}, archs {native['cuda_archs']})" if native["cuda"] else "no"
        rows += [
            ("native library", native["library_path"]),
            (
                "native build",
                f"{native['compiler']}, torch {native['torch_version']}, OpenMP {native['openmp']}, "
                f"{native['num_threads']} threads, CUDA kernels: {cuda_kernels}",
            ),
        ]
        if "warning" in native:
            rows.append(("native warning", native["warning"]))
    else:
        rows.append(("native library", f"not loaded: {native['error']}"))
    rows += [(f"op {name}", backend) for name, backend in info["ops"].items()]
    return rows


@command("info")
def info(
    device: Device = "auto",
    as_json: Annotated[Path | None, typer.Option("--json", metavar="FILE", help=JSON_HELP)] = None,
) -> None:
    """Print versions (package, torch, CUDA, TensorRT), the device and which kernel each op uses."""
    collected = collect_info(_resolve(device))
    if as_json is not None:
        emit_json(collected, as_json)
        return
    table = Table(title="mdanet-sdk info")
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for key, value in _rows(collected):
        table.add_row(key, plain(value))  # values hold paths and names: data, never markup
    console.print(table)
