"""The search: which configurations run, under which config id, with which matched baseline, and
which scheduler stops them.

A Tune trial trains every seed of one configuration (study/trainable.py) and reports the seed-mean
`whm` and our own `epoch` each epoch (Tune's `training_iteration` restarts at 1 for a resumed trial).
Each suggested config holds the hyperparameters plus the control keys of study/trial_config.py:

    CONFIG_ID    "c0003" for a configuration the sampler proposed, "b0001" for a matched baseline;
                 numbered in suggestion order, never reused, and stable across `Tuner.restore`
    UNTIL        the epoch the trial trains to (a rung in the sync scheduler, `budget.epochs` with ASHA)
    ROLE         "searched" | "baseline"
    BASELINE_OF  only on a configuration with a regulariser, when the space is `baseline: matched`:
                 the config id of its matched baseline

A later trial with the same config id continues that configuration's training (Ray Train resumes
the stable run name `train-<config id>`).

Matched baselines (issue 9, item 4): a configuration with `regularizer != none` is paired with the
same parameters under `regularizer: none`, minus the regulariser's own parameters (those whose
`when:` names `regularizer`, transitively). One baseline per distinct parameter dict, shared by every
configuration that maps to it, suggested right after (ASHA) or right before (sync, grids) the first
configuration that needs it, and never told to Optuna. A sampled configuration whose parameters equal
a baseline's is still run as the sampler's trial; it gets no baseline of its own. In a grid every
distinct point runs exactly once: a `none` point that is some point's matched baseline is run with
ROLE "baseline" (and its own "b" id), the others point at it with BASELINE_OF.

Schedulers (`build_search(..., scheduler=)`):
- "asha": Optuna (or the grid) with Ray's ASHA on `epoch`; baselines are exempt from ASHA's rungs and
  train to `budget.epochs`, so a baseline has a result at every epoch a configuration can stop at.
- "sync": synchronous successive halving whose decisions depend only on the results (study/scheduling.py).
"""
from __future__ import annotations

import glob
import json
import logging
import math
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from study.space import Budget, SearchSpace, define_by_run, grid_points
from study.trial_config import BASELINE_OF, CONFIG_ID, NO_REGULARIZER, ROLE, UNTIL

__all__ = ["BookSearcher", "ConfigBook", "Configuration", "GridSearcher", "MatchedASHAScheduler", "MatchedSearcher",
           "build_search", "load_decisions", "regularizer_parameters"]

logger = logging.getLogger(__name__)

METRIC = "whm"
SCHEDULERS = ("asha", "sync")


@dataclass
class Configuration:
    """One configuration of a study: its id, hyperparameters and what happened to it so far."""

    id: str
    role: Literal["searched", "baseline"]
    params: dict[str, Any]
    baseline: str | None = None  # the matched baseline's id
    generation: int = 0
    optuna_key: Any = None  # what the sampler knows this configuration by (trial id or trial number)
    until: int = 0  # the highest UNTIL it was given a trial for; 0 = none yet
    whm: dict[int, float] = field(default_factory=dict)  # epoch -> seed-mean whm, from every result seen
    errored: bool = False  # a trial of it failed before reaching its UNTIL
    stopped_at: int | None = None  # the epoch a scheduler stopped it at (< budget.epochs)

    def suggestion(self, until: int) -> dict[str, Any]:
        config = {**self.params, CONFIG_ID: self.id, UNTIL: until, ROLE: self.role}
        if self.baseline is not None:
            config[BASELINE_OF] = self.baseline
        return config

    def reached(self, epoch: int) -> bool:
        return epoch in self.whm


def regularizer_parameters(space: SearchSpace) -> frozenset[str]:
    """The regulariser's own parameters: those whose `when:` names `regularizer`, or names one of
    these (a parameter exists only where its parent does; parents are declared first)."""
    own: set[str] = set()
    for p in space.parameters:
        if any(name == "regularizer" or name in own for name, _ in p.when):
            own.add(p.name)
    return frozenset(own)


def params_key(params: Mapping[str, Any]) -> str:
    """A canonical key of a parameter dict (1, 1.0 and True stay distinct)."""
    return json.dumps({k: [type(v).__name__, repr(v)] for k, v in params.items()}, sort_keys=True)


