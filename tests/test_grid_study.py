"""`regularizer_grid` end to end at `--budget smoke` (issue 5): every cell of the factorial design
(composer x regulariser x strength) runs exactly once per seed, every regulariser term trains
without error, and the paired gains over "none" are reported per composer."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from study.space import grid_points, load_space

pytestmark = pytest.mark.slow


def test_regularizer_grid_covers_the_full_factorial(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "study.run", "--space", "regularizer_grid", "--budget", "smoke",
         "--storage", str(tmp_path / "studies"), "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    study_dir = tmp_path / "studies" / "regularizer_grid"
    trials = pd.read_parquet(study_dir / "trials.parquet")
    space = load_space("regularizer_grid")
    assert (trials["status"] == "TERMINATED").all()
    assert set(trials["seed"]) == {0}  # the smoke budget's single seed

    def cell(row) -> tuple:
        return tuple(sorted((c.removeprefix("param/"), row[c]) for c in trials.columns
                            if c.startswith("param/") and pd.notna(row[c])))

    expected = sorted(tuple(sorted(point.items())) for point in grid_points(space))
    assert sorted(cell(row) for _, row in trials.iterrows()) == expected  # each cell exactly once
    gains = pd.read_parquet(study_dir / "gains.parquet")
    pairs = {(row["param/composer"], row["param/regularizer"]) for _, row in gains.iterrows()}
    assert pairs == {(c, r) for c in ("concat", "tirg") for r in ("ga", "dim", "cmap", "mmgrad")}
    assert "regulariser gain over the same composer" in done.stdout
