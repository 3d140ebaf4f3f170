"""What one Ray Train worker holds for one dataset (`DatasetShare`: data, image maps, vocabulary,
the train-recall sample, shared by every seed) and for one (seed, dataset) (`SeedRun`: model,
objective, optimiser); one training step, one epoch of data-parallel training, the evaluation of A.8.

Gradients are averaged across workers by hand (one flat all-reduce) rather than through
DistributedDataParallel: GA's isotropic noise must be added *after* the all-reduce (A.4), the
input-gradient penalties back-propagate twice through the graph, and some composers leave whole
encoders unused (image_only ignores the text), all of which fight DDP's reducer hooks. A parameter
that no rank used keeps no gradient (so no noise, momentum or weight decay touches it), at any
worker count. The matching loss gathers every rank's targets with their gradient (models/distributed.py),
so the global batch, not each rank's share, supplies the negatives.
"""
from __future__ import annotations

import random
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from models.batch import Batch
from models.model import CirModel, ModelConfig
from models.objective import Objective, ObjectiveConfig
from models.text import Vocabulary
from study.budget import Budget, DatasetEntry
from study.data import Query, RetrievalData
from study.data.image_cache import ImageMap, open_image_map
from study.evaluation import SplitEvaluation, evaluate_split
from study.feed import BatchFeed
from study.randomness import stream_seed
from study.trial_config import TrialConfig

__all__ = ["DatasetShare", "SeedRun", "average_gradients", "seed_run", "train_step"]


@dataclass
class DatasetShare:
    """One dataset as every seed of a trial on this worker sees it."""

    key: str  # the space's dataset key, e.g. `fashioniq-dress`: names its metrics
    entry: DatasetEntry
    data: RetrievalData
    vocab: Vocabulary
    images: dict[str, ImageMap]  # split -> the node's image map (decoded once per node)
    train_sample: tuple[Query, ...]  # fixed sample of training queries for train recall (A.8)

    @classmethod
    def open(cls, entry: DatasetEntry, data: RetrievalData, *, budget: Budget, data_seed: int,
             cache_dir: str | None) -> "DatasetShare":
        sample = list(data.train.queries)
        random.Random(data_seed).shuffle(sample)  # the same sample for every trial of a study
        cache = Path(cache_dir) if cache_dir else None
        return cls(
            key=entry.key, entry=entry, data=data, vocab=Vocabulary.build([q.text for q in data.train.queries]),
            images={s.name: open_image_map(s, cache_dir=cache) for s in (data.train, data.test)},
            train_sample=tuple(sample[: budget.train_eval_queries]),
        )


def average_gradients(parameters: list[torch.nn.Parameter], world: int) -> None:
    """Mean of every gradient over the workers in one flat all-reduce. A parameter some rank did not
    use counts as 0 there; a parameter NO rank used keeps `grad = None`, as with one worker."""
    if world == 1:
        return
    reference = next(p for p in parameters)
    used = torch.tensor([float(p.grad is not None) for p in parameters], device=reference.device)  # (P,)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [used])
    dist.all_reduce(flat)
    used_anywhere = flat[-len(parameters):] > 0
    flat = flat[: -len(parameters)] / world
    offset = 0
    for parameter, anywhere in zip(parameters, used_anywhere.tolist()):
        n = parameter.numel()
        parameter.grad = flat[offset : offset + n].view_as(parameter).to(parameter.dtype).clone() if anywhere else None
        offset += n


def train_step(model: CirModel, objective: Objective, optimizer: torch.optim.Optimizer, batch: Batch, *,
               parameters: list[torch.nn.Parameter], world: int, generator: torch.Generator, step: int, seed: int,
               autocast_dtype: torch.dtype | None = None) -> dict[str, Any]:
    """One data-parallel step: loss (negatives from the global batch), backward, gradient mean,
    GA's noise, optimiser step. Returns the logged terms as device tensors (no sync)."""
    device_type = batch.reference.device.type
    autocast = torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    with autocast:
        result = objective(model, batch, generator=generator)
    optimizer.zero_grad(set_to_none=True)
    result.loss.backward()
    average_gradients(parameters, world)
    logs = dict(result.device_logs)
    logs.update(objective.after_gradient_sync(parameters, step=step, seed=seed))
    optimizer.step()
    return logs


