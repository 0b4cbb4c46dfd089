"""Confidence intervals and tests for the report: bootstrap, paired comparisons, correlations.

Every interval is a percentile bootstrap with a seeded generator, so a rerun of the report
gives the same numbers. Statistics that are undefined on a resample (a class with no slice
left, constant input to a correlation) come out as NaN and are left out of the percentiles;
an interval is NaN only when no resample gave a number. numpy and scipy only: the report job
never imports torch.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from scipy import stats

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
# Resamples drawn per call of a vectorised statistic: bounds memory at CHUNK x n_items indices.
CHUNK = 250

Seed = int | Sequence[int]


def resample_rows(n_items: int, n_resamples: int, seed: Seed = 0) -> np.ndarray:
    """(n_resamples, n_items) row indices drawn with replacement; equal seeds give equal rows.

    Callers that must share resamples (every training seed of one fold is scored on the
    same slices) pass the same seed, e.g. ``(bootstrap_seed, fold)``.
    """
    _check_counts(n_items, n_resamples)
    return np.random.default_rng(seed).integers(0, n_items, size=(n_resamples, n_items))


def bootstrap_distribution(statistic: Callable[[np.ndarray], float | np.ndarray], n_items: int,
                           n_resamples: int = DEFAULT_RESAMPLES, seed: Seed = 0, *,
                           vectorized: bool = False) -> np.ndarray:
    """The statistic on each of ``n_resamples`` resamples of ``n_items`` rows, shape (n_resamples,).

    With ``vectorized=True`` the statistic receives a (k, n_items) index matrix and returns k
    values, which is how the per-slice tables stay fast on thousands of slices.
    """
    _check_counts(n_items, n_resamples)
    rng = np.random.default_rng(seed)
    values = np.empty(n_resamples, dtype=float)
    for start in range(0, n_resamples, CHUNK):
        rows = rng.integers(0, n_items, size=(min(CHUNK, n_resamples - start), n_items))
        if vectorized:
            chunk = np.asarray(statistic(rows), dtype=float).reshape(-1)
            if chunk.shape != (rows.shape[0],):
                raise ValueError(f"vectorised statistic returned {chunk.shape[0]} values for {rows.shape[0]} resamples")
            values[start:start + rows.shape[0]] = chunk
        else:
            values[start:start + rows.shape[0]] = [float(statistic(r)) for r in rows]
    return values


def percentile_interval(values: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
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


def bootstrap_ci(statistic: Callable[[np.ndarray], float | np.ndarray], n_items: int,
                 n_resamples: int = DEFAULT_RESAMPLES, seed: Seed = 0, level: float = DEFAULT_LEVEL, *,
                 vectorized: bool = False) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(rows)`` over resampled row indices."""
    return percentile_interval(bootstrap_distribution(statistic, n_items, n_resamples, seed,
                                                      vectorized=vectorized), level)


def paired_comparison(a: np.ndarray, b: np.ndarray, n_resamples: int = DEFAULT_RESAMPLES, seed: Seed = 0,
                      level: float = DEFAULT_LEVEL) -> dict:
    """Is ``a`` different from ``b`` on the same items? Mean of a - b, its CI, and Wilcoxon's p.

    Pairs where either value is NaN are dropped. The Wilcoxon signed-rank test uses Pratt's
    treatment of zero differences (they count in the ranking, not in the statistic); when
    every difference is zero there is no evidence of a difference and p is 1. ``significant``
    is True only when the bootstrap interval of the mean difference excludes 0.
    """
    a, b = np.asarray(a, dtype=float).reshape(-1), np.asarray(b, dtype=float).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.size} vs {b.size}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    difference = a - b
    result = {"n": int(difference.size), "mean_a": math.nan, "mean_b": math.nan,
              "mean_difference": math.nan, "ci_low": math.nan, "ci_high": math.nan,
              "wilcoxon_statistic": math.nan, "wilcoxon_p": math.nan, "significant": False}
    if difference.size == 0:
        return result
    result.update(mean_a=float(a.mean()), mean_b=float(b.mean()), mean_difference=float(difference.mean()))
    low, high = bootstrap_ci(lambda rows: difference[rows].mean(axis=1), difference.size, n_resamples, seed,
                             level, vectorized=True)
    result.update(ci_low=low, ci_high=high, significant=bool(low > 0 or high < 0))
    if np.all(difference == 0):
        result.update(wilcoxon_statistic=0.0, wilcoxon_p=1.0)
    else:
        test = stats.wilcoxon(difference, zero_method="pratt")
        result.update(wilcoxon_statistic=float(test.statistic), wilcoxon_p=float(test.pvalue))
    return result


def correlation_with_ci(x: np.ndarray, y: np.ndarray, n_resamples: int = DEFAULT_RESAMPLES, seed: Seed = 0,
                        level: float = DEFAULT_LEVEL) -> dict:
    """Pearson r and Spearman rho with scipy's p-values and bootstrap intervals over items.

    Items with a NaN in x or y are dropped. Everything is NaN with fewer than 3 items or a
    constant x or y; a resample whose x or y is constant gives NaN and is left out.
    """
    x, y = np.asarray(x, dtype=float).reshape(-1), np.asarray(y, dtype=float).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"correlated values differ in length: {x.size} vs {y.size}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    result = {"n": int(x.size)}
    for name in ("pearson_r", "pearson_p", "pearson_ci_low", "pearson_ci_high",
                 "spearman_rho", "spearman_p", "spearman_ci_low", "spearman_ci_high"):
        result[name] = math.nan
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return result
    pearson, spearman = stats.pearsonr(x, y), stats.spearmanr(x, y)
    result.update(pearson_r=float(pearson.statistic), pearson_p=float(pearson.pvalue),
                  spearman_rho=float(spearman.statistic), spearman_p=float(spearman.pvalue))
    rows = resample_rows(x.size, n_resamples, seed)
    xs, ys = x[rows], y[rows]
    result["pearson_ci_low"], result["pearson_ci_high"] = percentile_interval(_row_pearson(xs, ys), level)
    ranks_x = stats.rankdata(xs, axis=1)
    ranks_y = stats.rankdata(ys, axis=1)
    result["spearman_ci_low"], result["spearman_ci_high"] = percentile_interval(_row_pearson(ranks_x, ranks_y),
                                                                                level)
    return result


def _row_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair; NaN where a row is constant."""
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    denominator = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x * y).sum(axis=1) / denominator
    r[~(denominator > 1e-12 * max(1.0, float(np.nanmax(denominator, initial=0.0))))] = math.nan
    return np.clip(r, -1.0, 1.0)


def _check_counts(n_items: int, n_resamples: int) -> None:
    if n_items < 1:
        raise ValueError(f"bootstrap needs at least one item, got {n_items}")
    if n_resamples < 1:
        raise ValueError(f"bootstrap needs at least one resample (report.n_bootstrap), got {n_resamples}")
