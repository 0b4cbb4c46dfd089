"""APGD (Croce and Hein, ICML 2020) for sigmoid segmentation models, with SEA's two losses.

Why: PGD's fixed step size is either too large to settle into a maximum or too small to
get there in few steps, and a weak attack over-credits a defense. APGD starts with a large
step (``alpha`` = 2, a fraction of eps as in :class:`advseg.attacks.AttackSettings`) and
halves it per image when progress stalls, going back to the image's best-loss iterate:

- z = P(x_k + η·sign(g_k)); x_{k+1} = P(x_k + μ·(z − x_k) + (1 − μ)·(x_k − x_{k−1})), μ = 0.75
  (the first step has no momentum); P projects onto the eps-ball and [0, 1].
- Checkpoints w_j = ceil(p_j·steps), p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06).
  At each, η halves (and the iterate returns to the best-loss one, momentum reset) where
  (1) the loss rose in fewer than ρ = 0.75 of the steps since the last checkpoint, or
  (2) η was not halved at the last checkpoint and the best loss did not improve since. As in
  the reference code, condition (2) is off at the first checkpoint.

Losses from SEA (Croce, Singh, Hein 2023), adapted from softmax to sigmoid outputs, where each
(class, pixel) is a binary decision with p = sigmoid(z) (names ``maskedbce`` and ``js``; any
name from :mod:`advseg.losses` works too, called in the standard order):

- ``maskedbce``: the mean of m·BCE, m = 1[decision still right] without gradient. Elements
  already flipped drop out, so the budget goes to those still right instead of pushing
  flipped ones ever further (BCE grows without bound on them).
- ``js``: the mean Jensen-Shannon divergence between Bernoulli(p) and Bernoulli(y). It is
  bounded (log 2 per element), so no element dominates, and it still has a gradient on
  flipped elements.

The rest follows :mod:`advseg.attacks`: per-image losses summed over the batch, per-image
seeded random starts, restarts, the kept iterate is the lowest-Dice one (the loss steers the
steps, the Dice picks what is reported), eval mode restored, results independent of the
batch size, and one :class:`~advseg.attacks.SweepResult` per eps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advseg import catalog
from advseg import settings as config_schema
from advseg.attacks import StepCallback, SweepResult, image_dice, project, random_start_noise
from advseg.defenses.eot import objective_gradient
from advseg.inference import batch_slices
from advseg.grid import VARIANT_CHOICES
from advseg.losses import LOSSES
from advseg.models import IN_CHANNELS, as_model_input
from advseg.objectives import Objective, named_loss_objective
from advseg.sweeps import checked_inputs, eval_mode

SEA_LOSSES = ("maskedbce", "js")
OPTIONS = ("steps", "alpha", "momentum", "rho", "random_start", "restarts")


@dataclass(frozen=True)
class APGDSettings:
    """APGD's hyper-parameters: config keys ``attack.apgd.*`` and the variant ``attack.input`` (the
    schema holds the defaults, the paper's: alpha 2, momentum 0.75, rho 0.75)."""

    steps: int                    # gradient evaluations per restart
    alpha: float                  # initial step size, a fraction of eps
    momentum: float               # weight of the new step against the last move
    rho: float                    # the fraction of rising steps below which a checkpoint halves the step
    random_start: bool
    restarts: int                 # runs from other random starts (1 without a random start)
    input: str                    # perturb the grey slice, or each of the 3 model channels

    @classmethod
    def from_section(cls, attack: Mapping[str, Any] | None = None) -> "APGDSettings":
        """From (part of) an attack section, e.g. ``{"apgd": {"steps": 300}}``; the rest from the schema."""
        attack = config_schema.fill("attack", attack)
        return config_schema.from_mapping(cls, attack["apgd"], "attack.apgd", input=attack["input"]).validate()

    def validate(self) -> "APGDSettings":
        """Raise a ValueError naming the config key of the first bad value; return self."""
        config_schema.fill("attack", {"apgd": {name: getattr(self, name) for name in OPTIONS}})
        catalog.check_choice("attack.input", self.input, VARIANT_CHOICES["input"])
        return self


