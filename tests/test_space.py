"""Search-space files: every space in search_spaces/ loads, samples and validates; malformed files
fail with the file, the line and the fix, before Ray starts."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest

from study.space import SPACES_DIR, SpaceError, define_by_run, load_space
from study.trial_config import TrialConfig, validate_space

ALL_SPACES = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))

GOOD = """\
# a question
datasets:
  css: {weight: 1.0}
seeds: 2
parameters:
  composer: {type: choice, values: [concat, tirg]}
  regularizer: {type: choice, values: [none, ga]}
  ga_strength: {type: loguniform, low: 1.0e-4, high: 1.0e-1, when: {regularizer: ga}}
  K: {type: choice, values: [2, 8]}
budgets:
  smoke: {num_samples: 1, epochs: 1, batch_size: 8}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("name", ALL_SPACES)
def test_every_space_loads_samples_and_validates(name: str) -> None:
    space = load_space(name)
    for budget in space.budgets.values():
        validate_space(space, budget)
    assert space.question, "each space file starts with a comment saying what question it answers"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        constants = define_by_run(space)(trial)
        params = {**trial.params, **constants}
        config = TrialConfig.from_params(params, seeds=space.seeds)
        for p in space.parameters:  # a conditional parameter exists exactly when its condition holds
            assert (p.name in trial.params) == p.active(trial.params)
        assert config.composer == params["composer"]
        study.tell(trial, 0.0)


def test_conditional_parameter_only_when_its_condition_holds(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, GOOD))
    assert space.seeds == (0, 1)
    gated = {p.name: p for p in space.parameters}["ga_strength"]
    assert gated.when == (("regularizer", "ga"),)
    assert gated.active({"regularizer": "ga"}) and not gated.active({"regularizer": "none"})
    config = TrialConfig.from_params({"composer": "tirg", "regularizer": "ga", "ga_strength": 0.01, "K": 8,
                                      "__config__": "c0007", "__until__": 2}, seeds=space.seeds)
    assert (config.seeds, config.k, config.regularizer) == ((0, 1), 8, "ga")
    assert (config.config_id, config.until, config.role) == ("c0007", 2, "searched")
    assert len(config.regularizers) == 1


def test_k_weights_default_to_every_reported_k_and_refuse_a_missing_one(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, GOOD))
    assert space.cell_weights({"css": (1, 5, 10, 50)}) == {f"css/test@{k}": 1.0 for k in (1, 5, 10, 50)}
    picky = load_space(write(tmp_path, GOOD.replace("seeds: 2", "seeds: 2\nk_weights: {1: 1.0, 7: 1.0}")))
    with pytest.raises(SpaceError, match=r"weighs recall@\[7\] but dataset 'css' reports only K in \[1, 5, 10, 50\]"):
        picky.cell_weights({"css": (1, 5, 10, 50)})


def test_unknown_metric_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="unknown metric 'recall'"):
        load_space(write(tmp_path, GOOD.replace("seeds: 2", "seeds: 2\nmetric: recall")))


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("low: 1.0e-4, high", "low: 0, high", "line 8: `loguniform` needs low > 0, got 0; use `uniform` or a positive low"),
        ("{type: choice, values: [2, 8]}", "{type: choise, values: [2, 8]}", "line 9: parameter 'K' has unknown type 'choise'"),
        ("seeds: 2", "seedz: 2", "line 4: unknown key 'seedz' in the search space"),
        ("when: {regularizer: ga}", "when: {regularizer: gaa}", "line 8: 'ga_strength' needs regularizer='gaa', but 'regularizer' only takes ['none', 'ga']"),
        ("epochs: 1,", "epochz: 1,", "unknown key 'epochz' in budget 'smoke'"),
        ("epochs: 1,", "epochs: 1, reconstruction_steps: -1,", "`reconstruction_steps` must be an integer >= 0"),
        ("[concat, tirg]", "[concat, tirgg]", "line 6: unknown composer 'tirgg'"),
        ("values: [2, 8]", "values: [2, 16]", "line 9: K=16 is larger than the batch size 8"),
        ("  css: {weight: 1.0}", "  css: {weight: -1.0}", "line 3: `weight` must be > 0"),
        ("K: {type", "K: [type", "not valid YAML"),
    ],
)
def test_malformed_space_names_file_line_and_fix(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(SpaceError) as error:
        space = load_space(path)
        validate_space(space, space.budgets["smoke"])
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_unknown_space_lists_known_ones() -> None:
    with pytest.raises(SpaceError, match="known: .*ga_vs_dim"):
        load_space("no_such_space")


def test_run_cli_rejects_bad_space_before_ray_starts(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("low: 1.0e-4, high", "low: 0, high"))
    done = subprocess.run(
        [sys.executable, "-m", "study.run", "--space", str(path), "--budget", "smoke", "--storage", str(tmp_path)],
        capture_output=True, text=True
    )
    assert done.returncode == 2
    assert f"error: {path}, line 8: `loguniform` needs low > 0" in done.stderr
    assert "Traceback" not in done.stderr and "ray" not in done.stderr.lower()


def test_unknown_trial_key_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['lr'\]; valid names: .*ga_strength"):
        TrialConfig.from_params({"composer": "tirg", "lr": 0.1}, seeds=(0,))
