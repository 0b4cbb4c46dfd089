"""Adversarial attacks on sigmoid segmentation models: FGSM, PGD, SegPGD and CosPGD.

All four share one L∞ loop (:func:`attack_sweep`): it owns eval mode, the device, the
[0, 1] intensity clamp, the projection onto the eps-ball, random starts, restarts and the
choice of the iterate kept per image. A method contributes only its objective (the
per-image loss whose input gradient is followed, :mod:`advseg.objectives`). FGSM is PGD's
one-step case (no random start, alpha = eps); because its gradient does not depend on eps,
an eps sweep takes it once per batch (one backward, E forwards).

Kept iterate: per image, among the iterates after each step of every restart, the one
whose thresholded prediction has the lowest Dice (mean over classes, smoothing 1e-5 as in
the study's per-slice score: an empty class predicted empty scores 1). Among equal Dice
the later iterate wins, so when Dice never changes the result is plain PGD's last iterate.

Losses are per image and summed over the batch, and random starts are drawn per image
from a generator seeded by (seed, restart, image index): results do not depend on the
batch size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from advseg import settings as config_schema
from advseg.config import check_variant
from advseg.grid import METHODS as ALL_METHODS
from advseg.grid import VARIANT_CHOICES, Variant
from advseg.defenses.eot import objective_gradient
from advseg.inference import batch_slices
from advseg.models import IN_CHANNELS, as_model_input
from advseg.objectives import attack_objective
from advseg.sweeps import checked_inputs, eval_mode

# the methods of this module's loop; APGD, with its own step-size schedule, is advseg.apgd's
METHODS = tuple(method for method in ALL_METHODS if method != "apgd")
# FGSM is PGD's one-step case: one step of size eps from the clean image
FGSM_AS_PGD = {"steps": 1, "alpha": 1.0, "random_start": False, "restarts": 1}
DICE_SMOOTHING = 1e-5
StepCallback = Callable[[float, int, float], None]


@dataclass(frozen=True)
class AttackSettings:
    """One attack job's configuration: ``attack.method``, its ``attack.<method>`` settings and the
    variant (``attack.step|loss_argument_order|input``, one value each); the schema gives the defaults.

    ``alpha`` is the step size as a fraction of eps: 0.25 with 10 steps is 2.5·eps/steps, the
    usual PGD choice that lets a pixel cross the ball and back. FGSM has no settings (it is one
    step of size eps from the clean image); restarts repeat only with a random start (without
    one they would be identical).
    """

    method: str
    steps: int
    alpha: float
    random_start: bool
    restarts: int
    step: str
    loss_argument_order: str
    input: str

    @classmethod
    def from_section(cls, attack: Mapping[str, Any] | str) -> "AttackSettings":
        """From (part of) an attack section naming its ``method``, e.g. ``{"method": "pgd", "pgd":
        {"steps": 20}}`` (or its JSON text); what it leaves out comes from the schema."""
        attack = config_schema.fill("attack", attack)
        if "method" not in attack:
            raise ValueError("attack.method: one attack job's settings name its method")
        if attack["method"] not in METHODS:
            raise ValueError(f"attack.method: {attack['method']} is not a method of the PGD loop ({', '.join(METHODS)}); "
                             "apgd's settings are advseg.apgd.APGDSettings")
        options = FGSM_AS_PGD if attack["method"] == "fgsm" else attack[attack["method"]]
        return cls(method=attack["method"], **options, **{key: attack[key] for key in VARIANT_CHOICES}).validate()

    def as_section(self) -> dict[str, Any]:
        """The attack section these settings come from (the inverse of :meth:`from_section`)."""
        options = {self.method: {key: getattr(self, key) for key in FGSM_AS_PGD}} \
            if self.method in METHODS and self.method != "fgsm" else {}
        return {"method": self.method, **options, **{key: getattr(self, key) for key in VARIANT_CHOICES}}

    def validate(self) -> "AttackSettings":
        """Raise a ValueError naming the config key of the first bad value; return self."""
        section = self.as_section()
        config_schema.fill("attack", section)
        check_variant(section)
        if self.step == "study" and self.method != "fgsm":
            raise ValueError(f"attack.step: 'study' ((1 - eps)·x + eps·sign(g)) is defined for fgsm only, "
                             f"not for {self.method}")
        return self

    def effective(self) -> "AttackSettings":
        """What actually runs: FGSM as 1 step of alpha 1 (= eps) without random start; 1 restart without one."""
        if self.method == "fgsm":
            return replace(self, **FGSM_AS_PGD)
        if not self.random_start:
            return replace(self, restarts=1)
        return self

    @property
    def variant(self) -> str:
        """``standard``, or step-order-input (e.g. ``study-study-channels``) when any option differs."""
        return Variant(self.step, self.loss_argument_order, self.input).label

    def method_settings(self) -> dict:
        """The effective hyper-parameters, for the attack job's JSON (``method_settings``)."""
        effective = asdict(self.effective())
        return {key: effective[key] for key in FGSM_AS_PGD}


