"""The CPU speed-ups of issue 17 change no mask in substance: agreement tests (no timing is asserted here).

* today's behaviour (fp32, contiguous, batch 16, no folding) and the new defaults give the same masks on the
  demo phantom, OOD phantoms and the real ISLES'22 case;
* bf16 (forced, whatever this CPU has) agrees with fp32 (Dice >= 0.99), and ``precision="auto"`` picks bf16
  only on a CPU with native bf16 and falls back to fp32, saying so, for a model that fails the probe;
* the pieces: batch-norm folding, the footprint batch size, the native ops on channels_last and bf16 maps,
  the pinned host staging (its CPU-visible logic).
"""

from __future__ import annotations

import logging
import platform
import subprocess
import sys
from pathlib import Path
from typing import Literal, cast

import numpy as np
import pytest
import torch
from ood_phantoms import ood_case

from mdanet_sdk import device as device_mod
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.data.cases import find_cases
from mdanet_sdk.data.phantom import write_dataset
from mdanet_sdk.data.preprocess import PreprocessConfig
from mdanet_sdk.errors import InputError
from mdanet_sdk.inference import Segmenter, precision_check
from mdanet_sdk.inference.inputs import case_from_arrays
from mdanet_sdk.inference.postprocess import PostprocessConfig
from mdanet_sdk.inference.predictor import TTA_SCREEN, Predictor
from mdanet_sdk.inference.results import SegmentationResult
from mdanet_sdk.inference.optimize import auto_batch_size, fold_batchnorm, optimize_for_inference
from mdanet_sdk.inference.transfer import MAX_BUFFERS, HostStaging
from mdanet_sdk.metrics import dsc
from mdanet_sdk.model import build_model
from mdanet_sdk.ops import native, reference
from mdanet_sdk.train.checkpoint import BUNDLED, Checkpoint

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "isles22-example"
bundled = pytest.mark.skipif(not all(p.is_file() for p in BUNDLED.values()), reason="bundled weights not generated")
real_case = pytest.mark.skipif(not REAL.is_dir(), reason="shared/data/isles22-example is not available")
needs_native = pytest.mark.skipif(not native.available(), reason="native ops not built")
retain_available = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

#: The Segmenter options that reproduce the behaviour before issue 17.
TODAY = {"precision": "fp32", "channels_last": False, "batch_size": 16, "optimize": False}
CPU = torch.device("cpu")
Kind = Literal["mri", "ctp"]


def _segmenters(kind: Kind, **common: object) -> tuple[Segmenter, Segmenter]:
    return (
        Segmenter.default(kind, device="cpu", **TODAY, **common),
        Segmenter.default(kind, device="cpu", **common),
    )


# -- today's behaviour vs the new defaults -----------------------------------------------------------------------
@bundled
def test_defaults_are_the_optimised_cpu_path() -> None:
    today, new = _segmenters("mri")
    assert (today.precision, today.channels_last, today.batch_size) == ("fp32", False, 16)
    # On this machine's CPU class (no native bf16) the defaults stay fp32; the batch comes from the footprint.
    expected = "bf16" if device_mod.cpu_has_native_bf16() else "fp32"
    assert (new.precision, new.channels_last, new.batch_size) == (expected, True, 16)
    model = cast(torch.nn.Module, new.predictor.models[0])
    weights = [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] > 1]
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def _assert_alike(a: SegmentationResult, b: SegmentationResult, new: Segmenter) -> None:
    """Today's result ``a`` against the defaults' ``b``; every case here has a lesion that today's mask finds."""
    assert a.mask.sum() > 20, "two empty masks would agree whatever the defaults did"
    if new.precision == "fp32":
        # Folding and the layout change float rounding only: probabilities within 1e-4, masks identical up to a
        # voxel sitting on the threshold (Dice >= 0.999).
        assert np.abs(a.probability - b.probability).max() < 1e-4
        assert dsc(a.mask, b.mask) >= 0.999
    else:  # bf16 on a CPU with native bf16: the masks must not change in substance (issue 17)
        assert dsc(a.mask, b.mask) >= 0.99


