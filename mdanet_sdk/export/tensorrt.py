"""Torch-TensorRT: whether it can run here, compiling a program into an engine, and the mdanet op plugins.

A TensorRT artefact is the ExportedProgram compiled by Torch-TensorRT (dynamo) with a min/opt/max batch
profile, saved with ``torch_tensorrt.save``. The custom ops are lowered to the reference decomposition
(``ops="reference"``) or run as TensorRT Quick Deployable Plugins (``ops="native"``, stored as ``"plugin"``;
:func:`register_trt_plugins`).

Supported Torch-TensorRT releases (:data:`DECOMPOSITION_MIN`, :data:`PLUGIN_MIN`): the decomposition path needs
2.5 (``dynamo.compile`` with ``arg_inputs``). The plugin path needs 2.13: ``generate_plugin`` first exists in
2.7, but up to 2.12 it binds every plugin's generated shape function through shared module globals (the last
registered op's wins; the runtime function was fixed in 2.11, the shape function in 2.13), and it names the
shape function's arguments after the fake kernel's symbols, which our fake kernels' shape ``torch._check``
calls make repeat (``SyntaxError: duplicate argument``). Both ops are in every model, so no older release can
build a plugin engine. bf16 cannot run as plugins on any release: TensorRT's plugin tensors refuse BF16 in
``__cuda_array_interface__``.
"""

from __future__ import annotations

import functools
import inspect
import io
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mdanet_sdk import ops
from mdanet_sdk.errors import BackendUnavailableError, InputError
from mdanet_sdk.export.programs import BatchRange, capture_exported, without_sample_inputs

__all__ = [
    "DECOMPOSITION_MIN",
    "PLUGIN_MIN",
    "tensorrt_unavailable_reason",
    "check_tensorrt_request",
    "compile_options",
    "register_trt_plugins",
    "prepare_tensorrt",
    "write_tensorrt",
]

#: The oldest Torch-TensorRT (major, minor) that builds engines with the reference decomposition of the ops.
DECOMPOSITION_MIN = (2, 5)
#: The oldest Torch-TensorRT that builds engines with the ops as plugins (why: the module docstring).
PLUGIN_MIN = (2, 13)


def _release(version: str) -> tuple[int, int] | None:
    """``(major, minor)`` of a version string such as ``"2.13.0+cu130"``, or ``None`` when it has none."""
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else None


def tensorrt_unavailable_reason(plugins: bool = False) -> str | None:
    """Why a TensorRT export cannot run here (one sentence), or ``None`` when it can.

    Args:
        plugins: whether the engine runs the mdanet ops as plugins, which needs a newer Torch-TensorRT.
    """
    if not torch.cuda.is_available():
        return "TensorRT export needs a CUDA GPU and none is visible to torch here; run it on a GPU machine."
    try:
        import tensorrt  # noqa: F401
        import torch_tensorrt
    except ImportError as exc:
        return (
            f"TensorRT export needs Torch-TensorRT and TensorRT ({exc.name or exc} is not installed); "
            "install them with `pip install 'mdanet-sdk[trt]'`."
        )
    installed = str(getattr(torch_tensorrt, "__version__", "unknown"))
    needed = PLUGIN_MIN if plugins else DECOMPOSITION_MIN
    release = _release(installed)
    if release is not None and release >= needed:
        return None
    wanted = ".".join(map(str, needed))
    if plugins:
        return (
            f"TensorRT engines with the mdanet ops as plugins (--ops native) need Torch-TensorRT >= {wanted}, "
            f"and {installed} is installed; upgrade it (`pip install -U 'mdanet-sdk[trt]'`) or use --ops reference."
        )
    return (
        f"TensorRT export needs Torch-TensorRT >= {wanted}, and {installed} is installed; "
        "upgrade it with `pip install -U 'mdanet-sdk[trt]'`."
    )


def check_tensorrt_request(precision: str, plugins: bool) -> None:
    """Refuse a TensorRT export that cannot work here; cheap, so callers run it before any export work.

    Args:
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"``.
        plugins: whether the mdanet ops run as plugins (``ops="native"``).

    Raises:
        InputError: bf16 with plugins, which no TensorRT release can run.
        BackendUnavailableError: no GPU, no or too old Torch-TensorRT (:func:`tensorrt_unavailable_reason`).
    """
    if plugins and precision == "bf16":
        raise InputError(
            "TensorRT plugins cannot take bf16 tensors, so --precision bf16 needs --ops reference; "
            "or export with --precision fp16 or fp32."
        )
    reason = tensorrt_unavailable_reason(plugins)
    if reason:
        raise BackendUnavailableError(reason)


def compile_options(compile_fn: Any, spec: Any, dtype: torch.dtype) -> dict[str, Any]:
    """The keyword arguments for the installed ``torch_tensorrt.dynamo.compile`` (``compile_fn``).

    Only settings that release accepts are passed, so that none is silently ignored: 2.13 dropped both
    ``use_explicit_typing`` and ``enabled_precisions`` (it always builds in the program's own dtypes).

    Args:
        compile_fn: ``torch_tensorrt.dynamo.compile``; only its signature is read.
        spec: the ``torch_tensorrt.Input`` of the one ``(B, C, H, W)`` input.
        dtype: the dtype the program computes in.
    """
    params = inspect.signature(compile_fn).parameters
    options: dict[str, Any] = {"arg_inputs": [spec], "min_block_size": 1}
    if "use_explicit_typing" in params:  # the engine keeps the program's own dtypes
        options["use_explicit_typing"] = True
    elif "enabled_precisions" in params:  # releases before explicit typing need the precision spelled out
        options["enabled_precisions"] = {dtype}
    return options


