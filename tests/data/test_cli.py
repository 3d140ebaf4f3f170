"""`python -m study.data generate` and `describe`, run as a user would."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "study.data", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_generate_then_describe_writes_the_grid(tmp_path: Path) -> None:
    out = tmp_path / "css"
    done = cli("generate", "css", "--out", str(out), "--seed", "2", "--scale", "0.01")
    assert done.returncode == 0, done.stderr
    assert (out / "css_toy_dataset_novel2_small.dup.npy").is_file()
    shown = cli("describe", str(out))
    assert shown.returncode == 0, shown.stderr
    assert "layout css" in shown.stdout and "train: 190 images" in shown.stdout and "queries (add" in shown.stdout
    assert "red rectangle" in shown.stdout  # the held-out pairs
    with Image.open(out / "sample_grid.png") as grid:
        assert grid.format == "PNG" and grid.size[0] > 300 and grid.size[1] > 300


def test_describe_states_to_a_chosen_path_and_errors(tmp_path: Path, states_root: Path) -> None:
    grid = tmp_path / "g.png"
    shown = cli("describe", str(states_root), "--grid", str(grid))
    assert shown.returncode == 0, shown.stderr
    assert "layout mitstates" in shown.stdout and "test nouns (5" in shown.stdout and grid.is_file()
    refused = cli("generate", "states", "--out", str(states_root))
    assert refused.returncode == 1 and "not empty" in refused.stderr
    nothing = cli("describe", str(tmp_path))
    assert nothing.returncode == 1 and "no known dataset layout" in nothing.stderr
