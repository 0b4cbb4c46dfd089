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

``focal`` is MONAI's ``FocalLoss`` (sigmoid, gamma 2, no alpha), the mean over pixels and
classes; ``bce`` is the binary cross-entropy with logits, the same mean. For a batch of one
image each value equals the library's batch-reduced loss, value and gradient, in either
argument order (``tests/test_losses.py``).

The MONAI losses are written out here, with MONAI 1.6's arithmetic step for step, rather
than called: ``import monai`` loads all of MONAI (and mlflow), about 6 s of CPU in every
training and attack process. MONAI stays the reference in the tests.

Under mixed precision call the losses with float32 logits (training does
``loss(logits.float(), masks)``): the Dice pixel sums overflow float16 at 224x224. Half
precision inputs are promoted to float32 here as well.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

PerImageLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

SMOOTH = 1e-5  # MONAI's default smooth_nr and smooth_dr, as in the study
GAMMA = 2.0


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


def _monai_dice(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MONAI ``DiceLoss(sigmoid=True)`` per image and class, ``(N, C)``, in MONAI's operation order."""
    probs = input.sigmoid()
    pixels = list(range(2, input.dim()))
    tp = (probs * target).sum(pixels)
    fp = probs.sum(pixels) - tp
    fn = target.sum(pixels) - tp
    # = sum(p) + sum(t) + SMOOTH, kept in MONAI's form so that the swapped call (logits as
    # target, sums that can cancel) rounds as MONAI does
    return 1 - (2 * tp + SMOOTH) / (2 * (tp + 0.5 * fp + 0.5 * fn) + SMOOTH)


def _monai_focal(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MONAI ``FocalLoss()`` per pixel and class (its sigmoid path, float32 as in MONAI)."""
    input, target = input.float(), target.float()
    bce = input - input * target - F.logsigmoid(input)
    log_one_minus_pt = F.logsigmoid(-input * (target * 2 - 1))
    return (log_one_minus_pt * GAMMA).exp() * bce


def dice(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MONAI soft Dice loss per class, averaged over all classes (absent ones included)."""
    return _monai_dice(*_as_float(input, target)).mean(1)


def focal(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MONAI sigmoid focal loss (gamma 2, no alpha), averaged over pixels and classes.

    MONAI computes it in float32 whatever the input dtype.
    """
    return _per_image(_monai_focal(*_as_float(input, target)))


def dicefocal(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The study's training loss: MONAI ``DiceFocalLoss(sigmoid=True)`` = ``dice`` + ``focal``."""
    return dice(input, target) + focal(input, target)


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
