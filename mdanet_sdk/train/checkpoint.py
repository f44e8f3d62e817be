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

Nothing of a file is trusted before :func:`load_checkpoint` has checked it: torch checks neither the zip CRCs
nor the values, so flipped bytes or NaN weights used to load silently and answer "0 lesions", and a config
field (``size``, ``widths``) could make the SDK allocate terabytes. ``integrity`` (:func:`payload_digest`)
covers configs, metadata and weights; it detects damage, not forgery (anyone can recompute it).

Bundled names (:data:`BUNDLED`): ``default-mri`` and ``default-ctp`` resolve to the demo weights shipped in
``mdanet_sdk/weights/`` (trained on synthetic phantoms only).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import math
import os
import re
import zipfile
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

FORMAT = "mdanet-sdk-checkpoint"
#: Version written by this package; files with a higher version are refused (written by a newer mdanet-sdk).
FORMAT_VERSION = 1
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
#: Checkpoint names shipped with the package → their files.
BUNDLED: dict[str, Path] = {
    "default-mri": WEIGHTS_DIR / "default-mri.pt",
    "default-ctp": WEIGHTS_DIR / "default-ctp.pt",
}
_REQUIRED = ("model_config", "preprocess", "state_dict", "meta")
#: Keys of a training checkpoint that only matter for resuming (kept in :attr:`Checkpoint.resume`).
_RESUME_KEYS = ("optimizer", "scheduler", "scaler", "rng", "trainer")
_ALGORITHM = "sha256"
#: Tensor types a state dict may hold (quantized, complex or sparse tensors are no weights of these networks).
_WEIGHT_DTYPES = frozenset({
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.uint8, torch.int16, torch.int32,
    torch.int64, torch.bool,
})
_STR = (lambda v: isinstance(v, str), "a string")
_REAL = (lambda v: isinstance(v, Real) and not isinstance(v, bool), "a number")
_INT = (lambda v: isinstance(v, Integral) and not isinstance(v, bool), "an integer")
#: (test, description) of the ``meta`` fields this package writes and reads; other fields are free-form.
_META_TYPES = {
    **dict.fromkeys(("package_version", "torch_version", "created", "note", "name", "kind"), _STR),
    **dict.fromkeys(("epoch", "fold", "folds", "seed", "n_train_cases", "best_epoch"), _INT),
    **dict.fromkeys(("val_dsc", "best_val_dsc"), (lambda v: v is None or _REAL[0](v), "a number or null")),
    "val_cases": (lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v), "a list of strings"),
    "inference": (lambda v: isinstance(v, dict), "a dict"),
}
#: Keys of ``meta["inference"]`` (those of ``mdanet_sdk.inference.POSTPROCESSING_DEFAULTS``) and their rules.
_INFERENCE_KEYS = {"tta": "true or false", "threshold": "a number between 0 and 1 (exclusive)",
                   "min_size": "an integer number of voxels from 0 to 10^9", "max_adc_ratio": "a number from 0 to 10"}
_MAX_MIN_SIZE = 10**9
_MAX_ADC_RATIO = 10.0


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
        """
        from mdanet_sdk.model import build_model

        model = build_model(self.model_config.replace(ops=ops))
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
        raise CheckpointError(
            f"checkpoint {path} does not exist; pass a .pt file written by mdanet-sdk or a bundled name "
            f"({bundled})."
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
    payload["integrity"] = {"algorithm": _ALGORITHM, "digest": payload_digest(payload)}
    return atomic_write(path, lambda tmp: _save_with_crcs(payload, tmp))


def _save_with_crcs(payload: dict[str, Any], tmp: Path) -> None:
    # load_checkpoint checks the zip CRCs (torch.load does not), so they must be written even where a caller
    # switched torch's CRC computation off to save faster.
    settings = getattr(getattr(getattr(torch.utils, "serialization", None), "config", None), "save", None)
    before = getattr(settings, "compute_crc32", None)
    if before is False:
        settings.compute_crc32 = True
    try:
        torch.save(payload, tmp)
    finally:
        if before is False:
            settings.compute_crc32 = False


def payload_digest(payload: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of what defines a checkpoint's behaviour: ``model_config``, ``preprocess``, ``meta`` and
    the ``state_dict`` (the resume state is not covered).

    The serialisation is canonical, independent of pickling and of dict order: the JSON of the three dicts with
    sorted keys (a tensor inside them as its dtype, shape and SHA-256), preceded by its length; then for every
    state-dict entry, in sorted name order, a JSON header ``[name, dtype, shape, nbytes]`` and the tensor's raw
    bytes in C order (the machine's byte order, little-endian on the platforms torch ships wheels for).
    """
    digest = hashlib.sha256()
    head = {k: _canonical(payload.get(k)) for k in ("model_config", "preprocess", "meta")}
    text = json.dumps(head, sort_keys=True, separators=(",", ":")).encode()
    digest.update(b"%d\n" % len(text) + text)
    state = payload.get("state_dict")
    for name in sorted(state):
        data = _tensor_bytes(state[name])
        header = json.dumps([name, str(state[name].dtype), list(state[name].shape), data.nbytes]).encode()
        digest.update(b"\n" + header + b"\n")
        digest.update(data)
    return digest.hexdigest()


