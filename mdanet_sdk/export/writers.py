"""Writing artefacts: :func:`export_model` and :func:`export_checkpoint` capture a network, save it with its
metadata, validate it against the eager model and keep it only when it matches.

The file is written under a temporary name (:func:`mdanet_sdk._files.atomic_write`), sealed with an integrity
record (the SHA-256 of every member, ``mdanet/integrity.json``), reloaded with the checks of
:func:`~mdanet_sdk.export.load_artifact`, run on a probe batch at two batch sizes and compared with the eager
fp32 model; it replaces ``output`` only when the eager logits are finite and
``max |artefact - eager| <= TOLERANCES[precision] * max(1, max |eager|)``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from mdanet_sdk import __version__
from mdanet_sdk import ops as _ops  # export_checkpoint's `ops` argument takes the plain name
from mdanet_sdk import artifact_safety as safety
from mdanet_sdk._files import atomic_write
from mdanet_sdk.artifact_safety import ARTIFACT_VERSION, FORMATS
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.device import resolve_device
from mdanet_sdk.errors import BackendUnavailableError, CheckpointError, ExportError, InputError
from mdanet_sdk.inference.optimize import fold_batchnorm
from mdanet_sdk.pipeline import PIPELINE_REVISION
from mdanet_sdk.export.artifact import PRECISIONS, load_artifact
from mdanet_sdk.export.programs import BatchRange, probe_batch, write_exported, write_torchscript
from mdanet_sdk.export.tensorrt import check_tensorrt_request, tensorrt_unavailable_reason, write_tensorrt

__all__ = ["TOLERANCES", "ExportResult", "export_model", "export_checkpoint"]

#: Largest accepted ``max |artefact - eager fp32|``, as a fraction of ``max(1, max |eager logit|)``. fp32 only
#: reorders float sums; fp16 keeps ~11 mantissa bits and bf16 ~8 through a deep network.
TOLERANCES: dict[str, float] = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2}


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and how well it matched the eager model.

    Attributes:
        path: the artefact.
        format, precision, ops: as stored in the metadata (``ops`` is ``"native"``, ``"reference"`` or,
            for TensorRT, ``"plugin"``).
        input_shape: ``(C, H, W)``.
        batch: the accepted batch range.
        max_abs_diff: ``max |artefact - eager fp32|`` over the probe batches.
        tolerance: the accepted bound for that difference (absolute, already scaled).
        seconds: wall time of capture, save and validation.
        warnings: sentences about the artefact the user should read (a grid other than the checkpoint's).
    """

    path: Path
    format: str
    precision: str
    ops: str
    input_shape: tuple[int, int, int]
    batch: BatchRange
    max_abs_diff: float
    tolerance: float
    seconds: float
    warnings: tuple[str, ...] = ()


def _extra_files(model_config: MDANetConfig, preprocess: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, str]:
    """The metadata members of an artefact: archive name -> JSON text."""
    return {
        safety.CONFIG: json.dumps(model_config.to_dict()),
        safety.PREPROCESS: json.dumps(dict(preprocess)),
        safety.META: json.dumps(dict(meta)),
    }


#: The file ending of each format's artefact (:func:`_check_output`).
ARTEFACT_SUFFIXES = {"torchscript": ".ts", "exported": ".pt2", "tensorrt": ".pt2"}


def _check_output(fmt: str, output: str | os.PathLike[str]) -> None:
    """Refuse an output that is named for another format, is a folder, or would replace a file that is not an
    mdanet-sdk artefact (a checkpoint, a scan): re-exporting over an earlier artefact is fine."""
    path, suffix = Path(output), ARTEFACT_SUFFIXES[fmt]
    if path.suffix.lower() != suffix:
        raise InputError(f"a {fmt} artefact is a {suffix} file; name the output like model{suffix}.")
    if path.is_dir():
        raise InputError(f"output {path} is a folder; give a file name like {path / ('model' + suffix)}.")
    if path.exists():
        try:
            safety.describe(path, trust=True)
        except CheckpointError:
            raise InputError(
                f"output {path} exists and is not an mdanet-sdk artefact (a checkpoint, an image?); choose another "
                "name, or remove that file first."
            ) from None


