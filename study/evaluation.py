"""Recall@K of one model on one split, by the dataset's protocol (methods.md A.8 and B.1), with
the breakdowns a researcher inspects.

The gallery is every image of the split; each query's own source image is excluded; a hit is any
retrieved image whose label equals the target's. Embeddings are computed in batches and ranked in
chunks (`study.metrics`), so no query x gallery matrix is held for large galleries. Breakdowns:
recall per modification type (css add/remove/make, fashion per replaced attribute) and, where
labels have parts ("adj noun"), recall on each part alone (MIT-States' adjective-only and
noun-only recall).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from models.encoders import normalize_images
from models.model import CirModel
from models.text import Vocabulary
from study.data import Query, Split
from study.metrics import first_hit_ranks, recall_from_ranks


@dataclass(frozen=True)
class SplitEvaluation:
    query_emb: torch.Tensor  # (Q, D)
    gallery_emb: torch.Tensor  # (N, D)
    ranks: torch.Tensor  # (Q,) 0-based rank of the first correct gallery image
    recalls: dict[int, float]  # K -> recall
    breakdowns: dict[str, dict[int, float]]  # "add", "adjective_only", ... -> K -> recall


@torch.no_grad()
def embed_gallery(model: CirModel, images: torch.Tensor, device: torch.device, batch: int = 256) -> torch.Tensor:
    out = [model.embed_images(normalize_images(images[i : i + batch].to(device))) for i in range(0, len(images), batch)]
    return torch.cat(out)  # (N, D)


@torch.no_grad()
def embed_queries(
    model: CirModel, images: torch.Tensor, queries: Sequence[Query], vocab: Vocabulary,
    device: torch.device, batch: int = 256,
) -> torch.Tensor:
    out = []
    for i in range(0, len(queries), batch):
        chunk = queries[i : i + batch]
        sources = torch.tensor([q.source for q in chunk])
        tokens, lengths = vocab.encode([q.text for q in chunk])
        reference = normalize_images(images[sources].to(device))
        out.append(model.compose(reference, tokens.to(device), lengths.to(device)))
    return torch.cat(out)  # (Q, D)


def evaluate_split(
    model: CirModel, split: Split, images: torch.Tensor, queries: Sequence[Query], vocab: Vocabulary,
    ks: Sequence[int], device: torch.device, *, label_parts: Sequence[str] = (),
) -> SplitEvaluation:
    """Rank the whole gallery of `split` for `queries` (`images` = split.load_images()).
    `label_parts` names the space-separated parts of a label, e.g. ("adjective", "noun")."""
    was_training = model.training
    model.eval()
    try:
        gallery = embed_gallery(model, images, device)
        query_emb = embed_queries(model, images, queries, vocab, device)
    finally:
        model.train(was_training)
    sources = torch.tensor([q.source for q in queries], device=device)
    targets = torch.tensor([q.target for q in queries], device=device)

    def ranks_for(labels: Sequence[str]) -> torch.Tensor:
        return first_hit_ranks(query_emb, gallery, query_sources=sources, query_targets=targets, gallery_labels=labels)

    ranks = ranks_for(split.labels)
    breakdowns = {}
    kinds = sorted({q.kind for q in queries})
    if len(kinds) > 1:
        kind_of = [q.kind for q in queries]
        for kind in kinds:
            mask = torch.tensor([k == kind for k in kind_of], device=ranks.device)
            breakdowns[kind] = recall_from_ranks(ranks[mask], ks)
    for position, part in enumerate(label_parts):
        part_labels = [label.split(" ")[position] if len(label.split(" ")) > position else label for label in split.labels]
        breakdowns[f"{part}_only"] = recall_from_ranks(ranks_for(part_labels), ks)
    return SplitEvaluation(query_emb, gallery, ranks, recall_from_ranks(ranks, ks), breakdowns)
