"""MDANet and baselines: shapes, parameter counts against the paper, ablations, sharing, overfitting."""

from __future__ import annotations

import itertools

import pytest
import torch

from mdanet_sdk.config import DEFAULT_MODEL_SIZE, MDANetConfig
from mdanet_sdk.errors import InputError
from mdanet_sdk.model import AttentionUNet, MDANet, UNet, build_model, count_parameters, model_summary
from mdanet_sdk.model.base import SegmentationModel
from mdanet_sdk.model.blocks import MultiScaleConv
from mdanet_sdk.ops import native_available
from mdanet_sdk.train.trainer import TrainConfig, Trainer


# Our counts are pinned (a change of the architecture must be deliberate) and lie within 4 % of the paper's:
# 25.97 M against 25.3 M for MDANet; the ablations' differences between variants are what tells them apart.
@pytest.mark.parametrize(
    ("overrides", "paper_m", "ours"),
    [
        ({}, 25.3, 25_974_394),  # Table 1
        ({"architecture": "unet"}, 30.0, 31_038_274),  # Table 1
        ({"bottleneck": "none"}, 22.5, 23_003_898),  # Table 5 "Baseline" (no GCFB)
        ({"bottleneck": "nonlocal"}, 27.6, 27_205_370),  # Table 5
    ],
)
def test_paper_parameter_counts(overrides, paper_m, ours):
    count = count_parameters(build_model(MDANetConfig.from_preset("paper", "ctp", **overrides)))
    assert count == ours and count / 1e6 == pytest.approx(paper_m, rel=0.04)


@pytest.mark.parametrize(
    ("preset", "kind", "size"),
    [
        ("small", "mri", 128),
        ("small", "ctp", 256),
        ("paper", "mri", 128),
        ("paper", "ctp", 256),
    ],
)
def test_forward_shapes(preset, kind, size):
    cfg = MDANetConfig.from_preset(preset, kind)
    model = MDANet(cfg).eval()
    x = torch.randn(2 if preset == "small" else 1, cfg.in_channels, size, size)
    with torch.no_grad():
        logits, stems = model.forward_train(x)
    assert logits.shape == (x.shape[0], 2, size, size)
    assert stems[0].shape == stems[1].shape == (x.shape[0], cfg.widths[0], size, size)


@pytest.mark.parametrize("shape", [(1, 2, 100, 128), (1, 2, 128, 120)])
def test_size_not_multiple_of_16_is_refused(shape):
    model = MDANet(MDANetConfig.from_preset("small", "mri")).eval()
    with pytest.raises(InputError, match="multiples of 16"):
        model(torch.randn(*shape))


def test_wrong_channel_count_names_the_modalities():
    model = MDANet(MDANetConfig.from_preset("small", "ctp")).eval()
    with pytest.raises(InputError, match="cbf, cbv, mtt, tmax"):
        model(torch.randn(1, 2, 32, 32))


ABLATIONS = [
    dict(dasc=d, msc=m, skip_fusion=s, bottleneck=b)
    for d, m, s, b in itertools.product(
        (True, False), (True, False), ("subtract", "add", "concat"), ("gcfb", "nonlocal", "transformer", "none")
    )
    if d or s == "subtract"  # skip fusion only exists with the dual path
]


