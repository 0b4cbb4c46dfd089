"""Segmentation losses on sigmoid logits, one value per image.

Every loss is called ``loss(input, target)``, applies a sigmoid to ``input`` and returns a
``(batch,)`` tensor. Training averages it; attacks sum it, so an image's gradient never
depends on which images share its batch (a loss pooled over the batch would make attack
results change with the batch size). Every loss is differentiable in both arguments: the
study called its training loss with the arguments swapped, ``loss(mask, logits)``, and its
attack took the gradient through ``target``.

Two Dice semantics, named so the difference is visible:

- ``dice``, ``dicefocal`` (the study's, MONAI ``DiceLoss``/``DiceFocalLoss`` with
  ``sigmoid=True``, ``include_background=True``, ``smooth_nr = smooth_dr = 1e-5``): every
  class counts. A class absent from the truth scores ``1 - 1e-5 / (sum(p) + 1e-5)``, so
  predicting it is penalised (about 1 as soon as the summed probability exceeds ~1e-4).
- ``dice_present``, ``dicefocal_present`` (segmentation-models-pytorch's multilabel
  ``DiceLoss``): a class absent from the truth contributes 0, whatever is predicted.

``focal`` is MONAI's ``FocalLoss`` (gamma 2, no alpha), the mean over pixels and classes;
``bce`` is the binary cross-entropy with logits, the same mean. For a batch of one image
each value equals the library's batch-reduced loss (``tests/test_losses.py``).

Under mixed precision call the losses with float32 logits (training does
``loss(logits.float(), masks)``): the Dice pixel sums overflow float16 at 224x224. Half
precision inputs are promoted to float32 here as well.
"""

from __future__ import annotations

from functools import cache
from typing import Callable

import torch
import torch.nn.functional as F

PerImageLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

SMOOTH = 1e-5  # MONAI's default smooth_nr and smooth_dr, as in the study
GAMMA = 2.0


@cache
def _monai(name: str) -> torch.nn.Module:
    """MONAI's loss with the study's settings and no reduction, built on first use.

    ``import monai`` loads all of MONAI's subpackages (seconds of CPU), so only processes that
    compute a MONAI loss pay for it.
    """
    from monai.losses import DiceFocalLoss, DiceLoss, FocalLoss

    if name == "dice":
        return DiceLoss(sigmoid=True, include_background=True, smooth_nr=SMOOTH, smooth_dr=SMOOTH, reduction="none")
    if name == "focal":
        return FocalLoss(include_background=True, gamma=GAMMA, reduction="none")
    return DiceFocalLoss(sigmoid=True, include_background=True, smooth_nr=SMOOTH, smooth_dr=SMOOTH, gamma=GAMMA,
                         reduction="none")


def _as_float(input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both tensors as float64 if either is, else float32 (masks come as uint8, logits maybe float16)."""
    if input.shape != target.shape or input.dim() < 3:
        raise ValueError(f"loss input {tuple(input.shape)} and target {tuple(target.shape)} must have the same "
                         "(batch, classes, H, W) shape")
    dtype = torch.float64 if torch.float64 in (input.dtype, target.dtype) else torch.float32
    return input.to(dtype), target.to(dtype)


def _per_image(values: torch.Tensor) -> torch.Tensor:
    """Mean over every axis but the batch: MONAI's ``reduction="mean"`` for each image alone."""
    return values.flatten(1).mean(1)


def bce(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits, averaged over each image's pixels and classes."""
    input, target = _as_float(input, target)
    return _per_image(F.binary_cross_entropy_with_logits(input, target, reduction="none"))


def dice(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MONAI soft Dice loss per class, averaged over all classes (absent ones included)."""
    return _per_image(_monai("dice")(*_as_float(input, target)))


def focal(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MONAI sigmoid focal loss (gamma 2, no alpha), averaged over pixels and classes.

    MONAI computes it in float32 whatever the input dtype.
    """
    return _per_image(_monai("focal")(*_as_float(input, target)))


def dicefocal(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The study's training loss: MONAI ``DiceFocalLoss(sigmoid=True)`` = ``dice`` + ``focal``."""
    # reduction="none" broadcasts the (N, C, 1, 1) Dice onto the (N, C, H, W) focal term, so
    # the mean over (C, H, W) is mean-over-classes Dice + mean-over-pixels focal
    return _per_image(_monai("dicefocal")(*_as_float(input, target)))


def dice_present(input: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """smp's multilabel soft Dice loss: classes absent from ``target`` contribute 0.

    The mean is still over all classes (as smp), so an image with one of three classes present
    has a loss of at most 1/3.
    """
    input, target = _as_float(input, target)
    probs = input.sigmoid().flatten(2)
    truth = target.flatten(2)
    intersection = (probs * truth).sum(2)
    cardinality = (probs + truth).sum(2)
    loss = 1 - 2 * intersection / cardinality.clamp_min(eps)
    present = truth.detach().sum(2) > 0
    return (loss * present).mean(1)


def dicefocal_present(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``dice_present`` + ``focal``: smp's Dice + Focal, blind to predictions on absent classes."""
    return dice_present(input, target) + focal(input, target)


LOSSES: dict[str, PerImageLoss] = {
    "bce": bce,
    "dice": dice,
    "focal": focal,
    "dicefocal": dicefocal,
    "dice_present": dice_present,
    "dicefocal_present": dicefocal_present,
}


def get_loss(name: str) -> PerImageLoss:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}")
    return LOSSES[name]
