"""Correlations across models, for the size question: permutation p, intervals, partial correlation.

One point per model (its mean over replicates): models are the independent units here. Small n
is the rule, so p-values are exact permutation p where the orderings can be enumerated, and
:func:`detectable_correlation` says what this n could have found. numpy and scipy only.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from advseg.statistics import check_alpha, check_resamples, percentile_interval

EXACT_PERMUTATION_ITEMS = 8    # up to 8! orderings are enumerated; beyond, drawn at random


@dataclass(frozen=True)
class Correlation:
    """One correlation: estimate, bootstrap interval over items, permutation p, n."""
    n: int
    estimate: float
    ci_low: float
    ci_high: float
    p: float
    exact: bool


def correlation(x, y, kind: str, level: float, n_resamples: int, seed: int = 0) -> Correlation:
    """Pearson (``kind="pearson"``) or Spearman (``"spearman"``) correlation of paired items.

    p is a two-sided permutation p: every ordering of y for up to ``EXACT_PERMUTATION_ITEMS``
    items (n = 4 gives 24 orderings: rho = 1 has p = 2/24, not scipy's asymptotic 0), else
    (1 + extreme draws) / (1 + draws). The interval is the percentile bootstrap over items,
    leaving out resamples where x or y is constant. NaN with fewer than 3 items or a
    constant x or y.
    """
    if kind not in ("pearson", "spearman"):
        raise ValueError(f"unknown correlation {kind!r}")
    x, y = _paired(x, y)
    n = x.size
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Correlation(n, math.nan, math.nan, math.nan, math.nan, n <= EXACT_PERMUTATION_ITEMS)
    if kind == "spearman":
        x, y = stats.rankdata(x), stats.rankdata(y)
    estimate = float(_row_pearson(x[None], y[None])[0])
    exact = n <= EXACT_PERMUTATION_ITEMS
    rng = np.random.default_rng(seed)
    if exact:
        orders = np.array(list(itertools.permutations(range(n))))
    else:
        check_resamples(n_resamples)
        orders = np.argsort(rng.random((n_resamples, n)), axis=1)
    permuted = _row_pearson(np.broadcast_to(x, orders.shape), y[orders])
    extreme = np.count_nonzero(np.abs(permuted) >= abs(estimate) - 1e-12)
    p = extreme / len(orders) if exact else (1 + extreme) / (1 + len(orders))
    check_resamples(n_resamples)
    rows = rng.integers(0, n, size=(n_resamples, n))
    xs, ys = x[rows], y[rows]
    if kind == "spearman":   # ranks of the resampled values, not resampled ranks
        xs, ys = stats.rankdata(xs, axis=1), stats.rankdata(ys, axis=1)
    low, high = percentile_interval(_row_pearson(xs, ys), level)
    return Correlation(n, estimate, low, high, float(min(1.0, p)), exact)


def detectable_correlation(n: int, alpha: float, power: float = 0.8, kind: str = "spearman") -> float:
    """The smallest |correlation| a two-sided test at ``alpha`` detects with ``power`` at n items.

    Fisher's z: atanh(r) ~ N(atanh(rho), v / (n - 3)), v = 1 for Pearson and 1.06 for
    Spearman (Fieller, Hartley and Pearson 1957). NaN for n <= 3.
    """
    check_alpha(alpha)
    if n <= 3:
        return math.nan
    spread = math.sqrt((1.06 if kind == "spearman" else 1.0) / (n - 3))
    return float(math.tanh((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * spread))


@dataclass(frozen=True)
class PartialCorrelation:
    """Pearson correlation of x and y after removing the linear effect of z from both."""
    n: int
    estimate: float
    ci_low: float
    ci_high: float
    p: float


def partial_correlation(x, y, z, level: float) -> PartialCorrelation:
    """r(x, y | z) from the residuals of x and y on z; t-test p (n - 3 df), Fisher-z interval."""
    x, y, z = _paired(x, y, z)
    n = x.size
    if n < 4 or min(np.ptp(x), np.ptp(y), np.ptp(z)) == 0:
        return PartialCorrelation(n, math.nan, math.nan, math.nan, math.nan)
    design = np.column_stack([np.ones(n), z])
    residual_x = x - design @ np.linalg.lstsq(design, x, rcond=None)[0]
    residual_y = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    r = float(_row_pearson(residual_x[None], residual_y[None])[0])
    if math.isnan(r):
        return PartialCorrelation(n, math.nan, math.nan, math.nan, math.nan)
    df = n - 3
    t = r * math.sqrt(df / max(1e-300, 1 - r * r))
    p = float(2 * stats.t.sf(abs(t), df))
    if n > 4:
        half = stats.norm.ppf(0.5 + level / 2) / math.sqrt(n - 4)
        low, high = math.tanh(math.atanh(max(-0.999999, min(0.999999, r))) - half), \
            math.tanh(math.atanh(max(-0.999999, min(0.999999, r))) + half)
    else:
        low = high = math.nan
    return PartialCorrelation(n, r, float(low), float(high), p)


@dataclass(frozen=True)
class Coefficient:
    name: str
    estimate: float
    ci_low: float
    ci_high: float
    p: float


def regression(y, predictors: dict[str, np.ndarray], level: float) -> list[Coefficient]:
    """Ordinary least squares of y on an intercept and ``predictors``: t intervals and p-values.

    Rows with a NaN anywhere are dropped; with no residual degree of freedom every interval and
    p is NaN.
    """
    columns = list(predictors)
    data = _paired(y, *(predictors[c] for c in columns))
    y, xs = data[0], data[1:]
    n = y.size
    design = np.column_stack([np.ones(n), *xs]) if n else np.zeros((0, len(columns) + 1))
    names = ["intercept", *columns]
    if n == 0 or np.linalg.matrix_rank(design) < design.shape[1]:
        return [Coefficient(name, math.nan, math.nan, math.nan, math.nan) for name in names]
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    df = n - design.shape[1]
    if df < 1:
        return [Coefficient(name, float(b), math.nan, math.nan, math.nan) for name, b in zip(names, beta)]
    residual = y - design @ beta
    sigma2 = float(residual @ residual) / df
    se = np.sqrt(np.diag(np.linalg.inv(design.T @ design)) * sigma2)
    quantile = stats.t.ppf(0.5 + level / 2, df)
    out = []
    for name, b, s in zip(names, beta, se):
        p = float(2 * stats.t.sf(abs(b / s), df)) if s > 0 else math.nan
        out.append(Coefficient(name, float(b), float(b - quantile * s), float(b + quantile * s), p))
    return out


def _row_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair; NaN where a row is constant."""
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    denominator = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x * y).sum(axis=1) / denominator
    r[~(denominator > 1e-12 * max(1.0, float(np.nanmax(denominator, initial=0.0))))] = math.nan
    return np.clip(r, -1.0, 1.0)


def _paired(*arrays) -> tuple[np.ndarray, ...]:
    """The arrays as flat floats of one length, keeping only items where none is NaN."""
    flat = [np.asarray(a, dtype=float).reshape(-1) for a in arrays]
    if len({a.size for a in flat}) > 1:
        raise ValueError(f"paired values differ in length: {[a.size for a in flat]}")
    keep = np.all([~np.isnan(a) for a in flat], axis=0) if flat[0].size else np.zeros(0, bool)
    return tuple(a[keep] for a in flat)
