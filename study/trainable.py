"""The Tune function for one trial: one configuration, ALL its seeds, in ONE Ray Train run (torch
workers, study/trainer.py) that trains it on every dataset of the study (platform-notes.md: Train
V2 inside a Tune function trainable). ASHA and Optuna see the seed-mean WHM at equal epochs. This
process imports no torch: it reads only the config's control keys.

The Train run's name is stable per configuration (`train-<config id>`), so a resumed study,
a restarted trial or the sync scheduler's next rung continues from Train's last checkpoint instead
of starting over; a restarted trial whose run already reached its epoch reports that result again
without starting the Train run (study.trainer.reached), and one whose loss diverged fails again at
once with the reason (study/trial_failure.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from study.budget import Budget, DatasetEntry
from study.config_keys import CONFIG_ID, DEFAULT_CONFIG_ID, UNTIL
from study.trainer import RunSpec, build_trainer, reached
from study.trial_failure import raise_if_failed


@dataclass(frozen=True)
class StudySettings:
    """What every trial of a study shares; bound to the trainable with `tune.with_parameters`."""

    seeds: tuple[int, ...]
    budget: Budget
    datasets: tuple[DatasetEntry, ...]
    cell_weights: Mapping[str, float]
    data_seed: int
    cache_dir: str | None
    train_storage: str  # Train's checkpoints: <study>/train/train-<config id>/
    allow_missing_images: bool = False


def train_run_name(config_id: str) -> str:
    return f"train-{config_id}"


# How long Tune waits for a finished trial's function to return before its process may run the next
# trial (read by Tune's FunctionTrainable.reset_config in this process; Tune's default is 2 s). The
# function returns when TorchTrainer.fit has shut its workers down, which takes seconds after the
# last report; a reset that times out makes Tune error the NEXT trial, so the wait is generous.
_REUSE_WAIT_S = "120"


def trials_end_by_themselves(budget: Budget, scheduler: str) -> bool:
    """Whether every trial's function returns by itself, so that Tune may run the next trial in a
    finished trial's process (reuse_actors) instead of starting a new one (about 12 s of process
    start and imports on a busy 2-core machine, bench/scheduling_efficiency.py). The sync scheduler's
    trials train to their rung and end; ASHA with a single rung stops nothing early. ASHA stops
    trials at its inner rungs while their function waits in `TorchTrainer.fit`, which only the
    end of its process interrupts, so those studies start a process per trial."""
    return scheduler == "sync" or budget.rungs() == (budget.epochs,)


def run_trial(config: dict[str, Any], settings: StudySettings) -> None:
    os.environ["TUNE_FUNCTION_THREAD_TIMEOUT_S"] = _REUSE_WAIT_S
    # Only the control keys are read here; the workers read the hyperparameters (RunSpec.trial), so
    # this process never imports the models and torch (study/trainer.py).
    run_name = train_run_name(str(config.get(CONFIG_ID, DEFAULT_CONFIG_ID)))
    run_dir = f"{settings.train_storage.rstrip('/')}/{run_name}"
    epochs = settings.budget.epochs
    spec = RunSpec(
        params=dict(config), seeds=settings.seeds, budget=settings.budget, datasets=settings.datasets,
        cell_weights=settings.cell_weights, until=min(config.get(UNTIL) or epochs, epochs),
        data_seed=settings.data_seed, cache_dir=settings.cache_dir,
        allow_missing_images=settings.allow_missing_images, driver_node=ray.get_runtime_context().get_node_id(),
        run_dir=run_dir,
    )
    raise_if_failed(run_dir)  # its loss diverged before: Tune's retry ends at once with the reason
    last = reached(run_dir, spec.until)
    if last is not None:  # trained this far before the study was interrupted: the same result again
        tune.report(last)
        return
    trainer = build_trainer(spec, run_name=run_name, storage_path=settings.train_storage,
                            callbacks=[TuneReportCallback()])
    trainer.fit()
    raise_if_failed(run_dir)


def trainable(settings: StudySettings):
    """The trainable Tune runs: `run_trial` with the study settings and the trial driver's resources."""
    budget = settings.budget
    return tune.with_resources(tune.with_parameters(run_trial, settings=settings), {"cpu": budget.trial_cpus})
