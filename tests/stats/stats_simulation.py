"""A population of retrieval outcomes with a known true mean WHM, for the statistics' simulation tests.

Query q of dataset d has a difficulty u_q ~ N(0, QUERY_SD^2), drawn afresh for every simulated test
set; a seed has a skill a_s ~ N(0, seed_sd^2) shared by the datasets plus a_sd ~ N(0,
dataset_sd^2) of its own per dataset; each (seed, query) adds e ~ N(0, NOISE_SD^2). With
z = offset_d + u_q + e - a_s - a_sd - shift, the stored first-hit rank is floor(exp(z)), so
rank < K exactly when z < log K, and the population Recall@K of a seed with skills (a, a_d) is

    Phi((log K - offset_d + a + a_d + shift) / sqrt(QUERY_SD^2 + NOISE_SD^2)).

The true mean WHM, E over seeds of the WHM of those recalls, is a 3-D Gauss-Hermite quadrature
(two datasets). `shift` raises every recall: a planted gain.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from study.stats.bootstrap import Cells, whm_of

QUERY_SD, NOISE_SD = 1.0, 1.0
CELLS = Cells.from_weights({"a/test@1": 1.0, "a/test@10": 1.0, "b/test@1": 1.0, "b/test@5": 2.0})
OFFSETS = {"a": 1.0, "b": 0.3}


@dataclass(frozen=True)
class World:
    seed_sd: float
    dataset_sd: float
    n_queries: int = 300

    def true_whm(self, shift: float = 0.0) -> float:
        x, w = np.polynomial.hermite_e.hermegauss(30)
        w = w / w.sum()
        a, b_a, b_b = np.meshgrid(x, x, x, indexing="ij")  # standard-normal nodes
        weight = w[:, None, None] * w[None, :, None] * w[None, None, :]
        own = {"a": b_a, "b": b_b}
        scale = np.hypot(QUERY_SD, NOISE_SD)
        recalls = [stats.norm.cdf((np.log(k) - OFFSETS[g[0]] + self.seed_sd * a
                                   + self.dataset_sd * own[g[0]] + shift) / scale)
                   for g, k in zip(CELLS.groups, CELLS.ks)]
        return float((whm_of(np.stack(recalls, axis=-1), CELLS.weights) * weight).sum())

    def simulate(self, rng: np.random.Generator, n_studies: int, n_seeds: int, *,
                 arms: tuple[float, ...] = (0.0,)) -> list[dict[tuple[str, str], np.ndarray]]:
        """Per arm (its shift), ranks {(dataset, "test"): (n_studies, n_seeds, n_queries)}; the arms
        of a study share its test set (the query difficulties), their seeds are independent."""
        difficulty = {d: rng.normal(0, QUERY_SD, (n_studies, 1, self.n_queries)) for d in OFFSETS}
        out = []
        for shift in arms:
            skill = rng.normal(0, self.seed_sd, (n_studies, n_seeds, 1))
            ranks = {}
            for d, offset in OFFSETS.items():
                z = (offset + difficulty[d] + rng.normal(0, NOISE_SD, (n_studies, n_seeds, self.n_queries))
                     - skill - rng.normal(0, self.dataset_sd, (n_studies, n_seeds, 1)) - shift)
                ranks[(d, "test")] = np.floor(np.exp(np.minimum(z, 30.0))).astype(np.int64)
            out.append(ranks)
        return out
