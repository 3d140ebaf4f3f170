"""The searchers of study/search.py and study/scheduling.py, driven as Tune drives them but without
Ray: `suggest`, `on_trial_result` and `on_trial_complete` called directly, with a whm that is a
function of the configuration. Checks config ids, matched baselines, the synchronous halving's exact
decisions and their independence of arrival order, and save -> restore in the middle of a rung."""
from __future__ import annotations

import hashlib
import random
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import optuna
import pytest
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from study.scheduling import SyncHalvingSearcher
from study.search import (ConfigBook, MatchedASHAScheduler, MatchedSearcher, build_search, load_decisions,
                          regularizer_parameters)
from study.space import Budget, grid_points, load_space
from study.trial_config import BASELINE_OF, CONFIG_ID, CONTROL_KEYS, ROLE, UNTIL

optuna.logging.set_verbosity(optuna.logging.WARNING)

HALVING = dict(epochs=4, grace_period=1, reduction_factor=2)  # rungs (1, 2, 4)
MAX_EVENTS = 2_000  # every driven study here needs far fewer; a bug that loops fails, it does not hang


def hyperparameters(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in CONTROL_KEYS}


def hashed_whm(config: dict, epoch: int) -> float:
    """A whm in [0, 1.04) fixed by the hyperparameters (a baseline scores like its own parameters)."""
    digest = hashlib.sha256(repr(sorted(hyperparameters(config).items())).encode()).hexdigest()
    return int(digest[:8], 16) / 16**8 + 0.01 * epoch


class FakeTune:
    """Drives a searcher as Tune does: asks for trials until it gets None (or FINISHED), then advances
    one running trial by one epoch (which one: `rng`, else the oldest), reporting each epoch and
    completing the trial at its UNTIL. Results carry the flattened config, as Tune's do."""

    def __init__(self, searcher: Searcher, whm: Callable[[dict, int], float] = hashed_whm, *,
                 rng: random.Random | None = None, fail: set[tuple[str, int]] = frozenset()) -> None:
        self.searcher, self.whm, self.rng, self.fail = searcher, whm, rng, set(fail)
        self.suggestions: list[tuple[str, dict]] = []  # (trial id, config), in suggestion order
        self.running: dict[str, list] = {}  # trial id -> [config, next epoch]
        self.epoch_of: dict[str, int] = {}  # config id -> epochs trained so far
        self.finished, self.events = False, 0

    def result(self, config: dict, epoch: int) -> dict[str, Any]:
        return {"epoch": epoch, "whm": self.whm(config, epoch),
                **{f"config/{k}": v for k, v in config.items()}}

    def ask(self) -> None:
        while not self.finished:
            trial_id = f"t{len(self.suggestions):04d}"
            config = self.searcher.suggest(trial_id)
            if config is None:
                return
            if config == Searcher.FINISHED:
                self.finished = True
                return
            self.suggestions.append((trial_id, config))
            self.running[trial_id] = [config, self.epoch_of.get(config[CONFIG_ID], 0) + 1]

    def step(self) -> None:
        self.events += 1
        assert self.events < MAX_EVENTS, "the searcher neither finished nor progressed"
        trial_ids = sorted(self.running)
        trial_id = self.rng.choice(trial_ids) if self.rng else trial_ids[0]
        config, epoch = self.running[trial_id]
        key = (config[CONFIG_ID], config[UNTIL])
        if key in self.fail:
            del self.running[trial_id]
            self.searcher.on_trial_complete(trial_id, error=True)
            return
        if epoch <= config[UNTIL]:  # a continuation resumes where the configuration stopped
            self.searcher.on_trial_result(trial_id, self.result(config, epoch))
            self.epoch_of[config[CONFIG_ID]] = epoch
            self.running[trial_id][1] += 1
        if epoch >= config[UNTIL]:  # the trainable re-reports the last epoch when already there
            del self.running[trial_id]
            self.searcher.on_trial_complete(trial_id, result=self.result(config, config[UNTIL]))

    def run(self, until_events: int | None = None) -> "FakeTune":
        self.ask()
        while not self.finished and (until_events is None or self.events < until_events):
            assert self.running, "the searcher waits for trials that do not exist"
            self.step()
            self.ask()
        return self

    def trials(self) -> list[tuple[str, int]]:
        return [(config[CONFIG_ID], config[UNTIL]) for _, config in self.suggestions]


