"""Certifying a smoothed segmentation model (Fischer et al. 2021, their SegCertify): where, and how far.

For each (class, pixel) decision of an image, n0 noisy draws choose the majority class ĉ and
n further draws count how often the base model agrees with it (separate draws, so choosing
does not bias counting). The decision is certified where the test of H0: P(f(x + ε) = ĉ) ≤ τ
is rejected, and then no L2 perturbation below R = σ·Φ⁻¹(τ) changes it. The exact one-sided
binomial test, p = P(Bin(n, τ) ≥ count), is the inversion of the Clopper-Pearson bound (the
bound exceeds τ exactly where p is below the level). An image is one family of C·H·W tests,
corrected so that all its certified decisions hold together with probability 1 − alpha:
Holm's step-down (the paper's choice) or Bonferroni. The rest abstain.

Certified Dice at radius r is a certificate of its own at τ_r = Φ(r/σ), from the same counts:
decisions not certified at τ_r (their radius is below r) abstain, and an abstention counts as
wrong (a false negative on the organ, a false positive off it), the worst an attack within r
could do. Holm's rejections shrink as τ grows, so the curve never rises with r.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy.stats import binom, norm
from torch import nn

from advseg.attacks import image_dice
from advseg.defenses.smoothing import CERTIFICATION_STREAM, SmoothedModel, SmoothingSettings
from advseg.inference import batch_slices
from advseg.models import as_model_input
from advseg.sweeps import eval_mode, model_placement


def binomial_p_values(counts: np.ndarray, n: int, tau: float) -> np.ndarray:
    """One-sided p-values of H0: p ≤ tau given ``counts`` successes in n draws, P(Bin(n, tau) ≥ count)."""
    return binom.sf(np.asarray(counts) - 1, n, tau)


def rejected(p_values: np.ndarray, alpha: float, correction: str) -> np.ndarray:
    """Which hypotheses of each row (one family) are rejected at family-wise level alpha."""
    p_values = np.atleast_2d(p_values)
    tests = p_values.shape[1]
    if correction == "bonferroni":
        return p_values <= alpha / tests
    if correction != "holm":
        raise ValueError(f"defense.smoothing.correction: unknown value {correction!r}; choose holm or bonferroni")
    order = np.argsort(p_values, axis=1, kind="stable")
    ranked = np.take_along_axis(p_values, order, axis=1)
    fails = ranked > alpha / (tests - np.arange(tests))
    first_failure = np.where(fails.any(1), fails.argmax(1), tests)
    result = np.zeros_like(p_values, dtype=bool)
    np.put_along_axis(result, order, np.arange(tests)[None] < first_failure[:, None], axis=1)
    return result


@dataclass
class Certificate:
    """What a smoothed model certifies on N images, (N, C, H, W) arrays as in the masks.

    ``prediction``: ĉ, the majority decision from the n0 selection draws (uint8).
    ``counts``: how many of the n counting draws agree with ĉ (int32).
    """

    prediction: np.ndarray
    counts: np.ndarray
    settings: SmoothingSettings

    @property
    def radius(self) -> float:
        """The certified L2 radius of every decision that does not abstain: sigma·Φ⁻¹(tau)."""
        return self.settings.radius

    def certified(self, tau: float | None = None) -> np.ndarray:
        """(N, C, H, W) bool: the decisions whose majority is certified at tau (default settings.tau)."""
        tau = self.settings.tau if tau is None else tau
        p_values = binomial_p_values(self.counts, self.settings.n, tau).reshape(len(self.counts), -1)
        return rejected(p_values, self.settings.alpha, self.settings.correction).reshape(self.counts.shape)

    def abstain_rate(self) -> np.ndarray:
        """(N,) the fraction of each image's decisions that abstain at settings.tau."""
        return 1 - self.certified().reshape(len(self.counts), -1).mean(1)

    def certified_dice(self, masks: np.ndarray, radii: Sequence[float]) -> np.ndarray:
        """(N, len(radii)) Dice per image (the study's: mean over classes, smoothing 1e-5) that holds for
        every L2 perturbation below each radius; abstentions count as wrong."""
        truth = np.asarray(masks) > 0.5
        if truth.shape != self.prediction.shape:
            raise ValueError(f"masks {truth.shape} do not match the certificate's decisions {self.prediction.shape}")
        scores = np.empty((len(truth), len(radii)))
        for column, radius in enumerate(radii):
            if not radius >= 0:
                raise ValueError(f"defense.smoothing.radii: {radius!r} must be >= 0")
            certified = self.certified(float(norm.cdf(radius / self.settings.sigma)))
            worst = np.where(certified, self.prediction.astype(bool), ~truth)
            scores[:, column] = image_dice(torch.from_numpy(worst), torch.from_numpy(truth)).numpy()
        return scores


def certify(base: nn.Module, images, settings: SmoothingSettings, seed: int = 0,
            batch_size: int = 32) -> Certificate:
    """Certify the smoothing of ``base`` on grey ``images`` (N, H, W) in [0, 1]. The base model runs in
    eval mode (restored afterwards); ``batch_size`` images share a forward pass and change nothing else."""
    settings.validate()
    if batch_size < 1:
        raise ValueError(f"batch_size: {batch_size} must be >= 1")
    images = torch.as_tensor(images)
    if images.ndim != 3:
        raise ValueError(f"images {tuple(images.shape)}: expected grey slices (N, H, W)")
    smoothed = SmoothedModel(base, settings, seed)
    device, dtype = model_placement(base)
    predictions, counts = [], []
    with eval_mode(base):
        for rows in batch_slices(len(images), batch_size):
            inputs = as_model_input(images[rows].to(device=device, dtype=dtype))
            chosen = 2 * smoothed.votes(inputs, range(settings.n0), CERTIFICATION_STREAM) > settings.n0
            positive = smoothed.votes(inputs, range(settings.n0, settings.n0 + settings.n), CERTIFICATION_STREAM)
            predictions.append(chosen.to(torch.uint8).cpu().numpy())
            counts.append(torch.where(chosen, positive, settings.n - positive).cpu().numpy())
    return Certificate(np.concatenate(predictions), np.concatenate(counts), settings)
