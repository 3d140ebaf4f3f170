"""When Tune may run the next trial in a finished trial's process (study.trainable.trials_end_by_themselves):
only when no trial is stopped while its function waits in TorchTrainer.fit. That the process really is
reused in a study is checked in test_study_integration.py (the grid study)."""
from __future__ import annotations

import pytest

from study.budget import Budget
from study.trainable import trials_end_by_themselves


@pytest.mark.parametrize(
    "scheduler, budget, reuse",
    [
        ("sync", Budget(epochs=4, grace_period=1, reduction_factor=2), True),  # every trial trains to its rung and ends
        ("asha", Budget(epochs=1), True),  # one rung: nothing is stopped early
        ("asha", Budget(epochs=3, grace_period=3), True),  # grace period at the last epoch: one rung
        ("asha", Budget(epochs=3, grace_period=1, reduction_factor=3), False),  # stopped at epoch 1 mid-run
        ("asha", Budget(epochs=9, grace_period=3, reduction_factor=3), False),
    ],
)
def test_reuse_only_where_no_trial_is_stopped_mid_run(scheduler: str, budget: Budget, reuse: bool) -> None:
    assert trials_end_by_themselves(budget, scheduler) is reuse