def ga_vs_dim(**budget: Any):
    budget = Budget(**{**HALVING, **budget})
    return load_space("ga_vs_dim").for_budget(budget), budget


def told_to_optuna(searcher: SyncHalvingSearcher) -> list[tuple[dict, str, float | None]]:
    return [(t.params, t.state.name, t.value) for t in searcher.optuna_study().trials]


# ---- the synchronous scheduler
def test_sync_halving_keeps_3_then_2_of_5() -> None:
    space, budget = ga_vs_dim(num_samples=5)
    space = replace(space, baseline="none")
    assert budget.rungs() == (1, 2, 4)
    searcher, scheduler, bound = build_search(space, budget, "sync")
    assert isinstance(searcher, SyncHalvingSearcher) and type(scheduler).__name__ == "FIFOScheduler"
    table = {1: {"c0000": 0.1, "c0001": 0.5, "c0002": 0.3, "c0003": 0.9, "c0004": 0.2},
             2: {"c0001": 0.4, "c0002": 0.8, "c0003": 0.6},  # the rung-2 order differs from rung 1's
             4: {"c0002": 0.7, "c0003": 0.75}}
    tune = FakeTune(searcher, lambda config, epoch: table.get(epoch, {}).get(config[CONFIG_ID], 0.0))

    tune.ask()
    assert tune.trials() == [(f"c000{i}", 1) for i in range(5)]
    assert searcher.suggest("extra") is None, "no continuation before the whole rung is done"
    tune.run()
    assert tune.trials() == [(f"c000{i}", 1) for i in range(5)] + [
        ("c0001", 2), ("c0002", 2), ("c0003", 2), ("c0002", 4), ("c0003", 4)]
    assert len(tune.trials()) <= bound == 5 + 3 + 2
    assert searcher.suggest("after") == Searcher.FINISHED
    first = {config[CONFIG_ID]: config for _, config in tune.suggestions[:5]}
    for _, config in tune.suggestions[5:]:  # a continuation trains the same configuration
        assert hyperparameters(config) == hyperparameters(first[config[CONFIG_ID]])
        assert config[ROLE] == "searched" and BASELINE_OF not in config

    decisions = searcher.decisions()
    assert {c: (d["status"], d["stopped_at"], d["rungs"]) for c, d in decisions.items()} == {
        "c0000": ("stopped", 1, [1]), "c0004": ("stopped", 1, [1]), "c0001": ("stopped", 2, [1, 2]),
        "c0002": ("completed", None, [1, 2, 4]), "c0003": ("completed", None, [1, 2, 4])}
    assert [(r["epoch"], r["kept"], r["stopped"]) for r in searcher.rung_log] == [
        (1, ["c0001", "c0002", "c0003"], ["c0000", "c0004"]), (2, ["c0002", "c0003"], ["c0001"]),
        (4, ["c0002", "c0003"], [])]
    # Optuna learns each proposal at the last rung it reached, in config-id order
    told = told_to_optuna(searcher)
    assert [(state, value) for _, state, value in told] == [
        ("COMPLETE", 0.1), ("COMPLETE", 0.4), ("COMPLETE", 0.7), ("COMPLETE", 0.75), ("COMPLETE", 0.2)]
    assert [params for params, _, _ in told] == [hyperparameters(first[f"c000{i}"]) for i in range(5)]


def test_sync_decisions_do_not_depend_on_arrival_order() -> None:
    space, budget = ga_vs_dim(num_samples=8, generation_size=4)
    runs = []
    for rng in (None, random.Random(0), random.Random(1)):
        searcher = build_search(space, budget, "sync")[0]
        tune = FakeTune(searcher, rng=rng).run()
        runs.append((tune.suggestions, searcher.decisions(), searcher.rung_log, told_to_optuna(searcher)))
    assert runs[0] == runs[1] == runs[2]
    assert any(d["status"] == "stopped" for d in runs[0][1].values()), "the halving stopped something"


def test_sync_errored_configuration_is_dropped_and_failed_in_optuna() -> None:
    space, budget = ga_vs_dim(num_samples=5)
    space = replace(space, baseline="none")
    searcher = build_search(space, budget, "sync")[0]
    tune = FakeTune(searcher, fail={("c0002", 1)}).run()
    assert all(config_id != "c0002" for config_id, until in tune.trials() if until > 1)
    assert sum(until == 2 for _, until in tune.trials()) == 3, "keeps ceil(5 / 2) of the 4 that reached rung 1"
    assert searcher.decisions()["c0002"]["status"] == "errored"
    assert told_to_optuna(searcher)[2][1:] == ("FAIL", None)


