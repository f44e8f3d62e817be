"""mdanet_sdk.ops: the native ops held to the reference (values, gradients, opcheck), dispatch, tracing."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from mdanet_sdk import ops
from mdanet_sdk.errors import BackendUnavailableError, InputError
from mdanet_sdk.ops import native, reference

needs_native = pytest.mark.skipif(not ops.native_available(), reason="native ops not built")
needs_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and native.cuda_built()), reason="needs a GPU and the CUDA kernels"
)

# DASC at the paper preset's four skip levels (C, H=W); C_i = C/2, C_de = C.
DASC_LEVELS = [(64, 128), (128, 64), (256, 32), (512, 16)]
# graph_conv at the paper preset's bottleneck: channel embedding (M = 2·256 nodes, E = 512) and space
# embedding (M = 2·16² nodes, E = 1024 channels).
GRAPHS = [(512, 512), (512, 1024)]


def _uniform(*shape: int, fan_in: int, **kw) -> Tensor:
    """Like a conv layer's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1 / math.sqrt(fan_in)
    return torch.empty(*shape, **kw).uniform_(-bound, bound)


def _channels_last(args: list[torch.Tensor]) -> list[torch.Tensor]:
    return [a.contiguous(memory_format=torch.channels_last) if a.dim() == 4 else a for a in args]


