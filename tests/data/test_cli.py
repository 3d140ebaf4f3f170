"""`python -m study.data generate` and `describe`: the command's `main` in this process (a new
interpreter per call costs seconds of imports), and once through `python -m` as a user runs it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from data_layout_writers import write_shoes

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


def test_describe_refuses_a_grid_it_cannot_write_before_reading(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    empty = tmp_path / "empty"  # no layout: had it looked, it would say "no known dataset layout"
    empty.mkdir()
    code, _, err = cli(capsys, "describe", str(empty), "--grid", str(a_file / "grid.png"))
    assert code == 2 and f"{a_file} is a file, not a folder" in err and "no known dataset layout" not in err
    code, _, err = cli(capsys, "describe", str(empty), "--grid", str(tmp_path))
    assert code == 2 and "is a folder; pass --grid with a file name" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_describe_refuses_a_grid_in_a_read_only_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    code, _, err = cli(capsys, "describe", str(tmp_path), "--grid", str(locked / "grid.png"))
    assert code == 2 and f"cannot write in {locked}" in err and "no known dataset layout" not in err


def test_generate_refuses_an_out_that_is_or_is_under_a_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    code, _, err = cli(capsys, "generate", "css", "--out", str(a_file), "--scale", "0.01")
    assert code == 2 and f"--out {a_file}: is a file, not a folder" in err
    code, _, err = cli(capsys, "generate", "css", "--out", str(a_file / "css"), "--scale", "0.01")
    assert code == 2 and "cannot create the folder (Not a directory)" in err
    assert a_file.read_text() == "not a folder"


def test_describe_with_no_image_found_says_where_it_looked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_shoes(tmp_path / "shoes")
    shutil.rmtree(root / "images")
    code, out, err = cli(capsys, "describe", str(root))
    assert code == 2
    assert "layout shoes" in out and "images: 7 listed, 7 missing" in out  # the counts are still shown
    assert f"none of the 7 images listed in {root / 'split.train.json'}" in err and f"were found under {root}" in err
    assert not (root / "sample_grid.png").exists()
