"""What one Ray Train worker holds for one dataset of a trial: data, vocabulary, model, objective,
optimiser; one epoch of data-parallel training and the evaluation of A.8.

Gradients are averaged across workers by hand (one flat all-reduce) rather than through
DistributedDataParallel: GA's isotropic noise must be added *after* the all-reduce (A.4), the
input-gradient penalties back-propagate twice through the graph, and some composers leave whole
encoders unused (image_only ignores the text), all of which fight DDP's reducer hooks.
"""
from __future__ import annotations

import random
import zlib
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist

from models.batch import Batch
from models.encoders import normalize_images
from models.model import CirModel, ModelConfig
from models.objective import Objective, ObjectiveConfig
from models.text import Vocabulary
from study.data import Query, RetrievalData
from study.evaluation import evaluate_split
from study.space import Budget
from study.trial_config import TrialConfig


@dataclass
class DatasetRun:
    name: str
    data: RetrievalData
    images: dict[str, torch.Tensor]  # split -> uint8 (N, 3, S, S), kept on the CPU
    vocab: Vocabulary
    model: CirModel
    objective: Objective
    optimizer: torch.optim.Optimizer
    train_sample: tuple[Query, ...]  # fixed sample of training queries for train recall
    budget: Budget
    trial: TrialConfig
    device: torch.device
    step: int = 0

    @classmethod
    def build(cls, data: RetrievalData, trial: TrialConfig, budget: Budget, *, data_seed: int,
              device: torch.device, name: str | None = None) -> "DatasetRun":
        """`name` keys this dataset's metrics (the space's dataset key, e.g. `fashioniq-dress`)."""
        vocab = Vocabulary.build([q.text for q in data.train.queries])
        model_config = ModelConfig(
            composer=trial.composer, image_encoder=budget.image_encoder,
            image_weights=budget.image_weights, embed_dim=budget.embed_dim, vocab_size=len(vocab),
        )
        model = CirModel(model_config).to(device)
        objective = Objective(
            ObjectiveConfig(k=trial.candidates(budget.batch_size), regularizers=trial.regularizers),
            embed_dim=budget.embed_dim, mid_channels=model.image_encoder.mid_channels,
        ).to(device)
        parameters = list(model.parameters()) + list(objective.parameters())
        optimizer = torch.optim.SGD(parameters, lr=budget.lr, momentum=0.9, weight_decay=budget.weight_decay)
        sample = list(data.train.queries)
        random.Random(data_seed).shuffle(sample)  # the same sample for every trial of a study
        return cls(
            name=name or data.name, data=data, images={s.name: s.load_images() for s in (data.train, data.test)},
            vocab=vocab, model=model, objective=objective, optimizer=optimizer,
            train_sample=tuple(sample[: budget.train_eval_queries]), budget=budget, trial=trial, device=device,
        )

    def _batch(self, queries: list[Query]) -> Batch:
        images = self.images["train"]
        sources = torch.tensor([q.source for q in queries])
        targets = torch.tensor([q.target for q in queries])
        tokens, lengths = self.vocab.encode([q.text for q in queries])
        regions = None
        if all(q.region is not None for q in queries):
            regions = torch.tensor([q.region for q in queries], dtype=torch.float32, device=self.device)
        return Batch(
            reference=normalize_images(images[sources].to(self.device)),
            tokens=tokens.to(self.device), lengths=lengths.to(self.device),
            target=normalize_images(images[targets].to(self.device)), regions=regions,
        )

    def train_epoch(self, epoch: int, rank: int, world: int) -> dict[str, float]:
        """One pass over the training queries, sharded by rank; returns mean logged terms."""
        self.model.train()
        self.objective.train()
        order = list(self.data.train.queries)
        # every rank must draw the same order (Python's str hash differs per process, crc32 does not)
        random.Random(zlib.crc32(f"{self.trial.seed}/{epoch}/{self.name}".encode())).shuffle(order)
        batch_size = self.budget.batch_size
        steps = len(order) // (batch_size * world)  # equal on every rank, so all-reduces pair up
        if self.budget.max_steps_per_epoch:
            steps = min(steps, self.budget.max_steps_per_epoch)
        generator = torch.Generator(device="cpu").manual_seed(self.trial.seed * 1_000_003 + epoch)
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        sums: dict[str, float] = {}
        for step in range(steps):
            start = (step * world + rank) * batch_size
            result = self.objective(self.model, self._batch(order[start : start + batch_size]), generator=generator)
            self.optimizer.zero_grad(set_to_none=True)
            result.loss.backward()
            average_gradients(parameters, world)
            logs = dict(result.logs)
            logs.update(self.objective.after_gradient_sync(parameters, step=self.step, seed=self.trial.seed))
            self.optimizer.step()
            self.step += 1
            for key, value in logs.items():
                sums[key] = sums.get(key, 0.0) + float(value)
        return {f"train/{self.name}/{key}": value / max(steps, 1) for key, value in sums.items()}

    def evaluate(self) -> dict[str, float]:
        """Test recall on every test query and train recall on the fixed training sample, with the
        breakdowns (`breakdown/<dataset>/<split>/<kind>@K`) and the generalisation gap."""
        metrics = {}
        for split, queries in (("test", self.data.test.queries), ("train", self.train_sample)):
            result = evaluate_split(
                self.model, getattr(self.data, split), self.images[split], queries, self.vocab,
                self.data.recall_ks, self.device, label_parts=self.data.label_parts,
            )
            metrics.update({f"recall/{self.name}/{split}@{k}": v for k, v in result.recalls.items()})
            for part, recalls in result.breakdowns.items():
                metrics.update({f"breakdown/{self.name}/{split}/{part}@{k}": v for k, v in recalls.items()})
        for k in self.data.recall_ks:
            metrics[f"gap/{self.name}@{k}"] = metrics[f"recall/{self.name}/train@{k}"] - metrics[f"recall/{self.name}/test@{k}"]
        return metrics

    def state(self) -> dict:
        return {
            "model": self.model.state_dict(), "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(), "vocab": self.vocab.to_list(), "step": self.step,
            "model_config": asdict(self.model.config),  # so study.evaluate can rebuild the model
        }

    def load_state(self, state: dict) -> None:
        if state["vocab"] != self.vocab.to_list():
            raise ValueError(f"checkpoint of {self.name!r} was trained with another vocabulary (different data?)")
        self.model.load_state_dict(state["model"])
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])


def average_gradients(parameters: list[torch.nn.Parameter], world: int) -> None:
    """Mean of every gradient over the workers in one flat all-reduce (missing grads count as 0)."""
    if world == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in parameters:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n