def _tensor_bytes(tensor: Tensor) -> np.ndarray:
    """The raw bytes of ``tensor`` in C order, as a uint8 array (no copy for a contiguous CPU tensor)."""
    return tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()


def _canonical(value: Any) -> Any:
    """``value`` as JSON-serialisable data with a unique rendering (non-string keys keep their type)."""
    if isinstance(value, Tensor):
        try:
            inner = hashlib.sha256(_tensor_bytes(value)).hexdigest()
        except (RuntimeError, TypeError):  # a layout or dtype without raw bytes: its repr stands for it
            inner = repr(value)
        return {"<tensor>": [str(value.dtype), list(value.shape), inner]}
    if isinstance(value, Mapping):
        return {(k if isinstance(k, str) else f"<{type(k).__name__}>{k!r}"): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return f"<{type(value).__name__}>{value!r}"


def load_checkpoint(
    path_or_name: str | os.PathLike[str], map_location: str | torch.device = "cpu", *, trust: bool = False
) -> Checkpoint:
    """Read and validate a checkpoint file or bundled name.

    Nothing of the file is used before it passed every check: the zip CRCs, the format, the integrity record
    (:func:`payload_digest`), the type and bounds of every config field and of ``meta["inference"]``, finite
    weights, and weight shapes that fit the network the config describes (checked without allocating it).

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
    path = resolve_checkpoint(path_or_name)
    _check_container(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:
        raise
    except Exception as exc:  # any parser failure on a foreign or crafted file is the file's fault
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a readable mdanet-sdk checkpoint ({reason[:200]}); pass a .pt file written by "
            "mdanet-sdk train or save_checkpoint."
        ) from None
    _check_structure(path, payload)
    _check_integrity(path, payload, trust)
    try:
        model_config = MDANetConfig.from_dict(payload["model_config"])
        preprocess = PreprocessConfig.from_dict(payload["preprocess"])
    except (MDANetError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} holds a config this mdanet-sdk cannot use: {exc}") from None
    _check_meta(path, payload["meta"])
    _check_weights(path, payload["state_dict"], model_config)
    resume = {k: payload[k] for k in _RESUME_KEYS if k in payload}
    return Checkpoint(model_config, preprocess, payload["state_dict"], dict(payload["meta"]), path, resume)


def _check_container(path: Path) -> None:
    """Refuse a file that is not a zip archive, or one whose members fail their CRC: ``torch.load`` checks no
    CRC, so flipped bytes in the tensor data would load silently as other weights."""
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise CheckpointError(
            f"{path} is not a readable mdanet-sdk checkpoint (not a zip archive written by torch.save); pass a "
            ".pt file written by mdanet-sdk train or save_checkpoint."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        reason = f"member {bad} fails its CRC check" if bad else None
    except MemoryError:
        raise
    except Exception as exc:  # whatever the zip parser trips on in a damaged archive
        reason = f"{type(exc).__name__}: {str(exc)[:120]}"
    if reason:
        raise CheckpointError(f"{path} is damaged ({reason}); re-download or re-save it.")


def _check_structure(path: Path, payload: Any) -> None:
    """The format tag and version, the required keys, and their container types (the state dict: str → tensor)."""
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if not isinstance(fmt, str) or fmt != FORMAT:
        raise CheckpointError(
            f"{path} is not an mdanet-sdk checkpoint (no format tag {FORMAT!r}); pass a file written by "
            "mdanet-sdk train or save_checkpoint."
        )
    version = payload.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path} has an invalid format_version {version!r:.40}; the file is damaged.")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}, newer than this mdanet-sdk "
            f"({__version__}) reads (≤ {FORMAT_VERSION}); upgrade mdanet-sdk to load it."
        )
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; the file is damaged or incomplete.")
    for key in _REQUIRED:
        if not isinstance(payload[key], dict):
            raise CheckpointError(
                f"{path} holds a {key} that is a {type(payload[key]).__name__}, not a dict; the file is damaged "
                "or was not written by mdanet-sdk."
            )
    for name, tensor in payload["state_dict"].items():
        if not (isinstance(name, str) and isinstance(tensor, Tensor) and tensor.layout == torch.strided
                and tensor.dtype in _WEIGHT_DTYPES):
            what = f"a {tensor.dtype} tensor" if isinstance(tensor, Tensor) else f"a {type(tensor).__name__}"
            raise CheckpointError(
                f"{path} holds {what} under state_dict key {name!r:.80}, where a dense float, integer or bool "
                "tensor named by a string belongs; the file is damaged or was not written by mdanet-sdk."
            )


def _check_integrity(path: Path, payload: dict[str, Any], trust: bool) -> None:
    """The integrity record matches the content; a file without one loads only when ``trust``."""
    record = payload.get("integrity")
    if record is None:
        if trust:
            return
        raise CheckpointError(
            f"{path} has no integrity record (written by an older mdanet-sdk or another tool), so damage to it "
            "cannot be detected; if you trust the file, load it with trust=True (--trust on the command line)."
        )
    digest = record.get("digest") if isinstance(record, dict) else None
    if not isinstance(digest, str) or not re.fullmatch("[0-9a-f]{64}", digest):
        raise CheckpointError(f"{path} has a malformed integrity record; it is damaged, re-download or re-save it.")
    if record.get("algorithm") != _ALGORITHM:
        raise CheckpointError(
            f"{path} has an integrity record of an unknown kind ({record.get('algorithm')!r:.40}); upgrade "
            "mdanet-sdk, or re-save the file with this one."
        )
    if not hmac.compare_digest(payload_digest(payload), digest):
        raise CheckpointError(
            f"{path} does not match its integrity record (it was damaged or edited after it was saved); "
            "re-download or re-save it."
        )


def _check_meta(path: Path, meta: dict[str, Any]) -> None:
    """String keys, the type of every field this package reads or writes, and ``meta["inference"]``."""
    for key, value in meta.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{path} has a meta key {key!r:.40} that is not a string; the file is damaged.")
        test, description = _META_TYPES.get(key, (lambda v: True, ""))
        if not test(value):
            raise CheckpointError(
                f"{path} has meta[{key!r}] = {value!r:.60}, which is not {description}; the file is damaged "
                "or was not written by mdanet-sdk."
            )
    if "inference" in meta:
        _check_inference(path, meta["inference"])


def _check_inference(path: Path, settings: dict[str, Any]) -> None:
    """``meta["inference"]``: the post-processing the Segmenter applies unless told otherwise."""
    unknown = sorted(str(k) for k in settings if k not in _INFERENCE_KEYS)
    if unknown:
        raise CheckpointError(
            f"{path} recommends post-processing settings {unknown} this mdanet-sdk does not know; upgrade "
            "mdanet-sdk to use it."
        )
    for key, value in settings.items():
        number = _REAL[0](value) and math.isfinite(value)
        ok = {
            "tta": isinstance(value, bool),
            "threshold": number and 0.0 < value < 1.0,
            "min_size": _INT[0](value) and 0 <= value <= _MAX_MIN_SIZE,
            "max_adc_ratio": number and 0.0 <= value <= _MAX_ADC_RATIO,
        }[key]
        if not ok:
            raise CheckpointError(
                f"{path} has meta['inference'][{key!r}] = {value!r:.60}, which must be {_INFERENCE_KEYS[key]}; "
                "the file is damaged or was not written by mdanet-sdk."
            )


def _check_weights(path: Path, state: dict[str, Tensor], config: MDANetConfig) -> None:
    """Weights that fit the network ``config`` describes (names and shapes, compared with a network built on the
    meta device, which allocates nothing) and are finite (NaN weights would answer "0 lesions")."""
    from mdanet_sdk.model import build_model

    with torch.device("meta"):
        expected = build_model(config.replace(ops="reference")).state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    problem = f"missing {missing[:3]}, unexpected {unexpected[:3]}" if missing or unexpected else next((
        f"{name} is {state[name].dtype} {tuple(state[name].shape)}, the config needs {tuple(want.shape)}"
        for name, want in expected.items()
        if state[name].shape != want.shape or state[name].is_floating_point() != want.is_floating_point()
    ), None)
    if problem:
        raise CheckpointError(
            f"{path} holds weights that do not fit its model config ({problem}); the file is inconsistent, "
            "re-save it from the trained model."
        )
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{path} has NaN or infinite weights in {name}; the training diverged or the file is damaged, "
                "re-train or re-save it."
            )
