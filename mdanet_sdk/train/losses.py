"""Losses of MDANet, paper section 3.4.

``L = L_segment + λ · L_similarity`` (Eq. 9), with ``L_segment = L_dice + L_ce`` (Eq. 10-12) and the masked
cosine similarity loss of Eq. 8 on the two modality groups' stem features.

Class 1 of the logits is the lesion; every non-zero label of the target counts as lesion for the mask of the
similarity loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdanet_sdk.errors import InputError

__all__ = ["dice_loss", "similarity_loss", "DiceCELoss", "MDANetLoss"]

LESION = 1  # index of the lesion class in the logits


def _check_seg_inputs(logits: Tensor, target: Tensor) -> None:
    if logits.dim() != 4 or logits.shape[1] < 2:
        raise InputError(f"logits must be (B, K, H, W) with K >= 2 classes, got shape {tuple(logits.shape)}.")
    if target.shape != (logits.shape[0], *logits.shape[2:]):
        raise InputError(
            f"target must be (B, H, W) = {(logits.shape[0], *logits.shape[2:])} to match the logits, "
            f"got {tuple(target.shape)}."
        )


def dice_loss(logits: Tensor, target: Tensor, eps: float = 1e-5, per_slice: bool = False) -> Tensor:
    """Soft Dice loss of the lesion class, Eq. 11: ``1 - (2 Σ p·y + ε) / (Σ p + Σ y + ε)``.

    ``p`` is the softmax probability of class 1 and ``y`` the binary lesion target. The sums run over the
    whole batch (all slices and pixels at once), not per slice: slices without lesion are common, and a
    per-slice Dice would be 0/0 (or ±ε-noise) on them. On the batch an empty slice simply adds its false
    positive probability mass to the denominator. ``ε`` only keeps an all-empty batch finite (loss ≈ 0 when
    nothing is predicted either).

    With ``per_slice`` the Dice is taken per slice and averaged over the slices that hold lesion (the batch
    Dice when none does): every lesion slice then weighs the same, so a lacune of 20 pixels pulls as hard as a
    territorial infarct of 2000 (the batch sum lets the large lesions dominate). False positives on empty
    slices are left to the cross entropy.

    Args:
        logits: ``(B, K, H, W)`` raw scores, ``K >= 2``.
        target: ``(B, H, W)`` integer labels in ``[0, K)``.
        eps: smoothing added to numerator and denominator.
        per_slice: mean Dice over the lesion slices instead of one Dice over the batch.

    Returns:
        Scalar tensor in ``[0, 1]``.
    """
    _check_seg_inputs(logits, target)
    # float32 softmax: the sums over a whole batch of pixels lose precision in half precision.
    prob = torch.softmax(logits.float(), dim=1)[:, LESION]
    truth = (target == LESION).to(prob.dtype)
    if per_slice and (lesion := truth.sum(dim=(1, 2)) > 0).any():
        prob, truth = prob[lesion], truth[lesion]
        intersection = (prob * truth).sum(dim=(1, 2))
        return (1.0 - (2.0 * intersection + eps) / (prob.sum(dim=(1, 2)) + truth.sum(dim=(1, 2)) + eps)).mean()
    intersection = (prob * truth).sum()
    return 1.0 - (2.0 * intersection + eps) / (prob.sum() + truth.sum() + eps)


def similarity_loss(f_a: Tensor, f_b: Tensor, lesion: Tensor, eps: float = 1e-8) -> Tensor:
    """Masked cosine similarity loss, Eq. 8: ``1 - A·B / (‖A‖ ‖B‖)``, averaged over the batch.

    ``A`` and ``B`` are the two groups' stem features global-average-pooled over the non-lesion pixels only,
    so the loss pulls healthy tissue of both groups together and leaves the lesion free to differ.
    The lesion mask is resized (nearest) when the features have another resolution. A sample whose slice
    is lesion everywhere has nothing to pool and is left out of the batch mean (the loss is 0 when no
    sample is left).

    Args:
        f_a: ``(B, C, H, W)`` features of modality group 1.
        f_b: ``(B, C, H, W)`` features of modality group 2.
        lesion: ``(B, H', W')`` or ``(B, 1, H', W')`` lesion mask, non-zero = lesion.
        eps: guards the pooling denominator and the cosine norms.

    Returns:
        Scalar tensor in ``[0, 2]``; 0 when the pooled vectors point the same way.
    """
    if f_a.dim() != 4 or f_a.shape != f_b.shape:
        raise InputError(
            f"f_a and f_b must both be (B, C, H, W) of one shape, got {tuple(f_a.shape)} and {tuple(f_b.shape)}."
        )
    if lesion.dim() == 3:
        lesion = lesion.unsqueeze(1)
    if lesion.dim() != 4 or lesion.shape[1] != 1 or lesion.shape[0] != f_a.shape[0]:
        raise InputError(
            f"lesion must be (B, H, W) or (B, 1, H, W) with B = {f_a.shape[0]}, got {tuple(lesion.shape)}."
        )
    keep = (lesion == 0).float()
    if keep.shape[-2:] != f_a.shape[-2:]:
        keep = F.interpolate(keep, size=f_a.shape[-2:], mode="nearest")
    # float32 pooling: sums over a whole feature map overflow half precision.
    area = keep.sum(dim=(2, 3))  # (B, 1)
    pooled_a = (f_a.float() * keep).sum(dim=(2, 3)) / (area + eps)
    pooled_b = (f_b.float() * keep).sum(dim=(2, 3)) / (area + eps)
    per_sample = 1.0 - F.cosine_similarity(pooled_a, pooled_b, dim=1, eps=eps)
    valid = (area[:, 0] > 0).float()
    return (per_sample * valid).sum() / valid.sum().clamp(min=1.0)


class DiceCELoss(nn.Module):
    """Segmentation loss, Eq. 10: lesion soft Dice (:func:`dice_loss`) + pixel-mean cross entropy.

    Args:
        eps: Dice smoothing, see :func:`dice_loss`.
        per_slice: Dice averaged over the lesion slices instead of over the batch, see :func:`dice_loss`.

    Shape:
        ``forward(logits (B, K, H, W), target (B, H, W) long) -> scalar``.
    """

    def __init__(self, eps: float = 1e-5, per_slice: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.per_slice = per_slice

    def components(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """The two terms, ``(dice, ce)``, each a scalar tensor with gradient."""
        dice = dice_loss(logits, target, self.eps, self.per_slice)
        return dice, F.cross_entropy(logits.float(), target.long())

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        dice, ce = self.components(logits, target)
        return dice + ce


class MDANetLoss(nn.Module):
    """The full training loss, Eq. 9: ``L = L_dice + L_ce + λ · L_similarity``.

    Args:
        lam: λ, weight of the similarity term (the paper uses 1, Table 6).
        eps: Dice smoothing, see :func:`dice_loss`.
        per_slice: Dice averaged over the lesion slices instead of over the batch, see :func:`dice_loss`.

    Shape:
        ``forward(logits (B, K, H, W), target (B, H, W) long, stems)`` where ``stems`` is the pair of the
        two groups' stem features ``((B, C, h, w), (B, C, h, w))``, or ``None`` for networks without
        modality groups (the baselines): then there is no similarity term.

    Returns:
        ``(total, parts)``: the scalar loss to back-propagate and a dict of detached scalar tensors for
        logging, with keys ``"dice"``, ``"ce"``, ``"seg"``, ``"total"`` and, when ``stems`` is given,
        ``"sim"``.
    """

    def __init__(self, lam: float = 1.0, eps: float = 1e-5, per_slice: bool = False) -> None:
        super().__init__()
        if lam < 0:
            raise InputError(f"lam (the similarity weight λ) must be >= 0, got {lam}.")
        self.lam = float(lam)
        self.seg = DiceCELoss(eps, per_slice)

    def forward(
        self, logits: Tensor, target: Tensor, stems: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        dice, ce = self.seg.components(logits, target)
        seg = dice + ce
        parts = {"dice": dice, "ce": ce, "seg": seg}
        total = seg
        if stems is not None:
            sim = similarity_loss(stems[0], stems[1], target != 0)
            parts["sim"] = sim
            total = seg + self.lam * sim
        parts["total"] = total
        return total, {name: value.detach() for name, value in parts.items()}
