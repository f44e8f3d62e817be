"""libmdanet (the C API, ``mdanet/mdanet.h``) from Python, through the pybind11 module ``mdanet_sdk._C``.

The binding calls the C functions themselves, so what Python runs here is what a C, C++, C# or Go caller
runs. :func:`open_engine` gives an :class:`EngineArtifact`, an :class:`~mdanet_sdk.export.Artifact` whose
slices go through ``mdanet_run_slices`` (``Segmenter.from_exported(path, engine="libmdanet")``), and
:func:`segment_volume` runs ``mdanet_segment_volume`` on one case given as arrays.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from mdanet_sdk.artifact_safety import open_archive
from mdanet_sdk.errors import BackendUnavailableError, CheckpointError, InputError, MDANetError
from mdanet_sdk.export.artifact import Artifact, load_artifact, read_metadata
from mdanet_sdk.inference.postprocess import PostprocessConfig
from mdanet_sdk.ops import native
from mdanet_sdk.pipeline import PIPELINE_REVISION

logger = logging.getLogger(__name__)

__all__ = [
    "c_api_root",
    "ENGINES",
    "EngineArtifact",
    "open_artifact",
    "open_engine",
    "segment_volume",
    "refuse_eager_options",
    "engine_unavailable_reason",
]

#: How ``Segmenter.from_exported`` runs an artefact: torch in this process, or libmdanet's C API.
ENGINES = ("torch", "libmdanet")

# The C API's status → the package's exception type.
_ERRORS: dict[str, type[MDANetError]] = {
    "MDANET_INVALID_ARGUMENT": InputError,
    "MDANET_FILE_ERROR": InputError,
    "MDANET_INVALID_ARTIFACT": CheckpointError,
    "MDANET_UNAVAILABLE": BackendUnavailableError,
    "MDANET_RUNTIME_ERROR": CheckpointError,
    "MDANET_OUT_OF_MEMORY": BackendUnavailableError,
}


def engine_unavailable_reason() -> str | None:
    """Why libmdanet cannot be used here (the native part is not built), or None."""
    if not native.available():
        return (
            "libmdanet (the C API) is part of the native build, which this install lacks; install mdanet-sdk with "
            "`pip install --no-build-isolation .` (not MDANET_SKIP_NATIVE)."
        )
    return None


def c_api_root() -> Path:
    """The folder holding ``include/mdanet/mdanet.h`` and ``lib/libmdanet.so`` of this install (to build a C
    program against the C API, e.g. ``export/c``).

    Raises:
        BackendUnavailableError: the native part is not built.
    """
    binding = _binding()
    return Path(binding.__file__).resolve().parent


def _raise(exc: Exception) -> MDANetError:
    """The package's exception for an ``EngineError`` ``"STATUS: message"`` of the binding."""
    status, _, message = str(exc).partition(": ")
    return _ERRORS.get(status, MDANetError)(message or str(exc))


def _binding() -> Any:
    reason = engine_unavailable_reason()
    if reason:
        raise BackendUnavailableError(reason)
    from mdanet_sdk import _C

    return _C


@dataclass
class EngineArtifact(Artifact):
    """An artefact run by libmdanet: ``module`` is the binding's ``Engine`` (``mdanet_model`` handle)."""

    def __call__(self, x: Tensor) -> Tensor:
        """Logits ``(B, K, H, W)`` of preprocessed slices ``(B, C, H, W)`` (``mdanet_run_slices``), on ``x``'s device."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            c, h, w = self.input_shape
            raise InputError(
                f"{self.path.name} takes slices (B, {c}, {h}, {w}); got shape {tuple(x.shape)}. Preprocess with the "
                "artefact's preprocess config, which resamples to that grid."
            )
        slices = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        try:
            logits = cast(Any, self.module).run(slices)
        except Exception as exc:  # the binding's EngineError
            raise _raise(exc) from None
        return torch.from_numpy(logits).to(x.device)


def open_engine(
    path: str | os.PathLike[str], device: str | torch.device = "cpu", *, trust: bool = False
) -> EngineArtifact:
    """Open a TorchScript artefact with libmdanet (``mdanet_open``).

    The Python checks of :func:`~mdanet_sdk.export.read_metadata` (integrity record, every metadata field) come
    first; libmdanet then checks the version, the metadata it uses and every operator of the program. libmdanet
    runs only artefacts with an integrity record: ``trust`` lets the Python checks pass one without, and is then
    refused here with that reason.

    Raises:
        CheckpointError: not a TorchScript artefact of mdanet-sdk, damaged, refused, without an integrity record,
            or from a newer version.
        BackendUnavailableError: the native build is missing, or the device is not there.
    """
    model_config, preprocess, meta = read_metadata(path, trust=trust)
    if trust and not open_archive(Path(path)).sealed:
        raise CheckpointError(
            f"{Path(path).name} has no integrity record, which libmdanet needs whatever trust says (trust applies "
            'to engine="torch" only); export it again with this mdanet-sdk, or run it with engine="torch".'
        )
    _warn_if_older_pipeline(Path(path).name, meta)
    binding = _binding()
    try:
        engine = binding.Engine(str(path), str(torch.device(device)))
    except Exception as exc:  # the binding's EngineError
        raise _raise(exc) from None
    return EngineArtifact(engine, model_config, preprocess, meta, Path(path), torch.device(engine.device))


def _warn_if_older_pipeline(name: str, meta: Mapping[str, Any]) -> None:
    """Log that a TorchScript artefact's own pipeline (run by :func:`segment_volume` and the C API's
    ``mdanet_segment_volume``) predates this package's, so it can mask a case differently from ``segment``."""
    revision = meta.get("pipeline_revision", 1)
    if revision < PIPELINE_REVISION:
        logger.warning(
            "mdanet-sdk: %s carries the pipeline of revision %d, older than this mdanet-sdk's %d, so its "
            "mdanet_segment_volume can mask a case differently from segment; export it again.",
            name,
            revision,
            PIPELINE_REVISION,
        )


