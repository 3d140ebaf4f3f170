"""Classification of unseen adjective-noun compositions by composed prototypes (TIRG's MIT-States
experiment, Vo et al., CVPR 2019, arXiv 1812.07119; the split of Misra et al., "From Red Wine to
Red Tomato", CVPR 2017). Our definitions, in full in docs/classification.md:

    python -m study.classify CHECKPOINT --dataset states           # the composition split, as trained
    python -m study.classify CHECKPOINT --dataset mitstates --root /data/mit --option split_seed=0

On a dataset opened with `split: compositions` (study/data/mitstates.py), for each pair (a, n) its
prototype is the mean, over the TRAINING images x of noun n (any adjective), of `model.compose(x,
"a")`; a test image is assigned the candidate pair whose prototype is nearest (cosine) to its image
embedding `model.embed_images`. Top-1 accuracy over the test images (the images of the unseen
pairs), with two candidate sets:
  closed world  the unseen (test) pairs only; chance 1 / their number
  all pairs     every pair of the dataset, seen (train) and unseen; chance 1 / their number
Exactly tied nearest prototypes share the image's hit (1/k each of k tied): the expected accuracy
of a random tie-break, not an artefact of the candidates' order. It matters for image_only, whose
prototypes of one noun coincide (it ignores the text), so it scores noun recognition / the noun's
candidate pairs. Images are embedded and scored in chunks of EMBED_CHUNK, so no (images x pairs)
matrix larger than EMBED_CHUNK rows is held. `classify_compositions` is what a study can call per epoch.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

from models.encoders import normalize_images
from models.model import CirModel, TextInput
from models.text import Vocabulary
from study.budget import DatasetEntry
from study.data import DatasetError, RetrievalData, Split, open_image_map
from study.data.checks import parse_options
from study.evaluation import EMBED_CHUNK, Images, embed_gallery

if TYPE_CHECKING:
    from study.worker import SeedRun

__all__ = ["classify_run", "ClassificationResult", "classify_compositions", "composition_pairs", "pair_prototypes"]

SPLIT_OPTIONS = {"split": "compositions"}  # what the CLI opens unless --option says otherwise

Pair = tuple[str, str]  # (adjective, noun)


@dataclass(frozen=True)
class ClassificationResult:
    """Top-1 accuracy over the test images, closed world and over all pairs (module docstring)."""

    images: int  # test images classified
    unseen_pairs: int  # closed-world candidates: the test pairs
    all_pairs: int  # train and test pairs
    closed_world_hits: float  # images whose nearest prototype is their pair's; a k-way tie counts 1/k
    all_pairs_hits: float
    # (images,) per test image, the number of OTHER unseen pairs whose prototype is at least as near as its
    # own pair's (0 = classified right; a tie counts against it, study.metrics' rule): what a study logs
    # as the split "classify" (recall/<key>/classify@K = closed-world top-K accuracy) and resamples
    closed_world_ranks: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long), compare=False)

    @property
    def closed_world_top1(self) -> float:
        return self.closed_world_hits / self.images

    @property
    def all_pairs_top1(self) -> float:
        return self.all_pairs_hits / self.images

    @property
    def closed_world_chance(self) -> float:
        return 1.0 / self.unseen_pairs

    @property
    def all_pairs_chance(self) -> float:
        return 1.0 / self.all_pairs


def _pair(label: str, split: Split) -> Pair:
    words = label.split(" ")
    if len(words) != 2:
        raise ValueError(f"{split.root}: {split.name} label {label!r} is not 'adjective noun'; composition "
                         "classification reads MIT-States-style labels (datasets mitstates and states)")
    return words[0], words[1]


def composition_pairs(data: RetrievalData, vocab: Vocabulary) -> tuple[list[Pair], list[Pair]]:
    """(unseen test pairs, every pair), each sorted by "adj noun"; raises ValueError, saying why, when
    `data` is not a composition split a model with `vocab` can classify."""
    train = {_pair(label, data.train) for label in data.train.labels}
    test = {_pair(label, data.test) for label in data.test.labels}
    fix = "open the dataset with options={'split': 'compositions'} (--option split=compositions)"
    if train & test:
        raise ValueError(f"dataset {data.name}: {len(train & test)} test pairs also train (e.g. "
                         f"{' '.join(min(train & test))!r}): these are not unseen compositions; {fix}")
    train_nouns = {noun for _, noun in train}
    orphans = sorted({noun for _, noun in test} - train_nouns)
    if orphans:
        raise ValueError(f"dataset {data.name}: test nouns {orphans[:5]} have no training image to compose a "
                         f"prototype from (a noun-disjoint split?); {fix}")
    unknown = sorted({adj for adj, _ in test | train if not vocab.encode([adj])[0].any()})
    if unknown:
        raise ValueError(f"dataset {data.name}: adjectives {unknown[:5]} are not in the model's vocabulary "
                         "(it was trained on other data, or another split_seed); classify with the data it trained on")
    order = lambda pair: f"{pair[0]} {pair[1]}"  # noqa: E731 - the labels' own order
    return sorted(test, key=order), sorted(train | test, key=order)


@torch.no_grad()
def pair_prototypes(model: CirModel, split: Split, images: Images, pairs: Sequence[Pair], vocab: Vocabulary,
                    device: torch.device) -> torch.Tensor:
    """(P, D) on the CPU: row p is the mean, over the images of `split` whose noun is pairs[p]'s, of
    `model.compose(x, adjective)`. This is what `compose` computes, with each chunk of a noun's images
    through the image encoder once and each adjective through the text encoder once (in eval mode
    the results do not depend on what else is in the batch); then the composer per (chunk, adjective)."""
    members: dict[str, list[int]] = defaultdict(list)  # noun -> its images in `split`
    for i, label in enumerate(split.labels):
        members[_pair(label, split)[1]].append(i)
    rows: dict[str, list[int]] = defaultdict(list)  # noun -> its rows in `pairs`
    for p, (_, noun) in enumerate(pairs):
        rows[noun].append(p)
    adjectives = sorted({adj for adj, _ in pairs})
    tokens, lengths = vocab.encode(adjectives)  # (A, L), (A,)
    tokens, lengths = tokens.to(device), lengths.to(device)
    texts = model.encode_text(tokens, lengths).features  # (A, D)
    column = {adj: a for a, adj in enumerate(adjectives)}
    sums: torch.Tensor | None = None
    for noun, wanted in rows.items():
        if not members[noun]:
            raise ValueError(f"{split.root}: no {split.name} image of noun {noun!r} to compose a prototype from")
        for start in range(0, len(members[noun]), EMBED_CHUNK):
            index = torch.tensor(members[noun][start : start + EMBED_CHUNK])
            features = model.image_encoder(normalize_images(images.gather(index).to(device)))
            for p in wanted:
                a, b = column[pairs[p][0]], len(index)
                text = TextInput(texts[a].expand(b, -1), tokens[a].expand(b, -1), lengths[a].expand(b))
                composed = model.composer(features, text).float()  # (b, D)
                if sums is None:
                    sums = torch.zeros(len(pairs), composed.shape[1])
                sums[p] += composed.sum(0).cpu()
        sums[wanted] /= len(members[noun])
    if sums is None:
        raise ValueError("pair_prototypes: no pairs given")
    return sums


def _hits(embeddings: torch.Tensor, prototypes: torch.Tensor, truth: torch.Tensor) -> float:
    """How many rows of `embeddings` (N, D), unit length, have their nearest prototype (P, D), unit
    length, at `truth` (N,), a k-way tie for the nearest counting 1/k; chunked, no (N, P) matrix."""
    hits = 0.0
    for start in range(0, len(embeddings), EMBED_CHUNK):
        scores = embeddings[start : start + EMBED_CHUNK] @ prototypes.T  # (chunk, P)
        nearest = scores == scores.max(dim=1, keepdim=True).values  # (chunk, P), several where tied
        mine = nearest.gather(1, truth[start : start + EMBED_CHUNK].view(-1, 1)).squeeze(1)  # (chunk,)
        hits += float((mine / nearest.sum(dim=1)).sum())
    return hits


def _ranks(embeddings: torch.Tensor, prototypes: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """(N,) long: per row of `embeddings`, how many prototypes other than `truth`'s score >= its own."""
    ranks = []
    for start in range(0, len(embeddings), EMBED_CHUNK):
        scores = embeddings[start : start + EMBED_CHUNK] @ prototypes.T  # (chunk, P)
        own = scores.gather(1, truth[start : start + EMBED_CHUNK].view(-1, 1))  # (chunk, 1)
        ahead = (scores >= own).sum(dim=1) - 1  # its own prototype is >= itself
        ranks.append(torch.where(own.squeeze(1).isnan(), len(prototypes), ahead))  # NaN: a miss at every K
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)


