"""Torch-TensorRT: whether it can run here, compiling a program into an engine, and the mdanet op plugins.

A TensorRT artefact is the ExportedProgram compiled by Torch-TensorRT (dynamo) with a min/opt/max batch
profile, saved with ``torch_tensorrt.save``. The custom ops are lowered to the reference decomposition
(``ops="reference"``) or run as TensorRT Quick Deployable Plugins (``ops="native"``, stored as ``"plugin"``;
:func:`register_trt_plugins`).
"""

from __future__ import annotations

import functools
import inspect
import io
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mdanet_sdk import ops
from mdanet_sdk.errors import BackendUnavailableError
from mdanet_sdk.export.programs import BatchRange, capture_exported, without_sample_inputs

__all__ = ["tensorrt_unavailable_reason", "register_trt_plugins", "prepare_tensorrt", "write_tensorrt"]


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
    reason = tensorrt_unavailable_reason()
    if reason:
        raise BackendUnavailableError(reason)
    ops.implementation("native", "cuda")  # raises unless the op library has its CUDA kernels
    from torch_tensorrt.dynamo.conversion.plugins import generate_plugin, generate_plugin_converter

    for name in ops.QUALIFIED_OPS:
        generate_plugin(name)
        generate_plugin_converter(name, supports_dynamic_shapes=True, requires_output_allocator=False)
