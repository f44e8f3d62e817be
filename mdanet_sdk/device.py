"""Where and in which precision the network runs: the one place that resolves devices and precisions.

One vocabulary everywhere (inference, training, export, benchmarks): devices ``auto | cpu | cuda | cuda:N``
and precisions ``auto | fp32 | fp16 | bf16``. ``auto`` is CUDA when available; its precision is bf16 (fp16
where the GPU lacks bf16) on CUDA; on a CPU it is fp32, except for inference on a CPU that computes bf16
natively (:func:`cpu_has_native_bf16`), where it is bf16 (elsewhere bf16 is emulated and slower than fp32).
Lower precisions run under :func:`torch.autocast`, so weights stay fp32 and only the matrix products are
reduced. On a CPU, :func:`retain_cpu_memory` keeps freed tensor memory in the process for the next batch.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from mdanet_sdk.errors import BackendUnavailableError, InputError

__all__ = [
    "PRECISIONS",
    "DTYPES",
    "cpu_has_native_bf16",
    "resolve_device",
    "resolve_precision",
    "autocast",
    "retain_cpu_memory",
    "is_out_of_memory",
]

#: Accepted precision names (besides ``"auto"``).
PRECISIONS = ("fp32", "fp16", "bf16")
#: The torch dtype each precision computes in.
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for ``device``: ``"auto"`` is CUDA when available, else CPU.

    Raises:
        BackendUnavailableError: CUDA was asked for but is not available.
        InputError: ``device`` is not a device name.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N.") from None
    if resolved.type == "cpu" and resolved.index not in (None, 0):  # one CPU device: "cpu:7" names nothing
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N.")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device {device!r} was asked for but CUDA is not available; use cpu or auto.")
    return resolved


#: /proc/cpuinfo flags of the x86 instructions that compute bf16 natively (AVX512-BF16, AMX).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.lru_cache(maxsize=1)
def _cpuinfo_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags of the first processor in ``path`` (empty when it cannot be read)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively: on Linux, ``avx512_bf16`` or ``amx_bf16`` among the flags of
    ``/proc/cpuinfo``; ``False`` on other systems (where bf16 is not known to be fast)."""
    return sys.platform.startswith("linux") and bool(_cpuinfo_flags() & NATIVE_BF16_FLAGS)


def resolve_precision(precision: str, device: torch.device, *, inference: bool = False) -> str:
    """``"fp32"``, ``"fp16"`` or ``"bf16"``.

    ``"auto"`` is bf16 (fp16 where unsupported) on CUDA; on a CPU it is fp32, or bf16 when ``inference`` and
    the CPU computes bf16 natively (:func:`cpu_has_native_bf16`). Training keeps fp32 on every CPU.

    Raises:
        InputError: ``precision`` is not one of ``auto``, ``fp32``, ``fp16``, ``bf16``.
    """
    if precision == "auto":
        if device.type != "cuda":
            return "bf16" if inference and device.type == "cpu" and cpu_has_native_bf16() else "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision not in DTYPES:
        raise InputError(f"unknown precision {precision!r}; use auto, fp32, fp16 or bf16.")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The mixed-precision context of a resolved ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


@functools.lru_cache(maxsize=1)
def retain_cpu_memory() -> bool:
    """Keep the memory of freed CPU tensors in this process for the next ones (glibc's malloc, Linux).

    By default glibc gives each large allocation fresh pages from the kernel (``mmap``) and returns them when
    it is freed, so every batch of a CPU forward page-faults all its activations again. Here large
    allocations come from the heap and freed memory is not trimmed, as allocators such as jemalloc or tcmalloc
    do (Intel recommends those for PyTorch on CPUs): measured 1.2x faster for a whole ``segment`` of the real
    ISLES'22 case on 2 cores, with the same peak memory. The process keeps its peak memory until it exits.

    Process-wide and permanent; done once, later calls return the first call's result.

    Returns:
        whether it is in effect (``False`` without glibc: other systems, musl).
    """
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # No per-allocation mmap (large blocks come from the heap), and never hand freed heap memory back.
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure: CUDA's :class:`torch.OutOfMemoryError`, the CPU allocator's
    ``RuntimeError`` ("can't allocate memory"), either as re-raised by a TorchScript program, or libmdanet's
    ``MDANET_OUT_OF_MEMORY`` ("out of host memory", "out of device memory")."""
    text = str(exc).lower()
    if isinstance(exc, torch.OutOfMemoryError) or "can't allocate memory" in text:
        return True
    return any(f"out of {what}memory" in text for what in ("", "host ", "device "))