def _check_request(fmt: str, precision: str) -> None:
    if fmt not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}.")
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}.")
    if fmt == "tensorrt":
        reason = tensorrt_unavailable_reason()
        if reason:
            raise BackendUnavailableError(reason)


def _op_implementation(model: nn.Module, device: torch.device) -> str:
    return _ops.implementation(getattr(model, "ops", "auto"), device)


def export_model(
    model: nn.Module,
    fmt: str,
    output: str | os.PathLike[str],
    *,
    preprocess: Mapping[str, Any],
    meta: Mapping[str, Any] | None = None,
    model_config: MDANetConfig | None = None,
    precision: str = "fp32",
    batch: BatchRange = BatchRange(),
    size: tuple[int, int] | None = None,
    device: str | torch.device | None = None,
) -> ExportResult:
    """Write ``model`` as a validated artefact.

    The op implementation the model was built with decides what the artefact contains: ``"native"`` keeps
    the ``mdanet::`` custom ops (TensorRT: as plugins), ``"reference"`` inlines the reference math.

    Args:
        model: an MDANet in eval mode (e.g. ``Checkpoint.build_model(ops=...)``); moved to ``device``.
        fmt: ``"torchscript"``, ``"exported"`` or ``"tensorrt"``.
        output: the file to write (its folder is created); replaced atomically once validated.
        preprocess: the preprocessing config dict of the checkpoint (``PreprocessConfig.to_dict()``); for a
            square ``size`` its ``size`` is set so that preprocessing makes slices of exactly that grid.
        meta: source metadata kept under ``meta["checkpoint"]``.
        model_config: the config to store (default ``model.config``).
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"``: the dtype the artefact computes in.
        batch: accepted batch sizes (dynamic when ``min < max``).
        size: in-plane ``(H, W)``, multiples of 16 (default: the grid ``preprocess`` makes: ``size`` padded
            to ``multiple``).
        device: where to capture and validate (default CPU; CUDA for TensorRT).

    Returns:
        the :class:`ExportResult`.

    Raises:
        InputError: an unknown format/precision, or no usable size.
        BackendUnavailableError: TensorRT without a GPU or without Torch-TensorRT.
        ExportError: the model could not be captured, or the artefact's outputs differ from the eager model
            beyond tolerance (no file is left behind).
    """
    started = time.perf_counter()
    _check_request(fmt, precision)
    _check_output(fmt, output)
    # nn.Module types unknown attributes as Tensor | Module; an MDANet's .config is its MDANetConfig.
    config = model_config or cast(MDANetConfig, model.config)
    preprocess = dict(preprocess)
    grid = _model_grid(preprocess)
    height, width = _resolve_size(size, preprocess)
    warnings: tuple[str, ...] = ()
    if grid is not None and (height, width) != (grid, grid):
        warnings = (
            f"the model was trained on a {grid}x{grid} grid and this artefact resamples every slice to "
            f"{height}x{width}, which changes its masks (small lesions can vanish); compare its masks with the "
            "checkpoint's before deploying it.",
        )
    dev = resolve_device(device) if device is not None else torch.device("cuda" if fmt == "tensorrt" else "cpu")
    impl = _op_implementation(model, dev)
    ops_kind = "plugin" if fmt == "tensorrt" and impl == "native" else impl
    if fmt == "tensorrt":  # refused combinations and versions before any export work
        check_tensorrt_request(precision, plugins=ops_kind == "plugin")
    files = _extra_files(config, preprocess, _metadata(config, fmt, precision, ops_kind, (height, width), batch, meta))
    result = _write_validated(
        model.eval().to(dev), output, fmt, precision, ops_kind, config, (height, width), batch, files, dev, started
    )
    return replace(result, warnings=warnings)


def _capture(
    reference: nn.Module,
    example: torch.Tensor,
    fmt: str,
    batch: BatchRange,
    files: dict[str, str],
    ops_kind: str,
    tmp: Path,
) -> None:
    """Capture a copy of ``reference`` in ``example``'s dtype and write it in ``fmt`` with the metadata
    ``files`` to ``tmp``."""
    captured = copy.deepcopy(reference)
    if example.dtype == torch.float16:  # running variances reach ~1e9, beyond fp16: fold them in fp32 first
        fold_batchnorm(captured)
    captured = captured.to(example.dtype)
    with torch.no_grad():
        if fmt == "torchscript":
            write_torchscript(captured, example, files, tmp)
        elif fmt == "exported":
            write_exported(captured, example, batch, files, tmp)
        else:
            write_tensorrt(captured, example, batch, files, tmp, plugins=ops_kind == "plugin")


