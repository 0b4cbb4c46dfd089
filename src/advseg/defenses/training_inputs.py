"""Defenses by training: each turns a training batch into the inputs the model trains on.

A batch maker is ``make(model, images, masks, loss, settings, generator) -> images``: grey
slices (N, H, W) in, grey slices out, on the images' device; ``loss`` is the training loss
(per image, :mod:`advseg.losses`), ``generator`` the training's CPU generator, so a resumed
training draws the same noise and random starts. The training loop trains on what it gets.

- ``noise`` (Gaussian-noise augmentation): x + σ·ε, not clamped to [0, 1], the noise that
  randomized smoothing will add, so that a model meant for smoothing is trained for it.
- ``fast_at`` (Wong, Rice and Kolter 2020): one FGSM step of alpha·eps (alpha 1.25) from a
  random start δ ~ U(−eps, eps), projected onto the eps-ball and [0, 1].
- ``pgd_at`` (Madry et al. 2018): PGD with a random start, ``steps`` steps of alpha·eps,
  maximising the training loss itself; the last iterate is trained on.

The attacks run in the model's current mode, as in the reference code (in training, BatchNorm
uses the batch's statistics), and take only the input's gradient: the parameters' gradients
are not touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import nn

from advseg import settings as config_schema
from advseg.attacks import project
from advseg.defenses.eot import objective_gradient
from advseg.losses import PerImageLoss
from advseg.models import as_model_input


# settings of defense.<name>: the schema holds the defaults and the checks (made by training_inputs)
@dataclass(frozen=True)
class NoiseSettings:
    sigma: float                  # noise standard deviation, in grey intensity units


@dataclass(frozen=True)
class FastATSettings:
    eps: float                    # the L∞ radius trained against
    alpha: float                  # the FGSM step, a fraction of eps (Wong et al.: 1.25)


@dataclass(frozen=True)
class PGDATSettings:
    eps: float                    # the L∞ radius trained against
    steps: int                    # PGD steps per batch (each a forward and a backward; Madry et al.: 7)
    alpha: float                  # the step, a fraction of eps (Madry et al.: 2/255 for eps 8/255, 0.25)


def noise_inputs(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, loss: PerImageLoss,
                 settings: NoiseSettings, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=generator, dtype=torch.float32)
    return images + settings.sigma * noise.to(device=images.device, dtype=images.dtype)


def _pgd_from_random_start(model, images, masks, loss, eps, steps, step_size, generator) -> torch.Tensor:
    start = 2 * torch.rand(images.shape, generator=generator, dtype=torch.float32) - 1
    adversarial = project(images + eps * start.to(device=images.device, dtype=images.dtype), images, eps)
    def objective(logits, masks, step, steps):
        return loss(logits, masks)
    for step in range(1, steps + 1):
        grad = objective_gradient(model, as_model_input, adversarial, masks, objective, step, steps)[2]
        adversarial = project(adversarial + step_size * grad.sign(), images, eps)
    return adversarial.detach()


def fast_at_inputs(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, loss: PerImageLoss,
                   settings: FastATSettings, generator: torch.Generator) -> torch.Tensor:
    return _pgd_from_random_start(model, images, masks, loss, settings.eps, 1, settings.alpha * settings.eps,
                                  generator)


def pgd_at_inputs(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, loss: PerImageLoss,
                  settings: PGDATSettings, generator: torch.Generator) -> torch.Tensor:
    return _pgd_from_random_start(model, images, masks, loss, settings.eps, settings.steps,
                                  settings.alpha * settings.eps, generator)


# defense name -> (settings class, batch maker)
TRAINING_DEFENSES: dict[str, tuple[type, Callable]] = {
    "noise": (NoiseSettings, noise_inputs),
    "fast_at": (FastATSettings, fast_at_inputs),
    "pgd_at": (PGDATSettings, pgd_at_inputs),
}

BatchMaker = Callable[[nn.Module, torch.Tensor, torch.Tensor, PerImageLoss, torch.Generator], torch.Tensor]


def training_inputs(name: str, options: Mapping | None = None) -> BatchMaker:
    """The batch maker of defense ``name`` with its ``defense.<name>`` options (the rest from the schema)
    checked and bound now, before any training starts: ``make(model, images, masks, loss, generator)``."""
    if name not in TRAINING_DEFENSES:
        raise ValueError(f"defenses: {name!r} is not a training defense; choose one of: {', '.join(TRAINING_DEFENSES)}")
    settings_class, make = TRAINING_DEFENSES[name]
    settings = config_schema.from_mapping(settings_class, options, f"defense.{name}")

    def batch_maker(model, images, masks, loss, generator):
        return make(model, images, masks, loss, settings, generator)
    return batch_maker