def dasc_args(
    b: int,
    c: int,
    h: int,
    w: int,
    c_de: int | None = None,
    c_i: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    seed: int = 0,
) -> list[Tensor]:
    """f_m1, f_m2 (b, c, h, w), f_de (b, c_de, h, w) and the gate's weights, conv-initialised."""
    torch.manual_seed(seed)
    c_de, c_i = c_de or c, c_i or max(1, c // 2)
    kw = {"dtype": dtype, "device": device}
    return [
        torch.randn(b, c, h, w, **kw),
        torch.randn(b, c, h, w, **kw),
        torch.randn(b, c_de, h, w, **kw),
        _uniform(c_i, c, fan_in=c, **kw),
        _uniform(c_i, c_de, fan_in=c_de, **kw),
        _uniform(c_i, fan_in=c, **kw),
        _uniform(c_i, fan_in=c_i, **kw),
        _uniform(1, fan_in=c_i, **kw),
    ]


def graph_args(
    b: int, m: int, e: int, dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0
) -> list[Tensor]:
    """g (b, m, e), a (m, m), a_bias (m,), w (e, e), w_bias (e,), Conv1d-initialised."""
    torch.manual_seed(seed)
    kw = {"dtype": dtype, "device": device}
    return [
        torch.randn(b, m, e, **kw),
        _uniform(m, m, fan_in=m, **kw),
        _uniform(m, fan_in=m, **kw),
        _uniform(e, e, fan_in=e, **kw),
        _uniform(e, fan_in=e, **kw),
    ]


def _grads(fn, args: list[Tensor], seed: int = 1, keep: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
    """``fn(*args)`` and the input gradients for a seeded upstream gradient (0 where ``keep`` is False)."""
    leaves = [a.detach().clone().requires_grad_() for a in args]
    out = fn(*leaves)
    torch.manual_seed(seed)
    # drawn in float32 and cast: the same upstream gradient for a float64 reference as for the op under test
    upstream = torch.randn(out.shape, device=out.device)
    out.backward((upstream if keep is None else upstream * keep).to(out.dtype))
    return out.detach(), [leaf.grad for leaf in leaves]


# ---------------------------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------------------------
def test_implementation_resolution():
    assert ops.implementation("reference") == "reference"
    assert ops.implementation("auto") == ("native" if ops.native_available() else "reference")
    with pytest.raises(InputError, match="one of auto, native, reference"):
        ops.implementation("fast")


def test_without_native_auto_falls_back_and_native_raises(monkeypatch):
    monkeypatch.setattr(native, "available", lambda: False)
    monkeypatch.setattr(native, "load_error", lambda: "ImportError: no _C")
    assert ops.implementation("auto") == "reference"
    assert ops.op_backends() == {"dasc_gate": "reference", "graph_conv": "reference"}
    with pytest.raises(BackendUnavailableError, match="not built"):
        ops.implementation("native")
    with pytest.raises(BackendUnavailableError):
        ops.graph_conv(*graph_args(1, 4, 3), impl="native")
    # "auto" still computes, through the reference.
    args = graph_args(1, 4, 3)
    torch.testing.assert_close(ops.graph_conv(*args), reference.graph_conv(*args), rtol=0, atol=0)


@needs_native
def test_cuda_tensors_without_cuda_kernels_fall_back(monkeypatch):
    monkeypatch.setattr(native, "cuda_built", lambda: False)
    assert ops.implementation("auto", "cuda") == "reference"
    assert ops.op_backends("cuda") == {"dasc_gate": "reference", "graph_conv": "reference"}
    with pytest.raises(BackendUnavailableError, match="without CUDA"):
        ops.implementation("native", "cuda:0")


@needs_native
def test_native_dispatch_calls_the_custom_op(monkeypatch):
    calls = []
    real = torch.ops.mdanet.dasc_gate

    class Spy:
        def dasc_gate(self, *args):
            calls.append(len(args))
            return real(*args)

    monkeypatch.setattr(torch.ops, "mdanet", Spy())
    ops.dasc_gate(*dasc_args(1, 4, 3, 3), impl="native")
    ops.dasc_gate(*dasc_args(1, 4, 3, 3), impl="reference")
    assert calls == [8]
    assert ops.op_backends() == {"dasc_gate": "native-cpu", "graph_conv": "native-cpu"}


# ---------------------------------------------------------------------------------------------------------------
# Native CPU against the reference at the paper's shapes (fp32, 1e-5)
# ---------------------------------------------------------------------------------------------------------------
@needs_native
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize(("channels", "size"), DASC_LEVELS)
def test_dasc_gate_matches_reference_at_paper_levels(channels, size, batch):
    args = dasc_args(batch, channels, size, size)
    out = ops.dasc_gate(*args, impl="native")
    assert out.shape == (batch, channels, size, size) and out.dtype == torch.float32
    torch.testing.assert_close(out, reference.dasc_gate(*args), rtol=1e-5, atol=1e-5)
    # The channels_last kernel (the CPU inference layout) at the same shapes.
    out_cl = ops.dasc_gate(*_channels_last(args), impl="native")
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out_cl, reference.dasc_gate(*args), rtol=1e-5, atol=1e-5)


@needs_native
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize(("nodes", "features"), GRAPHS)
def test_graph_conv_matches_reference_at_bottleneck_graphs(nodes, features, batch):
    args = graph_args(batch, nodes, features)
    out = ops.graph_conv(*args, impl="native")
    expected = reference.graph_conv(*args)
    assert out.shape == (batch, nodes, features)
    assert 0.2 < (expected > 0).float().mean() < 0.8  # the ReLU is exercised on both sides
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@needs_native
@pytest.mark.parametrize(("shape", "c_de", "c_i"), [((2, 3, 5, 7), 6, 4), ((1, 1, 1, 1), 1, 1), ((3, 8, 33, 1), 2, 5)])
def test_dasc_gate_odd_shapes(shape, c_de, c_i):
    args = dasc_args(*shape, c_de=c_de, c_i=c_i)
    torch.testing.assert_close(ops.dasc_gate(*args, impl="native"), reference.dasc_gate(*args), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        ops.dasc_gate(*_channels_last(args), impl="native"), reference.dasc_gate(*args), rtol=1e-5, atol=1e-5
    )


@needs_native
def test_non_contiguous_inputs():
    args = dasc_args(2, 16, 9, 11)
    cl = [a.to(memory_format=torch.channels_last) if a.dim() == 4 else a for a in args]
    out = ops.dasc_gate(*cl, impl="native")
    torch.testing.assert_close(out, reference.dasc_gate(*args), rtol=1e-5, atol=1e-5)
    g, a, a_bias, w, w_bias = graph_args(2, 12, 10)
    gt = g.transpose(1, 2).contiguous().transpose(1, 2)
    torch.testing.assert_close(
        ops.graph_conv(gt, a.t().contiguous().t(), a_bias, w, w_bias, impl="native"),
        reference.graph_conv(g, a, a_bias, w, w_bias),
        rtol=1e-5,
        atol=1e-5,
    )


@needs_native
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_cpu(dtype):
    args = dasc_args(2, 32, 16, 16, dtype=dtype)
    expected = reference.dasc_gate(*[a.float() for a in args])
    for layout_args in (args, _channels_last(args)):
        out = ops.dasc_gate(*layout_args, impl="native")
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)
    g_args = graph_args(2, 32, 48, dtype=dtype)
    out = ops.graph_conv(*g_args, impl="native")
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), reference.graph_conv(*[a.float() for a in g_args]), rtol=3e-2, atol=3e-2)