def _write_validated(
    reference: nn.Module,
    output: str | os.PathLike[str],
    fmt: str,
    precision: str,
    ops_kind: str,
    config: MDANetConfig,
    size: tuple[int, int],
    batch: BatchRange,
    files: dict[str, str],
    dev: torch.device,
    started: float,
) -> ExportResult:
    """Capture ``reference`` (on ``dev``, eval mode), seal and validate it, and rename it over ``output`` when it
    matches (arguments: :func:`export_model`; ``started`` is its ``time.perf_counter()`` at the start)."""
    height, width = size
    example = probe_batch(batch.capture_size(), config.in_channels, height, width, seed=1)
    example = example.to(dev, PRECISIONS[precision])
    scores: list[tuple[float, float]] = []  # what validation measured, out of the write callback

    def write_and_validate(tmp: Path) -> None:
        _capture(reference, example, fmt, batch, files, ops_kind, tmp)
        # the copy is freed on return: validation holds the reloaded artefact beside the eager model
        safety.seal(tmp)
        scores.append(_validate(reference, tmp, batch, dev, precision))

    # The temporary file ends in .pt2 whatever the format: torch.export.save warns on any other ending.
    path = atomic_write(output, write_and_validate, tmp_suffix=".pt2")
    diff, bound = scores[0]
    return ExportResult(
        path=path,
        format=fmt,
        precision=precision,
        ops=ops_kind,
        input_shape=(config.in_channels, height, width),
        batch=batch,
        max_abs_diff=diff,
        tolerance=bound,
        seconds=time.perf_counter() - started,
    )