# ---- matched baselines
def test_config_book_shares_one_baseline_per_distinct_parameters() -> None:
    space, budget = ga_vs_dim(num_samples=5)
    assert regularizer_parameters(space) == {"ga_strength", "ga_noise", "dim_weight"}
    book = ConfigBook(space, budget.epochs)
    ga = {"composer": "tirg", "regularizer": "ga", "ga_strength": 0.01, "ga_noise": 0.001, "K": 8}
    dim = {"composer": "tirg", "regularizer": "dim", "dim_weight": 0.1, "K": 8}
    plain = {"composer": "tirg", "regularizer": "none", "K": 8}
    other = {**ga, "composer": "concat"}
    added = [[(c.id, c.role, c.baseline) for c in book.add_searched(p)] for p in (ga, dim, plain, other)]
    assert added == [[("b0000", "baseline", None), ("c0000", "searched", "b0000")],
                     [("c0001", "searched", "b0000")],
                     [("c0002", "searched", None)],  # equals b0000's parameters: run, but no baseline of its own
                     [("b0001", "baseline", None), ("c0003", "searched", "b0001")]]
    assert book["b0000"].params == plain and book["b0001"].params == {**plain, "composer": "concat"}
    # a parameter conditional on one of the regulariser's own is the regulariser's too
    cmap = load_space("cmap_temperature")
    nested = replace(cmap, parameters=(
        replace(cmap.parameters[0], name="regularizer", values=("none", "cmap")),
        *(replace(p, when=p.when or (("regularizer", "cmap"),)) for p in cmap.parameters[1:] if p.name != "K")))
    assert regularizer_parameters(nested) == {"sc_mode", "sc_temperature", "cmap_weight"}


def test_sync_baselines_are_shared_ride_along_and_are_never_told_to_optuna() -> None:
    space, budget = ga_vs_dim(num_samples=12, generation_size=6)
    assert space.baseline == "matched"
    searcher, _, bound = build_search(space, budget, "sync")
    tune = FakeTune(searcher, rng=random.Random(3)).run()
    assert len(tune.suggestions) <= bound
    configs = {config[CONFIG_ID]: config for _, config in tune.suggestions}
    searched = {c: config for c, config in configs.items() if config[ROLE] == "searched"}
    baselines = {c: config for c, config in configs.items() if config[ROLE] == "baseline"}
    assert sorted(searched) == [f"c{i:04d}" for i in range(12)] and all(c.startswith("b") for c in baselines)
    own = regularizer_parameters(space)
    for config in searched.values():
        if config["regularizer"] == "none":
            assert BASELINE_OF not in config
            continue
        expected = {k: "none" if k == "regularizer" else v for k, v in hyperparameters(config).items() if k not in own}
        assert hyperparameters(baselines[config[BASELINE_OF]]) == expected
    distinct = [repr(sorted(hyperparameters(c).items())) for c in baselines.values()]
    assert len(set(distinct)) == len(distinct), "one baseline per distinct parameter dict"
    users = [config[BASELINE_OF] for config in searched.values() if BASELINE_OF in config]
    assert max(users.count(b) for b in baselines) >= 2, "some baseline is shared"
    assert set(users) == set(baselines)

    # each configuration's UNTILs rise; a baseline reaches the highest UNTIL of those pointing at it,
    # and is suggested before a dependent at each UNTIL it is given
    untils: dict[str, list[int]] = {}
    for position, (config_id, until) in enumerate(tune.trials()):
        untils.setdefault(config_id, []).append(until)
        if config_id in searched and BASELINE_OF in configs[config_id]:
            baseline = configs[config_id][BASELINE_OF]
            assert any(b == baseline and u >= until for b, u in tune.trials()[:position])
    assert all(u == sorted(set(u)) for u in untils.values())
    for baseline in baselines:
        assert max(untils[baseline]) == max(max(untils[c]) for c in searched if configs[c].get(BASELINE_OF) == baseline)

    told = told_to_optuna(searcher)
    assert len(told) == 12 and all(state == "COMPLETE" for _, state, _ in told)
    assert [params for params, _, _ in told] == [hyperparameters(searched[c]) for c in sorted(searched)]


