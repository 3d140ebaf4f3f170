"""Synchronous successive halving as a Tune searcher: stop decisions that depend only on the results,
never on the order they arrive in, so two runs of a study decide the same (issue 9, item 2).

Nothing is paused (a Train-inside-Tune trial cannot be paused reliably). Instead a configuration
trains in continuation trials: a trial with UNTIL = rung r trains it to that epoch and ends; the
next trial with the same config id and UNTIL = rung r + 1 resumes its Train run from the checkpoint.

For each generation of `budget.generation_size` configurations (a grid: all points, one generation):
1. ask the sampler for all of them up front and suggest each with UNTIL = rungs[0];
2. `suggest` returns None while any trial of the rung is unfinished (Tune asks again later);
3. when every trial of the rung has completed or errored, rank the configurations that reached it by
   whm at the rung epoch (ties by config id), keep the top max(1, ceil(n / eta)) of the n given a
   trial at the rung, suggest their continuation trials, and record the rest as stopped there;
4. after the last rung, tell Optuna every proposal's value in config-id order (a stopped one's whm at
   its last rung; an errored one, or one without any result, as failed), then the next generation.

Matched baselines ride along without competing: a baseline gets a continuation trial whenever a
configuration pointing at it is given a higher UNTIL than the baseline has had (across generations
too), and it is not ranked. The barrier of step 2 waits for baselines as well, so no two trials of
one configuration ever run at once.
"""
from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.samplers import TPESampler
from optuna.trial import TrialState
from ray.tune.search import Searcher

from study.search import BookSearcher, Configuration, generation_sizes, halving_counts, result_key
from study.space import Budget, SearchSpace, define_by_run, grid_points

__all__ = ["SyncHalvingSearcher"]