@dataclass
class SweepResult:
    """One eps of a sweep. Arrays are NumPy, on the CPU, row i = image i.

    - ``adv_inputs``: (N, 3, H, W) float32 in [0, 1], the model input of the kept iterate. With
      ``input=grey`` it is a read-only broadcast view of the grey slices (no 3× copy).
    - ``adv_pred``: (N, C, H, W) uint8, the model's thresholded prediction on ``adv_inputs``.
    - ``clean_pred``: (N, C, H, W) uint8, the prediction on the clean images (same for every eps).
    - ``loss_history``: mean objective per step (over images and restarts), at the iterate the
      step starts from; empty for FGSM.
    """

    eps: float
    adv_inputs: np.ndarray
    adv_pred: np.ndarray
    clean_pred: np.ndarray
    loss_history: list[float]


# --- steps -----------------------------------------------------------------------------


def fgsm(images: torch.Tensor, grad_sign: torch.Tensor, eps: float) -> torch.Tensor:
    """One FGSM step of size eps, kept in the valid intensity range [0, 1]."""
    return (images + eps * grad_sign.to(images.dtype)).clamp(0.0, 1.0)


def study_step(images: torch.Tensor, grad_sign: torch.Tensor, eps: float) -> torch.Tensor:
    """The study's FGSM step, ``(1 - eps)·x + eps·sign(g)`` clamped to [0, 1]. It also scales the
    image down, so |delta| = eps·|sign(g) - x| can reach 2·eps (a bright pixel pushed down)."""
    return ((1 - eps) * images + eps * grad_sign.to(images.dtype)).clamp(0.0, 1.0)


def project(candidate: torch.Tensor, images: torch.Tensor, eps: float) -> torch.Tensor:
    """Into the L∞ ball of radius eps around images, then into [0, 1]. Clamping to x ± eps (rather
    than clamping delta and adding it back) keeps a step of exactly eps bit-identical to FGSM."""
    return torch.minimum(torch.maximum(candidate, images - eps), images + eps).clamp(0.0, 1.0)


def image_dice(pred: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(N,) Dice of binary predictions per image, mean over classes, smoothing 1e-5 (empty vs empty = 1)."""
    pred, truth = pred.flatten(2).to(torch.float64), (masks > 0.5).flatten(2).to(torch.float64)
    intersection = (pred * truth).sum(2)
    return ((2 * intersection + DICE_SMOOTHING) / (pred.sum(2) + truth.sum(2) + DICE_SMOOTHING)).mean(1)


def random_start_noise(indices: range, shape: tuple[int, ...], seed: int, restart: int,
                       dtype: torch.dtype) -> torch.Tensor:
    """U(-1, 1) noise per image, drawn from a generator seeded by (seed, restart, image index):
    an image's start never depends on which images share its batch. Scaled by eps per eps."""
    noise = torch.empty((len(indices), *shape), dtype=torch.float64)
    for row, index in enumerate(indices):
        state = np.random.SeedSequence([seed, restart, index]).generate_state(2, dtype=np.uint64)
        generator = torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))
        noise[row] = torch.rand(shape, generator=generator, dtype=torch.float64)
    return (2 * noise - 1).to(dtype)


# --- the sweep -------------------------------------------------------------------------


def attack_sweep(model: nn.Module, images, masks, loss_name: str, epsilons: list[float],
                 settings: AttackSettings, seed: int = 0, on_step: StepCallback | None = None,
                 batch_size: int = 32) -> dict[float, SweepResult]:
    """Attack every image at every eps; see the module docstring for the rules.

    ``images`` (N, H, W) grey slices in [0, 1] and ``masks`` (N, C, H, W), NumPy or torch. The
    attack runs on the device of the model's parameters, in their dtype, in eval mode (the
    model's mode and its parameters' ``requires_grad`` are restored afterwards).
    ``on_step(eps, step, mean_loss)`` is called for each step of each eps once the eps is done
    (e.g. to log the loss curve as a metric history). ``batch_size`` changes speed and memory,
    never the result.
    """
    settings.validate()
    images, masks, epsilons, device, dtype = checked_inputs(model, images, masks, epsilons, batch_size)
    objective = attack_objective(settings.method, loss_name, settings.loss_argument_order)
    with eval_mode(model):
        parts = _run_batches(model, images, masks, objective, epsilons, settings.effective(), seed,
                             batch_size, device, dtype)

    clean_pred = np.concatenate(parts["clean_pred"])
    results = {}
    for eps in epsilons:
        adversarial = np.concatenate(parts["adv"][eps])
        if settings.input == "grey":
            adversarial = np.broadcast_to(adversarial[:, None], (len(adversarial), IN_CHANNELS, *adversarial.shape[1:]))
        history = [total / len(images) for total in parts["history"][eps]]
        if on_step is not None:
            for step, value in enumerate(history, start=1):
                on_step(eps, step, value)
        results[eps] = SweepResult(eps=eps, adv_inputs=adversarial, adv_pred=np.concatenate(parts["pred"][eps]),
                                   clean_pred=clean_pred, loss_history=history)
    return results


