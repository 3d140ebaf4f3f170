"""Values a search-space file cannot mean stop `python -m study.run` while it reads the space, before
any data or Ray: an unknown `metric:`, a budget number written as YAML's `.nan` or `.inf`, a seed
that is not a count. One `error: <file>, line <n>: ...` line and exit code 2; `main` runs in this
process (test_space.py checks more malformed files through load_space)."""
from __future__ import annotations

from pathlib import Path

import pytest
import ray

from study.run import main

SPACE = """\
# bad values: refused before Ray starts
datasets:
  css: {weight: 1.0}
seeds: 1
parameters:
  composer: {type: choice, values: [concat]}
budgets:
  smoke:
    num_samples: 1
    epochs: 1
    batch_size: 2
"""


def run(tmp_path: Path, capsys: pytest.CaptureFixture, old: str, new: str) -> tuple[int, str, Path]:
    assert old in SPACE
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.replace(old, new))
    code = main(["--space", str(space), "--budget", "smoke", "--storage", str(tmp_path / "studies"),
                 "--cache-dir", str(tmp_path / "cache")])
    assert not ray.is_initialized()
    assert not (tmp_path / "cache").exists()  # refused before any data was prepared
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return code, err, space


def test_unknown_metric_names_file_line_and_the_study_metric(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err, space = run(tmp_path, capsys, "seeds: 1\n", "seeds: 1\nmetric: recall@10\n")
    assert code == 2
    assert err.startswith(f"error: {space}, line 5: unknown metric 'recall@10'; the study metric is `whm`")
    assert "`weight`, `splits` and `k_weights`" in err  # how to weigh instead


@pytest.mark.parametrize("field, value, rule", [
    ("gpus_per_worker", ".nan", "nan"),
    ("gpus_per_worker", ".inf", "inf"),
    ("lr", "-.inf", "-inf"),
    ("cpus_per_worker", ".NaN", "nan"),
    ("scale", ".Inf", "inf"),
])
def test_budget_numbers_that_are_nan_or_inf_name_their_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          field: str, value: str, rule: str) -> None:
    code, err, space = run(tmp_path, capsys, "    epochs: 1\n", f"    epochs: 1\n    {field}: {value}\n")
    assert code == 2
    assert err == (f"error: {space}, line 11: budget 'smoke': `{field}` must be a finite number, got {rule} "
                   "(YAML reads .nan and .inf as not-a-number and infinity); write a number\n")


def test_other_budget_errors_name_the_field_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err, space = run(tmp_path, capsys, "    batch_size: 2\n", "    batch_size: 2\n    gpus_per_worker: -1\n")
    assert code == 2
    assert err.startswith(f"error: {space}, line 12: budget 'smoke': `gpus_per_worker` must be a number >= 0, got -1")


@pytest.mark.parametrize("key, value", [("data_seed", ".nan"), ("optuna_seed", ".inf"), ("data_seed", "one"),
                                        ("optuna_seed", "-1")])
def test_seeds_must_be_counts(tmp_path: Path, capsys: pytest.CaptureFixture, key: str, value: str) -> None:
    code, err, space = run(tmp_path, capsys, "seeds: 1\n", f"seeds: 1\n{key}: {value}\n")
    assert code == 2
    assert err.startswith(f"error: {space}, line 5: `{key}` must be an integer >= 0, got ")
