"""The record a trial leaves for `study.train --from-trial`: written whole by the driver's callback,
read back equal; git's state from a real repository; clear errors for folders that hold no record."""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs
import pytest

from study.budget import Budget, DatasetEntry
from study.data.types import ImageManifest
from study.rerun import differences
from study.train import main as train_main
from study.trial_record import RECORD_FILE, TrialRecord, TrialRecordCallback, TrialRecordError, git_state


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_git_state_names_the_commit_and_sees_uncommitted_changes(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    commit = next((repo / ".git" / "refs" / "heads").iterdir()).read_text().strip()  # the branch's ref file
    assert git_state(repo) == {"commit": commit, "dirty": False}
    (repo / "a.py").write_text("x = 2\n")
    assert git_state(repo) == {"commit": commit, "dirty": True}
    assert git_state(tmp_path / "not-a-repo") == {"commit": None, "dirty": None}


def _callback() -> TrialRecordCallback:
    manifest = ImageManifest(listed=10, missing=1, missing_examples=("a.jpg",), sha256="ab" * 32, dropped_queries=2)
    return TrialRecordCallback(
        seeds=(0, 1), budget=Budget(epochs=3, scale=0.01, embed_dim=16), cell_weights={"css/test@1": 1.0},
        datasets=(DatasetEntry("css"), DatasetEntry("fashioniq", root="/data/fiq", options=(("category", "dress"),))),
        data_seed=7, cache_dir="/tmp/cache", manifests={"css": None, "fashioniq-dress": manifest},
        versions={"torch": "2.14.1"},
    )


def test_the_callback_writes_a_record_that_reads_back_equal(tmp_path: Path) -> None:
    callback = _callback()
    callback.setup()
    trial = SimpleNamespace(  # the three attributes of a Tune Trial the callback uses
        trial_id="abc123", config={"composer": "tirg", "K": 4, "config": "c0001", "until": 2},
        path=str(tmp_path / "run_trial_abc123"), storage=SimpleNamespace(storage_filesystem=pyarrow.fs.LocalFileSystem()),
    )
    callback.on_trial_start(0, [], trial)
    folder = Path(trial.path)
    assert sorted(p.name for p in folder.iterdir()) == [RECORD_FILE]  # no temporary file left
    record = TrialRecord.read(folder)
    assert record.config == trial.config and record.seeds == (0, 1) and record.data_seed == 7
    assert record.budget == Budget(epochs=3, scale=0.01, embed_dim=16)
    assert record.datasets[1] == DatasetEntry("fashioniq", root="/data/fiq", options=(("category", "dress"),))
    assert record.manifests["fashioniq-dress"]["dropped_queries"] == 2 and record.manifests["css"] is None
    assert record.git == git_state()  # this checkout's commit, taken at setup
    assert json.loads((folder / RECORD_FILE).read_text())["versions"] == {"torch": "2.14.1"}


def test_a_folder_without_a_record_or_with_a_broken_one_is_refused_naming_the_file(tmp_path: Path, capsys) -> None:
    with pytest.raises(TrialRecordError, match=f"{tmp_path / RECORD_FILE}: no trial record"):
        TrialRecord.read(tmp_path)
    (tmp_path / RECORD_FILE).write_text('{"trial_id": "x"')
    with pytest.raises(TrialRecordError, match=f"{tmp_path / RECORD_FILE}: not a trial record"):
        TrialRecord.read(tmp_path)
    assert train_main(["--from-trial", str(tmp_path)]) == 2  # no Ray started: refused first
    assert f"error: {tmp_path / RECORD_FILE}: not a trial record" in capsys.readouterr().err


def test_differences_are_exact_and_nan_equals_nan() -> None:
    recorded = {"recall/css/test@1": 0.25, "whm": math.nan, "time/epoch_s": 3.0, "epoch": 2}
    assert differences(recorded, {"recall/css/test@1": 0.25, "whm": math.nan, "time/epoch_s": 9.0}) == []
    assert differences(recorded, {"recall/css/test@1": 0.25000000000000006, "whm": math.nan}) == [
        "  recall/css/test@1: trial 0.25, re-run 0.25000000000000006"]
    assert differences(recorded, {"whm": math.nan}) == ["  recall/css/test@1: trial 0.25, re-run None"]
