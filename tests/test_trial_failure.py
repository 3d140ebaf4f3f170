"""A diverged loss ends a trial with status error and the reason (study/trial_failure.py), and the
tables say which configuration the ranking left out and why."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from study.trial_failure import TrialFailed, nonfinite_loss, raise_if_failed, record_failure, recorded_failure
from study.trials import Configuration, configurations, error_reason


def test_finite_logs_are_not_a_failure() -> None:
    logs = {"seed/0/train/css/loss/total": 1.5, "seed/0/train/css/model/scale": math.inf}  # not a loss term
    assert nonfinite_loss(logs, epoch=3, world=1) is None


def test_a_nan_or_infinite_loss_term_is_named() -> None:
    logs = {"seed/0/train/css/loss/total": math.nan, "seed/1/train/css/loss/ga": -math.inf,
            "seed/1/train/css/loss/total": 0.7}
    reason = nonfinite_loss(logs, epoch=2, world=1)
    assert reason == ("the loss became NaN or infinite in epoch 2 (seed/0/train/css/loss/total = nan, "
                      "seed/1/train/css/loss/ga = -inf); lower the learning rate or the regulariser's strength")


def test_a_recorded_failure_is_read_back_and_raised(tmp_path) -> None:
    run_dir = tmp_path / "train" / "train-c0001"
    assert recorded_failure(run_dir) is None
    raise_if_failed(run_dir)  # nothing recorded: nothing raised
    record_failure(run_dir, "the loss became NaN")
    assert recorded_failure(run_dir) == "the loss became NaN"
    assert [p.name for p in run_dir.iterdir()] == ["failed.json"]  # no temporary left
    with pytest.raises(TrialFailed, match="the loss became NaN"):
        raise_if_failed(run_dir)


def _trial(trial_id: str, status: str, path=None, until=2):
    return SimpleNamespace(trial_id=trial_id, status=status, path=path, last_result={},
                           config={"__config__": "c0001", "__until__": until, "__role__": "searched", "K": 4})


def test_the_reason_of_a_failed_configuration(tmp_path) -> None:
    trial_dir = tmp_path / "run_trial_t1"
    trial_dir.mkdir()
    (trial_dir / "error.txt").write_text("Traceback (most recent call last):\n  File ...\nRuntimeError: worker died\n\n")
    [config] = configurations([_trial("t1", "ERROR", str(trial_dir))])
    assert error_reason(tmp_path, config) == "RuntimeError: worker died"  # Tune's error, last line
    record_failure(tmp_path / "train" / "train-c0001", "the loss became NaN in epoch 1")
    assert error_reason(tmp_path, config) == "the loss became NaN in epoch 1"  # the workers' own reason first
    assert error_reason(tmp_path, Configuration("c0002", {}, "searched", None, status="TERMINATED")) is None


def test_a_trial_ending_now_takes_the_status_it_ends_with() -> None:
    # Tune calls its callbacks before it changes the trial's status
    [config] = configurations([_trial("t1", "RUNNING")], ended={"t1": "TERMINATED"})
    assert config.status == "TERMINATED" and config.trial_id == "t1"


def test_a_configuration_the_workers_cannot_build_ends_the_run_once_with_the_reason(tmp_path) -> None:
    """The workers build the configuration (study/trainer.py RunSpec.trial); one that is not valid (a
    study resumed after its composer was renamed, say) would fail every attempt alike, so the workers
    record why and return instead of raising, which would make Ray Train restart them twice."""
    from study.budget import Budget, DatasetEntry
    from study.ray_session import ray_session
    from study.trainer import RunSpec, build_trainer

    run_dir = tmp_path / "train-c0009"
    spec = RunSpec(params={"composer": "no_such_composer", "K": 4, "__config__": "c0009"}, seeds=(0,),
                   budget=Budget(epochs=1), datasets=(DatasetEntry("css"),), cell_weights={"css/test@1": 1.0},
                   until=1, run_dir=str(run_dir))
    with ray_session(None):
        build_trainer(spec, run_name=run_dir.name, storage_path=str(tmp_path)).fit()  # no TrainingFailedError
    reason = recorded_failure(run_dir)
    assert reason is not None and reason.startswith(f"its configuration is not valid: run {run_dir}: unknown composer "
                                                    "'no_such_composer'; known: ")
    with pytest.raises(TrialFailed, match="unknown composer 'no_such_composer'"):
        raise_if_failed(run_dir)  # what the trial's function raises after fit()
