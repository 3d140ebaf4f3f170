"""One configuration on one Ray Train worker: every seed on every dataset, epoch by epoch.

Seeds train one after the other inside the same worker, each with its own random state
(study/randomness.py), so a seed's numbers are the same whether it trains alone or beside other
seeds, and ASHA and Optuna see the seed mean at equal epochs. Every epoch, rank 0 turns the
evaluations into metrics (per seed under `seed/<seed>/...` and their mean under the plain names,
`whm` included; on a composition split also the classification of unseen compositions,
`classify/<key>/top1` and the pseudo-split `recall/<key>/classify@K` that `splits: {classify: w}` weighs), appends them to the trial's history, and keeps each evaluated query's first-hit
rank (methods.md A.9: the statistics resample queries). `state()` is everything a checkpoint needs
for an exact resume: weights, optimisers, step counters, every rank's random state, the history,
the ranks, and the time spent so far.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
import torch.distributed as dist

from models.objective import to_floats
from study.budget import Budget, DatasetEntry
from study.data import RetrievalData
from study.classify import classify_run
from study.metrics import recall_from_ranks, whm
from study.randomness import RandomState
from study.space import CLASSIFY_SPLIT, classifies
from study.trial_config import TrialConfig
from study.worker import DatasetShare, SeedRun

__all__ = ["TrialRun", "category_averages", "seed_prefix", "RANK_COLUMNS"]

RANK_COLUMNS = ("seed", "epoch", "dataset", "split", "query", "rank")  # one row per evaluated query


def seed_prefix(seed: int) -> str:
    return f"seed/{seed}/"


def category_averages(datasets: Sequence[DatasetEntry], metrics: Mapping[str, float]) -> dict[str, float]:
    """Where a study lists one dataset several times with options (FashionIQ's dress, shirt and
    toptee), the mean recall over them: `breakdown/fashioniq/<split>/average@K`, CMAP's mR."""
    groups: dict[str, list[str]] = {}
    for entry in datasets:
        groups.setdefault(entry.name, []).append(entry.key)
    averages = {}
    for name, keys in groups.items():
        if len(keys) < 2:
            continue
        for key in [k for k in metrics if k.startswith(f"recall/{keys[0]}/")]:
            split_k = key.removeprefix(f"recall/{keys[0]}/")  # "test@10"
            values = [metrics[f"recall/{other}/{split_k}"] for other in keys]
            split, k = split_k.split("@")
            averages[f"breakdown/{name}/{split}/average@{k}"] = sum(values) / len(values)
    return averages