def _run_batches(model, images, masks, objective, epsilons, settings, seed, batch_size, device, dtype) -> dict:
    """Per batch: clean prediction, then each eps (FGSM: one shared gradient). Outputs on the CPU."""
    to_model = as_model_input if settings.input == "grey" else (lambda x: x)
    parts = {"clean_pred": [], "adv": {eps: [] for eps in epsilons}, "pred": {eps: [] for eps in epsilons},
             "history": {eps: [0.0] * (0 if settings.method == "fgsm" else settings.steps) for eps in epsilons}}
    for rows in batch_slices(len(images), batch_size):
        x = images[rows].to(device=device, dtype=dtype)
        if settings.input == "channels":
            x = as_model_input(x).contiguous()
        y = masks[rows].to(device=device, dtype=dtype)
        if settings.method == "fgsm":
            clean_logits, grad = _logits_and_gradient(model, to_model, x, y, objective, 1, 1)
            sign = grad.sign()
            take_step = study_step if settings.step == "study" else fgsm
            for eps in epsilons:
                adversarial = take_step(x, sign, eps)
                with torch.no_grad():
                    prediction = model(to_model(adversarial)) > 0
                _keep(parts, eps, adversarial, prediction)
        else:
            with torch.no_grad():
                clean_logits = model(to_model(x))
            for eps in epsilons:
                adversarial, prediction, history = _pgd(model, to_model, x, y, objective, eps, settings, seed,
                                                        range(rows.start, rows.stop))
                _keep(parts, eps, adversarial, prediction)
                for step, total in enumerate(history):
                    parts["history"][eps][step] += total
        parts["clean_pred"].append((clean_logits > 0).to(torch.uint8).cpu().numpy())
    return parts


def _keep(parts, eps, adversarial, prediction) -> None:
    parts["adv"][eps].append(adversarial.detach().to(torch.float32).cpu().numpy())
    parts["pred"][eps].append(prediction.to(torch.uint8).cpu().numpy())


def _logits_and_gradient(model, to_model, x, masks, objective, step, steps, totals=None):
    """Forward with the input's gradient; the batch loss is the sum of per-image losses (EOT-aware)."""
    logits, loss, grad = objective_gradient(model, to_model, x, masks, objective, step, steps)
    if totals is not None:
        totals.append(float(loss.sum()))
    return logits, grad


def _pgd(model, to_model, x, masks, objective, eps, settings, seed, indices):
    """All restarts of the PGD loop for one batch at one eps: the kept iterate, its prediction,
    and per step the summed objective (averaged over restarts)."""
    step_size = settings.alpha * eps
    best = best_pred = best_dice = None
    history = np.zeros(settings.steps)

    def consider(iterate, logits):
        nonlocal best, best_pred, best_dice
        prediction = logits > 0
        dice = image_dice(prediction, masks)
        if best is None:
            best, best_pred, best_dice = iterate.clone(), prediction, dice
            return
        better = dice <= best_dice
        best[better], best_pred[better], best_dice[better] = iterate[better], prediction[better], dice[better]

    for restart in range(settings.restarts):
        adversarial = x
        if settings.random_start:
            noise = random_start_noise(indices, tuple(x.shape[1:]), seed, restart, x.dtype).to(x.device)
            adversarial = (x + eps * noise).clamp(0.0, 1.0)
        totals: list[float] = []
        for step in range(1, settings.steps + 1):
            logits, grad = _logits_and_gradient(model, to_model, adversarial, masks, objective, step,
                                                settings.steps, totals)
            if step > 1:  # the forward at iterate step-1 also scores it
                consider(adversarial, logits)
            adversarial = project(adversarial.detach() + step_size * grad.sign(), x, eps)
        with torch.no_grad():
            consider(adversarial, model(to_model(adversarial)))
        history += np.asarray(totals) / settings.restarts
    return best, best_pred, history.tolist()


def perturbation_size(images: np.ndarray, adv_images: np.ndarray) -> dict[str, float]:
    """The perturbation actually applied (after clamping): max |delta| and mean per-image L2 norm.

    ``images`` (N, H, W); ``adv_images`` (N, H, W) grey, or (N, 3, H, W) model inputs, compared with
    the grey slice copied to each channel (L2 then over all three channels: pass
    ``adv_inputs[:, 0]`` of a grey attack for the grey slice's norm).
    """
    if adv_images.ndim == images.ndim + 1:
        images = images[:, None]
    delta = (adv_images - images).reshape(len(adv_images), -1)
    return {"linf": float(np.abs(delta).max()), "l2": float(np.linalg.norm(delta, axis=1).mean())}
