"""Recall_subset@K: each query ranks only the images of its own subset (CIRR's img_set).

CIRR (Liu et al., ICCV 2021, arXiv 2108.04024) groups six visually similar images into an img_set;
a query's reference and target are both members. Recall_subset@K ranks the target among the other
members only (the reference excluded), so it scores the fine differences the text describes rather
than finding the right neighbourhood of the whole gallery (K in 1, 2, 3: five candidates).

Same similarities and tie rule as study/metrics.py: cosine of the L2-normalised embeddings (one
matrix product per chunk of queries, so a candidate's score equals its score in the full ranking);
a query's rank is the number of *incorrect* candidates whose similarity is >= that of the best
correct candidate (a tie ranks the wrong one first); a NaN never matches. A query whose subset
holds no correct candidate besides the reference, or whose best correct similarity is not finite,
gets rank N (the gallery size, as in study/metrics.py): a miss at every K. A candidate is correct when its label
equals the target's (CIRR's labels are image names: the target itself).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from study.data.cirr import SUBSET_KS
from study.data.types import Query
from study.metrics import recall_from_ranks

__all__ = ["SUBSET_KS", "has_subsets", "subset_ranks", "subset_recalls", "subset_top"]


def has_subsets(queries: Sequence[Query]) -> bool:
    """Whether every query carries a subset (CIRR), so Recall_subset can be scored."""
    return bool(queries) and all(q.subset is not None for q in queries)


def _candidates(queries: Sequence[Query], n_gallery: int, device: torch.device) -> Tensor:
    """(Q, M) gallery indices of each query's subset without its source, padded with -1."""
    rows = []
    for i, q in enumerate(queries):
        if q.subset is None:
            raise ValueError(f"query {i} has no subset (Query.subset is None): Recall_subset needs a layout with "
                             "img_set groups, e.g. CIRR; check has_subsets(queries) first")
        members = [m for m in dict.fromkeys(q.subset) if m != q.source]
        if any(not 0 <= m < n_gallery for m in members):
            raise ValueError(f"query {i}: subset {q.subset} holds indices outside the gallery [0, {n_gallery})")
        rows.append(members)
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), max(width, 1)), -1, dtype=torch.long)
    for i, members in enumerate(rows):
        out[i, : len(members)] = torch.tensor(members, dtype=torch.long)
    return out.to(device)


def _similarities(query_emb: Tensor, gallery_emb: Tensor, candidates: Tensor, chunk_size: int) -> Tensor:
    """(Q, M) cosine of each query with its candidates (-inf at padding), by chunks of queries."""
    dtype = torch.float64 if query_emb.dtype == torch.float64 else torch.float32
    q = F.normalize(query_emb.to(dtype), dim=1)  # (Q, D)
    g = F.normalize(gallery_emb.to(device=q.device, dtype=dtype), dim=1)  # (N, D)
    out = torch.empty(candidates.shape, dtype=dtype, device=q.device)
    for start in range(0, len(q), chunk_size):
        stop = min(start + chunk_size, len(q))
        sims = q[start:stop] @ g.T  # (C, N): the same product as study.metrics.first_hit_ranks
        out[start:stop] = sims.gather(1, candidates[start:stop].clamp(min=0))
    return out.masked_fill(candidates < 0, -math.inf)


def _check(query_emb: Tensor, gallery_emb: Tensor, queries: Sequence[Query]) -> None:
    if query_emb.dim() != 2 or gallery_emb.dim() != 2 or query_emb.shape[1] != gallery_emb.shape[1]:
        raise ValueError(f"query_emb (Q, D) and gallery_emb (N, D) must share D; got {tuple(query_emb.shape)} "
                         f"and {tuple(gallery_emb.shape)}")
    if len(queries) != len(query_emb):
        raise ValueError(f"one query per row of query_emb: {len(queries)} queries, {len(query_emb)} rows")


@torch.no_grad()
def subset_ranks(query_emb: Tensor, gallery_emb: Tensor, queries: Sequence[Query], gallery_labels: Sequence,
                 *, chunk_size: int = 1024) -> Tensor:
    """(Q,) 0-based rank of each query's first correct candidate within its subset (module docstring:
    ties, misses). `gallery_labels`: one label per gallery image (the split's labels)."""
    _check(query_emb, gallery_emb, queries)
    if len(gallery_labels) != len(gallery_emb):
        raise ValueError(f"one label per gallery image: {len(gallery_labels)} labels, {len(gallery_emb)} images")
    if not queries:
        return torch.empty(0, dtype=torch.long, device=query_emb.device)
    candidates = _candidates(queries, len(gallery_emb), query_emb.device)  # (Q, M)
    sims = _similarities(query_emb, gallery_emb, candidates, chunk_size)  # (Q, M)
    ids: dict = {}
    label_ids = torch.tensor([ids.setdefault(label, len(ids)) for label in gallery_labels], device=candidates.device)
    targets = label_ids[torch.tensor([q.target for q in queries], device=candidates.device)]  # (Q,)
    valid = candidates >= 0
    correct = valid & (label_ids[candidates.clamp(min=0)] == targets[:, None])  # (Q, M)
    scored = sims.nan_to_num(nan=-math.inf)
    best = scored.masked_fill(~correct, -math.inf).amax(dim=1)  # (Q,)
    ahead = (valid & ~correct & (sims >= best[:, None])).sum(dim=1)  # NaN >= x is False: never ahead
    return torch.where(best.isfinite(), ahead, torch.full_like(ahead, len(gallery_emb)))


def subset_recalls(query_emb: Tensor, gallery_emb: Tensor, queries: Sequence[Query], gallery_labels: Sequence,
                   ks: Sequence[int] = SUBSET_KS) -> dict[int, float]:
    """Recall_subset@K for each K, e.g. {1: 0.61, 2: 0.83, 3: 0.93}; arguments as in `subset_ranks`.

    Example:
        >>> from study.data.types import Query
        >>> g = torch.eye(3)
        >>> queries = [Query(0, "x", 1, "caption", None, subset=(0, 1, 2))]
        >>> subset_recalls(torch.tensor([[0.0, 1.0, 0.5]]), g, queries, ["a", "b", "c"], ks=[1])
        {1: 1.0}
    """
    return recall_from_ranks(subset_ranks(query_emb, gallery_emb, queries, gallery_labels), ks)


@torch.no_grad()
def subset_top(query_emb: Tensor, gallery_emb: Tensor, queries: Sequence[Query], *, k: int,
               chunk_size: int = 1024) -> list[list[int]]:
    """Each query's k most similar subset members (its source excluded), best first, as gallery
    indices: what CIRR's server takes for Recall_subset. Ties keep the members' gallery order; a
    NaN similarity ranks last."""
    _check(query_emb, gallery_emb, queries)
    if not queries:
        return []
    candidates = _candidates(queries, len(gallery_emb), query_emb.device)  # (Q, M)
    sims = _similarities(query_emb, gallery_emb, candidates, chunk_size).nan_to_num(nan=-math.inf)
    # padding sorts last: its key is below every real candidate's, -inf included
    key = torch.where(candidates >= 0, sims, torch.full_like(sims, -math.inf))
    order = torch.sort(candidates.masked_fill(candidates < 0, len(gallery_emb)), dim=1, stable=True).indices
    by_index = candidates.gather(1, order), key.gather(1, order)  # members in gallery order first
    ranked = torch.sort(by_index[1], dim=1, descending=True, stable=True).indices
    top = by_index[0].gather(1, ranked)
    return [[int(m) for m in row if m >= 0][:k] for row in top.tolist()]
