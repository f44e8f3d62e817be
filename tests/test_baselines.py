"""The baselines of Tables 1-2 added for issue 18 (U-Net++, MSNet, TransUNet, Swin-UNet): presets, shapes, the
parameter counts of the MDANet paper and of the original papers, config round trips, one epoch of training
through the real trainer and a TorchScript export."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
import torch

from mdanet_sdk.config import BASELINE_PRESETS, MAX_PARAMETERS, PRESETS, MDANetConfig, estimate_parameters
from mdanet_sdk.data.phantom import write_dataset
from mdanet_sdk.errors import InputError
from mdanet_sdk.export import BatchRange, export_model, load_artifact, probe_batch
from mdanet_sdk.model import (
    NETWORKS,
    MSNet,
    SwinUNet,
    TransUNet,
    UNetPlusPlus,
    build_model,
    count_parameters,
    model_summary,
)
from mdanet_sdk.model.base import SegmentationModel
from mdanet_sdk.train.checkpoint import load_checkpoint
from mdanet_sdk.train.trainer import TrainConfig, train

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit:DeprecationWarning")

NEW = {"unetpp": UNetPlusPlus, "msnet": MSNet, "transunet": TransUNet, "swin-unet": SwinUNet}
SMALL = PRESETS["small"]
#: Widths of the networks trained and exported here (0.2-2 M parameters: what is tested is the path, not the fit).
TINY = (8, 16, 32, 64, 64)
#: The MDANet paper's parameter counts in M (Tables 1-2): (ISLES 2018, CTP; ISLES 2022, MRI).
PAPER_M = {"unetpp": (35.0, 35.0), "msnet": (20.3, 20.3), "transunet": (175.3, 175.3), "swin-unet": (106.0, 105.4)}
#: The slice size of each dataset in the paper (what the two Swin-UNet counts differ by says).
SIZES = {"ctp": 256, "mri": 128}


def _small(preset: str, kind: str = "mri", **overrides: object) -> MDANetConfig:
    return MDANetConfig.from_preset(preset, kind, widths=SMALL, **overrides)


@pytest.fixture(scope="module")
def small_models() -> dict[tuple[str, str], SegmentationModel]:
    """``(preset, kind) → `` the small-width network, seeded with 0 (built once for the tests that only run it)."""
    models = {}
    for preset in NEW:
        for kind in ("mri", "ctp"):
            torch.manual_seed(0)
            models[preset, kind] = build_model(_small(preset, kind))
    return models


#: The paper-width networks built for their counts: every baseline on ISLES 2018 (CTP, 256 px), and Swin-UNet on
#: ISLES 2022 too, the one network whose count the paper gives per dataset.
BUILT = [*((preset, "ctp") for preset in NEW), ("swin-unet", "mri")]


@pytest.fixture(scope="module")
def paper_counts() -> dict[tuple[str, str], tuple[int, int]]:
    """``(preset, kind) → (parameters, estimate)`` of the :data:`BUILT` networks, built once each and freed."""
    counts = {}
    for preset, kind in BUILT:
        config = MDANetConfig.from_preset(preset, kind).resolved(SIZES[kind])
        model = build_model(config)
        assert type(model) is NEW[preset] and model.config.widths == PRESETS["paper"]
        counts[preset, kind] = (count_parameters(model), estimate_parameters(config))
        del model
        gc.collect()
    return counts


def test_presets_name_the_architectures():
    assert set(NEW) <= set(BASELINE_PRESETS) and all(NETWORKS[name] is cls for name, cls in NEW.items())
    for preset in NEW:
        config = MDANetConfig.from_preset(preset, "ctp")
        assert config.architecture == preset == config.preset and config.widths == PRESETS["paper"]
        assert config.in_channels == 4
    with pytest.raises(InputError, match="unetpp, msnet, transunet, swin-unet"):
        MDANetConfig.from_preset("unet++")


@pytest.mark.parametrize(("preset", "kind"), BUILT)
def test_paper_parameter_counts(paper_counts, preset, kind):
    """Within 15 % of the MDANet paper's Tables 1-2; the estimate refuses no preset and is a close upper bound."""
    params, estimate = paper_counts[preset, kind]
    assert params / 1e6 == pytest.approx(PAPER_M[preset][0 if kind == "ctp" else 1], rel=0.15)
    assert params <= estimate <= 1.05 * params < MAX_PARAMETERS
    # The estimate is exact for the networks without Swin's relative position tables.
    assert (estimate == params) == (preset != "swin-unet")
    # A model built for the MRI groups differs only by the first layer's input channels (and Swin's grid).
    if preset != "swin-unet":
        mri = MDANetConfig.from_preset(preset, "mri").resolved(128)
        assert 0 < params - estimate_parameters(mri) < 20_000 + 192 * 1024