def _assert_same_masks(today: Segmenter, new: Segmenter, images: dict, affine: np.ndarray) -> None:
    _assert_alike(today.predict_arrays(images, affine), new.predict_arrays(images, affine), new)


@bundled
@pytest.mark.parametrize("kind", ["mri", "ctp"])
def test_defaults_keep_the_masks_on_ood_phantoms(kind: Kind) -> None:
    today, new = _segmenters(kind, tta=False)
    for seed in (0, 1):
        case = ood_case(kind, seed)
        _assert_same_masks(today, new, case.images, case.affine)


@bundled
def test_defaults_keep_the_mask_of_the_demo_phantom(tmp_path) -> None:
    from mdanet_sdk.cli.demo import DEMO_SEED

    (source,) = find_cases(write_dataset(tmp_path, "isles22", n_cases=1, seed=DEMO_SEED, pattern="territorial"))
    today, new = _segmenters("mri", tta=False)
    a, b = today.predict(source), new.predict(source)
    assert a.mask.sum() > 100  # the territorial infarct is found
    _assert_alike(a, b, new)


@bundled
@real_case
def test_defaults_keep_the_mask_of_the_real_case() -> None:
    # With the checkpoint's post-processing (TTA), as segment runs it: without TTA, bf16 moves one 6-voxel
    # component of the 310 voxels the default-mri of 2026-12-04 marks (Dice 0.982); with TTA the masks are identical.
    today, new = _segmenters("mri")
    a, b = today.predict(REAL), new.predict(REAL)
    assert a.mask.sum() > 0
    _assert_alike(a, b, new)


# -- TTA screen: flips only for slices with a lesion candidate ----------------------------------------------------
class _SpotModel(torch.nn.Module):
    """Logits whose lesion probability is high where channel 0 is above 0.5, with a left-right bias so that
    the flips disagree (their average differs from the un-flipped pass); records each batch size."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        ramp = torch.linspace(0.0, 2.0, x.shape[-1])
        lesion = 12.0 * (x[:, 0] - 0.5) + ramp
        return torch.stack([torch.zeros_like(lesion), lesion], dim=1)


def test_tta_screen_flips_only_the_slices_with_a_candidate() -> None:
    x = torch.zeros(4, 1, 16, 16)
    x[1, 0, 4:8, 4:8] = 1.0  # slices 1 and 3 hold a bright spot, 0 and 2 nothing
    x[3, 0, 10:14, 2:6] = 1.0
    settings = PostprocessConfig(tta=True, threshold=0.5)
    model = _SpotModel()
    full = Predictor([model], ["m"], CPU, "fp32", settings, 4, tta_screen=0.0).probabilities(x)
    assert model.batches == [4, 4, 4, 4]
    model.batches.clear()
    screened = Predictor([model], ["m"], CPU, "fp32", settings, 4, tta_screen=TTA_SCREEN).probabilities(x)
    assert model.batches == [4, 2, 2, 2]  # the un-flipped pass on all four, the flips on the two with a spot
    torch.testing.assert_close(screened[[1, 3]], full[[1, 3]])
    plain = torch.sigmoid(12.0 * (x[[0, 2], 0] - 0.5) + torch.linspace(0.0, 2.0, 16))
    torch.testing.assert_close(screened[[0, 2]], plain)  # the un-flipped probability, far under the threshold
    assert float(screened[[0, 2]].max()) < TTA_SCREEN * settings.threshold
    assert not torch.allclose(full[[0, 2]], plain)  # the flips did differ there: the screen skipped real work


class _ConstantModel(torch.nn.Module):
    """Lesion probability 0.75 everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lesion = torch.full_like(x[:, 0], float(torch.logit(torch.tensor(0.75))))
        return torch.stack([torch.zeros_like(lesion), lesion], dim=1)


