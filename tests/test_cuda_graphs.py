"""CUDA-graph replay of the forward pass (mdanet_sdk.inference.cuda_graphs).

On a CPU a stand-in capture (a closure that runs the network on the static input buffer, as a replay does)
checks everything but the recording itself: the shape buckets, padding, copies in and out, the fallbacks. The
``gpu``-marked test records real graphs of the bundled network and compares them with the eager forward.
"""

from __future__ import annotations

import logging

import pytest
import torch

from mdanet_sdk.inference import Segmenter
from mdanet_sdk.inference.cuda_graphs import GraphedNetwork
from mdanet_sdk.inference.optimize import optimize_for_inference
from mdanet_sdk.model import build_model
from mdanet_sdk.train.checkpoint import load_checkpoint


class _Recorder:
    """A capture on the CPU: replay = the network on the static input buffer's current values."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []

    def __call__(self, network, static_input):
        self.inputs.append(static_input)
        output = network(static_input)  # the buffer a replay overwrites

        def replay() -> torch.Tensor:
            output.copy_(network(static_input))
            return output

        return replay


def _network() -> torch.nn.Module:
    return load_checkpoint("default-mri").build_model(ops="reference").eval()


@torch.inference_mode()
def test_batches_share_graphs_by_padded_shape_and_give_eager_results() -> None:
    net, recorder = _network(), _Recorder()
    graphed = GraphedNetwork(net, capture=recorder, device_type="cpu")
    torch.manual_seed(0)
    for rows in (16, 5, 16, 7, 3, 8, 1):
        x = torch.randn(rows, 2, 64, 64)
        out = graphed(x)
        assert out.shape == (rows, 2, 64, 64)
        torch.testing.assert_close(out, net(x), rtol=1e-5, atol=1e-5)
    # 16; 5 and 7 -> 8 (then 8 itself); 3 -> 4; 1: four graphs, not seven
    assert [t.shape[0] for t in recorder.inputs] == [16, 8, 4, 1] and graphed.graphs == 4
    # a result is a copy: the next replay of the same graph does not change it
    a = graphed(torch.ones(16, 2, 64, 64))
    kept = a.clone()
    graphed(torch.zeros(16, 2, 64, 64))
    assert torch.equal(a, kept)


@torch.inference_mode()
def test_padding_rows_are_zero_and_channels_last_gets_its_own_graph() -> None:
    net, recorder = _network(), _Recorder()
    graphed = GraphedNetwork(net, capture=recorder, device_type="cpu")
    graphed(torch.full((4, 2, 32, 32), 7.0))
    graphed(torch.full((3, 2, 32, 32), 1.0))  # reuses the graph of 4 rows: the stale 4th row is cleared
    assert torch.equal(recorder.inputs[0][3], torch.zeros(2, 32, 32)) and graphed.graphs == 1
    x = torch.randn(4, 2, 32, 32).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(graphed(x), net(x), rtol=1e-5, atol=1e-5)
    assert graphed.graphs == 2 and recorder.inputs[1].is_contiguous(memory_format=torch.channels_last)


def test_other_devices_gradients_and_full_caches_run_eagerly() -> None:
    net, recorder = _network(), _Recorder()
    x = torch.randn(2, 2, 32, 32)
    other_device = GraphedNetwork(net, capture=recorder)  # device_type "cuda": x is on the CPU
    with torch.inference_mode():  # gradients off, so only the device keeps it eager
        assert torch.equal(other_device(x), net(x))
    assert recorder.inputs == [] and other_device.graphs == 0
    graphed = GraphedNetwork(net, capture=recorder, device_type="cpu", max_graphs=1)
    graphed(x)  # gradients on: eager
    assert recorder.inputs == []
    with torch.inference_mode():
        graphed(x)
        graphed(torch.randn(4, 2, 32, 32))  # a second shape past max_graphs=1: eager
    assert graphed.graphs == 1 and len(recorder.inputs) == 1


def test_a_failed_capture_falls_back_to_eager_once_with_a_warning(caplog) -> None:
    net, calls = _network(), []

    def refuse(network, static_input):
        calls.append(1)
        raise RuntimeError("operation not permitted when stream is capturing\nsecond line")

    graphed = GraphedNetwork(net, capture=refuse, device_type="cpu")
    x = torch.randn(2, 2, 32, 32)
    with torch.inference_mode(), caplog.at_level(logging.WARNING):
        torch.testing.assert_close(graphed(x), net(x))
        graphed(torch.randn(4, 2, 32, 32))
    assert calls == [1] and graphed.failed == "RuntimeError: operation not permitted when stream is capturing"
    assert "CUDA graphs disabled" in caplog.text


def test_a_capture_that_runs_out_of_memory_leaves_graphs_on_for_smaller_batches() -> None:
    """Running out of memory is the batch's size, not the network: it used to turn graphs off for the whole run
    (and keep the pools of the graphs already recorded); now the error reaches the predictor, which halves the
    batch, and the smaller shapes are recorded."""
    net, recorder = _network(), _Recorder()

    def small_only(network, static_input):
        if len(static_input) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return recorder(network, static_input)

    graphed = GraphedNetwork(net, capture=small_only, device_type="cpu")
    with torch.inference_mode():
        graphed(torch.randn(1, 2, 32, 32))
        with pytest.raises(torch.OutOfMemoryError):
            graphed(torch.randn(4, 2, 32, 32))
        x = torch.randn(2, 2, 32, 32)
        torch.testing.assert_close(graphed(x), net(x))
    assert graphed.failed == "" and [len(i) for i in recorder.inputs] == [1, 2]


def test_graphs_are_only_built_for_cuda() -> None:
    net = build_model(load_checkpoint("default-mri").model_config, ops="reference").eval()
    assert optimize_for_inference(net, torch.device("cpu"), cuda_graphs=True) is net
    seg = Segmenter.default("mri", device="cpu", cuda_graphs=True)
    assert not any(isinstance(m, GraphedNetwork) for m in seg.predictor.models)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graphs_match_the_eager_forward_on_a_gpu(precision) -> None:
    eager = Segmenter.default("mri", device="cuda", precision=precision, tta=False, cuda_graphs=False)
    graphed = Segmenter.default("mri", device="cuda", precision=precision, tta=False)
    (network,) = graphed.predictor.models
    assert isinstance(network, GraphedNetwork)
    torch.manual_seed(0)
    # cuDNN convolutions run in TF32 by default and the padded graph batch may pick other algorithms than the
    # eager one: ~1e-3 apart in "fp32". Without TF32 the two must agree to fp32 rounding.
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        for rows in (16, 5, 16):
            x = torch.randn(rows, 2, 128, 128)
            tol = 1e-4 if precision == "fp32" else 2e-2
            got, want = graphed.predictor.probabilities(x), eager.predictor.probabilities(x)
            torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    assert network.failed == "" and network.graphs == 2
