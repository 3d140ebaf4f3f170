"""Paired gains: Holm and P(improvement) against hand-worked values, power against simulation, and
the paired test on simulated studies with a planted gain and with none."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from stats_simulation import CELLS, World
from study.stats.bootstrap import bootstrap_recalls, cell_recalls, whm_of
from study.stats.intervals import estimate_mean
from study.stats.paired import (detectable_gain, holm, paired_difference, power,
                                probability_of_improvement, seeds_needed)

SLACK = 3 * np.sqrt(0.05 * 0.95 / 1000)  # three Monte-Carlo standard errors over 1,000 studies


def test_holm_on_a_hand_worked_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # NaN is not a comparison: family of 2
    got = holm([0.02, np.nan, 0.5])
    assert got[0] == pytest.approx(0.04) and np.isnan(got[1]) and got[2] == pytest.approx(0.5)
    assert holm([0.5, 0.6]).tolist() == [1.0, 1.0]  # capped at 1, monotone
    assert holm([]).size == 0
    with pytest.raises(ValueError, match=r"p-values must lie in \[0, 1\]"):
        holm([1.5])


def test_probability_of_improvement_by_hand_and_as_rliable():
    # pairs (x, y): (.3,.3) 1/2, (.3,.4) 0, (.3,.6) 0, (.5,.3) 1, (.5,.4) 1, (.5,.6) 0 -> 2.5 / 6
    assert probability_of_improvement([0.3, 0.5], [0.3, 0.4, 0.6]) == pytest.approx(2.5 / 6)
    assert probability_of_improvement([0.2, 0.4], [0.2, 0.4]) == 0.5
    x, y = np.random.default_rng(0).uniform(size=5), np.random.default_rng(1).uniform(size=4)
    u = stats.mannwhitneyu(x, y, alternative="greater").statistic  # what rliable divides by n m
    assert probability_of_improvement(x, y) == pytest.approx(u / 20)
    with pytest.raises(ValueError, match="needs runs of both"):
        probability_of_improvement([], [0.1])


def test_power_matches_simulation_and_known_limits():
    # no test-set part: the one-sample t-test; its size is alpha
    assert power(0.0, seed_var=1.0, query_var=0.0, n_seeds=4) == pytest.approx(0.05, abs=2e-3)
    diffs = np.random.default_rng(3).normal(0.8, 1.0, (40_000, 4))
    rate = np.mean(estimate_mean(diffs).p_value() < 0.05)
    assert power(0.8, seed_var=1.0, query_var=0.0, n_seeds=4) == pytest.approx(rate, abs=0.01)
    # both parts: simulate the estimate's law (mean, S^2) and the test's rule
    rng = np.random.default_rng(4)
    per_seed = rng.normal(0.05, 0.04, (40_000, 3)) + rng.normal(0, 0.02, (40_000, 1))
    margin = np.sqrt(stats.t.ppf(0.975, 2) ** 2 * per_seed.var(axis=1, ddof=1) / 3 + 1.96 ** 2 * 0.02 ** 2)
    rate = np.mean(np.abs(per_seed.mean(axis=1)) > margin)
    assert power(0.05, seed_var=0.04 ** 2, query_var=0.02 ** 2, n_seeds=3) == pytest.approx(rate, abs=0.01)


def test_detectable_gain_and_seeds_needed():
    mde = detectable_gain(seed_var=0.01, query_var=1e-4, n_seeds=5)
    assert power(mde, seed_var=0.01, query_var=1e-4, n_seeds=5) == pytest.approx(0.8, abs=1e-6)
    assert detectable_gain(seed_var=0.01, query_var=1e-4, n_seeds=10) < mde  # more seeds, smaller
    n = seeds_needed(0.05, seed_var=0.01, query_var=1e-4)
    assert power(0.05, seed_var=0.01, query_var=1e-4, n_seeds=n) >= 0.8
    assert power(0.05, seed_var=0.01, query_var=1e-4, n_seeds=n - 1) < 0.8
    # a gain the test set's own noise hides: no number of seeds detects it
    assert np.isnan(seeds_needed(0.01, seed_var=0.01, query_var=0.01 ** 2))
    assert np.isnan(seeds_needed(0.0, seed_var=0.01, query_var=0.0))
    assert np.isnan(detectable_gain(seed_var=np.nan, query_var=0.0, n_seeds=2))


def paired_study(world: World, n_seeds: int, shift: float, seed: int):
    x, y = world.simulate(np.random.default_rng(seed), 1000, n_seeds, arms=(shift, 0.0))
    scores = [whm_of(cell_recalls(arm, CELLS), CELLS.weights) for arm in (x, y)]
    # the same seed gives both arms the same query resamples: this is what pairs them
    draws = [whm_of(bootstrap_recalls(arm, CELLS, n_draws=200, seed=0), CELLS.weights) for arm in (x, y)]
    return paired_difference(scores[0], scores[1], draws[0], draws[1])


@pytest.mark.parametrize("world", [World(seed_sd=0.3, dataset_sd=0.1), World(seed_sd=0.02, dataset_sd=0.01)],
                         ids=["seeds-dominate", "test-set-dominates"])
@pytest.mark.parametrize("n_seeds", [3, 5])
def test_a_null_gain_is_declared_at_no_more_than_the_nominal_rate(world, n_seeds):
    estimate = paired_study(world, n_seeds, 0.0, seed=20 + n_seeds)
    assert np.mean(estimate.p_value() < 0.05) <= 0.05 + SLACK


@pytest.mark.parametrize("n_seeds", [3, 5])
def test_a_planted_gain_is_detected_and_covered(n_seeds):
    world = World(seed_sd=0.05, dataset_sd=0.02)
    estimate = paired_study(world, n_seeds, 0.5, seed=30 + n_seeds)
    true_gain = world.true_whm(0.5) - world.true_whm(0.0)
    assert true_gain == pytest.approx(0.14, abs=0.01)  # a clear effect on this scale
    assert np.mean(estimate.p_value() < 0.05) >= 0.9
    low, high = estimate.interval()
    assert np.mean((low <= true_gain) & (true_gain <= high)) >= 0.93
