"""`python -m study.evaluate` on a checkpoint written the way training writes it: the recalls it
reports must be recomputable by any other tool from the files it writes (embeddings, gallery
labels, per-query source), and its breakdowns must cover every modification type."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from study.data import open_dataset
from study.space import Budget
from study.train import CHECKPOINT_FILE
from study.trial_config import TrialConfig
from study.worker import DatasetRun


def test_evaluate_writes_recalls_that_the_written_embeddings_reproduce(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    data = open_dataset("css", scale=0.01, cache_dir=cache)
    torch.manual_seed(0)
    run = DatasetRun.build(data, TrialConfig.from_params({"composer": "tirg"}, seeds=(0,)),
                           Budget(epochs=1, embed_dim=16, batch_size=8, train_eval_queries=10),
                           data_seed=0, device=torch.device("cpu"))
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    torch.save({"epoch": 1, "runs": {"css": run.state()}}, checkpoint / CHECKPOINT_FILE)

    out = tmp_path / "eval"
    done = subprocess.run(
        [sys.executable, "-m", "study.evaluate", str(checkpoint), "--dataset", "css", "--scale", "0.01",
         "--out", str(out)], capture_output=True, text=True, timeout=300,
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



def test_category_average_over_one_dataset_listed_with_several_options() -> None:
    from study.space import DatasetEntry
    from study.train import category_averages

    entries = (DatasetEntry("fashioniq", options=(("category", "dress"),)),
               DatasetEntry("fashioniq", options=(("category", "shirt"),)), DatasetEntry("css"))
    metrics = {"recall/fashioniq-dress/test@10": 0.2, "recall/fashioniq-shirt/test@10": 0.4,
               "recall/fashioniq-dress/test@50": 0.5, "recall/fashioniq-shirt/test@50": 0.7,
               "recall/css/test@10": 0.9}
    assert category_averages(entries, metrics) == pytest.approx(
        {"breakdown/fashioniq/test/average@10": 0.3, "breakdown/fashioniq/test/average@50": 0.6})