def _metadata(
    config: MDANetConfig,
    fmt: str,
    precision: str,
    ops_kind: str,
    size: tuple[int, int],
    batch: BatchRange,
    source: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The artefact's ``meta`` record (validated on loading by :mod:`mdanet_sdk.artifact_safety`)."""
    return {
        "artifact_version": ARTIFACT_VERSION,
        "format": fmt,
        "precision": precision,
        "ops": ops_kind,
        "input_shape": [config.in_channels, *size],
        "num_classes": config.num_classes,
        "modalities": list(config.modalities),
        "batch": {"min": batch.min, "opt": batch.opt, "max": batch.max},
        "tolerance": TOLERANCES[precision],
        "package_version": __version__,
        "pipeline_revision": PIPELINE_REVISION,
        "torch_version": torch.__version__.split("+")[0],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": dict(source or {}),
    }


def _model_grid(preprocess: Mapping[str, Any]) -> int | None:
    """Side of the square slices the preprocessing makes (``size`` padded to ``multiple``), or None (native)."""
    side, multiple = preprocess.get("size"), int(preprocess.get("multiple", 16))
    return math.ceil(int(side) / multiple) * multiple if side else None


def _resolve_size(size: tuple[int, int] | None, preprocess: dict[str, Any]) -> tuple[int, int]:
    """The artefact's ``(H, W)``; sets ``preprocess["size"]`` so that preprocessing produces that grid when square."""
    grid = _model_grid(preprocess)
    if size is None:
        if grid is None:
            raise InputError(
                "the checkpoint keeps each case's native in-plane size, but an artefact has a fixed one; pass "
                "--size H W (e.g. --size 256 256)."
            )
        size = (grid, grid)
    height, width = (int(s) for s in size)
    if not 16 <= min(height, width) <= max(height, width) <= safety.MAX_SIDE or height % 16 or width % 16:
        raise InputError(f"--size must be two multiples of 16 from 16 to {safety.MAX_SIDE}, got {height} {width}.")
    if height == width and grid != height:
        preprocess["size"] = height
        if grid is None:  # trained on stored voxels, never cropped: resampling is change enough
            preprocess["head_fill"] = 0.0
    return height, width


def _validate(
    reference: nn.Module, tmp: Path, batch: BatchRange, device: torch.device, precision: str
) -> tuple[float, float]:
    """Reload ``tmp`` and compare it with the eager model; raise :class:`ExportError` beyond tolerance."""
    try:
        artifact = load_artifact(tmp, device)
    except CheckpointError as exc:  # our own file fails the load checks: a torch whose archives they do not know
        raise ExportError(f"the written artefact fails the checks of loading ({exc}); nothing was written.") from exc
    c, h, w = artifact.input_shape
    worst, bound = 0.0, 0.0
    for n in batch.probe_sizes():
        x = probe_batch(n, c, h, w).to(device)
        with torch.inference_mode():
            expected = reference(x).float()
        if not torch.isfinite(expected).all():
            raise ExportError(
                f"the eager model gives non-finite logits on the probe batch (batch {n}), so its weights are "
                "damaged or diverged; check the checkpoint (nothing was written)."
            )
        got = artifact(x)
        if got.shape != expected.shape:
            raise ExportError(
                f"the exported {artifact.format} artefact returned {tuple(got.shape)} for batch {n}, the eager "
                f"model {tuple(expected.shape)}; nothing was written."
            )
        worst = max(worst, (got - expected).abs().max().item())
        bound = max(bound, TOLERANCES[precision] * max(1.0, expected.abs().max().item()))
    if not worst <= bound:  # also catches NaN
        raise ExportError(
            f"the exported {artifact.format} artefact ({precision}) differs from the eager model by "
            f"{worst:.3g} (tolerance {bound:.3g}) on the probe batch; nothing was written. Try --precision fp32."
        )
    return worst, bound


def export_checkpoint(
    checkpoint: Any,
    fmt: str,
    output: str | os.PathLike[str],
    *,
    ops: str | None = None,
    precision: str = "fp32",
    batch: BatchRange = BatchRange(),
    size: tuple[int, int] | None = None,
    device: str | torch.device | None = None,
    trust: bool = False,
) -> ExportResult:
    """Export a checkpoint (file, bundled name or loaded :class:`~mdanet_sdk.train.checkpoint.Checkpoint`).

    Args:
        checkpoint: a ``.pt`` path, ``"default-mri"`` / ``"default-ctp"``, or a ``Checkpoint``.
        fmt: ``"torchscript"``, ``"exported"`` or ``"tensorrt"``.
        output: the artefact file.
        ops: ``"native"`` (keep the ``mdanet::`` ops; TensorRT: as plugins) or ``"reference"`` (inline the
            reference math). Default: ``"native"`` for TorchScript/ExportedProgram, ``"reference"`` for
            TensorRT.
        precision, batch, size, device: see :func:`export_model`.
        trust: accept a checkpoint file without an integrity record
            (:func:`~mdanet_sdk.train.checkpoint.load_checkpoint`).

    Raises:
        CheckpointError: the checkpoint cannot be read, or is damaged.
        BackendUnavailableError: ``ops="native"`` without the built op library; TensorRT without GPU/TensorRT.
        InputError, ExportError: see :func:`export_model`.
    """
    ops = ops or ("reference" if fmt == "tensorrt" else "native")
    if ops not in ("native", "reference"):
        raise InputError(f"ops must be native or reference; got {ops!r}.")
    if device is not None:  # a missing GPU is said as such, not as native ops built without CUDA
        resolve_device(device)
    if fmt == "tensorrt":  # a refused combination is refused on any machine, before the checkpoint is read
        check_tensorrt_request(precision, plugins=ops == "native")
    _check_request(fmt, precision)
    if ops == "native" and not _ops.native_available():
        raise BackendUnavailableError(
            "the native mdanet ops are not built, so the artefact cannot keep mdanet:: calls; install mdanet-sdk "
            "with its native ops (`pip install --no-build-isolation .`) or pass --ops reference."
        )
    from mdanet_sdk.train.checkpoint import Checkpoint, load_checkpoint

    _check_output(fmt, output)  # before the checkpoint is read
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint, trust=trust)
    source = {**ckpt.meta, "source": str(ckpt.path) if ckpt.path is not None else None}
    return export_model(
        ckpt.build_model(ops=ops),
        fmt,
        output,
        preprocess=ckpt.preprocess.to_dict(),
        meta=source,
        model_config=ckpt.model_config,
        precision=precision,
        batch=batch,
        size=size,
        device=device,
    )
