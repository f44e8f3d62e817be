"""What torch's loaders would run or unpickle while loading an artefact, refused before they see it.

:func:`check_contents` refuses, for a TorchScript archive, ``__setstate__`` methods and custom classes, and for a
torch.export archive, any member outside the known layout (AOTInductor libraries, legacy pickles), pickled
weights and constants, guard code, and program strings that are not plain: names the loader compiles into
Python, shape expressions ``sympy.sympify`` would ``eval`` (only sympy calls on numbers and symbols pass) and
input/output structures other than nested tuples, lists and dicts. :func:`loadable` gives torch exactly the bytes
checked, without the sample inputs of a ``.pt2``.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

from mdanet_sdk.artifact_safety.archive import _REDO, Archive, _json
from mdanet_sdk.errors import CheckpointError

_MAX_PROGRAM_BYTES = 256 << 20
_SAMPLE_INPUTS = "data/sample_inputs/model.pt"
_EMPTY = hashlib.sha256(b"").hexdigest()


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
_SYMPY_CALLS = frozenset(
    {
        "Symbol",
        "Integer",
        "Rational",
        "Float",
        "Add",
        "Mul",
        "Pow",
        "Max",
        "Min",
        "Abs",
        "Eq",
        "Ne",
        "Lt",
        "Le",
        "Gt",
        "Ge",
        "And",
        "Or",
        "Not",
        "StrictLessThan",
        "StrictGreaterThan",
        "LessThan",
        "GreaterThan",
        "Equality",
        "Unequality",
        "IntInfinity",
        "NegativeIntInfinity",
        "FloorDiv",
        "ModularIndexing",
        "Where",
        "PythonMod",
        "Mod",
        "CleanDiv",
        "CeilToInt",
        "FloorToInt",
        "CeilDiv",
        "LShift",
        "RShift",
        "PowByNatural",
        "FloatPow",
        "FloatTrueDiv",
        "IntTrueDiv",
        "IsNonOverlappingAndDenseIndicator",
        "TruncToFloat",
        "TruncToInt",
        "RoundToInt",
        "RoundDecimal",
        "ToFloat",
        "Identity",
    }
)
_SYMPY_NAMES = re.compile(r"[a-z]+[0-9]+|true|false|True|False|oo|zoo|nan")  # shape symbols (s77, u0) and constants
_EXPR_NODES = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.Compare,
    ast.BoolOp,
    ast.Load,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.FloorDiv,
    ast.Mod,
    ast.Pow,
    ast.USub,
    ast.UAdd,
    ast.Not,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.And,
    ast.Or,
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
        for needle, what in (
            (b"__setstate__", "a __setstate__ method, which torch.jit.load runs while loading"),
            (b"torch.classes", "TorchScript custom classes (torch.classes)"),
        ):
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
    for name, prefixes in (
        ("data/weights/model_weights_config.json", ("weight_",)),
        ("data/constants/model_constants_config.json", constants),
    ):
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
        ok = (
            isinstance(node, _EXPR_NODES)
            or (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _SYMPY_CALLS)
            or (isinstance(node, ast.Name) and (node.id in _SYMPY_CALLS or _SYMPY_NAMES.fullmatch(node.id)))
            or (isinstance(node, ast.keyword) and node.arg is not None and re.fullmatch(r"[a-z]+(_[a-z]+)*", node.arg))
            or (
                isinstance(node, ast.Constant)
                and (
                    isinstance(node.value, (bool, float))
                    or node.value is None
                    or (isinstance(node.value, int) and abs(node.value) <= 2**64)
                    or (isinstance(node.value, str) and re.fullmatch(r"[A-Za-z0-9_.+\-]{1,64}", node.value))
                )
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
            node.get("type") in _TREESPEC_TYPES
            and keys_ok
            and isinstance(children, list)
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
