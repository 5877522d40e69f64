"""MemSAM's training loss and the validation Dice.

Loss (reference ``utils/loss_functions/sam_loss.py`` ``Mask_DC_and_BCE_lossV2``, chosen for MemSAM
by ``get_criterion``): 0.2 x BCE-with-logits (positive weight 2) + 0.8 x soft Dice of the sigmoid,
the Dice with squared terms in the denominator and smoothing 1e-5.

One difference: the reference's Dice term indexes channel 0 of a (batch, frames, H, W) tensor, so it
scores only the clip's first frame while BCE covers every supervised frame. Here the Dice term
covers every supervised frame (one soft Dice over all of them), which is what the formula intends;
for a 2-frame (ED/ES) supervision this adds the ES frame to the Dice term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["BCE_WEIGHT", "DICE_WEIGHT", "POSITIVE_WEIGHT", "dice_score", "memsam_loss", "soft_dice_loss"]

DICE_WEIGHT = 0.8
BCE_WEIGHT = 1.0 - DICE_WEIGHT
POSITIVE_WEIGHT = 2.0
_SMOOTH = 1e-5


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - (2 sum(p t) + s) / (sum(p^2) + sum(t^2) + s) over the whole tensor, p = sigmoid(logits)."""
    probability = torch.sigmoid(logits)
    intersection = (probability * target).sum()
    total = (probability * probability).sum() + (target * target).sum()
    return 1.0 - (2.0 * intersection + _SMOOTH) / (total + _SMOOTH)


def memsam_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Loss of the supervised frames: logits and target of the same shape (N x H x W or N x 1 x H x W)."""
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
    logits, target = logits.float(), target.float()
    positive_weight = torch.tensor(POSITIVE_WEIGHT, device=logits.device)
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=positive_weight)
    return BCE_WEIGHT * bce + DICE_WEIGHT * soft_dice_loss(logits, target)


def dice_score(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Dice of two binary masks with the reference evaluation's smoothing (2TP + 1e-5) / (2TP + FP + FN + 1e-5)."""
    prediction, target = prediction.bool(), target.bool()
    true_positive = (prediction & target).sum().item()
    false_positive = (prediction & ~target).sum().item()
    false_negative = (~prediction & target).sum().item()
    return (2.0 * true_positive + _SMOOTH) / (2.0 * true_positive + false_positive + false_negative + _SMOOTH)
