"""What `--resume` refuses before Ray starts: starting over a study without `--resume`, and resuming
with another budget or scheduler than the study was started with (issue 9, item 7). That a killed
and resumed study gives the uninterrupted study's tables is checked in test_study_integration.py."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "study.run", "--space", "ga_vs_dim", "--budget", "smoke",
         "--storage", str(tmp_path / "studies"), "--cache-dir", str(tmp_path / "cache"), *extra],
        capture_output=True, text=True,
    )


def existing_study(tmp_path: Path, **record) -> Path:
    study_dir = tmp_path / "studies" / "ga_vs_dim"
    study_dir.mkdir(parents=True)
    (study_dir / "tuner.pkl").write_bytes(b"")
    if record:
        (study_dir / "study.json").write_text(json.dumps(record))
    return study_dir


def test_starting_over_an_existing_study_asks_for_resume(tmp_path: Path) -> None:
    existing_study(tmp_path)
    done = run(tmp_path)
    assert done.returncode == 2
    assert "already holds a study; pass --resume" in done.stderr


def test_resuming_with_another_budget_is_refused(tmp_path: Path) -> None:
    study_dir = existing_study(tmp_path, budget_name="default", budget={"epochs": 4}, scheduler="asha", seeds=[0, 1])
    done = run(tmp_path, "--resume")
    assert done.returncode == 2
    assert f"{study_dir / 'study.json'}: this study was started with budget_name 'default', not 'smoke'" in done.stderr
    assert "--budget default --scheduler asha" in done.stderr
