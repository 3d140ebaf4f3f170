"""Recall@K under the TIRG retrieval protocol, and the weighted harmonic mean (WHM) of recalls.

Protocol (methods.md A.8, B.1 "Evaluation protocol"): queries and gallery are L2-normalised and
compared by cosine similarity; the query's own source image is removed from its ranking; a query
hits at K when any of its top-K gallery items carries the same label as its target image (CSS
scene label, "adj noun", product caption), so every duplicate of the target counts.

Ties (documented rule, pessimistic): a query's first-hit rank is the number of *incorrect* gallery
items whose similarity is >= that of the best correct item. A wrong item that ties with the right
one ranks ahead of it, so a collapsed model (all embeddings equal) scores ~0, not 1. This rule is
exact and the same on CPU and GPU, unlike the order `torch.topk` gives tied values.

Non-finite similarities (a diverged model's NaN embeddings) never match: a query whose best
correct similarity is not finite, or that has no correct item left after the source exclusion,
gets rank `N` (the gallery size), a miss at every K.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["first_hit_ranks", "recall_at_k", "recall_from_ranks", "top_k", "whm"]


def _as_index(values: Tensor | Sequence[int], *, name: str, n_queries: int, n_gallery: int,
              device: torch.device) -> Tensor:
    index = torch.as_tensor(values, device=device).long()
    if index.shape != (n_queries,):
        raise ValueError(f"{name} must have shape ({n_queries},) (one gallery index per query), "
                         f"got {tuple(index.shape)}")
    if n_queries and (int(index.min()) < 0 or int(index.max()) >= n_gallery):
        raise ValueError(f"{name} holds gallery indices in [0, {n_gallery}); got values in "
                         f"[{int(index.min())}, {int(index.max())}]")
    return index


def _label_ids(labels: Tensor | Sequence, *, n_gallery: int, device: torch.device) -> Tensor:
    """Gallery labels -> (N,) long ids; equal labels get equal ids."""
    if isinstance(labels, Tensor):
        ids = labels.to(device).long()
    else:
        lookup: dict = {}
        ids = torch.tensor([lookup.setdefault(label, len(lookup)) for label in labels],
                           dtype=torch.long, device=device)
    if ids.shape != (n_gallery,):
        raise ValueError(f"gallery_labels must hold one label per gallery item ({n_gallery}), "
                         f"got shape {tuple(ids.shape)}")
    return ids


def _normalised(emb: Tensor, *, name: str, device: torch.device) -> Tensor:
    if emb.dim() != 2:
        raise ValueError(f"{name} must be 2-D (items, dim), got shape {tuple(emb.shape)}")
    # half precision is too coarse to rank thousands of items; float64 is kept as given
    dtype = torch.float64 if emb.dtype == torch.float64 else torch.float32
    return F.normalize(emb.to(device=device, dtype=dtype), dim=1)


def _label_members(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Dense label ids (N,) and each label's gallery items (L, M), padded with -1; M is the most
    items one label has (the duplicates of a target: a handful on the real datasets)."""
    _, dense = torch.unique(labels, return_inverse=True)  # (N,) in [0, L)
    counts = torch.bincount(dense)  # (L,)
    order = dense.argsort(stable=True)  # items grouped by label
    slot = torch.arange(len(dense), device=labels.device) - (counts.cumsum(0) - counts)[dense[order]]
    members = torch.full((len(counts), int(counts.max())), -1, dtype=torch.long, device=labels.device)
    members[dense[order], slot] = order
    return dense, members


