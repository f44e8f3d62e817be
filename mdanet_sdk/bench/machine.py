"""What the numbers were measured on: the machine record of a benchmark report.

The machine itself (versions, CPU, GPUs, native ops) is described by :mod:`mdanet_sdk.info`, the same code
``mdanet-sdk info`` prints; this module adds only what a measurement needs besides: the torch thread count,
the load at the time, and the GPU's data-sheet peak to compare achieved FLOP/s with.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from mdanet_sdk.info import NOT_INSTALLED, collect_info, distribution_version, host_info

__all__ = ["machine_info", "gpu_peak_tflops", "peak_tflops"]

#: Dense tensor-core / vector peaks in TFLOP/s by GPU name fragment (vendor data sheets, no sparsity). "fp32" is
#: the TF32 figure because cuDNN convolutions run in TF32 by default (``torch.backends.cudnn.allow_tf32``).
#: More specific fragments come first ("H100 PCIe" before "H100").
_GPU_PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100 PCIe": {"fp32": 378.0, "fp16": 756.0, "bf16": 756.0},
    "H100": {"fp32": 494.7, "fp16": 989.4, "bf16": 989.4},
    "H200": {"fp32": 494.7, "fp16": 989.4, "bf16": 989.4},
    "A100": {"fp32": 156.0, "fp16": 312.0, "bf16": 312.0},
    "L4": {"fp32": 60.0, "fp16": 121.0, "bf16": 121.0},
    "T4": {"fp32": 8.1, "fp16": 65.0},
}


def gpu_peak_tflops(name: str, precision: str) -> float | None:
    """The data-sheet peak of GPU ``name`` at ``precision`` in TFLOP/s, or None for a GPU not in the table."""
    for fragment, peaks in _GPU_PEAK_TFLOPS.items():
        if fragment in name:
            return peaks.get(precision)
    return None


def peak_tflops(device: torch.device) -> dict[str, float | None]:
    """Precision → the peak of ``device`` in TFLOP/s; empty on the CPU (no reliable figure)."""
    if device.type != "cuda":
        return {}
    name = torch.cuda.get_device_name(device)
    return {p: gpu_peak_tflops(name, p) for p in ("fp32", "fp16", "bf16")}


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, memory, torch, GPU, and the load at the time.

    Built from :func:`mdanet_sdk.info.collect_info` and :func:`mdanet_sdk.info.host_info`.

    Returns:
        A JSON-ready dict (keys documented in ``benchmarks/README.md``).
    """
    device = torch.device(device)
    info = collect_info(device)
    host = host_info()
    monai = distribution_version("monai")
    machine: dict[str, Any] = {
        "cpu": host["cpu"],
        "cpu_isa": host["cpu_isa"],
        "cpu_count": host["cpu_count"],
        "cpus_usable": host["cpus_usable"],
        "torch_threads": torch.get_num_threads(),
        "memory_gb": host["memory_gb"],
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "torch": info["torch"],
        "python": info["python"],
        "platform": host["platform"],
        "mdanet_sdk": info["mdanet_sdk"],
        "native_ops": info["native"]["loaded"],
        "monai": None if monai == NOT_INSTALLED else monai,
        "device": str(device),
        "gpu": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        machine["gpu"] = {
            "name": props.name,
            "memory_gb": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "cuda": info["cuda"]["torch_cuda"],
            "cudnn": info["cuda"]["cudnn"],
            "peak_tflops": peak_tflops(device),
        }
    return machine
