"""The interval of a mean over seeds that accounts for seed variation AND test-set sampling
(methods.md A.9); used for a configuration's WHM and, on per-seed differences, for paired gains.

Model. Seed s of a configuration scores X_s = mu + a_s + b(Q) + c_s(Q) on the test queries Q:
a_s is the seed's own effect (initialisation, data order), b(Q) the part of the test-set draw that
every seed shares (the same easy and hard queries), c_s(Q) the seed-by-query part (which queries
this seed happens to get right). The seed mean Xbar has

    Var(Xbar) = (var a + var c) / n + var b.

* Seed part. The sample variance S^2 of X_s over seeds estimates var a + var c (b cancels: all
  seeds share it): S^2 / n, with n - 1 degrees of freedom.
* Test-set part. var b is the covariance between two seeds' scores under resampled test sets. The
  query bootstrap (`study.stats.bootstrap`: one resample per dataset per draw, shared by all
  seeds, Recall@K and WHM recomputed) gives it as the mean off-diagonal covariance of the per-seed
  bootstrap scores, C = [Var*(sum_s X*_s) - sum_s Var*(X*_s)] / (n (n - 1)). It rests on
  thousands of queries, so it is treated as known.
* Interval ("seed t + query bootstrap"): Xbar +- sqrt(t^2 S^2/n + z^2 C), with t the 97.5% point of
  Student's t with n - 1 df and z the normal one: each part's margin at its own quantile, the
  margins added in quadrature. It is exact when either part vanishes and never below nominal in
  between: with lambda = (var/n) / Var(Xbar) and g the chi-square(1) CDF (concave), the coverage
  E g(lambda t^2 W + (1 - lambda) z^2) >= lambda E g(t^2 W) + (1 - lambda) g(z^2) = 0.95, W being
  S^2 / sigma^2. (A Welch-Satterthwaite t on S^2/n + C is anti-conservative here: with 3 seeds
  a small S^2 also inflates the df, and it covered 92% in our simulations.)

Why not a percentile bootstrap over seeds: with n seeds it shrinks the variance by (n - 1)/n and
uses normal-like quantiles; with 3 seeds it covers about 80% at nominal 95% (with 2 it is
[min, max]). Resampling seeds then queries also counts var c twice; the covariance counts it once.
`tests/stats` checks coverage against a known truth (>= 93% of 1,000 studies, 3 and 5 seeds).

Fewer than 3 seeds: S^2 has at most one degree of freedom (t = 12.7), so the seed part is declared
not estimable; the interval covers test-set sampling only, Xbar +- z sqrt(Var*(mean_s X*_s)), and
`covers` says so. Without per-query ranks the test-set part is missing: the interval is the plain
t over seeds, and `covers` says that too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["MIN_SEEDS", "MeanEstimate", "estimate_mean"]

MIN_SEEDS = 3  # below this, the seed part of the variance is declared not estimable


@dataclass(frozen=True)
class MeanEstimate:
    """A mean over seeds with its variance in a seed part and a test-set part. Array fields have
    the input's leading shape (0-d for one configuration).

    seed_var: S^2, the sample variance of the per-seed values (NaN below MIN_SEEDS seeds).
    query_var: the test-set variance of the mean: from MIN_SEEDS seeds on the part all seeds
        share (C), below it all of it; 0 without per-query ranks.
    """

    mean: np.ndarray
    seed_var: np.ndarray
    query_var: np.ndarray
    n_seeds: int
    has_queries: bool

    @property
    def seed_part(self) -> bool:
        return self.n_seeds >= MIN_SEEDS

    @property
    def estimable(self) -> bool:
        return self.seed_part or self.has_queries

    @property
    def covers(self) -> str:
        """What the interval accounts for, in words (a table column)."""
        if self.seed_part:
            return "seeds + test set" if self.has_queries else "seeds only (no per-query ranks)"
        if self.has_queries:
            return f"test set only (<{MIN_SEEDS} seeds)"
        return f"nothing (<{MIN_SEEDS} seeds, no per-query ranks)"

    @property
    def method(self) -> str:
        if self.seed_part:
            return "seed t + query bootstrap" if self.has_queries else "seed t"
        return "query bootstrap" if self.has_queries else "none"

    def _parts(self) -> tuple[np.ndarray, np.ndarray]:
        """(variance read at t with n - 1 df, variance read at z)."""
        if self.seed_part:
            return self.seed_var / self.n_seeds, self.query_var
        if self.has_queries:
            return np.zeros_like(self.mean), self.query_var
        nan = np.full_like(self.mean, np.nan)
        return nan, nan

    def half_width(self, level: float = 0.95) -> np.ndarray:
        seed, query = self._parts()
        t = stats.t.ppf(0.5 + level / 2, max(self.n_seeds - 1, 1))
        return np.sqrt(t ** 2 * seed + stats.norm.ppf(0.5 + level / 2) ** 2 * query)

    def interval(self, level: float = 0.95, bounds: tuple[float, float] = (-np.inf, np.inf)
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) of the two-sided `level` interval, clipped to `bounds`; NaN when not estimable."""
        half = self.half_width(level)
        return np.clip(self.mean - half, *bounds), np.clip(self.mean + half, *bounds)

    def p_value(self) -> np.ndarray:
        """Two-sided p of mean = 0: the largest 1 - level whose interval still excludes 0 (so p < 0.05
        exactly when the 95% interval excludes 0). 1 for a zero mean with zero variance, 0 for a
        non-zero one; NaN when not estimable."""
        seed, query = np.broadcast_arrays(*self._parts())
        mean = np.abs(np.broadcast_to(self.mean, seed.shape))
        df = max(self.n_seeds - 1, 1)
        p = np.full(seed.shape, np.nan)
        zero = (seed == 0) & (query == 0)
        p[zero] = np.where(mean[zero] == 0, 1.0, 0.0)
        only_t, only_z = (query == 0) & ~zero, (seed == 0) & ~zero
        p[only_t] = 2 * stats.t.sf(mean[only_t] / np.sqrt(seed[only_t]), df)
        p[only_z] = 2 * stats.norm.sf(mean[only_z] / np.sqrt(query[only_z]))
        both = (seed > 0) & (query > 0)
        if both.any():  # half_width falls as p rises: bisect on log10 p in [-40, 0]
            lo, hi = np.full(both.sum(), -40.0), np.zeros(both.sum())
            m, s, q = mean[both], seed[both], query[both]
            for _ in range(60):
                mid = (lo + hi) / 2
                alpha = 10.0 ** mid
                half = np.sqrt(stats.t.isf(alpha / 2, df) ** 2 * s + stats.norm.isf(alpha / 2) ** 2 * q)
                excludes = half < m  # the (1 - alpha) interval excludes 0: p <= alpha
                hi, lo = np.where(excludes, mid, hi), np.where(excludes, lo, mid)
            p[both] = 10.0 ** hi
        return p[()] if p.ndim == 0 else p


