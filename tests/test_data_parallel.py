"""`python -m study.train --workers 2` on Ray Train: the replicas stay identical (GA's isotropic
noise included), the sharded evaluation gives exactly the ranks a single process computes from the
same checkpoint, no checkpoint temporary directory is left behind (issues 5 and 8), and a run that
reached its epoch gives its last result back without training (issue 9's resume)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from models.model import CirModel, ModelConfig
from models.text import Vocabulary
from study.data import open_dataset
from study.data.image_cache import open_image_map
from study.evaluation import evaluate_split
from study.train import CHECKPOINT_FILE, HISTORY_FILE, RANKS_FILE, reached

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    root = tmp_path_factory.mktemp("dp")
    (root / "tmp").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "study.train", "--composer", "tirg", "--dataset", "css", "--workers", "2",
         "--epochs", "1", "--scale", "0.01", "--batch-size", "16", "--embed-dim", "32",
         "--param", "regularizer=ga", "--param", "ga_noise=0.05", "--param", "ga_strength=0.01",
         "--storage", str(root / "runs")],
        capture_output=True, text=True,
        # TMPDIR: the driver's local Ray and its workers take their temporary directories from here
        env={**os.environ, "CIRSTUDY_CACHE": str(root / "cache"), "TMPDIR": str(root / "tmp")},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    checkpoint = Path(done.stdout.split("checkpoint: ")[-1].strip())
    return root, done, checkpoint


def test_replicas_stay_identical(two_workers) -> None:
    _, done, _ = two_workers
    lines = dict(line.split(None, 1) for line in done.stdout.splitlines() if line.startswith(("check/", "epoch")))
    assert lines["epoch"].strip() == "1"
    assert float(lines["check/replicas_identical"]) == 1.0


def test_sharded_evaluation_equals_one_process(two_workers) -> None:
    root, _, checkpoint = two_workers
    state = torch.load(checkpoint / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    saved = state["runs"]["css@seed0"]
    model = CirModel(ModelConfig(**saved["model_config"]))
    model.load_state_dict(saved["model"])
    vocab = Vocabulary.from_list(saved["vocab"])
    data = open_dataset("css", scale=0.01, cache_dir=root / "cache")
    torch.set_num_threads(1)  # as the workers ran (--threads 1)
    result = evaluate_split(model, data.test, open_image_map(data.test, cache_dir=root / "cache"), data.test.queries,
                            vocab, data.recall_ks, torch.device("cpu"))
    ranks = pd.read_parquet(checkpoint / RANKS_FILE)
    sharded = ranks[(ranks["split"] == "test") & (ranks["dataset"] == "css") & (ranks["seed"] == 0)]
    assert sharded["query"].tolist() == list(range(len(data.test.queries)))
    assert sharded["rank"].tolist() == result.ranks.tolist()
    reported = json.loads((checkpoint / HISTORY_FILE).read_text())[-1]
    assert reported["recall/css/test@1"] == result.recalls[1]


def test_no_checkpoint_temporary_directory_is_left(two_workers) -> None:
    root, _, _ = two_workers
    leftovers = [p.name for p in (root / "tmp").rglob("cirstudy-ckpt-*")]
    assert leftovers == []


def test_a_run_that_reached_its_epoch_gives_its_last_result_back(two_workers) -> None:
    """What a trial restarted after its rung had finished reports instead of training again."""
    root, _, checkpoint = two_workers
    run_dir = str(checkpoint.parent)
    assert reached(run_dir, until=1) == json.loads((checkpoint / HISTORY_FILE).read_text())[-1]
    assert reached(run_dir, until=2) is None  # the next rung trains
    assert reached(str(root / "runs" / "train-never-ran"), until=1) is None
    damaged = root / "damaged-run"  # a snapshot cut short: the trial trains (and Ray says what is wrong)
    shutil.copytree(checkpoint.parent, damaged)
    (damaged / "checkpoint_manager_snapshot.json").write_text('{"ray_version": "2.6')
    assert reached(str(damaged), until=1) is None


def test_a_diverging_run_ends_at_once_with_the_reason(tmp_path_factory) -> None:
    """A NaN loss is recorded by the workers and reported; nothing is retried (study/trial_failure.py)."""
    tmp_path = tmp_path_factory.mktemp("nan")  # short: Ray's socket paths under TMPDIR must stay < 108 bytes
    (tmp_path / "tmp").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "study.train", "--composer", "concat", "--dataset", "css", "--epochs", "2",
         "--scale", "0.01", "--batch-size", "16", "--embed-dim", "16", "--lr", "1e30", "--storage", str(tmp_path / "runs")],
        capture_output=True, text=True, env={**os.environ, "CIRSTUDY_CACHE": str(tmp_path / "cache"),
                                            "TMPDIR": str(tmp_path / "tmp")},
    )
    assert done.returncode == 1, done.stderr[-4000:]
    assert "error: the loss became NaN or infinite in epoch 1 (seed/0/train/css/loss/" in done.stderr
    [run] = (tmp_path / "runs").iterdir()
    assert json.loads((run / "failed.json").read_text())["reason"].startswith("the loss became NaN or infinite in epoch 1")
    assert not list(run.glob("checkpoint_*"))  # it stopped in its first epoch: nothing to resume from
