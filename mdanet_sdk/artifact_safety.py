"""Loading a deployment artefact without letting it run code or fail quietly.

torch's loaders are not built for files from strangers. Reading a ``.pt2``, ``torch.export.load`` unpickles
every weight or constant its config marks ``use_pickle`` (and sample inputs it cannot read otherwise) with
the unrestricted pickle, evaluates the shape expressions of the program with ``sympy.sympify`` (``eval``),
compiles parameter names from the file into the Python source of a ``GraphModule``, and ``exec``s the guard
code stored with it. ``torch.jit.load`` runs a class's TorchScript ``__setstate__`` while loading, and any
TorchScript method may call operators that write files (``aten::save``). Everything here happens before or
right after those loaders run:

* :func:`open_archive` reads the file once (torch then gets exactly those bytes, see :func:`loadable`),
  refuses duplicate or stray member names and reads every member, which checks its CRC;
* :func:`check_integrity` compares the members with the record :func:`seal` appends to every artefact at
  export (the SHA-256 of every other member). It detects damage, not forgery: whoever can edit the file can
  rewrite the record too;
* :func:`describe` validates ``mdanet/meta.json``, the model and preprocessing configs field by field, and the
  format tag against the container;
* :func:`check_contents` refuses what would run code while loading: pickled entries, AOTInductor libraries,
  shape expressions or names that are not plain, guard code, TorchScript ``__setstate__`` and custom classes;
* :func:`check_torchscript_ops` / :func:`check_graph_ops` refuse, after loading and before anything runs,
  every operator outside an allowlist: ATen without its file, console and process-state operators, the
  structural ``prim`` operators, the two ``mdanet::`` ops (and ``tensorrt::`` ops in TensorRT artefacts).
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import math
import operator
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import torch

from mdanet_sdk import __version__
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.errors import CheckpointError, MDANetError

__all__ = [
    "ARTIFACT_VERSION", "FORMATS", "PRECISION_NAMES", "META", "CONFIG", "PREPROCESS", "INTEGRITY", "Archive",
    "open_archive", "seal", "check_integrity", "describe", "check_contents", "loadable", "check_torchscript_ops",
    "check_graph_ops",
]

#: Layout version of the ``mdanet/`` metadata; artefacts with a higher version are refused.
ARTIFACT_VERSION = 1
FORMATS = ("torchscript", "exported", "tensorrt")
PRECISION_NAMES = ("fp32", "fp16", "bf16")
#: The metadata files, under ``<archive>/extra/``.
META, CONFIG, PREPROCESS = "mdanet/meta.json", "mdanet/model_config.json", "mdanet/preprocess.json"
INTEGRITY = "mdanet/integrity.json"
#: Largest artefact read (and largest total of its members): this network is well under 1 GiB in any format.
MAX_ARCHIVE_BYTES = 4 << 30
_MAX_METADATA_BYTES = 1 << 20
_MAX_PROGRAM_BYTES = 256 << 20
_CONTAINER = {"torchscript": "torchscript", "exported": "pt2", "tensorrt": "pt2"}
_SAMPLE_INPUTS = "data/sample_inputs/model.pt"
_EMPTY = hashlib.sha256(b"").hexdigest()
_REDO = "export it again with `mdanet-sdk export`"


# -- the archive --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Archive:
    """An artefact read into memory: its bytes, the folder all members sit in, and every member's SHA-256.

    Attributes:
        path: the file.
        data: its bytes, read once.
        root: the archive folder (``<root>/data.pkl``, ``<root>/extra/...``).
        digests: member name below ``root`` -> hex SHA-256 of its content.
        kind: ``"torchscript"``, ``"pt2"`` or None (neither container).
    """

    path: Path
    data: bytes = field(repr=False)
    root: str
    digests: dict[str, str] = field(repr=False)
    kind: str | None

    def read(self, name: str) -> bytes:
        """The content of member ``name`` (below the root)."""
        with zipfile.ZipFile(io.BytesIO(self.data)) as archive:
            return archive.read(f"{self.root}/{name}")


_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError, OSError)


def open_archive(path: Path) -> Archive:
    """Read ``path`` and hash every member.

    Raises:
        CheckpointError: missing, too large, not a zip archive, members outside one folder or listed twice, or a
            member that does not match its CRC.
    """
    if not path.is_file():
        raise CheckpointError(f"artefact {path} does not exist; pass a file written by `mdanet-sdk export`.")
    if path.stat().st_size > MAX_ARCHIVE_BYTES:
        raise CheckpointError(f"{path} is larger than any mdanet-sdk artefact ({MAX_ARCHIVE_BYTES >> 30} GiB).")
    data = path.read_bytes()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS as exc:
        raise CheckpointError(
            f"{path} is not a readable export artefact ({exc}); pass a file written by `mdanet-sdk export`."
        ) from None
    with archive:
        infos = archive.infolist()
        root = _root(path, [info.filename for info in infos])
        if sum(info.file_size for info in infos) > MAX_ARCHIVE_BYTES:
            raise CheckpointError(f"{path} unpacks to more than {MAX_ARCHIVE_BYTES >> 30} GiB; {_REDO}.")
        try:
            digests = {info.filename[len(root) + 1:]: _sha256(archive, info) for info in infos}
        except _ZIP_ERRORS as exc:  # a CRC mismatch or a truncated member
            raise CheckpointError(f"{path} is damaged ({exc}); {_REDO} or copy it again.") from None
    return Archive(path, data, root, digests, _container(digests))


def _root(path: Path, names: list[str]) -> str:
    """The one folder every member sits in. Duplicate names are refused: zip readers disagree on which wins,
    so the member torch reads could differ from the one checked here."""
    if len(set(names)) != len(names):
        raise CheckpointError(f"{path} lists a member twice, so zip readers may disagree on its content; {_REDO}.")
    root = names[0].split("/", 1)[0] if names else ""
    for name in names:
        head, _, rest = name.partition("/")
        parts = rest.split("/")
        if not root or head != root or not rest or "\\" in name or ".." in parts or "" in parts[:-1]:
            raise CheckpointError(f"{path} has a member {name!r:.80} outside its archive folder; {_REDO}.")
    return root


def _sha256(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    digest = hashlib.sha256()
    with archive.open(info) as member:  # reading to the end checks the CRC
        for block in iter(lambda: member.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _container(names: dict[str, str]) -> str | None:
    if {"data.pkl", "constants.pkl"} <= names.keys() and any(n.startswith("code/") for n in names):
        return "torchscript"
    if "archive_format" in names and any(n.startswith("models/") for n in names):
        return "pt2"
    return None


# -- integrity ----------------------------------------------------------------------------------------------
def seal(path: Path) -> None:
    """Append the integrity record (SHA-256 of every member) to a freshly written artefact.

    Appending a stored member leaves every other member where it was: ``torch.jit.load``, ``torch.export.load``
    and libtorch's ``torch::jit::load`` read the archive as before.
    """
    archive = open_archive(path)
    if f"extra/{INTEGRITY}" in archive.digests:
        raise ValueError(f"{path} is sealed already")  # a second record would be a duplicate member
    record = {"algorithm": "sha256", "members": archive.digests}
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(f"{archive.root}/extra/{INTEGRITY}", json.dumps(record, sort_keys=True), zipfile.ZIP_STORED)


def check_integrity(archive: Archive, trust: bool = False) -> None:
    """Compare the members with the integrity record; without one, refuse unless ``trust``.

    Raises:
        CheckpointError: no record (and not ``trust``), a damaged record, or members changed, missing or added.
    """
    name, path = f"extra/{INTEGRITY}", archive.path
    if name not in archive.digests:
        if trust:
            return
        raise CheckpointError(
            f"{path} has no integrity record (it was written by an older mdanet-sdk or another tool), so damage "
            "to it cannot be detected; export it again, or pass trust=True (--trust) if you trust the file."
        )
    record = _json(path, INTEGRITY, archive.read(name))
    expected = record.get("members") if isinstance(record, dict) else None
    if (
        not isinstance(expected, dict) or record.get("algorithm") != "sha256"
        or not all(isinstance(v, str) for v in expected.values())
    ):
        raise CheckpointError(f"{path} has a damaged integrity record; {_REDO} or copy it again.")
    actual = {k: v for k, v in archive.digests.items() if k != name}
    changed = sorted(k for k in expected.keys() & actual.keys() if expected[k] != actual[k])  # no secret to time
    problems = [
        f"{label} {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
        for label, names in (
            ("changed:", changed), ("missing:", sorted(expected.keys() - actual.keys())),
            ("added:", sorted(actual.keys() - expected.keys())),
        ) if names
    ]
    if problems:
        raise CheckpointError(
            f"{path} does not match its integrity record ({'; '.join(problems)}), so it was damaged or edited "
            f"after export; {_REDO} or copy it again."
        )


# -- metadata -----------------------------------------------------------------------------------------------
def _json(path: Path, name: str, raw: bytes, limit: int = _MAX_METADATA_BYTES) -> Any:
    """Strict JSON: no NaN/Infinity, no duplicate keys (readers would disagree on which one counts)."""
    if len(raw) > limit:
        raise CheckpointError(f"{path} has a {name} of {len(raw)} bytes, far more than mdanet-sdk writes; {_REDO}.")

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError("a key appears twice")
        return dict(pairs)

    def constant(word: str) -> Any:
        raise ValueError(f"{word} is not JSON")

    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=unique, parse_constant=constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path} has a damaged {name} ({exc}); {_REDO}.") from None


def _is_int(lo: int, hi: int) -> Callable[[Any], bool]:
    # bool is an int to Python, but never a size or a count here
    return lambda v: isinstance(v, Integral) and not isinstance(v, bool) and lo <= v <= hi


def _is_real(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)


def _is_text(v: Any) -> bool:
    return isinstance(v, str) and len(v) <= 200


def _batch_ok(v: Any) -> bool:
    small = _is_int(1, 4096)
    return (
        isinstance(v, dict) and v.keys() == {"min", "opt", "max"} and all(small(x) for x in v.values())
        and v["min"] <= v["opt"] <= v["max"]
    )


def _shape_ok(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 3 and _is_int(1, 64)(v[0]) and all(_is_int(1, 1024)(s) for s in v[1:])


#: (test, what it must be) for every field of ``meta.json`` this package reads; the first five are required.
_META_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "format": (lambda v: v in FORMATS, f"one of {', '.join(FORMATS)}"),
    "precision": (lambda v: v in PRECISION_NAMES, f"one of {', '.join(PRECISION_NAMES)}"),
    "ops": (lambda v: v in ("native", "reference", "plugin"), "native, reference or plugin"),
    "input_shape": (_shape_ok, "[C, H, W] with C from 1 to 64 and H, W from 1 to 1024"),
    "batch": (_batch_ok, "{min, opt, max} with 1 <= min <= opt <= max <= 4096"),
    "num_classes": (_is_int(2, 64), "an integer from 2 to 64"),
    "modalities": (lambda v: isinstance(v, list) and all(_is_text(m) for m in v), "a list of modality names"),
    "tolerance": (lambda v: _is_real(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "package_version": (_is_text, "a string"),
    "torch_version": (_is_text, "a string"),
    "created": (_is_text, "a string"),
    "checkpoint": (lambda v: isinstance(v, dict), "a JSON object"),
}
#: ``meta["checkpoint"]["inference"]``: the post-processing the Segmenter applies unless told otherwise (the
#: same rules as for checkpoints, mdanet_sdk.train.checkpoint).
_INFERENCE_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "tta": (lambda v: isinstance(v, bool), "true or false"),
    "threshold": (lambda v: _is_real(v) and 0 < v < 1, "a number between 0 and 1 (exclusive)"),
    "min_size": (_is_int(0, 10**9), "an integer from 0 to 10^9"),
    "max_adc_ratio": (lambda v: _is_real(v) and 0 <= v <= 10, "a number from 0 (off) to 10"),
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
            "`mdanet-sdk export` (checkpoints go to Segmenter.from_checkpoint)."
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
    for key, value in inference.items():
        test, description = _INFERENCE_RULES.get(key, (lambda v: False, "one of the known settings"))
        if not test(value):
            raise CheckpointError(
                f"{path} recommends post-processing {key} = {value!r:.40}, which must be {description}; {_REDO}."
            )


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


# -- what the loaders would run ------------------------------------------------------------------------------
#: Members a torch.export archive of this package holds. Anything else is refused: ``data/aotinductor/`` holds
#: shared libraries that ``torch.export.load`` loads, legacy ``*.pt`` weights are unpickled, and so on.
_PT2_MEMBERS = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|models/model\.json"
    r"|data/weights/(model_weights_config\.json|weight_\d+)|data/constants/(model_constants_config\.json"
    r"|tensor_constant_\d+|custom_obj_\d+)|data/sample_inputs/model\.pt|extra/[^/].*"
)
#: Strings of a torch.export program that its loader compiles into Python source (node, parameter and argument
#: names): identifiers and dots only, so that none can close a string literal or add a statement.
_PLAIN = re.compile(r"[A-Za-z0-9_.]*")
#: Characters that end a line of Python source (or hide text) and have no place in a name or a stack trace.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x85\u2028\u2029]")
#: Fields no loader compiles or evaluates (repr()'d or kept as data): any text without control characters.
_FREE_TEXT = ("metadata", "as_string", "as_strings", "torch_version")
_TREESPEC_TYPES = (None, "builtins.tuple", "builtins.list", "builtins.dict", "collections.OrderedDict")
#: Functions a shape expression of torch.export may call (``sympy.srepr`` of sympy and torch sympy functions).
_SYMPY_CALLS = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Abs", "Eq", "Ne", "Lt", "Le", "Gt",
    "Ge", "And", "Or", "Not", "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan", "Equality",
    "Unequality", "IntInfinity", "NegativeIntInfinity", "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod",
    "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow",
    "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
    "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
})
_SYMPY_NAMES = re.compile(r"[a-z]+[0-9]+|true|false|True|False|oo|zoo|nan")  # shape symbols (s77, u0) and constants
_EXPR_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.Load, ast.Add, ast.Sub, ast.Mult, ast.Div,
    ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd, ast.Not, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt,
    ast.GtE, ast.And, ast.Or,
)


def check_contents(archive: Archive, fmt: str) -> None:
    """Refuse what the format's loader would run or unpickle while loading.

    Raises:
        CheckpointError: naming the entry.
    """
    if archive.kind == "torchscript":
        _check_torchscript_archive(archive)
    else:
        _check_pt2_archive(archive, fmt)


def _check_torchscript_archive(archive: Archive) -> None:
    """``torch.jit.load`` runs no Python, and its unpickler resolves only TorchScript types (a pickled
    ``os.system`` is "Unknown type name"), but it runs a class's ``__setstate__`` while loading, and custom
    classes (``torch.classes``) bring their C++ deserializers; traced networks have neither."""
    for name in archive.digests:
        if not (name.startswith("code/") and name.endswith(".py") or name in ("data.pkl", "constants.pkl")):
            continue
        content = archive.read(name)
        for needle, what in ((b"__setstate__", "a __setstate__ method, which torch.jit.load runs while loading"),
                             (b"torch.classes", "TorchScript custom classes (torch.classes)")):
            if needle in content:
                raise CheckpointError(
                    f"{archive.path} contains {what} in {name}, which no mdanet-sdk artefact has; refusing to load it."
                )


def _check_pt2_archive(archive: Archive, fmt: str) -> None:
    path = archive.path
    for name in archive.digests:
        custom = name.startswith("data/constants/custom_obj_")
        if not _PT2_MEMBERS.fullmatch(name) or (custom and fmt != "tensorrt"):
            what = "native code" if name.startswith("data/aotinductor/") else "an entry"
            raise CheckpointError(
                f"{path} holds {what} ({name}) that no mdanet-sdk {fmt} artefact has and torch.export.load would "
                "load; refusing to load it."
            )
    constants = ("tensor_constant_", "custom_obj_") if fmt == "tensorrt" else ("tensor_constant_",)
    for name, prefixes in (("data/weights/model_weights_config.json", ("weight_",)),
                           ("data/constants/model_constants_config.json", constants)):
        if name in archive.digests:
            _check_payload_config(archive, name, prefixes)
    if "models/model.json" not in archive.digests:
        raise CheckpointError(f"{path} holds no program (models/model.json); {_REDO}.")
    program = _json(path, "models/model.json", archive.read("models/model.json"), _MAX_PROGRAM_BYTES)
    if not isinstance(program, dict):
        raise CheckpointError(f"{path} has a damaged models/model.json; {_REDO}.")
    if program.get("guards_code"):
        raise CheckpointError(
            f"{path} carries guard code, which torch.export would compile and run as Python; refusing to load it."
        )
    _check_strings(path, program, "")


def _check_payload_config(archive: Archive, name: str, prefixes: tuple[str, ...]) -> None:
    """Every tensor stored as raw bytes: ``use_pickle`` entries are read with ``torch.load(weights_only=False)``
    and ``opaque_obj`` ones with ``pickle.loads``, both of which run any code the pickle names. A TensorRT
    engine is a ``custom_obj`` (a TorchScript custom class, read by the C++ unpickler)."""
    config = _json(archive.path, name, archive.read(name), _MAX_PROGRAM_BYTES)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise CheckpointError(f"{archive.path} has a damaged {name}; {_REDO}.")
    for fqn, entry in entries.items():
        where = entry.get("path_name") if isinstance(entry, dict) else None
        custom = isinstance(where, str) and where.startswith("custom_obj_") and "custom_obj_" in prefixes
        if not isinstance(entry, dict) or (entry.get("use_pickle") is not False and not custom):
            raise CheckpointError(
                f"{archive.path} stores {fqn!r:.60} as a Python pickle, which torch.export.load would unpickle, "
                "running any code it names; refusing to load it (mdanet-sdk stores raw tensors only)."
            )
        if not (isinstance(where, str) and re.fullmatch(rf"({'|'.join(prefixes)})\d+", where)):
            raise CheckpointError(f"{archive.path} lists {where!r:.60} in {name}, which it cannot hold; {_REDO}.")
    _check_strings(archive.path, config, "")


def _check_strings(path: Path, value: Any, key: str) -> None:
    """Every string of a torch.export program, by the field it is in (see ``_PLAIN``, ``_FREE_TEXT``)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if _CONTROL.search(k) if key in _FREE_TEXT else not _PLAIN.fullmatch(k):
                _refuse_string(path, key, k)
            _check_strings(path, v, key if key in _FREE_TEXT else k)
    elif isinstance(value, list):
        for v in value:
            _check_strings(path, v, key)
    elif isinstance(value, str):
        if key == "expr_str":
            _check_expression(path, value)
        elif key in ("in_spec", "out_spec"):
            _check_treespec(path, value)
        elif key in _FREE_TEXT:
            if _CONTROL.search(value):
                _refuse_string(path, key, value)
        elif not _PLAIN.fullmatch(value):
            _refuse_string(path, key, value)


