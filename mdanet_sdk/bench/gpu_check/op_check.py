"""Step (c) of the GPU check: the native ops against the reference (:mod:`mdanet_sdk.ops.reference`) at every
call a paper-preset forward pass makes at the check's slice size and batch sizes.

The calls are captured from the model (:func:`mdanet_sdk.bench.native_ops.captured_op_calls`), so a change of
the architecture changes what is checked without a list to keep up. Each distinct call is checked for:

- ``fp32``: the output and the gradients of every input, native against reference (TF32 off for both);
- ``channels_last``: the fp32 output with the 4-D inputs in channels_last memory;
- ``fp16``, ``bf16`` (CUDA): the output with the inputs rounded to that dtype; the native error against the
  float64 reference of the same rounded inputs must be within twice the reference's own error at that dtype
  (or a small floor), i.e. the kernel is as accurate as the composite it replaces.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import torch
from torch import Tensor

from mdanet_sdk import ops
from mdanet_sdk.bench.gpu_check.child import Recorder, Skip
from mdanet_sdk.bench.gpu_check.config import CheckConfig
from mdanet_sdk.bench.native_ops import captured_op_calls
from mdanet_sdk.bench.runners import build_network, kind_channels, one_line
from mdanet_sdk.errors import BackendUnavailableError
from mdanet_sdk.ops import reference

__all__ = ["paper_calls", "check_call", "compare_ops"]

#: Largest error relative to the reference's largest magnitude: fp32 values, fp32 gradients.
_FP32_TOL = {"value": 1e-4, "grad": 1e-3}
#: Outputs within this fraction of the largest of 0 get no upstream gradient (a ReLU's kink).
_KINK = 1e-4
#: Error floors of the reduced precisions (relative to the largest magnitude).
_LOW_TOL = {torch.float16: 1e-2, torch.bfloat16: 5e-2}

Call = tuple[str, tuple[Tensor, ...]]


def paper_calls(size: int, batches: tuple[int, ...], device: torch.device) -> list[Call]:
    """Every distinct op call (name and argument shapes) of paper-preset forwards of both modality kinds at
    ``size``² and each of ``batches``, with the tensors the network passed."""
    seen: set[tuple[str, tuple[tuple[int, ...], ...]]] = set()
    distinct: list[Call] = []
    for kind in ("ctp", "mri"):
        model = build_network("paper", kind, size=size).to(device)
        for batch in batches:
            x = torch.randn(batch, kind_channels(kind), size, size, device=device)
            with torch.no_grad(), captured_op_calls() as calls:
                model(x)
            for name, args in calls:
                key = (name, tuple(tuple(a.shape) for a in args))
                if key not in seen:
                    seen.add(key)
                    distinct.append((name, tuple(a.detach() for a in args)))
    return distinct


def _error(got: Tensor, want: Tensor) -> float:
    """Largest absolute difference over the reference's largest magnitude."""
    scale = want.abs().max().double().clamp_min(1e-12)
    return float((got.double() - want.double()).abs().max() / scale)


def _with_grads(
    fn: Callable[..., Tensor], args: tuple[Tensor, ...], keep: Tensor, seed: int = 0
) -> tuple[Tensor, list[Tensor | None]]:
    """``fn(*args)`` and the gradient of each input for a seeded random output gradient, 0 where not ``keep``."""
    leaves = [a.clone().requires_grad_(a.is_floating_point()) for a in args]
    out = fn(*leaves)
    generator = torch.Generator(device=out.device).manual_seed(seed)
    upstream = torch.randn(out.shape, generator=generator, device=out.device, dtype=out.dtype)
    out.backward(upstream * keep)
    return out.detach(), [leaf.grad for leaf in leaves]