def test_tta_screen_of_an_ensemble_reads_the_models_mean() -> None:
    """A fold that sees nothing in a slice does not screen it out while another fold sees a lesion there: the
    screen reads the ensemble's un-flipped mean, so the ensemble's probability is the full TTA one."""
    x = torch.zeros(4, 1, 16, 16)
    x[1, 0, 4:8, 4:8] = 1.0
    settings = PostprocessConfig(tta=True, threshold=0.5)
    models = [_SpotModel(), _ConstantModel()]
    full = Predictor(models, ["a", "b"], CPU, "fp32", settings, 4, tta_screen=0.0).probabilities(x)
    models[0].batches.clear()
    screened = Predictor(models, ["a", "b"], CPU, "fp32", settings, 4, tta_screen=TTA_SCREEN).probabilities(x)
    assert models[0].batches == [4, 4, 4, 4]  # every slice passes on the mean, so every slice is flipped
    torch.testing.assert_close(screened, full)
    alone = torch.sigmoid(12.0 * (x[0, 0] - 0.5) + torch.linspace(0.0, 2.0, 16))
    assert float(alone.max()) < TTA_SCREEN * settings.threshold  # fold a alone would have screened slice 0 out


def _screen_dice(seg: Segmenter, case: object) -> float:
    masks = []
    for screen in (0.0, TTA_SCREEN):
        seg.predictor.tta_screen = screen
        if hasattr(case, "affine"):
            result = seg.predict_arrays(case.images, case.affine)  # type: ignore[attr-defined]
        else:
            result = seg.predict(case)  # type: ignore[arg-type]
        masks.append(result.mask)
    return 1.0 if not masks[0].any() and not masks[1].any() else dsc(masks[0], masks[1])


@pytest.mark.slow
@bundled
@pytest.mark.parametrize("kind", ["mri", "ctp"])
def test_tta_screen_keeps_the_masks_of_unseen_phantoms(kind: Kind) -> None:
    from mdanet_sdk.data.phantom import make_phantom

    seg = Segmenter.default(kind, device="cpu", tta=True)
    layout = "isles22" if kind == "mri" else "isles18"
    cases = [make_phantom(layout, 9100 + i, domain=d) for i, d in enumerate(("classic", "randomised"))]
    for case in [*cases, ood_case(kind, 0), ood_case(kind, 1)]:
        assert _screen_dice(seg, case) >= 0.99


@bundled
@real_case
def test_tta_screen_keeps_the_mask_of_the_real_case() -> None:
    seg = Segmenter.default("mri", device="cpu", tta=True)
    assert _screen_dice(seg, REAL) >= 0.99


# -- bf16 against fp32 ----------------------------------------------------------------------------------------------
def _bf16_dice(kind: Kind, images: dict, affine: np.ndarray, tta: bool = False) -> float:
    fp32 = Segmenter.default(kind, device="cpu", precision="fp32", tta=tta).predict_arrays(images, affine)
    bf16 = Segmenter.default(kind, device="cpu", precision="bf16", tta=tta).predict_arrays(images, affine)
    assert fp32.mask.sum() > 20, "every case here has a lesion: two empty masks would agree on nothing"
    return dsc(fp32.mask, bf16.mask)


@bundled
@pytest.mark.parametrize("kind", ["mri", "ctp"])
def test_bf16_masks_agree_with_fp32_on_ood_phantoms(kind: Kind) -> None:
    for seed in (0, 1):
        case = ood_case(kind, seed)
        assert _bf16_dice(kind, case.images, case.affine) >= 0.99, f"{kind} OOD phantom {seed}"


