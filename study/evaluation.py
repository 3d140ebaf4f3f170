"""Recall@K of one model on one split, by the dataset's protocol (methods.md A.8 and B.1), with
the breakdowns a researcher inspects; sharded over data-parallel ranks.

The gallery is every image of the split; each query's own source image is excluded; a hit is any
retrieved image whose label equals the target's. Gallery images and queries are embedded in fixed
chunks of EMBED_CHUNK, chunk c on rank c % world, and gathered on rank 0 in chunk order: a chunk is
the same batch on any number of ranks, so the embeddings, and the recalls, are exactly those of a
single-rank evaluation. Ranking runs in chunks of queries (`study.metrics`), so no query x gallery
matrix is held for large galleries. Breakdowns: recall per modification type (css add/remove/make,
fashion per replaced attribute) and, where labels have parts ("adj noun"), recall on each part
alone (MIT-States' adjective-only and noun-only recall), and where queries carry a subset (CIRR's
img_set), Recall_subset@{1,2,3} as breakdown "subset" (study/subset_recall.py).

With frozen encoders on cached features, `images` and `vocab` are the split's cached features
(study/feature_cache.py SplitFeatures): the same code then embeds without running an encoder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
import torch.distributed as dist

from models.encoders import normalize_images
from models.model import CirModel
from models.text import Tokenizer
from study.data import Query, Split
from study.metrics import first_hit_ranks, recall_from_ranks
from study.subset_recall import has_subsets, subset_recalls

__all__ = ["EMBED_CHUNK", "SplitEvaluation", "embed_gallery", "embed_queries", "evaluate_split", "model_input",
           "score_split"]

EMBED_CHUNK = 256  # images per embedding batch; fixed, so a chunk is the same batch at any world size


class Images(Protocol):
    shape: tuple[int, ...]

    def gather(self, indices: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class SplitEvaluation:
    query_emb: torch.Tensor  # (Q, D)
    gallery_emb: torch.Tensor  # (N, D)
    ranks: torch.Tensor  # (Q,) 0-based rank of the first correct gallery image
    recalls: dict[int, float]  # K -> recall
    breakdowns: dict[str, dict[int, float]]  # "add", "adjective_only", ... -> K -> recall


def _my_chunks(total: int, rank: int, world: int) -> list[int]:
    return list(range(rank, -(-total // EMBED_CHUNK), world))


def model_input(rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    """What the model's image side takes: uint8 images (an image map's) normalised on the device;
    float rows (cached features of frozen encoders) as they are."""
    rows = rows.to(device)
    return normalize_images(rows) if rows.dtype == torch.uint8 else rows


@torch.no_grad()
def embed_gallery(model: CirModel, images: Images, device: torch.device, *, rank: int = 0,
                  world: int = 1) -> dict[int, torch.Tensor]:
    """This rank's chunks of gallery features: chunk index -> (<= EMBED_CHUNK, D) on the CPU."""
    total = images.shape[0]
    out = {}
    for chunk in _my_chunks(total, rank, world):
        index = torch.arange(chunk * EMBED_CHUNK, min((chunk + 1) * EMBED_CHUNK, total))
        out[chunk] = model.embed_images(model_input(images.gather(index), device)).float().cpu()
    return out


@torch.no_grad()
def embed_queries(model: CirModel, images: Images, queries: Sequence[Query], vocab: Tokenizer,
                  device: torch.device, *, rank: int = 0, world: int = 1) -> dict[int, torch.Tensor]:
    """This rank's chunks of composed query features: chunk index -> (<= EMBED_CHUNK, D) on the CPU."""
    out = {}
    for chunk in _my_chunks(len(queries), rank, world):
        part = queries[chunk * EMBED_CHUNK : (chunk + 1) * EMBED_CHUNK]
        tokens, lengths = vocab.encode([q.text for q in part])
        reference = model_input(images.gather(torch.tensor([q.source for q in part])), device)
        out[chunk] = model.compose(reference, tokens.to(device), lengths.to(device)).float().cpu()
    return out


def _gather_chunks(chunks: dict[int, torch.Tensor], world: int) -> torch.Tensor | None:
    """Every rank's chunks, concatenated in chunk order on rank 0 (None elsewhere)."""
    if world == 1:
        return torch.cat([chunks[c] for c in sorted(chunks)])
    gathered: list | None = [None] * world if dist.get_rank() == 0 else None
    dist.gather_object(chunks, gathered, dst=0)
    if gathered is None:
        return None
    merged = {c: t for part in gathered for c, t in part.items()}
    return torch.cat([merged[c] for c in sorted(merged)])


def score_split(query_emb: torch.Tensor, gallery_emb: torch.Tensor, split: Split, queries: Sequence[Query],
                ks: Sequence[int], *, label_parts: Sequence[str] = ()) -> SplitEvaluation:
    """Ranks, recalls and breakdowns from the embeddings of `queries` and of the split's gallery."""
    sources = torch.tensor([q.source for q in queries], device=query_emb.device)
    targets = torch.tensor([q.target for q in queries], device=query_emb.device)

    def ranks_for(labels: Sequence[str]) -> torch.Tensor:
        return first_hit_ranks(query_emb, gallery_emb, query_sources=sources, query_targets=targets,
                               gallery_labels=labels)

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
    if has_subsets(queries):  # CIRR: the target among the query's img_set members only
        breakdowns["subset"] = subset_recalls(query_emb, gallery_emb, queries, split.labels)
    return SplitEvaluation(query_emb, gallery_emb, ranks, recall_from_ranks(ranks, ks), breakdowns)


def evaluate_split(
    model: CirModel, split: Split, images: Images, queries: Sequence[Query], vocab: Tokenizer,
    ks: Sequence[int], device: torch.device, *, label_parts: Sequence[str] = (), rank: int = 0, world: int = 1,
) -> SplitEvaluation | None:
    """Rank the whole gallery of `split` for `queries` (`images`: the split's image map).
    `label_parts` names the space-separated parts of a label, e.g. ("adjective", "noun").
    With world > 1 every rank must call it; rank 0 gets the result, the others None."""
    was_training = model.training
    model.eval()
    try:
        gallery = _gather_chunks(embed_gallery(model, images, device, rank=rank, world=world), world)
        query_emb = _gather_chunks(embed_queries(model, images, queries, vocab, device, rank=rank, world=world), world)
    finally:
        model.train(was_training)
    if gallery is None or query_emb is None:
        return None
    return score_split(query_emb.to(device), gallery.to(device), split, queries, ks, label_parts=label_parts)