def _refuse_string(path: Path, key: str, value: str) -> None:
    raise CheckpointError(
        f"{path} has a program field {key or 'name'!r} = {value!r:.80}, which is not a plain name, and torch.export "
        "would compile it into Python; refusing to load it."
    )


def _check_expression(path: Path, text: str) -> None:
    """A shape expression is handed to ``sympy.sympify``, which ``eval``s it: only calls of sympy's own
    functions on numbers, symbol names and keyword flags may pass."""
    try:
        tree = ast.parse(text, mode="eval") if len(text) <= 10_000 else None
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        tree = None
    nodes = list(ast.walk(tree)) if tree is not None else [None]
    for node in nodes:
        ok = isinstance(node, _EXPR_NODES) or (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _SYMPY_CALLS
        ) or (
            isinstance(node, ast.Name) and (node.id in _SYMPY_CALLS or _SYMPY_NAMES.fullmatch(node.id))
        ) or (
            isinstance(node, ast.keyword) and node.arg is not None and re.fullmatch(r"[a-z]+(_[a-z]+)*", node.arg)
        ) or (
            isinstance(node, ast.Constant) and (
                isinstance(node.value, (bool, float)) or node.value is None
                or (isinstance(node.value, int) and abs(node.value) <= 2**64)
                or (isinstance(node.value, str) and re.fullmatch(r"[A-Za-z0-9_.+\-]{1,64}", node.value))
            )
        )
        if not ok:
            _refuse_string(path, "expr_str", text)


