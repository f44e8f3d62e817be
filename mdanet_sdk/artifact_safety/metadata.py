"""The metadata of an artefact: ``mdanet/meta.json``, the model and preprocessing configs, field by field.

:func:`describe` opens the archive, refuses metadata from a newer mdanet-sdk, checks the integrity record, then
validates every field of ``meta.json`` against ``_META_RULES`` (and the recommended post-processing with
:func:`~mdanet_sdk.train.checkpoint_checks.inference_settings_problem`, the rules checkpoints follow), the format
tag against the container, the model and preprocessing configs against their own classes, and that ``meta.json``
and the model config describe the same network, all without loading it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mdanet_sdk import __version__
from mdanet_sdk.artifact_safety.archive import _REDO, Archive, _json, check_integrity, open_archive
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.device import PRECISIONS
from mdanet_sdk._values import is_finite, is_whole
from mdanet_sdk.errors import CheckpointError, MDANetError
from mdanet_sdk.train.checkpoint_checks import inference_settings_problem

#: Layout version of the ``mdanet/`` metadata; artefacts with a higher version are refused.
ARTIFACT_VERSION = 1
FORMATS = ("torchscript", "exported", "tensorrt")
#: What an artefact may compute in: the precision names of :mod:`mdanet_sdk.device`.
PRECISION_NAMES = PRECISIONS
#: The largest batch and slice side an artefact may declare (a larger one is refused as crafted).
MAX_BATCH, MAX_SIDE = 4096, 1024
#: The metadata files, under ``<archive>/extra/``.
META, CONFIG, PREPROCESS = "mdanet/meta.json", "mdanet/model_config.json", "mdanet/preprocess.json"
_CONTAINER = {"torchscript": "torchscript", "exported": "pt2", "tensorrt": "pt2"}


def _is_int(lo: int, hi: int) -> Callable[[Any], bool]:
    # bool is an int to Python, but never a size or a count here
    return lambda v: is_whole(v) and lo <= int(v) <= hi


def _is_text(v: Any) -> bool:
    return isinstance(v, str) and len(v) <= 200


def _batch_ok(v: Any) -> bool:
    small = _is_int(1, MAX_BATCH)
    return (
        isinstance(v, dict)
        and v.keys() == {"min", "opt", "max"}
        and all(small(x) for x in v.values())
        and v["min"] <= v["opt"] <= v["max"]
    )


def _shape_ok(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 3 and _is_int(1, 64)(v[0]) and all(_is_int(1, MAX_SIDE)(s) for s in v[1:])


#: (test, what it must be) for every field of ``meta.json`` this package reads; the first five are required.
_META_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "format": (lambda v: v in FORMATS, f"one of {', '.join(FORMATS)}"),
    "precision": (lambda v: v in PRECISION_NAMES, f"one of {', '.join(PRECISION_NAMES)}"),
    "ops": (lambda v: v in ("native", "reference", "plugin"), "native, reference or plugin"),
    "input_shape": (_shape_ok, "[C, H, W] with C from 1 to 64 and H, W from 1 to 1024"),
    "batch": (_batch_ok, "{min, opt, max} with 1 <= min <= opt <= max <= 4096"),
    "num_classes": (_is_int(2, 64), "an integer from 2 to 64"),
    "modalities": (lambda v: isinstance(v, list) and all(_is_text(m) for m in v), "a list of modality names"),
    "tolerance": (lambda v: is_finite(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "package_version": (_is_text, "a string"),
    "pipeline_revision": (_is_int(1, 2**31), "an integer from 1"),
    "torch_version": (_is_text, "a string"),
    "created": (_is_text, "a string"),
    "checkpoint": (lambda v: isinstance(v, dict), "a JSON object"),
}


def describe(path: Path, trust: bool = False) -> tuple[Archive, MDANetConfig, dict[str, Any], dict[str, Any]]:
    """Read ``path``, check its integrity and validate its metadata, without loading the network.

    Returns:
        ``(archive, model_config, preprocess dict, meta)``.

    Raises:
        CheckpointError: see :func:`open_archive`, :func:`check_integrity`; no mdanet-sdk metadata; metadata from
            a newer mdanet-sdk; a field of the wrong type or out of bounds; a format tag that does not match the
            container.
    """
    archive = open_archive(path)
    missing = [n for n in (META, CONFIG, PREPROCESS) if f"extra/{n}" not in archive.digests]
    if missing:
        raise CheckpointError(
            f"{path} carries no mdanet-sdk metadata ({', '.join(missing)} missing); pass a file written by "
            "`mdanet-sdk export` (a checkpoint goes to `segment --checkpoint`, or Segmenter.from_checkpoint)."
        )
    meta = _json(path, META, archive.read(f"extra/{META}"))
    version = meta.get("artifact_version") if isinstance(meta, dict) else None
    if _is_int(ARTIFACT_VERSION + 1, 2**63)(version):  # before the integrity check: its layout may be newer too
        raise CheckpointError(
            f"{path} has artefact version {version!r}, newer than this mdanet-sdk ({__version__}) reads "
            f"(<= {ARTIFACT_VERSION}); upgrade mdanet-sdk to load it."
        )
    check_integrity(archive, trust)
    if not _is_int(1, ARTIFACT_VERSION)(version):
        raise CheckpointError(f"{path} has meta.json artifact_version = {version!r:.40}, which is not valid; {_REDO}.")
    _check_meta(path, meta, archive.kind)
    config = _model_config(path, _json(path, CONFIG, archive.read(f"extra/{CONFIG}")))
    preprocess = _json(path, PREPROCESS, archive.read(f"extra/{PREPROCESS}"))
    _check_preprocess(path, preprocess)
    _check_consistent(path, meta, config)
    return archive, config, preprocess, meta


def _check_meta(path: Path, meta: dict[str, Any], kind: str | None) -> None:
    for key, (test, description) in _META_RULES.items():
        required = key in ("format", "precision", "ops", "input_shape", "batch")
        if (required or key in meta) and not test(meta.get(key)):
            raise CheckpointError(
                f"{path} has meta.json {key} = {meta.get(key)!r:.60}, which must be {description}; {_REDO}."
            )
    fmt = meta["format"]
    if _CONTAINER[fmt] != kind:
        found = {"torchscript": "a TorchScript archive", "pt2": "a torch.export archive"}.get(str(kind), "neither")
        raise CheckpointError(f"{path} says its format is {fmt!r} but it is {found}; {_REDO}.")
    allowed_ops = ("plugin", "reference") if fmt == "tensorrt" else ("native", "reference")
    if meta["ops"] not in allowed_ops:
        raise CheckpointError(f"{path} has meta.json ops = {meta['ops']!r}, which a {fmt} artefact never has; {_REDO}.")
    checkpoint = meta.get("checkpoint", {})
    if not all(isinstance(k, str) for k in checkpoint) or not _is_text(checkpoint.get("package_version", "")):
        raise CheckpointError(f"{path} has a damaged meta.json checkpoint record; {_REDO}.")
    inference = checkpoint.get("inference", {})
    if not isinstance(inference, dict):
        raise CheckpointError(f"{path} has meta.json checkpoint.inference that is not a JSON object; {_REDO}.")
    problem = inference_settings_problem(inference)
    if problem:
        raise CheckpointError(f"{path} recommends post-processing {problem}; {_REDO}.")


def _model_config(path: Path, value: Any) -> MDANetConfig:
    try:
        return MDANetConfig.from_dict(value)
    except (MDANetError, TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{path} holds a model config this mdanet-sdk cannot use ({_line(exc)}); {_REDO}."
        ) from None


def _check_preprocess(path: Path, value: Any) -> None:
    from mdanet_sdk.data.preprocess import PreprocessConfig

    try:
        PreprocessConfig.from_dict(value)
    except (MDANetError, TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{path} holds a preprocessing config this mdanet-sdk cannot use ({_line(exc)}); {_REDO}."
        ) from None


def _check_consistent(path: Path, meta: dict[str, Any], config: MDANetConfig) -> None:
    """meta.json and the model config describe the same network."""
    problems = []
    if meta["input_shape"][0] != config.in_channels:
        problems.append(f"input_shape has {meta['input_shape'][0]} channels, the model {config.in_channels}")
    if "num_classes" in meta and meta["num_classes"] != config.num_classes:
        problems.append(f"num_classes is {meta['num_classes']}, the model's {config.num_classes}")
    if "modalities" in meta and tuple(meta["modalities"]) != tuple(config.modalities):
        problems.append(f"modalities are {meta['modalities']}, the model's {list(config.modalities)}")
    if problems:
        raise CheckpointError(
            f"{path} has metadata that contradicts its model config ({'; '.join(problems)}); {_REDO}."
        )


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__).rstrip(".")[:300]