def prepare_tensorrt(path: Path, device: torch.device, plugins: bool) -> None:
    """Make ready to load the TensorRT artefact ``path`` on ``device``: import Torch-TensorRT, which registers
    the engine class, and register the op plugins when the engine was built with them.

    Raises:
        BackendUnavailableError: no TensorRT or GPU here, or ``device`` is not CUDA.
    """
    reason = tensorrt_unavailable_reason()
    if reason:
        raise BackendUnavailableError(f"{path.name} is a TensorRT artefact: {reason}")
    if device.type != "cuda":
        raise BackendUnavailableError(f"{path.name} is a TensorRT artefact; it runs on CUDA only, not {device}.")
    import torch_tensorrt  # noqa: F401  (registers tensorrt::execute_engine and the engine class)

    if plugins:
        register_trt_plugins()


def write_tensorrt(
    model: nn.Module, example: Tensor, batch: BatchRange, files: dict[str, str], tmp: Path, plugins: bool
) -> None:
    """Capture ``model``, compile it with Torch-TensorRT and save the engine with ``files`` attached to ``tmp``.

    Args:
        model: the network in the artefact's dtype, on CUDA.
        example: ``(B, C, H, W)`` input in that dtype; ``C, H, W`` are fixed, ``B`` ranges over ``batch``.
        batch: the engine's min/opt/max batch profile.
        files: archive name -> JSON text of the metadata.
        tmp: the file to write.
        plugins: run the mdanet ops as TensorRT plugins (else the model must use the reference ops).
    """
    check_tensorrt_request("bf16" if example.dtype == torch.bfloat16 else "fp32", plugins)
    import torch_tensorrt

    if plugins:
        register_trt_plugins()
    program = capture_exported(model, example, batch)
    shape = tuple(example.shape[1:])
    spec = torch_tensorrt.Input(
        min_shape=(batch.min, *shape),
        opt_shape=(batch.opt, *shape),
        max_shape=(batch.max, *shape),
        dtype=example.dtype,
    )
    options = compile_options(torch_tensorrt.dynamo.compile, spec, example.dtype)
    compiled = torch_tensorrt.dynamo.compile(program, **options)
    save_options: dict[str, Any] = {"output_format": "exported_program", "arg_inputs": [spec]}
    if "extra_files" in inspect.signature(torch_tensorrt.save).parameters:
        torch_tensorrt.save(compiled, str(tmp), extra_files=files, **save_options)
    else:  # older releases: save, then re-save the same program with the metadata attached
        torch_tensorrt.save(compiled, str(tmp), **save_options)
        program = torch.export.load(io.BytesIO(tmp.read_bytes()))  # our own file, just written
        with tmp.open("wb") as fh:
            torch.export.save(without_sample_inputs(program), fh, extra_files=files)


@functools.cache
def register_trt_plugins() -> None:
    """Make ``mdanet::dasc_gate`` / ``mdanet::graph_conv`` TensorRT Quick Deployable Plugins (idempotent).

    ``generate_plugin`` derives each plugin's shape description from the op's fake kernel, and a JIT
    implementation that runs the op's CUDA implementation on TensorRT's stream; ``generate_plugin_converter``
    registers the Torch-TensorRT converter that puts the plugin into the engine. JIT plugins call back into
    Python, so an engine built with them needs this function called before it is loaded
    (:func:`~mdanet_sdk.export.load_artifact` does).

    Note:
        No AOT (``tensorrt.plugin.aot_impl``) implementation is registered: an AOT plugin launches exactly one
        PTX kernel, while ``dasc_gate``'s CUDA path is two kernels with a workspace between them plus
        weight-level algebra, and ``graph_conv``'s is two cuBLAS products plus an epilogue kernel
        (``csrc/cuda/*.cu``). AOT plugins need one-kernel formulations of the ops first.

    Raises:
        BackendUnavailableError: no TensorRT / GPU, or the native ops were built without CUDA kernels.
    """
    reason = tensorrt_unavailable_reason(plugins=True)
    if reason:
        raise BackendUnavailableError(reason)
    ops.implementation("native", "cuda")  # raises unless the op library has its CUDA kernels
    try:
        from torch_tensorrt.dynamo.conversion.plugins import generate_plugin, generate_plugin_converter
    except ImportError as exc:  # a build without the plugin package, though its version number is new enough
        raise BackendUnavailableError(
            f"this Torch-TensorRT has no plugin generator ({exc}); reinstall it with "
            "`pip install -U 'mdanet-sdk[trt]'` or use --ops reference."
        ) from exc

    for name in ops.QUALIFIED_OPS:
        generate_plugin(name)
        generate_plugin_converter(name, supports_dynamic_shapes=True, requires_output_allocator=False)
