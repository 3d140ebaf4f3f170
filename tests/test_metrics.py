import math

import pytest
import torch

from study.metrics import first_hit_ranks, recall_at_k, recall_from_ranks, whm


def brute_force_recall(q, g, sources, targets, labels, ks):
    """One query at a time, plain Python: sort the gallery (source removed) by similarity, wrong
    items first among equals (the documented pessimistic tie rule), find the first correct one."""
    hits = {k: 0 for k in ks}
    for i in range(len(q)):
        qi = q[i] / q[i].norm()
        scored = []
        for j in range(len(g)):
            if sources is not None and j == sources[i]:
                continue
            sim = float(qi @ (g[j] / g[j].norm()))
            correct = labels[j] == labels[targets[i]]
            scored.append((-sim, correct, j))  # False < True: wrong items first among ties
        scored.sort()
        first = next((r for r, (_, correct, _) in enumerate(scored) if correct), None)
        for k in ks:
            hits[k] += first is not None and first < k
    return {k: hits[k] / len(q) for k in ks}


def random_problem(seed, n_queries=37, n_gallery=60, dim=8, n_labels=15):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(n_queries, dim, generator=gen, dtype=torch.float64)
    g = torch.randn(n_gallery, dim, generator=gen, dtype=torch.float64)
    labels = [f"scene{int(i)}" for i in torch.randint(n_labels, (n_gallery,), generator=gen)]  # duplicates
    sources = torch.randint(n_gallery, (n_queries,), generator=gen)
    targets = torch.randint(n_gallery, (n_queries,), generator=gen)
    return q, g, sources, targets, labels


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("chunk_size", [1024, 5, 1])
def test_recall_matches_brute_force(seed, chunk_size):
    q, g, sources, targets, labels = random_problem(seed)
    ks = [1, 5, 10, 50]
    got = recall_at_k(q, g, query_sources=sources, query_targets=targets, gallery_labels=labels,
                      ks=ks, chunk_size=chunk_size)
    assert got == pytest.approx(brute_force_recall(q, g, sources, targets, labels, ks))


def test_recall_without_source_exclusion_and_label_ids_match_brute_force():
    q, g, _, targets, labels = random_problem(7)
    ids = torch.tensor([int(label[5:]) for label in labels])
    ks = [1, 3]
    got = recall_at_k(q.float(), g.float(), query_sources=None, query_targets=targets,
                      gallery_labels=ids, ks=ks, chunk_size=4)
    assert got == pytest.approx(brute_force_recall(q, g, None, targets, labels, ks))


def test_source_is_excluded_even_when_it_is_the_best_match():
    g = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    q = torch.tensor([[1.0, 0.0]])  # identical to gallery item 0, its own source
    # target label "b" is carried by item 2 only; item 0 also says "b" but is the source
    ranks = first_hit_ranks(q, g, query_sources=[0], query_targets=[2], gallery_labels=["b", "a", "b"])
    assert ranks.tolist() == [1]  # item 1 ("a") is ahead once item 0 is gone
    # without the exclusion the source itself would be a hit at rank 0
    assert first_hit_ranks(q, g, query_sources=None, query_targets=[2],
                           gallery_labels=["b", "a", "b"]).tolist() == [0]


def test_no_reachable_target_is_a_miss_with_rank_n():
    g = torch.eye(3)
    ranks = first_hit_ranks(torch.eye(3)[:1], g, query_sources=[0], query_targets=[0],
                            gallery_labels=["x", "y", "z"])
    assert ranks.tolist() == [3]


def test_ties_rank_wrong_items_first_and_collapsed_model_scores_zero():
    g = torch.ones(4, 3)  # every gallery item identical
    q = torch.ones(2, 3)
    ranks = first_hit_ranks(q, g, query_sources=[0, 1], query_targets=[3, 2],
                            gallery_labels=["a", "b", "c", "d"])
    assert ranks.tolist() == [2, 2]
    assert recall_from_ranks(ranks, [1, 2, 3]) == {1: 0.0, 2: 0.0, 3: 1.0}


def test_nan_embeddings_miss():
    q = torch.full((2, 3), float("nan"))
    got = recall_at_k(q, torch.eye(3), query_sources=[0, 1], query_targets=[1, 2],
                      gallery_labels=["a", "b", "c"], ks=[1, 3])
    assert got == {1: 0.0, 3: 0.0}


def test_bad_inputs_are_rejected_with_the_rule():
    q, g = torch.eye(3), torch.eye(3)
    with pytest.raises(ValueError, match="gallery indices"):
        recall_at_k(q, g, query_sources=[0, 1, 3], query_targets=[0, 1, 2],
                    gallery_labels="abc", ks=[1])
    with pytest.raises(ValueError, match="one label per gallery item"):
        recall_at_k(q, g, query_sources=None, query_targets=[0, 1, 2], gallery_labels="ab", ks=[1])
    with pytest.raises(ValueError, match="positive ints"):
        recall_at_k(q, g, query_sources=None, query_targets=[0, 1, 2], gallery_labels="abc", ks=[0])
    with pytest.raises(ValueError, match="dim"):
        recall_at_k(q, torch.eye(4), query_sources=None, query_targets=[0, 1, 2],
                    gallery_labels="abcd", ks=[1])


def test_whm_hand_computed():
    assert whm([0.5, 0.25], [1, 1]) == pytest.approx(2 / (2 + 4))  # 1/3
    assert whm([0.5, 0.25], [3, 1]) == pytest.approx(4 / (6 + 4))  # 0.4
    assert whm([0.8], [2.0]) == pytest.approx(0.8)
    assert whm([0.6, 0.6, 0.6], [1, 2, 3]) == pytest.approx(0.6)


def test_whm_zero_recall_and_weight_zero_exclusion():
    assert whm([0.9, 0.0], [1, 1]) == 0.0
    assert whm([0.9, 0.0], [1, 0]) == pytest.approx(0.9)  # the zero cell is not in the score
    assert whm([0.5, 0.1, 0.25], [1, 0, 1]) == pytest.approx(1 / 3)


@pytest.mark.parametrize("values, weights, message", [
    ([0.5, 0.5], [1], "one weight per value"),
    ([0.5], [-1], ">= 0"),
    ([1.5], [1], r"\[0, 1\]"),
    ([math.nan], [1], r"\[0, 1\]"),
    ([0.5], [0], "weight > 0"),
])
def test_whm_rejects_bad_input(values, weights, message):
    with pytest.raises(ValueError, match=message):
        whm(values, weights)


def test_top_k_matches_a_brute_force_sort_with_the_source_excluded() -> None:
    from study.metrics import top_k

    generator = torch.Generator().manual_seed(3)
    queries, gallery = torch.randn(7, 5, generator=generator), torch.randn(11, 5, generator=generator)
    sources = torch.tensor([0, 3, 3, 10, 5, 1, 2])
    got = top_k(queries, gallery, k=4, query_sources=sources, chunk_size=3)
    for i in range(7):
        q = queries[i] / queries[i].norm()
        sims = [(float(q @ (gallery[j] / gallery[j].norm())), j) for j in range(11) if j != int(sources[i])]
        expected = [j for _, j in sorted(sims, reverse=True)[:4]]
        assert got[i].tolist() == expected