@torch.no_grad()
def first_hit_ranks(query_emb: Tensor, gallery_emb: Tensor, *,
                    query_sources: Tensor | Sequence[int] | None,
                    query_targets: Tensor | Sequence[int],
                    gallery_labels: Tensor | Sequence,
                    chunk_size: int = 1024) -> Tensor:
    """0-based rank of each query's first correct gallery item (module docstring: ties, misses).

    Args:
        query_emb: (Q, D) composed query features.
        gallery_emb: (N, D) gallery image features; any device, moved to `query_emb`'s.
        query_sources: (Q,) gallery index of each query's reference image, excluded from its
            ranking; None for no exclusion (TIRG's sampled "train" recall: gallery = the targets).
        query_targets: (Q,) gallery index of each query's target image.
        gallery_labels: N labels (strings or any hashable) or an (N,) tensor of label ids.
        chunk_size: queries scored at once; memory is O(chunk_size * N), never O(Q * N).

    Returns:
        (Q,) long tensor on `query_emb`'s device; `N` marks a query with no reachable hit.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    device = query_emb.device
    q = _normalised(query_emb, name="query_emb", device=device)  # (Q, D)
    g = _normalised(gallery_emb, name="gallery_emb", device=device).to(q.dtype)  # (N, D)
    (n_queries, dim), n_gallery = q.shape, g.shape[0]
    if g.shape[1] != dim:
        raise ValueError(f"query_emb has dim {dim} but gallery_emb has dim {g.shape[1]}")
    sizes = dict(n_queries=n_queries, n_gallery=n_gallery, device=device)
    targets = _as_index(query_targets, name="query_targets", **sizes)
    sources = (None if query_sources is None
               else _as_index(query_sources, name="query_sources", **sizes))
    labels = _label_ids(gallery_labels, n_gallery=n_gallery, device=device)  # (N,)
    ranks = torch.empty(n_queries, dtype=torch.long, device=device)
    if n_queries == 0:
        return ranks
    labels, members = _label_members(labels)  # (N,) dense ids; (L, M) each label's items, -1 padded
    target_labels = labels[targets]  # (Q,)
    # One (C, N) buffer reused by every chunk (a fresh product per chunk costs an allocation and a
    # page-in of C x N floats); besides it only (C, M) correct items are gathered: no (C, N) masks.
    buffer = torch.empty(min(chunk_size, n_queries), n_gallery, dtype=q.dtype, device=device)
    count_dtype = q.dtype if n_gallery < 2**24 else torch.float64  # a float sum of 0/1 is exact below 2**24
    for start in range(0, n_queries, chunk_size):
        stop = min(start + chunk_size, n_queries)
        sims = torch.mm(q[start:stop], g.T, out=buffer[: stop - start])  # (C, N)
        if sources is not None:
            sims[torch.arange(stop - start, device=device), sources[start:stop]] = -math.inf
        candidates = members[target_labels[start:stop]]  # (C, M) the target label's items
        valid = candidates >= 0
        correct = sims.gather(1, candidates.clamp(min=0))  # (C, M) their similarities (the source's: -inf)
        correct = correct.nan_to_num(nan=-math.inf, posinf=math.inf, neginf=-math.inf).masked_fill(~valid, -math.inf)
        best = correct.amax(dim=1)  # (C,) best correct similarity
        # items tying or above it (NaN >= x is False: a NaN never ranks ahead), the correct ones taken off;
        # ge_ turns the buffer into 0/1 in place, and a float sum is several times faster than a bool one
        at_or_above = sims.ge_(best[:, None]).sum(dim=1, dtype=count_dtype).long()
        ahead = at_or_above - ((correct >= best[:, None]) & valid).sum(dim=1)  # (C,) incorrect items ahead
        ranks[start:stop] = torch.where(best.isfinite(), ahead, torch.full_like(ahead, n_gallery))
    return ranks


@torch.no_grad()
def top_k(query_emb: Tensor, gallery_emb: Tensor, *, k: int, query_sources: Tensor | Sequence[int] | None,
          chunk_size: int = 1024) -> Tensor:
    """(Q, k) gallery indices of each query's k most similar images, its source excluded, scored in
    chunks of queries (memory O(chunk_size * N)). Ties are broken by torch.topk, so unlike
    `first_hit_ranks` the order of tied items may differ between devices."""
    device = query_emb.device
    q = _normalised(query_emb, name="query_emb", device=device)  # (Q, D)
    g = _normalised(gallery_emb, name="gallery_emb", device=device).to(q.dtype)  # (N, D)
    n_queries, n_gallery = q.shape[0], g.shape[0]
    sources = (None if query_sources is None else _as_index(
        query_sources, name="query_sources", n_queries=n_queries, n_gallery=n_gallery, device=device))
    k = min(k, n_gallery - (sources is not None))
    out = torch.empty(n_queries, k, dtype=torch.long, device=device)
    for start in range(0, n_queries, chunk_size):
        stop = min(start + chunk_size, n_queries)
        sims = (q[start:stop] @ g.T).nan_to_num(nan=-math.inf)  # (C, N)
        if sources is not None:
            sims[torch.arange(stop - start, device=device), sources[start:stop]] = -math.inf
        out[start:stop] = sims.topk(k, dim=1).indices
    return out


def recall_from_ranks(ranks: Tensor, ks: Sequence[int]) -> dict[int, float]:
    """Recall@K = fraction of queries whose first-hit rank is < K. Subset `ranks` for breakdowns
    (per modification type, per attribute) without re-scoring the gallery."""
    if ranks.numel() == 0:
        raise ValueError("recall needs at least one query; got an empty ranks tensor")
    bad = [k for k in ks if not isinstance(k, int) or isinstance(k, bool) or k < 1]
    if bad or not ks:
        raise ValueError(f"ks must be a non-empty list of positive ints, got {list(ks)}")
    return {k: float((ranks < k).double().mean()) for k in ks}


def recall_at_k(query_emb: Tensor, gallery_emb: Tensor, *,
                query_sources: Tensor | Sequence[int] | None,
                query_targets: Tensor | Sequence[int],
                gallery_labels: Tensor | Sequence,
                ks: Sequence[int],
                chunk_size: int = 1024) -> dict[int, float]:
    """Recall@K for each K in `ks`, e.g. {1: 0.12, 10: 0.5}; arguments as in `first_hit_ranks`.

    Example:
        >>> q, g = torch.eye(3), torch.eye(3)
        >>> recall_at_k(q, g, query_sources=[1, 2, 0], query_targets=[0, 1, 2],
        ...             gallery_labels=["a", "b", "c"], ks=[1])
        {1: 1.0}
    """
    ranks = first_hit_ranks(query_emb, gallery_emb, query_sources=query_sources,
                            query_targets=query_targets, gallery_labels=gallery_labels,
                            chunk_size=chunk_size)
    return recall_from_ranks(ranks, ks)


def whm(values: Sequence[float], weights: Sequence[float]) -> float:
    """Weighted harmonic mean WHM(v; w) = sum(w) / sum(w / v) (methods.md A.9).

    Cells with weight 0 are left out; the result is 0 when any included recall is 0, so a
    configuration that fails one cell cannot hide it behind the others.
    """
    values, weights = [float(v) for v in values], [float(w) for w in weights]
    if len(values) != len(weights):
        raise ValueError(f"whm needs one weight per value; got {len(values)} values and "
                         f"{len(weights)} weights")
    for v, w in zip(values, weights):
        if not 0.0 <= v <= 1.0:  # also rejects NaN
            raise ValueError(f"whm takes recalls in [0, 1]; got {v}")
        if not (w >= 0.0 and math.isfinite(w)):
            raise ValueError(f"whm weights must be finite and >= 0; got {w}")
    cells = [(v, w) for v, w in zip(values, weights) if w > 0]
    if not cells:
        raise ValueError("whm needs at least one cell with weight > 0; "
                         f"got weights {weights}")
    if any(v == 0.0 for v, _ in cells):
        return 0.0
    return sum(w for _, w in cells) / sum(w / v for v, w in cells)
