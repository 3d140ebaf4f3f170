"""The Ray Train run of one configuration, described and launched without importing torch.

A trial's Tune process and Train's controller only start and watch workers. They import this
module, not the models: `RunSpec` holds the trial's raw config (the workers build the
`TrialConfig` from it), the train function here imports study.train on the worker, and the
backend config is study/torch_backend.py's. bench/trial_overhead.py: with torch imported there, the
worker started 10.6 s after the trial's function, now 5.3 s, and each of the two processes holds
0.12 GiB instead of 0.42.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import ray.train
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

from study.budget import Budget, DatasetEntry
from study.torch_backend import StudyTorchConfig

if TYPE_CHECKING:
    from study.trial_config import TrialConfig

CHECKPOINT_FILE = "state.pt"  # weights, optimisers, random states, epoch, time (torch.load weights_only)
HISTORY_FILE = "history.json"  # the metrics of every epoch so far
RANKS_FILE = "ranks.parquet"  # every evaluated query's first-hit rank, every epoch so far


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs; travels to the workers pickled, never as a raw dict."""

    params: Mapping[str, Any]  # the trial's config: hyperparameters and control keys (study/config_keys.py)
    seeds: tuple[int, ...]
    budget: Budget
    datasets: tuple[DatasetEntry, ...]
    cell_weights: Mapping[str, float]  # "css/test@1" -> weight (A.9)
    until: int  # train up to this epoch (a rung of the sync scheduler, else the budget's epochs)
    data_seed: int = 0
    cache_dir: str | None = None
    allow_missing_images: bool = False
    driver_node: str = ""  # node of the Tune function that launched this run (reported with the workers')
    run_dir: str = ""  # the Train run's folder on shared storage: where a failure's reason is recorded

    def trial(self) -> "TrialConfig":
        """The configuration, read from `params` (imports the models: call it on a worker)."""
        from study.trial_config import TrialConfig

        return TrialConfig.from_params(self.params, seeds=self.seeds, where=f"run {self.run_dir or '(unnamed)'}")


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Train's function on every worker; the training itself, and torch, are imported there."""
    from study.train import run_worker

    run_worker(config["spec"])


def reached(run_dir: str, until: int) -> dict[str, Any] | None:
    """The last result of the Train run in `run_dir` (a path or URI) when its latest checkpoint has
    trained to `until`, else None. A trial that Tune restarts after its rung had finished (the
    driver was killed before it recorded the end) reports this again without starting a
    TorchTrainer, its workers and their data: about 20 CPU-seconds of start-up on a small node."""
    try:
        with warnings.catch_warnings():  # Ray 2.60 reads its snapshot with pydantic's deprecated parse_obj
            warnings.simplefilter("ignore", DeprecationWarning)
            latest = ray.train.Result.from_path(run_dir).checkpoint
        if latest is None:
            return None
        with latest.as_directory() as directory:
            history = json.loads(Path(directory, HISTORY_FILE).read_text())
    except Exception:  # noqa: BLE001 - only a shortcut: whatever stops it, the full path runs
        # no run there yet, one that never reported, a damaged snapshot or a folder this node
        # cannot read: the TorchTrainer starts, restores Train's checkpoint and finds out itself,
        # raising Ray's own error when the run folder really is broken
        return None
    return history[-1] if history and int(history[-1]["epoch"]) >= until else None


def start_train_coordinator() -> None:
    """Create Ray Train's AutoscalingCoordinator now (connected to a Ray, not through Ray Client),
    without waiting for it. Train's controller waits for this detached actor at its run's start and
    creates it when the cluster has none, so the first run of a study paid its process start (1.9 s
    here); created as the study's Tune sets up, the first run finds it like every later one. The
    function is Ray's own (Ray Data's module, which Train V2 calls; Ray is pinned)."""
    from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
        get_or_create_autoscaling_coordinator,
    )

    get_or_create_autoscaling_coordinator()


def build_trainer(spec: RunSpec, *, run_name: str, storage_path: str,
                  callbacks: list | None = None) -> DataParallelTrainer:
    """Ray Train's data-parallel trainer of torch workers (what TorchTrainer is, with
    study/torch_backend.py's config in place of TorchConfig)."""
    budget = spec.budget
    resources = {"CPU": budget.cpus_per_worker}
    if budget.gpus_per_worker > 0:
        resources["GPU"] = budget.gpus_per_worker
    return DataParallelTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec},
        backend_config=StudyTorchConfig(backend="nccl" if budget.gpus_per_worker > 0 else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=budget.workers_per_trial, use_gpu=budget.gpus_per_worker > 0,
            resources_per_worker=resources,
        ),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage_path, callbacks=callbacks or [],
            failure_config=ray.train.FailureConfig(max_failures=2),  # a lost node: restart from the checkpoint
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
    )
