"""Recall_subset@K (study/subset_recall.py) against a plain Python loop on random problems with exact
ties, NaN embeddings, repeated members and targets outside the subset, plus cases worked by hand."""
from __future__ import annotations

import math

import pytest
import torch

from study.data.types import Query
from study.subset_recall import has_subsets, subset_ranks, subset_recalls, subset_top


def brute_force_ranks(q, g, queries, labels, *, wrong_first: bool = True):
    """One query at a time: score the subset's members other than the source, put wrong ones first
    among equal scores (study/metrics.py's rule; `wrong_first=False`: right ones first), NaN last;
    rank of the first correct member, or the gallery size when none is reachable."""
    ranks = []
    for i, query in enumerate(queries):
        qi = q[i] / q[i].norm()
        scored = []
        for m in dict.fromkeys(query.subset):
            if m == query.source:
                continue
            sim = float(qi @ (g[m] / g[m].norm()))
            key = math.inf if math.isnan(sim) else -sim  # NaN never ranks ahead, never matches
            scored.append((key, labels[m] == labels[query.target], m))
        scored.sort(key=lambda s: (s[0], s[1] == wrong_first))  # False < True: wrong items first among ties
        first = next((r for r, (key, correct, _) in enumerate(scored) if correct and math.isfinite(key)), None)
        ranks.append(len(g) if first is None else first)
    return ranks


def random_problem(seed: int, *, ties: bool, n_queries: int = 40, n_gallery: int = 30, dim: int = 4):
    """`ties`: every vector has norm 2 and entries in {0, +-1, +-2}, so each cosine is a sum of
    multiples of 1/4 and exact in any summation order: equal scores are exactly equal however the
    matrix product is blocked, and many members tie. Else: continuous float64 vectors (no ties)."""
    gen = torch.Generator().manual_seed(seed)
    if ties:
        signs = torch.randint(0, 2, (n_queries + n_gallery, dim), generator=gen).double() * 2 - 1  # (+-1)^4: norm 2
        axis = torch.zeros_like(signs)
        axis[torch.arange(len(axis)), torch.randint(dim, (len(axis),), generator=gen)] = 2.0  # 2 e_i: norm 2
        vectors = torch.where(torch.rand(len(axis), 1, generator=gen) < 0.3, axis, signs)
        q, g = vectors[:n_queries].clone(), vectors[n_queries:].clone()
    else:
        q = torch.randn(n_queries, dim, generator=gen, dtype=torch.float64)
        g = torch.randn(n_gallery, dim, generator=gen, dtype=torch.float64)
    q[3] = math.nan  # a diverged query: a miss
    labels = [f"image{int(i)}" for i in torch.randint(n_gallery - 5, (n_gallery,), generator=gen)]  # some shared
    queries = []
    for i in range(n_queries):
        members = torch.randperm(n_gallery, generator=gen)[:6].tolist()
        source, target = members[0], members[int(torch.randint(1, 6, (1,), generator=gen))]
        if i % 9 == 4:  # the target is not a member: a miss unless a member shares its label
            target = int(torch.randint(n_gallery, (1,), generator=gen))
        if i % 5 == 2:
            members = members + members[:2]  # a repeated member counts once
        queries.append(Query(source, "t", target, "caption", None, subset=tuple(members)))
    return q, g, queries, labels


@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_subset_ranks_and_recalls_match_a_brute_force_loop(seed: int, ties: bool) -> None:
    q, g, queries, labels = random_problem(seed, ties=ties)
    expected = brute_force_ranks(q, g, queries, labels)
    assert subset_ranks(q, g, queries, labels).tolist() == expected
    assert subset_ranks(q, g, queries, labels, chunk_size=3).tolist() == expected
    if ties:  # exact in float32 too; and the tie rule decides some ranks
        assert subset_ranks(q.float(), g.float(), queries, labels).tolist() == expected
        assert expected != brute_force_ranks(q, g, queries, labels, wrong_first=False)
    got = subset_recalls(q, g, queries, labels, ks=(1, 2, 3))
    assert got == pytest.approx({k: sum(r < k for r in expected) / len(expected) for k in (1, 2, 3)})
    assert 0 < got[1] < got[3] < 1  # the problem is neither trivial nor hopeless


