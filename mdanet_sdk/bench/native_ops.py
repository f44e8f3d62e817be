"""The ops section: the native operators against their eager composite (:mod:`mdanet_sdk.ops.reference`), at
the exact calls (shapes, strides, weights) a paper-preset forward pass makes, timed round-robin."""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from mdanet_sdk import ops
from mdanet_sdk.bench.records import BenchSettings, OpsRecord
from mdanet_sdk.bench.runners import Progress, build_network, kind_channels, quiet
from mdanet_sdk.bench.timing import Stats, calls_per_sample, measure_interleaved, sync_for
from mdanet_sdk.errors import BackendUnavailableError

__all__ = ["bench_ops", "captured_op_calls"]


@contextlib.contextmanager
def captured_op_calls() -> Iterator[list[tuple[str, tuple[Tensor, ...]]]]:
    """Record the arguments of every op call (:data:`mdanet_sdk.ops.OPS`) made inside the block.

    The model calls the ops through the :mod:`mdanet_sdk.ops` module attribute, so wrapping the attribute for the
    length of one forward pass yields exactly the tensors (shapes, strides, weights) the network uses.
    """
    calls: list[tuple[str, tuple[Tensor, ...]]] = []
    originals = {name: getattr(ops, name) for name in ops.OPS}

    def spy(name: str) -> Callable[..., Tensor]:
        def wrapper(*args: Tensor, **kwargs: Any) -> Tensor:
            calls.append((name, args))
            return originals[name](*args, **kwargs)

        return wrapper

    try:
        for name in ops.OPS:
            setattr(ops, name, spy(name))
        yield calls
    finally:
        for name, fn in originals.items():
            setattr(ops, name, fn)


def _bound(fn: Callable[..., Tensor], args: tuple[Tensor, ...], **kwargs: str) -> Callable[[], Tensor]:
    """A call of ``fn(*args, **kwargs)`` taking no argument."""
    return lambda: fn(*args, **kwargs)


def _repeated(fn: Callable[[], object], times: int) -> Callable[[], list[object]]:
    """A call running ``fn`` ``times`` times back to back (one timed sample)."""
    return lambda: [fn() for _ in range(times)]


def bench_ops(settings: BenchSettings, progress: Progress = quiet) -> list[OpsRecord]:
    """The ops section: each distinct op call of a paper-preset forward (batch 1, ``settings.size``), eager vs
    native, timed round-robin."""
    from mdanet_sdk.ops import reference

    device = settings.resolved_device()
    model = build_network("paper", settings.kind, size=settings.size).to(device)
    x = torch.randn(1, kind_channels(settings.kind), settings.size, settings.size, device=device)
    with torch.inference_mode(), captured_op_calls() as calls:
        model(x)
    try:
        ops.implementation("native", device)
        native_reason = None
    except BackendUnavailableError as exc:
        native_reason = str(exc)
    seen: set[tuple[str, tuple[tuple[int, ...], ...]]] = set()
    records: list[OpsRecord] = []
    for name, args in calls:
        key = (name, tuple(tuple(a.shape) for a in args))
        if key in seen:
            continue
        seen.add(key)
        arg_names = ("f_m1", "f_m2", "f_de") if name == "dasc_gate" else ("g",)
        shapes = {n: list(a.shape) for n, a in zip(arg_names, args)}
        call = f"{name}[{'x'.join(map(str, args[0].shape))}]"
        # the fields every record of this call shares (a partial, so mypy checks them against OpsRecord)
        record = partial(OpsRecord, op=name, call=call, shapes=shapes, device=str(device))
        fns: dict[str, Callable[[], object]] = {"eager": _bound(getattr(reference, name), args)}
        if native_reason is None:
            fns["native"] = _bound(getattr(ops, name), args, impl="native")
        else:
            records.append(record(backend="native", status="unavailable", reason=native_reason))
        progress(f"ops: {call}")
        with torch.inference_mode():
            loops = calls_per_sample(fns, sync=sync_for(device))
            times = measure_interleaved(
                {b: _repeated(f, loops[b]) for b, f in fns.items()},
                warmup=settings.warmup,
                repeats=max(settings.repeats, 5),
                sync=sync_for(device),
            )
        eager_ms = Stats.of([1e3 * s / loops["eager"] for s in times["eager"]]).median
        for backend, seconds in times.items():
            lat = Stats.of([1e3 * s / loops[backend] for s in seconds])
            records.append(
                record(backend=backend, latency_ms=lat, ratio=eager_ms / lat.median, calls_per_sample=loops[backend])
            )
    return sorted(records, key=lambda r: (r.op, r.call, r.backend))