def classify_compositions(model: CirModel, data: RetrievalData, images: dict[str, Images], vocab: Vocabulary,
                          device: torch.device) -> ClassificationResult:
    """Closed-world and all-pairs top-1 accuracy of `model` on `data`'s test images (module docstring).
    `images`: split name -> its image map ("train" and "test"), as study.worker.DatasetShare holds them."""
    unseen, every = composition_pairs(data, vocab)
    was_training = model.training
    model.eval()
    try:
        prototypes = F.normalize(pair_prototypes(model, data.train, images["train"], every, vocab, device), dim=1)
        chunks = embed_gallery(model, images["test"], device)
        embeddings = F.normalize(torch.cat([chunks[c] for c in sorted(chunks)]), dim=1)  # (N, D)
    finally:
        model.train(was_training)
    where = {pair: p for p, pair in enumerate(every)}
    labels = [_pair(label, data.test) for label in data.test.labels]
    closed_rows = torch.tensor([where[pair] for pair in unseen])
    closed_index = {pair: k for k, pair in enumerate(unseen)}
    closed_truth = torch.tensor([closed_index[p] for p in labels])
    return ClassificationResult(
        images=len(labels), unseen_pairs=len(unseen), all_pairs=len(every),
        closed_world_hits=_hits(embeddings, prototypes[closed_rows], closed_truth),
        all_pairs_hits=_hits(embeddings, prototypes, torch.tensor([where[p] for p in labels])),
        closed_world_ranks=_ranks(embeddings, prototypes[closed_rows], closed_truth),
    )


