"""What this installation and machine are: package versions, the device, the native op library, and the host.

The one place that describes the machine: ``mdanet-sdk info`` prints :func:`collect_info`, and the benchmark's
machine record (:func:`mdanet_sdk.bench.machine_info`) is built from :func:`collect_info` and
:func:`host_info`, so the two cannot disagree.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads slowly: imported inside the functions that need it
    import torch

__all__ = ["collect_info", "host_info", "distribution_version", "proc_field", "NOT_INSTALLED"]

NOT_INSTALLED = "not installed"


def distribution_version(*distributions: str) -> str:
    """Version of the first installed distribution among ``distributions``, else :data:`NOT_INSTALLED`.

    Reads package metadata only: nothing is imported (importing MONAI or TensorRT takes seconds).
    """
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return NOT_INSTALLED


def proc_field(path: str, key: str) -> str | None:
    """The value of ``key: value`` in a /proc text file, or None (not Linux, or no such line)."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip()
    except OSError:
        return None
    return None


def host_info() -> dict[str, Any]:
    """The host: CPU model and instruction set, cores (all and usable by this process), memory, OS.

    Returns:
        ``{"cpu", "cpu_isa", "cpu_count", "cpus_usable", "memory_gb", "platform"}``; ``memory_gb`` is None
        where /proc/meminfo is missing (not Linux).
    """
    import torch

    mem_kb = proc_field("/proc/meminfo", "MemTotal")
    usable: int | None  # os.cpu_count() is None where the count is unknown
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "cpu": proc_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine(),
        "cpu_isa": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "memory_gb": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
        "platform": platform.platform(),
    }


def _native_info() -> dict[str, Any]:
    """The op library's build information, or why it is not loaded; warns when torch changed since the build."""
    import torch

    from mdanet_sdk.ops import native

    built = native.build_info()
    if built is None:
        return {"loaded": False, "error": native.load_error()}
    info: dict[str, Any] = {"loaded": True, **built}
    if built["torch_version"] != torch.__version__:
        info["warning"] = (
            f"built against torch {built['torch_version']}, running {torch.__version__}: reinstall "
            "mdanet-sdk (`pip install --no-build-isolation -e .`)"
        )
    return info


def collect_info(device: str | torch.device = "auto") -> dict[str, Any]:
    """Everything ``mdanet-sdk info`` prints, as one JSON-ready dict.

    Args:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a
            :class:`torch.device` (resolved by :func:`mdanet_sdk.device.resolve_device`).

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
    from mdanet_sdk.device import resolve_device

    dev = resolve_device(device)
    cuda_available = torch.cuda.is_available()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda_available else []
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        device_name = f"cuda:{index} ({gpus[index]})"
    else:
        device_name = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
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
        "tensorrt": distribution_version("tensorrt", "tensorrt-cu13", "tensorrt-cu12"),
        "torch_tensorrt": distribution_version("torch-tensorrt"),
        "device": device_name,
        "native": _native_info(),
        "ops": ops.op_backends(dev),
    }
