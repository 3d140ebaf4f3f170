from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.losses import NormalizationLayer, matching_loss, negative_groups


def features(b: int = 6, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)


def test_k2_is_the_soft_triplet_over_all_negatives():
    query, target = features()
    logits = query @ target.T
    b = len(query)
    direct = [math.log1p(math.exp(logits[i, j] - logits[i, i])) for i in range(b) for j in range(b) if j != i]
    assert matching_loss(query, target, k=2).item() == pytest.approx(sum(direct) / len(direct), rel=1e-5)


def test_k_equal_batch_is_batch_based_classification():
    query, target = features()
    expected = F.cross_entropy(query @ target.T, torch.arange(len(query)))
    assert matching_loss(query, target, k=len(query)).item() == pytest.approx(expected.item(), rel=1e-5)


def test_hand_computed_value_on_three_vectors():
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    # logits rows: q0 -> (1, 0, 1), q1 -> (0, 1, 0), q2 -> (1, 1, 1); positives on the diagonal.
    sp = lambda z: math.log(1 + math.exp(z))  # noqa: E731
    k2 = [(sp(0 - 1) + sp(1 - 1)) / 2, (sp(0 - 1) + sp(0 - 1)) / 2, (sp(0) + sp(0)) / 2]
    assert matching_loss(query, target, k=2).item() == pytest.approx(sum(k2) / 3, rel=1e-6)
    k3 = [math.log(2 + math.exp(-1)), math.log(1 + 2 * math.exp(-1)), math.log(3)]
    per_query = matching_loss(query, target, k=3, reduction="none")
    assert per_query.tolist() == pytest.approx(k3, rel=1e-6)


@pytest.mark.parametrize("b,k", [(6, 3), (7, 3), (8, 4), (5, 2), (5, 5), (9, 5)])
def test_negative_groups_use_every_other_target_without_duplicates_in_a_group(b, k):
    groups = negative_groups(b, k, generator=torch.Generator().manual_seed(3))
    m = math.ceil((b - 1) / (k - 1))
    assert groups.shape == (b, m, k - 1)
    for i in range(b):
        assert set(groups[i].flatten().tolist()) == set(range(b)) - {i}
        for group in groups[i]:
            assert len(set(group.tolist())) == k - 1


def test_generator_makes_the_shuffle_reproducible():
    query, target = features(b=8)
    a = matching_loss(query, target, k=3, generator=torch.Generator().manual_seed(5))
    b = matching_loss(query, target, k=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


@pytest.mark.parametrize("k", [1, 0, 7])
def test_k_outside_2_to_b_is_an_error_stating_the_rule(k):
    query, target = features(b=6)
    with pytest.raises(ValueError, match=f"k={k}"):
        matching_loss(query, target, k=k)


def test_backward_reaches_query_and_target():
    query, target = features()
    query.requires_grad_(True)
    target.requires_grad_(True)
    loss = matching_loss(query, target, k=3, reduction="none")
    assert loss.shape == (6,)
    loss.mean().backward()
    assert torch.isfinite(query.grad).all() and query.grad.abs().sum() > 0
    assert torch.isfinite(target.grad).all() and target.grad.abs().sum() > 0


def test_normalization_layer_scales_to_learnable_norm_4():
    layer = NormalizationLayer()
    assert layer.scale.item() == 4.0 and layer.scale.requires_grad
    out = layer(torch.tensor([[3.0, 4.0], [0.0, -2.0]]))
    assert out.flatten().tolist() == pytest.approx([2.4, 3.2, 0.0, -4.0])


def test_rank_shares_of_a_global_batch_equal_the_whole_batch():
    """Data parallelism: rank r scores its B queries against all G = world * B gathered targets (its
    positives at rows offset + i) with the same generator state; the shares give the 1-rank loss."""
    query, target = features(b=8, d=4, seed=3)
    whole = matching_loss(query, target, k=3, generator=torch.Generator().manual_seed(5), reduction="none")
    shares = [matching_loss(query[o : o + 4], target, k=3, generator=torch.Generator().manual_seed(5), offset=o,
                            reduction="none") for o in (0, 4)]
    assert torch.equal(torch.cat(shares), whole)


def test_offset_outside_the_targets_is_refused():
    query, target = features(b=4)
    with pytest.raises(ValueError, match="offset"):
        matching_loss(query, target, k=2, offset=1)
