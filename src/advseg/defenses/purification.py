"""Input purification, BPDA, and the check that flags gradient masking.

The baseline purifier is intensity quantisation (the bit-depth reduction of Xu et al.'s
feature squeezing): x → round(x·(L − 1)) / (L − 1). Rounding has a zero derivative almost
everywhere, so a plain-gradient attack on the purified model gets no signal and reports a
robustness that is not there (Athalye et al. 2018 broke such defenses). BPDA replaces the
purifier's backward pass by the identity (straight-through), keeping its forward pass, so
the attack scores the real defended output while following the classifier's gradient.

:func:`masking_check` compares the plain-gradient attack with the adaptive ones (BPDA, or a
transfer attack from the undefended twin): an adaptive attack that does clearly better is the
signature of gradient masking, and the plain result must not be reported as robustness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from torch import nn


class Quantization(nn.Module):
    """Round intensities in [0, 1] to ``levels`` evenly spaced values (non-differentiable)."""

    def __init__(self, levels: int):
        super().__init__()
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise ValueError(f"defense.quantization.levels: {levels!r} must be an integer >= 2")
        self.levels = levels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        scale = self.levels - 1
        return torch.round(inputs.clamp(0.0, 1.0) * scale) / scale


class StraightThrough(nn.Module):
    """BPDA with the identity: the purifier's output forward, the incoming gradient unchanged backward."""

    def __init__(self, purifier: nn.Module):
        super().__init__()
        self.purifier = purifier

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs + (self.purifier(inputs) - inputs).detach()


def purified(model: nn.Module, purifier: nn.Module) -> nn.Module:
    """The defended model: purify the model input, then segment. Attacks on it use plain gradients."""
    return nn.Sequential(purifier, model)


def bpda(model: nn.Module, purifier: nn.Module) -> nn.Module:
    """The same defended model with the purifier's backward pass the identity: attack this one."""
    return nn.Sequential(StraightThrough(purifier), model)


@dataclass(frozen=True)
class MaskingCheck:
    """Plain-gradient attack against the strongest adaptive one, on a score where lower = stronger attack.

    ``gap`` = mean over units of (plain − adaptive); ``flagged`` when it exceeds ``margin``."""

    plain: float
    strongest: str
    adaptive: float
    gap: float
    margin: float
    flagged: bool

    def describe(self) -> str:
        verdict = "gradient masking: report the adaptive attack" if self.flagged else "no sign of gradient masking"
        return (f"plain gradients {self.plain:.4f}, {self.strongest} {self.adaptive:.4f} (gap {self.gap:+.4f}, "
                f"margin {self.margin}): {verdict}")


def masking_check(plain: np.ndarray, adaptive: Mapping[str, np.ndarray], margin: float) -> MaskingCheck:
    """Flag gradient masking: some adaptive attack lowers the attacked score (e.g. Dice, per unit: case,
    subject, volume) by more than ``margin`` on average below the plain-gradient attack's."""
    plain = np.asarray(plain, dtype=float)
    if not adaptive:
        raise ValueError("masking_check: no adaptive attack (bpda, transfer) to compare with")
    if not margin >= 0:
        raise ValueError(f"masking_check: margin {margin!r} must be >= 0")
    means = {}
    for name, scores in adaptive.items():
        scores = np.asarray(scores, dtype=float)
        if scores.shape != plain.shape:
            raise ValueError(f"masking_check: {name} has scores for {scores.shape} units, plain for {plain.shape}")
        means[name] = float(scores.mean())
    strongest = min(means, key=means.get)
    gap = float(plain.mean()) - means[strongest]
    return MaskingCheck(float(plain.mean()), strongest, means[strongest], gap, margin, gap > margin)
