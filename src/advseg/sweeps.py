"""The chores every attack sweep shares: checked inputs, where the model lives, its eval mode.

:func:`advseg.attacks.attack_sweep`, :func:`advseg.apgd.apgd_sweep` and the smoothing
certificate take them from here, so they agree on the rules: eps in [0, 1], (N, H, W)
images with (N, C, H, W) masks, the device and dtype of the model's parameters, and eval
mode with only the input needing a gradient, restored afterwards.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from advseg import settings as config_schema


def checked_inputs(model: nn.Module, images, masks, epsilons, batch_size: int):
    """(images, masks, epsilons, device, dtype) as the sweep uses them; a ValueError names what is wrong."""
    epsilons = [float(eps) for eps in epsilons]
    config_schema.fill("attack", {"epsilons": epsilons, "batch_size": batch_size})  # raises naming the key
    images, masks = torch.as_tensor(images), torch.as_tensor(masks)
    if images.ndim != 3 or masks.ndim != 4 or len(images) != len(masks) or images.shape[1:] != masks.shape[2:]:
        raise ValueError(f"images {tuple(images.shape)} and masks {tuple(masks.shape)}: expected (N, H, W) "
                         f"and (N, C, H, W) of the same N, H, W")
    return (images, masks, epsilons, *model_placement(model))


def model_placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype of the model's parameters (the CPU and float32 without any)."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    return device, dtype


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (BatchNorm on running statistics) and no parameter gradients, restored on exit."""
    was_training = model.training
    needed_grad = [p.requires_grad for p in model.parameters()]
    model.eval()
    model.requires_grad_(False)
    try:
        yield model
    finally:
        model.train(was_training)
        for parameter, flag in zip(model.parameters(), needed_grad):
            parameter.requires_grad_(flag)
