"""The real CUDA kernels (csrc/cuda/*.cu) executed on the CPU and held to mdanet_sdk.ops.reference.

tests/cuda_emulation/ compiles each .cu with g++ against a shim that runs every CUDA thread as a host fiber, with
real barriers, warp shuffles and atomics (see cuda_cpu_shim.h). Shapes are small but cover partial blocks, several
blocks, several rows per block and grid-stride loops; every dtype the launchers dispatch on is checked, forward and
backward (float64 autograd). Buffers carry NaN guard zones and outputs start as NaN, so out-of-bounds accesses and
unwritten elements fail the comparison.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

from cuda_emulation import emulator
from cuda_emulation.emulator import EmulationError, Emulator, acc_dtype
from mdanet_sdk.ops import reference

pytestmark = pytest.mark.skipif(emulator.compiler() is None, reason="no C++ compiler (g++ or $CXX) to build it")

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# (rtol, atol as a fraction of the largest expected magnitude): the output rounding of the dtype (half an ulp)
# plus the accumulation type's error; anything an indexing or reduction bug produces is orders larger.
TOL = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (6e-4, 1e-5),
    torch.bfloat16: (4.5e-3, 1e-4),
}
ACC_TOL = {torch.float64: (1e-10, 1e-12), torch.float32: (1e-4, 1e-4)}  # sums over all pixels, acc dtype
THREADS = 256  # csrc/cuda/common.cuh kThreads
# (B, C, C_de, H, W), with the paths each takes (test_dasc_shapes_cover_every_path holds them to it):
#  - one partial tile, scalar loads (35 pixels are no whole number of vectors);
#  - several tiles and row segments with a partial last, 128-bit loads for every dtype (304 pixels);
#  - no decoder channels, 3 images, scalar loads except fp64 (270 pixels);
#  - C + C_de = 44 channels on 2 tiles at most: the channel reduction split over 2 blocks (partial sums and
#    finalize_kernel), scalar loads except fp64 (66 pixels).
DASC_SHAPES = [(1, 3, 2, 5, 7), (2, 5, 3, 16, 19), (3, 1, 0, 9, 30), (1, 24, 20, 6, 11)]
# (B, M, E): one partial block; 3 blocks with a partial last.
GRAPH_SHAPES = [(1, 4, 6), (3, 10, 19)]
SCHEDULES = {
    "round-robin-2-workers": (2, "round-robin", False),
    "down-3-workers-blocks-reversed": (3, "round-robin-down", True),
    "warps-run-ahead-1-worker": (1, "warps-run-ahead", False),
}


@pytest.fixture(scope="session")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """The emulation library, built once per session; its schedule is reset after every test."""
    instance = Emulator(emulator.build(tmp_path_factory.mktemp("cuda_emulation")))
    yield instance


@pytest.fixture(autouse=True)
def _default_schedule(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "emu" in request.fixturenames:
        request.getfixturevalue("emu").schedule()


def _assert_close(actual: Tensor, expected: Tensor, tol: tuple[float, float], what: str) -> None:
    rtol, atol = tol
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol * max(scale, 1.0), msg=what)


def _randn(generator: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def _dasc_inputs(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> list[Tensor]:
    """f_m1, f_m2, grad (B, C, H, W) and f_de (B, C_de, H, W), rounded to ``dtype`` and held in float64."""
    b, c, c_de, h, w = shape
    gen = torch.Generator().manual_seed(seed)
    tensors = [_randn(gen, b, c, h, w), _randn(gen, b, c, h, w), _randn(gen, b, c_de, h, w), _randn(gen, b, c, h, w)]
    return [t.to(dtype).double() for t in tensors]


# ---- the emulator itself ----


def test_half_and_bfloat16_conversions_are_bit_exact_with_torch(emu):
    values = torch.cat(
        [
            torch.randn(4000, generator=torch.Generator().manual_seed(1)) * 10.0 ** torch.randint(-9, 6, (4000,)),
            torch.tensor([0.0, -0.0, 65504.0, 65519.99, 65520.0, 1e-8, 2.98e-8, 3e-8, 6.1e-5, 6.103e-5, 1 + 2**-11]),
            torch.tensor([1 + 3 * 2**-11, 1 + 2**-8, 1 + 3 * 2**-8, 3.4e38, float("inf"), float("-inf")]),
        ]
    ).float()
    for flag, dtype in ((0, torch.float16), (1, torch.bfloat16)):
        out = torch.empty(values.numel(), dtype=torch.int16)
        emu.lib.emu_float_to_half(values.data_ptr(), out.data_ptr(), values.numel(), flag)
        assert torch.equal(out, values.to(dtype).view(torch.int16)), dtype


def test_launch_rewrite_changes_only_the_launch_syntax():
    for source in sorted(emulator.CUDA_DIR.glob("*.cu")):
        text = source.read_text()
        rewritten = emulator.rewrite_launches(text)
        assert rewritten.count("\n") == text.count("\n"), source.name
        assert rewritten.count("::cuda_emu::Launch(") == text.count("<<<"), source.name
        # Undo the rewrite: what remains is the original file.
        undone = re.sub(r"::cuda_emu::Launch\((.*?)\)\(([\w:]+(?:<[^<>]*>)?), ", r"\2<<<\1>>>(", rewritten)
        assert " ".join(undone.split()) == " ".join(text.split()), source.name


def test_a_missing_barrier_is_visible_and_the_barrier_fixes_it(emu):
    for workers, policy, reverse_blocks in SCHEDULES.values():
        emu.schedule(workers, policy, reverse_blocks)
        for sync in (1, 0):
            data = torch.arange(3 * 96, dtype=torch.float32)
            buf = emulator.Buffers()
            ptr = buf.put(data, torch.float32)
            emu.call("emu_selftest_reverse", ptr, 3, 96, sync, buffers=buf)
            expected = data.view(3, 96).flip(1).reshape(-1)
            assert torch.equal(buf.last(), expected) == bool(sync), (workers, policy, sync)


def test_a_barrier_not_reached_by_every_thread_is_reported(emu):
    buf = emulator.Buffers()
    ptr = buf.put(None, torch.float32, 64)
    with pytest.raises(EmulationError, match="deadlock"):
        emu.call("emu_selftest_divergent_barrier", ptr, 64, buffers=buf)


def test_an_empty_grid_is_a_launch_error(emu):
    buf = emulator.Buffers()
    ptr = buf.put(torch.zeros(4), torch.float32)
    with pytest.raises(EmulationError, match="invalid launch configuration"):
        emu.call("emu_selftest_reverse", ptr, 0, 4, 1, buffers=buf)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_warp_shuffles_and_atomics(emu, schedule):
    emu.schedule(*SCHEDULES[schedule])
    data = torch.rand(7 * 128, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    total = torch.zeros(1, dtype=torch.float64)
    mismatches = torch.zeros(1, dtype=torch.int32)
    status = emu.lib.emu_selftest_warp_total(data.data_ptr(), total.data_ptr(), mismatches.data_ptr(), 7, 128)
    assert status == 0 and int(mismatches) == 0
    assert float(total) == pytest.approx(float(data.sum()), rel=1e-12)


def test_out_of_bounds_writes_break_the_guard():
    buf = emulator.Buffers()
    buf.put(torch.zeros(8), torch.float32)
    raw = buf.items[0].raw
    ctypes.memset(raw.data_ptr() + (emulator.GUARD + 8) * 4, 0, 4)  # one element past the end
    with pytest.raises(EmulationError, match="outside its bounds"):
        buf.check_guards("write past the end")


# ---- dasc_gate ----


@pytest.mark.parametrize("shape", DASC_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dasc_gate_forward_matches_the_reference(emu, dtype, shape):
    b, c, c_de, h, w = shape
    f_m1, f_m2, f_de, _ = _dasc_inputs(shape, dtype)
    gen = torch.Generator().manual_seed(3)
    w_d, w_de, b_in, w_att, b_att = (
        _randn(gen, 4, c),
        _randn(gen, 4, c_de),
        _randn(gen, 4),
        _randn(gen, 4),
        _randn(gen, 1),
    )
    # [v_d, v_de, c] as the torch glue computes them (csrc/common.cpp dasc_coefficients), in the acc dtype.
    coef = torch.cat([w_d.t() @ w_att, w_de.t() @ w_att, (w_att @ b_in + b_att).view(1)]).to(acc_dtype(dtype))
    out, scale = emu.dasc_gate_forward(f_m1.to(dtype), f_m2.to(dtype), f_de.to(dtype), coef)
    expected = reference.dasc_gate(f_m1, f_m2, f_de, w_d, w_de, b_in, w_att, b_att)
    _assert_close(out, expected, TOL[dtype], f"dasc_gate {dtype} {shape}")
    # The workspace as kernels.h defines it: scale = 1 + σ(s), s = v_d·(f_m1 - f_m2) + v_de·f_de + c.
    v = coef.double()
    s = torch.einsum("bchw,c->bhw", f_m1 - f_m2, v[:c]) + torch.einsum("bchw,c->bhw", f_de, v[c : c + c_de]) + v[-1]
    _assert_close(scale, 1 + torch.sigmoid(s), ACC_TOL[acc_dtype(dtype)], "scale")


def _dasc_backward_expected(
    shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0
) -> tuple[list[Tensor], Tensor, dict[str, Tensor]]:
    """Inputs (f_m1, f_m2, f_de, grad), coef and float64 autograd of the reference. With C_i = 1, w_att = 1 and
    b_att = 0 the reference's weights are the kernels' coefficients [v_d, v_de, c] themselves, so the autograd
    gradients of w_d, w_de and b_in are what grad_coef must hold."""
    b, c, c_de, h, w = shape
    f_m1, f_m2, f_de, grad = _dasc_inputs(shape, dtype, seed)
    coef = (_randn(torch.Generator().manual_seed(seed + 4), c + c_de + 1) / max(c, 1) ** 0.5).to(acc_dtype(dtype))
    leaves = [t.clone().requires_grad_() for t in (f_m1, f_m2, f_de)]
    weights = [coef[:c].double().view(1, c), coef[c : c + c_de].double().view(1, c_de), coef[-1:].double()]
    weights = [t.clone().requires_grad_() for t in weights]
    w_att, b_att = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    out = reference.dasc_gate(leaves[0], leaves[1], leaves[2], weights[0], weights[1], weights[2], w_att, b_att)
    g = torch.autograd.grad(out, leaves + weights, grad, allow_unused=True)
    expected = {
        "grad_m1": g[0],
        "grad_m2": g[1],
        "grad_de": g[2],
        "grad_coef": torch.cat([g[3].reshape(-1), g[4].reshape(-1), g[5].reshape(-1)]),
    }
    return [f_m1, f_m2, f_de, grad], coef, expected


def _check_dasc_backward(
    emu: Emulator,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    *,
    deterministic: bool = False,
    row_grid: int = 0,
    misalign: bool = False,
) -> dict[str, Tensor]:
    """Runs the emulated backward (options as Emulator.dasc_gate_backward), checks it against float64 autograd
    and returns its results."""
    (f_m1, f_m2, f_de, grad), coef, expected = _dasc_backward_expected(shape, dtype)
    inputs = (grad.to(dtype), f_m1.to(dtype), f_m2.to(dtype), f_de.to(dtype), coef)
    got = emu.dasc_gate_backward(*inputs, deterministic=deterministic, row_grid=row_grid, misalign=misalign)
    for key in ("grad_m1", "grad_m2", "grad_de"):
        _assert_close(got[key], expected[key], TOL[dtype], f"{key} {dtype} {shape}")
    _assert_close(got["grad_coef"], expected["grad_coef"], ACC_TOL[acc_dtype(dtype)], f"grad_coef {dtype} {shape}")
    return got


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("shape", DASC_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dasc_gate_backward_matches_float64_autograd(emu, dtype, shape, deterministic):
    _check_dasc_backward(emu, shape, dtype, deterministic=deterministic)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_dasc_gate_backward_does_not_depend_on_the_thread_order(emu, dtype, schedule):
    emu.schedule(*SCHEDULES[schedule])
    _check_dasc_backward(emu, DASC_SHAPES[1], dtype)


def _bits(tensors: dict[str, Tensor]) -> dict[str, bytes]:
    return {key: value.contiguous().view(torch.uint8).numpy().tobytes() for key, value in tensors.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_dasc_gate_backward_deterministic_is_bitwise_reproducible(emu, dtype):
    # Different thread orders, block orders, worker counts and row-kernel grids (which warp takes which unit):
    # the deterministic path's partial sums have fixed slots and a fixed summation order, so every bit agrees.
    shape = DASC_SHAPES[1]
    runs = []
    for (workers, policy, reverse_blocks), row_grid in zip(SCHEDULES.values(), (0, 1, 3), strict=True):
        emu.schedule(workers, policy, reverse_blocks)
        runs.append(_bits(_check_dasc_backward(emu, shape, dtype, deterministic=True, row_grid=row_grid)))
    assert runs[0] == runs[1] == runs[2]


def test_dasc_gate_backward_atomic_order_shows_in_the_bits(emu):
    # The check above can fail: the atomic path, run with the blocks in the opposite order (one worker each, so
    # each run is itself repeatable), adds the same partial sums in another order and the weight gradient's last
    # bits change. The feature gradients, written without atomics, do not.
    shape = DASC_SHAPES[1]
    runs = []
    for reverse_blocks in (False, True):
        emu.schedule(1, "round-robin", reverse_blocks)
        runs.append(_bits(_check_dasc_backward(emu, shape, torch.float32)))
    assert runs[0]["grad_coef"] != runs[1]["grad_coef"]
    assert all(runs[0][key] == runs[1][key] for key in ("grad_m1", "grad_m2", "grad_de"))


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
def test_dasc_gate_backward_without_feature_channels_writes_zero_gradients(emu, deterministic):
    # C = 0 with decoder channels: the upstream gradient is empty, so every gradient is zero, and the launcher
    # (reusable outside torch, kernels.h) must write them.
    shape = (2, 0, 3, 6, 50)
    (f_m1, f_m2, f_de, grad), coef, _ = _dasc_backward_expected(shape, torch.float32)
    got = emu.dasc_gate_backward(
        grad.float(), f_m1.float(), f_m2.float(), f_de.float(), coef, deterministic=deterministic
    )
    assert torch.equal(got["grad_de"], torch.zeros_like(f_de).float())
    assert torch.equal(got["grad_coef"], torch.zeros(4))


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("row_grid", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=str)
def test_dasc_row_kernel_grid_stride_loop(emu, dtype, row_grid, schedule):
    # The backward's row kernel on 1 or 2 blocks of 8 warps for 32-80 units (row segments): each warp takes
    # several units in turn, each ending in a shuffle reduction (the schedules let warps run ahead).
    emu.schedule(*SCHEDULES[schedule])
    shape = DASC_SHAPES[1]
    b, c, c_de, _, _ = shape
    assert b * (c + c_de) * emu.dasc_plan(dtype, shape, backward=True)["segs"] >= row_grid * THREADS // 32 * 2
    _check_dasc_backward(emu, shape, dtype, row_grid=row_grid)
    _check_dasc_backward(emu, shape, dtype, row_grid=row_grid, deterministic=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dasc_shapes_cover_every_path(emu, dtype):
    # What the shapes above are said to exercise, read from the launchers' own plan and the vector-access count.
    plans = [emu.dasc_plan(dtype, shape, backward=True) for shape in DASC_SHAPES]
    assert plans[0]["chunks"] == 1 and plans[3]["chunks"] == 2, "one and two channel-reduction blocks per tile"
    assert plans[1]["segs"] > 1 and (16 * 19) % plans[1]["seg"] != 0, "several row segments, the last partial"
    assert (5 * 7) % plans[0]["tile"] != 0, "a partial tile"
    vector = []
    for shape in DASC_SHAPES:
        emu.vector_accesses()
        _check_dasc_backward(emu, shape, dtype)
        vector.append(emu.vector_accesses() > 0)
    width = 16 // torch.empty(0, dtype=dtype).element_size()
    assert vector == [shape[3] * shape[4] % width == 0 for shape in DASC_SHAPES]
    assert vector[1] and not vector[0], "both the 128-bit and the scalar loads"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dasc_gate_misaligned_buffers_take_the_scalar_path(emu, dtype):
    # Every pointer one element off a 16-byte boundary (a view with a storage offset): the launchers must fall
    # back to scalar loads (a vector access there is a launch error on the GPU, and in the emulator) and still be
    # right, forward and backward.
    shape = b, c, c_de, h, w = DASC_SHAPES[1]
    (f_m1, f_m2, f_de, grad), coef, _ = _dasc_backward_expected(shape, dtype)
    emu.vector_accesses()
    out, _ = emu.dasc_gate_forward(f_m1.to(dtype), f_m2.to(dtype), f_de.to(dtype), coef, misalign=True)
    v = coef.double()
    s = torch.einsum("bchw,c->bhw", f_m1 - f_m2, v[:c]) + torch.einsum("bchw,c->bhw", f_de, v[c : c + c_de]) + v[-1]
    _assert_close(out, (f_m1 - f_m2) * (1 + torch.sigmoid(s)).unsqueeze(1), TOL[dtype], "forward")
    _check_dasc_backward(emu, shape, dtype, misalign=True)
    assert emu.vector_accesses() == 0


def test_a_misaligned_vector_access_is_a_launch_error(emu):
    data = torch.arange(64, dtype=torch.float32)
    for offset, ok in ((4, True), (1, False)):
        buf = emulator.Buffers()
        ptrs = [buf.put(data, torch.float32), buf.put(None, torch.float32, 32)]
        if ok:
            emu.call("emu_selftest_vector_load", ptrs[0], offset, ptrs[1], buffers=buf)
            assert torch.equal(buf.last(), data[offset : offset + 4].repeat(8))
        else:
            with pytest.raises(EmulationError, match="misaligned address"):
                emu.call("emu_selftest_vector_load", ptrs[0], offset, ptrs[1], buffers=buf)


# ---- graph_conv ----


def _graph_inputs(shape: tuple[int, int, int], seed: int = 0) -> list[Tensor]:
    b, m, e = shape
    gen = torch.Generator().manual_seed(seed)
    return [_randn(gen, b, m, e), _randn(gen, m, m) * 0.3, _randn(gen, m), _randn(gen, e, e) / e**0.5, _randn(gen, e)]


@pytest.mark.parametrize("shape", GRAPH_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_graph_conv_forward_matches_the_reference(emu, dtype, shape):
    g, a, a_bias, w, w_bias = _graph_inputs(shape)
    g = g.to(dtype).double()
    acc = acc_dtype(dtype)
    # What the torch glue hands the epilogue (csrc/common.cpp graph_conv_forward): q = (I - A) G Wᵀ in the dtype,
    # a_bias, the row sums of W and w_bias in the acc dtype.
    q = (torch.eye(shape[1], dtype=torch.float64) - a) @ g @ w.t()
    out = emu.graph_conv_bias_relu(q.to(dtype), a_bias.to(acc), w.to(acc).sum(1), w_bias.to(acc))
    expected = reference.graph_conv(g, a, a_bias, w, w_bias)
    rtol, atol = TOL[dtype]
    # q is rounded to the dtype before the epilogue: half an ulp of the largest |q| on top of the output rounding.
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(out.double(), expected, rtol=rtol, atol=eps * float(q.abs().max()) + atol)
    assert 0.2 < float((expected > 0).double().mean()) < 0.8, "both sides of the ReLU are exercised"


def _relu_backward_case(shape: tuple[int, int, int], dtype: torch.dtype, seed: int = 0) -> tuple[Tensor, ...]:
    """grad, out (rounded to ``dtype``) and float64 autograd's gradient of the reference with A = 0, b_A = 0 and
    W = I, where the gradient with respect to g is exactly the one through the ReLU that the mask computes."""
    g, _, _, _, w_bias = _graph_inputs(shape, seed)
    b, m, e = shape
    g = g.to(dtype).double().requires_grad_()
    out = reference.graph_conv(
        g,
        torch.zeros(m, m, dtype=torch.float64),
        torch.zeros(m, dtype=torch.float64),
        torch.eye(e, dtype=torch.float64),
        w_bias,
    )
    grad = _randn(torch.Generator().manual_seed(seed + 1), b, m, e).to(dtype).double()
    (expected,) = torch.autograd.grad(out, g, grad)
    return grad, out.detach(), expected


@pytest.mark.parametrize("shape", GRAPH_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_graph_conv_backward_matches_float64_autograd(emu, dtype, shape):
    grad, out, expected = _relu_backward_case(shape, dtype)
    grad_y = emu.graph_conv_relu_mask(grad.to(dtype), out.to(dtype))
    assert torch.equal(grad_y.double(), expected)
    assert bool((expected == 0).any() and (expected != 0).any())


@pytest.mark.parametrize("wide", [False, True], ids=["int32", "int64"])
@pytest.mark.parametrize("grid", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_graph_conv_kernels_grid_stride_loop(emu, dtype, grid, wide):
    # 1710 elements on 1 or 3 blocks of 256 threads: several rounds of both kernels' loops, each round stepping
    # the (node, feature) pair by the stride (768 = 20·38 + 8: a feature carry and a node wrap) instead of
    # dividing; with 32-bit and 64-bit indices.
    shape = (3, 15, 38)
    g, a, a_bias, w, w_bias = _graph_inputs(shape, seed=6)
    acc = acc_dtype(dtype)
    g = g.to(dtype).double()
    q = ((torch.eye(shape[1], dtype=torch.float64) - a) @ g @ w.t()).to(dtype)
    grad = _randn(torch.Generator().manual_seed(7), *shape).to(dtype)
    out, grad_y = emu.graph_conv_kernels(grid, q, a_bias.to(acc), w.to(acc).sum(1), w_bias.to(acc), grad, wide)
    expected = reference.graph_conv(g, a, a_bias, w, w_bias)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(out.double(), expected, rtol=TOL[dtype][0], atol=eps * float(q.double().abs().max()))
    assert torch.equal(grad_y, torch.where(out > 0, grad, torch.zeros_like(grad)))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_graph_conv_nan_propagates_as_in_the_reference(emu, dtype):
    # A NaN (e.g. an fp16 overflow upstream) must reach the output as torch.relu lets it through, not become 0;
    # and the gradient passes where the output is NaN, as torch's ReLU backward (threshold_backward) lets it.
    shape = b, m, e = (2, 5, 30)
    g, _, _, _, w_bias = _graph_inputs(shape, seed=8)
    g[0, 1, 3] = g[1, 4, 29] = float("nan")
    g = g.to(dtype).double().requires_grad_()
    # The reference's last step, torch.relu(y + b_W), on y = g (A = 0, b_A = 0, W = I; not through
    # reference.graph_conv, whose matrix products would spread the NaN over its row and column).
    expected = torch.relu(g + w_bias)
    acc = acc_dtype(dtype)
    out = emu.graph_conv_bias_relu(
        g.detach().to(dtype), torch.zeros(m, dtype=acc), torch.ones(e, dtype=acc), w_bias.to(acc)
    )
    assert torch.equal(out.isnan(), expected.isnan()) and int(expected.isnan().sum()) == 2
    grad = _randn(torch.Generator().manual_seed(9), *shape).to(dtype).double()
    (expected_grad,) = torch.autograd.grad(expected, g, grad)
    assert torch.equal(emu.graph_conv_relu_mask(grad.to(dtype), expected.detach().to(dtype)).double(), expected_grad)
