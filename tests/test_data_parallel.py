"""Data parallelism on Ray Train keeps the replicas identical, GA's isotropic gradient noise
included (issue 5): `python -m study.train --workers 2` reports it after every epoch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_two_workers_with_ga_noise_keep_identical_parameters(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "study.train", "--composer", "tirg", "--dataset", "css", "--workers", "2",
         "--epochs", "1", "--scale", "0.01", "--batch-size", "16", "--embed-dim", "32",
         "--param", "regularizer=ga", "--param", "ga_noise=0.05", "--param", "ga_strength=0.01",
         "--storage", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=600, env={**os.environ, "CIRSTUDY_CACHE": str(tmp_path / "cache")},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = dict(line.split(None, 1) for line in done.stdout.splitlines() if line.startswith(("check/", "epoch")))
    assert lines["epoch"].strip() == "1"
    assert float(lines["check/replicas_identical"]) == 1.0