# ---- save and restore
@pytest.mark.parametrize("snapshot_after", [3, 17])
def test_sync_restore_mid_rung_continues_like_an_uninterrupted_run(tmp_path: Path, snapshot_after: int) -> None:
    space, budget = ga_vs_dim(num_samples=8, generation_size=4)
    uninterrupted = build_search(space, budget, "sync")[0]
    whole = FakeTune(uninterrupted, rng=random.Random(5)).run()

    tune = FakeTune(build_search(space, budget, "sync")[0], rng=random.Random(5)).run(until_events=snapshot_after)
    keys = tune.searcher._issued
    assert tune.running and any(key in tune.searcher._done for key in keys), "the snapshot is mid-rung"
    path = tmp_path / "searcher-state.pkl"
    tune.searcher.save(str(path))
    restored = build_search(space, budget, "sync")[0]
    restored.restore(str(path))
    tune.searcher = restored
    # what Tune does after a restore: trials in flight re-run from their start (same id, same config),
    # and a completion may arrive twice or under a trial id the restored state never suggested
    for trial_id in tune.running:
        config = tune.running[trial_id][0]
        tune.running[trial_id][1] = tune.epoch_of.get(config[CONFIG_ID], 0) + 1
    done_id, done_config = next((t, c) for t, c in tune.suggestions if t not in tune.running)
    restored.on_trial_complete(done_id, result=tune.result(done_config, done_config[UNTIL]))
    restored.on_trial_complete("unknown", result=tune.result(done_config, done_config[UNTIL]))
    restored.on_trial_result("unknown", tune.result(done_config, done_config[UNTIL]))
    restored.on_trial_complete("stranger", result={"epoch": 1, "whm": 0.5})
    tune.run()

    assert tune.suggestions == whole.suggestions, "same ids, same configurations, same continuations"
    assert restored.decisions() == uninterrupted.decisions()
    assert restored.rung_log == uninterrupted.rung_log
    assert told_to_optuna(restored) == told_to_optuna(uninterrupted)


def test_load_decisions_reads_the_newest_searcher_checkpoint(tmp_path: Path) -> None:
    space, budget = ga_vs_dim(num_samples=5)
    searcher = build_search(space, budget, "sync")[0]
    FakeTune(searcher).run()
    searcher.save_to_dir(str(tmp_path), session_str="2026-12-01_10-00-00")
    assert load_decisions(tmp_path) == searcher.decisions()
    assert load_decisions(tmp_path / "nothing") == {}


# ---- the ASHA mode
def test_asha_mode_carries_config_ids_and_baselines_and_restores(tmp_path: Path) -> None:
    space, budget = ga_vs_dim(num_samples=5)
    searcher, scheduler, bound = build_search(space, budget, "asha")
    assert isinstance(searcher, MatchedSearcher) and isinstance(scheduler, MatchedASHAScheduler)
    assert (scheduler._time_attr, scheduler._metric, scheduler._max_t, scheduler._reduction_factor) == ("epoch", "whm", 4, 2)
    assert [milestone for milestone, _ in scheduler._brackets[0]._rungs][::-1] == list(budget.rungs())

    whole = [searcher.suggest(f"t{i}") for i in range(12)]
    assert whole[-1] == Searcher.FINISHED
    whole = whole[:whole.index(Searcher.FINISHED)]
    assert len(whole) <= bound == 10
    assert [c[CONFIG_ID] for c in whole if c[ROLE] == "searched"] == [f"c000{i}" for i in range(5)]
    assert all(config[UNTIL] == budget.epochs for config in whole)
    for position, config in enumerate(whole):
        if config[ROLE] == "baseline":  # right after the first configuration that needs it
            assert whole[position - 1][BASELINE_OF] == config[CONFIG_ID]
        elif config["regularizer"] != "none":
            assert any(b[CONFIG_ID] == config[BASELINE_OF] for b in whole)

    # interrupted after 3 suggestions, restored: the same suggestions follow, no id is reused
    partial = build_search(space, budget, "asha")[0]
    first = [partial.suggest(f"t{i}") for i in range(3)]
    partial.save(str(tmp_path / "state.pkl"))
    restored = build_search(space, budget, "asha")[0]
    restored.restore(str(tmp_path / "state.pkl"))
    rest = [restored.suggest(f"t{i}") for i in range(3, len(whole) + 1)]
    assert first + rest[:-1] == whole and rest[-1] == Searcher.FINISHED

    # completions: only proposals reach Optuna, once each, also when re-sent after a restore
    for i, config in enumerate(whole):
        stop = 2 if config[CONFIG_ID] == "c0001" else 4  # c0001 stopped by ASHA at epoch 2
        result = {"epoch": stop, "whm": hashed_whm(config, stop), **{f"config/{k}": v for k, v in config.items()}}
        if config[CONFIG_ID] == "c0002":  # Tune passes no result with an error
            restored.on_trial_result(f"t{i}", {**result, "epoch": 1})
            restored.on_trial_complete(f"t{i}", error=True)
            continue
        restored.on_trial_complete(f"t{i}", result=result)
        restored.on_trial_complete(f"again{i}", result=result)
    told = [(t.state.name, t.value) for t in restored._optuna._ot_study.trials]
    assert len(told) == 5 and [state for state, _ in told] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    decisions = restored.decisions()
    assert decisions["c0001"]["status"] == "stopped" and decisions["c0001"]["stopped_at"] == 2
    assert decisions["c0002"]["status"] == "errored" and decisions["c0000"]["status"] == "completed"


