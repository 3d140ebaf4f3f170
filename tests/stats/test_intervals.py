"""Intervals of a seed mean: hand-computed parts, the p-value's agreement with the interval, and
coverage of a known true mean in 1,000 simulated studies."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from stats_simulation import CELLS, World
from study.stats.bootstrap import bootstrap_recalls, cell_recalls, whm_of
from study.stats.intervals import estimate_mean

T2, Z = 4.302652729911275, 1.959963984540054  # t(0.975, 2 df) and the normal 97.5% point


def test_parts_and_interval_by_hand():
    per_seed = np.array([0.3, 0.4, 0.5])
    shared = np.array([-0.01, 0.01, -0.01, 0.01])  # each draw moves every seed alike
    estimate = estimate_mean(per_seed, per_seed[None, :] + shared[:, None])
    assert estimate.mean == pytest.approx(0.4)
    assert estimate.seed_var == pytest.approx(0.01)  # ((-0.1)^2 + 0 + 0.1^2) / 2
    assert estimate.query_var == pytest.approx(4e-4 / 3)  # the shared draws' variance (ddof 1)
    low, high = estimate.interval()
    half = np.sqrt(T2 ** 2 * 0.01 / 3 + Z ** 2 * 4e-4 / 3)
    assert (low, high) == pytest.approx((0.4 - half, 0.4 + half))
    assert estimate.method == "seed t + query bootstrap" and estimate.covers == "seeds + test set"
    assert estimate_mean(per_seed, per_seed[None, :] + shared[:, None]).interval(bounds=(0.3, 1))[0] == 0.3


def test_shared_part_is_the_mean_off_diagonal_covariance():
    draws = np.random.default_rng(0).normal(size=(400, 4)) @ np.diag([1.0, 2.0, 0.5, 1.5])
    draws[:, :] += np.random.default_rng(1).normal(size=(400, 1))  # a shared component
    covariance = np.cov(draws, rowvar=False)
    off_diagonal = covariance[~np.eye(4, dtype=bool)].mean()
    assert estimate_mean(np.zeros(4), draws).query_var == pytest.approx(off_diagonal)
    # seed-specific draws only (negatively correlated): no shared part, never a negative variance
    assert estimate_mean(np.zeros(3), np.array([[1, -1, 0], [-1, 1, 0], [0, 0, 0.0]])).query_var == 0.0


def test_p_value_agrees_with_the_interval_and_reduces_to_known_tests():
    rng = np.random.default_rng(2)
    per_seed = rng.normal(0.02, 0.03, (300, 4))
    draws = per_seed[:, None, :] + rng.normal(0, 0.01, (300, 50, 1)) + rng.normal(0, 0.005, (300, 50, 4))
    estimate = estimate_mean(per_seed, draws)
    low, high = estimate.interval()
    p = estimate.p_value()
    assert np.array_equal(p < 0.05, (low > 0) | (high < 0))
    # the p-value is the level at which the interval just touches 0
    edge = estimate_mean(np.array([0.0, 0.1, 0.2]), np.array([[0.0, 0.1, 0.2], [0.02, 0.12, 0.22]]))
    shifted = estimate_mean(np.array([0.0, 0.1, 0.2]) - 0.1 + edge.half_width(0.9),
                            np.array([[0.0, 0.1, 0.2], [0.02, 0.12, 0.22]]) - 0.1 + edge.half_width(0.9))
    assert shifted.p_value() == pytest.approx(0.1, rel=1e-6)
    # no ranks: the one-sample t-test; fewer than 3 seeds with ranks: the normal test on the query part
    plain = estimate_mean(per_seed)
    assert plain.p_value() == pytest.approx(stats.ttest_1samp(per_seed, 0.0, axis=-1).pvalue)
    two = estimate_mean(per_seed[:, :2], draws[:, :, :2])
    sd = np.sqrt(draws[:, :, :2].mean(axis=-1).var(axis=-1, ddof=1))
    assert two.p_value() == pytest.approx(2 * stats.norm.sf(np.abs(per_seed[:, :2].mean(axis=-1)) / sd))
    assert estimate_mean(np.zeros(3), np.zeros((5, 3))).p_value() == 1.0


def test_fewer_than_three_seeds_say_the_seed_part_is_not_estimable():
    two = estimate_mean(np.array([0.30, 0.40]), np.array([[0.29, 0.41], [0.31, 0.39], [0.33, 0.45]]))
    assert two.method == "query bootstrap" and two.covers == "test set only (<3 seeds)"
    assert np.isnan(two.seed_var)
    means = np.array([0.35, 0.35, 0.39])
    half = Z * means.std(ddof=1)
    assert two.interval() == pytest.approx((0.35 - half, 0.35 + half))
    none = estimate_mean(np.array([0.3]))
    assert none.covers.startswith("nothing") and np.isnan(none.interval()[0]) and np.isnan(none.p_value())
    seeds_only = estimate_mean(np.array([0.3, 0.4, 0.5]))
    assert seeds_only.covers.startswith("seeds only")
    assert seeds_only.interval() == pytest.approx((0.4 - T2 * 0.1 / np.sqrt(3), 0.4 + T2 * 0.1 / np.sqrt(3)))


@pytest.mark.parametrize("world", [World(seed_sd=0.3, dataset_sd=0.1), World(seed_sd=0.02, dataset_sd=0.01)],
                         ids=["seeds-dominate", "test-set-dominates"])
@pytest.mark.parametrize("n_seeds", [3, 5])
def test_intervals_cover_the_true_mean_in_1000_simulated_studies(world, n_seeds):
    (ranks,) = world.simulate(np.random.default_rng(10 + n_seeds), 1000, n_seeds)
    per_seed = whm_of(cell_recalls(ranks, CELLS), CELLS.weights)  # (1000, n_seeds)
    draws = whm_of(bootstrap_recalls(ranks, CELLS, n_draws=200, seed=0), CELLS.weights)
    low, high = estimate_mean(per_seed, draws).interval(bounds=(0.0, 1.0))
    truth = world.true_whm()
    coverage = np.mean((low <= truth) & (truth <= high))
    assert 0.93 <= coverage <= 0.99, coverage  # valid, and not uselessly wide