def _decisions(logits: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed logits s = z·(2y − 1) (log p_true = logsigmoid(s)) and the correctness m = 1[s > 0]."""
    signs = 2 * (masks > 0.5).to(logits.dtype) - 1
    signed = logits * signs
    return signed, (signed.detach() > 0).to(logits.dtype)


def masked_bce_objective(logits: torch.Tensor, masks: torch.Tensor, step: int, steps: int) -> torch.Tensor:
    """(N,) mean over (class, pixel) of m·BCE; BCE = −log p_true = softplus(−s)."""
    signed, correct = _decisions(logits, masks)
    return (correct * F.softplus(-signed)).flatten(1).mean(1)


def js_objective(logits: torch.Tensor, masks: torch.Tensor, step: int, steps: int) -> torch.Tensor:
    """(N,) mean over (class, pixel) of JS(Bernoulli(p) ‖ Bernoulli(y)).

    With q = p_true, JS = ½·[q·log q − (1 + q)·log(1 + q) + 2·log 2] (0 when right and sure,
    log 2 when wrong and sure); log q is taken as logsigmoid(s) so nothing overflows."""
    signed, _ = _decisions(logits, masks)
    log_q = F.logsigmoid(signed)
    q = log_q.exp()
    values = 0.5 * (q * log_q - (1 + q) * torch.log1p(q) + 2 * math.log(2.0))
    return values.flatten(1).mean(1)


def apgd_objective(loss: str) -> Objective:
    """SEA's losses by name, or a loss of :mod:`advseg.losses` called ``loss(logits, masks)``."""
    catalog.check_choice("attack.losses", loss, SEA_LOSSES + tuple(LOSSES))
    if loss in SEA_LOSSES:
        return {"maskedbce": masked_bce_objective, "js": js_objective}[loss]
    return named_loss_objective(loss)


def apgd_checkpoints(steps: int) -> list[int]:
    """The steps after which APGD checks progress: ceil(p_j·steps) for the paper's p_j, below ``steps``."""
    fractions, points = [0.0, 0.22], set()
    while fractions[-1] < 1:
        points.add(math.ceil(round(fractions[-1] * steps, 9)))  # 0.57·100 is 57.000…01
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06))
    return sorted(point for point in points if 0 < point < steps)


def apgd_batch(model: nn.Module, to_model, x: torch.Tensor, masks: torch.Tensor, objective: Objective, eps: float,
               settings: APGDSettings, seed: int, indices: range):
    """All restarts of APGD on one batch at one eps: the kept iterate, its prediction, and per step
    the summed objective averaged over restarts (the contract of the PGD loop in advseg.attacks)."""
    kept = _LowestDice(masks)
    history = torch.zeros(settings.steps, dtype=torch.float64)
    for restart in range(settings.restarts if settings.random_start else 1):
        start = x
        if settings.random_start:
            noise = random_start_noise(indices, tuple(x.shape[1:]), seed, restart, x.dtype).to(x.device)
            start = (x + eps * noise).clamp(0.0, 1.0)
        history += torch.tensor(_run(model, to_model, x, masks, objective, eps, settings, start, kept),
                                dtype=torch.float64) / settings.restarts
    return kept.iterate, kept.prediction, history.tolist()


class _LowestDice:
    """Per image, the iterate whose prediction has the lowest Dice so far (ties: the later one)."""

    def __init__(self, masks: torch.Tensor):
        self.masks, self.iterate, self.prediction, self.dice = masks, None, None, None

    def consider(self, iterate: torch.Tensor, logits: torch.Tensor) -> None:
        prediction = logits > 0
        dice = image_dice(prediction, self.masks)
        if self.iterate is None:
            self.iterate, self.prediction, self.dice = iterate.clone(), prediction, dice
            return
        better = dice <= self.dice
        self.iterate[better], self.prediction[better], self.dice[better] = iterate[better], prediction[better], \
            dice[better]


