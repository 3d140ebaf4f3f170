"""study.optuna_export on the hand-computed study of test_results.py: the journal loads with
`optuna.load_study`, holds one trial per configuration valued as the ranking says, with the space's
distributions, and follows the tables as configurations finish without duplicating a trial."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

import study.trials
from study.optuna_export import JOURNAL_FILE, write_optuna_journal
from study.parquet_io import CELL_WEIGHTS_KEY, write_parquet_atomic
from study.results import write_tables
from study.space import SearchSpace, load_space
from test_results import A, A2, A_WHM, FLAT, GA, NONE, WEIGHTS, config, write_study

SPACE = """\
name: hand
datasets:
  css: {weight: 1.0}
  states: {weight: 2.0}
seeds: 3
parameters:
  composer: {type: choice, values: [tirg, concat]}
  regularizer: {type: choice, values: [none, ga]}
  ga_weight: {type: loguniform, low: 0.01, high: 1.0, when: {regularizer: ga}}
  K: {type: choice, values: [2, 8, batch]}
fixed:
  embed_dim: 16
budgets:
  smoke: {epochs: 3, num_samples: 4}
"""
EARLY = {1: {s: {"css": [0, 0, 0, 50], "states": [0, 0, 9, 9]} for s in (0, 1)},
         2: {s: {"css": [0, 0, 50, 50], "states": [0, 0, 0, 9]} for s in (0, 1)}}
E_WHM = 4 / (2 + 2 + 8 / 3)  # e at epoch 2: css 0.5, 0.5; states 0.75
REASON = "loss diverged at epoch 1 (nan)"


def hand_space(tmp_path: Path) -> SearchSpace:
    path = tmp_path / "hand.yaml"
    path.write_text(SPACE)
    return load_space(path)


def hand_dir(tmp_path: Path, *, f_status: str | None = None, e_epochs: dict = EARLY) -> Path:
    """The study of test_results.hand_study (a, its baseline b, e stopped early, x failed), in a
    directory named "hand", with x's failure reason and, with `f_status`, a fifth configuration f;
    its ranking written as the study driver writes it."""
    directory = tmp_path / "hand"
    configs = [config("a", GA, {2: A2, 3: A}, baseline_id="b"),
               config("b", NONE, {3: FLAT}, role="baseline"),
               config("e", {**GA, "ga_weight": 0.3}, e_epochs, baseline_id="b"),
               config("x", {**GA, "ga_weight": 0.9}, {1: A}, status="ERROR")]
    if f_status:
        configs.append(config("f", {**GA, "ga_weight": 0.5, "K": "batch"}, {3: FLAT}, baseline_id="b",
                              status=f_status))
    write_study(directory, configs)
    trials = pd.read_parquet(directory / "trials.parquet")
    trials["error"] = np.where(trials["config_id"] == "x", REASON, None)
    write_parquet_atomic(trials, directory / "trials.parquet", {CELL_WEIGHTS_KEY: json.dumps(WEIGHTS).encode()})
    write_tables(directory, n_bootstrap=200)
    return directory


def load(directory: Path, storage: JournalStorage | None = None) -> optuna.Study:
    storage = storage or JournalStorage(JournalFileBackend(str(directory / JOURNAL_FILE)))
    return optuna.load_study(study_name="hand", storage=storage)


def by_id(journal: optuna.Study) -> dict[str, optuna.trial.FrozenTrial]:
    trials = journal.get_trials()
    ids = [t.user_attrs["config_id"] for t in trials]
    assert len(ids) == len(set(ids)), f"a configuration twice: {ids}"
    return dict(zip(ids, trials))


def test_one_trial_per_configuration_valued_as_the_ranking(tmp_path):
    directory = hand_dir(tmp_path)
    path = write_optuna_journal(directory, hand_space(tmp_path))
    assert path == directory / "optuna.log"
    journal = load(directory)
    assert journal.direction == optuna.study.StudyDirection.MAXIMIZE and journal.metric_names == ["whm"]
    trials = by_id(journal)
    assert sorted(trials) == ["a", "b", "e", "x"]
    ranking = pd.read_parquet(directory / "ranking.parquet").set_index("config_id")
    for config_id in ("a", "b", "e"):
        trial, row = trials[config_id], ranking.loc[config_id]
        assert trial.state == TrialState.COMPLETE and trial.value == row["whm_mean"]
        assert (trial.user_attrs["whm_low"], trial.user_attrs["whm_high"]) == (row["whm_low"], row["whm_high"])
        assert trial.user_attrs["epoch"] == row["epoch"] and trial.user_attrs["n_seeds"] == row["n_seeds"]
    # and the ranking's values are the hand-computed ones
    assert trials["a"].value == pytest.approx(np.mean(A_WHM))
    assert trials["b"].value == pytest.approx(0.25) and trials["e"].value == pytest.approx(E_WHM)
    assert trials["a"].user_attrs["seeds"] == [0, 1, 2] and trials["e"].user_attrs["seeds"] == [0, 1]
    assert trials["e"].user_attrs["stopped_early"] and trials["e"].user_attrs["epoch"] == 2
    assert (trials["a"].user_attrs["role"], trials["a"].user_attrs["baseline_id"]) == ("searched", "b")
    assert trials["b"].user_attrs["role"] == "baseline" and "baseline_id" not in trials["b"].user_attrs
    # the diverged configuration: FAIL, with where it was tried and why
    assert trials["x"].state == TrialState.FAIL and trials["x"].value is None
    assert trials["x"].user_attrs["error"] == REASON and trials["x"].params["ga_weight"] == 0.9
    assert journal.best_trial.user_attrs["config_id"] == ranking["whm_mean"].idxmax()


def test_params_and_distributions_follow_the_space(tmp_path):
    directory = hand_dir(tmp_path, f_status="TERMINATED")
    write_optuna_journal(directory, hand_space(tmp_path))
    journal = load(directory)
    trials = by_id(journal)
    a, b, f = trials["a"], trials["b"], trials["f"]
    assert a.params == {"composer": "tirg", "regularizer": "ga", "ga_weight": 0.1, "K": 8}
    assert a.distributions == {"composer": CategoricalDistribution(["tirg", "concat"]),
                               "regularizer": CategoricalDistribution(["none", "ga"]),
                               "ga_weight": FloatDistribution(0.01, 1.0, log=True),
                               "K": CategoricalDistribution([2, 8, "batch"])}
    assert f.params["K"] == "batch"  # stored "8" and "batch" in one text column; the space's own values here
    # ga_weight exists only where regularizer is ga
    assert "ga_weight" not in b.params and "ga_weight" not in b.distributions
    assert b.params == {"composer": "tirg", "regularizer": "none", "K": 8}
    assert journal.user_attrs["fixed/embed_dim"] == 16 and "embed_dim" not in a.params


def test_a_configuration_that_ends_is_appended_once(tmp_path):
    space = hand_space(tmp_path)
    directory = hand_dir(tmp_path, f_status="RUNNING")
    path = write_optuna_journal(directory, space)
    before = path.read_bytes()
    reader = JournalStorage(JournalFileBackend(str(path)))  # as optuna-dashboard reads it: incrementally
    assert sorted(by_id(load(directory, reader))) == ["a", "b", "e", "x"]  # f is still training

    hand_dir(tmp_path, f_status="TERMINATED")
    write_optuna_journal(directory, space)
    after = path.read_bytes()
    assert after.startswith(before) and len(after) > len(before)  # the old file plus f, byte for byte
    trials = by_id(load(directory))
    assert sorted(trials) == ["a", "b", "e", "f", "x"]
    ranking = pd.read_parquet(directory / "ranking.parquet").set_index("config_id")
    assert trials["f"].value == ranking.loc["f", "whm_mean"]
    assert sorted(by_id(load(directory, reader))) == ["a", "b", "e", "f", "x"]  # the open reader follows

    write_optuna_journal(directory, space)  # nothing new: the file stays as it is
    assert path.read_bytes() == after
    assert [p.name for p in directory.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_a_rescored_configuration_is_rewritten_not_duplicated(tmp_path):
    space = hand_space(tmp_path)
    directory = hand_dir(tmp_path)
    write_optuna_journal(directory, space)
    first = by_id(load(directory))
    # e continued to epoch 3 (a later rung): a new value for the same configuration
    hand_dir(tmp_path, e_epochs={**EARLY, 3: {s: A[s] for s in (0, 1)}})
    write_optuna_journal(directory, space)
    trials = by_id(load(directory))
    assert sorted(trials) == ["a", "b", "e", "x"]
    assert trials["e"].value == pytest.approx(np.mean(A_WHM[:2])) and trials["e"].user_attrs["epoch"] == 3
    for config_id in ("a", "b"):  # unchanged trials keep their number and time
        assert trials[config_id].number == first[config_id].number
        assert trials[config_id].datetime_complete == first[config_id].datetime_complete


def test_a_value_outside_the_space_names_the_configuration(tmp_path):
    directory = hand_dir(tmp_path)
    path = tmp_path / "narrow.yaml"
    path.write_text(SPACE.replace("values: [2, 8, batch]", "values: [2, 4]"))
    with pytest.raises(ValueError, match=r"configuration a has K='8', which is not among the space's values \[2, 4\]"):
        write_optuna_journal(directory, load_space(path))
    assert not (directory / JOURNAL_FILE).exists()


def test_optuna_importance_reads_the_journal(tmp_path):
    pytest.importorskip("sklearn")  # Optuna's fANOVA
    directory = hand_dir(tmp_path, f_status="TERMINATED")
    write_optuna_journal(directory, hand_space(tmp_path))
    importances = optuna.importance.get_param_importances(
        load(directory), evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    assert set(importances) <= {"composer", "regularizer", "K"} and "regularizer" in importances


def test_the_table_writer_writes_the_journal_with_the_ranking(tmp_path, monkeypatch):
    from study.table_writer import TableWriter

    directory = hand_dir(tmp_path)
    (directory / "ranking.parquet").unlink()
    frame = pd.read_parquet(directory / "trials.parquet")
    history = pd.read_parquet(directory / "history.parquet")
    monkeypatch.setattr(study.trials, "trials_frame", lambda *args, **kwargs: (frame, history))
    writer = TableWriter(directory, hand_space(tmp_path), budget_name="smoke", epochs=3, cell_weights=WEIGHTS,
                         manifests={})
    writer.write([], rank=False)
    assert not (directory / JOURNAL_FILE).exists()  # no ranking, no journal
    writer.write([])
    assert (directory / "ranking.parquet").is_file()
    assert sorted(by_id(load(directory))) == ["a", "b", "e", "x"]