def _check_treespec(path: Path, text: str) -> None:
    """The input/output structure: nested tuples, lists and dicts with plain keys, nothing else."""

    def plain_node(node: Any) -> bool:
        if not isinstance(node, dict) or not node.keys() <= {"type", "context", "children_spec", "num_leaves"}:
            return False
        context = node.get("context")
        keys = json.loads(context) if isinstance(context, str) else context
        keys_ok = keys is None or (
            isinstance(keys, list) and all(isinstance(k, str) and re.fullmatch(r"[A-Za-z_]\w*", k) for k in keys)
        )
        children = node.get("children_spec", [])
        return (
            node.get("type") in _TREESPEC_TYPES and keys_ok and isinstance(children, list)
            and all(plain_node(child) for child in children)
        )

    try:
        spec = json.loads(text)
        ok = isinstance(spec, list) and len(spec) == 2 and plain_node(spec[1])
    except (ValueError, RecursionError):
        ok = False
    if not ok:
        _refuse_string(path, "in_spec", text)


def loadable(archive: Archive) -> io.BytesIO:
    """The bytes torch loads: those just checked (never the file again, which could have changed since).

    A ``.pt2`` goes without its sample inputs: they are a pickle that ``torch.export.load`` reads with the
    unrestricted unpickler when the restricted one fails, and they switch on the guard code of ``.module()``,
    which compiles the input structure into Python. Nothing else needs them.
    """
    if archive.kind != "pt2" or archive.digests.get(_SAMPLE_INPUTS, _EMPTY) == _EMPTY:  # ours hold none
        return io.BytesIO(archive.data)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive.data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            empty = info.filename == f"{archive.root}/{_SAMPLE_INPUTS}"
            dst.writestr(info.filename, b"" if empty else src.read(info))
    out.seek(0)
    return out