@needs_native
def test_mixed_feature_dtypes_are_promoted():
    args = dasc_args(2, 8, 4, 4)
    mixed = [args[0].bfloat16(), *args[1:]]
    out = ops.dasc_gate(*mixed, impl="native")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference.dasc_gate(args[0].bfloat16().float(), *args[1:]), rtol=1e-5, atol=1e-5)


@needs_native
def test_empty_batch():
    assert ops.dasc_gate(*dasc_args(0, 4, 3, 3), impl="native").shape == (0, 4, 3, 3)
    assert ops.graph_conv(*graph_args(0, 5, 6), impl="native").shape == (0, 5, 6)


@needs_native
@pytest.mark.parametrize(
    ("index", "bad", "message"),
    [
        (1, torch.zeros(2, 8, 5, 4), "f_m2 must have the shape of f_m1"),
        (2, torch.zeros(2, 6, 4, 5), "f_de must be"),
        (3, torch.zeros(4, 7), "w_d must be"),
        (7, torch.zeros(2), "b_att must hold one value"),
    ],
)
def test_dasc_gate_rejects_bad_shapes(index, bad, message):
    args = dasc_args(2, 8, 5, 5, c_de=6, c_i=4)
    args[index] = bad
    with pytest.raises(RuntimeError, match=message):
        torch.ops.mdanet.dasc_gate(*args)


@needs_native
def test_graph_conv_rejects_bad_shapes():
    g, a, a_bias, w, w_bias = graph_args(2, 6, 4)
    with pytest.raises(RuntimeError, match="a must be"):
        torch.ops.mdanet.graph_conv(g, a[:5, :5], a_bias, w, w_bias)
    with pytest.raises(RuntimeError, match="floating point"):
        torch.ops.mdanet.graph_conv(g.int(), a, a_bias, w, w_bias)


# ---------------------------------------------------------------------------------------------------------------
# Gradients, opcheck, tracing
# ---------------------------------------------------------------------------------------------------------------
@needs_native
def test_dasc_gate_gradcheck_double():
    args = [a.requires_grad_() for a in dasc_args(2, 4, 3, 5, c_de=3, c_i=2, dtype=torch.float64)]
    assert torch.autograd.gradcheck(lambda *x: ops.dasc_gate(*x, impl="native"), args)


@needs_native
def test_graph_conv_gradcheck_double():
    g, a, a_bias, w, w_bias = graph_args(2, 5, 4, dtype=torch.float64)
    g = g + 0.05 * torch.sign(g)  # keep the ReLU's inputs away from its kink for finite differences
    args = [t.requires_grad_() for t in (g, a, a_bias, w, w_bias)]
    assert torch.autograd.gradcheck(lambda *x: ops.graph_conv(*x, impl="native"), args)


