"""Statistics over independent units, checked against hand computations and scipy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from advseg import correlations, statistics


# --- hierarchical bootstrap -----------------------------------------------------------------

def test_one_fold_one_seed_is_the_plain_bootstrap_of_units():
    # two units, 0 and 1: a resample's mean is 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4
    means = statistics.hierarchical_means([np.array([[[0.0], [1.0]]])], 40_000, seed=3)[:, 0]
    values, counts = np.unique(means, return_counts=True)
    assert values.tolist() == [0.0, 0.5, 1.0]
    np.testing.assert_allclose(counts / counts.sum(), [0.25, 0.5, 0.25], atol=0.01)


def test_seeds_and_units_are_resampled_independently_within_a_fold():
    # 2 seeds x 2 units: a resample draws 2 seeds and 2 units; its mean is sum w_s w_u X / 4
    x = np.array([[1.0, 2.0], [4.0, 8.0]])
    exact = {}
    draws = {(2, 0): 0.25, (1, 1): 0.5, (0, 2): 0.25}
    for (ws, ps), (wu, pu) in itertools.product(draws.items(), draws.items()):
        mean = float(np.array(ws) @ x @ np.array(wu)) / 4
        exact[round(mean, 9)] = exact.get(round(mean, 9), 0.0) + ps * pu
    means = statistics.hierarchical_means([x[:, :, None]], 80_000, seed=1)[:, 0]
    for value, probability in exact.items():
        assert np.mean(np.isclose(means, value)) == pytest.approx(probability, abs=0.01)


def test_folds_are_resampled_and_weighted_by_their_cells():
    # fold A: one seed, one unit at 0; fold B: one seed, three units at 1. Drawing folds (A, A), (A, B), (B, B)
    # gives means 0, 3/4 (one cell of 0, three of 1) and 1, with probabilities 1/4, 1/2, 1/4.
    folds = [np.zeros((1, 1, 1)), np.ones((1, 3, 1))]
    means = statistics.hierarchical_means(folds, 40_000, seed=2)[:, 0]
    assert np.mean(means == 0) == pytest.approx(0.25, abs=0.01)
    assert np.mean(means == 1) == pytest.approx(0.25, abs=0.015)
    assert statistics.cell_mean(folds)[0] == pytest.approx(0.75)


def test_hierarchical_means_are_seeded_and_check_their_input():
    folds = [np.random.default_rng(0).random((2, 5, 2))]
    np.testing.assert_array_equal(statistics.hierarchical_means(folds, 500, seed=4),
                                  statistics.hierarchical_means(folds, 500, seed=4))
    with pytest.raises(ValueError, match="NaN"):
        statistics.hierarchical_means([np.full((1, 2, 1), np.nan)], 10)
    with pytest.raises(ValueError, match="no fold"):
        statistics.hierarchical_means([], 10)
    with pytest.raises(ValueError, match="n_bootstrap"):
        statistics.hierarchical_means(folds, 0)


# --- sign-flip test ------------------------------------------------------------------------------

def test_sign_flip_p_by_hand():
    # d = 1, 2, 3: the 8 sign vectors give sums 6, 4, 2, 0, 0, -2, -4, -6; only +-6 are as extreme as 6
    test = statistics.sign_flip_test(np.array([1.0, 2.0, 3.0]), 0.05, 1000)
    assert test.p == pytest.approx(2 / 8) and test.exact and test.effect == pytest.approx(2.0)
    assert test.smallest_p == pytest.approx(2 / 8)


@pytest.mark.parametrize("n", [6, 9, 12])
def test_exact_sign_flip_p_equals_scipy(n):
    d = np.random.default_rng(n).normal(0.3, 1.0, n)
    ours = statistics.sign_flip_test(d, 0.05, 1000).p
    reference = stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf,
                                       alternative="two-sided").pvalue
    assert ours == pytest.approx(reference, rel=1e-9)


def test_sign_flip_interval_by_hand():
    # |sums| of the 8 sign vectors of 1, 2, 3: 6, 6, 4, 4, 2, 2, 0, 0. At alpha 0.05, 0.4 of the 8 may be
    # as extreme: q is the largest, 6, and the interval is the mean 2 +- 6/3, which just touches 0.
    test = statistics.sign_flip_test(np.array([1.0, 2.0, 3.0]), 0.05, 1000)
    assert (test.ci_low, test.ci_high) == pytest.approx((0.0, 4.0))
    # at alpha 0.3, 2.4 -> the 3rd largest, 4: mean 2 +- 4/3 excludes 0, and p = 0.25 < 0.3
    test = statistics.sign_flip_test(np.array([1.0, 2.0, 3.0]), 0.3, 1000)
    assert (test.ci_low, test.ci_high) == pytest.approx((2 - 4 / 3, 2 + 4 / 3)) and test.p < 0.3


@pytest.mark.parametrize("n", [6, 8, 20])
def test_sign_flip_interval_excludes_zero_exactly_when_p_is_below_alpha(n):
    rejected = 0
    for seed in range(60):
        d = np.random.default_rng(seed).normal(0.3, 0.5, n)
        for alpha in (0.05, 0.1):
            test = statistics.sign_flip_test(d, alpha, 1000, seed=seed)
            assert test.ci_low <= test.effect <= test.ci_high
            assert (test.p < alpha) == (test.ci_low > 0 or test.ci_high < 0)
            rejected += test.p < alpha
    assert 0 < rejected < 120   # both outcomes occur


def test_five_units_cannot_reach_five_percent():
    test = statistics.sign_flip_test(np.array([1.0, 1.1, 1.2, 1.3, 1.4]), 0.05, 1000)
    assert test.p == pytest.approx(2 / 32) and test.p > 0.05 and test.smallest_p == pytest.approx(2 / 32)
    assert test.ci_low <= 0 <= test.ci_high


def test_many_units_draw_random_sign_flips():
    d = np.random.default_rng(9).normal(0.2, 1.0, 40)
    test = statistics.sign_flip_test(d, 0.05, 4000, seed=1)
    assert not test.exact and math.isnan(test.smallest_p)
    reference = stats.ttest_1samp(d, 0.0).pvalue   # the randomisation p is close to the t-test's here
    assert test.p == pytest.approx(reference, abs=0.03)
    assert statistics.sign_flip_test(d, 0.05, 4000, seed=1) == test


def test_sign_flip_drops_nan_and_handles_no_units():
    assert statistics.sign_flip_test(np.array([1.0, np.nan, 2.0]), 0.05, 100).n == 2
    empty = statistics.sign_flip_test(np.array([np.nan]), 0.05, 100)
    assert empty.n == 0 and math.isnan(empty.p)


# --- multiplicity --------------------------------------------------------------------------------

def test_holm_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(statistics.adjust(p, "holm"), [0.03, 0.06, 0.06, 0.02])


def test_benjamini_hochberg_equals_scipy():
    p = np.random.default_rng(0).uniform(0, 0.2, 17)
    np.testing.assert_allclose(statistics.adjust(p, "bh"), stats.false_discovery_control(p, method="bh"))


def test_adjust_leaves_nan_out_of_the_family():
    adjusted = statistics.adjust(np.array([0.01, np.nan, 0.02]), "holm")
    np.testing.assert_allclose(adjusted, [0.02, np.nan, 0.02])
    np.testing.assert_allclose(statistics.adjust(np.array([0.3, 0.9]), "none"), [0.3, 0.9])
    with pytest.raises(ValueError, match="report.multiplicity.*'bonferoni'"):
        statistics.adjust(np.array([0.1]), "bonferoni")


# --- correlations --------------------------------------------------------------------------------

def test_spearman_of_four_ordered_models_has_an_exact_p_of_one_in_twelve():
    result = correlations.correlation([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.5], "spearman", 0.95, 1000)
    assert result.estimate == pytest.approx(1.0) and result.exact
    assert result.p == pytest.approx(2 / 24)   # scipy's asymptotic p would say 0


def test_exact_spearman_p_equals_scipy():
    rng = np.random.default_rng(1)
    x, y = rng.random(6), rng.random(6)
    ours = correlations.correlation(x, y, "spearman", 0.95, 1000)
    # every ordering of y against x (6! = 720); Spearman's null is symmetric, so scipy's doubled p is P(|rho| >= ...)
    reference = stats.permutation_test((y,), lambda b: stats.spearmanr(x, b).statistic, permutation_type="pairings",
                                       n_resamples=np.inf, alternative="two-sided", vectorized=False)
    assert ours.estimate == pytest.approx(stats.spearmanr(x, y).statistic)
    assert ours.p == pytest.approx(reference.pvalue, rel=1e-9)


def test_exact_pearson_p_counts_every_ordering_at_least_as_extreme():
    rng = np.random.default_rng(1)
    x, y = rng.random(6), rng.random(6)
    observed = abs(stats.pearsonr(x, y).statistic)
    extreme = sum(abs(stats.pearsonr(x, y[list(order)]).statistic) >= observed - 1e-12
                  for order in itertools.permutations(range(6)))
    assert correlations.correlation(x, y, "pearson", 0.95, 1000).p == pytest.approx(extreme / 720)


def test_correlation_of_many_items_draws_permutations_and_bootstraps_items():
    rng = np.random.default_rng(2)
    x = rng.random(30)
    y = x + rng.normal(0, 0.3, 30)
    result = correlations.correlation(x, y, "pearson", 0.95, 2000)
    assert not result.exact and result.p < 0.01
    assert result.ci_low < result.estimate < result.ci_high
    nan = correlations.correlation([1, 2], [3, 4], "spearman", 0.95, 1000)
    assert nan.n == 2 and math.isnan(nan.estimate)


def test_detectable_correlation_by_hand():
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert correlations.detectable_correlation(20, 0.05, kind="pearson") == pytest.approx(math.tanh(z / math.sqrt(17)))
    assert correlations.detectable_correlation(20, 0.05) == pytest.approx(math.tanh(z * math.sqrt(1.06 / 17)))
    assert math.isnan(correlations.detectable_correlation(3, 0.05))


def test_partial_correlation_equals_the_textbook_formula():
    rng = np.random.default_rng(4)
    z = rng.random(25)
    x = z + rng.normal(0, 0.3, 25)
    y = z + 0.5 * x + rng.normal(0, 0.3, 25)
    r_xy, r_xz, r_yz = (stats.pearsonr(a, b).statistic for a, b in ((x, y), (x, z), (y, z)))
    expected = (r_xy - r_xz * r_yz) / math.sqrt((1 - r_xz ** 2) * (1 - r_yz ** 2))
    result = correlations.partial_correlation(x, y, z, 0.95)
    assert result.estimate == pytest.approx(expected)
    t = expected * math.sqrt(22 / (1 - expected ** 2))
    assert result.p == pytest.approx(2 * stats.t.sf(abs(t), 22))
    assert result.ci_low < expected < result.ci_high


def test_regression_with_one_predictor_equals_scipy_linregress():
    rng = np.random.default_rng(6)
    x = rng.random(15)
    y = 2 * x + rng.normal(0, 0.5, 15)
    intercept, slope = correlations.regression(y, {"x": x}, 0.95)
    reference = stats.linregress(x, y)
    assert slope.estimate == pytest.approx(reference.slope) and intercept.estimate == pytest.approx(reference.intercept)
    assert slope.p == pytest.approx(reference.pvalue)
    half = stats.t.ppf(0.975, 13) * reference.stderr
    assert (slope.ci_low, slope.ci_high) == pytest.approx((reference.slope - half, reference.slope + half))
