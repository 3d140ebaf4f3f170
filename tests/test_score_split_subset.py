"""score_split scores CIRR's Recall_subset beside Recall@K when every query carries its img_set."""
from __future__ import annotations

from pathlib import Path

import torch

from study.data.types import Query, Split
from study.evaluation import score_split


def _split(queries: tuple[Query, ...]) -> Split:
    names = tuple(f"img{i}" for i in range(6))
    return Split("test", Path("."), names, names, queries, image_size=64)


def test_subset_recall_is_the_rank_of_the_target_among_the_other_members_of_its_set() -> None:
    # gallery: 6 images on the axes of R^6 plus noise-free; query 0 is closest to image 4 (outside its
    # set), then image 2 (its target, inside its set): whole-gallery rank 1, subset rank 0.
    gallery = torch.eye(6)
    query_emb = torch.tensor([[0.0, 0.0, 0.8, 0.0, 0.9, 0.0],   # source 0, target 2, set {0, 1, 2, 3}
                              [0.0, 0.7, 0.0, 0.9, 0.0, 0.0]])  # source 0, target 1, set {0, 1, 3}: 3 beats 1
    queries = (Query(0, "a", 2, "caption", None, subset=(0, 1, 2, 3)),
               Query(0, "b", 1, "caption", None, subset=(0, 1, 3)))
    result = score_split(query_emb, gallery, _split(queries), queries, ks=(1, 5))
    assert result.ranks.tolist() == [1, 1]
    assert result.breakdowns["subset"] == {1: 0.5, 2: 1.0, 3: 1.0}


def test_no_subset_breakdown_without_img_sets() -> None:
    queries = (Query(0, "a", 2, "caption", None), Query(1, "b", 3, "caption", None))
    result = score_split(torch.eye(6)[[2, 3]], torch.eye(6), _split(queries), queries, ks=(1,))
    assert "subset" not in result.breakdowns and result.recalls == {1: 1.0}
