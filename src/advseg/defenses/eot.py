"""Expectation over transformation (EOT; Athalye, Carlini and Wagner 2018) for random defenses.

A random defense answers each query with a fresh draw of its randomness. The gradient of one
draw points at that draw's noise as much as at the defense, so a plain attack under-rates
it; EOT follows the gradient of the objective averaged over k draws per step.

A random defense offers ``sample(inputs, draws, stream)``: the differentiable logits of the
given draws, (k, N, C, H, W) (:class:`advseg.defenses.smoothing.SmoothedModel` does). Wrapped
in :class:`ExpectationOverTransformation`, it is attacked by any loop that obtains its
objective through :func:`objective_at` (the PGD loop of :mod:`advseg.attacks` and
:mod:`advseg.apgd` do): the objective is the mean over k draws of the per-image objective,
so its input gradient is the mean of the draws' gradients. Inside the loop the wrapper's
logits are the k-draw estimate logit(mean sigmoid) of the defense's output, which chooses
the kept iterate; score the final adversarial inputs with the defense itself
(:func:`advseg.inference.predict_masks` on the defended model with ``model_input=True``).

The attack draws from its own stream, so it never sees the noise the defense's own
prediction uses at the same input.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import nn

from advseg.defenses.ensemble import mean_probability_logits

ATTACK_STREAM = 2  # noise streams of a random defense: 0 its prediction, 1 certification, 2 attacks


class RandomDefense(Protocol):
    def sample(self, inputs: torch.Tensor, draws: range, stream: int) -> torch.Tensor:
        """(k, N, C, H, W) differentiable logits of draws ``draws`` of the defense's randomness."""


class ExpectationOverTransformation(nn.Module):
    """A random defense seen by an attack: the objective averaged over ``draws`` draws per step."""

    def __init__(self, defense: nn.Module, draws: int):
        super().__init__()
        if not callable(getattr(defense, "sample", None)):
            raise TypeError(f"{type(defense).__name__} has no sample(inputs, draws, stream): not a random defense")
        if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
            raise ValueError(f"attack.eot.draws: {draws!r} must be an integer >= 1")
        self.defense, self.draws = defense, draws

    def draw_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.defense.sample(inputs, range(self.draws), ATTACK_STREAM)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The k-draw estimate of the defense's output, logit(mean sigmoid)."""
        return mean_probability_logits(self.draw_logits(inputs))

    def expected_objective(self, inputs: torch.Tensor, masks: torch.Tensor, objective: Callable, step: int,
                           steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(estimate logits, per-image objective averaged over the draws) from one pass over the k draws."""
        draws = self.draw_logits(inputs)
        losses = torch.stack([objective(logits, masks, step, steps) for logits in draws])
        return mean_probability_logits(draws.detach()), losses.mean(0)


def objective_gradient(model: nn.Module, to_model: Callable, x: torch.Tensor, masks: torch.Tensor,
                       objective: Callable, step: int, steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, per-image objective, its gradient in x), all detached, where the model sees ``to_model(x)``.
    The batch objective is the per-image sum, so each image's gradient is that of its own objective."""
    x = x.detach().requires_grad_(True)
    logits, loss = objective_at(model, to_model(x), masks, objective, step, steps)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return logits.detach(), loss.detach(), grad


def objective_at(model: nn.Module, inputs: torch.Tensor, masks: torch.Tensor, objective: Callable, step: int,
                 steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's logits at ``inputs`` and the (N,) objective an attack follows there; for a random
    defense under EOT, the objective's mean over its draws."""
    if isinstance(model, ExpectationOverTransformation):
        return model.expected_objective(inputs, masks, objective, step, steps)
    logits = model(inputs)
    return logits, objective(logits, masks, step, steps)