def estimate_mean(per_seed: np.ndarray, draws: np.ndarray | None = None) -> MeanEstimate:
    """The seed mean of `per_seed` (..., n_seeds) with its variance parts.

    draws: (..., n_draws, n_seeds) the per-seed values recomputed on resampled test sets (one
        resample per draw shared by all seeds: `study.stats.bootstrap`), or None without ranks.
    """
    x = np.asarray(per_seed, dtype=float)
    n = x.shape[-1]
    if n < 1:
        raise ValueError("estimate_mean needs at least one seed")
    seed_var = x.var(axis=-1, ddof=1) if n >= MIN_SEEDS else np.full(x.shape[:-1], np.nan)
    if draws is None:
        query_var = np.zeros(x.shape[:-1])
    else:
        d = np.asarray(draws, dtype=float)
        if d.ndim < 2 or d.shape[:-2] != x.shape[:-1] or d.shape[-1] != n:
            raise ValueError(f"draws must have shape (..., n_draws, {n}) matching per_seed "
                             f"{x.shape}, got {d.shape}")
        if d.shape[-2] < 2:
            raise ValueError(f"draws need at least 2 bootstrap draws, got {d.shape[-2]}")
        if n >= MIN_SEEDS:
            total = d.sum(axis=-1).var(axis=-1, ddof=1)
            own = d.var(axis=-2, ddof=1).sum(axis=-1)
            query_var = np.maximum((total - own) / (n * (n - 1)), 0.0)
        else:
            query_var = d.mean(axis=-1).var(axis=-1, ddof=1)
    return MeanEstimate(mean=x.mean(axis=-1), seed_var=seed_var, query_var=query_var,
                        n_seeds=n, has_queries=draws is not None)
