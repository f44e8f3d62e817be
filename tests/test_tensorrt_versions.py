"""The TensorRT path across Torch-TensorRT releases, on CPU: fake ``torch_tensorrt`` modules stand in for each
release's API, and an emulation of the 2.13 plugin shape-function generator runs on the real fake kernels."""

from __future__ import annotations

import inspect
import itertools
import sys
import types
from typing import cast

import pytest
import sympy
import torch
from sympy import lambdify
from torch._dynamo.source import LocalSource
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv

from mdanet_sdk import ops
from mdanet_sdk.errors import BackendUnavailableError, InputError
from mdanet_sdk.export import tensorrt as trt

NATIVE = ops.native_available()


def _install(monkeypatch, version: str, *, plugins: dict | None = None, compile_fn=None) -> types.ModuleType:
    """Put a fake ``torch_tensorrt`` of ``version`` (and ``tensorrt``) into ``sys.modules`` and pretend a GPU.

    ``plugins``: the attributes of ``torch_tensorrt.dynamo.conversion.plugins``; ``None``: no such package
    (2.5 has none). ``compile_fn``: ``torch_tensorrt.dynamo.compile``.
    """
    root = types.ModuleType("torch_tensorrt")
    dynamo = types.ModuleType("torch_tensorrt.dynamo")
    conversion = types.ModuleType("torch_tensorrt.dynamo.conversion")
    setattr(root, "__version__", version)
    setattr(root, "dynamo", dynamo)
    setattr(dynamo, "compile", compile_fn or (lambda exported_program, **kwargs: None))
    setattr(dynamo, "conversion", conversion)
    modules = {
        "tensorrt": types.ModuleType("tensorrt"),
        "torch_tensorrt": root,
        "torch_tensorrt.dynamo": dynamo,
        "torch_tensorrt.dynamo.conversion": conversion,
    }
    if plugins is not None:
        package = types.ModuleType("torch_tensorrt.dynamo.conversion.plugins")
        for name, value in plugins.items():
            setattr(package, name, value)
        setattr(conversion, "plugins", package)
        modules[package.__name__] = package
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    if plugins is None:  # a blocked import, as for a package that does not exist
        monkeypatch.setitem(sys.modules, "torch_tensorrt.dynamo.conversion.plugins", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(ops, "implementation", lambda impl="auto", device=None: "native")
    trt.register_trt_plugins.cache_clear()
    return root


def _recorder(calls: list) -> dict:
    return {
        "generate_plugin": lambda name: calls.append(("plugin", name)),
        "generate_plugin_converter": lambda name, **kw: calls.append(("converter", name, tuple(sorted(kw.items())))),
    }


@pytest.fixture(autouse=True)
def _fresh_registration():
    yield
    trt.register_trt_plugins.cache_clear()  # no fake registration leaks into other tests


# -- T1: the version ranges -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("version", "decomposition", "plugin"),
    [
        ("2.4.1", False, False),
        ("2.5.0+cu124", True, False),
        ("2.6.0", True, False),
        ("2.7.0", True, False),
        ("2.12.0", True, False),
        ("2.13.0+cu130", True, True),
        ("2.14.0.dev20260101", True, True),
        ("3.0.0", True, True),
        ("unknown", False, False),
    ],
)
def test_version_decides_each_path(monkeypatch, version, decomposition, plugin):
    _install(monkeypatch, version, plugins=_recorder([]))
    for plugins, works in ((False, decomposition), (True, plugin)):
        reason = trt.tensorrt_unavailable_reason(plugins)
        if works:
            assert reason is None
        else:
            needed = "2.13" if plugins else "2.5"
            assert f">= {needed}, and {version} is installed" in reason and "\n" not in reason
            assert ("--ops reference" in reason) == plugins


@pytest.mark.parametrize("version", ["2.5.0", "2.6.1", "2.12.0"])
def test_old_release_refuses_plugins_with_one_error_not_an_import_error(monkeypatch, version):
    # 2.5 has no plugins package and 2.6 only the converter generator: importing generate_plugin would raise
    # ImportError; the version check says what to install before any import is tried.
    plugins = None if version.startswith("2.5") else {"generate_plugin_converter": lambda *a, **k: None}
    _install(monkeypatch, version, plugins=plugins)
    with pytest.raises(BackendUnavailableError, match=rf"need Torch-TensorRT >= 2\.13, and {version} is installed"):
        trt.register_trt_plugins()


