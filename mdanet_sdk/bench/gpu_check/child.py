"""The child-process side of a step: :class:`Recorder` (partial results written atomically as they arrive, so
the parent can read them at any moment and a step killed at its time limit still leaves its data), the
:class:`Skip` a step raises when it cannot run here, and :func:`run_step`, the child's entry point."""

from __future__ import annotations

import importlib
import time
import traceback
from pathlib import Path
from typing import Any

from mdanet_sdk._files import write_json
from mdanet_sdk.bench.gpu_check.config import CheckConfig

__all__ = ["Skip", "Recorder", "run_step"]


class Skip(Exception):
    """The step cannot run here (no CUDA, no TensorRT, a dry run); the message says why in one sentence."""


class Recorder:
    """A step's results, rewritten to ``path`` (atomically) on every change.

    The file holds ``{"status", "summary", "reason", "result": {...}}``; ``status`` is ``running`` until the step
    ends, then ``ok``, ``failed`` or ``skipped``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"status": "running", "summary": None, "reason": None, "result": {}}
        self._flush()

    def put(self, key: str, value: Any) -> None:
        """Set ``result[key]`` and write."""
        self.data["result"][key] = value
        self._flush()

    def append(self, key: str, item: Any) -> None:
        """Append ``item`` to the list ``result[key]`` and write."""
        self.data["result"].setdefault(key, []).append(item)
        self._flush()

    def finish(self, status: str, summary: str, reason: str | None = None) -> None:
        """End the step: ``ok``, ``failed`` or ``skipped``, a one-line ``summary`` (and why, for the latter two)."""
        self.data.update(status=status, summary=summary, reason=reason)
        self._flush()

    def _flush(self) -> None:
        write_json(self.path, self.data)


def run_step(target: str, config_path: Path, result_path: Path) -> int:
    """Run the step function ``target`` (``module:function``) and record how it ended; the exit status is 0
    unless it failed.

    The function is called as ``fn(config, recorder)``; it calls :meth:`Recorder.finish` itself for ``ok`` or
    ``failed``, raises :class:`Skip` when it cannot run here, and any other exception fails the step with the
    error's last traceback lines kept in ``reason``.
    """
    module, _, name = target.partition(":")
    recorder = Recorder(result_path)
    started = time.perf_counter()
    try:
        getattr(importlib.import_module(module), name)(CheckConfig.load(config_path), recorder)
    except Skip as exc:
        recorder.finish("skipped", f"skipped: {exc}", str(exc))
        return 0
    except BaseException as exc:  # noqa: BLE001 - whatever broke is the step's result, not the run's end
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
        last = "".join(lines).strip().splitlines()[-1]
        recorder.finish("failed", f"failed: {last}", "".join(lines[-3:]).strip())
        return 1
    if recorder.data["status"] == "running":  # a step that returned without saying how it went
        recorder.finish("ok", f"done in {time.perf_counter() - started:.1f} s")
    return 0 if recorder.data["status"] != "failed" else 1