def _run(model, to_model, x, masks, objective, eps, settings: APGDSettings, start, kept: _LowestDice) -> list[float]:
    """One APGD run from ``start``; every iterate after a step is offered to ``kept``. Returns the
    summed objective at the iterate each step starts from."""
    steps, checkpoints = settings.steps, set(apgd_checkpoints(settings.steps))
    per_image = (len(x),) + (1,) * (x.ndim - 1)
    eta = torch.full(per_image, settings.alpha * eps, dtype=x.dtype, device=x.device)
    current = previous = start
    loss, grad = objective_gradient(model, to_model, current, masks, objective, 1, steps)[1:]
    history = [float(loss.sum())]
    best, best_grad, best_loss, last_loss = current.clone(), grad.clone(), loss.clone(), loss.clone()
    rises = torch.zeros_like(loss)
    best_at_check, halved_at_check, last_check = best_loss.clone(), torch.ones_like(loss, dtype=torch.bool), 0
    for step in range(1, steps + 1):
        mix = 1.0 if step == 1 else settings.momentum
        target = project(current + eta * grad.sign(), x, eps)
        previous, current = current, project(current + mix * (target - current) + (1 - mix) * (current - previous),
                                             x, eps)
        if step == steps:  # the last iterate is only scored
            with torch.no_grad():
                kept.consider(current, model(to_model(current)))
            break
        logits, loss, grad = objective_gradient(model, to_model, current, masks, objective, step + 1, steps)
        kept.consider(current, logits)
        history.append(float(loss.sum()))
        rises += (loss > last_loss).to(loss.dtype)
        improved = loss > best_loss
        best[improved], best_grad[improved], best_loss[improved] = current[improved], grad[improved], loss[improved]
        last_loss = loss
        if step in checkpoints:
            halve = (rises < settings.rho * (step - last_check)) | (~halved_at_check & (best_loss <= best_at_check))
            eta[halve] /= 2
            current, grad, last_loss = current.clone(), grad.clone(), last_loss.clone()
            current[halve], grad[halve], last_loss[halve] = best[halve], best_grad[halve], best_loss[halve]
            previous = torch.where(halve.view(per_image), current, previous)
            halved_at_check, best_at_check, last_check = halve, best_loss.clone(), step
            rises.zero_()
    return history


def apgd_sweep(model: nn.Module, images, masks, loss_name: str, epsilons: list[float], settings: APGDSettings,
               seed: int = 0, on_step: StepCallback | None = None, batch_size: int = 32) -> dict[float, SweepResult]:
    """APGD on every image at every eps, as :func:`advseg.attacks.attack_sweep` does for PGD (same arguments).

    ``images`` (N, H, W) grey slices in [0, 1], ``masks`` (N, C, H, W); ``loss_name`` one of SEA's
    losses or of :mod:`advseg.losses`. ``batch_size`` changes speed and memory, never the result.
    """
    settings.validate()
    objective = apgd_objective(loss_name)
    images, masks, epsilons, device, dtype = checked_inputs(model, images, masks, epsilons, batch_size)
    to_model = as_model_input if settings.input == "grey" else (lambda inputs: inputs)
    parts = {"clean_pred": [], "adv": {eps: [] for eps in epsilons}, "pred": {eps: [] for eps in epsilons},
             "history": {eps: [0.0] * settings.steps for eps in epsilons}}
    with eval_mode(model):
        for rows in batch_slices(len(images), batch_size):
            x = images[rows].to(device=device, dtype=dtype)
            x = as_model_input(x).contiguous() if settings.input == "channels" else x
            y = masks[rows].to(device=device, dtype=dtype)
            with torch.no_grad():
                parts["clean_pred"].append((model(to_model(x)) > 0).to(torch.uint8).cpu().numpy())
            for eps in epsilons:
                adversarial, prediction, history = apgd_batch(model, to_model, x, y, objective, eps, settings, seed,
                                                              range(rows.start, rows.stop))
                parts["adv"][eps].append(adversarial.detach().to(torch.float32).cpu().numpy())
                parts["pred"][eps].append(prediction.to(torch.uint8).cpu().numpy())
                parts["history"][eps] = [a + b for a, b in zip(parts["history"][eps], history)]
    results = {}
    for eps in epsilons:
        adversarial = np.concatenate(parts["adv"][eps])
        if settings.input == "grey":  # a read-only view of the grey slice on each channel, as attack_sweep gives
            adversarial = np.broadcast_to(adversarial[:, None], (len(adversarial), IN_CHANNELS, *adversarial.shape[1:]))
        history = [total / len(images) for total in parts["history"][eps]]
        for step, value in enumerate(history, start=1):
            if on_step is not None:
                on_step(eps, step, value)
        results[eps] = SweepResult(eps, adversarial, np.concatenate(parts["pred"][eps]),
                                   np.concatenate(parts["clean_pred"]), history)
    return results
