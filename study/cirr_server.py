"""The two prediction files CIRR's evaluation server takes for its hidden test1 targets.

CIRR (Liu et al., ICCV 2021, arXiv 2108.04024) publishes no test1 targets; its server
(https://cirr.cecs.anu.edu.au/; github.com/Cuberick-Orion/CIRR, Test-split_server.md and
demo_files/test1_pred_ranks_recall*.json) scores uploaded JSON objects of the form
    {"version": "rc2", "metric": "recall",        "<pairid>": [top-50 image names], ...}
    {"version": "rc2", "metric": "recall_subset", "<pairid>": [top-3 image names], ...}
one entry per query. As CLIP4Cir's cirr_test_submission.py writes them: the reference is removed
from both rankings, and the subset ranking keeps only the query's img_set members.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from study.data.cirr import VERSION
from study.data.types import Query, Split
from study.metrics import top_k
from study.subset_recall import subset_top

__all__ = ["RECALL_FILE", "RECALL_TOP", "SUBSET_FILE", "SUBSET_TOP", "server_predictions", "write_server_files"]

RECALL_TOP = 50  # the server's limit per query for Recall (file size at most 5 MB)
SUBSET_TOP = 3
RECALL_FILE = "recall_submission.json"
SUBSET_FILE = "recall_subset_submission.json"


def server_predictions(split: Split, queries: Sequence[Query], query_emb: torch.Tensor,
                       gallery_emb: torch.Tensor) -> tuple[dict[str, object], dict[str, object]]:
    """The Recall and Recall_subset objects for `queries` of `split` (labels are CIRR's image names)."""
    missing = [i for i, q in enumerate(queries) if q.query_id is None or q.subset is None]
    if missing:
        raise ValueError(f"query {missing[0]} has no pairid or img_set (Query.query_id / Query.subset): CIRR's server "
                         "files need a CIRR layout (loader cirr)")
    sources = torch.tensor([q.source for q in queries], device=query_emb.device)
    top = top_k(query_emb, gallery_emb.to(query_emb.device), k=RECALL_TOP, query_sources=sources).tolist()
    group = subset_top(query_emb, gallery_emb, queries, k=SUBSET_TOP)
    recall: dict[str, object] = {"version": VERSION, "metric": "recall"}
    subset: dict[str, object] = {"version": VERSION, "metric": "recall_subset"}
    for q, ranked, members in zip(queries, top, group):
        recall[str(q.query_id)] = [split.labels[i] for i in ranked]
        subset[str(q.query_id)] = [split.labels[i] for i in members]
    return recall, subset


def write_server_files(out: Path, split: Split, queries: Sequence[Query], query_emb: torch.Tensor,
                       gallery_emb: torch.Tensor) -> list[Path]:
    """Write RECALL_FILE and SUBSET_FILE into `out` (each complete or absent: written beside, then renamed)."""
    paths = []
    for name, content in zip((RECALL_FILE, SUBSET_FILE), server_predictions(split, queries, query_emb, gallery_emb)):
        tmp = out / f".{name}.tmp"
        tmp.write_text(json.dumps(content, sort_keys=True))
        os.replace(tmp, out / name)
        paths.append(out / name)
    return paths
