"""Randomized smoothing for segmentation (Fischer, Baader and Vechev, ICML 2021): the smoothed model.

The smoothed model g answers, for each (class, pixel) decision, what the base model f decides
most often on noisy copies x + ε, ε ~ N(0, σ²I). Where that majority is strong enough, no
perturbation of L2 norm below σ·Φ⁻¹(τ) can change g's answer (:mod:`.certification` says where).

Noise is added to the grey slice, the study's threat model: one noise field per copy, the same
on each of the 3 model channels, so radii are L2 norms of perturbations of the grey slice.
It is not clamped to [0, 1]: the certificate holds for Gaussian noise as it is, and a model
meant for smoothing is trained with the same unclamped noise (``training_inputs.noise_inputs``).

Noise is keyed by the input itself: the fields of draw j for an image come from a generator
seeded by (seed, stream, a hash of the image's bytes, j). So g is a deterministic function of
its input, whatever images share its batch (results do not depend on the batch size, and a
sweep run twice gives the same numbers), and an attack iterate gets fresh noise at each step.
Streams keep the noise of the prediction (0), the certification (1) and attacks (2) apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from advseg import settings as config_schema

PREDICTION_STREAM, CERTIFICATION_STREAM = 0, 1


@dataclasses.dataclass(frozen=True)
class SmoothingSettings:
    """Config keys ``defense.smoothing.*`` (the schema holds the defaults; Fischer et al. used
    sigma 0.25 and 0.5, n0 100, n 1000 and more, tau 0.75 and 0.95, alpha 0.001, Holm)."""

    sigma: float                  # noise standard deviation, in grey intensity units
    n: int                        # draws that count the majority
    n0: int                       # separate draws that choose the majority decision
    tau: float                    # the majority's probability to certify; radius sigma·Φ⁻¹(tau)
    alpha: float                  # family-wise error over an image's decisions
    correction: str               # holm, or bonferroni (Clopper-Pearson bound at alpha / decisions)
    draws_per_forward: int        # noisy copies per forward pass: memory and speed only
    radii: list[float]            # L2 radii at which certified Dice is reported (the certificate job)

    @classmethod
    def from_section(cls, smoothing: Mapping[str, Any] | None = None) -> "SmoothingSettings":
        """From (part of) the ``defense.smoothing`` section; the rest from the schema."""
        return config_schema.from_mapping(cls, smoothing, "defense.smoothing")

    def validate(self) -> "SmoothingSettings":
        """Raise a ValueError naming the config key of the first bad value; return self."""
        config_schema.fill("defense.smoothing", dataclasses.asdict(self))
        return self

    @property
    def radius(self) -> float:
        """The certified L2 radius of a decision that passes the test at tau: sigma·Φ⁻¹(tau)."""
        from scipy.stats import norm  # here: scipy.stats costs every attack and training job 0.5 s to import

        return self.sigma * float(norm.ppf(self.tau))


def input_keys(inputs: torch.Tensor) -> list[tuple[int, int]]:
    """Two 64-bit words per image from a hash of its bytes: the image's identity for its noise."""
    rows = inputs.detach().to("cpu").contiguous().numpy()
    return [tuple(int(word) for word in np.frombuffer(hashlib.blake2b(row.tobytes(), digest_size=16).digest(),
                                                      dtype=np.uint64)) for row in rows]


def keyed_noise(inputs: torch.Tensor, draws: range, stream: int, seed: int) -> torch.Tensor:
    """(k, N, H, W) standard normal fields, draw j of image i from its own generator keyed by
    (seed, stream, hash of image i, j): independent of the batch and of which other draws are made."""
    keys = input_keys(inputs)
    noise = torch.empty((len(draws), len(keys), *inputs.shape[-2:]), dtype=torch.float64)
    for row, key in enumerate(keys):
        for position, draw in enumerate(draws):
            state = np.random.SeedSequence([seed, stream, *key, draw]).generate_state(1, dtype=np.uint64)
            generator = torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))
            noise[position, row] = torch.randn(noise.shape[2:], generator=generator, dtype=torch.float64)
    return noise.to(device=inputs.device, dtype=inputs.dtype)


class SmoothedModel(nn.Module):
    """g(x): per (class, pixel), the majority of the base model's decisions over ``settings.n`` noisy
    copies, returned as logits logit((votes + ½) / (n + 1)): positive exactly where votes > n / 2.

    The votes are counts, so g has no gradient: attack it through
    :class:`advseg.defenses.eot.ExpectationOverTransformation`, which uses :meth:`sample`."""

    def __init__(self, base: nn.Module, settings: SmoothingSettings, seed: int = 0):
        super().__init__()
        self.base, self.settings, self.seed = base, settings.validate(), seed

    @property
    def draws_per_forward(self) -> int:
        return self.settings.draws_per_forward

    def sample(self, inputs: torch.Tensor, draws: range, stream: int) -> torch.Tensor:
        """(k, N, C, H, W) base-model logits on the noisy copies of ``draws`` (differentiable in inputs)."""
        noise = keyed_noise(inputs, draws, stream, self.seed)
        noisy = inputs.unsqueeze(0) + self.settings.sigma * noise.unsqueeze(2)
        logits = self.base(noisy.flatten(0, 1))
        return logits.view(len(draws), len(inputs), *logits.shape[1:])

    @torch.no_grad()
    def votes(self, inputs: torch.Tensor, draws: range, stream: int) -> torch.Tensor:
        """(N, C, H, W) int32: how many of ``draws`` the base model decides 1, a few draws per forward."""
        total = None
        step = self.draws_per_forward
        for start in range(draws.start, draws.stop, step):
            positive = (self.sample(inputs, range(start, min(start + step, draws.stop)), stream) > 0)
            counts = positive.sum(0, dtype=torch.int32)
            total = counts if total is None else total + counts
        return total

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        votes = self.votes(inputs, range(self.settings.n), PREDICTION_STREAM).to(inputs.dtype)
        share = (votes + 0.5) / (self.settings.n + 1)
        return torch.log(share) - torch.log1p(-share)