@dataclass
class TrialRun:
    trial: TrialConfig
    budget: Budget
    datasets: tuple[DatasetEntry, ...]
    cell_weights: Mapping[str, float]
    rank: int
    world: int
    runs: dict[int, list[SeedRun]]  # seed -> one run per dataset, in the study's dataset order
    randomness: dict[int, RandomState]  # seed -> this rank's generators
    epoch: int = 0  # epochs completed
    history: list[dict[str, Any]] = field(default_factory=list)  # rank 0: the metrics of every epoch
    ranks: list[pd.DataFrame] = field(default_factory=list)  # rank 0: RANK_COLUMNS of every evaluation
    wall_s: float = 0.0  # over every resume
    cpu_s: float = 0.0  # process CPU seconds, summed over ranks and resumes
    # rank 0: the first seed's test gallery embeddings (N, D) per dataset from the last evaluation,
    # which the probe pictures reuse instead of embedding the whole gallery again
    probe_galleries: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def build(cls, trial: TrialConfig, budget: Budget, entries: Sequence[DatasetEntry],
              data: Mapping[str, RetrievalData], *, cell_weights: Mapping[str, float], data_seed: int,
              cache_dir: str | None, rank: int, world: int, device: torch.device) -> "TrialRun":
        shares = [DatasetShare.open(e, data[e.key], budget=budget, data_seed=data_seed, cache_dir=cache_dir)
                  for e in entries]
        runs = {seed: [SeedRun.build(s, trial, budget, seed=seed, device=device) for s in shares]
                for seed in trial.seeds}
        randomness = {seed: RandomState.fresh("train", seed, rank) for seed in trial.seeds}
        return cls(trial, budget, tuple(entries), cell_weights, rank, world, runs, randomness)

    def all_runs(self) -> list[SeedRun]:
        return [run for seed in self.trial.seeds for run in self.runs[seed]]

    def train_epoch(self) -> dict[str, float]:
        """Every seed, every dataset, one epoch; the mean logged terms, synchronised once."""
        logs: dict[str, Any] = {}
        for seed in self.trial.seeds:
            with self.randomness[seed].active():
                for run in self.runs[seed]:
                    logs.update({seed_prefix(seed) + k: v for k, v in run.train_epoch(self.epoch, self.rank, self.world).items()})
        return to_floats(logs)

    def evaluate(self) -> tuple[dict[str, float], list[pd.DataFrame]]:
        """Per-seed recalls, breakdowns, gaps and WHM (rank 0; empty elsewhere), and the ranks."""
        metrics: dict[str, float] = {}
        frames = []
        for seed in self.trial.seeds:
            per_seed: dict[str, float] = {}
            for run in self.runs[seed]:
                key = run.share.key
                for split, result in run.evaluate(self.rank, self.world).items():
                    if result is None:
                        continue
                    if split == "test" and seed == self.trial.seeds[0]:
                        self.probe_galleries[key] = result.gallery_emb
                    per_seed.update({f"recall/{key}/{split}@{k}": v for k, v in result.recalls.items()})
                    for part, recalls in result.breakdowns.items():
                        per_seed.update({f"breakdown/{key}/{split}/{part}@{k}": v for k, v in recalls.items()})
                    frames.append(self._rank_frame(seed, key, split, result.ranks))
                if self.rank == 0 and classifies(run.share.entry) and not self.budget.cached_features:
                    classified = classify_run(run)
                    per_seed.update({f"recall/{key}/{CLASSIFY_SPLIT}@{k}": v
                                     for k, v in recall_from_ranks(classified.closed_world_ranks, run.share.data.recall_ks).items()})
                    per_seed[f"classify/{key}/top1"] = classified.closed_world_top1
                    per_seed[f"classify/{key}/all_pairs_top1"] = classified.all_pairs_top1
                    frames.append(self._rank_frame(seed, key, CLASSIFY_SPLIT, classified.closed_world_ranks))
            if self.rank != 0:
                continue
            for k in sorted({int(c.rsplit("@", 1)[1]) for c in per_seed if c.startswith("recall/")}):
                for key in (e.key for e in self.datasets):
                    train, test = per_seed.get(f"recall/{key}/train@{k}"), per_seed.get(f"recall/{key}/test@{k}")
                    if train is not None and test is not None:
                        per_seed[f"gap/{key}@{k}"] = train - test
            per_seed.update(category_averages(self.datasets, per_seed))
            per_seed["whm"] = whm([per_seed[f"recall/{cell}"] for cell in self.cell_weights],
                                  list(self.cell_weights.values()))
            metrics.update({seed_prefix(seed) + k: v for k, v in per_seed.items()})
        return metrics, frames

    def _rank_frame(self, seed: int, key: str, split: str, ranks: torch.Tensor) -> pd.DataFrame:
        values = ranks.cpu().numpy()
        return pd.DataFrame({"seed": seed, "epoch": self.epoch + 1, "dataset": key, "split": split,
                             "query": range(len(values)), "rank": values})

    def epoch_metrics(self, train_logs: Mapping[str, float], evaluation: Mapping[str, float]) -> dict[str, Any]:
        """Per-seed metrics plus their mean over seeds under the plain names (`whm`, `recall/...`)."""
        per_seed = {**train_logs, **evaluation}
        metrics: dict[str, Any] = {"epoch": self.epoch, **per_seed}
        names = {k.split("/", 2)[2] for k in per_seed if k.startswith("seed/")}
        for name in sorted(names):
            values = [per_seed[seed_prefix(s) + name] for s in self.trial.seeds if seed_prefix(s) + name in per_seed]
            if len(values) == len(self.trial.seeds):
                metrics[name] = sum(values) / len(values)
        return metrics

    def gather_randomness(self) -> list[bytes]:
        """Every rank's random states (one bytes blob per rank), for rank 0's checkpoint."""
        mine = _to_bytes({seed: state.to_bytes() for seed, state in self.randomness.items()})
        if self.world == 1:
            return [mine]
        blobs: list[Any] = [None] * self.world
        dist.all_gather_object(blobs, mine)
        return blobs

    def state(self, randomness: list[bytes]) -> dict:
        return {
            "epoch": self.epoch, "runs": {run.name: run.state() for run in self.all_runs()},
            "randomness": randomness, "world": self.world, "wall_s": self.wall_s, "cpu_s": self.cpu_s,
        }

    def load_state(self, state: Mapping[str, Any], history: list[dict], ranks: pd.DataFrame | None) -> None:
        if int(state["world"]) != self.world:
            raise ValueError(f"checkpoint was written by {state['world']} workers, this run has {self.world}; "
                             "resume with the same `workers_per_trial`")
        for run in self.all_runs():
            run.load_state(state["runs"][run.name])
        mine = _from_bytes(state["randomness"][self.rank])
        self.randomness = {int(seed): RandomState.from_bytes(blob) for seed, blob in mine.items()}
        self.epoch = int(state["epoch"])
        self.wall_s, self.cpu_s = float(state["wall_s"]), float(state["cpu_s"])
        self.history = [h for h in history if int(h["epoch"]) <= self.epoch]
        self.ranks = [] if ranks is None else [ranks[ranks["epoch"] <= self.epoch]]

    def timed(self, wall: float, cpu: float) -> dict[str, float]:
        """Add this epoch's wall and (all ranks') CPU seconds; return the running totals."""
        if self.world > 1:
            total = torch.tensor([cpu], dtype=torch.float64)
            dist.all_reduce(total)
            cpu = float(total)
        self.wall_s += wall
        self.cpu_s += cpu
        gpus = self.budget.gpus_per_worker * self.world
        return {"time/total_s": self.wall_s, "time/cpu_s": self.cpu_s, "time/gpu_s": self.wall_s * gpus}


def _to_bytes(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _from_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def ranks_frame(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The ranks of every evaluation in compact types (one Parquet file per trial)."""
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="int32") for c in RANK_COLUMNS})
    frame = pd.concat(frames, ignore_index=True)
    for column in ("seed", "epoch", "query", "rank"):
        frame[column] = frame[column].astype("int32")
    for column in ("dataset", "split"):
        frame[column] = frame[column].astype("string")
    return frame[list(RANK_COLUMNS)]
