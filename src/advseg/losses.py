"""Segmentation losses on sigmoid logits, one value per image.

Every loss returns a ``(batch,)`` tensor. Training averages it; attacks sum it, so an
image's gradient never depends on which images share its batch (smp's DiceLoss pools
over the batch, which would make attack results change with the batch size). For one
image the values equal smp's ``DiceLoss``/``FocalLoss``/``BCEWithLogitsLoss`` in
multilabel mode (``tests/test_losses.py``).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

PerImageLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bce(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy, averaged over each image's pixels and classes."""
    per_pixel = F.binary_cross_entropy_with_logits(logits, masks.to(logits.dtype), reduction="none")
    return per_pixel.flatten(1).mean(1)


def dice(logits: torch.Tensor, masks: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """1 - soft Dice per class, averaged over classes; a class absent from the truth scores 0."""
    probs = logits.sigmoid().flatten(2)
    truth = masks.to(probs.dtype).flatten(2)
    intersection = (probs * truth).sum(2)
    cardinality = (probs + truth).sum(2)
    loss = 1 - 2 * intersection / cardinality.clamp_min(eps)
    present = truth.sum(2) > 0
    return (loss * present).mean(1)


def focal(logits: torch.Tensor, masks: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (gamma 2, no alpha), averaged over pixels and classes as smp's multilabel FocalLoss."""
    log_pt = F.binary_cross_entropy_with_logits(logits, masks.to(logits.dtype), reduction="none")
    per_pixel = (1 - torch.exp(-log_pt)) ** gamma * log_pt
    return per_pixel.flatten(2).mean(2).mean(1)


def dice_focal(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The study's training loss: Dice + Focal."""
    return dice(logits, masks) + focal(logits, masks)


LOSSES: dict[str, PerImageLoss] = {
    "bce": bce,
    "dice": dice,
    "focal": focal,
    "dicefocal": dice_focal,
}


def get_loss(name: str) -> PerImageLoss:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}")
    return LOSSES[name]
