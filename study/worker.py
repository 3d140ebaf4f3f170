"""What one Ray Train worker holds for one dataset (`DatasetShare`: data, image maps, vocabulary,
the train-recall sample, shared by every seed) and for one (seed, dataset) (`SeedRun`: model,
objective, optimiser); one training step, one epoch of data-parallel training, the evaluation of A.8.

Gradients are averaged across workers by hand (one flat all-reduce, study/gradient_mean.py) rather than through
DistributedDataParallel: GA's isotropic noise must be added *after* the all-reduce (A.4), the
input-gradient penalties back-propagate twice through the graph, and some composers leave whole
encoders unused (image_only ignores the text), all of which fight DDP's reducer hooks. A parameter
that no rank used keeps no gradient (so no noise, momentum or weight decay touches it), at any
worker count. The matching loss gathers every rank's targets with their gradient (models/distributed.py),
so the global batch, not each rank's share, supplies the negatives.

The budget's `encoder_lr_factor` sets the encoders' learning rate as a fraction of the composer's; at 0
they are frozen, and with `feature_cache` every image and text is embedded once per node
(study/feature_cache.py) and the trial trains the composer on those features: no image is read and no
encoder runs in training or evaluation.
"""
from __future__ import annotations

import random
import weakref
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from models.batch import Batch
from models.encoders import encoder_class
from models.model import CirModel, ModelConfig
from models.objective import Objective, ObjectiveConfig
from models.text import Tokenizer
from study.budget import Budget, DatasetEntry
from study.data import Query, RetrievalData
from study.data.image_cache import ImageMap, open_image_map
from study.evaluation import SplitEvaluation, evaluate_split
from study.feature_cache import SplitFeatures, open_split_features
from study.feed import BatchFeed, FeatureFeed
from study.gradient_mean import GradientMean
from study.randomness import stream_seed
from study.trial_config import TrialConfig

__all__ = ["DatasetShare", "SeedRun", "seed_run", "train_step"]


@dataclass
class DatasetShare:
    """One dataset as every seed of a trial on this worker sees it."""

    key: str  # the space's dataset key, e.g. `fashioniq-dress`: names its metrics
    entry: DatasetEntry
    data: RetrievalData
    vocab: Tokenizer  # the encoders' text side: a word vocabulary of the training texts, or CLIP's tokenizer
    images: dict[str, ImageMap]  # split -> the node's image map (decoded once per node)
    train_sample: tuple[Query, ...]  # fixed sample of training queries for train recall (A.8)
    cache_dir: str | None = None  # the node's cache folder (image maps, cached features)

    @classmethod
    def open(cls, entry: DatasetEntry, data: RetrievalData, *, budget: Budget, data_seed: int,
             cache_dir: str | None) -> "DatasetShare":
        sample = list(data.train.queries)
        random.Random(data_seed).shuffle(sample)  # the same sample for every trial of a study
        cache = Path(cache_dir) if cache_dir else None
        tokenizer = encoder_class(budget.image_encoder).tokenizer([q.text for q in data.train.queries])
        return cls(
            key=entry.key, entry=entry, data=data, vocab=tokenizer,
            images={s.name: open_image_map(s, cache_dir=cache) for s in (data.train, data.test)},
            train_sample=tuple(sample[: budget.train_eval_queries]), cache_dir=cache_dir,
        )