@dataclass
class SeedRun:
    """One seed of a configuration trained on one dataset."""

    share: DatasetShare
    seed: int
    trial: TrialConfig
    budget: Budget
    device: torch.device
    model: CirModel
    objective: Objective
    optimizer: torch.optim.Optimizer
    step: int = 0

    @classmethod
    def build(cls, share: DatasetShare, trial: TrialConfig, budget: Budget, *, seed: int,
              device: torch.device) -> "SeedRun":
        # Initial weights depend on (seed, dataset) only: identical on every rank, and the same whether
        # this seed trains alone or beside others.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed("init", seed, share.key))
            model = CirModel(ModelConfig(
                composer=trial.composer, image_encoder=budget.image_encoder, image_weights=budget.image_weights,
                embed_dim=budget.embed_dim, vocab_size=len(share.vocab),
            ))
            objective = Objective(
                ObjectiveConfig(k=trial.candidates(budget.batch_size), regularizers=trial.regularizers),
                embed_dim=budget.embed_dim, mid_channels=model.image_encoder.mid_channels,
            )
        if budget.sync_batchnorm:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model, objective = model.to(device), objective.to(device)
        if budget.channels_last:
            model = model.to(memory_format=torch.channels_last)
        parameters = list(model.parameters()) + list(objective.parameters())
        optimizer = torch.optim.SGD(parameters, lr=budget.lr, momentum=0.9, weight_decay=budget.weight_decay)
        return cls(share, seed, trial, budget, device, model, objective, optimizer)

    @property
    def name(self) -> str:
        """The key of this run in checkpoints: `<dataset key>@seed<seed>`."""
        return f"{self.share.key}@seed{self.seed}"

    def steps(self, epoch: int, rank: int, world: int) -> list[list[Query]]:
        """This rank's share of each step of `epoch`: the global batch of step s is
        order[s * B : (s + 1) * B], rank r takes its r-th slice of B / world queries."""
        order = list(self.share.data.train.queries)
        # every rank draws the same order (stream_seed, not Python's per-process str hash)
        random.Random(stream_seed("order", self.seed, epoch, self.share.key)).shuffle(order)
        batch, local = self.budget.batch_size, self.budget.rank_batch_size
        count = len(order) // batch  # equal on every rank, so the collectives pair up
        if self.budget.max_steps_per_epoch:
            count = min(count, self.budget.max_steps_per_epoch)
        return [order[s * batch + rank * local : s * batch + (rank + 1) * local] for s in range(count)]

    def train_epoch(self, epoch: int, rank: int, world: int) -> dict[str, Any]:
        """One pass over the training queries, sharded by rank; returns the mean of each logged
        term as a device tensor (the caller synchronises once per epoch)."""
        self.model.train()
        self.objective.train()
        steps = self.steps(epoch, rank, world)
        # the same on every rank: the negative groups of the global batch must agree
        negatives = torch.Generator(device="cpu").manual_seed(stream_seed("negatives", self.seed, epoch, self.share.key))
        augment = torch.Generator(device="cpu").manual_seed(stream_seed("augment", self.seed, epoch, self.share.key, rank))
        feed = BatchFeed(self.share.images["train"], self.share.vocab, steps, augment=self.share.entry.augment,
                         generator=augment, pin_memory=self.device.type == "cuda")
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        autocast = torch.bfloat16 if self.budget.precision == "bf16" else None
        sums: dict[str, Any] = {}
        for host in feed:
            batch = host.to_device(self.device, channels_last=self.budget.channels_last)
            logs = train_step(self.model, self.objective, self.optimizer, batch, parameters=parameters, world=world,
                              generator=negatives, step=self.step, seed=self.seed, autocast_dtype=autocast)
            self.step += 1
            for key, value in logs.items():
                value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
                sums[key] = sums[key] + value if key in sums else value
        return {f"train/{self.share.key}/{key}": value / max(len(steps), 1) for key, value in sums.items()}

    def evaluate(self, rank: int, world: int) -> dict[str, SplitEvaluation | None]:
        """Test recall on every test query and train recall on the fixed training sample (A.8); every
        rank embeds its share; rank 0 gets the evaluations, the others None."""
        share = self.share
        return {
            split: evaluate_split(self.model, getattr(share.data, split), share.images[split], queries, share.vocab,
                                  share.data.recall_ks, self.device, label_parts=share.data.label_parts,
                                  rank=rank, world=world)
            for split, queries in (("test", share.data.test.queries), ("train", share.train_sample))
        }

    def state(self) -> dict:
        return {
            "model": self.model.state_dict(), "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(), "vocab": self.share.vocab.to_list(), "step": self.step,
            "model_config": asdict(self.model.config),  # so study.evaluate can rebuild the model
        }

    def load_state(self, state: dict) -> None:
        if state["vocab"] != self.share.vocab.to_list():
            raise ValueError(f"checkpoint of {self.name!r} was trained with another vocabulary (different data?)")
        self.model.load_state_dict(state["model"])
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])


def seed_run(data: RetrievalData, params: dict[str, Any], budget: Budget, *, seed: int = 0,
             device: torch.device = torch.device("cpu"), cache_dir: str | None = None) -> SeedRun:
    """One seed of a configuration on one dataset, outside a study (tests, benches)."""
    share = DatasetShare.open(DatasetEntry(data.name), data, budget=budget, data_seed=0, cache_dir=cache_dir)
    return SeedRun.build(share, TrialConfig.from_params(params, seeds=(seed,)), budget, seed=seed, device=device)
