"""`python -m study.evaluate` on a checkpoint written the way training writes it: the recalls it
reports must be recomputable by any other tool from the files it writes (embeddings, gallery
labels, per-query source), and its breakdowns must cover every modification type."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from models.model import CirModel, ModelConfig
from models.text import Vocabulary
from study.data import open_dataset
from study.evaluate import pick_run
from study.train import CHECKPOINT_FILE


def test_evaluate_writes_recalls_that_the_written_embeddings_reproduce(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    data = open_dataset("css", scale=0.01, cache_dir=cache)
    torch.manual_seed(0)
    vocab = Vocabulary.build([q.text for q in data.train.queries])
    config = ModelConfig(composer="tirg", embed_dim=16, vocab_size=len(vocab))
    # what a training checkpoint holds per run (study/worker.py SeedRun.state), as study.evaluate reads it
    state = {"model": CirModel(config).state_dict(), "vocab": vocab.to_list(), "model_config": asdict(config)}
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    torch.save({"epoch": 1, "runs": {"css@seed0": state}}, checkpoint / CHECKPOINT_FILE)

    out = tmp_path / "eval"
    done = subprocess.run(
        [sys.executable, "-m", "study.evaluate", str(checkpoint), "--dataset", "css", "--scale", "0.01",
         "--out", str(out)], capture_output=True, text=True,
        env={**os.environ, "CIRSTUDY_CACHE": str(cache)},
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "recalls.json").read_text())
    queries = pd.read_parquet(out / "queries.parquet")
    gallery = pd.read_parquet(out / "gallery.parquet")
    q_emb, g_emb = np.load(out / "query_embeddings.npy"), np.load(out / "gallery_embeddings.npy")
    assert len(queries) == len(data.test.queries) == q_emb.shape[0] == summary["queries"]
    assert g_emb.shape[0] == len(gallery) == len(data.test.image_paths)

    # Recompute R@K with a plain loop over the written files: cosine, source excluded, label hit.
    path_to_id = {p: i for i, p in enumerate(gallery["path"])}
    q = q_emb / np.linalg.norm(q_emb, axis=1, keepdims=True)
    g = g_emb / np.linalg.norm(g_emb, axis=1, keepdims=True)
    hits = {int(k): 0 for k in summary["recall"]}
    for i, row in queries.iterrows():
        source, target = path_to_id[row["source"]], path_to_id[row["target"]]
        sims = g @ q[i]
        order = [j for j in np.argsort(-sims, kind="stable") if j != source]
        top10 = [int(j) for j in row["top10"]]  # gallery ids, see gallery.parquet
        assert top10 == order[:10] or np.allclose(sims[top10], sims[order[:10]])  # equal up to exact ties
        first = next(r for r, j in enumerate(order) if gallery["label"][j] == gallery["label"][target])
        assert first == row["first_hit_rank"] or np.isclose(sims[order[first]], sims[order[row["first_hit_rank"]]])
        for k in hits:
            hits[k] += first < k
    for k, count in hits.items():
        assert summary["recall"][str(k)] == count / len(queries)
    assert set(summary["breakdowns"]) == {"add", "remove", "make"}
    assert summary["manifest"]["missing"] == 0
    assert (out / "retrievals.png").stat().st_size > 10_000  # the picture was drawn
    maps = [p.name for p in (cache / "images").glob("*.cirimg")]  # it read the test split through the node's map
    assert len(maps) == 1 and maps[0].startswith("css-v1-seed0-scale0.01-test-64px-"), maps


def test_the_run_of_a_dataset_is_found_or_asked_for() -> None:
    runs = ["css@seed0", "states@seed0", "states@seed1"]
    assert pick_run(runs, "css", None) == "css@seed0"
    assert pick_run(runs, "states", "states@seed1") == "states@seed1"
    with pytest.raises(ValueError, match=r"2 for dataset 'states'; pick one with --run"):
        pick_run(runs, "states", None)
    with pytest.raises(ValueError, match=r"not 'css@seed1'; pick one with --run"):
        pick_run(runs, "css", "css@seed1")


def test_category_average_over_one_dataset_listed_with_several_options() -> None:
    from study.budget import DatasetEntry
    from study.trial_run import category_averages

    entries = (DatasetEntry("fashioniq", options=(("category", "dress"),)),
               DatasetEntry("fashioniq", options=(("category", "shirt"),)), DatasetEntry("css"))
    metrics = {"recall/fashioniq-dress/test@10": 0.2, "recall/fashioniq-shirt/test@10": 0.4,
               "recall/fashioniq-dress/test@50": 0.5, "recall/fashioniq-shirt/test@50": 0.7,
               "recall/css/test@10": 0.9}
    assert category_averages(entries, metrics) == pytest.approx(
        {"breakdown/fashioniq/test/average@10": 0.3, "breakdown/fashioniq/test/average@50": 0.6})