def open_artifact(
    path: str | os.PathLike[str], device: str | torch.device, *, trust: bool = False, engine: str = "torch"
) -> Artifact:
    """The artefact at ``path`` run by ``engine``: ``"torch"`` (:func:`~mdanet_sdk.export.load_artifact`, any
    format) or ``"libmdanet"`` (:func:`open_engine`, TorchScript)."""
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r:.40}.")
    if engine == "torch":
        return load_artifact(path, device, trust=trust)
    return open_engine(path, device, trust=trust)


#: Segmenter options that build an eager network, with their defaults: an artefact cannot honour them.
_EAGER_ONLY: dict[str, Any] = {"compile": False, "ops": "auto", "optimize": True, "channels_last": None}


def refuse_eager_options(options: Mapping[str, Any]) -> None:
    """Raise :class:`InputError` for a Segmenter option that shapes an eager network (``compile``, ``ops``,
    ``optimize``, ``channels_last``) set for an artefact, whose network is fixed inside it (it was ignored)."""
    ignored = [k for k, default in _EAGER_ONLY.items() if k in options and options[k] != default]
    if ignored:
        raise InputError(
            f"the option(s) {', '.join(ignored)} apply to checkpoints, not to an exported artefact, whose network is "
            "fixed inside it; drop them (export the checkpoint again to change its ops or precision)."
        )


def segment_volume(
    artifact: EngineArtifact,
    images: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    affine: np.ndarray,
    *,
    brain_mask: np.ndarray | None = None,
    settings: PostprocessConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mask and lesion probability of one case (``mdanet_segment_volume``), as ``mdanet-sdk segment`` gives them.

    Args:
        artifact: from :func:`open_engine`.
        images: modality → ``(X, Y, Z)`` array (or the arrays in the model's modality order), in the voxel order
            ``affine`` describes (as nibabel reads them).
        affine: ``(4, 4)`` voxel-to-world matrix in mm.
        brain_mask: optional ``(X, Y, Z)`` (non-zero = brain) replacing the automatic head mask.
        settings: post-processing; default the artefact's recommendation.

    Returns:
        ``(mask uint8, probability float32)``, both ``(X, Y, Z)`` in the images' voxel order.

    Raises:
        InputError: a modality is missing, shapes differ, an image is empty or constant, a bad affine.
    """
    modalities = artifact.model_config.modalities
    if isinstance(images, Mapping):
        missing = [m for m in modalities if m not in images]
        if missing:
            raise InputError(f"no {missing[0]!r} image; give every modality the model reads: {', '.join(modalities)}.")
        arrays = [np.asarray(images[m]) for m in modalities]
    else:
        arrays = [np.asarray(a) for a in images]
    if any(a.ndim != 3 or a.shape != arrays[0].shape for a in arrays):
        raise InputError(f"images must be 3D volumes of one shape, got {[a.shape for a in arrays]}.")
    # NIfTI order per modality (x fastest) is the C-order array (C, Z, Y, X).
    volumes = np.ascontiguousarray(np.stack(arrays).astype(np.float32, copy=False).transpose(0, 3, 2, 1))
    brain = None if brain_mask is None else np.ascontiguousarray((np.asarray(brain_mask) != 0).astype(np.uint8).T)
    chosen = None
    if settings is not None:
        chosen = (settings.tta, settings.threshold, settings.min_size, settings.max_adc_ratio)
    try:
        mask, probability = cast(Any, artifact.module).segment(
            volumes, np.asarray(affine, dtype=np.float64), brain, chosen
        )
    except Exception as exc:  # the binding's EngineError, or its argument checks
        raise _raise(exc) from None
    return np.ascontiguousarray(mask.T), np.ascontiguousarray(probability.T)
