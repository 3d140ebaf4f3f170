"""The search: Optuna proposes configurations (define-by-run, so conditional parameters work),
Ray's `Repeater` runs each once per seed and hands Optuna the mean, and ASHA stops weak trials
early on the study metric, using our own `epoch` as time (Tune's `training_iteration` restarts at 1
for a resumed trial, our epoch does not).
"""
from __future__ import annotations

import os
import pickle
import tempfile

from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Repeater
from ray.tune.search.optuna import OptunaSearch

from study.space import Budget, SearchSpace, define_by_run


class SeedRepeater(Repeater):
    """`Repeater` whose checkpoint also keeps its own groups, not only the inner searcher's state:
    without them a restored study cannot match a resumed trial to its configuration."""

    def save(self, checkpoint_path: str) -> None:
        with tempfile.TemporaryDirectory() as directory:
            inner = os.path.join(directory, "inner.pkl")
            self.searcher.save(inner)
            with open(inner, "rb") as handle:
                inner_bytes = handle.read()
        with open(checkpoint_path, "wb") as handle:
            pickle.dump({"repeater": self.get_state(), "inner": inner_bytes}, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            state = pickle.load(handle)  # our own file, written by save() above
        with tempfile.TemporaryDirectory() as directory:
            inner = os.path.join(directory, "inner.pkl")
            with open(inner, "wb") as handle:
                handle.write(state["inner"])
            self.searcher.restore(inner)
        self.set_state(state["repeater"])


def build_search(space: SearchSpace, budget: Budget) -> tuple[SeedRepeater, ASHAScheduler, int]:
    """Search algorithm, scheduler and the number of Tune trials (configurations x seeds)."""
    optuna = OptunaSearch(space=define_by_run(space), metric=space.metric, mode="max", seed=space.optuna_seed)
    repeater = SeedRepeater(optuna, repeat=len(space.seeds), set_index=True)
    scheduler = ASHAScheduler(
        time_attr="epoch", metric=space.metric, mode="max",
        max_t=budget.epochs, grace_period=min(budget.grace_period, budget.epochs),
    )
    return repeater, scheduler, budget.num_samples * len(space.seeds)
