"""Collectives the objective needs under data parallelism, as open_clip's loss uses them
(`gather_features(..., gather_with_grad=True)`): every rank's features, with their gradient.

`torch.distributed.nn.functional.all_gather` back-propagates: the gradient a rank's loss sends to
another rank's features is summed into that rank's own gradient, so after the gradient all-reduce
(a mean over ranks) the parameters get the gradient of the global-batch loss. Without an initialised
process group (one worker, tests) the tensor is returned as it is.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["gather_with_grad", "world_size_and_rank"]


def world_size_and_rank() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def gather_with_grad(features: Tensor) -> tuple[Tensor, int]:
    """(every rank's `features` concatenated in rank order (world * B, D), this rank's row offset).
    Every rank must pass the same shape (the batch is split evenly)."""
    world, rank = world_size_and_rank()
    if world == 1:
        return features, 0
    from torch.distributed.nn.functional import all_gather  # autograd-aware

    parts = all_gather(features.contiguous())
    return torch.cat(parts, dim=0), rank * features.shape[0]
