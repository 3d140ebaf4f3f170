"""What `--resume` refuses before Ray starts: starting over a study without `--resume`, and resuming
with another budget or scheduler than the study was started with (issue 9, item 7). That a killed
and resumed study gives the uninterrupted study's tables is checked in test_study_integration.py.
`study.run`'s `main` runs in this process: the refusals come before Ray or any data.
(test_space.py runs the command through `python -m` for a bad space.)"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from study.run import main


def run(tmp_path: Path, capsys: pytest.CaptureFixture, *extra: str) -> tuple[int, str]:
    code = main(["--space", "ga_vs_dim", "--budget", "smoke", "--storage", str(tmp_path / "studies"),
                 "--cache-dir", str(tmp_path / "cache"), *extra])
    return code, capsys.readouterr().err


def existing_study(tmp_path: Path, **record) -> Path:
    study_dir = tmp_path / "studies" / "ga_vs_dim"
    study_dir.mkdir(parents=True)
    (study_dir / "tuner.pkl").write_bytes(b"")
    if record:
        (study_dir / "study.json").write_text(json.dumps(record))
    return study_dir


def test_starting_over_an_existing_study_asks_for_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    existing_study(tmp_path)
    code, err = run(tmp_path, capsys)
    assert code == 2
    assert "already holds a study; pass --resume" in err


def test_resuming_with_another_budget_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    study_dir = existing_study(tmp_path, budget_name="default", budget={"epochs": 4}, scheduler="asha", seeds=[0, 1])
    code, err = run(tmp_path, capsys, "--resume")
    assert code == 2
    assert f"{study_dir / 'study.json'}: this study was started with budget_name 'default', not 'smoke'" in err
    assert "--budget default --scheduler asha" in err
    assert not (tmp_path / "cache").exists()  # refused before any data was prepared
