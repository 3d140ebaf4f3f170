"""The Tune function for one trial: one configuration, one seed, ONE TorchTrainer that trains it on
every dataset of the study (platform-notes.md: Train V2 inside a Tune function trainable).

The TorchTrainer gets a run name that is stable per trial (`train-<trial_id>`), so a resumed study
or a restarted trial continues from Train's last checkpoint instead of starting over.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from study.space import Budget, DatasetEntry
from study.train import RunSpec, build_trainer
from study.trial_config import TrialConfig


@dataclass(frozen=True)
class StudySettings:
    """What every trial of a study shares; bound to the trainable with `tune.with_parameters`."""

    seeds: tuple[int, ...]
    budget: Budget
    datasets: tuple[DatasetEntry, ...]
    cell_weights: Mapping[str, float]
    data_seed: int
    cache_dir: str | None
    train_storage: str  # Train's checkpoints: <study>/train/train-<trial_id>/
    allow_missing_images: bool = False


def run_trial(config: dict[str, Any], settings: StudySettings) -> None:
    trial_id = tune.get_context().get_trial_id()
    trial = TrialConfig.from_params(config, seeds=settings.seeds, where=f"trial {trial_id}")
    spec = RunSpec(
        trial=trial, budget=settings.budget, datasets=settings.datasets, cell_weights=settings.cell_weights,
        data_seed=settings.data_seed, cache_dir=settings.cache_dir,
        allow_missing_images=settings.allow_missing_images, driver_node=ray.get_runtime_context().get_node_id(),
    )
    trainer = build_trainer(
        spec, run_name=f"train-{trial_id}", storage_path=settings.train_storage, callbacks=[TuneReportCallback()]
    )
    trainer.fit()


def trainable(settings: StudySettings):
    """The trainable Tune runs: `run_trial` with the study settings and the trial driver's resources."""
    budget = settings.budget
    return tune.with_resources(tune.with_parameters(run_trial, settings=settings), {"cpu": budget.trial_cpus})
