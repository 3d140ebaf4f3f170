"""The progress a running study prints when stderr is not a terminal: counts, the best configuration
so far, trials stopped early and the estimate of what is left, checked against a scripted study with
a fake clock."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

import study.progress
from study.progress import ProgressCallback
from study.trial_config import CONFIG_ID, UNTIL


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now


def _trial(trial_id: str, config_id: str, until: int | None = None, status: str = "RUNNING"):
    config = {CONFIG_ID: config_id} | ({UNTIL: until} if until else {})
    return SimpleNamespace(trial_id=trial_id, config=config, status=status, path=f"/s/{trial_id}")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(study.progress, "time", clock)
    return clock


def test_counts_best_stopped_early_and_what_is_left(clock: Clock, capsys: pytest.CaptureFixture) -> None:
    progress = ProgressCallback(epochs=3)
    progress.setup(total_num_samples=4)
    a, b = _trial("ta", "c0000"), _trial("tb", "b0000")
    trials = [a, b]
    progress.on_trial_start(0, trials, a)
    progress.on_trial_start(0, trials, b)
    clock.now += 60
    progress.on_trial_result(0, trials, a, {"epoch": 1, "whm": 0.25, "recall/css/test@1": 0.1})
    progress.on_trial_result(0, trials, b, {"epoch": 1, "whm": 0.5})
    progress.on_trial_complete(0, trials, a)  # ASHA stopped it at epoch 1 of 3
    clock.now += 60
    progress.on_trial_result(0, trials, b, {"epoch": 3, "whm": 0.375})
    progress.on_trial_complete(0, trials, b)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "[0m00s 0/4 trials done, 1 running, 0 stopped early, best -] config c0000 (trial ta) started"
    assert lines[3] == ("[1m00s 0/4 trials done, 2 running, 0 stopped early, best b0000 whm 0.5000 (epoch 1)] "
                        "config b0000 (trial tb) epoch 1/3: seed-mean whm 0.5000  ")
    # one trial in 60 s, three to come at most: 3 x 60 s
    assert lines[4] == ("[1m00s 1/4 trials done, 1 running, 1 stopped early, best b0000 whm 0.5000 (epoch 1), "
                        "at most 3m00s left] trial ta stopped early, finished")
    # two trials in 120 s, two to come at most: 2 x 60 s
    assert lines[6] == ("[2m00s 2/4 trials done, 0 running, 1 stopped early, best b0000 whm 0.5000 (epoch 1), "
                        "at most 2m00s left] trial tb finished")


def test_a_sync_rung_that_reached_its_epoch_is_not_stopped_early(clock: Clock, capsys) -> None:
    progress = ProgressCallback(epochs=3)
    progress.setup(total_num_samples=None)
    rung = _trial("tr", "c0001", until=1)
    progress.on_trial_start(0, [rung], rung)
    progress.on_trial_result(0, [rung], rung, {"epoch": 1, "whm": 0.1})
    progress.on_trial_complete(0, [rung], rung)
    assert capsys.readouterr().err.splitlines()[-1] == (
        "[0m00s 1 trials done, 0 running, 0 stopped early, best c0001 whm 0.1000 (epoch 1)] trial tr finished")


def test_a_resumed_study_counts_what_finished_before_and_rates_this_session(clock: Clock, capsys) -> None:
    progress = ProgressCallback(epochs=1)
    progress.setup(total_num_samples=5)
    finished = [_trial(f"t{i}", f"c000{i}", status="TERMINATED") for i in range(3)]
    new = _trial("t3", "c0003")
    trials = [*finished, new]
    progress.on_trial_start(0, trials, new)
    clock.now += 30
    progress.on_trial_complete(0, trials, new)
    # 4 of 5 done; this session ended one trial in 30 s: at most 30 s for the last
    assert capsys.readouterr().err.splitlines()[-1].startswith("[0m30s 4/5 trials done, 0 running, 0 stopped early, "
                                                               "best -, at most 0m30s left]")
