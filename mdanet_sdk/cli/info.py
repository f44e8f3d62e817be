"""``mdanet-sdk info``: versions, the device, the native op library, and which kernel each op runs."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from typing import Annotated, Any

import typer
from rich.table import Table

from mdanet_sdk.cli._app import command, console, plain
from mdanet_sdk.errors import BackendUnavailableError, InputError

__all__ = ["collect_info"]

NOT_INSTALLED = "not installed"


def _version(*distributions: str) -> str:
    """Version of the first installed distribution among ``distributions``, else ``"not installed"``."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return NOT_INSTALLED


def _device(spec: str) -> Any:
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise InputError(f"--device must be auto, cpu, cuda or cuda:N; got {spec!r}.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(f"--device {spec}: no CUDA device is available here; use --device cpu.")
    return device


def collect_info(device: str = "auto") -> dict[str, Any]:
    """Everything ``mdanet-sdk info`` prints, as one JSON-ready dict.

    Args:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns:
        ``mdanet_sdk``, ``python``, ``torch``, ``cuda`` (torch's CUDA, cuDNN, GPUs), ``tensorrt`` and
        ``torch_tensorrt`` (versions or ``"not installed"``), ``device``, ``native`` (the op library's build
        information, or why it is not loaded) and ``ops`` (op name → ``native-cpu``, ``native-cuda`` or
        ``reference``, the kernel that ``impl="auto"`` runs on ``device``).

    Raises:
        InputError: ``device`` is not a device name.
        BackendUnavailableError: a CUDA device was asked for and none is available.
    """
    import torch

    from mdanet_sdk import __version__, ops
    from mdanet_sdk.ops import native

    dev = _device(device)
    cuda_available = torch.cuda.is_available()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda_available else []
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        device_name = f"cuda:{index} ({gpus[index]})"
    else:
        device_name = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    built = native.build_info()
    if built is None:
        native_info: dict[str, Any] = {"loaded": False, "error": native.load_error()}
    else:
        native_info = {"loaded": True, **built}
        if built["torch_version"] != torch.__version__:
            native_info["warning"] = (
                f"built against torch {built['torch_version']}, running {torch.__version__}: reinstall "
                "mdanet-sdk (`pip install --no-build-isolation -e .`)"
            )
    return {
        "mdanet_sdk": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": {
            "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda_available else None,
            "available": cuda_available,
            "gpus": gpus,
        },
        "tensorrt": _version("tensorrt", "tensorrt-cu13", "tensorrt-cu12"),
        "torch_tensorrt": _version("torch-tensorrt"),
        "device": device_name,
        "native": native_info,
        "ops": ops.op_backends(dev),
    }


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
            ("native build", f"{native['compiler']}, torch {native['torch_version']}, OpenMP {native['openmp']}, "
                             f"{native['num_threads']} threads, CUDA kernels: {cuda_kernels}"),
        ]
        if "warning" in native:
            rows.append(("native warning", native["warning"]))
    else:
        rows.append(("native library", f"not loaded: {native['error']}"))
    rows += [(f"op {name}", backend) for name, backend in info["ops"].items()]
    return rows


@command("info")
def info(
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu, cuda or cuda:N.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Print versions (package, torch, CUDA, TensorRT), the device and which kernel each op uses."""
    collected = collect_info(device)
    if as_json:
        console.print_json(json.dumps(collected))
        return
    table = Table(title="mdanet-sdk info")
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for key, value in _rows(collected):
        table.add_row(key, plain(value))  # values hold paths and names: data, never markup
    console.print(table)
