"""The operators an artefact may call, checked after torch loads it and before anything runs.

:func:`check_torchscript_ops` walks every method and hook of every submodule of a TorchScript module (calls
inlined) and :func:`check_graph_ops` every node of every ``torch.fx`` graph of an ExportedProgram; both refuse
any operator outside an allowlist: ATen without its file, console and process-state operators, the structural
``prim`` operators, the two ``mdanet::`` ops (:data:`POLICY_FILE`, which libmdanet compiles in too), ``tensorrt::``
ops in TensorRT artefacts, and for torch.export graphs the few Python functions used for tuple outputs and
symbolic sizes.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from pathlib import Path

import torch

from mdanet_sdk.errors import CheckpointError

#: The operator policy of TorchScript artefacts, shared with libmdanet (the C API compiles the same file in).
POLICY_FILE = Path(__file__).with_name("torchscript_operators.txt")


def _read_policy(path: Path) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """``(namespaces, denied, allowed)`` of the policy file (its header says the rules)."""
    rules: dict[str, set[str]] = {"namespace": set(), "deny": set(), "allow": set()}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 2 or words[0] not in rules:
            raise RuntimeError(f"{path}:{number}: expected 'namespace NS', 'deny OP' or 'allow OP', got {line!r}")
        rules[words[0]].add(words[1])
    return frozenset(rules["namespace"]), frozenset(rules["deny"]), frozenset(rules["allow"])


_NAMESPACES, _DENIED, _ALLOWED = _read_policy(POLICY_FILE)
#: Python functions a torch.export graph calls for tuple outputs and symbolic sizes.
_PYTHON_ALLOWED = (
    operator.getitem,
    operator.add,
    operator.sub,
    operator.mul,
    operator.floordiv,
    operator.truediv,
    operator.mod,
    operator.pow,
    operator.neg,
    operator.eq,
    operator.ne,
    operator.lt,
    operator.le,
    operator.gt,
    operator.ge,
    operator.and_,
    operator.or_,
    torch.sym_int,
    torch.sym_float,
    torch.sym_max,
    torch.sym_min,
    torch.sym_not,
    torch.sym_ite,
)


def _operator_allowed(name: str, fmt: str) -> bool:
    namespace = name.split("::", 1)[0]
    return name not in _DENIED and (
        namespace in _NAMESPACES
        or name in _ALLOWED
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
