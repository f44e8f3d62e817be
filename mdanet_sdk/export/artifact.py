"""Reading artefacts: their metadata without the network (:func:`read_metadata`), and the one loader
(:func:`load_artifact`), which returns an :class:`Artifact`, a callable ``(B, C, H, W) -> logits``.

Loading checks the file before torch's loaders see it and the program before anything runs: integrity,
every metadata field, no entry that would be unpickled or evaluated, no operator outside an allowlist
(:mod:`mdanet_sdk.artifact_safety`, which also says what these checks do not cover).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from mdanet_sdk.device import DTYPES
from mdanet_sdk import artifact_safety as safety
from mdanet_sdk import ops
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.errors import BackendUnavailableError, CheckpointError, InputError, MDANetError
from mdanet_sdk.export.programs import BatchRange, quiet_torchscript
from mdanet_sdk.export.tensorrt import prepare_tensorrt

__all__ = ["PRECISIONS", "Artifact", "load_artifact", "read_metadata"]

#: The dtype an artefact computes in, by its ``precision`` name (the names of :mod:`mdanet_sdk.device`).
PRECISIONS: dict[str, torch.dtype] = {name: DTYPES[name] for name in safety.PRECISION_NAMES}


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


def _require_native_ops(path: Path) -> None:
    if not ops.native_available():
        raise BackendUnavailableError(
            f"{path.name} calls the mdanet:: custom ops, but the native op library is not built; install "
            "mdanet-sdk with its native ops (`pip install --no-build-isolation .`) or export with --ops reference."
        )


def load_artifact(path: str | os.PathLike[str], device: str | torch.device = "cpu", *, trust: bool = False) -> Artifact:
    """Load an artefact written by :func:`~mdanet_sdk.export.export_model` (any format).

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
        prepare_tensorrt(path, device, plugins=meta["ops"] == "plugin")
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


def _load_checked(archive: safety.Archive, fmt: str, device: torch.device) -> Any:
    """Load the checked bytes (never the path again) and check every operator before anything runs."""
    if fmt == "torchscript":
        with quiet_torchscript():
            module: Any = torch.jit.load(safety.loadable(archive), map_location=device)
        safety.check_torchscript_ops(archive.path, module)
        return module.eval()
    program = torch.export.load(safety.loadable(archive))
    safety.check_graph_ops(archive.path, program.graph_module, fmt)
    module = program.module()
    safety.check_graph_ops(archive.path, module, fmt)  # .module() adds the input checks; nothing else
    return module.to(device) if fmt == "exported" else module  # a TensorRT engine stays where it was built
