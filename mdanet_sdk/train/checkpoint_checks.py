"""Whether a loaded checkpoint payload is safe and consistent: the checks
:func:`~mdanet_sdk.train.checkpoint.load_checkpoint` runs before any of it is used. ``torch.load(weights_only=True)``
runs no code, but it checks neither the zip CRCs nor the values: flipped bytes or NaN weights used to load silently
and answer "0 lesions", and a config field (``size``, ``widths``) could make the SDK allocate terabytes. So a file is
checked in this order: the zip container and its CRCs (:func:`check_container`), the format tag, version and
container types (:func:`check_structure`), the integrity record against :func:`payload_digest`
(:func:`check_integrity`; it detects damage, not forgery, since anyone can recompute it), the type of every
``meta`` field this package reads and the recommended post-processing (:func:`check_meta`,
:func:`inference_settings_problem`, which export artefacts use too), and finite weights whose names and shapes fit
the network the config describes, compared without allocating it (:func:`check_weights`). Every refusal is a
:class:`~mdanet_sdk.errors.CheckpointError` that names the file and what to do.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from mdanet_sdk import __version__
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk._values import is_finite, is_real, is_whole
from mdanet_sdk.errors import CheckpointError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ALGORITHM",
    "INFERENCE_SETTINGS",
    "payload_digest",
    "inference_settings_problem",
    "check_container",
    "check_structure",
    "check_integrity",
    "check_meta",
    "check_weights",
]

FORMAT = "mdanet-sdk-checkpoint"
#: Version written by this package; files with a higher version are refused (written by a newer mdanet-sdk).
FORMAT_VERSION = 1
#: The hash of the integrity record.
ALGORITHM = "sha256"
#: Keys every checkpoint holds, each a dict.
REQUIRED = ("model_config", "preprocess", "state_dict", "meta")
#: Tensor types a state dict may hold (quantized, complex or sparse tensors are no weights of these networks).
_WEIGHT_DTYPES = frozenset(
    {
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.int8,
        torch.uint8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.bool,
    }
)
#: Bounds on ``model_config``, ``preprocess`` and ``meta`` (checked before anything walks them recursively):
#: nesting depth, number of values, characters in all strings, and bits of an integer (``json.dumps`` refuses
#: integers of more than 4300 digits). What mdanet-sdk writes is a few levels deep and a few kB.
MAX_NESTING = 32
MAX_VALUES = 100_000
MAX_TEXT = 16 << 20
MAX_INT_BITS = 1024


_STR = (lambda v: isinstance(v, str), "a string")
_INT = (is_whole, "an integer")
_STRINGS = (lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v), "a list of strings")
#: (test, description) of the ``meta`` fields this package writes and reads; other fields are free-form. The
#: trainer's fold split (:meth:`~mdanet_sdk.train.selection.FoldCases.describe`) and selection are among them.
_META_TYPES = {
    **dict.fromkeys(
        ("package_version", "torch_version", "created", "note", "name", "kind", "selected_on", "groups_file"), _STR
    ),
    **dict.fromkeys(("epoch", "fold", "folds", "seed", "n_train_cases", "n_train_patients", "best_epoch"), _INT),
    **dict.fromkeys(
        ("val_dsc", "best_val_dsc", "inner_dsc", "best_dsc"), (lambda v: v is None or is_real(v), "a number or null")
    ),
    **dict.fromkeys(("val_cases", "inner_cases", "val_patients", "inner_patients"), _STRINGS),
    "grouped": (lambda v: isinstance(v, bool), "true or false"),
    "inference": (lambda v: isinstance(v, dict), "a dict"),
}
#: Weights that only the transformer bottleneck of earlier mdanet-sdk versions had (one self-attention layer
#: shared by the groups), and that only today's, the paper's, has (a learned position embedding).
_OLD_TRANSFORMER_ONLY = "bottleneck.self_layer."
_NEW_TRANSFORMER_ONLY = "bottleneck.position"
#: The post-processing settings a checkpoint may recommend (the keys of
#: ``mdanet_sdk.inference.POSTPROCESSING_DEFAULTS``) → what each must be.
INFERENCE_SETTINGS: dict[str, str] = {
    "tta": "true or false",
    "threshold": "a number between 0 and 1 (exclusive)",
    "min_size": "an integer number of voxels from 0 to 10^9",
    "max_adc_ratio": "a number from 0 (off) to 10",
}
_INFERENCE_TESTS = {
    "tta": lambda v: isinstance(v, bool),
    "threshold": lambda v: is_finite(v) and 0.0 < v < 1.0,
    "min_size": lambda v: is_whole(v) and 0 <= v <= 10**9,
    "max_adc_ratio": lambda v: is_finite(v) and 0.0 <= v <= 10.0,
}


def inference_settings_problem(settings: Any, where: str | None = None) -> str | None:
    """What is wrong with recommended post-processing settings, or ``None`` when nothing is.

    The settings are ``meta["inference"]`` of a checkpoint or ``meta["checkpoint"]["inference"]`` of an export
    artefact: what the Segmenter applies unless told otherwise. The answer is a sentence fragment naming the bad
    key and what it must be, e.g. ``threshold = 2, which must be a number between 0 and 1 (exclusive)``; callers
    wrap it into their own message. Settings this package does not know are refused too (a newer mdanet-sdk may
    know them).

    Args:
        settings: the settings as read from the file.
        where: where they sit, e.g. ``"meta['inference']"``; a key is then named ``meta['inference']['threshold']``
            instead of ``threshold``.
    """
    if not isinstance(settings, dict):
        return f"{where or 'settings'} = {settings!r:.60}, which must be a dict of settings"
    unknown = sorted(str(k) for k in settings if k not in INFERENCE_SETTINGS)
    if unknown:
        return f"settings {unknown} this mdanet-sdk does not know (upgrade mdanet-sdk to use them)"
    for key, value in settings.items():
        if not _INFERENCE_TESTS[key](value):
            name = f"{where}[{key!r}]" if where else key
            return f"{name} = {value!r:.60}, which must be {INFERENCE_SETTINGS[key]}"
    return None


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
    state = cast("dict[str, Tensor]", payload.get("state_dict"))
    for name in sorted(state):
        data = _tensor_bytes(state[name])
        header = json.dumps([name, str(state[name].dtype), list(state[name].shape), data.nbytes]).encode()
        digest.update(b"\n" + header + b"\n")
        digest.update(data)  # type: ignore[arg-type]  # an ndarray is a buffer; numpy's stubs say so from 3.12
    return digest.hexdigest()


def _tensor_bytes(tensor: Tensor) -> np.ndarray:
    """The raw bytes of ``tensor`` in C order, as a uint8 array (no copy for a contiguous CPU tensor)."""
    return tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()


def _canonical(value: Any) -> Any:
    """``value`` as JSON-serialisable data with a unique rendering (non-string keys keep their type)."""
    if isinstance(value, Tensor):
        try:
            inner = hashlib.sha256(_tensor_bytes(value)).hexdigest()  # type: ignore[arg-type]  # as above
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


def check_container(path: Path) -> None:
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
            artefact = any(name.endswith("/mdanet/meta.json") for name in archive.namelist())
        reason = f"member {bad} fails its CRC check" if bad else None
    except MemoryError:
        raise
    except Exception as exc:  # whatever the zip parser trips on in a damaged archive
        reason = f"{type(exc).__name__}: {str(exc)[:120]}"
    if reason:
        raise CheckpointError(f"{path} is damaged ({reason}); re-download or re-save it.")
    if artefact:  # what `mdanet-sdk export` writes: torch.load would explain weights_only instead
        raise CheckpointError(
            f"{path} is an exported artefact, not a checkpoint; run it with --model {path} (Python: "
            "Segmenter.from_exported), or give the checkpoint it was exported from."
        )


def check_structure(path: Path, payload: Any) -> None:
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
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; the file is damaged or incomplete.")
    for key in REQUIRED:
        if not isinstance(payload[key], dict):
            raise CheckpointError(
                f"{path} holds a {key} that is a {type(payload[key]).__name__}, not a dict; the file is damaged "
                "or was not written by mdanet-sdk."
            )
    for key in ("model_config", "preprocess", "meta"):
        problem = _size_problem(payload[key])
        if problem:
            raise CheckpointError(
                f"{path} holds a {key} that is {problem}, far beyond what mdanet-sdk writes; the file is damaged "
                "or was not written by mdanet-sdk."
            )
    for name, tensor in payload["state_dict"].items():
        if not (
            isinstance(name, str)
            and isinstance(tensor, Tensor)
            and tensor.layout == torch.strided
            and tensor.dtype in _WEIGHT_DTYPES
        ):
            what = f"a {tensor.dtype} tensor" if isinstance(tensor, Tensor) else f"a {type(tensor).__name__}"
            raise CheckpointError(
                f"{path} holds {what} under state_dict key {name!r:.80}, where a dense float, integer or bool "
                "tensor named by a string belongs; the file is damaged or was not written by mdanet-sdk."
            )


def _size_problem(value: Any) -> str | None:
    """Whether ``value`` exceeds the bounds above, walked without recursion (a file can nest thousands deep)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    count = text = 0
    while stack:
        item, depth = stack.pop()
        count += 1
        if depth > MAX_NESTING:
            return f"nested more than {MAX_NESTING} levels deep"
        if count > MAX_VALUES:
            return f"more than {MAX_VALUES} values"
        if isinstance(item, Mapping):
            stack.extend((k, depth + 1) for k in item.keys())
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, (str, bytes)):
            text += len(item)
            if text > MAX_TEXT:
                return f"more than {MAX_TEXT >> 20} MiB of text"
        elif isinstance(item, int) and item.bit_length() > MAX_INT_BITS:
            return f"holding an integer of more than {MAX_INT_BITS} bits"
    return None


