"""Expectation over transformation (EOT; Athalye, Carlini and Wagner 2018) for random defenses.

A random defense answers each query with a fresh draw of its randomness. The gradient of one
draw points at that draw's noise as much as at the defense, so a plain attack under-rates
it; EOT follows the gradient of the objective averaged over k draws per step.

A random defense offers ``sample(inputs, draws, stream)``: the differentiable logits of the
given draws, (k, N, C, H, W) (:class:`advseg.defenses.smoothing.SmoothedModel` does). Wrapped
in :class:`ExpectationOverTransformation`, it is attacked by any loop that takes its
gradients from :func:`objective_gradient` (the PGD loop of :mod:`advseg.attacks`,
:mod:`advseg.apgd` and the adversarial-training batch makers do): the objective is the mean
over k draws of the per-image objective, and its input gradient the mean of the draws'
gradients, computed ``draws_per_forward`` draws at a time (the defense's setting), so memory
does not grow with k. Inside the loop the wrapper's logits are the k-draw estimate
logit(mean sigmoid) of the defense's output, which chooses the kept iterate; score the final
adversarial inputs with the defense itself (:func:`advseg.inference.predict_masks` on the
defended model with ``model_input=True``).

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
    draws_per_forward: int  # draws that share one forward pass: memory and speed only

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

    def chunks(self) -> list[range]:
        step = self.defense.draws_per_forward
        return [range(start, min(start + step, self.draws)) for start in range(0, self.draws, step)]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The k-draw estimate of the defense's output, logit(mean sigmoid)."""
        return mean_probability_logits(torch.cat([self.defense.sample(inputs, chunk, ATTACK_STREAM)
                                                  for chunk in self.chunks()]))

    def objective_gradient(self, to_model: Callable, x: torch.Tensor, masks: torch.Tensor, objective: Callable,
                           step: int, steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:func:`objective_gradient` averaged over the draws, one chunk of draws per backward pass."""
        x = x.detach().requires_grad_(True)
        draws, total, grad = [], 0.0, torch.zeros_like(x)
        for chunk in self.chunks():
            logits = self.defense.sample(to_model(x), chunk, ATTACK_STREAM)
            losses = torch.stack([objective(draw, masks, step, steps) for draw in logits]).sum(0) / self.draws
            grad += torch.autograd.grad(losses.sum(), x)[0]
            draws.append(logits.detach())
            total = total + losses.detach()
        return mean_probability_logits(torch.cat(draws)), total, grad


def objective_gradient(model: nn.Module, to_model: Callable, x: torch.Tensor, masks: torch.Tensor,
                       objective: Callable, step: int, steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, per-image objective, its gradient in x), all detached, where the model sees ``to_model(x)``.

    The batch objective is the per-image sum, so each image's gradient is that of its own
    objective; a random defense under EOT gives the mean over its draws."""
    if isinstance(model, ExpectationOverTransformation):
        return model.objective_gradient(to_model, x, masks, objective, step, steps)
    x = x.detach().requires_grad_(True)
    logits = model(to_model(x))
    loss = objective(logits, masks, step, steps)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return logits.detach(), loss.detach(), grad