def test_asha_scheduler_leaves_baselines_alone() -> None:
    scheduler = MatchedASHAScheduler(time_attr="epoch", metric="whm", mode="max", max_t=4, grace_period=1,
                                     reduction_factor=2)
    trials = {name: SimpleNamespace(trial_id=name, config={ROLE: role})
              for name, role in (("a", "searched"), ("b", "searched"), ("base", "baseline"), ("weak", "searched"))}
    for trial in trials.values():
        scheduler.on_trial_add(None, trial)

    def report(name: str, epoch: int, whm: float) -> str:
        return scheduler.on_trial_result(None, trials[name], {"epoch": epoch, "whm": whm})

    assert report("a", 1, 0.9) == report("b", 1, 0.95) == TrialScheduler.CONTINUE
    assert report("base", 1, 0.0) == TrialScheduler.CONTINUE, "a baseline does not compete"
    assert report("weak", 1, 0.1) == TrialScheduler.STOP
    assert report("base", 4, 0.0) == TrialScheduler.STOP  # max_t still ends it
    assert all("base" not in recorded for _, recorded in scheduler._brackets[0]._rungs)
    scheduler.on_trial_complete(None, trials["base"], {"epoch": 4, "whm": 0.0})


# ---- grids
@pytest.mark.parametrize("scheduler", ["asha", "sync"])
def test_grid_runs_every_distinct_point_once(scheduler: str) -> None:
    budget = Budget(**HALVING)
    space = load_space("regularizer_grid").for_budget(budget)
    searcher, _, bound = build_search(space, budget, scheduler)
    tune = FakeTune(searcher, rng=random.Random(2)).run()
    first = {}
    for _, config in tune.suggestions:
        first.setdefault(config[CONFIG_ID], config)
    points = grid_points(space)
    assert len(points) == 18
    assert sorted(repr(sorted(hyperparameters(c).items())) for c in first.values()) == \
        sorted(repr(sorted(p.items())) for p in points)
    baselines = {c: config for c, config in first.items() if config[ROLE] == "baseline"}
    assert sorted(config["composer"] for config in baselines.values()) == ["concat", "tirg"]
    assert all(config["regularizer"] == "none" for config in baselines.values())
    for config in first.values():
        if config[ROLE] == "searched":
            assert baselines[config[BASELINE_OF]]["composer"] == config["composer"]
    assert len(tune.suggestions) <= bound
    if scheduler == "asha":
        assert len(tune.suggestions) == bound == 18
    else:  # the grid's baselines ride along as far as their configurations go
        untils = {}
        for config_id, until in tune.trials():
            untils[config_id] = max(untils.get(config_id, 0), until)
        for baseline in baselines:
            assert untils[baseline] == max(u for c, u in untils.items() if first[c].get(BASELINE_OF) == baseline)


def test_build_search_names_the_schedulers() -> None:
    space, budget = ga_vs_dim(num_samples=5)
    with pytest.raises(ValueError, match=r"unknown scheduler 'fast'; use one of \['asha', 'sync'\]"):
        build_search(space, budget, "fast")
