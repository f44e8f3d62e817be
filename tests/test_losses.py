"""Tests of mdanet_sdk.train.losses (paper Eq. 8-12)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mdanet_sdk.errors import InputError
from mdanet_sdk.train.losses import DiceCELoss, MDANetLoss, dice_loss, similarity_loss


def _confident_logits(target: torch.Tensor, k: int = 2, scale: float = 30.0) -> torch.Tensor:
    """(B, K, H, W) logits that put ~all mass on the target class."""
    return scale * (2.0 * F.one_hot(target, k).permute(0, 3, 1, 2).float() - 1.0)


@pytest.fixture
def target() -> torch.Tensor:
    t = torch.zeros(2, 8, 8, dtype=torch.long)
    t[0, 2:5, 3:6] = 1  # 9 lesion pixels in the first slice; the second slice is empty
    return t


# ---------------------------------------------------------------- Dice / CE


def test_dice_perfect_prediction_is_zero(target: torch.Tensor) -> None:
    assert dice_loss(_confident_logits(target), target).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_inverted_prediction_is_one(target: torch.Tensor) -> None:
    assert dice_loss(_confident_logits(1 - target), target).item() == pytest.approx(1.0, abs=1e-6)


def test_dice_empty_batch_predicted_empty_is_zero() -> None:
    empty = torch.zeros(3, 4, 4, dtype=torch.long)
    assert dice_loss(_confident_logits(empty), empty).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_hand_value_over_batch(target: torch.Tensor) -> None:
    # p = 0.5 everywhere: 1 - 2·(0.5·9) / (0.5·128 + 9) = 1 - 9/73, summed over both slices.
    logits = torch.zeros(2, 2, 8, 8)
    assert dice_loss(logits, target, eps=0.0).item() == pytest.approx(1 - 9 / 73, rel=1e-6)


def test_dice_per_slice_weighs_each_lesion_slice_equally() -> None:
    # p = 0.5 everywhere; slice 0 holds 1 lesion pixel, slice 1 holds 16, slice 2 none (left out):
    # per slice 1 - 2·(0.5·n) / (0.5·64 + n), averaged over slices 0 and 1.
    target = torch.zeros(3, 8, 8, dtype=torch.long)
    target[0, 0, 0] = 1
    target[1, 2:6, 2:6] = 1
    logits = torch.zeros(3, 2, 8, 8)
    expected = ((1 - 1 / 33) + (1 - 16 / 48)) / 2
    assert dice_loss(logits, target, eps=0.0, per_slice=True).item() == pytest.approx(expected, rel=1e-6)
    # the batch Dice lets the large lesion dominate: 1 - 17 / (0.5·192 + 17)
    assert dice_loss(logits, target, eps=0.0).item() == pytest.approx(1 - 17 / 113, rel=1e-6)


def test_dice_per_slice_without_lesion_falls_back_to_batch() -> None:
    empty = torch.zeros(2, 4, 4, dtype=torch.long)
    logits = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    assert dice_loss(logits, empty, per_slice=True).item() == pytest.approx(dice_loss(logits, empty).item())


def test_dice_ce_is_sum_and_gradients_flow(target: torch.Tensor) -> None:
    logits = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss = DiceCELoss()(logits, target)
    expected = dice_loss(logits, target) + F.cross_entropy(logits, target)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum().item() > 0


@pytest.mark.parametrize(
    ("logits_shape", "target_shape"),
    [((2, 1, 8, 8), (2, 8, 8)), ((2, 2, 8, 8), (2, 1, 8, 8)), ((2, 2, 8, 8), (2, 8, 4)), ((2, 8, 8), (2, 8))],
)
def test_dice_rejects_bad_shapes(logits_shape: tuple[int, ...], target_shape: tuple[int, ...]) -> None:
    with pytest.raises(InputError):
        dice_loss(torch.zeros(logits_shape), torch.zeros(target_shape, dtype=torch.long))


# ---------------------------------------------------------------- similarity


def _features(seed: int, shape: tuple[int, ...] = (2, 4, 8, 8)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_similarity_identical_features_is_zero(target: torch.Tensor) -> None:
    f = _features(0)
    assert similarity_loss(f, f.clone(), target).item() == pytest.approx(0.0, abs=1e-6)


def test_similarity_different_features_is_positive(target: torch.Tensor) -> None:
    assert similarity_loss(_features(0), _features(1), target).item() > 0.1


def test_similarity_hand_value_orthogonal_and_opposite() -> None:
    # Healthy pixels pool to (1, 0) vs (0, 1): cos 0 → loss 1; the lesion pixel holds huge values to ignore.
    f_a = torch.zeros(2, 2, 2, 2)
    f_b = torch.zeros(2, 2, 2, 2)
    f_a[:, 0] = 1.0
    f_b[0, 1] = 1.0
    f_b[1, 0] = -1.0  # second sample: (1, 0) vs (-1, 0), cos -1 → loss 2
    lesion = torch.zeros(2, 2, 2)
    lesion[:, 0, 0] = 1
    f_a[:, :, 0, 0] = 1e3
    f_b[:, :, 0, 0] = -1e3
    assert similarity_loss(f_a, f_b, lesion).item() == pytest.approx((1.0 + 2.0) / 2, abs=1e-6)


def test_similarity_ignores_lesion_pixels(target: torch.Tensor) -> None:
    f_a, f_b = _features(0), _features(1)
    base = similarity_loss(f_a, f_b, target)
    inside = target.bool().unsqueeze(1).expand_as(f_a)
    changed = f_a.clone()
    changed[inside] = 100.0
    assert similarity_loss(changed, f_b, target).item() == pytest.approx(base.item(), abs=1e-6)
    # ...while the same change outside the lesion does move it.
    outside = f_a.clone()
    outside[~inside] += 3.0
    assert abs(similarity_loss(outside, f_b, target).item() - base.item()) > 1e-3


def test_similarity_resizes_mask_to_features() -> None:
    # Lesion on an 8×8 grid, features on 4×4: the nearest-resized mask covers feature pixels (0..1, 0..1).
    lesion = torch.zeros(1, 1, 8, 8)
    lesion[..., :4, :4] = 1
    f_a, f_b = _features(2, (1, 3, 4, 4)), _features(3, (1, 3, 4, 4))
    base = similarity_loss(f_a, f_b, lesion)
    changed = f_a.clone()
    changed[..., :2, :2] = -50.0
    assert similarity_loss(changed, f_b, lesion).item() == pytest.approx(base.item(), abs=1e-6)
    keep = torch.ones(4, 4, dtype=torch.bool)
    keep[:2, :2] = False
    expected = 1 - F.cosine_similarity(f_a[0][:, keep].mean(1), f_b[0][:, keep].mean(1), dim=0)
    assert base.item() == pytest.approx(expected.item(), rel=1e-5)


def test_similarity_all_lesion_sample_left_out() -> None:
    f_a, f_b = _features(0, (2, 4, 4, 4)), _features(1, (2, 4, 4, 4))
    lesion = torch.zeros(2, 4, 4)
    lesion[1] = 1
    assert similarity_loss(f_a, f_b, lesion).item() == pytest.approx(
        similarity_loss(f_a[:1], f_b[:1], lesion[:1]).item(), rel=1e-6
    )
    assert similarity_loss(f_a[1:], f_b[1:], lesion[1:]).item() == 0.0


def test_similarity_rejects_bad_shapes() -> None:
    with pytest.raises(InputError):
        similarity_loss(torch.zeros(2, 4, 8, 8), torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 8))
    with pytest.raises(InputError):
        similarity_loss(torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 8, 8), torch.zeros(3, 8, 8))


# ---------------------------------------------------------------- total


def test_mdanet_loss_combines_terms_and_backpropagates(target: torch.Tensor) -> None:
    logits = _features(4, (2, 2, 8, 8)).requires_grad_()
    stems = (_features(5, (2, 4, 4, 4)).requires_grad_(), _features(6, (2, 4, 4, 4)).requires_grad_())
    total, parts = MDANetLoss(lam=0.5)(logits, target, stems)
    assert set(parts) == {"dice", "ce", "seg", "sim", "total"}
    dice, ce = DiceCELoss().components(logits, target)
    assert (parts["dice"].item(), parts["ce"].item()) == pytest.approx((dice.item(), ce.item()))
    assert parts["seg"].item() == pytest.approx(dice.item() + ce.item())
    # Eq. 8 pools the stems outside the lesion: the mask given must be the target's (pooling all differs)
    sim = similarity_loss(stems[0], stems[1], target != 0).item()
    assert parts["sim"].item() == pytest.approx(sim) and sim > 0
    assert similarity_loss(stems[0], stems[1], torch.zeros_like(target, dtype=torch.bool)).item() != pytest.approx(sim)
    expected = parts["dice"] + parts["ce"] + 0.5 * parts["sim"]
    assert total.item() == pytest.approx(expected.item())
    assert not any(p.requires_grad for p in parts.values())
    total.backward()
    for t in (logits, *stems):
        assert t.grad is not None and t.grad.abs().sum().item() > 0


def test_mdanet_loss_without_stems_is_segmentation_only(target: torch.Tensor) -> None:
    logits = _features(4, (2, 2, 8, 8))
    total, parts = MDANetLoss()(logits, target, None)
    assert "sim" not in parts
    assert total.item() == pytest.approx(DiceCELoss()(logits, target).item(), rel=1e-6)


def test_mdanet_loss_rejects_negative_lambda() -> None:
    with pytest.raises(InputError):
        MDANetLoss(lam=-1.0)