class SyncHalvingSearcher(BookSearcher):
    """See the module docstring. `decisions()` is ConfigBook.decisions; `rung_log` lists each rung's
    decision: generation, epoch, kept, stopped and lost (given a trial, no result at the rung) config ids."""

    def __init__(self, space: SearchSpace, budget: Budget) -> None:
        super().__init__(space, budget)
        self.eta = budget.reduction_factor
        self.grid = space.sampler == "grid"
        self._define = define_by_run(space)
        self._study = None
        if self.grid:
            self.book.add_grid(grid_points(space))
            total = sum(c.role == "searched" for c in self.book.configs.values())
            self._sizes = [total]
        else:
            if budget.num_samples is None:
                raise ValueError(f"{space.path}: `sampler: tpe` needs the budget's `num_samples`")
            self._study = optuna.create_study(direction="maximize", sampler=TPESampler(seed=space.optuna_seed))
            self._sizes = generation_sizes(budget.num_samples, budget.generation_size)
        self._generation = -1
        self._members: list[str] = []  # searched config ids of the current generation, in id order
        self._rung: int | None = None  # index into self.rungs of the rung being trained; None between generations
        self._pending: list[tuple[str, int]] = []  # (config id, until) still to suggest, in order
        self._issued: dict[tuple[str, int], str] = {}  # (config id, until) -> trial id
        self._keys: dict[str, tuple[str, int]] = {}  # trial id -> (config id, until)
        self._done: set[tuple[str, int]] = set()
        self._finished = False
        self.rung_log: list[dict[str, Any]] = []

    def trial_bound(self) -> int:
        """Trials this searcher can suggest at most (exact for the searched ones when none fails)."""
        baselines = sum(c.role == "baseline" for c in self.book.configs.values())  # a grid's, planned
        total = 0
        for size in self._sizes:
            counts = halving_counts(size, len(self.rungs), self.eta)
            total += sum(counts)
            if self.book.matched:  # at most one baseline trial per searched trial of a rung
                total += sum(min(n, baselines if self.grid else n) for n in counts)
        return total

    # ---- Tune's side
    def suggest(self, trial_id: str) -> dict | None:
        while not self._pending:
            if self._finished:
                return Searcher.FINISHED
            if any(key not in self._done for key in self._issued):
                return None  # the rung's barrier: Tune asks again after the next completion
            self._advance()
        key = self._pending.pop(0)
        self._issued[key], self._keys[trial_id] = trial_id, key
        return self.book[key[0]].suggestion(key[1])

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        key = self._key_of(trial_id, result)
        if key is not None:
            self.book.record(key[0], result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        key = self._key_of(trial_id, result)
        if key is None:
            return  # not ours (or an error without a result for a trial this state never suggested)
        config_id, until = key
        self.book.record(config_id, result)
        config = self.book[config_id]
        if error and not config.reached(until):
            config.errored = True
        self._done.add(key)

    def _key_of(self, trial_id: str, result: dict | None) -> tuple[str, int] | None:
        """The (config id, until) of a trial: by its id, or, for a trial re-run after a restore under an
        id this state never suggested, by the control keys in its config."""
        if trial_id in self._keys:
            return self._keys[trial_id]
        key = result_key(result)
        if key is None or key[0] not in self.book:
            return None
        if key in self._pending:  # suggested in a snapshot newer than ours: adopt it, do not suggest it again
            self._pending.remove(key)
            self._issued[key] = trial_id
        if key in self._issued:
            self._keys[trial_id] = key
            return key
        self.book.record(key[0], result)  # an old trial of a known configuration: keep its epochs only
        return None

    # ---- the schedule
    def _advance(self) -> None:
        """Called when every issued trial is done: decide the rung, or end the generation, or start the next."""
        if self._rung is not None:
            kept = self._decide()
            if kept:
                self._rung += 1
                self._schedule(kept, self.rungs[self._rung])
                return
            self._end_generation()
        if self._generation + 1 >= len(self._sizes):
            self._finished = True
            return
        self._start_generation()

    def _start_generation(self) -> None:
        self._generation += 1
        if self.grid:
            self._members = [c.id for c in self.book.configs.values() if c.role == "searched"]
        else:
            self._members = []
            for _ in range(self._sizes[self._generation]):
                trial = self._study.ask()
                fixed = self._define(trial)  # suggests the sampled parameters on `trial`
                params = {**trial.params, **fixed}
                *_, config = self.book.add_searched(params, generation=self._generation, optuna_key=trial.number)
                self._members.append(config.id)
        self._rung = 0
        self._schedule(self._members, self.rungs[0])

    def _schedule(self, config_ids: list[str], until: int) -> None:
        """Continuation (or first) trials to `until`, each configuration's baseline just before it
        where the baseline has not been given `until` yet."""
        for config_id in sorted(config_ids):
            config = self.book[config_id]
            baseline = self.book[config.baseline] if config.baseline else None
            if baseline is not None and baseline.until < until and self._can_continue(baseline):
                self._queue_trial(baseline, until)
            self._queue_trial(config, until)

    def _can_continue(self, config: Configuration) -> bool:
        return not config.errored and (config.until == 0 or config.reached(config.until))

    def _queue_trial(self, config: Configuration, until: int) -> None:
        config.until, config.stopped_at = until, None
        self._pending.append((config.id, until))

    def _decide(self) -> list[str]:
        """Rank the configurations given a trial at this rung; return the kept ones (none after the last rung)."""
        epoch = self.rungs[self._rung]
        alive = [c for c in self._members if self.book[c].until == epoch]
        reached = [c for c in alive if self.book[c].reached(epoch)]
        last = self._rung == len(self.rungs) - 1
        keep = len(reached) if last else max(1, math.ceil(len(alive) / self.eta))

        def rank(config_id: str) -> tuple:
            whm = self.book[config_id].whm[epoch]
            return (math.isnan(whm), -whm, config_id)

        ranked = sorted(reached, key=rank)
        kept, stopped = sorted(ranked[:keep]), ranked[keep:]
        for config_id in stopped:
            self.book[config_id].stopped_at = epoch
        self.rung_log.append({"generation": self._generation, "epoch": epoch, "kept": kept,
                              "stopped": sorted(stopped), "lost": [c for c in alive if c not in reached]})
        return [] if last else kept

    def _end_generation(self) -> None:
        members = [self.book[c] for c in self._members]
        for baseline in (self.book[b] for b in sorted({c.baseline for c in members if c.baseline})):
            if baseline.until < self.book.epochs and baseline.reached(baseline.until):
                baseline.stopped_at = baseline.until  # no configuration needs it further (for now)
        if self._study is not None:
            for config in members:  # config-id order
                value = self._value(config)
                if value is None:
                    self._study.tell(config.optuna_key, state=TrialState.FAIL)
                else:
                    self._study.tell(config.optuna_key, value)
        self._members, self._rung = [], None

    def _value(self, config: Configuration) -> float | None:
        """What Optuna learns of a configuration: its whm at the last rung it reached."""
        if config.errored:
            return None
        at_rungs = [epoch for epoch in self.rungs if config.reached(epoch)]
        if not at_rungs:
            return None
        value = config.whm[at_rungs[-1]]
        return value if math.isfinite(value) else None

    def optuna_study(self) -> optuna.Study | None:
        return self._study

