"""Build and drive the CPU emulation of the real ``csrc/cuda/*.cu`` kernels (test-only).

Each ``.cu`` file is compiled by the system g++ against ``cuda_cpu_shim.h`` (one host fiber per CUDA thread, see
that header). The only change made to the source is the launch syntax, which g++ cannot parse:
``kernel<<<grid, block, shmem, stream>>>(args)`` becomes ``::cuda_emu::Launch(grid, block, shmem, stream)(kernel,
args)``. Everything else (launchers, dtype dispatch, launch configurations, kernel bodies) is the file as nvcc
compiles it.

Every buffer handed to a kernel is a CPU tensor with NaN guard zones on both sides: an out-of-bounds read
brings NaN into the results, an out-of-bounds write is caught by ``check_guards``, and outputs start as NaN, so an
element the kernel never writes cannot pass for a result.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CUDA_DIR = ROOT / "csrc" / "cuda"

# torch dtype -> mdanet::cuda::DType (csrc/include/mdanet/kernels.h).
DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
GUARD = 64  # guard elements on each side of every buffer
# Fiber orders: resume lanes round-robin upwards, or downwards, or let the highest warp that can move run until it
# reaches a block barrier (warps race ahead of lower ones into the next phase).
POLICIES = {"round-robin": 0, "round-robin-down": 1, "warps-run-ahead": 2}

# C signatures of the entry points: i int, I unsigned int, q int64_t, p pointer.
_SIGNATURES = {
    "emu_dasc_gate_workspace_bytes": "iqqqqii",
    "emu_dasc_gate_plan": "iqqqqip",
    "emu_dasc_gate_forward": "iqqqq" + "p" * 6,
    "emu_dasc_gate_backward": "iIqqqq" + "p" * 10 + "i",
    "emu_graph_conv_bias_relu": "iqqq" + "p" * 4,
    "emu_graph_conv_relu_mask": "iq" + "p" * 3,
    "emu_graph_conv_kernels": "iIiqqq" + "p" * 6,
    "emu_selftest_reverse": "pIIi",
    "emu_selftest_vector_load": "pip",
    "emu_selftest_divergent_barrier": "pI",
    "emu_selftest_warp_total": "pppII",
    "emu_set_schedule": "iii",
    "emu_float_to_half": "ppqi",
}
_CTYPES = {"i": ctypes.c_int, "I": ctypes.c_uint, "q": ctypes.c_int64, "p": ctypes.c_void_p}

# `name<T><<<config>>>(`: the kernel (optionally with template arguments), the launch configuration, the open paren.
_LAUNCH = re.compile(r"([A-Za-z_][\w:]*(?:\s*<[^<>;()]*>)?)\s*<<<(.*?)>>>\s*\(\s*(\)?)", re.DOTALL)


class EmulationError(RuntimeError):
    """A launch failed in the emulator (bad configuration, deadlock, invalid shuffle) or broke a guard zone."""


def compiler() -> str | None:
    """The C++ compiler the emulation is built with: ``$CXX`` or g++ on PATH; None when neither exists."""
    return shutil.which(os.environ.get("CXX", "g++"))


def rewrite_launches(source: str) -> str:
    """``source`` with every ``<<<...>>>`` launch turned into a ``cuda_emu::Launch`` call; raises if none is left
    unconverted or the file launches nothing."""

    def launch(match: re.Match[str]) -> str:
        kernel, config, closing = match.group(1), " ".join(match.group(2).split()), match.group(3)
        newlines = "\n" * match.group(0).count("\n")  # keep the line numbers of compiler messages
        args = ")" if closing else ", "
        return f"::cuda_emu::Launch({config})({kernel}{args}{newlines}"

    rewritten, count = _LAUNCH.subn(launch, source)
    if count == 0 or "<<<" in rewritten or ">>>" in rewritten:
        raise EmulationError(f"could not rewrite the kernel launches ({count} rewritten)")
    return rewritten


def _translation_unit(source: Path, exports: Path | None) -> str:
    text = f'#include "cuda_cpu_shim.h"\n#line 1 "{source}"\n{rewrite_launches(source.read_text())}\n'
    if exports is not None:
        text += f'#include "{exports}"\n'
    return text


def build(out_dir: Path) -> Path:
    """Compile the kernels, the self-test kernels and the runtime into ``out_dir/libcuda_emu.so`` (one g++ per
    file, all at once); returns its path. Raises EmulationError with the compiler's output when a file fails."""
    cxx = compiler()
    if cxx is None:
        raise EmulationError("no C++ compiler (set CXX or install g++)")
    units = {
        "dasc_gate": _translation_unit(CUDA_DIR / "dasc_gate.cu", HERE / "dasc_gate_exports.inc"),
        "graph_conv": _translation_unit(CUDA_DIR / "graph_conv.cu", HERE / "graph_conv_exports.inc"),
        "selftest": _translation_unit(HERE / "selftest.cu", None),
    }
    flags = ["-std=c++17", "-O2", "-fPIC", "-pthread", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    includes = [f"-I{HERE / 'include'}", f"-I{HERE}", f"-I{ROOT / 'csrc' / 'include'}", f"-I{CUDA_DIR}"]
    jobs = []
    for name, text in units.items():
        (out_dir / f"{name}.cpp").write_text(text)
    sources = [out_dir / f"{name}.cpp" for name in units] + [HERE / "cuda_cpu_runtime.cpp"]
    for src in sources:
        obj = out_dir / f"{src.stem}.o"
        cmd = [cxx, *flags, *includes, "-c", str(src), "-o", str(obj)]
        jobs.append((src, obj, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    failures = []
    for src, _, proc in jobs:
        output, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:
            failures.append(f"{src.name}:\n{output}")
    if failures:
        raise EmulationError("emulation build failed\n" + "\n".join(failures))
    library = out_dir / "libcuda_emu.so"
    link = [cxx, "-shared", "-pthread", *(str(obj) for _, obj, _ in jobs), "-o", str(library)]
    subprocess.run(link, check=True, capture_output=True, timeout=120)
    return library


@dataclass
class _Guarded:
    raw: Tensor
    data: Tensor  # the (n,) interior the kernel may touch
    guards: Tensor  # both guard zones' bits as first written
    start: int  # elements before the interior


@dataclass
class Buffers:
    """Guarded flat buffers for one launch."""

    items: list[_Guarded] = field(default_factory=list)

    misalign: bool = False  # every buffer starts one element past a 16-byte boundary (no vector accesses)

    def put(self, values: Tensor | None, dtype: torch.dtype, numel: int | None = None) -> int:
        """A guarded copy of ``values`` (any shape; NaN-filled with ``numel`` elements when None) as ``dtype``;
        returns its device pointer (16-byte aligned, as torch's allocations are, unless ``misalign``)."""
        n = values.numel() if values is not None else int(numel or 0)
        start = GUARD + int(self.misalign)
        raw = torch.full((start + n + GUARD,), float("nan"), dtype=dtype)
        if values is not None:
            raw[start : start + n] = values.reshape(-1).to(dtype)
        item = _Guarded(raw, raw[start : start + n], self._guard_bits(raw, start).clone(), start)
        self.items.append(item)
        return raw.data_ptr() + start * raw.element_size()

    def last(self) -> Tensor:
        """The interior of the buffer put last (a view: what the kernel wrote)."""
        return self.items[-1].data

    @staticmethod
    def _guard_bits(raw: Tensor, start: int) -> Tensor:
        bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[raw.element_size()]
        as_int = raw.view(bits)
        return torch.cat([as_int[:start], as_int[-GUARD:]])

    def check_guards(self, what: str) -> None:
        for index, item in enumerate(self.items):
            if not torch.equal(self._guard_bits(item.raw, item.start), item.guards):
                raise EmulationError(f"{what}: buffer {index} was written outside its bounds")


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The kernels' accumulation type: float64 for float64 features, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class Emulator:
    """The emulated launchers of ``mdanet/kernels.h`` on CPU tensors (inputs any float dtype; cast as needed)."""

    def __init__(self, library: Path) -> None:
        self.lib = ctypes.CDLL(str(library))
        self.lib.emu_last_message.restype = ctypes.c_char_p
        self.lib.emu_vector_accesses.restype = ctypes.c_uint64
        self.lib.emu_dasc_gate_workspace_bytes.restype = ctypes.c_int64
        for name, signature in _SIGNATURES.items():
            getattr(self.lib, name).argtypes = [_CTYPES[code] for code in signature]
        self.schedule()

    def schedule(self, workers: int = 2, policy: str = "round-robin", reverse_blocks: bool = False) -> None:
        """Blocks run on ``workers`` host threads (in descending order with ``reverse_blocks``); the CUDA threads
        of a block in the order of ``policy`` (POLICIES), so that a result which depends on the order threads reach
        a point (a missing barrier) shows up as a difference."""
        self.lib.emu_set_schedule(workers, POLICIES[policy], int(reverse_blocks))

    def call(self, name: str, *args: object, buffers: Buffers) -> None:
        """Calls the C entry point ``name``; raises EmulationError on a non-zero status or a broken guard."""
        self.lib.emu_clear_error()
        status = getattr(self.lib, name)(*args)
        if status != 0:
            message = self.lib.emu_last_message().decode()
            raise EmulationError(f"{name}: CUDA error {status}: {message}")
        buffers.check_guards(name)

    def vector_accesses(self) -> int:
        """16-byte-or-wider accesses the kernels made since the last call: > 0 when a launch took its vector path."""
        return int(self.lib.emu_vector_accesses())

    def dasc_plan(self, dtype: torch.dtype, shape: tuple[int, ...], backward: bool) -> dict[str, int]:
        """How the launchers split ``shape`` (B, C, C_de, H, W): pixels per tile, channel chunks (> 1: partial sums
        and a finalize kernel), pixels per row segment and segments per row."""
        b, c, c_de, h, w = shape
        out = (ctypes.c_int64 * 4)()
        self.lib.emu_dasc_gate_plan(DTYPE_CODES[dtype], b, c, c_de, h * w, int(backward), out)
        return dict(zip(("tile", "chunks", "seg", "segs"), out, strict=True))

    def _workspace(self, buf: Buffers, dtype: torch.dtype, dims: tuple[int, ...], backward: bool, det: bool) -> int:
        acc = acc_dtype(dtype)
        size = self.lib.emu_dasc_gate_workspace_bytes(DTYPE_CODES[dtype], *dims, int(backward), int(det))
        return buf.put(None, acc, size // torch.empty(0, dtype=acc).element_size())

    def dasc_gate_forward(
        self, f_m1: Tensor, f_m2: Tensor, f_de: Tensor, coef: Tensor, misalign: bool = False
    ) -> tuple[Tensor, Tensor]:
        """f_m1, f_m2 ``(B, C, H, W)``, f_de ``(B, C_de, H, W)`` of the kernel dtype; coef ``(C + C_de + 1,)``.
        Returns out ``(B, C, H, W)`` and the workspace's scale ``(B, H, W)``."""
        dtype = f_m1.dtype
        (b, c, h, w), c_de = f_m1.shape, f_de.shape[1]
        buf = Buffers(misalign=misalign)
        dims = (b, c, c_de, h * w)
        ptrs = [buf.put(t, dtype) for t in (f_m1, f_m2, f_de)] + [buf.put(coef, acc_dtype(dtype))]
        ptrs.append(self._workspace(buf, dtype, dims, False, False))
        workspace = buf.last()
        out_ptr = buf.put(None, dtype, f_m1.numel())
        self.call("emu_dasc_gate_forward", DTYPE_CODES[dtype], *dims, *ptrs, out_ptr, buffers=buf)
        return buf.last().view(f_m1.shape).clone(), workspace[: b * h * w].view(b, h, w).clone()

    def dasc_gate_backward(
        self,
        grad: Tensor,
        f_m1: Tensor,
        f_m2: Tensor,
        f_de: Tensor,
        coef: Tensor,
        *,
        deterministic: bool = False,
        row_grid: int = 0,
        misalign: bool = False,
    ) -> dict[str, Tensor]:
        """Shapes as in the forward, grad like f_m1. Returns grad_m1, grad_m2, grad_de (feature dtype) and
        grad_coef ``(C + C_de + 1,)`` (acc dtype) = the gradient of [v_d, v_de, c]. ``row_grid`` > 0 runs the row
        kernel on that many blocks (grid-stride rounds); ``misalign`` shifts every buffer off 16 bytes."""
        dtype, acc = f_m1.dtype, acc_dtype(f_m1.dtype)
        (b, c, h, w), c_de = f_m1.shape, f_de.shape[1]
        buf = Buffers(misalign=misalign)
        dims = (b, c, c_de, h * w)
        ptrs = [buf.put(t, dtype) for t in (grad, f_m1, f_m2, f_de)] + [buf.put(coef, acc)]
        ptrs.append(self._workspace(buf, dtype, dims, True, deterministic))
        outs: dict[str, tuple[Tensor, tuple[int, ...]]] = {}
        for key, like in (("grad_m1", f_m1), ("grad_m2", f_m1), ("grad_de", f_de)):
            ptrs.append(buf.put(None, dtype, like.numel()))
            outs[key] = (buf.last(), tuple(like.shape))
        ptrs.append(buf.put(torch.zeros(c + c_de + 1), acc))  # zeroed by the caller, as kernels.h requires
        outs["grad_coef"] = (buf.last(), (c + c_de + 1,))
        args = (DTYPE_CODES[dtype], row_grid, *dims, *ptrs, int(deterministic))
        self.call("emu_dasc_gate_backward", *args, buffers=buf)
        return {key: data.view(shape).clone() for key, (data, shape) in outs.items()}

    def graph_conv_bias_relu(self, q: Tensor, a_bias: Tensor, w_rowsum: Tensor, w_bias: Tensor) -> Tensor:
        """q ``(B, M, E)`` of the kernel dtype; a_bias ``(M,)``, w_rowsum and w_bias ``(E,)`` (acc). Returns the
        epilogue's result ``(B, M, E)``."""
        dtype, acc = q.dtype, acc_dtype(q.dtype)
        buf = Buffers()
        q_ptr = buf.put(q, dtype)
        result = buf.last()
        ptrs = [buf.put(t, acc) for t in (a_bias, w_rowsum, w_bias)]
        self.call("emu_graph_conv_bias_relu", DTYPE_CODES[dtype], *q.shape, q_ptr, *ptrs, buffers=buf)
        return result.view(q.shape).clone()

    def graph_conv_relu_mask(self, grad: Tensor, out: Tensor) -> Tensor:
        """grad and out of one shape and the kernel dtype; returns grad * (out > 0) in that shape."""
        buf = Buffers()
        ptrs = [buf.put(grad, grad.dtype), buf.put(out, grad.dtype), buf.put(None, grad.dtype, grad.numel())]
        self.call("emu_graph_conv_relu_mask", DTYPE_CODES[grad.dtype], grad.numel(), *ptrs, buffers=buf)
        return buf.last().view(grad.shape).clone()

    def graph_conv_kernels(
        self, grid: int, q: Tensor, a_bias: Tensor, w_rowsum: Tensor, w_bias: Tensor, grad: Tensor, wide: bool
    ) -> tuple[Tensor, Tensor]:
        """bias_relu then relu_mask (on its result, scalar form), both on ``grid`` blocks with 64-bit (``wide``)
        or 32-bit indices: returns (out, grad_y)."""
        dtype, acc = q.dtype, acc_dtype(q.dtype)
        buf = Buffers()
        q_ptr = buf.put(q, dtype)
        result = buf.last()
        ptrs = [buf.put(t, acc) for t in (a_bias, w_rowsum, w_bias)] + [buf.put(grad, dtype)]
        grad_y_ptr = buf.put(None, dtype, q.numel())
        dims = (DTYPE_CODES[dtype], grid, int(wide), *q.shape)
        self.call("emu_graph_conv_kernels", *dims, q_ptr, *ptrs, grad_y_ptr, buffers=buf)
        return result.view(q.shape).clone(), buf.last().view(q.shape).clone()