@pytest.mark.parametrize("ties", [True, False])
def test_subset_top_is_the_members_sorted_by_similarity_best_first(ties: bool) -> None:
    q, g, queries, labels = random_problem(5, ties=ties)
    top = subset_top(q, g, queries, k=3)
    for i, (query, row) in enumerate(zip(queries, top)):
        members = [m for m in dict.fromkeys(query.subset) if m != query.source]
        sims = {m: float((q[i] / q[i].norm()) @ (g[m] / g[m].norm())) for m in members}
        key = {m: (-math.inf if math.isnan(s) else s) for m, s in sims.items()}
        assert row == sorted(members, key=lambda m: (-key[m], m))[:3], i  # ties in gallery order


def test_ties_rank_wrong_members_first_and_a_collapsed_model_scores_zero() -> None:
    g = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    queries = [Query(2, "t", 1, "caption", None, subset=(0, 1, 2, 3)),  # target 1 ties with wrong 0 and 3
               Query(0, "t", 2, "caption", None, subset=(0, 1, 2))]   # target 2 is the only one at 1.0
    assert subset_ranks(q, g, queries, ["a", "b", "c", "d"]).tolist() == [2, 0]
    collapsed = torch.ones(2, 2)
    assert subset_recalls(collapsed, torch.ones(4, 2), queries, ["a", "b", "c", "d"], ks=(1,)) == {1: 0.0}
    # a duplicate of the target (same label) is a hit: CIRR's labels are unique names, others may not be
    assert subset_ranks(q, g, queries, ["a", "b", "c", "b"]).tolist() == [1, 0]


def test_the_source_is_never_a_candidate_and_an_unreachable_target_is_a_miss() -> None:
    g = torch.eye(3)
    q = torch.tensor([[1.0, 0.5, 0.0]])  # closest to its own source, image 0, then to image 1
    hit = [Query(0, "t", 1, "caption", None, subset=(0, 1, 2))]
    assert subset_ranks(q, g, hit, ["x", "y", "z"]).tolist() == [0]  # image 0 is not ranked
    assert subset_ranks(q, g, hit, ["y", "y", "z"]).tolist() == [0]  # not even when it carries the target's label
    wrong_first = [Query(0, "t", 2, "caption", None, subset=(0, 1, 2))]
    assert subset_ranks(q, g, wrong_first, ["x", "y", "z"]).tolist() == [1]
    unreachable = [Query(0, "t", 0, "caption", None, subset=(0, 1, 2))]  # the target is the source
    assert subset_ranks(q, g, unreachable, ["x", "y", "z"]).tolist() == [3]
    outside = [Query(0, "t", 2, "caption", None, subset=(0, 1))]
    assert subset_recalls(q, g, outside, ["x", "y", "z"], ks=(1, 2, 3)) == {1: 0.0, 2: 0.0, 3: 0.0}


def test_queries_without_subsets_are_refused_with_the_reason() -> None:
    plain = [Query(0, "t", 1, "caption", None)]
    assert not has_subsets(plain) and not has_subsets([])
    assert has_subsets([Query(0, "t", 1, "caption", None, subset=(0, 1))])
    with pytest.raises(ValueError, match=r"query 0 has no subset.*img_set"):
        subset_ranks(torch.eye(2)[:1], torch.eye(2), plain, ["a", "b"])
    with pytest.raises(ValueError, match=r"outside the gallery \[0, 2\)"):
        subset_ranks(torch.eye(2)[:1], torch.eye(2), [Query(0, "t", 1, "caption", None, subset=(0, 5))], ["a", "b"])
    with pytest.raises(ValueError, match="one label per gallery image"):
        subset_ranks(torch.eye(2)[:1], torch.eye(2), [Query(0, "t", 1, "caption", None, subset=(0, 1))], ["a"])
