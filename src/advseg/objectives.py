"""What each attack method follows: the per-image loss whose input gradient it ascends.

FGSM and PGD follow the attack loss named in the config. SegPGD and CosPGD, published for
softmax models, are adapted to sigmoid (multi-label) outputs: every (class, pixel) is its
own binary decision with p = sigmoid(z), prediction 1[z > 0], correctness
m = 1[prediction == y] and base loss the element-wise BCE-with-logits. These two always use
that BCE, whatever the attack loss name.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from advseg.losses import PerImageLoss, get_loss

# objective(logits, masks, step, steps) -> (N,) per-image loss; step counts from 1
Objective = Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor]


def named_loss_objective(loss_name: str, loss_argument_order: str = "standard") -> Objective:
    """The attack loss by name (fgsm, pgd); with order ``study`` every loss, BCE included, is
    called ``loss(mask, logits)`` as the study's ``FGSM_attack`` did for whatever loss it was
    given (sigmoid on the mask, logits as target). Swapped BCE has gradient -mask/N in the
    logits: it pushes every labelled pixel down and never saturates."""
    loss: PerImageLoss = get_loss(loss_name)
    swapped = loss_argument_order == "study"

    def objective(logits, masks, step, steps):
        if swapped:
            return loss(masks.to(logits.dtype), logits)
        return loss(logits, masks)
    return objective


def _elementwise_bce(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, masks.to(logits.dtype), reduction="none")


def segpgd_lambda(step: int, steps: int) -> float:
    """SegPGD's weight of the wrongly classified elements at step t = 1..T: (t - 1) / (2T)."""
    return (step - 1) / (2 * steps)


def segpgd_objective(logits: torch.Tensor, masks: torch.Tensor, step: int, steps: int) -> torch.Tensor:
    """SegPGD for sigmoid outputs: per image mean over (class, pixel) of
    [(1 - λ_t)·m·BCE + λ_t·(1 - m)·BCE], m = 1[1[z > 0] == y] without gradient. Early steps
    push the still-correct elements over the boundary; later ones weigh the flipped ones more."""
    lam = segpgd_lambda(step, steps)
    correct = ((logits.detach() > 0) == (masks > 0.5)).to(logits.dtype)
    weight = (1 - lam) * correct + lam * (1 - correct)
    return (weight * _elementwise_bce(logits, masks)).flatten(1).mean(1)


def cospgd_weights(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """CosPGD's weight for sigmoid outputs: cos([p, 1-p], [y, 1-y]) = p_y / sqrt(p² + (1-p)²),
    p = sigmoid(z), p_y the probability of the true label; no gradient. (A cosine over the
    class vector is undefined on pixels where no class is present, hence the binary pair.)"""
    p = logits.detach().sigmoid()
    p_true = torch.where(masks > 0.5, p, 1 - p)
    return p_true / torch.sqrt(p * p + (1 - p) * (1 - p))


def cospgd_objective(logits: torch.Tensor, masks: torch.Tensor, step: int, steps: int) -> torch.Tensor:
    """CosPGD for sigmoid outputs: per image mean over (class, pixel) of w·BCE; elements still
    predicted confidently right weigh most, those already flipped fade out."""
    return (cospgd_weights(logits, masks) * _elementwise_bce(logits, masks)).flatten(1).mean(1)


# method -> builder(loss_name, loss_argument_order) -> objective
OBJECTIVES: dict[str, Callable[[str, str], Objective]] = {
    "fgsm": named_loss_objective,
    "pgd": named_loss_objective,
    "segpgd": lambda loss_name, order: segpgd_objective,
    "cospgd": lambda loss_name, order: cospgd_objective,
}


def attack_objective(method: str, loss_name: str, loss_argument_order: str) -> Objective:
    return OBJECTIVES[method](loss_name, loss_argument_order)