def result_key(result: Mapping | None) -> tuple[str, int] | None:
    """(config id, UNTIL) from a result's config: Tune flattens it to `config/__config__`."""
    if not result:
        return None
    nested = result.get("config") if isinstance(result.get("config"), Mapping) else {}
    for source, prefix in ((result, ""), (result, "config/"), (nested, "")):
        config_id, until = source.get(prefix + CONFIG_ID), source.get(prefix + UNTIL)
        if config_id is not None and until is not None:
            return str(config_id), int(until)
    return None


class ConfigBook:
    """Config ids, matched baselines and the results seen, shared by every searcher here.

    Ids are handed out in the order configurations are added, so they depend only on the order the
    sampler proposes, and the book is pickled with the searcher: no id is reused after a restore."""

    def __init__(self, space: SearchSpace, epochs: int) -> None:
        self.epochs = epochs
        self.matched = space.baseline == "matched"
        self.own = regularizer_parameters(space)
        self.configs: dict[str, Configuration] = {}
        self._baselines: dict[str, str] = {}  # params_key -> baseline id
        self._counts = {"searched": 0, "baseline": 0}

    def __getitem__(self, config_id: str) -> Configuration:
        return self.configs[config_id]

    def __contains__(self, config_id: object) -> bool:
        return config_id in self.configs

    def baseline_params(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The matched baseline's parameters, or None where `params` needs none."""
        if not self.matched or params.get("regularizer", NO_REGULARIZER) == NO_REGULARIZER:
            return None
        return {k: NO_REGULARIZER if k == "regularizer" else v for k, v in params.items() if k not in self.own}

    def add_searched(self, params: Mapping[str, Any], *, generation: int = 0,
                     optuna_key: Any = None) -> list[Configuration]:
        """Add a configuration the sampler proposed; returns [its new baseline, if one was created,
        then the configuration]."""
        added = []
        baseline_id = None
        wanted = self.baseline_params(params)
        if wanted is not None:
            key = params_key(wanted)
            if key not in self._baselines:
                baseline = self._new("baseline", wanted, generation=generation)
                self._baselines[key] = baseline.id
                added.append(baseline)
            baseline_id = self._baselines[key]
        added.append(self._new("searched", dict(params), generation=generation, baseline=baseline_id,
                               optuna_key=optuna_key))
        return added

    def add_grid(self, points: list[dict[str, Any]]) -> list[Configuration]:
        """Every distinct grid point once, in grid order, each baseline just before the first point
        that needs it. A point that is another point's matched baseline runs as that baseline."""
        distinct = list({params_key(p): p for p in points}.values())
        serving = {params_key(b) for b in map(self.baseline_params, distinct) if b is not None}
        added = []
        for point in distinct:
            if params_key(point) not in serving:
                added += self.add_searched(point)
        return added

    def dependents(self, baseline_id: str) -> list[Configuration]:
        return [c for c in self.configs.values() if c.baseline == baseline_id]

    def record(self, config_id: str, result: Mapping | None) -> None:
        """Keep the epoch's whm from a result (a re-sent result overwrites the same value)."""
        if not result or config_id not in self.configs:
            return
        epoch, whm = result.get("epoch"), result.get(METRIC)
        if epoch is None or whm is None:
            return
        self.configs[config_id].whm[int(epoch)] = float(whm)

    def decisions(self, rungs: tuple[int, ...]) -> dict[str, dict[str, Any]]:
        """Per config id: role, baseline, generation, params, `until` (the highest UNTIL it was given),
        `rungs` (the rung epochs it has a result at), `last_epoch`, `stopped_at` (the epoch a scheduler
        stopped it at, None if not stopped) and `status`: completed | stopped | errored | pending."""
        table = {}
        for config in self.configs.values():
            last = max(config.whm, default=None)
            if config.errored:
                status = "errored"
            elif last is not None and last >= self.epochs:
                status = "completed"
            elif config.stopped_at is not None:
                status = "stopped"
            else:
                status = "pending"
            table[config.id] = {
                "role": config.role, "baseline": config.baseline, "generation": config.generation,
                "params": dict(config.params), "until": config.until,
                "rungs": [epoch for epoch in rungs if epoch in config.whm], "last_epoch": last,
                "stopped_at": config.stopped_at, "status": status,
            }
        return table

    def _new(self, role: Literal["searched", "baseline"], params: dict[str, Any], **fields: Any) -> Configuration:
        prefix = "c" if role == "searched" else "b"
        config = Configuration(id=f"{prefix}{self._counts[role]:04d}", role=role, params=params, **fields)
        self._counts[role] += 1
        self.configs[config.id] = config
        return config


class BookSearcher(Searcher):
    """A searcher over a ConfigBook: trial id -> config id, results recorded per epoch, errors and
    early stops marked, decisions, and save/restore of the whole state. As is, every trial runs to
    `budget.epochs` (the ASHA mode); SyncHalvingSearcher replaces the trial bookkeeping with rungs."""

    def __init__(self, space: SearchSpace, budget: Budget) -> None:
        super().__init__(metric=METRIC, mode="max")
        self.book = ConfigBook(space, budget.epochs)
        self.rungs = budget.rungs()
        self._queue: list[str] = []  # config ids to suggest next
        self._trials: dict[str, str] = {}  # trial id -> config id

    def _issue(self, trial_id: str, config_id: str) -> dict[str, Any]:
        config = self.book[config_id]
        config.until = self.book.epochs
        self._trials[trial_id] = config_id
        return config.suggestion(self.book.epochs)

    def _config_of(self, trial_id: str, result: Mapping | None) -> str | None:
        if trial_id in self._trials:
            return self._trials[trial_id]
        key = result_key(result)  # a trial re-run after a restore that this state never saw suggested
        if key is not None and key[0] in self.book:
            self._trials[trial_id] = key[0]
            return key[0]
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        config_id = self._config_of(trial_id, result)
        if config_id is not None:
            self.book.record(config_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        config_id = self._config_of(trial_id, result)
        if config_id is None:
            logger.warning("completion of trial %s, which carries no known config id; ignored", trial_id)
            return
        self.book.record(config_id, result)
        config = self.book[config_id]
        last = max(config.whm, default=0)
        if error and last < config.until:
            config.errored = True
        elif not error and last < config.until:
            config.stopped_at = last or None  # stopped by ASHA (or by Tune at the study's end)
        self._completed(config, result, error)

    def _completed(self, config: Configuration, result: dict | None, error: bool) -> None:
        """Hook for the sampler; called once per completion (possibly twice after a restore)."""

    def decisions(self) -> dict[str, dict[str, Any]]:
        return self.book.decisions(self.rungs)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump({"state": self._state(), "decisions": self.decisions()}, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self._set_state(pickle.load(handle)["state"])  # our own file, written by save() above

    def _state(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def _set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class GridSearcher(BookSearcher):
    """Every distinct grid point once (baselines included, see ConfigBook.add_grid), then finishes.
    Its position is checkpointed, so a resumed study continues the grid where it stopped."""

    def __init__(self, space: SearchSpace, budget: Budget) -> None:
        super().__init__(space, budget)
        self._queue = [config.id for config in self.book.add_grid(grid_points(space))]

    @property
    def size(self) -> int:
        return len(self.book.configs)

    def suggest(self, trial_id: str) -> dict | None:
        if not self._queue:
            return Searcher.FINISHED
        return self._issue(trial_id, self._queue.pop(0))


class MatchedSearcher(BookSearcher):
    """Optuna proposes `num_samples` configurations (OptunaSearch, define-by-run); each one with a
    regulariser is followed by its matched baseline when that baseline is new. Only proposals are
    told to Optuna, once each, with the result Tune hands over (ASHA's last epoch for a stopped one).
    Intermediate results are not passed on: OptunaSearch keys them by Tune's `training_iteration`,
    which restarts after a restore, and no Optuna pruner reads them here."""

    def __init__(self, space: SearchSpace, budget: Budget) -> None:
        super().__init__(space, budget)
        if budget.num_samples is None:
            raise ValueError(f"{space.path}: `sampler: tpe` needs the budget's `num_samples`")
        self.num_samples = budget.num_samples
        self._optuna = OptunaSearch(space=define_by_run(space), metric=METRIC, mode="max", seed=space.optuna_seed)
        self._told: set[str] = set()

    def suggest(self, trial_id: str) -> dict | None:
        if self._queue:
            return self._issue(trial_id, self._queue.pop(0))
        proposed = sum(c.role == "searched" for c in self.book.configs.values())
        if proposed >= self.num_samples:
            return Searcher.FINISHED
        params = self._optuna.suggest(trial_id)
        if params is None or params == Searcher.FINISHED:
            return params
        *baseline, config = self.book.add_searched(params, optuna_key=trial_id)
        self._queue += [b.id for b in baseline]
        return self._issue(trial_id, config.id)

    def _completed(self, config: Configuration, result: dict | None, error: bool) -> None:
        if config.role != "searched" or config.id in self._told:
            return
        self._told.add(config.id)
        # under the trial id Optuna knows, even if this completion came under another one after a
        # restore; failed when it errored before its last epoch, as the sync scheduler tells it
        self._optuna.on_trial_complete(config.optuna_key, result=None if config.errored else result,
                                       error=config.errored)

    def _state(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k != "_optuna"}
        with tempfile.TemporaryDirectory() as directory:
            inner = os.path.join(directory, "optuna.pkl")
            self._optuna.save(inner)
            with open(inner, "rb") as handle:
                state["_optuna_bytes"] = handle.read()
        return state

    def _set_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        with tempfile.TemporaryDirectory() as directory:
            inner = os.path.join(directory, "optuna.pkl")
            with open(inner, "wb") as handle:
                handle.write(state.pop("_optuna_bytes"))
            self._optuna.restore(inner)
        self.__dict__.update(state)


class MatchedASHAScheduler(ASHAScheduler):
    """ASHA on the searched configurations only: a matched baseline (ROLE "baseline") is never stopped
    and never enters a rung's cutoff, so it does not compete and has a result at every epoch."""

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if (getattr(trial, "config", None) or {}).get(ROLE) != "baseline":
            return super().on_trial_result(tune_controller, trial, result)
        at_end = result.get(self._time_attr, 0) >= self._max_t
        return TrialScheduler.STOP if at_end else TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if (getattr(trial, "config", None) or {}).get(ROLE) == "baseline":
            self._trial_info.pop(trial.trial_id, None)
            return
        super().on_trial_complete(tune_controller, trial, result)


def build_search(space: SearchSpace, budget: Budget,
                 scheduler: Literal["asha", "sync"] = "asha") -> tuple[Searcher, TrialScheduler, int]:
    """Searcher, Tune scheduler, and the number of Tune trials to pass as `num_samples`: exact for a
    grid with ASHA, otherwise an upper bound (how many baselines a sampler's proposals need, and how
    far the halving keeps them, is known only as results arrive); the searcher returns
    `Searcher.FINISHED` when done, which ends the study.

    `sampler: grid` runs every distinct combination once (Optuna's BruteForceSampler calls
    `Study.stop` when exhausted, which raises under the ask-and-tell interface Tune drives it with;
    Tune's own grid_search cannot express conditional parameters)."""
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; use one of {list(SCHEDULERS)}")
    if space.sampler == "tpe" and budget.num_samples is None:
        raise ValueError(f"{space.path}: `sampler: tpe` needs the budget's `num_samples` (configurations to propose)")
    if scheduler == "sync":
        from study.scheduling import SyncHalvingSearcher  # scheduling.py imports this module

        searcher = SyncHalvingSearcher(space, budget)
        return searcher, FIFOScheduler(), searcher.trial_bound()
    asha = MatchedASHAScheduler(
        time_attr="epoch", metric=METRIC, mode="max", max_t=budget.epochs,
        grace_period=min(budget.grace_period, budget.epochs), reduction_factor=budget.reduction_factor,
    )
    if space.sampler == "grid":
        grid = GridSearcher(space, budget)
        return grid, asha, grid.size
    matched = MatchedSearcher(space, budget)
    return matched, asha, budget.num_samples * (2 if matched.book.matched else 1)


def load_decisions(experiment_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """What the scheduler decided, per config id (see ConfigBook.decisions), from the newest searcher
    checkpoint Tune wrote in a study directory; {} if there is none."""
    paths = glob.glob(os.path.join(os.fspath(experiment_dir), Searcher.CKPT_FILE_TMPL.format("*")))
    if not paths:
        return {}
    with open(max(paths), "rb") as handle:  # the file Tune restores from: the latest session's
        return pickle.load(handle)["decisions"]  # our own file, written by a searcher's save()


def generation_sizes(total: int, size: int | None) -> list[int]:
    """Configurations per generation: `size` each, the last one what remains."""
    size = size or total
    return [min(size, total - start) for start in range(0, total, size)]


def halving_counts(n: int, rungs: int, eta: int) -> list[int]:
    """Configurations given a trial at each rung when none fails: n, ceil(n / eta), ... (at least 1)."""
    counts = [n]
    while len(counts) < rungs:
        counts.append(max(1, math.ceil(counts[-1] / eta)))
    return counts
