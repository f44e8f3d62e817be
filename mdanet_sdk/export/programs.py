"""Capturing a network as a program: TorchScript tracing, ``torch.export`` with a dynamic batch, the probe batch.

The writers here save a program with the artefact's metadata attached (``files``: archive name -> JSON text)
to a temporary file that :func:`~mdanet_sdk.export.writers.export_model` validates before keeping it.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdanet_sdk.artifact_safety import MAX_BATCH, META, PREPROCESS
from mdanet_sdk.data.preprocess import MAX_SLICES
from mdanet_sdk.data.validate import MAX_ABS_VALUE, MAX_INF_SHARE
from mdanet_sdk._values import is_whole
from mdanet_sdk.errors import ExportError, InputError
from mdanet_sdk.inference.postprocess import PostprocessConfig
from mdanet_sdk.pipeline.volume import VolumePipeline

__all__ = [
    "BatchRange",
    "probe_batch",
    "capture_exported",
    "without_sample_inputs",
    "quiet_torchscript",
    "write_torchscript",
    "write_exported",
]


#: The batch TensorRT tunes for unless told otherwise (the paper's batch size).
DEFAULT_OPT_BATCH = 16


@dataclass(frozen=True)
class BatchRange:
    """The batch sizes an artefact accepts: ``min <= opt <= max`` (``opt`` is the TensorRT tuning point; 0, the
    default: 16 brought into ``[min, max]``, so that a range such as ``max=8`` needs no ``opt`` of its own)."""

    min: int = 1
    opt: int = 0
    max: int = 64

    def __post_init__(self) -> None:
        if not all(is_whole(v) for v in (self.min, self.opt, self.max)):
            raise InputError(
                f"batch sizes must be whole numbers; got min={self.min!r:.20}, opt={self.opt!r:.20}, max={self.max!r:.20}."
            )
        if self.opt == 0 and 1 <= self.min <= self.max:
            object.__setattr__(self, "opt", min(max(DEFAULT_OPT_BATCH, self.min), self.max))
        if not 1 <= self.min <= self.opt <= self.max <= MAX_BATCH:
            opt = f"opt={self.opt}, " if self.opt else ""  # 0: not given
            raise InputError(
                f"batch sizes must satisfy 1 <= min <= opt <= max <= {MAX_BATCH}; got min={self.min}, {opt}"
                f"max={self.max}."
            )

    @property
    def dynamic(self) -> bool:
        return self.min != self.max

    def probe_sizes(self) -> tuple[int, ...]:
        """Two batch sizes for validation, both unlike the capture batch (2) where the range allows."""
        sizes = {self.min, min(self.max, max(self.min, 3))}
        return tuple(sorted(sizes))

    def capture_size(self) -> int:
        # torch.export specialises a dimension seen as 1, so capture at 2 when the range allows.
        return min(self.max, max(self.min, 2))


def probe_batch(batch: int, channels: int, height: int, width: int, seed: int = 0) -> Tensor:
    """A deterministic phantom-like probe: smooth fields (lesion-sized blobs) plus fine noise, ~z-scored.

    Returns:
        float32 ``(batch, channels, height, width)``.
    """
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, channels, max(1, height // 8), max(1, width // 8), generator=gen)
    smooth = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return smooth + 0.1 * torch.randn(batch, channels, height, width, generator=gen)


def capture_exported(model: nn.Module, example: Tensor, batch: BatchRange) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` on ``example`` ``(B, C, H, W)``, the batch dynamic within ``batch``.

    Raises:
        ExportError: torch.export cannot capture the model.
    """
    dynamic = ({0: torch.export.Dim("batch", min=batch.min, max=batch.max)},) if batch.dynamic else None
    try:
        return torch.export.export(model, (example,), dynamic_shapes=dynamic)
    except Exception as exc:  # torch.export raises many types; all mean "this model could not be captured"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"torch.export could not capture the model ({first[:300]}).") from exc


def without_sample_inputs(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """``program`` without its example inputs (modified in place)."""
    # torch.export.save stores the example inputs as a pickle (data/sample_inputs); nothing needs them, and a
    # loader that unpickles nothing has no use for them (artifact_safety.loadable drops them anyway).
    program.example_inputs = None
    return program


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Silence the TorchScript warnings that say nothing about an artefact."""
    with warnings.catch_warnings():
        # torch >= 2.10 marks torch.jit deprecated in favour of torch.export, but TorchScript is what libtorch
        # (C++) loads; and the tracer warns that shape tests become constants, which is intended here (the
        # in-plane size is fixed at export: see the Note of mdanet_sdk.export).
        warnings.filterwarnings("ignore", message=r".*torch\.jit", category=DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def write_torchscript(model: nn.Module, example: Tensor, files: dict[str, str], tmp: Path) -> None:
    """Trace ``model`` on ``example`` ``(B, C, H, W)``, script it inside a
    :class:`~mdanet_sdk.pipeline.volume.VolumePipeline` made from the metadata ``files`` (its ``forward`` is
    the traced network's; ``segment`` adds the whole-case pipeline the C API runs), and save it with ``files``
    attached to ``tmp``."""
    meta = json.loads(files[META])
    preprocess = json.loads(files[PREPROCESS])
    inference = PostprocessConfig.from_dict(meta.get("checkpoint", {}).get("inference", {})).to_dict()
    batch = (int(meta["batch"]["min"]), int(meta["batch"]["max"]))
    with quiet_torchscript():
        traced = torch.jit.trace(model, example, check_trace=False, _store_inputs=False)
        pipeline = VolumePipeline(
            traced,
            list(meta["modalities"]),
            preprocess,
            inference,
            batch,
            example.dtype,
            MAX_SLICES,
            MAX_INF_SHARE,
            MAX_ABS_VALUE,
        )
        scripted = torch.jit.script(pipeline)
        with tmp.open("wb") as fh:  # through a handle, the archive's root is "archive", not the temporary name
            torch.jit.save(scripted, fh, _extra_files=files)


def write_exported(model: nn.Module, example: Tensor, batch: BatchRange, files: dict[str, str], tmp: Path) -> None:
    """Capture ``model`` (:func:`capture_exported`) and save the program with ``files`` attached to ``tmp``."""
    with tmp.open("wb") as fh:
        torch.export.save(without_sample_inputs(capture_exported(model, example, batch)), fh, extra_files=files)
