"""The query level of the hierarchical bootstrap (methods.md A.9): resample each (dataset, split)'s
test queries with replacement, once per draw and shared by every seed of that draw (all seeds, and
both arms of a paired comparison, are scored on the same queries), and recompute Recall@K per cell
from the stored first-hit ranks, then the WHM.

The seed level is not resampled here: `study.stats.intervals` handles it analytically (a Student t
over seeds), which is what small seed counts need.

Shapes: `ranks[(dataset, split)]` is an int array (..., n_seeds, n_queries) with queries in the same
order for every seed; leading axes (...) batch independent studies (the simulation tests).
"""
from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["Cells", "bootstrap_recalls", "cell_recalls", "parse_cell", "query_indices",
           "recalls_for_indices", "whm_of"]

Group = tuple[str, str]  # (dataset, split)
_CELL = re.compile(r"^(?P<dataset>[^/@]+)/(?P<split>[^/@]+)@(?P<k>[0-9]+)$")
# floats held by one chunk of bootstrap counts: bounds memory at large query counts (20k queries
# x 1000 draws would be 160 MB at once)
_CHUNK_FLOATS = 4_000_000


def parse_cell(cell: str) -> tuple[str, str, int]:
    """"css/test@10" -> ("css", "test", 10)."""
    match = _CELL.match(cell)
    if match is None:
        raise ValueError(f"cell {cell!r} is not '<dataset>/<split>@<k>' (e.g. 'css/test@10')")
    return match["dataset"], match["split"], int(match["k"])


@dataclass(frozen=True)
class Cells:
    """The WHM's cells with weight > 0, in a fixed order: `names[i]` has `weights[i]`, lives in
    `groups[i]` = (dataset, split) and counts a hit below rank `ks[i]`."""

    names: tuple[str, ...]
    weights: tuple[float, ...]

    @classmethod
    def from_weights(cls, cell_weights: Mapping[str, float]) -> "Cells":
        kept = [(cell, float(w)) for cell, w in cell_weights.items() if w > 0]
        for cell, weight in kept:
            parse_cell(cell)
            if not math.isfinite(weight):
                raise ValueError(f"cell {cell!r}: weight must be finite, got {weight}")
        if not kept:
            raise ValueError(f"no cell has weight > 0 in {dict(cell_weights)}; the score would be empty")
        return cls(tuple(c for c, _ in kept), tuple(w for _, w in kept))

    @property
    def groups(self) -> tuple[Group, ...]:
        return tuple(parse_cell(c)[:2] for c in self.names)

    @property
    def ks(self) -> tuple[int, ...]:
        return tuple(parse_cell(c)[2] for c in self.names)

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(g[0] for g in self.groups))

    def positions(self, dataset: str) -> list[int]:
        """Indices of `dataset`'s cells (for its own WHM, `score/<dataset>`)."""
        return [i for i, g in enumerate(self.groups) if g[0] == dataset]

    def by_group(self) -> dict[Group, list[int]]:
        out: dict[Group, list[int]] = {}
        for i, group in enumerate(self.groups):
            out.setdefault(group, []).append(i)
        return out


def whm_of(recalls: np.ndarray, weights) -> np.ndarray:
    """`study.metrics.whm` over the last axis, vectorised: sum(w) / sum(w / v), 0 where any v is 0."""
    v = np.asarray(recalls, dtype=float)
    w = np.asarray(weights, dtype=float)
    safe = np.where(v > 0, v, 1.0)
    inverse = np.where(v > 0, w / safe, np.inf).sum(axis=-1)
    return w.sum() / inverse  # sum(w) / inf = 0: a zero recall zeroes the WHM