# -- operators ----------------------------------------------------------------------------------------------
#: ATen operators that reach outside the tensors: files, the console, process-wide state, threads, streams.
_ATEN_DENIED = frozenset({
    "aten::save", "aten::from_file", "aten::_print", "aten::warn", "aten::manual_seed", "aten::seed",
    "aten::set_grad_enabled", "aten::wait", "aten::record_stream", "aten::_cufft_set_plan_cache_max_size",
    "aten::_cufft_clear_plan_cache",
})
#: The structural ``prim`` operators (constants, attributes, containers, control flow, shape and type queries).
#: Not allowed, among others: ``prim::Print`` (a network has nothing to say on the console), ``prim::PythonOp``
#: (calls Python), ``prim::CallFunction`` / ``prim::CallMethod`` left after inlining (dynamic dispatch),
#: ``prim::fork``, ``prim::rpc_*``, ``prim::Enter`` / ``prim::Exit``, ``prim::SetAttr``.
_PRIM_ALLOWED = frozenset({
    "prim::Constant", "prim::GetAttr", "prim::ListConstruct", "prim::ListUnpack", "prim::TupleConstruct",
    "prim::TupleUnpack", "prim::TupleIndex", "prim::DictConstruct", "prim::If", "prim::Loop", "prim::NumToTensor",
    "prim::device", "prim::dtype", "prim::layout", "prim::Uninitialized", "prim::unchecked_cast",
    "prim::RaiseException", "prim::min", "prim::max", "prim::abs", "prim::isinstance", "prim::is_cuda",
    "prim::requires_grad", "prim::data", "prim::shape",
})
_MDANET_ALLOWED = frozenset({"mdanet::dasc_gate", "mdanet::graph_conv"})
#: Python functions a torch.export graph calls for tuple outputs and symbolic sizes.
_PYTHON_ALLOWED = (
    operator.getitem, operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv, operator.mod,
    operator.pow, operator.neg, operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
    operator.and_, operator.or_, torch.sym_int, torch.sym_float, torch.sym_max, torch.sym_min, torch.sym_not,
    torch.sym_ite,
)