def classify_run(run: "SeedRun") -> ClassificationResult:
    """The classification of one trained seed's model on its dataset (a study's per-epoch metric). It
    runs the image encoder on the images, so trials on cached frozen features do not classify."""
    share = run.share
    return classify_compositions(run.model, share.data, share.images, share.vocab, run.device)


def main(argv: list[str] | None = None) -> int:
    # study.evaluate's checkpoint readers, imported here: it imports study.train (Ray, and study.worker, which may
    # import this module to classify per epoch), too much for the library part above and a cycle at import
    from study.evaluate import DEFAULT_SCALE, check_device, open_checkpoint

    parser = argparse.ArgumentParser(prog="python -m study.classify", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a Train checkpoint directory (or its state.pt)")
    parser.add_argument("--dataset", required=True, help="states (generated) or mitstates (with --root)")
    parser.add_argument("--root", type=Path, help="a real MIT-States download; default: the generated dataset")
    parser.add_argument("--run", help="which of the checkpoint's models (`<dataset key>@seed<n>`); "
                                      "default: the one trained on --dataset's composition split")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="loader option, added to split=compositions: e.g. split_seed=1")
    parser.add_argument("--scale", type=float, default=None,
                        help=f"generated dataset size; default: the one the model was trained at (else {DEFAULT_SCALE})")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=None,
                        help="square side; default: the one the model was trained at (else the dataset's)")
    parser.add_argument("--allow-other-scale", action="store_true",
                        help="classify at a --scale or --image-size other than the model was trained at")
    parser.add_argument("--cache-dir", type=Path, default=None, help="cache folder (generated data, image maps); "
                        "default $CIRSTUDY_CACHE or ~/.cache/cirstudy/data")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    try:
        device = check_device(args.device)
        options = {**SPLIT_OPTIONS, **parse_options(args.option)}
        key = DatasetEntry(args.dataset, options=tuple(sorted(options.items()))).key
        opened = open_checkpoint(args, key=key, options=options, device=device)
        model, vocab, data, run = opened.model, opened.vocab, opened.data, opened.run
        if run.split("@")[0] != key:
            print(f"warning: model {run} was trained on dataset {run.split('@')[0]}, not {key}: if it saw these test "
                  "pairs in training, the accuracies below are not of unseen compositions", file=sys.stderr)
        images = {s.name: open_image_map(s, cache_dir=args.cache_dir, progress=True) for s in (data.train, data.test)}
        result = classify_compositions(model, data, images, vocab, device)
    except (OSError, ValueError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    options_text = ", ".join(f"{k}={v}" for k, v in sorted(options.items()))
    print(f"{args.dataset} ({options_text}), model {run}: {result.images} test images of {result.unseen_pairs} "
          f"unseen pairs; {result.all_pairs} pairs in all")
    print(f"  closed world (unseen pairs only)  top-1 {result.closed_world_top1:.4f}  "
          f"({result.closed_world_hits:g}/{result.images}; chance {result.closed_world_chance:.4f})")
    print(f"  all pairs (seen and unseen)       top-1 {result.all_pairs_top1:.4f}  "
          f"({result.all_pairs_hits:g}/{result.images}; chance {result.all_pairs_chance:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
