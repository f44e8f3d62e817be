"""Checkpoints: one self-describing file per model, loadable with ``torch.load(path, weights_only=True)``.

A checkpoint is a plain dict (no pickled classes, so loading it never runs code)::

    {"format": "mdanet-sdk-checkpoint", "format_version": 1,
     "model_config": MDANetConfig.to_dict(), "preprocess": PreprocessConfig.to_dict(),
     "state_dict": {name: tensor}, "meta": {...}, "integrity": {"algorithm": "sha256", "digest": hex},
     # only in training checkpoints (last.pt), to resume:
     "optimizer": ..., "scheduler": ..., "scaler": ..., "rng": ..., "trainer": ...}

``meta`` always holds ``package_version``, ``torch_version`` and ``created`` (UTC, ISO 8601), plus what the
writer passes (the trainer adds ``epoch``, ``fold``, ``val_dsc``, ``seed``, ``note``...). The model config
and the preprocessing config are enough to rebuild the exact network and its input pipeline: nothing else is
needed to load a checkpoint.

Nothing of a file is trusted before :func:`load_checkpoint` has checked it (the checks, and why torch's own
are not enough, are in :mod:`mdanet_sdk.train.checkpoint_checks`). ``integrity`` (:func:`payload_digest`)
covers configs, metadata and weights; it detects damage, not forgery (anyone can recompute it).

Bundled names (:data:`BUNDLED`): ``default-mri`` and ``default-ctp`` resolve to the demo weights shipped in
``mdanet_sdk/weights/`` (trained on synthetic phantoms only).
"""

from __future__ import annotations