def test_swin_unet_counts_differ_between_the_datasets_as_in_the_paper(paper_counts):
    """106.0 M vs 105.4 M: the absolute position embedding of a 64² (256 px) vs a 32² (128 px) token grid."""
    difference = paper_counts["swin-unet", "ctp"][0] - paper_counts["swin-unet", "mri"][0]
    assert difference == (64**2 - 32**2) * 192 + (4 - 2) * 16 * 192  # position embeddings, 2 more input channels
    assert difference / 1e6 == pytest.approx(106.0 - 105.4, abs=0.06)


def test_original_papers_configurations():
    """At their own papers' settings the networks have the counts those papers report."""
    rgb, gray = (("r",), ("g", "b")), (("x",), ("y",))
    # TransUNet, R50-ViT-B/16 on 224 px RGB, 9 Synapse classes: 105.28 M (the estimate is exact for TransUNet).
    b16 = MDANetConfig(groups=rgb, architecture="transunet", widths=(64, 128, 256, 512, 768), num_classes=9)
    assert estimate_parameters(b16.replace(space_grid=14)) == 105_277_081
    # Swin-UNet, embedding 96 (Swin-T): 27.17 M without the position embedding (window 8 adds 7392 to window 7's).
    swin = build_model(
        MDANetConfig(groups=rgb, architecture="swin-unet", widths=(32, 64, 128, 256, 512), num_classes=9)
    )
    assert isinstance(swin, SwinUNet)
    assert (count_parameters(swin) - swin.absolute_pos_embed.numel() - 7392) / 1e6 == pytest.approx(27.17, abs=0.005)
    # U-Net++ at widths 32..512, one output: 9.04 M (Zhou et al. 2018, Table 2).
    unetpp = build_model(
        MDANetConfig(groups=gray, architecture="unetpp", widths=(32, 64, 128, 256, 512), num_classes=1)
    )
    assert count_parameters(unetpp) / 1e6 == pytest.approx(9.04, abs=0.01)


def test_estimates_refuse_huge_configs_before_building():
    for preset in NEW:
        with pytest.raises(InputError, match="parameters"):
            MDANetConfig.from_preset(preset, "ctp", widths=(512, 1024, 2048, 4096, 4096))


@pytest.mark.parametrize("preset", list(NEW))
@pytest.mark.parametrize("kind", ["mri", "ctp"])
def test_forward_shapes(small_models, preset, kind):
    model = small_models[preset, kind].eval()
    channels = 2 if kind == "mri" else 4
    for size in (32, 64):
        x = torch.randn(2, channels, size, size)
        with torch.no_grad():
            logits, features = model.forward_train(x)
        assert logits.shape == (2, 2, size, size) and features is None
        assert torch.isfinite(logits).all() and logits.std() > 0
    x = torch.randn(3, channels, 64, 32)  # not square
    with torch.no_grad():
        assert model(x).shape == (3, 2, 64, 32)
    with pytest.raises(InputError, match="multiples of 16"):
        model(torch.randn(1, channels, 40, 32))
    with pytest.raises(InputError, match="Expected input"):
        model(torch.randn(1, channels + 1, 32, 32))


@pytest.mark.parametrize("size", [48, 96])
def test_swin_unet_refuses_sizes_its_windows_do_not_divide(small_models, size):
    model = small_models["swin-unet", "mri"].eval()
    with pytest.raises(InputError, match="windows"):
        model(torch.randn(1, 2, size, size))


def test_every_parameter_learns(small_models):
    # 64 px: at 32 Swin-UNet's bottleneck is one token, whose attention (a softmax over one key) has no gradient.
    for preset in NEW:
        model = small_models[preset, "ctp"].train()
        model.zero_grad(set_to_none=True)
        model(torch.randn(2, 4, 64, 64)).square().mean().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not missing, (preset, missing[:5])