def cell_recalls(ranks: Mapping[Group, np.ndarray], cells: Cells) -> np.ndarray:
    """Observed Recall@K per seed and cell: (..., n_seeds, n_cells)."""
    parts = {}
    for group, positions in cells.by_group().items():
        r = np.asarray(ranks[group])
        ks = np.array([cells.ks[i] for i in positions])
        parts.update(zip(positions, np.moveaxis((r[..., None, :] < ks[:, None]).mean(axis=-1), -1, 0)))
    return np.stack([parts[i] for i in range(len(cells.names))], axis=-1)


def recalls_for_indices(ranks: Mapping[Group, np.ndarray], cells: Cells,
                        indices: Mapping[Group, np.ndarray]) -> np.ndarray:
    """Recall@K per draw, seed and cell, (..., B, n_seeds, n_cells), where draw b of group g uses
    the queries `indices[g][b]` (an int array (B, n_queries_g)) for every seed.

    A draw's recall is (multiplicity of each query in the draw) @ (hit of each query) / n_queries,
    one matrix product per group instead of B gathers.
    """
    out = None
    for group, positions in cells.by_group().items():
        r = np.asarray(ranks[group])  # (..., n, Q)
        idx = np.asarray(indices[group])  # (B, Q)
        n_draws, n_queries = idx.shape
        if n_queries != r.shape[-1]:
            raise ValueError(f"{group}: indices draw {n_queries} queries but ranks hold {r.shape[-1]}")
        offsets = n_queries * np.arange(n_draws, dtype=np.int64)[:, None]
        counts = np.bincount((idx.astype(np.int64) + offsets).ravel(),
                             minlength=n_draws * n_queries).reshape(n_draws, n_queries)
        ks = np.array([cells.ks[i] for i in positions])
        hits = (r[..., None, :] < ks[:, None]).astype(np.float32)  # (..., n, k, Q)
        # one 2-D product (far faster than a batched one); float32 sums of 0/1 times counts are
        # exact integers below 2^24 queries
        recall = hits.reshape(-1, n_queries) @ counts.T.astype(np.float32)  # (... n k, B)
        recall = recall.reshape(hits.shape[:-1] + (n_draws,)).astype(float) / n_queries
        recall = np.moveaxis(recall, -1, -3)  # (..., B, n, k)
        if out is None:
            out = np.empty(recall.shape[:-1] + (len(cells.names),))
        out[..., positions] = recall
    return out


def _group_rng(seed: int, group: Group) -> np.random.Generator:
    # the same stream for a group in every configuration (common random numbers): two
    # configurations' intervals are drawn on the same resampled test sets
    return np.random.default_rng([seed, zlib.crc32(f"{group[0]}/{group[1]}".encode())])


def query_indices(group: Group, n_queries: int, n_draws: int, *, seed: int) -> np.ndarray:
    """(n_draws, n_queries) resampled query indices of `group`, as `bootstrap_recalls` draws them."""
    return _group_rng(seed, group).integers(0, n_queries, size=(n_draws, n_queries), dtype=np.int32)


def bootstrap_recalls(ranks: Mapping[Group, np.ndarray], cells: Cells, *, n_draws: int,
                      seed: int) -> np.ndarray:
    """`recalls_for_indices` over `n_draws` seeded resamples (`query_indices`), computed in chunks
    of draws so memory stays bounded at any query count: (..., n_draws, n_seeds, n_cells)."""
    if n_draws < 2:
        raise ValueError(f"n_draws must be >= 2 to estimate a variance, got {n_draws}")
    groups = list(cells.by_group())
    sizes = {g: np.asarray(ranks[g]).shape[-1] for g in groups}
    chunk = max(1, min(n_draws, _CHUNK_FLOATS // max(1, *sizes.values())))
    rngs = {g: _group_rng(seed, g) for g in groups}
    parts = []
    for start in range(0, n_draws, chunk):
        size = min(chunk, n_draws - start)
        indices = {g: rngs[g].integers(0, sizes[g], size=(size, sizes[g]), dtype=np.int32) for g in groups}
        parts.append(recalls_for_indices(ranks, cells, indices))
    return np.concatenate(parts, axis=-3)
