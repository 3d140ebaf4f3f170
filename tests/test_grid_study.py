"""A `sampler: grid` space end to end with the asynchronous scheduler (tests/spaces/tiny_grid.yaml):
every cell of the factorial runs exactly once with every seed, GA and MMGrad train inside a
real study, and each regulariser's gain is reported against its matched baseline (the `none` cell,
run once and shared)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from study.space import grid_points, load_space

pytestmark = pytest.mark.slow

SPACE = Path(__file__).parent / "spaces" / "tiny_grid.yaml"


def test_grid_covers_the_factorial_with_matched_baselines(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "study.run", "--space", str(SPACE), "--budget", "smoke",
         "--storage", str(tmp_path / "studies"), "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    study_dir = tmp_path / "studies" / "tiny_grid"
    trials = pd.read_parquet(study_dir / "trials.parquet")
    space = load_space(SPACE)
    assert (trials["status"] == "TERMINATED").all()
    assert set(trials["seed"]) == set(space.seeds)

    def cell(row) -> tuple:
        return tuple(sorted((c.removeprefix("param/"), row[c]) for c in trials.columns
                            if c.startswith("param/") and pd.notna(row[c])))

    expected = sorted(tuple(sorted(point.items())) for point in grid_points(space))
    assert sorted(cell(row) for _, row in trials.iterrows()) == expected  # each cell exactly once
    baseline = trials[trials["param/regularizer"] == "none"]
    assert len(baseline) == 1 and baseline["role"].item() == "baseline"
    regularised = trials[trials["param/regularizer"] != "none"]
    assert (regularised["baseline_id"] == baseline["config_id"].item()).all()
    gains = pd.read_parquet(study_dir / "gains.parquet")
    assert set(gains["config_id"]) == set(regularised["config_id"])