import datetime as _dt
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mdanet_sdk import __version__
from mdanet_sdk._files import atomic_write
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.data.preprocess import PreprocessConfig
from mdanet_sdk.errors import CheckpointError, MDANetError
from mdanet_sdk.train.checkpoint_checks import (
    ALGORITHM,
    FORMAT,
    FORMAT_VERSION,
    check_container,
    check_integrity,
    check_meta,
    check_structure,
    check_weights,
    payload_digest,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "BUNDLED",
    "WEIGHTS_DIR",
    "Checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "payload_digest",
    "unwrap_model",
]

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
#: Checkpoint names shipped with the package → their files.
BUNDLED: dict[str, Path] = {
    "default-mri": WEIGHTS_DIR / "default-mri.pt",
    "default-ctp": WEIGHTS_DIR / "default-ctp.pt",
}
#: Keys of a training checkpoint that only matter for resuming (kept in :attr:`Checkpoint.resume`).
_RESUME_KEYS = ("optimizer", "scheduler", "scaler", "rng", "trainer")


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        model_config: the exact network description.
        preprocess: the preprocessing the network was trained with (inference must use the same).
        state_dict: the network's weights, CPU tensors.
        meta: free-form metadata (epoch, fold, validation scores, versions, seed, note...).
        path: the file it was read from.
        resume: optimizer / scheduler / scaler / RNG / trainer state of a training checkpoint, else empty.
    """

    model_config: MDANetConfig
    preprocess: PreprocessConfig
    state_dict: dict[str, Tensor]
    meta: dict[str, Any]
    path: Path | None = None
    resume: dict[str, Any] = field(default_factory=dict)

    def build_model(self, ops: str = "auto") -> nn.Module:
        """The network in eval mode with the weights loaded.

        Args:
            ops: implementation of the native ops (``"auto"``, ``"native"``, ``"reference"``); it changes how
                the model computes, never its weights.

        Raises:
            CheckpointError: the weights do not fit the network the config describes.
            InputError: ``ops`` is none of the three.
        """
        from mdanet_sdk.model import build_model

        model = build_model(self.model_config, ops=ops)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(
                f"{self._where()} holds weights that do not fit its model config ({first}); the file is "
                "inconsistent, re-save it from the trained model."
            ) from None
        return model.eval()

    def _where(self) -> str:
        return f"checkpoint {self.path}" if self.path is not None else "the checkpoint"


def resolve_checkpoint(name_or_path: str | os.PathLike[str]) -> Path:
    """The file of a bundled name (``default-mri``, ``default-ctp``) or of a path.

    Raises:
        CheckpointError: the file does not exist (for a bundled name: the package ships without it).
    """
    name = str(name_or_path)
    if name in BUNDLED:
        path = BUNDLED[name]
        if not path.is_file():
            raise CheckpointError(
                f"bundled checkpoint {name!r} is missing from this installation ({path}); reinstall "
                "mdanet-sdk or pass the path of a checkpoint file."
            )
        return path
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        bundled = ", ".join(BUNDLED)
        what = "is a folder (a run's fold folder holds best.pt)" if path.is_dir() else "does not exist"
        raise CheckpointError(
            f"checkpoint {path} {what}; pass a .pt file written by mdanet-sdk or a bundled name ({bundled})."
        )
    return path


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain network inside DistributedDataParallel / torch.compile / trainer wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _plain(value: Any, where: str) -> Any:
    """``value`` as types ``torch.load(weights_only=True)`` accepts (numpy scalars/arrays become Python/tensors)."""
    if value is None or isinstance(value, (bool, str, Tensor)):
        return value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k) if not isinstance(k, int) else k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise CheckpointError(
        f"{where} holds a {type(value).__name__}, which a checkpoint cannot store; pass numbers, strings, "
        "lists, dicts or tensors."
    )


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module | Mapping[str, Tensor],
    model_config: MDANetConfig,
    preprocess_config: PreprocessConfig,
    meta: Mapping[str, Any] | None = None,
    **resume_state: Any,
) -> Path:
    """Write a checkpoint atomically (a temporary file in the same folder, then ``os.replace``), sealed with an
    integrity record (:func:`payload_digest`).

    Args:
        path: output file (``.pt``); its folder is created.
        model: the network (DDP / compiled wrappers are unwrapped), or its state dict (name → tensor, stored
            as it is, dtypes included); the weights are copied to the CPU.
        model_config: the config the network was built from.
        preprocess_config: the preprocessing of its inputs.
        meta: metadata; ``package_version``, ``torch_version`` and ``created`` are added unless ``meta`` has them.
        resume_state: training state for resuming, stored under its own key: ``optimizer``, ``scheduler``,
            ``scaler``, ``rng``, ``trainer`` (each a dict of plain values and tensors).

    Returns:
        ``path``.

    Raises:
        CheckpointError: an unknown resume key, metadata that is not plain data, or a state dict that is not a
            dict of tensors.
    """
    unknown = set(resume_state) - set(_RESUME_KEYS)
    if unknown:
        raise CheckpointError(f"unknown resume state {sorted(unknown)}; use {', '.join(_RESUME_KEYS)}.")
    path = Path(path)
    info = {
        "package_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **dict(meta or {}),
    }
    weights = unwrap_model(model).state_dict() if isinstance(model, nn.Module) else model
    if not isinstance(weights, Mapping) or not all(isinstance(v, Tensor) for v in weights.values()):
        raise CheckpointError("save_checkpoint needs a model or a dict of tensors; pass the network itself.")
    state = {str(k): v.detach().to("cpu", copy=True) for k, v in weights.items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": model_config.to_dict(),
        "preprocess": _plain(preprocess_config.to_dict(), "preprocess"),
        "state_dict": state,
        "meta": _plain(info, "meta"),
        **{k: _plain(v, k) for k, v in resume_state.items() if v is not None},
    }
    payload["integrity"] = {"algorithm": ALGORITHM, "digest": payload_digest(payload)}
    return atomic_write(path, lambda tmp: _save_with_crcs(payload, tmp))


def _save_with_crcs(payload: dict[str, Any], tmp: Path) -> None:
    # load_checkpoint checks the zip CRCs (torch.load does not), so they must be written even where a caller
    # switched torch's CRC computation off to save faster.
    settings: Any = getattr(getattr(getattr(torch.utils, "serialization", None), "config", None), "save", None)
    before = getattr(settings, "compute_crc32", None)
    if before is False:
        settings.compute_crc32 = True
    try:
        with tmp.open("wb") as fh:  # through a handle, the archive's root is "archive", not the temporary name
            torch.save(payload, fh)
    finally:
        if before is False:
            settings.compute_crc32 = False


def load_checkpoint(
    path_or_name: str | os.PathLike[str], map_location: str | torch.device = "cpu", *, trust: bool = False
) -> Checkpoint:
    """Read and validate a checkpoint file or bundled name.

    Nothing of the file is used before it passed every check: the zip CRCs, the format, the integrity record
    (:func:`payload_digest`), the type and bounds of every config field and of ``meta["inference"]``, finite
    weights, and weight shapes that fit the network the config describes (checked without allocating it).
    Weights written by earlier versions get today's parameter names
    (:func:`mdanet_sdk.model.upgrade_state_dict`), and a config's retired ``ops`` field is dropped.

    Args:
        path_or_name: a ``.pt`` file or a name of :data:`BUNDLED`.
        map_location: where to put the tensors (default CPU).
        trust: load a file without an integrity record (written by an older mdanet-sdk or another tool); all
            other checks still apply, and a record that does not match is refused whatever ``trust``.

    Raises:
        CheckpointError: missing or damaged file, not an mdanet-sdk checkpoint, a newer ``format_version``, no
            or a mismatching integrity record, a field of the wrong type or out of bounds, NaN/Inf weights, or
            weights that do not fit the config.
    """
    from mdanet_sdk.model import upgrade_state_dict

    path = resolve_checkpoint(path_or_name)
    check_container(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:
        raise
    except Exception as exc:  # any parser failure on a foreign or crafted file is the file's fault
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in reason:
            # torch's text goes on to suggest weights_only=False, which would run the code this file holds
            reason = "it is damaged, or holds Python objects beyond weights and plain data, which may run code"
        raise CheckpointError(
            f"{path} is not a readable mdanet-sdk checkpoint ({reason[:200]}); pass a .pt file written by "
            "mdanet-sdk train or save_checkpoint."
        ) from None
    check_structure(path, payload)
    check_integrity(path, payload, trust)
    # The one place where weights of earlier versions get today's parameter names (the integrity record covers
    # the names as written).
    state = upgrade_state_dict(payload["state_dict"])
    try:
        model_config = MDANetConfig.from_dict(payload["model_config"])
        preprocess = PreprocessConfig.from_dict(payload["preprocess"])
    except (MDANetError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} holds a config this mdanet-sdk cannot use: {exc}") from None
    check_meta(path, payload["meta"])
    check_weights(path, state, model_config)
    resume = {k: payload[k] for k in _RESUME_KEYS if k in payload}
    return Checkpoint(model_config, preprocess, state, dict(payload["meta"]), path, resume)
