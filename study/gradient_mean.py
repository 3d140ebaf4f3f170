"""The mean of every gradient over the data-parallel workers, in one flat all-reduce (study/worker.py
says why by hand rather than through DistributedDataParallel).

The flat buffer is allocated at a run's first step and kept: each step copies the gradients into it,
reduces it in place, and leaves every gradient a view of it. The next step's `zero_grad(set_to_none=
True)` drops those views and its backward makes new gradients, so nothing reads a view after the
buffer is written again. Concatenating into a new buffer, dividing into another and cloning every
gradient out of it cost each rank three passes over the gradients and as many fresh allocations per
step (about 9.7 MB for bench/dp_scaling.py's tirg: 2.4M parameters).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["GradientMean"]


class GradientMean:
    """`mean()` replaces each parameter's gradient by its mean over the `world` workers. A parameter
    some rank did not use counts as 0 there; a parameter NO rank used keeps `grad = None`, as with one
    worker (so no noise, momentum or weight decay touches it). With one worker it does nothing."""

    def __init__(self, parameters: list[nn.Parameter], world: int) -> None:
        if world > 1 and not parameters:
            raise ValueError("GradientMean needs the parameters the optimiser steps, got none")
        self.parameters, self.world = list(parameters), world
        self._sizes = [p.numel() for p in self.parameters]
        self._flat: Tensor | None = None  # (sum of sizes + one used-flag per parameter,) float32

    def mean(self) -> None:
        if self.world == 1:
            return
        flat = self._buffer()
        count = len(self.parameters)
        views = [v.view_as(p) for v, p in zip(flat[:-count].split(self._sizes), self.parameters)]
        used = [p.grad is not None for p in self.parameters]
        if any(used):
            grads = [p.grad for p in self.parameters if p.grad is not None]
            torch._foreach_copy_([v for v, u in zip(views, used) if u], grads)
        if not all(used):
            torch._foreach_zero_([v for v, u in zip(views, used) if not u])
        flat[-count:].copy_(torch.tensor(used, dtype=flat.dtype))
        dist.all_reduce(flat)
        flat[:-count].div_(self.world)
        for parameter, view, anywhere in zip(self.parameters, views, (flat[-count:] > 0).tolist()):
            parameter.grad = (view if view.dtype == parameter.dtype else view.to(parameter.dtype)) if anywhere else None

    def _buffer(self) -> Tensor:
        device = self.parameters[0].device
        if self._flat is None or self._flat.device != device:
            self._flat = torch.empty(sum(self._sizes) + len(self.parameters), dtype=torch.float32, device=device)
        return self._flat
