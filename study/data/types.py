"""What every dataset hands to training and evaluation: queries, splits and the pair of splits.

A query is (source image, modification text) -> target image, as in TIRG (Vo et al., CVPR 2019,
arXiv 1812.07119). A retrieved image is correct iff its label equals the label of the query's
target (CSS: the scene label, so duplicate renderings count; MIT-States: "adj noun"; Fashion200k:
the product caption; FashionIQ and Shoes: the image id itself, so only the target counts).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from study.data.images import read_image


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


@dataclass(frozen=True)
class Split:
    name: str  # "train" | "test"
    root: Path
    image_paths: tuple[str, ...]  # relative to root
    labels: tuple[str, ...]  # hit rule: retrieved image correct iff label == labels[query.target]
    queries: tuple[Query, ...]
    image_size: int  # square side the images are delivered at

    def load_image(self, index: int) -> torch.Tensor:
        """One image as uint8 (3, S, S) RGB."""
        pixels = read_image(self.root / self.image_paths[index], self.image_size)  # (S, S, 3)
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))

    def load_images(self) -> torch.Tensor:
        """All images in order as uint8 (N, 3, S, S) RGB; a missing or unreadable file raises
        DatasetError naming it."""
        out = np.empty((len(self.image_paths), self.image_size, self.image_size, 3), dtype=np.uint8)
        for i, rel in enumerate(self.image_paths):
            out[i] = read_image(self.root / rel, self.image_size)
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()  # (N, 3, S, S)


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
    # fashioniq (10, 50)
    recall_ks: tuple[int, ...]
    # Human-readable facts for `python -m study.data describe` (held-out pairs, test nouns,
    # protocol choices such as how FashionIQ's two captions are joined).
    notes: tuple[str, ...] = ()
    manifest: ImageManifest | None = None  # set by every loader (study/data/checks.py)
    # Names of the space-separated parts of a label, for per-part recall: MIT-States' "adj noun"
    # gives adjective-only and noun-only recall (TIRG logs both). Empty: labels are atomic.
    label_parts: tuple[str, ...] = ()