@pytest.mark.slow
@bundled
@real_case
def test_bf16_mask_agrees_with_fp32_on_the_real_case() -> None:
    from mdanet_sdk.data.cases import read_case

    case = read_case(REAL, label=False)
    # TTA as the checkpoint asks (see test_defaults_keep_the_mask_of_the_real_case): Dice 1.000 measured
    assert _bf16_dice("mri", case.images, case.reference.affine, tta=True) >= 0.99


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, monkeypatch) -> None:
    with_bf16 = tmp_path / "with"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n\nprocessor\t: 1\n")
    without = tmp_path / "without"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_vnni\n")
    assert "avx512_bf16" in device_mod._cpuinfo_flags(str(with_bf16))
    assert not device_mod._cpuinfo_flags(str(without)) & device_mod.NATIVE_BF16_FLAGS
    assert device_mod._cpuinfo_flags(str(tmp_path / "missing")) == frozenset()
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: True)
    assert device_mod.resolve_precision("auto", CPU, inference=True) == "bf16"
    assert device_mod.resolve_precision("auto", CPU) == "fp32"  # training keeps fp32
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: False)
    assert device_mod.resolve_precision("auto", CPU, inference=True) == "fp32"
    assert device_mod.resolve_precision("bf16", CPU, inference=True) == "bf16"  # asked for: honoured


@bundled
def test_auto_picks_bf16_on_a_native_bf16_cpu_when_the_probe_agrees(monkeypatch) -> None:
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: True)
    seg = Segmenter.default("mri", device="cpu")
    assert seg.precision == "bf16" and seg.precision_note == ""
    key = next(k for k in precision_check._CACHE if k[0] == tuple(seg.weights_sha256))
    assert precision_check._CACHE[key] >= precision_check.MIN_PROBE_DICE


@bundled
def test_auto_falls_back_to_fp32_and_says_so_when_the_probe_disagrees(monkeypatch, caplog) -> None:
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(precision_check, "_CACHE", {})
    calls = []

    def disagreeing(predictor, slices, precision):
        calls.append(slices.shape)
        return 0.9

    monkeypatch.setattr(precision_check, "probe_dice", disagreeing)
    with caplog.at_level(logging.WARNING):
        seg = Segmenter.default("mri", device="cpu")
        again = Segmenter.default("mri", device="cpu")
    assert seg.precision == "fp32" and again.precision == "fp32"
    assert "Dice 0.900" in seg.precision_note and "precision='bf16'" in seg.precision_note
    assert "runs in fp32" in caplog.text
    assert len(calls) == 1  # cached per weights digest
    assert calls[0][1:] == (2, 128, 128)
    # Asked for explicitly, bf16 is not second-guessed.
    assert Segmenter.default("mri", device="cpu", precision="bf16").precision == "bf16"


def test_probe_dice_is_zero_for_non_finite_logits_and_one_for_identical_masks() -> None:
    from mdanet_sdk.inference.postprocess import PostprocessConfig
    from mdanet_sdk.inference.predictor import Predictor

    slices = precision_check.probe_slices(("t1", "flair"), PreprocessConfig())
    assert slices.shape[1] == 2 and np.isfinite(slices).all()
    conv = torch.nn.Conv2d(2, 2, 1).eval()
    good = Predictor([conv], ["c"], CPU, "bf16", PostprocessConfig())
    assert precision_check.probe_dice(good, slices, "bf16") > 0.9

    def broken(x: torch.Tensor) -> torch.Tensor:
        out = conv(x)
        return out * float("inf") if torch.is_autocast_enabled("cpu") else out

    bad = Predictor([broken], ["b"], CPU, "bf16", PostprocessConfig())
    assert precision_check.probe_dice(bad, slices, "bf16") == 0.0


