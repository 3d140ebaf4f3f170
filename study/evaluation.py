"""Recall@K of one model on one split, by the dataset's protocol (methods.md A.8 and B.1).

The gallery is every image of the split; each query's own source image is excluded; a hit is any
retrieved image whose label equals the target's. Embeddings are computed in batches and scored in
chunks by `study.metrics.recall_at_k`, so no query x gallery matrix is held for large galleries.
"""
from __future__ import annotations

from typing import Sequence

import torch

from models.encoders import normalize_images
from models.model import CirModel
from models.text import Vocabulary
from study.data import Query, Split
from study.metrics import recall_at_k


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
    ks: Sequence[int], device: torch.device,
) -> dict[int, float]:
    """Recall@K for `queries` against the whole gallery of `split` (`images` = split.load_images())."""
    was_training = model.training
    model.eval()
    try:
        gallery = embed_gallery(model, images, device)
        query_emb = embed_queries(model, images, queries, vocab, device)
        return recall_at_k(
            query_emb, gallery,
            query_sources=torch.tensor([q.source for q in queries], device=device),
            query_targets=torch.tensor([q.target for q in queries], device=device),
            gallery_labels=split.labels, ks=ks,
        )
    finally:
        model.train(was_training)