@pytest.mark.parametrize("preset", list(NEW))
def test_config_round_trip_rebuilds_the_network(preset):
    torch.manual_seed(0)
    model = build_model(MDANetConfig.from_preset(preset, "ctp", widths=TINY).resolved(64)).eval()
    stored = json.loads(json.dumps(model.config.to_dict()))
    config = MDANetConfig.from_dict(stored)
    assert config == model.config and config.architecture == preset
    torch.manual_seed(0)
    rebuilt = build_model(config).eval()
    state, again = model.state_dict(), rebuilt.state_dict()
    assert list(state) == list(again) and all(torch.equal(state[k], again[k]) for k in state)
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


def test_position_embeddings_follow_the_model_grid():
    """TransUNet's and Swin-UNet's embeddings are built for the trained grid and resized for others."""
    transunet = build_model(_small("transunet").resolved(64))
    swin = build_model(_small("swin-unet").resolved(64))
    assert isinstance(transunet, TransUNet) and isinstance(swin, SwinUNet)
    assert transunet.position_embedding.shape == (1, 4, 4, 256)  # 64 / 16 tokens per side, D = widths[4]
    assert swin.absolute_pos_embed.shape == (1, 16, 16, 48)  # 64 / 4 tokens per side, 3 * widths[0]
    default = build_model(_small("swin-unet"))
    assert isinstance(default, SwinUNet) and default.absolute_pos_embed.shape[1] == 32  # 128 px default grid


def test_summary_counts_the_baselines():
    for preset in NEW:
        config = _small(preset)
        info = model_summary(config, size=32)
        params, estimate = info["params"], estimate_parameters(config.resolved(32))
        assert info["architecture"] == preset and isinstance(params, int) and info["gflops_per_slice"] > 0
        # the estimate is exact but for Swin-UNet's relative position tables (counted one column per feature)
        assert params == estimate if preset != "swin-unet" else params < estimate < 1.1 * params


@pytest.fixture(scope="module")
def tiny_mri(tmp_path_factory) -> Path:
    """10 ISLES'22-like phantoms of 32×32×6 voxels."""
    return write_dataset(tmp_path_factory.mktemp("tiny") / "isles22", "isles22", 10, seed=3, shape=(32, 32, 6))


@pytest.mark.parametrize("preset", list(NEW))
def test_trains_one_epoch_and_exports_to_torchscript(preset, tiny_mri, tmp_path):
    run = tmp_path / "run"
    result = train(
        TrainConfig(
            tiny_mri,
            run,
            preset=preset,
            model_overrides={"widths": list(TINY)},
            epochs=1,
            fold=0,
            size=32,
            batch_size=4,
            steps_per_epoch=2,
            workers=0,
            quiet=True,
        )
    )
    assert result.folds[0].epochs_run == 1 and result.folds[0].val_cases
    checkpoint = load_checkpoint(run / "fold_0" / "best.pt")
    assert checkpoint.model_config.architecture == preset and checkpoint.model_config.widths == TINY
    model = checkpoint.build_model().eval()
    assert type(model) is NEW[preset]
    exported = export_model(
        model,
        "torchscript",
        tmp_path / f"{preset}.ts",
        preprocess=checkpoint.preprocess.to_dict(),
        batch=BatchRange(1, 2, 4),
    )
    artifact = load_artifact(exported.path)
    assert artifact.model_config == checkpoint.model_config
    x = probe_batch(4, 2, 32, 32, seed=7)
    with torch.no_grad():
        expected = model(x)
    got = artifact(x)
    assert got.shape == expected.shape == (4, 2, 32, 32)
    assert (got - expected).abs().max().item() <= 1e-4


def test_summary_of_a_size_the_network_cannot_run_is_one_error():
    """TransUNet's 1×1 bottleneck at 16² has one value per channel for its batch norm: a sentence, not a
    traceback (``mdanet-sdk summary --preset transunet --size 16`` used to crash)."""
    with pytest.raises(InputError, match="cannot run on 16×16 slices"):
        model_summary(MDANetConfig.from_preset("transunet", "mri"), size=16)
