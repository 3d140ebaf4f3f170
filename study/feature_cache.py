"""Embed once per node, train on features: the cached output of frozen encoders.

    features = open_split_features(model, tokenizer, images=share.images["train"], texts=texts,
                                   encoder="clip_rn50", cache_dir=Path("/nvme/cirstudy"))
    features.gather(torch.tensor([5, 17]))      # (2, D) float32: image 5 and 17 as the image encoder saw them
    features.encode(["make it red"])            # ((1, D) text feature, lengths (1,)): the text side's input

With frozen encoders (budget `encoder_lr_factor: 0`) their output never changes, so a trial need only
train the composer on it (CLIP4Cir trains its combiner so). The first process on a node that asks for
a split under a pair of encoders embeds every image of the split's image map and every distinct text
once, in chunks of EMBED_CHUNK under torch.no_grad (frozen encoders are in eval mode), and writes
one folder `<cache>/features/<root>-<split>-<encoder>-<key>/`: `images.npy` (N, D) and `texts.npy`
(T, D) float32, `texts.json` (the T texts in row order) and, last, `meta.json`. As the image maps
(study/data/image_cache.py), the folder is built beside its final name and renamed into place under
a file lock (study/data/cache.py), so a folder under its final name is complete and every other
process of the node waits for it and reuses it; the arrays are read memory-mapped. The key hashes
FORMAT, the encoder's name, the encoders' fingerprint (sha256 of their weights and buffers,
models/model.py), the tokenizer, the texts and the image map's key (its image list with sizes and
mtimes, the image size and the preprocessing version): other weights, images or preprocessing give
another folder. Random frozen encoders differ per seed, so each seed then has its own features;
a weights file gives every seed the same.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from models.encoders import normalize_images
from models.model import CirModel
from models.text import Tokenizer
from study.data.cache import build_atomically, default_cache_dir, item_lock, remove_path
from study.data.image_cache import ImageMap
from study.evaluation import EMBED_CHUNK

__all__ = ["FORMAT", "SplitFeatures", "feature_cache_dir", "feature_key", "open_split_features"]

FORMAT = 1  # of the folder's files; part of the key
FEATURES_SUBDIR = "features"
META = "meta.json"  # written last: a folder without it is not ours, or was cut short


def feature_cache_dir(cache_dir: Path | None = None) -> Path:
    """Where cached features live: `<cache_dir>/features`, default `default_cache_dir()/features`."""
    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / FEATURES_SUBDIR


def feature_key(*, encoder: str, fingerprint: str, tokenizer: Tokenizer, texts: Sequence[str], map_key: str) -> str:
    """sha256 of everything the cached features depend on (see the module docstring)."""
    parts = {"format": FORMAT, "encoder": encoder, "fingerprint": fingerprint, "map_key": map_key,
             "tokenizer": hashlib.sha256(json.dumps(tokenizer.to_list()).encode()).hexdigest(),
             "texts": hashlib.sha256(json.dumps(list(texts)).encode()).hexdigest()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class SplitFeatures:
    """One split's cached features: each image of its image map (N, D) and each distinct text (T, D).

    Stands in for the image map (`gather`, `shape`) and the tokenizer (`encode`) where the model takes
    cached features (study/evaluation.py, study/feed.py). Every read is a copy the caller owns."""

    def __init__(self, folder: Path, meta: dict) -> None:
        self.folder, self.meta = Path(folder), meta
        self._images = np.load(self.folder / "images.npy", mmap_mode="r")  # (N, D) float32
        self._texts = np.load(self.folder / "texts.npy", mmap_mode="r")  # (T, D) float32
        texts = json.loads((self.folder / "texts.json").read_text())
        self._rows = {text: row for row, text in enumerate(texts)}

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self._images.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def gather(self, indices: Tensor | Sequence[int], out: Tensor | None = None) -> Tensor:
        """Image features of `indices` (any order, repeats allowed) as a float32 (B, D) copy."""
        idx = np.asarray(indices.cpu() if isinstance(indices, Tensor) else indices, dtype=np.int64)
        rows = torch.from_numpy(np.asarray(self._images[idx]))  # fancy indexing copies the rows
        return rows if out is None else out.copy_(rows)

    def text_features(self, texts: Sequence[str]) -> Tensor:
        """The text encoder's feature of each of `texts` (B, D); every text must be one this split cached."""
        try:
            rows = [self._rows[text] for text in texts]
        except KeyError as missing:
            raise ValueError(f"{self.folder}: text {missing.args[0]!r} is not among the split's cached texts; the "
                             "cache holds the texts of the split's queries") from None
        return torch.from_numpy(np.asarray(self._texts[np.asarray(rows, dtype=np.int64)]))

    def encode(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """The text side's input for cached features: ((B, D) float features, lengths (B,) of 1)."""
        return self.text_features(texts), torch.ones(len(texts), dtype=torch.long)

    def to_list(self) -> list[str]:
        return list(self._rows)

    def __repr__(self) -> str:
        return f"SplitFeatures({str(self.folder)!r}, images={self.shape}, texts={len(self._rows)})"


def open_split_features(model: CirModel, tokenizer: Tokenizer, *, images: ImageMap, texts: Sequence[str],
                        encoder: str, cache_dir: Path | None = None, device: torch.device = torch.device("cpu"),
                        fingerprint: str | None = None) -> SplitFeatures:
    """The node's cached features of one split under `model`'s frozen encoders, embedding them first
    if no process of this node has yet. `images`: the split's image map; `texts`: its query texts
    (repeats are fine); `fingerprint`: model.encoders_fingerprint(), when the caller has it."""
    if not model.config.frozen_encoders:
        raise ValueError("cached features need frozen encoders (ModelConfig.frozen_encoders): the output of "
                         "trained encoders changes at every step")
    texts = sorted(set(texts))
    fingerprint = fingerprint or model.encoders_fingerprint()
    key = feature_key(encoder=encoder, fingerprint=fingerprint, tokenizer=tokenizer, texts=texts,
                      map_key=images.header.key)
    folder = feature_cache_dir(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(images.header.root).name)[:40] or "root"
    name = f"{slug}-{images.header.split}-{encoder}-{key[:20]}"
    meta = _usable(folder / name, key)
    if meta is None:
        with item_lock(folder, name):
            meta = _usable(folder / name, key, report=True)  # another process may have built it meanwhile
            if meta is None:
                meta = _build(model, tokenizer, images, texts, folder, name, key=key, encoder=encoder,
                              fingerprint=fingerprint, device=device)
    return SplitFeatures(folder / name, meta)


def _usable(path: Path, key: str, *, report: bool = False) -> dict | None:
    """The meta of a complete folder for `key`, or None (absent; or damaged, and then removed: the caller
    holds the lock and rebuilds it)."""
    if not path.exists():
        return None
    try:
        meta = json.loads((path / META).read_text())
        n, width = meta["images"]
        count = meta["texts"][0]
        if meta["key"] != key or np.load(path / "images.npy", mmap_mode="r").shape != (n, width) \
                or np.load(path / "texts.npy", mmap_mode="r").shape != (count, width):
            raise ValueError("its files do not match its meta.json")
    except (OSError, ValueError, KeyError, TypeError) as why:
        if report:
            print(f"{path}: damaged feature cache ({why}); building it again", file=sys.stderr)
            remove_path(path)
        return None
    return meta


@torch.no_grad()
def _build(model: CirModel, tokenizer: Tokenizer, images: ImageMap, texts: list[str], folder: Path, name: str, *,
           key: str, encoder: str, fingerprint: str, device: torch.device) -> dict:
    start = time.monotonic()
    image_rows = []
    for first in range(0, len(images), EMBED_CHUNK):
        index = torch.arange(first, min(first + EMBED_CHUNK, len(images)))
        pixels = normalize_images(images.gather(index).to(device))
        image_rows.append(model.image_encoder(pixels).vector.float().cpu())  # (<= EMBED_CHUNK, D)
    text_rows = []
    for first in range(0, len(texts), EMBED_CHUNK):
        tokens, lengths = tokenizer.encode(texts[first : first + EMBED_CHUNK])
        text_rows.append(model.text_encoder(tokens.to(device), lengths.to(device)).float().cpu())
    image_features = torch.cat(image_rows).numpy()  # (N, D)
    text_features = torch.cat(text_rows).numpy() if text_rows else np.zeros((0, image_features.shape[1]), np.float32)
    meta = {"format": FORMAT, "key": key, "encoder": encoder, "fingerprint": fingerprint,
            "root": images.header.root, "split": images.header.split, "image_map": str(images.path),
            "images": list(image_features.shape), "texts": list(text_features.shape), "created": time.time(),
            "build_seconds": round(time.monotonic() - start, 3), "device": str(device)}
    with build_atomically(folder, name) as tmp:
        tmp.mkdir()
        np.save(tmp / "images.npy", image_features)
        np.save(tmp / "texts.npy", text_features)
        (tmp / "texts.json").write_text(json.dumps(texts))
        (tmp / META).write_text(json.dumps(meta, indent=1) + "\n")  # last: the folder is complete
    return meta
