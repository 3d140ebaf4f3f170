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
from ray.tune.search import Repeater, Searcher
from ray.tune.search.optuna import OptunaSearch

from study.space import Budget, SearchSpace, define_by_run, grid_points
from study.trial_config import TRIAL_INDEX


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


class GridSearcher(Searcher):
    """Suggests a fixed list of configurations in order (the factorial grid, once per seed), then
    finishes. Its position is checkpointed, so a resumed study continues the grid where it stopped."""

    def __init__(self, points: list[dict], *, metric: str, mode: str) -> None:
        super().__init__(metric=metric, mode=mode)
        self.points, self.position = list(points), 0

    def suggest(self, trial_id: str) -> dict | None:
        if self.position >= len(self.points):
            return Searcher.FINISHED
        self.position += 1
        return dict(self.points[self.position - 1])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # a grid does not learn from results

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump({"points": self.points, "position": self.position}, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            state = pickle.load(handle)  # our own file, written by save() above
        self.points, self.position = state["points"], state["position"]


def build_search(space: SearchSpace, budget: Budget) -> tuple[Searcher, ASHAScheduler, int]:
    """Search algorithm, scheduler and the number of Tune trials (configurations x seeds).

    `sampler: tpe`: Optuna proposes `num_samples` configurations, each run once per seed.
    `sampler: grid`: every combination of the choices (`grid_points`), once per seed. (Optuna's
    BruteForceSampler covers conditional grids too, but it calls `Study.stop` when exhausted,
    which raises under the ask-and-tell interface Tune drives it with; Tune's own grid_search
    cannot express conditional parameters.)
    """
    scheduler = ASHAScheduler(
        time_attr="epoch", metric=space.metric, mode="max",
        max_t=budget.epochs, grace_period=min(budget.grace_period, budget.epochs),
    )
    if space.sampler == "grid":
        points = [{**point, TRIAL_INDEX: i} for point in grid_points(space) for i in range(len(space.seeds))]
        return GridSearcher(points, metric=space.metric, mode="max"), scheduler, len(points)
    optuna = OptunaSearch(space=define_by_run(space), metric=space.metric, mode="max", seed=space.optuna_seed)
    repeater = SeedRepeater(optuna, repeat=len(space.seeds), set_index=True)
    return repeater, scheduler, budget.num_samples * len(space.seeds)
