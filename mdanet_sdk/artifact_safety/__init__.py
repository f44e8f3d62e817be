"""Loading a deployment artefact without letting it run code or fail quietly.

torch's loaders are not built for files from strangers. Reading a ``.pt2``, ``torch.export.load`` unpickles
every weight or constant its config marks ``use_pickle`` (and sample inputs it cannot read otherwise) with
the unrestricted pickle, evaluates the shape expressions of the program with ``sympy.sympify`` (``eval``),
compiles parameter names from the file into the Python source of a ``GraphModule``, and ``exec``s the guard
code stored with it. ``torch.jit.load`` runs a class's TorchScript ``__setstate__`` while loading, and any
TorchScript method may call operators that write files (``aten::save``). Everything here happens before or
right after those loaders run, one job per module:

* :mod:`~mdanet_sdk.artifact_safety.archive`: :func:`open_archive` reads the file once (torch then gets exactly
  those bytes, see :func:`loadable`), refuses duplicate or stray member names and reads every member, which
  checks its CRC; :func:`check_integrity` compares the members with the record :func:`seal` appends to every
  artefact at export (the SHA-256 of every other member). It detects damage, not forgery: whoever can edit the
  file can rewrite the record too;
* :mod:`~mdanet_sdk.artifact_safety.metadata`: :func:`describe` validates ``mdanet/meta.json``, the model and
  preprocessing configs field by field, and the format tag against the container;
* :mod:`~mdanet_sdk.artifact_safety.contents`: :func:`check_contents` refuses what would run code while loading:
  pickled entries, AOTInductor libraries, shape expressions or names that are not plain, guard code,
  TorchScript ``__setstate__`` and custom classes;
* :mod:`~mdanet_sdk.artifact_safety.operators`: :func:`check_torchscript_ops` / :func:`check_graph_ops` refuse,
  after loading and before anything runs, every operator outside an allowlist: ATen without its file, console
  and process-state operators, the structural ``prim`` operators, the two ``mdanet::`` ops (and ``tensorrt::``
  ops in TensorRT artefacts).
"""

from __future__ import annotations

from mdanet_sdk.artifact_safety.archive import INTEGRITY, Archive, check_integrity, open_archive, seal
from mdanet_sdk.artifact_safety.contents import check_contents, loadable
from mdanet_sdk.artifact_safety.metadata import (
    ARTIFACT_VERSION,
    CONFIG,
    FORMATS,
    MAX_BATCH,
    MAX_SIDE,
    META,
    PRECISION_NAMES,
    PREPROCESS,
    describe,
)
from mdanet_sdk.artifact_safety.operators import check_graph_ops, check_torchscript_ops

__all__ = [
    "ARTIFACT_VERSION",
    "FORMATS",
    "MAX_BATCH",
    "MAX_SIDE",
    "PRECISION_NAMES",
    "META",
    "CONFIG",
    "PREPROCESS",
    "INTEGRITY",
    "Archive",
    "open_archive",
    "seal",
    "check_integrity",
    "describe",
    "check_contents",
    "loadable",
    "check_torchscript_ops",
    "check_graph_ops",
]
