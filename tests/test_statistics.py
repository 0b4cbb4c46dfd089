"""Tests of the bootstrap, paired comparison and correlation helpers against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from advseg import statistics

DATA = np.array([0.2, 0.5, 0.9, 0.4, 0.7, 0.1, 0.8, 0.3])


def hand_percentiles(values, level=0.95):
    values = np.sort(np.asarray(values)[np.isfinite(values)])
    return tuple(np.percentile(values, [(1 - level) / 2 * 100, (1 + level) / 2 * 100]))


def test_resample_rows_is_seeded_and_in_range():
    rows = statistics.resample_rows(5, 200, seed=3)
    assert rows.shape == (200, 5)
    assert rows.min() >= 0 and rows.max() <= 4
    np.testing.assert_array_equal(rows, statistics.resample_rows(5, 200, seed=3))
    assert not np.array_equal(rows, statistics.resample_rows(5, 200, seed=4))
    np.testing.assert_array_equal(statistics.resample_rows(5, 10, seed=(7, 1)),
                                  np.random.default_rng((7, 1)).integers(0, 5, size=(10, 5)))


def test_bootstrap_ci_of_the_mean_is_the_percentile_of_resampled_means():
    rows = np.random.default_rng(11).integers(0, DATA.size, size=(1000, DATA.size))
    expected = hand_percentiles([DATA[r].mean() for r in rows])
    low, high = statistics.bootstrap_ci(lambda r: DATA[r].mean(), DATA.size, 1000, seed=11)
    assert (low, high) == pytest.approx(expected)
    assert low < DATA.mean() < high
    vectorised = statistics.bootstrap_ci(lambda r: DATA[r].mean(axis=1), DATA.size, 1000, seed=11, vectorized=True)
    assert vectorised == pytest.approx(expected)


def test_bootstrap_ci_level_narrows_the_interval():
    wide = statistics.bootstrap_ci(lambda r: DATA[r].mean(), DATA.size, 1000, seed=0, level=0.95)
    narrow = statistics.bootstrap_ci(lambda r: DATA[r].mean(), DATA.size, 1000, seed=0, level=0.5)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_bootstrap_ci_skips_nan_resamples_and_is_nan_without_any_number():
    def first_or_nan(rows):
        return math.nan if 0 not in rows else float(DATA[rows].mean())

    rows = np.random.default_rng(5).integers(0, DATA.size, size=(1000, DATA.size))
    expected = hand_percentiles([DATA[r].mean() if 0 in r else np.nan for r in rows])
    assert statistics.bootstrap_ci(first_or_nan, DATA.size, 1000, seed=5) == pytest.approx(expected)
    low, high = statistics.bootstrap_ci(lambda r: math.nan, DATA.size, 1000)
    assert math.isnan(low) and math.isnan(high)


def test_bootstrap_rejects_bad_counts_and_levels():
    with pytest.raises(ValueError, match="report.n_bootstrap"):
        statistics.bootstrap_ci(lambda r: 0.0, 3, 0)
    with pytest.raises(ValueError, match="at least one item"):
        statistics.bootstrap_ci(lambda r: 0.0, 0)
    with pytest.raises(ValueError, match="level"):
        statistics.percentile_interval(np.ones(3), level=1.5)


def test_paired_comparison_by_hand():
    a = np.array([0.5, 0.6, 0.4, 0.7, 0.3, 0.55, np.nan, 0.2])
    b = np.array([0.7, 0.6, 0.6, 0.8, 0.6, 0.60, 0.9, np.nan])
    result = statistics.paired_comparison(a, b, n_resamples=1000, seed=2)
    d = np.array([-0.2, 0.0, -0.2, -0.1, -0.3, -0.05])
    assert result["n"] == 6
    assert result["mean_difference"] == pytest.approx(d.mean())
    assert result["mean_a"] == pytest.approx(np.mean([0.5, 0.6, 0.4, 0.7, 0.3, 0.55]))
    assert result["mean_b"] == pytest.approx(np.mean([0.7, 0.6, 0.6, 0.8, 0.6, 0.60]))
    test = stats.wilcoxon(d, zero_method="pratt")
    assert result["wilcoxon_p"] == pytest.approx(test.pvalue)
    rows = np.random.default_rng(2).integers(0, 6, size=(1000, 6))
    assert (result["ci_low"], result["ci_high"]) == pytest.approx(hand_percentiles(d[rows].mean(axis=1)))
    assert result["ci_high"] <= 0
    assert result["significant"] is (result["ci_high"] < 0)


def test_paired_comparison_of_equal_values_is_not_significant():
    a = np.array([0.3, 0.5, 0.9])
    result = statistics.paired_comparison(a, a.copy(), n_resamples=1000)
    assert result["mean_difference"] == 0
    assert (result["ci_low"], result["ci_high"]) == (0, 0)
    assert result["wilcoxon_p"] == 1.0
    assert result["significant"] is False


def test_paired_comparison_constant_shift_is_significant_and_empty_is_nan():
    a = np.linspace(0.1, 0.9, 12)
    result = statistics.paired_comparison(a + 0.1, a, n_resamples=1000)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((0.1, 0.1))
    assert result["significant"] is True
    empty = statistics.paired_comparison(np.array([np.nan]), np.array([0.5]))
    assert empty["n"] == 0 and math.isnan(empty["mean_difference"]) and empty["significant"] is False
    with pytest.raises(ValueError, match="length"):
        statistics.paired_comparison(np.ones(2), np.ones(3))


def test_correlation_with_ci_by_hand():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    y = np.array([0.3, 0.1, 0.4, 0.35, 0.8, 0.6])
    result = statistics.correlation_with_ci(x, y, n_resamples=1000, seed=9)
    xc, yc = x - x.mean(), y - y.mean()
    assert result["n"] == 6
    assert result["pearson_r"] == pytest.approx((xc @ yc) / np.sqrt((xc @ xc) * (yc @ yc)))
    assert result["pearson_p"] == pytest.approx(stats.pearsonr(x, y).pvalue)
    # ranks of y: 0.1 -> 1, 0.3 -> 2, 0.35 -> 3, 0.4 -> 4, 0.6 -> 5, 0.8 -> 6
    ry = np.array([2, 1, 4, 3, 6, 5], float)
    assert result["spearman_rho"] == pytest.approx(1 - 6 * ((x - ry) ** 2).sum() / (6 * 35))
    assert result["spearman_p"] == pytest.approx(stats.spearmanr(x, y).pvalue)
    rows = np.random.default_rng(9).integers(0, 6, size=(1000, 6))
    pearsons, spearmans = [], []
    for r in rows:
        if np.ptp(x[r]) == 0 or np.ptp(y[r]) == 0:
            pearsons.append(np.nan)
            spearmans.append(np.nan)
            continue
        pearsons.append(stats.pearsonr(x[r], y[r]).statistic)
        spearmans.append(stats.spearmanr(x[r], y[r]).statistic)
    assert (result["pearson_ci_low"], result["pearson_ci_high"]) == pytest.approx(hand_percentiles(pearsons))
    assert (result["spearman_ci_low"], result["spearman_ci_high"]) == pytest.approx(hand_percentiles(spearmans))


def test_correlation_is_nan_when_undefined():
    for x, y in (([1, 2], [3, 4]), ([1, 1, 1, 1], [1, 2, 3, 4]), ([1, 2, 3, 4], [5, 5, 5, 5]),
                 ([1, 2, np.nan, 4], [1, np.nan, 3, 4])):
        result = statistics.correlation_with_ci(np.array(x, float), np.array(y, float), n_resamples=100)
        assert all(math.isnan(result[k]) for k in result if k != "n"), (x, y)
    assert statistics.correlation_with_ci(np.array([1, 2, np.nan, 4.0]), np.array([1, 2, 3, 5.0]),
                                          n_resamples=100)["n"] == 3