@needs_native
def test_gradients_match_reference_fp32():
    args = dasc_args(2, 64, 32, 32)
    out, grads = _grads(lambda *x: ops.dasc_gate(*x, impl="native"), args)
    ref_out, ref_grads = _grads(reference.dasc_gate, args)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    for name, got, want in zip(("f_m1", "f_m2", "f_de", "w_d", "w_de", "b_in", "w_att", "b_att"), grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")

    g_args = graph_args(2, 64, 96)
    out, grads = _grads(lambda *x: ops.graph_conv(*x, impl="native"), g_args)
    ref_out, ref_grads = _grads(reference.graph_conv, g_args)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    for name, got, want in zip(("g", "a", "a_bias", "w", "w_bias"), grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


@needs_native
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad, layout):
    d_args = dasc_args(2, 6, 4, 5, c_de=4, c_i=3)
    d_args = [a.requires_grad_(requires_grad) for a in (_channels_last(d_args) if layout != "nchw" else d_args)]
    # opcheck also holds the fake kernel's output strides to the real one (the layout follows f_m1).
    torch.library.opcheck(torch.ops.mdanet.dasc_gate.default, d_args)
    g_args = [a.requires_grad_(requires_grad) for a in graph_args(2, 7, 5)]
    torch.library.opcheck(torch.ops.mdanet.graph_conv.default, g_args)


@needs_native
def test_backward_ops_opcheck():
    d_args = dasc_args(2, 6, 4, 5, c_de=4, c_i=3)
    torch.library.opcheck(torch.ops.mdanet.dasc_gate_backward.default, [torch.randn(2, 6, 4, 5), *d_args])
    g_args = graph_args(2, 7, 5)
    out = torch.ops.mdanet.graph_conv(*g_args)
    torch.library.opcheck(torch.ops.mdanet.graph_conv_backward.default, [torch.randn_like(out), out, *g_args])


@needs_native
def test_flop_counts_equal_the_reference():
    from torch.utils.flop_counter import FlopCounterMode

    for fn, args in ((ops.dasc_gate, dasc_args(2, 8, 5, 6, c_de=6, c_i=4)), (ops.graph_conv, graph_args(2, 7, 5))):
        totals = []
        for impl in ("reference", "native"):
            with FlopCounterMode(display=False) as counter:
                fn(*[a.requires_grad_() for a in args], impl=impl).sum().backward()
            totals.append(counter.get_total_flops())
        assert totals[0] == totals[1] > 0


class _Gate(torch.nn.Module):
    """A DASC gate and a graph conv over its output, as a model would call them."""

    def __init__(self) -> None:
        super().__init__()
        self.weights = torch.nn.ParameterList(torch.nn.Parameter(t) for t in dasc_args(1, 4, 3, 3)[3:])
        self.gcn = torch.nn.ParameterList(torch.nn.Parameter(t) for t in graph_args(1, 4, 9)[1:])

    def forward(self, f_m1: Tensor, f_m2: Tensor, f_de: Tensor) -> Tensor:
        out = ops.dasc_gate(f_m1, f_m2, f_de, *self.weights, impl="native")
        return ops.graph_conv(out.flatten(2), *self.gcn, impl="native")


@needs_native
def test_torch_export_keeps_the_ops_with_dynamic_batch():
    model = _Gate()
    x = dasc_args(2, 4, 3, 3)[:3]
    batch = torch.export.Dim("batch", min=1, max=16)
    program = torch.export.export(model, tuple(x), dynamic_shapes=({0: batch}, {0: batch}, {0: batch}))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert {"mdanet.dasc_gate.default", "mdanet.graph_conv.default"} <= targets
    x5 = dasc_args(5, 4, 3, 3, seed=3)[:3]
    torch.testing.assert_close(program.module()(*x5), model(*x5), rtol=1e-6, atol=1e-6)


@needs_native
def test_torch_compile_fullgraph_forward_and_backward():
    model = _Gate()
    x = dasc_args(3, 4, 3, 3, seed=4)[:3]
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out = compiled(*x)
    out.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    expected = model(*x)
    expected.sum().backward()
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    for got, want in zip(grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@needs_native
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_torchscript_trace_records_the_ops(tmp_path):
    model = _Gate()
    x = tuple(dasc_args(2, 4, 3, 3)[:3])
    traced = torch.jit.trace(model, x)
    assert "mdanet::dasc_gate" in str(traced.graph) and "mdanet::graph_conv" in str(traced.graph)
    torch.jit.save(traced, str(tmp_path / "gate.ts"))
    torch.testing.assert_close(torch.jit.load(str(tmp_path / "gate.ts"))(*x), model(*x), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU and the CUDA kernels)
# ---------------------------------------------------------------------------------------------------------------
@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize(("channels", "size", "batch"), [(64, 128, 8), (512, 16, 1), (5, 7, 3)])
def test_cuda_dasc_gate_matches_reference(channels, size, batch):
    args = dasc_args(batch, channels, size, size, device="cuda")
    out, grads = _grads(lambda *x: ops.dasc_gate(*x, impl="native"), args)
    ref_out, ref_grads = _grads(reference.dasc_gate, args)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize(("nodes", "features", "batch"), [*[(m, e, 8) for m, e in GRAPHS], (7, 5, 2)])
def test_cuda_graph_conv_matches_reference(nodes, features, batch):
    """At the paper's sizes a few of the millions of outputs round to opposite sides of the ReLU's kink in the two
    implementations, each moving a whole row of gradients by its upstream gradient (seen on an H200): the upstream
    gradient is 0 within 1e-4 of the kink."""
    args = graph_args(batch, nodes, features, device="cuda")
    out = ops.graph_conv(*args, impl="native")
    away = out.abs() > 1e-4 * out.abs().max()
    out, grads = _grads(lambda *x: ops.graph_conv(*x, impl="native"), args, keep=away)
    ref_out, ref_grads = _grads(reference.graph_conv, args, keep=away)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-4)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_cuda_dtypes_and_opcheck(dtype):
    args = dasc_args(2, 16, 8, 8, dtype=dtype, device="cuda")
    out = ops.dasc_gate(*args, impl="native")
    assert out.dtype == dtype and out.device.type == "cuda"
    tol = 1e-10 if dtype == torch.float64 else 3e-2
    torch.testing.assert_close(out.double(), reference.dasc_gate(*[a.double() for a in args]), rtol=tol, atol=tol)
    torch.library.opcheck(torch.ops.mdanet.dasc_gate.default, [a.requires_grad_() for a in args])
    torch.library.opcheck(
        torch.ops.mdanet.graph_conv.default,
        [a.requires_grad_() for a in graph_args(2, 7, 5, dtype=dtype, device="cuda")],
    )


@needs_native
def test_graph_conv_keeps_nan_as_torch_relu_does():
    """A NaN in the features stays NaN through the fused ReLU (and its gradient passes), as in torch.relu: the
    kernels never hide a non-finite input as 0."""
    args = graph_args(2, 5, 6)
    args[4][0] = float("nan")  # feature 0 of every node becomes NaN before the ReLU
    out, grads = _grads(lambda *x: ops.graph_conv(*x, impl="native"), args)
    ref_out, ref_grads = _grads(reference.graph_conv, args)
    assert out[..., 0].isnan().all() and not out[..., 1:].isnan().any()
    torch.testing.assert_close(out, ref_out, equal_nan=True, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, equal_nan=True, rtol=1e-4, atol=1e-5)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_graph_conv_adjacency_gradient_sums_over_a_large_batch(dtype):
    """dL/dA = -Σ_b grad_h[b] g[b]ᵀ over 32 graphs, against float64 autograd: the batch sum is where the
    backward's B×M×M temporary would be replaced by one (M, B·E) × (B·E, M) product. The native gradient is no
    further from float64 than the reference computed in the same dtype (3-4 % of the norm in bf16)."""
    args = [a.to(dtype) for a in graph_args(32, 24, 40, seed=3)]
    upstream = torch.randn(32, 24, 40, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    grads = []
    for impl, inputs in (("native", args), ("reference", args), ("reference", [a.double() for a in args])):
        leaves = [a.detach().clone().requires_grad_() for a in inputs]
        ops.graph_conv(*leaves, impl=impl).backward(upstream.to(inputs[0].dtype))
        grads.append(leaves[1].grad.double())
    native_grad, reference_grad, exact = grads
    error = float((native_grad - exact).norm() / exact.norm())
    assert error <= 1.5 * float((reference_grad - exact).norm() / exact.norm())
    assert error < (1e-6 if dtype == torch.float32 else 5e-2)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize(("channels", "size", "batch"), [(64, 128, 2), (512, 16, 1), (5, 7, 3)])
def test_cuda_dasc_gate_backward_is_bitwise_reproducible_when_deterministic(channels, size, batch):
    """Under torch.use_deterministic_algorithms the CUDA backward sums the weight gradients in a fixed order:
    three runs agree bit for bit, and the op raises no non-determinism warning."""
    import warnings

    args = dasc_args(batch, channels, size, size, device="cuda")
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)  # as TrainConfig(deterministic=True) does
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runs = [_grads(lambda *x: ops.dasc_gate(*x, impl="native"), args)[1] for _ in range(3)]
    finally:
        torch.use_deterministic_algorithms(previous)
    assert not [w for w in caught if "mdanet" in str(w.message)]
    for run in runs[1:]:
        for got, first in zip(run, runs[0]):
            assert torch.equal(got, first)
    _, ref_grads = _grads(reference.dasc_gate, args)
    for got, want in zip(runs[0], ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_dasc_gate_misaligned_inputs_take_the_scalar_path(dtype):
    """Views one element into their storage (not 16-byte aligned): the kernels fall back to scalar loads instead
    of faulting on a misaligned vector access, and agree with the reference."""
    args = dasc_args(2, 24, 16, 16, dtype=dtype, device="cuda")
    shifted = [torch.cat([t.new_zeros(1), t.reshape(-1)])[1:].view(t.shape) for t in args[:3]]
    assert all(t.is_contiguous() and t.data_ptr() % 16 != 0 for t in shifted)
    out, grads = _grads(lambda *x: ops.dasc_gate(*x, impl="native"), shifted + args[3:])
    ref_out, ref_grads = _grads(reference.dasc_gate, [a.double() for a in shifted + args[3:]])
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(out.double(), ref_out, rtol=tol, atol=tol)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * max(1.0, float(want.abs().max())))
