"""Normalisation layer and the K-candidate matching loss (methods reference A.3), after TIRG
(Vo et al., CVPR 2019, https://arxiv.org/abs/1812.07119): K = 2 is the soft triplet loss averaged over
all negatives, K = B is batch-based classification.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["NormalizationLayer", "matching_loss", "negative_groups", "check_k"]


class NormalizationLayer(nn.Module):
    """NL(f) = s * f / ||f||, s a learnable scalar initialised to 4.0 (TIRG's code)."""

    def __init__(self, scale: float = 4.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, features: Tensor) -> Tensor:  # (B, D) -> (B, D)
        return self.scale * F.normalize(features, dim=1)


def check_k(k: int, batch_size: int | None = None) -> None:
    """The rule 2 <= K <= B, checked where K is configured (batch_size None) and where it is used."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"matching loss k must be an int, got {k!r}")
    if k < 2:
        raise ValueError(f"matching loss needs k >= 2 (the positive plus at least one negative); got k={k}")
    if batch_size is not None and k > batch_size:
        raise ValueError(f"matching loss needs k <= batch size (k - 1 negatives come from the other "
                         f"items of the batch); got k={k} with batch size {batch_size}")


def negative_groups(b: int, k: int, *, generator: torch.Generator | None = None,
                    device: torch.device | str = "cpu") -> Tensor:
    """Indices (B, M, K-1) of the negatives of each query's M = ceil((B-1)/(K-1)) groups.

    Row i holds every j != i once, in random order, plus a top-up of the last group drawn from other
    targets not already in that group.
    """
    check_k(k, b)
    groups = math.ceil((b - 1) / (k - 1))  # M
    pad = groups * (k - 1) - (b - 1)
    noise_device = generator.device if generator is not None else device
    columns = torch.arange(b - 1, device=device)
    rows = torch.arange(b, device=device).unsqueeze(1)
    others = columns.unsqueeze(0) + (columns.unsqueeze(0) >= rows).long()  # (B, B-1): every j != i
    order = torch.rand(b, b - 1, generator=generator, device=noise_device).argsort(dim=1).to(device)
    shuffled = others.gather(1, order)  # (B, B-1), a random permutation per row
    # The first `pad` shuffled items lie outside the last group (pad < K-1 <= (M-1)(K-1) when M > 1,
    # pad = 0 when M = 1), so the top-up is a random sample of other targets without duplicates in the group.
    return torch.cat([shuffled, shuffled[:, :pad]], dim=1).view(b, groups, k - 1)


def matching_loss(
    query: Tensor,
    target: Tensor,
    *,
    k: int,
    generator: torch.Generator | None = None,
    offset: int = 0,
    reduction: Literal["mean", "none"] = "mean",
) -> Tensor:
    """Mean cross-entropy of the positive against groups of K-1 in-batch negatives.

    query (B, D) and target (G, D), already NL-scaled (logits are plain dot products). Query i's
    positive is target row `offset + i`: with data parallelism `target` is the GLOBAL batch gathered
    from every rank (G = B * world, this rank's rows start at `offset`), so the negatives come from the
    whole batch and K means the same thing at any worker count. For each of the G rows the other G-1
    targets are shuffled and cut into M = ceil((G-1)/(K-1)) groups of K-1 (the last topped up with other
    targets not already in it); every rank draws the same (G, M, K-1) table from the same generator
    state and keeps its own rows, so B + B on two ranks equals 2B on one. reduction "none" gives the
    per-query loss (B,), the mean over that query's M groups; "mean" its mean over queries.
    """
    if query.dim() != 2 or target.dim() != 2 or query.shape[1] != target.shape[1]:
        raise ValueError(f"query (B, D) and target (G, D) must share D; got {tuple(query.shape)} and {tuple(target.shape)}")
    b, g = query.shape[0], target.shape[0]
    if not 0 <= offset <= g - b:
        raise ValueError(f"offset {offset} places {b} queries outside the {g} targets")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    check_k(k, g)
    negatives = negative_groups(g, k, generator=generator, device=query.device)[offset : offset + b]  # (B, M, K-1)
    groups = negatives.shape[1]

    logits = query @ target.T  # (B, G)
    rows = torch.arange(b, device=query.device)
    positive = logits[rows, rows + offset].unsqueeze(1)  # (B, 1)
    negative = logits.gather(1, negatives.reshape(b, -1)).view(b, groups, k - 1)  # (B, M, K-1)
    group_logits = torch.cat([positive.unsqueeze(2).expand(b, groups, 1), negative], dim=2)  # (B, M, K)
    per_group = torch.logsumexp(group_logits, dim=2) - positive  # (B, M): CE with the positive as label
    per_query = per_group.mean(dim=1)  # (B,)
    return per_query if reduction == "none" else per_query.mean()
