"""FGSM for segmentation, with the gradient shared across an epsilon sweep.

FGSM (Goodfellow et al. 2015) moves each pixel by eps in the direction that raises
the loss: ``x_adv = clamp(x + eps * sign(grad_x L), 0, 1)``. The sign does not depend
on eps, so a sweep over E epsilons needs one backward pass and E forward passes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from advseg.losses import PerImageLoss
from advseg.models import as_model_input

METHODS = ("fgsm",)


def gradient_sign(model: nn.Module, images: torch.Tensor, masks: torch.Tensor,
                  loss: PerImageLoss) -> tuple[torch.Tensor, torch.Tensor]:
    """sign(d loss / d image) per pixel of the grey slice, and the clean logits.

    The batch loss is the sum of per-image losses, so each image's sign is that of its
    own loss. The model's parameter gradients are left untouched.
    """
    images = images.detach().clone().requires_grad_(True)
    logits = model(as_model_input(images))
    (grad,) = torch.autograd.grad(loss(logits, masks).sum(), images)
    return grad.sign().to(torch.int8), logits.detach()


def fgsm(images: torch.Tensor, grad_sign: torch.Tensor, eps: float) -> torch.Tensor:
    """One FGSM step of size eps, kept in the valid intensity range [0, 1]."""
    return (images + eps * grad_sign.to(images.dtype)).clamp(0.0, 1.0)


def perturbation_size(images: np.ndarray, adv_images: np.ndarray) -> dict[str, float]:
    """The perturbation actually applied (after clamping): max |delta| and mean per-image L2 norm."""
    delta = (adv_images - images).reshape(len(images), -1)
    return {"linf": float(np.abs(delta).max()), "l2": float(np.linalg.norm(delta, axis=1).mean())}