def train_step(model: CirModel, objective: Objective, optimizer: torch.optim.Optimizer, batch: Batch, *,
               gradients: GradientMean, generator: torch.Generator, step: int, seed: int,
               autocast_dtype: torch.dtype | None = None) -> dict[str, Any]:
    """One data-parallel step: loss (negatives from the global batch), backward, gradient mean,
    GA's noise, optimiser step. Returns the logged terms as device tensors (no sync)."""
    device_type = batch.reference.device.type
    autocast = torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    with autocast:
        result = objective(model, batch, generator=generator)
    optimizer.zero_grad(set_to_none=True)
    result.loss.backward()
    gradients.mean()
    logs = dict(result.device_logs)
    logs.update(objective.after_gradient_sync(gradients.parameters, step=step, seed=seed))
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
    features: dict[str, SplitFeatures] | None = None  # split -> cached features, when the trial trains on them
    fingerprint: str | None = None  # of the frozen encoders (models/model.py encoders_fingerprint); None: trained
    gradients: GradientMean | None = None  # the optimiser's parameters' mean over the workers, made at the first epoch

    @classmethod
    def build(cls, share: DatasetShare, trial: TrialConfig, budget: Budget, *, seed: int,
              device: torch.device) -> "SeedRun":
        # Initial weights depend on (seed, dataset) only: identical on every rank, and the same whether
        # this seed trains alone or beside others.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed("init", seed, share.key))
            model = CirModel(ModelConfig(
                composer=trial.composer, image_encoder=budget.image_encoder, image_weights=budget.image_weights,
                embed_dim=budget.embed_dim, vocab_size=len(share.vocab), frozen_encoders=budget.frozen_encoders,
            ))
            objective = Objective(
                ObjectiveConfig(k=trial.candidates(budget.batch_size), regularizers=trial.regularizers),
                embed_dim=model.embed_dim, mid_channels=model.image_encoder.mid_channels,
            )
        fingerprint = model.encoders_fingerprint() if budget.frozen_encoders else None
        if budget.sync_batchnorm:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model, objective = model.to(device), objective.to(device)
        if budget.channels_last:
            model = model.to(memory_format=torch.channels_last)
        features = None
        if fingerprint is not None:
            _share_frozen_encoders(model, (fingerprint, str(device), budget.channels_last, budget.sync_batchnorm))
            if budget.cached_features:
                features = {split: open_split_features(
                    model, share.vocab, images=share.images[split], texts=[q.text for q in getattr(share.data, split).queries],
                    encoder=budget.image_encoder, cache_dir=Path(share.cache_dir) if share.cache_dir else None,
                    device=device, fingerprint=fingerprint) for split in ("train", "test")}
        optimizer = torch.optim.SGD(_parameter_groups(model, objective, budget), lr=budget.lr, momentum=0.9,
                                    weight_decay=budget.weight_decay)
        return cls(share, seed, trial, budget, device, model, objective, optimizer, features=features,
                   fingerprint=fingerprint)

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
        if self.gradients is None or self.gradients.world != world:
            self.gradients = GradientMean([p for group in self.optimizer.param_groups for p in group["params"]], world)
        autocast = torch.bfloat16 if self.budget.precision == "bf16" else None
        sums: dict[str, Any] = {}
        for batch in self._batches(steps, augment):
            logs = train_step(self.model, self.objective, self.optimizer, batch, gradients=self.gradients,
                              generator=negatives, step=self.step, seed=self.seed, autocast_dtype=autocast)
            self.step += 1
            for key, value in logs.items():
                value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
                sums[key] = sums[key] + value if key in sums else value
        return {f"train/{self.share.key}/{key}": value / max(len(steps), 1) for key, value in sums.items()}

    def _batches(self, steps: list[list[Query]], augment: torch.Generator) -> Iterator[Batch]:
        """Each step's batch on the device: rows of the cached features, or images from the image map."""
        if self.features is not None:
            yield from FeatureFeed(self.features["train"], steps, self.device)
            return
        feed = BatchFeed(self.share.images["train"], self.share.vocab, steps, augment=self.share.entry.augment,
                         generator=augment, pin_memory=self.device.type == "cuda")
        for host in feed:
            yield host.to_device(self.device, channels_last=self.budget.channels_last)

    def evaluate(self, rank: int, world: int) -> dict[str, SplitEvaluation | None]:
        """Test recall on every test query and train recall on the fixed training sample (A.8); every
        rank embeds its share; rank 0 gets the evaluations, the others None."""
        share = self.share
        evaluations = {}
        for split, queries in (("test", share.data.test.queries), ("train", share.train_sample)):
            # the cached features stand in for both the image map and the tokenizer
            images, texts = (self.features[split],) * 2 if self.features else (share.images[split], share.vocab)
            evaluations[split] = evaluate_split(self.model, getattr(share.data, split), images, queries, texts,
                                                share.data.recall_ks, self.device, label_parts=share.data.label_parts,
                                                rank=rank, world=world)
        return evaluations

    def state(self) -> dict:
        """Everything a checkpoint needs; frozen encoders from a weights file are left out (the file
        holds them) and identified by their fingerprint (models.model.restore_model rebuilds the model)."""
        state = {
            "model": self.model.trained_state(), "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(), "vocab": self.share.vocab.to_list(), "step": self.step,
            "model_config": asdict(self.model.config),  # so study.evaluate can rebuild the model
        }
        if self.fingerprint is not None:
            state["encoders_fingerprint"] = self.fingerprint
        return state

    def load_state(self, state: dict) -> None:
        if state["vocab"] != self.share.vocab.to_list():
            raise ValueError(f"checkpoint of {self.name!r} was trained with another vocabulary (different data?)")
        saved = state.get("encoders_fingerprint")
        if saved is not None and saved != self.fingerprint:
            raise ValueError(f"checkpoint of {self.name!r} was trained with other frozen encoders than "
                             f"{self.model.config.image_weights!r} gives now; resume with the original weights file")
        self.model.load_trained_state(state["model"])
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])


def _parameter_groups(model: CirModel, objective: Objective, budget: Budget) -> list[dict[str, Any]]:
    """The optimiser's parameter groups: the encoders at lr * encoder_lr_factor (left out when frozen),
    everything else at lr. At factor 1, one group in the model's order, as before the factor existed."""
    everything = list(model.parameters()) + list(objective.parameters())
    if budget.encoder_lr_factor == 1:
        return [{"params": everything}]
    encoders = {id(p) for p in model.encoder_parameters()}
    groups = [{"params": [p for p in everything if id(p) not in encoders]}]
    if not budget.frozen_encoders:
        groups.append({"params": [p for p in everything if id(p) in encoders], "lr": budget.lr * budget.encoder_lr_factor})
    return groups


# Frozen encoders with the same weights compute the same function: one copy per process serves every seed
# and dataset of a trial (CLIP RN50's two towers hold 400 MB). Weak: freed with the last run holding it.
_FROZEN_ENCODERS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def _share_frozen_encoders(model: CirModel, key: tuple) -> None:
    model.image_encoder = _FROZEN_ENCODERS.setdefault((*key, "image"), model.image_encoder)
    model.text_encoder = _FROZEN_ENCODERS.setdefault((*key, "text"), model.text_encoder)


def seed_run(data: RetrievalData, params: dict[str, Any], budget: Budget, *, seed: int = 0,
             device: torch.device = torch.device("cpu"), cache_dir: str | None = None) -> SeedRun:
    """One seed of a configuration on one dataset, outside a study (tests, benches)."""
    share = DatasetShare.open(DatasetEntry(data.name), data, budget=budget, data_seed=0, cache_dir=cache_dir)
    return SeedRun.build(share, TrialConfig.from_params(params, seeds=(seed,)), budget, seed=seed, device=device)