def _check_fp32(native: Callable[..., Tensor], ref: Callable[..., Tensor], args: tuple[Tensor, ...]) -> dict[str, Any]:
    # graph_conv ends in a ReLU: the few outputs (of millions) that the two implementations round to opposite sides
    # of 0 would each move a whole row of gradients by their upstream gradient, so those near 0 get none.
    with torch.no_grad():
        probe = native(*args)
    keep = probe.abs() > _KINK * probe.abs().max()
    out, grads = _with_grads(native, args, keep)
    ref_out, ref_grads = _with_grads(ref, args, keep)
    grad_errors = [_error(g, r) for g, r in zip(grads, ref_grads) if g is not None and r is not None]
    value, grad = _error(out, ref_out), max(grad_errors, default=0.0)
    return {"ok": value <= _FP32_TOL["value"] and grad <= _FP32_TOL["grad"], "value_error": value, "grad_error": grad}


def _check_channels_last(
    native: Callable[..., Tensor], ref: Callable[..., Tensor], args: tuple[Tensor, ...]
) -> dict[str, Any]:
    cl = tuple(a.contiguous(memory_format=torch.channels_last) if a.dim() == 4 else a for a in args)
    with torch.no_grad():
        value = _error(native(*cl), ref(*args))
    return {"ok": value <= _FP32_TOL["value"], "value_error": value}


def _check_low(
    native: Callable[..., Tensor], ref: Callable[..., Tensor], args: tuple[Tensor, ...], dtype: torch.dtype
) -> dict[str, Any]:
    low = tuple(a.to(dtype) if a.is_floating_point() else a for a in args)
    with torch.no_grad():
        exact = ref(*(a.double() if a.is_floating_point() else a for a in low))
        native_error, ref_error = _error(native(*low), exact), _error(ref(*low), exact)
    ok = native_error <= max(2 * ref_error, _LOW_TOL[dtype])
    return {"ok": ok, "value_error": native_error, "reference_error": ref_error}


def check_call(name: str, args: tuple[Tensor, ...], device: torch.device) -> dict[str, Any]:
    """All checks of one call: ``{"op", "shapes", "checks": {check: {"ok", errors...}}, "ok"}``; a check that
    raises is failed with the error in one line."""
    native = getattr(ops, name)

    def run_native(*a: Tensor) -> Tensor:
        return native(*a, impl="native")

    ref = getattr(reference, name)
    checks: dict[str, Callable[[], dict[str, Any]]] = {
        "fp32": lambda: _check_fp32(run_native, ref, args),
        "channels_last": lambda: _check_channels_last(run_native, ref, args),
    }
    if device.type == "cuda":
        for label, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
            checks[label] = partial(_check_low, run_native, ref, args, dtype)
    results: dict[str, dict[str, Any]] = {}
    for label, check in checks.items():
        try:
            results[label] = check()
        except Exception as exc:  # noqa: BLE001 - a kernel that raises fails its check, the others still run
            results[label] = {"ok": False, "error": one_line(exc)}
    shapes = [list(a.shape) for a in args[: 3 if name == "dasc_gate" else 1]]
    return {"op": name, "shapes": shapes, "checks": results, "ok": all(r["ok"] for r in results.values())}


def compare_ops(config: CheckConfig, rec: Recorder) -> None:
    """(c) Every paper-preset op call, native against reference (on the CPU kernels in a dry run)."""
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Skip("no CUDA device: torch.cuda.is_available() is False")
    try:
        ops.implementation("native", device)
    except BackendUnavailableError as exc:
        if config.dry_run:
            raise Skip(str(exc)) from None
        rec.finish("failed", f"failed: {exc}")
        return
    # fp32 means fp32 here: TF32 would put the reference 1e-3 off before the kernels are compared
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    calls = paper_calls(config.size, config.ops_batches, device)
    rec.put("size", config.size)
    rec.put("batches", list(config.ops_batches))
    failed = 0
    for name, args in calls:
        entry = check_call(name, args, device)
        failed += not entry["ok"]
        rec.append("calls", entry)
    checks = ", ".join(rec.data["result"]["calls"][0]["checks"]) if calls else "none"
    summary = (
        f"{len(calls) - failed}/{len(calls)} paper-preset op calls at {config.size}² match the reference ({checks})"
    )
    rec.finish("ok" if calls and not failed else "failed", summary)