def check_integrity(path: Path, payload: dict[str, Any], trust: bool) -> None:
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
    if record.get("algorithm") != ALGORITHM:
        raise CheckpointError(
            f"{path} has an integrity record of an unknown kind ({record.get('algorithm')!r:.40}); upgrade "
            "mdanet-sdk, or re-save the file with this one."
        )
    if not hmac.compare_digest(payload_digest(payload), digest):
        raise CheckpointError(
            f"{path} does not match its integrity record (it was damaged or edited after it was saved); "
            "re-download or re-save it."
        )


def check_meta(path: Path, meta: dict[str, Any]) -> None:
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
    problem = inference_settings_problem(meta["inference"], "meta['inference']") if "inference" in meta else None
    if problem:
        raise CheckpointError(
            f"{path} recommends post-processing {problem}; the file is damaged, or was written by another "
            "mdanet-sdk version or another tool."
        )


def check_weights(path: Path, state: dict[str, Tensor], config: MDANetConfig) -> None:
    """Weights that fit the network ``config`` describes (names and shapes, compared with a network built on the
    meta device, which allocates nothing) and are finite (NaN weights would answer "0 lesions")."""
    from mdanet_sdk.model import build_model

    with torch.device("meta"):
        expected = build_model(config, ops="reference").state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    problem = (
        f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        if missing or unexpected
        else next(
            (
                f"{name} is {state[name].dtype} {tuple(state[name].shape)}, the config needs {tuple(want.shape)}"
                for name, want in expected.items()
                if state[name].shape != want.shape or state[name].is_floating_point() != want.is_floating_point()
            ),
            None,
        )
    )
    if any(k.startswith(_OLD_TRANSFORMER_ONLY) for k in unexpected) or any(
        k.startswith(_NEW_TRANSFORMER_ONLY) for k in missing
    ):
        raise CheckpointError(
            f"{path} comes from an earlier mdanet-sdk whose transformer bottleneck differed from the paper's (one "
            f"self-attention layer shared by the groups, no position embedding: {problem}); its weights cannot "
            "load into today's network, re-train it with this version."
        )
    if problem:
        raise CheckpointError(
            f"{path} holds weights that do not fit its model config ({problem}); the file is inconsistent, "
            "re-save it from the trained model."
        )
    for name, tensor in state.items():
        if name.endswith("running_var") and bool((tensor < 0).any()):  # a variance is never negative
            raise CheckpointError(
                f"{path} has a negative batch-norm variance in {name}; the file is damaged, re-train or re-save it."
            )
        # checked as the network will hold them: 1e300 in a float64 file is finite, and inf in a float32 network
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor.to(expected[name].dtype)).all()):
            raise CheckpointError(
                f"{path} has NaN or infinite weights in {name} (as {expected[name].dtype}); the training diverged "
                "or the file is damaged, re-train or re-save it."
            )
        # no kernel or matrix of an initialised network is one value (checked at every preset): blanked weights
        # would answer "no lesion" for every case
        if (
            tensor.is_floating_point()
            and tensor.dim() >= 2
            and tensor.numel() > 1
            and bool((tensor == tensor.flatten()[0]).all())
        ):
            raise CheckpointError(
                f"{path} holds one value ({float(tensor.flatten()[0]):g}) in every weight of {name}; the file is "
                "blanked or damaged, re-train or re-save it."
            )
