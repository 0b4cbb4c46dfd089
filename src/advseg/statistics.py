"""Inference over independent units: hierarchical bootstrap, sign-flip tests, multiplicity, correlations.

Slices of one case (or one slab of the template) are not independent, so nothing here ever
sees a slice: callers pass one number per unit (case, subject, volume, slab), or per model
for the size question. Each result carries its estimate, its interval, its p and the n it
was computed over, so a table row cannot mix estimands.

- :func:`hierarchical_means`: intervals of scores measured on (fold, seed, unit) cells,
  resampling folds, then seeds and units within each fold (Saravanan et al. 2020).
- :func:`sign_flip_test`: paired differences of units; the p-value and the interval come from
  the same sign-flip distribution (the interval inverts the test), so "p < alpha" and "the
  interval excludes 0" cannot disagree.
- :func:`adjust`: Holm or Benjamini-Hochberg over a family of p-values.

Correlations across models (the size question) are in :mod:`advseg.correlations`.

numpy and scipy only: the report job never imports torch. Every random draw comes from a
seeded generator, so a rerun gives the same numbers.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

MULTIPLICITY = ("holm", "bh", "none")
EXACT_SIGN_FLIP_UNITS = 16     # up to 2^16 sign vectors are enumerated; beyond, drawn at random


# --- hierarchical bootstrap -----------------------------------------------------------------

def hierarchical_means(folds: list[np.ndarray], n_resamples: int, seed: int = 0) -> np.ndarray:
    """Bootstrap distribution of the mean of K quantities over (fold, seed, unit) cells.

    ``folds[f]`` is a (seeds, units, K) array: quantity k of unit u scored by the model of
    training seed s in fold f, without NaN. Each resample draws folds with replacement,
    then, within each drawn fold, its seeds and its units independently (seeds and units
    are crossed: every seed's model scores the same held-out units). The statistic is the
    mean over every drawn cell, so with one fold and one seed this is the plain bootstrap of
    units. Returns (n_resamples, K). Duplicating a unit's slices changes nothing here: a
    unit enters as one number, however many slices made it.
    """
    check_resamples(n_resamples)
    if not folds:
        raise ValueError("no fold has a unit to resample")
    folds = [np.asarray(f, dtype=float) for f in folds]
    k = folds[0].shape[2]
    for f in folds:
        if f.ndim != 3 or f.shape[2] != k or min(f.shape[:2]) < 1:
            raise ValueError(f"each fold needs a (seeds, units, {k}) array with at least one seed and unit")
        if np.isnan(f).any():
            raise ValueError("hierarchical_means takes no NaN: drop units without a score first")
    fold_counts, within = _draws(n_resamples, seed, tuple(f.shape[:2] for f in folds))
    total = np.zeros((n_resamples, k))
    cells = np.zeros(n_resamples)
    for f, (values, (seed_counts, unit_counts)) in enumerate(zip(folds, within)):
        seeds, units = values.shape[:2]
        total += fold_counts[:, f, None] * np.einsum("bs,suk,bu->bk", seed_counts, values, unit_counts)
        cells += fold_counts[:, f] * seeds * units
    return total / cells[:, None]


@functools.lru_cache(maxsize=32)
def _draws(n_resamples: int, seed: int, shapes: tuple[tuple[int, int], ...]):
    """The counts of every draw: folds (B, F), and per fold its seeds (B, S) and units (B, U).

    They depend only on the seed and the shapes, so every row of a table with the same design
    is resampled the same way (common random numbers), and drawn once.
    """
    rng = np.random.default_rng(seed)
    fold_counts = _counts(rng, len(shapes), n_resamples)
    within = tuple((_counts(rng, seeds, n_resamples), _counts(rng, units, n_resamples)) for seeds, units in shapes)
    for array in (fold_counts, *(a for pair in within for a in pair)):
        array.flags.writeable = False
    return fold_counts, within


def cell_mean(folds: list[np.ndarray]) -> np.ndarray:
    """(K,) the statistic of :func:`hierarchical_means` on the data itself: the mean over cells."""
    folds = [np.asarray(f, dtype=float) for f in folds]
    return sum(f.sum(axis=(0, 1)) for f in folds) / sum(f.shape[0] * f.shape[1] for f in folds)


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` interval of the finite values (NaN, NaN when there are none)."""
    if not 0 < level < 1:
        raise ValueError(f"confidence level must lie in (0, 1), got {level}")
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _counts(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """(resamples, n): how often each of n items is drawn when n are drawn with replacement."""
    if n == 1:
        return np.ones((resamples, 1))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)


# --- paired sign-flip test -------------------------------------------------------------------

@dataclass(frozen=True)
class PairedTest:
    """Mean of paired unit differences, its interval and p from one sign-flip distribution."""
    n: int
    effect: float
    ci_low: float
    ci_high: float
    p: float
    exact: bool

    @property
    def smallest_p(self) -> float:
        """The smallest p a two-sided sign-flip test can give at this n (2 / 2^n when exact)."""
        return 2.0 / 2 ** self.n if self.exact else math.nan


def sign_flip_test(differences: np.ndarray, alpha: float, n_resamples: int, seed: int = 0) -> PairedTest:
    """Two-sided test of mean(differences) = 0 by flipping the sign of each unit's difference.

    Under the null each unit's difference is as likely positive as negative. With up to
    ``EXACT_SIGN_FLIP_UNITS`` units every sign vector is enumerated (exact p, as
    ``scipy.stats.permutation_test``); beyond, ``n_resamples`` are drawn and the observed signs
    count as one more (p = (1 + extreme) / (1 + draws)). The interval is mean +- q, q the
    (1 - alpha) quantile of |flipped mean| in that same distribution, so it excludes 0 exactly
    when p < alpha. (A large effect widens the flipped means too: the interval errs wide.)
    NaNs are dropped.
    """
    check_alpha(alpha)
    d = np.asarray(differences, dtype=float).reshape(-1)
    d = d[~np.isnan(d)]
    n = d.size
    if n == 0:
        return PairedTest(0, math.nan, math.nan, math.nan, math.nan, True)
    exact = n <= EXACT_SIGN_FLIP_UNITS
    if exact:   # row 0 is all +1: the observed signs
        signs = 1.0 - 2.0 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
    else:
        check_resamples(n_resamples)
        drawn = np.random.default_rng(seed).choice((-1.0, 1.0), size=(n_resamples, n))
        signs = np.vstack([np.ones((1, n)), drawn])
    sums = signs @ d
    observed, extremes = sums[0], np.abs(sums)
    p = float(np.count_nonzero(extremes >= abs(observed))) / len(sums)
    # p < alpha  <=>  fewer than alpha * B flips reach |observed|  <=>  |observed| > the k-th largest
    k = math.ceil(alpha * len(sums) - 1e-9)
    q = float(np.sort(extremes)[::-1][max(k, 1) - 1])
    return PairedTest(n, float(observed / n), float((observed - q) / n), float((observed + q) / n), p, exact)


# --- multiplicity -----------------------------------------------------------------------------

def adjust(p_values, method: str) -> np.ndarray:
    """Multiplicity-adjusted p-values of one family; NaN entries stay NaN and do not count.

    ``holm``: Holm's step-down (controls the family-wise error); ``bh``: Benjamini-Hochberg
    (controls the false discovery rate; equals ``scipy.stats.false_discovery_control``);
    ``none``: unchanged.
    """
    if method not in MULTIPLICITY:
        raise ValueError(f"report.multiplicity: unknown method {method!r}; choose one of: {', '.join(MULTIPLICITY)}")
    p = np.asarray(p_values, dtype=float).reshape(-1)
    out = np.full(p.shape, np.nan)
    known = np.flatnonzero(~np.isnan(p))
    m = known.size
    if m == 0 or method == "none":
        out[known] = p[known]
        return out
    order = known[np.argsort(p[known], kind="stable")]
    ranked = p[order]
    if method == "holm":
        adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * ranked))
    else:
        adjusted = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
        adjusted = np.minimum(adjusted, 1.0)
    out[order] = adjusted
    return out


def check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"report.alpha: {alpha} must lie in (0, 1)")


def check_resamples(n_resamples: int) -> None:
    if n_resamples < 1:
        raise ValueError(f"report.n_bootstrap: {n_resamples} resamples; need at least one")