def _operator_allowed(name: str, fmt: str) -> bool:
    namespace = name.split("::", 1)[0]
    return name not in _ATEN_DENIED and (
        namespace == "aten" or name in _PRIM_ALLOWED or name in _MDANET_ALLOWED
        or (fmt == "tensorrt" and namespace == "tensorrt")  # tensorrt::execute_engine runs the engine
    )


def _refuse_operators(path: Path, found: set[str]) -> None:
    if found:
        names = ", ".join(sorted(found)[:5]) + (" ..." if len(found) > 5 else "")
        raise CheckpointError(
            f"{path} calls {names}, outside the operators a segmentation network uses (they can touch files, the "
            "console, the process or Python); refusing to run it."
        )


def check_torchscript_ops(path: Path, module: torch.jit.ScriptModule) -> None:
    """Every operator of every method and hook of every submodule, with calls inlined.

    Raises:
        CheckpointError: an operator outside the allowlist.
    """
    found: set[str] = set()
    for graph in _script_graphs(module):
        graph = graph.copy()
        torch._C._jit_pass_inline(graph)
        found.update(kind for kind in _node_kinds(graph.block()) if not _operator_allowed(kind, "torchscript"))
    _refuse_operators(path, found)


def _script_graphs(module: torch.jit.ScriptModule) -> Iterator[torch._C.Graph]:
    for _, sub in module.named_modules():
        scripted = sub._c
        for name in scripted._method_names():
            yield scripted._get_method(name).graph
        for hook in (*scripted._get_forward_pre_hooks(), *scripted._get_forward_hooks()):
            yield hook.graph


def _node_kinds(block: torch._C.Block) -> Iterator[str]:
    for node in block.nodes():
        yield node.kind()
        for inner in node.blocks():
            yield from _node_kinds(inner)


def check_graph_ops(path: Path, module: torch.nn.Module, fmt: str) -> None:
    """Every node of every ``torch.fx`` graph in ``module`` (an ExportedProgram's graph module or ``.module()``).

    Raises:
        CheckpointError: a call of anything but an allowed operator or one of ``_PYTHON_ALLOWED``.
    """
    found: set[str] = set()
    for _, sub in module.named_modules():
        graph = getattr(sub, "graph", None)
        if not isinstance(graph, torch.fx.Graph):
            continue
        for node in graph.nodes:
            target = node.target
            if node.op in ("placeholder", "get_attr", "output"):
                continue
            if node.op == "call_function" and any(target is op for op in _PYTHON_ALLOWED):
                continue
            if node.op == "call_function" and isinstance(target, torch._ops.OpOverload):
                if _operator_allowed(target._schema.name, fmt):
                    continue
                found.add(target._schema.name)
            else:
                found.add(f"{node.op} {getattr(target, '__name__', target)!s:.60}")
    _refuse_operators(path, found)
