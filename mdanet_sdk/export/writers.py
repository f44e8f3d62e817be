"""Deployment artefacts: TorchScript, ExportedProgram and Torch-TensorRT writers, and the one loader.

An artefact is one file that carries the network *and* everything needed to use it: the model config, the
preprocessing config and metadata (format, precision, op implementation, input shape, batch range), stored
as JSON extra files under ``mdanet/`` inside the archive (``_extra_files`` of TorchScript, ``extra_files``
of ``torch.export``). :func:`read_metadata` reads them without loading the network; :func:`load_artifact`
returns an :class:`Artifact`, a callable ``(B, C, H, W) -> logits`` that the
:class:`~mdanet_sdk.inference.Segmenter` runs with the same pre- and post-processing as the eager model.

Formats:

* ``torchscript`` (``.ts``): a traced module. With the native ops (the default) the graph keeps
  ``mdanet::dasc_gate`` / ``mdanet::graph_conv`` as calls, so it runs from C++ (``export/cpp``) with
  libtorch and the op library; with ``ops="reference"`` the reference math is inlined instead.
* ``exported`` (``.pt2``): a ``torch.export`` ExportedProgram with a dynamic batch dimension.
* ``tensorrt`` (``.pt2``, needs a CUDA GPU and the ``[trt]`` extra): the ExportedProgram compiled by
  Torch-TensorRT (dynamo) with a min/opt/max batch profile, saved with ``torch_tensorrt.save``. The custom
  ops are lowered to the reference decomposition (``ops="reference"``, the default) or run as TensorRT Quick
  Deployable Plugins (``ops="native"``; see :func:`register_trt_plugins`).

Note:
    ``C``, ``H`` and ``W`` are fixed at export: the GCFB space embedding pools the bottleneck to a fixed node
    grid only when the input size calls for it, so a graph is valid for the in-plane size it was captured at.
    Only the batch is dynamic, within ``[min_batch, max_batch]``; :class:`Artifact` splits larger batches and
    pads smaller ones. The stored preprocessing config resamples slices to exactly that grid.

Every export is validated before it is kept: the file is written under a temporary name, sealed with an
integrity record (the SHA-256 of every member, ``mdanet/integrity.json``), reloaded, run on a probe batch at two
batch sizes and compared with the eager fp32 model; it is moved to its final name only when the eager logits
are finite and ``max |artefact - eager| <= TOLERANCES[precision] * max(1, max |eager|)``.

Loading checks the file before torch's loaders see it and the program before anything runs: integrity,
every metadata field, no entry that would be unpickled or evaluated, no operator outside an allowlist
(:mod:`mdanet_sdk.artifact_safety`, which also says what these checks do not cover).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import functools
import inspect
import io
import json
import math
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdanet_sdk import __version__
from mdanet_sdk._files import remove_stale_temps, temp_prefix
from mdanet_sdk import artifact_safety as safety
from mdanet_sdk.artifact_safety import ARTIFACT_VERSION, FORMATS
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.errors import BackendUnavailableError, CheckpointError, ExportError, InputError, MDANetError

__all__ = [
    "FORMATS",
    "PRECISIONS",
    "TOLERANCES",
    "ARTIFACT_VERSION",
    "BatchRange",
    "ExportResult",
    "Artifact",
    "export_checkpoint",
    "export_model",
    "load_artifact",
    "read_metadata",
    "probe_batch",
    "tensorrt_unavailable_reason",
    "register_trt_plugins",
]

PRECISIONS: dict[str, torch.dtype] = dict(zip(safety.PRECISION_NAMES, (torch.float32, torch.float16, torch.bfloat16)))
#: Largest accepted ``max |artefact - eager fp32|``, as a fraction of ``max(1, max |eager logit|)``. fp32 only
#: reorders float sums; fp16 keeps ~11 mantissa bits and bf16 ~8 through a deep network.
TOLERANCES: dict[str, float] = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2}
_MDANET_OPS = ("mdanet::dasc_gate", "mdanet::graph_conv")


@dataclass(frozen=True)
class BatchRange:
    """The batch sizes an artefact accepts: ``min <= opt <= max`` (``opt`` is the TensorRT tuning point)."""

    min: int = 1
    opt: int = 16
    max: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise InputError(
                f"batch sizes must satisfy 1 <= min <= opt <= max; got min={self.min}, opt={self.opt}, "
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


@dataclass
class Artifact:
    """A loaded artefact: a callable ``(B, C, H, W) -> logits (B, K, H, W)`` plus what the file says of itself.

    Attributes:
        module: the loaded program (``torch.jit.ScriptModule`` or the ExportedProgram's module).
        model_config: the network description it was exported from.
        preprocess: the preprocessing config as a dict (``PreprocessConfig.from_dict`` reads it).
        meta: the artefact metadata: ``format``, ``precision``, ``ops``, ``input_shape``, ``batch``,
            ``checkpoint`` (the source checkpoint's metadata), versions, ``created``.
        path: the file.
        device: where the module runs.
    """

    module: Callable[[Tensor], Tensor]
    model_config: MDANetConfig
    preprocess: dict[str, Any]
    meta: dict[str, Any]
    path: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def format(self) -> str:
        return str(self.meta["format"])

    @property
    def precision(self) -> str:
        return str(self.meta["precision"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.meta["input_shape"]
        return int(c), int(h), int(w)

    @property
    def batch(self) -> BatchRange:
        return BatchRange(**self.meta["batch"])

    def __call__(self, x: Tensor) -> Tensor:
        """Logits for a batch of preprocessed slices.

        Args:
            x: ``(B, C, H, W)`` float slices with ``(C, H, W) == input_shape``, any batch size and device.

        Returns:
            float32 logits ``(B, K, H, W)`` on ``x``'s device. Batches beyond ``batch.max`` run in chunks;
            batches below ``batch.min`` are zero-padded and the padding dropped.

        Raises:
            InputError: ``x`` is not ``(B, C, H, W)`` with this artefact's ``C, H, W``.
        """
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            c, h, w = self.input_shape
            raise InputError(
                f"{self.path.name} takes slices (B, {c}, {h}, {w}) (modalities "
                f"{', '.join(self.model_config.modalities)}); got shape {tuple(x.shape)}. Preprocess with the "
                "artefact's preprocess config, which resamples to that grid."
            )
        batch, dtype = self.batch, PRECISIONS[self.precision]
        outputs = []
        with torch.inference_mode():
            for chunk in x.split(batch.max):
                n = chunk.shape[0]
                chunk = chunk.to(self.device, dtype)
                if n < batch.min:
                    chunk = torch.cat([chunk, chunk.new_zeros((batch.min - n, *chunk.shape[1:]))])
                outputs.append(self.module(chunk)[:n].float())
        return torch.cat(outputs).to(x.device)


# -- metadata ---------------------------------------------------------------------------------------------
def _extra_files(model_config: MDANetConfig, preprocess: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, str]:
    return {
        safety.CONFIG: json.dumps(model_config.to_dict()),
        safety.PREPROCESS: json.dumps(dict(preprocess)),
        safety.META: json.dumps(dict(meta)),
    }


def read_metadata(
    path: str | os.PathLike[str], *, trust: bool = False
) -> tuple[MDANetConfig, dict[str, Any], dict[str, Any]]:
    """The ``(model_config, preprocess dict, meta)`` stored in an artefact, read without loading the network.

    Both TorchScript and ``torch.export`` archives are zip files that keep extra files at
    ``<archive>/extra/<name>``. The file's integrity record is checked and every metadata field validated.

    Args:
        path: the artefact.
        trust: accept a file without an integrity record (from an older mdanet-sdk or another tool). A record
            that is there is always checked.

    Raises:
        CheckpointError: the file is missing, damaged, not an mdanet-sdk artefact, from a newer mdanet-sdk,
            without integrity record (unless ``trust``), or has invalid metadata.
    """
    _, model_config, preprocess, meta = safety.describe(Path(path), trust)
    return model_config, preprocess, meta


# -- loading ----------------------------------------------------------------------------------------------
def _require_native_ops(path: Path) -> None:
    from mdanet_sdk import ops

    if not ops.native_available():
        raise BackendUnavailableError(
            f"{path.name} calls the mdanet:: custom ops, but the native op library is not built; install "
            "mdanet-sdk with its native ops (`pip install --no-build-isolation .`) or export with --ops reference."
        )


def load_artifact(path: str | os.PathLike[str], device: str | torch.device = "cpu", *, trust: bool = False) -> Artifact:
    """Load an artefact written by :func:`export_model` (any format).

    Only the package's op library (for ``ops="native"``) and, for TensorRT, ``torch_tensorrt`` are needed;
    the model's Python code is not used. Before torch's loaders see the file, its integrity record, metadata
    and entries are checked (nothing that would be unpickled, evaluated or compiled into Python); after
    loading, before anything runs, every operator of the program is checked against an allowlist
    (:mod:`mdanet_sdk.artifact_safety`).

    Args:
        path: the ``.ts`` / ``.pt2`` file.
        device: where to run it (``"cpu"``, ``"cuda"``, ``"cuda:N"``); TensorRT artefacts need CUDA.
        trust: accept a file without an integrity record (from an older mdanet-sdk or another tool); the
            content and operator checks apply all the same.

    Raises:
        CheckpointError: not an mdanet-sdk artefact, one from a newer version, damaged, without integrity record
            (unless ``trust``), invalid metadata, an entry or operator that is refused, or torch cannot load it.
        BackendUnavailableError: the artefact needs the native ops, CUDA or TensorRT, which are missing here.
    """
    archive, model_config, preprocess, meta = safety.describe(Path(path), trust)
    path, device, fmt = archive.path, torch.device(device), meta["format"]
    if meta["ops"] in ("native", "plugin"):
        _require_native_ops(path)
    if fmt == "tensorrt":
        _prepare_tensorrt(path, device, plugins=meta["ops"] == "plugin")
    safety.check_contents(archive, fmt)
    try:
        module = _load_checked(archive, fmt, device)
    except MDANetError:
        raise
    except Exception as exc:  # torch's loaders raise many types; all mean "this file cannot be loaded here"
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"torch {torch.__version__} could not load {path} ({first}); export it again with this mdanet-sdk."
        ) from exc
    return Artifact(module, model_config, preprocess, meta, path, device)


def _prepare_tensorrt(path: Path, device: torch.device, plugins: bool) -> None:
    reason = tensorrt_unavailable_reason()
    if reason:
        raise BackendUnavailableError(f"{path.name} is a TensorRT artefact: {reason}")
    if device.type != "cuda":
        raise BackendUnavailableError(f"{path.name} is a TensorRT artefact; it runs on CUDA only, not {device}.")
    import torch_tensorrt  # noqa: F401  (registers tensorrt::execute_engine and the engine class)

    if plugins:
        register_trt_plugins()


def _load_checked(archive: safety.Archive, fmt: str, device: torch.device) -> Any:
    """Load the checked bytes (never the path again) and check every operator before anything runs."""
    if fmt == "torchscript":
        with _quiet_torchscript():
            module: Any = torch.jit.load(safety.loadable(archive), map_location=device)
        safety.check_torchscript_ops(archive.path, module)
        return module.eval()
    program = torch.export.load(safety.loadable(archive))
    safety.check_graph_ops(archive.path, program.graph_module, fmt)
    module = program.module()
    safety.check_graph_ops(archive.path, module, fmt)  # .module() adds the input checks; nothing else
    return module.to(device) if fmt == "exported" else module  # a TensorRT engine stays where it was built

# -- writing ----------------------------------------------------------------------------------------------
def probe_batch(batch: int, channels: int, height: int, width: int, seed: int = 0) -> Tensor:
    """A deterministic phantom-like probe: smooth fields (lesion-sized blobs) plus fine noise, ~z-scored.

    Returns:
        float32 ``(batch, channels, height, width)``.
    """
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, channels, max(1, height // 8), max(1, width // 8), generator=gen)
    smooth = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return smooth + 0.1 * torch.randn(batch, channels, height, width, generator=gen)


def _temp_name(output: Path) -> Path:
    # Same folder, so os.replace stays atomic; torch.export.save warns unless a path ends in .pt2. The name
    # carries host and pid like every temporary file of ours, so a later run removes it if this one is killed.
    remove_stale_temps(output)
    return output.with_name(f"{temp_prefix(output)}{time.monotonic_ns()}.tmp.pt2")


def _capture_exported(model: nn.Module, example: Tensor, batch: BatchRange) -> torch.export.ExportedProgram:
    dynamic = ({0: torch.export.Dim("batch", min=batch.min, max=batch.max)},) if batch.dynamic else None
    try:
        return torch.export.export(model, (example,), dynamic_shapes=dynamic)
    except Exception as exc:  # torch.export raises many types; all mean "this model could not be captured"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"torch.export could not capture the model ({first[:300]}).") from exc


@contextlib.contextmanager
def _quiet_torchscript() -> Iterator[None]:
    with warnings.catch_warnings():
        # torch >= 2.10 marks torch.jit deprecated in favour of torch.export, but TorchScript is what libtorch
        # (C++) loads; and the tracer warns that shape tests become constants, which is intended here (the
        # in-plane size is fixed, see the Note above).
        warnings.filterwarnings("ignore", message=r".*torch\.jit", category=DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def _write_torchscript(model: nn.Module, example: Tensor, files: dict[str, str], tmp: Path) -> None:
    with _quiet_torchscript():
        traced = torch.jit.trace(model, example, check_trace=False, _store_inputs=False)
        torch.jit.save(traced, str(tmp), _extra_files=files)


def _write_exported(model: nn.Module, example: Tensor, batch: BatchRange, files: dict[str, str], tmp: Path) -> None:
    with tmp.open("wb") as fh:
        torch.export.save(_without_sample_inputs(_capture_exported(model, example, batch)), fh, extra_files=files)


def _without_sample_inputs(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    # torch.export.save stores the example inputs as a pickle (data/sample_inputs); nothing needs them, and a
    # loader that unpickles nothing has no use for them (artifact_safety.loadable drops them anyway).
    program.example_inputs = None
    return program


def _write_tensorrt(
    model: nn.Module, example: Tensor, batch: BatchRange, files: dict[str, str], tmp: Path, plugins: bool
) -> None:
    import torch_tensorrt

    if plugins:
        register_trt_plugins()
    program = _capture_exported(model, example, batch)
    shape = tuple(example.shape[1:])
    spec = torch_tensorrt.Input(
        min_shape=(batch.min, *shape), opt_shape=(batch.opt, *shape), max_shape=(batch.max, *shape),
        dtype=example.dtype,
    )
    options: dict[str, Any] = {"arg_inputs": [spec], "min_block_size": 1}
    # Newer Torch-TensorRT builds the engine in the model's own dtypes (explicit typing); older ones need the
    # precision spelled out.
    if "use_explicit_typing" in inspect.signature(torch_tensorrt.dynamo.compile).parameters:
        options["use_explicit_typing"] = True
    else:
        options["enabled_precisions"] = {example.dtype}
    compiled = torch_tensorrt.dynamo.compile(program, **options)
    save_options: dict[str, Any] = {"output_format": "exported_program", "arg_inputs": [spec]}
    if "extra_files" in inspect.signature(torch_tensorrt.save).parameters:
        torch_tensorrt.save(compiled, str(tmp), extra_files=files, **save_options)
    else:  # older releases: save, then re-save the same program with the metadata attached
        torch_tensorrt.save(compiled, str(tmp), **save_options)
        program = torch.export.load(io.BytesIO(tmp.read_bytes()))  # our own file, just written
        with tmp.open("wb") as fh:
            torch.export.save(_without_sample_inputs(program), fh, extra_files=files)


def tensorrt_unavailable_reason() -> str | None:
    """Why a TensorRT export cannot run here (one sentence), or ``None`` when it can."""
    if not torch.cuda.is_available():
        return "TensorRT export needs a CUDA GPU and none is visible to torch here; run it on a GPU machine."
    try:
        import tensorrt  # noqa: F401
        import torch_tensorrt  # noqa: F401
    except ImportError as exc:
        return (
            f"TensorRT export needs Torch-TensorRT and TensorRT ({exc.name or exc} is not installed); "
            "install them with `pip install 'mdanet-sdk[trt]'`."
        )
    return None


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
    from mdanet_sdk import ops

    return ops.implementation(getattr(getattr(model, "config", None), "ops", "auto"), device)


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
    config = model_config or model.config
    preprocess = dict(preprocess)
    height, width = _resolve_size(size, preprocess)
    dev = torch.device(device or ("cuda" if fmt == "tensorrt" else "cpu"))
    impl = _op_implementation(model, dev)
    ops_kind = "plugin" if fmt == "tensorrt" and impl == "native" else impl
    dtype = PRECISIONS[precision]
    info = {
        "artifact_version": ARTIFACT_VERSION,
        "format": fmt,
        "precision": precision,
        "ops": ops_kind,
        "input_shape": [config.in_channels, height, width],
        "num_classes": config.num_classes,
        "modalities": list(config.modalities),
        "batch": {"min": batch.min, "opt": batch.opt, "max": batch.max},
        "tolerance": TOLERANCES[precision],
        "package_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": dict(meta or {}),
    }
    files = _extra_files(config, preprocess, info)

    reference = model.eval().to(dev)
    captured = copy.deepcopy(reference).to(dtype)
    example = probe_batch(batch.capture_size(), config.in_channels, height, width, seed=1).to(dev, dtype)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(output)
    try:
        with torch.no_grad():
            if fmt == "torchscript":
                _write_torchscript(captured, example, files, tmp)
            elif fmt == "exported":
                _write_exported(captured, example, batch, files, tmp)
            else:
                _write_tensorrt(captured, example, batch, files, tmp, plugins=ops_kind == "plugin")
        del captured
        safety.seal(tmp)
        diff, bound = _validate(reference, tmp, batch, dev, precision)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(
        path=output, format=fmt, precision=precision, ops=ops_kind, input_shape=(config.in_channels, height, width),
        batch=batch, max_abs_diff=diff, tolerance=bound, seconds=time.perf_counter() - started,
    )


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
    if height < 16 or width < 16 or height % 16 or width % 16:
        raise InputError(f"--size must be two multiples of 16 (>= 16), got {height} {width}.")
    if height == width and grid != height:
        preprocess["size"] = height
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
    from mdanet_sdk import ops as _ops

    _check_request(fmt, precision)  # before spending time on the checkpoint
    ops = ops or ("reference" if fmt == "tensorrt" else "native")
    if ops not in ("native", "reference"):
        raise InputError(f"ops must be native or reference; got {ops!r}.")
    if ops == "native" and not _ops.native_available():
        raise BackendUnavailableError(
            "the native mdanet ops are not built, so the artefact cannot keep mdanet:: calls; install mdanet-sdk "
            "with its native ops (`pip install --no-build-isolation .`) or pass --ops reference."
        )
    from mdanet_sdk.train.checkpoint import Checkpoint, load_checkpoint

    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint, trust=trust)
    source = {**ckpt.meta, "source": str(ckpt.path) if ckpt.path is not None else None}
    return export_model(
        ckpt.build_model(ops=ops), fmt, output, preprocess=ckpt.preprocess.to_dict(), meta=source,
        model_config=ckpt.model_config, precision=precision, batch=batch, size=size, device=device,
    )


# -- TensorRT plugins -------------------------------------------------------------------------------------
@functools.cache
def register_trt_plugins() -> None:
    """Make ``mdanet::dasc_gate`` / ``mdanet::graph_conv`` TensorRT Quick Deployable Plugins (idempotent).

    ``generate_plugin`` derives each plugin's shape description from the op's fake kernel, and a JIT
    implementation that runs the op's CUDA implementation on TensorRT's stream; ``generate_plugin_converter``
    registers the Torch-TensorRT converter that puts the plugin into the engine. JIT plugins call back into
    Python, so an engine built with them needs this function called before it is loaded
    (:func:`load_artifact` does).

    Note:
        No AOT (``tensorrt.plugin.aot_impl``) implementation is registered: an AOT plugin launches exactly one
        PTX kernel, while ``dasc_gate``'s CUDA path is two kernels with a workspace between them plus
        weight-level algebra, and ``graph_conv``'s is two cuBLAS products plus an epilogue kernel
        (``csrc/cuda/*.cu``). AOT plugins need one-kernel formulations of the ops first.

    Raises:
        BackendUnavailableError: no TensorRT / GPU, or the native ops were built without CUDA kernels.
    """
    reason = tensorrt_unavailable_reason()
    if reason:
        raise BackendUnavailableError(reason)
    from mdanet_sdk import ops

    ops.implementation("native", "cuda")  # raises unless the op library has its CUDA kernels
    from torch_tensorrt.dynamo.conversion.plugins import generate_plugin, generate_plugin_converter

    for name in _MDANET_OPS:
        generate_plugin(name)
        generate_plugin_converter(name, supports_dynamic_shapes=True, requires_output_allocator=False)
