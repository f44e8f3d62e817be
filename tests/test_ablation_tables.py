"""Tables 5 and 6 of the paper's ablations, the paper's figures beside ours, and the transformer bottleneck."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.errors import CheckpointError
from mdanet_sdk.model import MDANet, build_model, count_parameters
from mdanet_sdk.model.fusion import AttentionFusion, TransformerBlock, TransformerFusion
from mdanet_sdk.data.preprocess import PreprocessConfig
from mdanet_sdk.train.checkpoint import load_checkpoint, save_checkpoint

# -- the transformer bottleneck (Table 5) ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ctp", "mri"])
def test_transformer_bottleneck_has_the_papers_parameter_count(kind: str) -> None:
    """Table 5: 61.7 M with the transformer bottleneck; per-group self-attention makes up the difference."""
    with torch.device("meta"):
        model = build_model(MDANetConfig.from_preset("paper", kind, bottleneck="transformer"))
        baseline = build_model(MDANetConfig.from_preset("paper", kind, bottleneck="none"))
    assert count_parameters(model) / 1e6 == pytest.approx(61.7, rel=0.10)
    fusion = model.bottleneck
    assert isinstance(fusion, TransformerFusion) and len(fusion.self_layers) == 2
    a, b = (set(map(id, layer.parameters())) for layer in fusion.self_layers)
    assert a and b and not a & b  # separate weights per group
    c = 1024
    block = 12 * c * c + 15 * c  # attention 4C² + 4C, MLP 8C² + 5C, three layer norms
    assert count_parameters(model) - count_parameters(baseline) == 3 * block + 8 * 8 * c  # + position embedding


def test_transformer_bottleneck_uses_the_position_embedding_at_any_size() -> None:
    torch.manual_seed(0)
    cfg = MDANetConfig.from_preset("small", "ctp", bottleneck="transformer", space_grid=2)
    fusion = MDANet(cfg).bottleneck.eval()
    assert isinstance(fusion, TransformerFusion)
    assert tuple(fusion.position.shape) == (1, 256, 2, 2)
    maps = [torch.randn(2, 256, 2, 2), torch.randn(2, 256, 2, 2)]
    with torch.no_grad():
        before = fusion(maps)
        assert before.shape == (2, 256, 2, 2)
        # Each group has its own self-attention: swapping the groups is no longer a mere sign change...
        assert not fusion([maps[1], maps[0]]).neg().allclose(before, atol=1e-3)
        shared = copy.deepcopy(fusion)
        shared.self_layers[1].load_state_dict(shared.self_layers[0].state_dict())
        # ... which it is with the same weights for both: the output is cross(a, b) - cross(b, a).
        torch.testing.assert_close(shared([maps[1], maps[0]]), -shared(maps), atol=1e-5, rtol=0)
        fusion.position.add_(torch.randn_like(fusion.position))
        assert not fusion(maps).allclose(before, atol=1e-3)  # the embedding is added to the tokens
        assert fusion([torch.randn(1, 256, 4, 4)] * 2).shape == (1, 256, 4, 4)  # resized to another grid
    single = MDANet(cfg.replace(dasc=False)).bottleneck
    assert isinstance(single, TransformerFusion)
    assert len(single.self_layers) == 1 and single([torch.randn(1, 256, 2, 2)]).shape == (1, 256, 2, 2)


def test_old_transformer_checkpoint_is_refused_as_not_fitting(tmp_path: Path) -> None:
    """Weights of the earlier shared-layer transformer bottleneck cannot load into today's network."""
    cfg = MDANetConfig.from_preset("small", "ctp", bottleneck="transformer", space_grid=2)
    old = MDANet(cfg)
    old.bottleneck = AttentionFusion(TransformerBlock(256), TransformerBlock(256))  # the earlier layout
    path = save_checkpoint(tmp_path / "old.pt", old, cfg, PreprocessConfig(size=32))
    with pytest.raises(CheckpointError, match=r"do not fit its model config \(missing \['bottleneck\.position'"):
        load_checkpoint(path)
