"""Paired comparisons of two configurations (methods.md A.9): the gain, Holm's correction over a
study's comparisons, rliable's probability of improvement, and the power of the study's seeds.

The gain of X over Y is the mean over common seeds of WHM_X,s - WHM_Y,s, each WHM recomputed on the
same resampled test queries for both arms (`study.stats.bootstrap` draws the same queries for the
same dataset in every configuration), so its interval and p-value are `study.stats.intervals`'
applied to per-seed differences: the pairing removes what the seeds and the queries share.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import optimize, stats

from study.stats.intervals import MIN_SEEDS, MeanEstimate, estimate_mean

__all__ = ["detectable_gain", "holm", "paired_difference", "power", "probability_of_improvement",
           "seeds_needed"]

_NODES = 256  # quantile nodes of S^2's chi-square law in `power`


def paired_difference(x: np.ndarray, y: np.ndarray, x_draws: np.ndarray | None = None,
                      y_draws: np.ndarray | None = None) -> MeanEstimate:
    """The mean of x_s - y_s over seeds (..., n_seeds) with `estimate_mean`'s interval; the draws
    (..., n_draws, n_seeds) must come from the same query resamples for both arms."""
    if (x_draws is None) != (y_draws is None):
        raise ValueError("give the bootstrap draws of both arms or of neither")
    diff_draws = None if x_draws is None else np.asarray(x_draws) - np.asarray(y_draws)
    return estimate_mean(np.asarray(x, float) - np.asarray(y, float), diff_draws)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, family = the finite entries (NaN stays NaN).

    Sorted ascending p_(1) <= ... <= p_(m): adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)).
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    if finite.size:
        if ((p[finite] < 0) | (p[finite] > 1)).any():
            raise ValueError(f"p-values must lie in [0, 1], got {p[finite].tolist()}")
        order = finite[np.argsort(p[finite], kind="stable")]
        m = order.size
        scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
        out[order] = np.maximum.accumulate(scaled)
    return out


def probability_of_improvement(x: Sequence[float], y: Sequence[float]) -> float:
    """P(X > Y) as rliable defines it (Agarwal et al., NeurIPS 2021, arXiv 2108.13264): over all
    pairs of a run of X and a run of Y, the share where X's score is higher, ties counting 1/2
    (the Mann-Whitney U of X over n_x n_y)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError(f"probability_of_improvement needs runs of both; got {a.size} and {b.size}")
    return float(np.mean((a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])))


def power(gain: float | np.ndarray, *, seed_var: float, query_var: float, n_seeds: int | np.ndarray,
          alpha: float = 0.05) -> np.ndarray:
    """Chance that the test of `study.stats.intervals` (reject when the 1 - alpha interval excludes
    0) detects a true `gain` with `n_seeds` seeds, given the per-seed variance of the differences
    `seed_var` and the shared test-set variance `query_var`.

    The mean is N(gain, seed_var/n + query_var); S^2 = seed_var W, W ~ chi2(n-1)/(n-1), sets the
    margin sqrt(t^2 S^2/n + z^2 query_var); the power averages over W at _NODES quantiles.
    """
    n = np.asarray(n_seeds, dtype=float)[..., None]
    if np.any(n < MIN_SEEDS):
        raise ValueError(f"power needs n_seeds >= {MIN_SEEDS}, got {n_seeds}")
    g = np.asarray(gain, dtype=float)[..., None]
    w = stats.chi2.ppf((np.arange(_NODES) + 0.5) / _NODES, n - 1) / (n - 1)  # (..., nodes)
    t, z = stats.t.isf(alpha / 2, n - 1), stats.norm.isf(alpha / 2)
    margin = np.sqrt(t ** 2 * seed_var * w / n + z ** 2 * query_var)
    sd = np.sqrt(seed_var / n + query_var)
    if np.all(sd == 0):
        return np.where(np.abs(g) > margin, 1.0, 0.0).mean(axis=-1)
    reject = stats.norm.sf((margin - g) / sd) + stats.norm.cdf((-margin - g) / sd)
    return reject.mean(axis=-1)


def detectable_gain(*, seed_var: float, query_var: float, n_seeds: int, alpha: float = 0.05,
                    target_power: float = 0.8) -> float:
    """The smallest |gain| that `n_seeds` seeds detect with `target_power` (see `power`); NaN when
    the variances are not known (fewer than MIN_SEEDS seeds, NaN input)."""
    if n_seeds < MIN_SEEDS or not (np.isfinite(seed_var) and np.isfinite(query_var)):
        return float("nan")
    if seed_var == 0 and query_var == 0:
        return 0.0
    def shortfall(g: float) -> float:
        return float(power(g, seed_var=seed_var, query_var=query_var, n_seeds=n_seeds,
                           alpha=alpha)) - target_power
    high = np.sqrt(seed_var / n_seeds + query_var)
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high, xtol=1e-10 * high))


def seeds_needed(gain: float, *, seed_var: float, query_var: float, alpha: float = 0.05,
                 target_power: float = 0.8, max_seeds: int = 1000) -> float:
    """The fewest seeds (>= MIN_SEEDS) that detect a true `gain` with `target_power`, on this test
    set; NaN when not even `max_seeds` would (a zero gain, or a test-set variance `query_var` that
    seeds cannot shrink: then the test set, not the seeds, is too small)."""
    if not (np.isfinite(gain) and np.isfinite(seed_var) and np.isfinite(query_var)) or gain == 0:
        return float("nan")
    def enough(n: int) -> bool:
        return bool(power(gain, seed_var=seed_var, query_var=query_var, n_seeds=n, alpha=alpha) >= target_power)
    if not enough(max_seeds):
        return float("nan")
    low, high = MIN_SEEDS - 1, max_seeds  # power rises with n: bisect for the first n that is enough
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return float(high)
