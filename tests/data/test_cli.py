"""`python -m study.data generate` and `describe`: the command's `main` in this process (a new
interpreter per call costs seconds of imports), and once through `python -m` as a user runs it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from study.data.__main__ import main

REPO = Path(__file__).resolve().parents[2]


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_then_describe_writes_the_grid(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "css"
    code, _, err = cli(capsys, "generate", "css", "--out", str(out), "--seed", "2", "--scale", "0.01")
    assert code == 0, err
    assert (out / "css_toy_dataset_novel2_small.dup.npy").is_file()
    shown = subprocess.run([sys.executable, "-m", "study.data", "describe", str(out)], cwd=REPO,
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "layout css" in shown.stdout and "train: 190 images" in shown.stdout and "queries (add" in shown.stdout
    assert "red rectangle" in shown.stdout  # the held-out pairs
    with Image.open(out / "sample_grid.png") as grid:
        assert grid.format == "PNG" and grid.size[0] > 300 and grid.size[1] > 300


def test_describe_states_to_a_chosen_path_and_errors(tmp_path: Path, states_root: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    grid = tmp_path / "g.png"
    code, out, err = cli(capsys, "describe", str(states_root), "--grid", str(grid))
    assert code == 0, err
    assert "layout mitstates" in out and "test nouns (5" in out and grid.is_file()
    code, _, err = cli(capsys, "generate", "states", "--out", str(states_root))
    assert code == 2 and "not empty" in err
    code, _, err = cli(capsys, "describe", str(tmp_path))
    assert code == 2 and "no known dataset layout" in err
