"""What every dataset hands to training and evaluation: queries, splits and the pair of splits.

A query is (source image, modification text) -> target image, as in TIRG (Vo et al., CVPR 2019,
arXiv 1812.07119). A retrieved image is correct iff its label equals the label of the query's
target (CSS: the scene label, so duplicate renderings count; MIT-States: "adj noun"; Fashion200k:
the product caption; FashionIQ, Shoes and CIRR: the image id itself, so only the target counts).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from study.data.images import Preprocessing, load_image


@dataclass(frozen=True)
class Query:
    source: int  # index into split.image_paths
    text: str
    target: int  # index into split.image_paths (one image carrying the target label)
    # modification type, for per-kind recall: css "add" / "remove" / "make"; mitstates
    # "adjective"; fashion200k the replaced attribute "color" / "pattern" / "length" / "category"
    # (else "word"); fashioniq and shoes "caption" (free text, no type)
    kind: str
    # (top, left, bottom, right) in [0, 1] image fractions: the area the text asks to change;
    # None where the layout does not say (MMGrad-style region supervision skips those queries).
    region: tuple[float, float, float, float] | None
    # CIRR's img_set: indices into split.image_paths of the related images (the source among them)
    # that Recall_subset ranks the target within (study/subset_recall.py); None where a layout has none.
    subset: tuple[int, ...] | None = None
    # The layout's own id of the query, which prediction files are keyed by (CIRR's pairid); None elsewhere.
    query_id: str | None = None


@dataclass(frozen=True)
class Split:
    name: str  # "train" | "test"
    root: Path
    image_paths: tuple[str, ...]  # relative to root
    labels: tuple[str, ...]  # hit rule: retrieved image correct iff label == labels[query.target]
    queries: tuple[Query, ...]
    image_size: int  # square side S the images are delivered at (study/data/images.py's Preprocessing)

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(self.image_size)

    def load_image(self, index: int) -> torch.Tensor:
        """One image decoded now, as uint8 (3, S, S) RGB (a few images, e.g. a sample grid). Training
        and evaluation read the node's decoded copy instead: study.data.image_cache.open_image_map."""
        return load_image(self.root / self.image_paths[index], self.image_size)


@dataclass(frozen=True)
class ImageManifest:
    """Which images the layout's files list and which of them are absent on disk."""

    listed: int  # distinct image paths listed over both splits
    missing: int  # of those, absent on disk
    missing_examples: tuple[str, ...]  # up to MISSING_EXAMPLES relative paths, sorted
    sha256: str  # of "\n".join(sorted(listed relative paths)): which image set a result used
    dropped_queries: int = 0  # queries removed because they touch a missing image


@dataclass(frozen=True)
class RetrievalData:
    name: str
    train: Split
    test: Split
    # css (1, 5, 10, 50); states / mitstates (1, 5, 10); fashion200k and shoes (1, 10, 50);
    # fashioniq (10, 50); cirr (1, 5, 10, 50), plus Recall_subset@{1, 2, 3} over Query.subset
    recall_ks: tuple[int, ...]
    # Human-readable facts for `python -m study.data describe` (held-out pairs, test nouns,
    # protocol choices such as how FashionIQ's two captions are joined).
    notes: tuple[str, ...] = ()
    manifest: ImageManifest | None = None  # set by every loader (study/data/checks.py)
    # Names of the space-separated parts of a label, for per-part recall: MIT-States' "adj noun"
    # gives adjective-only and noun-only recall (TIRG logs both). Empty: labels are atomic.
    label_parts: tuple[str, ...] = ()
    # Why a study cannot use what dropping missing images left (no image at all, or a split without
    # images or queries), naming the files and the fix; "" when usable. open_dataset refuses such
    # data; `python -m study.data describe` still shows it.
    unusable: str = ""