def test_new_release_without_generator_is_refused_cleanly(monkeypatch):
    _install(monkeypatch, "2.13.0", plugins={"generate_plugin_converter": lambda *a, **k: None})
    with pytest.raises(BackendUnavailableError, match="has no plugin generator") as info:
        trt.register_trt_plugins()
    assert isinstance(info.value.__cause__, ImportError)
    _install(monkeypatch, "2.13.0", plugins=None)  # no plugins package at all
    with pytest.raises(BackendUnavailableError, match="has no plugin generator"):
        trt.register_trt_plugins()


def test_each_op_is_registered_once_under_its_own_name(monkeypatch):
    calls: list = []
    _install(monkeypatch, "2.13.0", plugins=_recorder(calls))
    trt.register_trt_plugins()
    trt.register_trt_plugins()  # idempotent: a second call registers nothing
    flags = (("requires_output_allocator", False), ("supports_dynamic_shapes", True))
    assert calls == [entry for name in ops.QUALIFIED_OPS for entry in (("plugin", name), ("converter", name, flags))]
    assert set(ops.QUALIFIED_OPS) == {"mdanet::dasc_gate", "mdanet::graph_conv"}


# -- T3: bf16 with plugins ------------------------------------------------------------------------------------
def test_bf16_plugins_refused_before_anything_else(monkeypatch):
    calls: list = []
    _install(monkeypatch, "2.13.0", plugins=_recorder(calls))
    with pytest.raises(InputError, match="bf16 needs --ops reference"):
        trt.check_tensorrt_request("bf16", plugins=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # refused on the combination, not the machine
    with pytest.raises(InputError, match="bf16"):
        trt.check_tensorrt_request("bf16", plugins=True)
    with pytest.raises(InputError, match="bf16"):
        trt.write_tensorrt(torch.nn.Identity(), torch.zeros(1, 2, 16, 16, dtype=torch.bfloat16), None, {}, None, True)
    assert calls == []  # no plugin was registered, nothing captured
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    trt.check_tensorrt_request("bf16", plugins=False)  # the decomposition takes bf16
    trt.check_tensorrt_request("fp16", plugins=True)


# -- T4: compile options from the installed signature ----------------------------------------------------------
def _compile_2_5(exported_program, inputs=None, *, arg_inputs=None, enabled_precisions=None, min_block_size=5):
    """2.5: no explicit typing; precisions spelled out."""


def _compile_2_12(
    exported_program, *, arg_inputs=None, enabled_precisions=None, use_explicit_typing=False, min_block_size=5
):
    """2.6 - 2.12: both settings exist; explicit typing keeps the program's dtypes."""


def _compile_2_13(exported_program, *, arg_inputs=None, min_block_size=5, **kwargs):
    """2.13: both settings removed (strongly typed networks only); other keywords accepted and ignored."""


@pytest.mark.parametrize(
    ("compile_fn", "expected"),
    [
        (_compile_2_5, {"enabled_precisions": {torch.float16}}),
        (_compile_2_12, {"use_explicit_typing": True}),
        (_compile_2_13, {}),
    ],
)
def test_compile_options_match_the_installed_signature(compile_fn, expected):
    options = trt.compile_options(compile_fn, "spec", torch.float16)
    assert options == {"arg_inputs": ["spec"], "min_block_size": 1, **expected}
    inspect.signature(compile_fn).bind("program", **options)  # every option is one the signature names


# -- T2: the plugin shape functions, as Torch-TensorRT 2.13 generates them -------------------------------------
def _shape_functions(op, ranks: list[int], *, clean_names: bool) -> list:
    """Emulate ``_generic_plugin_desc`` of Torch-TensorRT's ``_generate_plugin``: run ``op``'s fake kernel on
    inputs of rank ``ranks`` whose every dim is its own dynamic symbol, and lambdify each output dim over the
    input dims. ``clean_names``: name the arguments ``_a0, _a1, ...`` (2.13); else after the symbols (<= 2.12)."""
    env = ShapeEnv()
    dims = [
        [
            env.create_symintnode(
                env.create_symbol(5, source=LocalSource(f"{t}_{d}"), dynamic_dim=DimDynamic.DYNAMIC),
                hint=5,
                source=LocalSource(f"{t}_{d}"),
            )
            for d in range(rank)
        ]
        for t, rank in enumerate(ranks)
    ]
    with FakeTensorMode(shape_env=env):
        out = op(*[torch.randn(shape) for shape in dims])
    # .node.expr applies the replacements the fake kernel's torch._check equalities recorded
    inputs = list(itertools.chain.from_iterable([cast(torch.SymInt, s).node.expr for s in shape] for shape in dims))
    outputs = [dim.node.expr if isinstance(dim, torch.SymInt) else sympy.Integer(dim) for dim in out.shape]
    if not clean_names:
        return [lambdify(tuple(inputs), expr, "math") for expr in outputs]
    names = [sympy.Symbol(f"_a{j}") for j in range(len(inputs))]
    rename = dict(zip(inputs, names))
    return [lambdify(tuple(names), expr.subs(rename), "math") for expr in outputs]


def _op_inputs(name: str, batch: int, rng: torch.Generator) -> list[torch.Tensor]:
    """Real inputs of ``mdanet::<name>`` at a shape where every dim differs from the 5 the generator samples."""
    if name == "dasc_gate":
        c, c_de, c_i, h, w = 6, 3, 4, 7, 9
        shapes = [(batch, c, h, w), (batch, c, h, w), (batch, c_de, h, w), (c_i, c), (c_i, c_de), (c_i,), (c_i,), (1,)]
    else:
        m, e = 11, 8
        shapes = [(batch, m, e), (m, m), (m,), (e, e), (e,)]
    return [torch.randn(shape, generator=rng) for shape in shapes]


@pytest.mark.skipif(not NATIVE, reason="the mdanet ops (and their fake kernels) are not built")
def test_generated_shape_functions_give_each_ops_output_shape():
    rng = torch.Generator().manual_seed(0)
    mdanet = torch.ops.mdanet
    # Both ops' functions generated first, then used: as in one process registering both plugins.
    generated = {
        name: _shape_functions(getattr(mdanet, name), [t.dim() for t in _op_inputs(name, 1, rng)], clean_names=True)
        for name in ("dasc_gate", "graph_conv")
    }
    for name, functions in generated.items():
        for batch in (1, 3, 16):
            inputs = _op_inputs(name, batch, rng)
            expected = tuple(getattr(mdanet, name)(*inputs).shape)
            dims = [d for t in inputs for d in t.shape]
            assert tuple(f(*dims) for f in functions) == expected


@pytest.mark.skipif(not NATIVE, reason="the mdanet ops (and their fake kernels) are not built")
@pytest.mark.parametrize("name", ["dasc_gate", "graph_conv"])
def test_pre_2_13_generator_trips_on_our_fake_kernels(name):
    # Why PLUGIN_MIN is 2.13: naming the arguments after the symbols repeats a name, because the fake kernels'
    # shape checks make torch unify equal dims.
    ranks = [t.dim() for t in _op_inputs(name, 1, torch.Generator().manual_seed(0))]
    with pytest.raises(SyntaxError, match="duplicate argument"):
        _shape_functions(getattr(torch.ops.mdanet, name), ranks, clean_names=False)


def test_cli_refuses_bf16_plugins_in_one_line_before_reading_the_checkpoint(tmp_path) -> None:
    """On any machine, GPU or not: the checkpoint named does not even exist, yet the combination is what is refused."""
    from typer.testing import CliRunner

    from mdanet_sdk.cli import app

    args = ["export", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "m.pt2"), "--format", "tensorrt"]
    result = CliRunner().invoke(app, [*args, "--precision", "bf16", "--ops", "native"])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code != 0 and len(errors) == 1 and "--ops reference" in errors[0]
    assert not (tmp_path / "m.pt2").exists()