# -- the pieces ----------------------------------------------------------------------------------------------------
def test_fold_batchnorm_keeps_the_function() -> None:
    torch.manual_seed(0)
    model = build_model(MDANetConfig.from_preset("small", "mri")).eval()
    for m in model.modules():  # non-trivial statistics, so a wrong fold shows
        if isinstance(m, torch.nn.BatchNorm2d):
            cast(torch.Tensor, m.running_mean).uniform_(-0.5, 0.5)
            cast(torch.Tensor, m.running_var).uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(2, 2, 64, 64)
    with torch.no_grad():
        before = model(x)
        assert fold_batchnorm(model) == norms
        after = model(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert (after - before).abs().max() < 1e-4 * before.abs().max()
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(model.train())


def test_batch_size_by_footprint_and_explicit_honoured(ckpt_random, tmp_path) -> None:
    small, paper = MDANetConfig.from_preset("small", "mri"), MDANetConfig.from_preset("paper", "mri")
    assert auto_batch_size(small, (128, 128), CPU) == 16
    assert auto_batch_size(paper, (256, 256), CPU) == 1
    assert auto_batch_size(paper, (128, 128), CPU) == 4
    assert auto_batch_size(paper, (256, 256), torch.device("cuda")) == 16
    ckpt = ckpt_random(tmp_path / "r.pt")
    seg = Segmenter.from_checkpoint(ckpt, device="cpu", batch_size=3)
    images = {"dwi": np.random.default_rng(0).random((40, 40, 7), dtype=np.float32) + 1}
    images["adc"] = images["dwi"][::-1].copy()
    events: list[int] = []
    case = case_from_arrays(images, np.eye(4), "c")
    list(seg.predict_many([case], progress=lambda e, _id, n: events.append(n) if e == "slices" else None))
    assert events == [3, 3, 1]
    seg.batch_size = None  # automatic; this checkpoint's grid depends on each case (no preprocessing size)
    assert seg.batch_size is None and seg.predictor.batch_for((128, 128)) == 16
    assert seg.predictor.batch_for((512, 512)) == 1
    with pytest.raises(InputError, match="batch_size"):
        seg.batch_size = 0


def test_channels_last_input_gives_the_same_probabilities(ckpt_random, tmp_path) -> None:
    ckpt = ckpt_random(tmp_path / "r.pt")
    plain = Segmenter.from_checkpoint(ckpt, device="cpu", precision="fp32", channels_last=False, optimize=False)
    fast = Segmenter.from_checkpoint(ckpt, device="cpu", precision="fp32")
    assert fast.channels_last and not plain.channels_last
    x = torch.randn(5, 2, 64, 48)
    np.testing.assert_allclose(fast.probabilities(x).numpy(), plain.probabilities(x).numpy(), atol=1e-5)


def test_compile_wraps_the_built_models_only() -> None:
    model = build_model(MDANetConfig.from_preset("small", "mri")).eval()
    compiled = optimize_for_inference(model, CPU, compile=True)
    # lazily compiled (nothing runs here), around the very model whose batch norms were folded in place
    assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule) and compiled._orig_mod is model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert optimize_for_inference(model, CPU) is model  # without compile (and on a CPU): no wrapper


@needs_native
def test_native_dasc_gate_keeps_channels_last_and_bf16() -> None:
    from mdanet_sdk import ops

    torch.manual_seed(0)
    a, b, de = (torch.randn(2, 8, 12, 10).contiguous(memory_format=torch.channels_last) for _ in range(3))
    w = (torch.randn(4, 8), torch.randn(4, 8), torch.randn(4), torch.randn(4), torch.randn(1))
    expected = reference.dasc_gate(a.contiguous(), b.contiguous(), de.contiguous(), *w)
    with torch.profiler.profile() as prof:
        out = ops.dasc_gate(a, b, de, *w, impl="native")
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # The CPU kernel reads channels_last maps as they are: no layout copy in or out.
    copies = [e.key for e in prof.key_averages() if e.key in ("aten::copy_", "aten::clone", "aten::contiguous")]
    assert copies == []
    # An NCHW map among channels_last ones is copied to the output's layout, and the result is the same.
    mixed = ops.dasc_gate(a, b, de.contiguous(), *w, impl="native")
    assert mixed.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(mixed, expected, rtol=1e-5, atol=1e-5)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        half = ops.dasc_gate(a.bfloat16(), b.bfloat16(), de.bfloat16(), *w, impl="native")
        adj, adj_bias, feat, feat_bias = torch.randn(6, 6), torch.randn(6), torch.randn(5, 5), torch.randn(5)
        graph = ops.graph_conv(torch.randn(2, 6, 5).bfloat16(), adj, adj_bias, feat, feat_bias, impl="native")
    # In inference the kernels run on the bf16 maps themselves (no fp32 copies).
    assert half.dtype == torch.bfloat16 and graph.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), expected, rtol=0.05, atol=0.1)