@pytest.mark.parametrize("overrides", ABLATIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_every_ablation_trains_one_step(overrides):
    torch.manual_seed(0)
    cfg = MDANetConfig.from_preset("small", "ctp", **overrides)
    model = MDANet(cfg)
    x = torch.randn(2, 4, 32, 32)
    logits, stems = model.forward_train(x)
    assert logits.shape == (2, 2, 32, 32)
    assert (stems is not None) == cfg.dasc
    logits.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_encoder_is_shared_and_first_stage_is_per_group():
    model = MDANet(MDANetConfig.from_preset("small", "ctp"))
    assert len(model.stems) == 2
    a, b = (set(map(id, stem.parameters())) for stem in model.stems)
    assert a and b and not a & b  # two independent parameter sets
    # One encoder object serves both groups: its parameters exist once in the model.
    enc = [n for n, _ in model.named_parameters() if n.startswith("encoder.")]
    assert len(enc) == len(list(model.encoder.parameters())) > 0
    calls = []
    model.encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    model(torch.randn(1, 4, 32, 32))
    assert calls == [(2, 16, 32, 32)]  # called once, on both groups stacked along the batch
    # The stems see only their group's channels: CTP stems take 2 channels each.
    assert model.stems[0].branches[0][0][0].in_channels == 2


def _settle_batch_norm(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Set every batch norm's running statistics to its batch statistics on ``x`` (in train mode)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    counts: dict[torch.nn.Module, int] = {}
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: repeated passes over one batch give its exact statistics
        bn.register_forward_hook(lambda m, i, o: counts.__setitem__(m, i[0].numel() // i[0].shape[1]))
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
    for bn in norms:
        # The running variance is unbiased (n - 1), training normalises with the biased one (n).
        n = counts[bn]
        bn.running_var.mul_((n - 1) / n)


@pytest.mark.parametrize("bottleneck", ["gcfb", "nonlocal", "transformer", "none"])
def test_train_and_eval_batch_norm_agree_on_settled_statistics(bottleneck):
    """Shared modules see both groups in one batch: train-mode batch statistics are what eval uses.

    Running the shared encoder (or the GCFB conv-BN, or a non-local block) once per group normalised each group
    with its own statistics in training, while evaluation uses one running average of both: with groups of
    different intensity statistics the logits then differed by ~0.06-0.09 here.
    """
    torch.manual_seed(0)
    model = MDANet(MDANetConfig.from_preset("small", "ctp", bottleneck=bottleneck), ops="reference")
    x = torch.randn(4, 4, 64, 64)
    x[:, 2:] = 3 * x[:, 2:] + 2  # the second group with other statistics, as MTT/Tmax have against CBF/CBV
    _settle_batch_norm(model, x)
    with torch.no_grad():
        eval_logits = model.eval()(x)
        train_logits = model.train()(x)  # after eval: a train-mode pass updates the running statistics
    assert train_logits.abs().max() > 0.5
    torch.testing.assert_close(train_logits, eval_logits, atol=1e-4, rtol=0)


def test_baselines():
    unet, att = UNet(), AttentionUNet()
    assert unet.config.architecture == "unet" and att.config.architecture == "attention-unet"
    assert not isinstance(unet, MDANet) and isinstance(att, UNet)
    assert count_parameters(att) > count_parameters(unet)
    x = torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        assert att.eval()(x).shape == unet.eval()(x).shape == (1, 2, 32, 32)


@pytest.mark.parametrize(
    ("architecture", "network"), [("mdanet", MDANet), ("unet", UNet), ("attention-unet", AttentionUNet)]
)
def test_build_model_builds_the_architecture(architecture, network):
    """The ablation switches are MDANet's: a baseline is the same network whatever they say."""
    torch.manual_seed(0)
    model = build_model(MDANetConfig.from_preset("small", "ctp", architecture=architecture))
    assert type(model) is network and isinstance(model, SegmentationModel)
    torch.manual_seed(0)
    switched = build_model(MDANetConfig.from_preset("small", "ctp", architecture=architecture, msc=False)).state_dict()
    same = switched.keys() == model.state_dict().keys() and all(
        torch.equal(switched[name], weight) for name, weight in model.state_dict().items()
    )
    assert same == (architecture != "mdanet")


def test_unet_is_mdanet_with_every_component_off():
    """Table 3's first row: MDANet without DASC, MSC and GCFB is the U-Net, parameter names and seeded weights."""
    cfg = MDANetConfig.from_preset("small", "mri")
    torch.manual_seed(0)
    ablation = MDANet(cfg.replace(dasc=False, msc=False, bottleneck="none")).eval()
    torch.manual_seed(0)
    unet = UNet(cfg.replace(architecture="unet")).eval()
    assert list(ablation.state_dict()) == list(unet.state_dict())
    x = torch.randn(2, 2, 32, 32)
    with torch.no_grad():
        assert torch.equal(ablation(x), unet(x))


def test_encoder_decoder_head():
    """Fig. 3 as modules: the head is not part of the decoder, and the decoder runs deepest level first."""
    model = MDANet(MDANetConfig.from_preset("small", "mri"))
    names = [name for name, _ in model.named_children()]
    assert names == ["stems", "encoder", "bottleneck", "skips", "decoder", "head"]
    assert [n for n, _ in model.named_parameters()][-2:] == ["head.weight", "head.bias"]
    assert [level for level, _, _ in model.decoder.stages()] == [3, 2, 1, 0]
    assert not any(n.startswith("decoder.head") for n in model.state_dict())


def test_ops_are_chosen_when_the_network_is_built():
    cfg = MDANetConfig.from_preset("small", "ctp")
    assert "ops" not in cfg.to_dict()
    model = build_model(cfg, ops="reference")
    assert model.ops == "reference" and model.skips[0].impl == "reference"
    assert model.bottleneck.channel.gcn.impl == model.bottleneck.space.gcn.impl == "reference"
    assert build_model(cfg).ops == "auto" and UNet(ops="reference").ops == "reference"
    with pytest.raises(InputError, match="ops must be one of auto, native, reference"):
        build_model(cfg, ops="cuda")
    with pytest.raises(TypeError):
        MDANetConfig.from_preset("small", "ctp", ops="reference")  # no longer a config field


def test_a_network_refuses_a_config_of_another_architecture():
    with pytest.raises(InputError, match="build_model"):
        MDANet(MDANetConfig.from_preset("unet", "mri"))
    with pytest.raises(InputError, match="'unet'"):
        UNet(MDANetConfig.from_preset("small", "mri"))


def test_msc_has_fewer_parameters_than_double_conv():
    from mdanet_sdk.model.blocks import DoubleConv

    assert count_parameters(MultiScaleConv(64, 128)) < count_parameters(DoubleConv(64, 128))
    assert MultiScaleConv(5, 64)(torch.randn(1, 5, 8, 8)).shape == (1, 64, 8, 8)


@pytest.mark.parametrize("preset", ["paper", "small"])
def test_space_grid_is_the_bottleneck_of_the_model_grid(preset):
    cfg = MDANetConfig.from_preset(preset, "ctp")
    assert cfg.space_grid is None  # N = H·W at whatever size the network is trained at
    assert cfg.resolved(128).space_grid == 8 and cfg.resolved(256).space_grid == 16
    assert cfg.replace(space_grid=16).resolved(128).space_grid == 16  # an explicit grid is kept
    with pytest.raises(InputError, match="multiple of 16"):
        cfg.resolved(100)
    # Built without a known size: the bottleneck of the trainer's default grid, stored in the model's config.
    assert DEFAULT_MODEL_SIZE == TrainConfig(data_dir=".").size
    model = MDANet(MDANetConfig.from_preset("small", "ctp"))
    assert model.config.space_grid == DEFAULT_MODEL_SIZE // 16 == 8
    assert model.bottleneck.space.position.shape == (1, 8 * 8, 256)


def test_trainer_resolves_the_space_grid(tmp_path):
    """From the run's model grid, unless set explicitly or fixed by the weights it fine-tunes."""

    def grid(**kw: object) -> int | None:
        cfg = TrainConfig(
            data_dir=str(tmp_path),
            out_dir=str(tmp_path / "run"),
            layout="generic",
            kind="mri",
            preset="small",
            device="cpu",
            **kw,
        )
        return Trainer(cfg).model_config().space_grid

    assert grid() == 8
    assert grid(size=192) == 12
    assert grid(size=192, model_overrides={"space_grid": 16}) == 16
    assert grid(size=192, init="default-mri") == 8  # the bundled weights' grid (trained at 128, tuned at 192)


def test_old_checkpoint_configs_keep_their_grid():
    old = {**MDANetConfig.from_preset("paper", "ctp").to_dict(), "space_grid": 16}  # the former default
    cfg = MDANetConfig.from_dict(old)
    assert cfg.space_grid == 16 and MDANetConfig.from_dict(cfg.to_dict()) == cfg


def test_config_round_trip_and_newer_fields():
    cfg = MDANetConfig.from_preset("small", "ctp", msc=False)
    assert MDANetConfig.from_dict(cfg.to_dict()) == cfg
    # Checkpoints and export artefacts written before the op implementation left the config carry "ops".
    for ops in ("auto", "native", "reference"):
        assert MDANetConfig.from_dict({**cfg.to_dict(), "ops": ops}) == cfg
    with pytest.raises(InputError, match="newer"):
        MDANetConfig.from_dict({**cfg.to_dict(), "from_the_future": 1})
    with pytest.raises(InputError, match="bottleneck"):
        MDANetConfig.from_preset("small", bottleneck="mamba")


def test_summary_counts_flops():
    info = model_summary(MDANetConfig.from_preset("small", "mri"), size=64)
    assert info["space_grid"] == 4  # the network trained at 64 px: one node per bottleneck position
    assert info["params"] == count_parameters(MDANet(MDANetConfig.from_preset("small", "mri", space_grid=4)))
    assert (info["gflops_per_slice"], info["gmacs_per_slice"]) == (0.408, 0.204)  # torch.utils.flop_counter
    # FLOPs scale with the pixel count: 4× the pixels, about 4× the FLOPs.
    big = model_summary(MDANetConfig.from_preset("small", "mri"), size=128)
    assert big["gflops_per_slice"] == pytest.approx(4 * info["gflops_per_slice"], rel=0.1)


def _disk_pair(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disk = ((yy - 12) ** 2 + (xx - 18) ** 2 < 36).float()
    dwi = 0.2 + disk  # lesion bright in DWI
    adc = 1.0 - 0.8 * disk  # and dark in ADC
    return torch.stack([dwi, adc])[None], disk.long()[None]


def test_small_preset_overfits_a_disk():
    torch.manual_seed(0)
    x, y = _disk_pair()
    model = MDANet(MDANetConfig.from_preset("small", "mri"))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        prob = logits.softmax(1)[:, 1]
        loss = loss + 1 - 2 * (prob * y).sum() / (prob.sum() + y.sum())
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    dice = 2 * (pred * y).sum() / (pred.sum() + y.sum())
    assert dice > 0.9


@pytest.mark.skipif(not native_available(), reason="native ops not built")
def test_paper_model_native_ops_equal_reference():
    torch.manual_seed(0)
    cfg = MDANetConfig.from_preset("paper", "ctp")
    ref = MDANet(cfg, ops="reference").eval()
    nat = MDANet(cfg, ops="native").eval()
    nat.load_state_dict(ref.state_dict())
    x = torch.randn(1, 4, 128, 128)
    with torch.no_grad():
        assert torch.allclose(nat(x), ref(x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("norm", ["batch norm", "folded", "no affine"])
def test_channel_graph_fusion_stays_finite_in_fp16_where_its_products_exceed_fp16(norm) -> None:
    """Real scans drive the GCFB's back-projection ``Ĝᵀ F_θ`` to ~1e5 (fp16 ends at 65504): in fp16 evaluation
    (autocast; with the batch norm, with it folded into the conv, or without its affine part) the block gives
    the fp32 result, not inf."""
    from mdanet_sdk.inference.optimize import fold_batchnorm
    from mdanet_sdk.model.blocks import split_groups, stack_groups
    from mdanet_sdk.model.gcfb import ChannelGraphFusion

    torch.manual_seed(0)
    block = ChannelGraphFusion(32, 8, 16, impl="reference")
    if norm == "no affine":
        block.extend[1] = torch.nn.BatchNorm2d(32, affine=False)
    x = [torch.randn(2, 32, 8, 8) * 80 + 5, torch.randn(2, 32, 8, 8) * 80]
    with torch.no_grad():
        for _ in range(30):  # settle the running statistics
            block(x)
        block.eval()
        f_theta = block.theta(stack_groups(x)).flatten(2)
        graphs = torch.bmm(f_theta, block.phi(stack_groups(x)).flatten(2).transpose(1, 2)) / f_theta.shape[-1]
        updated = stack_groups(block.gcn(torch.cat(split_groups(graphs, 2), dim=1)).split(8, dim=1))
        assert torch.bmm(updated.transpose(1, 2), f_theta).abs().max() > 2 * 65504  # the case this is about
        expected = block(x)
        if norm == "folded":
            fold_batchnorm(block)
        with torch.autocast("cpu", dtype=torch.float16):
            got = block(x)
    for g, e in zip(got, expected):
        assert torch.isfinite(g).all()
        assert (g.float() - e).abs().max() <= 1e-2 * e.abs().max()
