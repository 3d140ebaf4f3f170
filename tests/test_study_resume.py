"""An interrupted study resumes: `python -m study.run ... --resume` after a Ctrl-C (SIGINT) does not
re-run the trials that had finished, and ends with every trial of the budget finished."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from study.space import load_space

pytestmark = pytest.mark.slow


def result_lines(study_dir: Path) -> dict[str, int]:
    """trial id -> number of results Tune recorded for it (one JSON line per reported epoch)."""
    counts = {}
    for path in study_dir.glob("run_trial_*/result.json"):
        trial_id = path.parent.name.split("_")[2]
        counts[trial_id] = len(path.read_text().splitlines())
    return counts


def test_interrupted_study_resumes_without_rerunning_finished_trials(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "study.run", "--space", "ga_vs_dim", "--budget", "smoke",
               "--storage", str(tmp_path / "studies"), "--cache-dir", str(tmp_path / "cache")]
    study_dir = tmp_path / "studies" / "ga_vs_dim"
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    finished: list[str] = []
    deadline = time.time() + 600
    for line in first.stderr:  # progress lines: "... trial <id> finished"
        if line.rstrip().endswith(" finished"):
            finished.append(line.split("trial ")[-1].split()[0])
            break
        assert time.time() < deadline, "no trial finished within 10 minutes"
    assert finished, "the study ended before any trial finished"
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=300)
    before = result_lines(study_dir)
    assert before[finished[0]] >= 1

    done = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-5000:]
    after = result_lines(study_dir)
    assert after[finished[0]] == before[finished[0]], "a finished trial was run again"
    trials = pd.read_parquet(study_dir / "trials.parquet")
    space = load_space("ga_vs_dim")
    assert len(trials) == space.budgets["smoke"].num_samples * len(space.seeds)
    assert (trials["status"] == "TERMINATED").all()
    assert set(before) <= set(trials["trial_id"])  # the same trials, continued, not new ones


def test_starting_over_an_existing_study_asks_for_resume(tmp_path: Path) -> None:
    study_dir = tmp_path / "studies" / "ga_vs_dim"
    study_dir.mkdir(parents=True)
    (study_dir / "tuner.pkl").write_bytes(b"")
    done = subprocess.run(
        [sys.executable, "-m", "study.run", "--space", "ga_vs_dim", "--budget", "smoke",
         "--storage", str(tmp_path / "studies")], capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert "already holds a study; pass --resume" in done.stderr