class _FakeEvent:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def synchronize(self) -> None:
        self.log.append(f"wait {self.name}")


class _CpuStaging(HostStaging):
    """The staging logic with plain host buffers and fake events, so it runs without CUDA."""

    def __init__(self) -> None:
        super().__init__(CPU)
        self.enabled, self.allocated = True, 0
        self.log: list[str] = []

    def _allocate(self, key):
        self.allocated += 1
        return torch.empty(key[0], dtype=key[1])

    def _event(self):
        return _FakeEvent(self.log, f"copy{len(self.log)}")


def test_host_staging_is_a_no_op_on_cpu_and_reuses_buffers_after_their_copy() -> None:
    x = torch.randn(2, 3)
    assert HostStaging(CPU).to_device(x) is x  # nothing staged for a CPU device
    staging = _CpuStaging()
    first = staging.to_device(x)
    torch.testing.assert_close(first, x)
    staging.to_device(torch.randn(2, 3))
    assert staging.allocated == 1 and staging.log == ["wait copy0"]  # reused once its copy was done
    for rows in range(3, 3 + MAX_BUFFERS):
        staging.to_device(torch.randn(rows, 3))
    assert len(staging._buffers) == MAX_BUFFERS and (2, 3) not in {k[0] for k in staging._buffers}
    assert staging.allocated == 1 + MAX_BUFFERS


# -- freed memory kept in the process ----------------------------------------------------------------------------
_FAULTS = """
import resource, sys, torch
from mdanet_sdk.device import retain_cpu_memory
applied = retain_cpu_memory() if sys.argv[1] == "retain" else False
for _ in range(10):  # the heap settles within about 6 (thread arenas, small blocks between the large ones)
    torch.ones(16 * 2**20).sum()  # 64 MB: past glibc's largest mmap threshold
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(16 * 2**20).sum()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not retain_available, reason="needs glibc's mallopt (Linux)")
def test_retained_memory_is_reused_without_page_faults() -> None:
    """Ten 64 MB tensors after a warm-up: glibc maps and faults in fresh pages for each (16384 pages of 4 KiB
    each time); with the memory kept, pages already in the process serve them."""
    faults = {}
    for mode in ("system", "retain"):
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
        applied, count = out.stdout.split()
        assert applied == str(mode == "retain")
        faults[mode] = int(count)
    # With the memory kept, at most 2 of the 10 (a heap still settling) fault in fresh pages: measured 0 or 1.
    assert faults["system"] > 10 * 16384 * 0.9 and faults["retain"] <= 2 * 16384, faults


def test_segmenter_keeps_memory_on_cpu_unless_told(monkeypatch, tmp_path) -> None:
    from mdanet_sdk.inference import segmenter as segmenter_mod

    calls: list[int] = []
    monkeypatch.setattr(segmenter_mod, "retain_cpu_memory", lambda: calls.append(1) or True)
    config = MDANetConfig.from_preset("small", "mri")
    checkpoint = [Checkpoint(config, PreprocessConfig(), build_model(config).state_dict(), {}, None)]
    assert Segmenter(checkpoint, device="cpu").retains_memory is True and calls == [1]
    assert Segmenter(checkpoint, device="cpu", retain_memory=False).retains_memory is False and calls == [1]
