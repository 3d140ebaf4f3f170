"""Batches from a dataset's image map to the device, prepared ahead of the training step.

A background thread gathers each step's reference and target images from the node's image map
(`ImageMap.gather`), applies the dataset's train-time augmentation, tokenises the texts and, on CUDA,
places everything in pinned memory; the training loop copies a ready batch with `non_blocking=True`
and normalises it on the device, so the CPU prepares step t+1 while the device computes step t.
The thread consumes its augmentation generator in step order, so the batches are the same in every
run whatever the timing.

With frozen encoders on cached features (study/feature_cache.py) `FeatureFeed` gives each step's rows
of the split's features instead: no image is read and no encoder runs.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Iterator, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from models.batch import Batch
from models.encoders import normalize_images
from models.text import Vocabulary
from study.data import Query

__all__ = ["BatchFeed", "FeatureFeed", "HostBatch", "augment_images"]

PREFETCH = 2  # batches prepared ahead: one being copied, one being gathered


class Images(Protocol):
    def gather(self, indices: Tensor, out: Tensor | None = None) -> Tensor: ...


class CachedFeatures(Protocol):  # study.feature_cache.SplitFeatures
    def gather(self, indices: Tensor, out: Tensor | None = None) -> Tensor: ...

    def text_features(self, texts: Sequence[str]) -> Tensor: ...


def query_regions(queries: Sequence[Query]) -> Tensor | None:
    """(B, 4) float boxes of the regions the texts change, when every query of the batch has one."""
    if all(q.region is not None for q in queries):
        return torch.tensor([q.region for q in queries], dtype=torch.float32)
    return None


@dataclass(frozen=True)
class HostBatch:
    """One step's inputs on the host: uint8 images, token ids, regions."""

    reference: Tensor  # (B, 3, S, S) uint8
    target: Tensor  # (B, 3, S, S) uint8
    tokens: Tensor  # (B, L) long
    lengths: Tensor  # (B,) long
    regions: Tensor | None  # (B, 4) float, where every query of the batch has one

    def to_device(self, device: torch.device, *, channels_last: bool = False) -> Batch:
        """Copy (asynchronously from pinned memory) and normalise on the device."""
        memory_format = torch.channels_last if channels_last else torch.contiguous_format

        def images(x: Tensor) -> Tensor:
            return normalize_images(x.to(device, non_blocking=True)).contiguous(memory_format=memory_format)

        regions = None if self.regions is None else self.regions.to(device, non_blocking=True)
        return Batch(reference=images(self.reference), tokens=self.tokens.to(device, non_blocking=True),
                     lengths=self.lengths.to(device, non_blocking=True), target=images(self.target), regions=regions)


def augment_images(images: Tensor, mode: str, generator: torch.Generator) -> Tensor:
    """Train-time augmentation of uint8 images (B, 3, S, S), drawn from `generator`:
    "none"; "flip": each image mirrored left-right with probability 1/2; "crop_flip": a random S x S
    crop of the image zero-padded by S/8 on every side, then the flip. (Texts that name positions,
    CSS's "top-left", do not follow a flip: the default is none, as in TIRG.)"""
    if mode == "none":
        return images
    b, _, s, _ = images.shape
    if mode == "crop_flip":
        pad = max(1, s // 8)
        padded = F.pad(images, (pad, pad, pad, pad))  # (B, 3, S + 2p, S + 2p), zeros
        offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator)
        images = torch.stack([padded[i, :, y : y + s, x : x + s] for i, (y, x) in enumerate(offsets.tolist())])
    elif mode != "flip":
        raise ValueError(f"unknown augment {mode!r}; use none, flip or crop_flip")
    flip = torch.rand(b, generator=generator) < 0.5
    return torch.where(flip.view(b, 1, 1, 1), images.flip(3), images)


class BatchFeed:
    """Iterate the training batches of one epoch, each gathered ahead of the step.

    `steps` holds each step's queries (this rank's share); sources and targets index `images`.
    """

    def __init__(self, images: Images, vocab: Vocabulary, steps: Sequence[Sequence[Query]], *,
                 augment: str = "none", generator: torch.Generator | None = None, pin_memory: bool = False) -> None:
        self.images, self.vocab, self.steps = images, vocab, steps
        self.augment, self.pin_memory = augment, pin_memory
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def _host_batch(self, queries: Sequence[Query]) -> HostBatch:
        n = len(queries)
        sources = torch.tensor([q.source for q in queries])
        targets = torch.tensor([q.target for q in queries])
        reference = self.images.gather(sources, out=self._buffer(n))
        target = self.images.gather(targets, out=self._buffer(n))
        if self.augment != "none":
            reference = augment_images(reference, self.augment, self.generator)
            target = augment_images(target, self.augment, self.generator)
            if self.pin_memory:
                reference, target = reference.pin_memory(), target.pin_memory()
        tokens, lengths = self.vocab.encode([q.text for q in queries])
        regions = query_regions(queries)
        if self.pin_memory:
            tokens, lengths = tokens.pin_memory(), lengths.pin_memory()
            regions = None if regions is None else regions.pin_memory()
        return HostBatch(reference, target, tokens, lengths, regions)

    def _buffer(self, n: int) -> Tensor | None:
        """A fresh pinned buffer per batch: PyTorch's caching host allocator hands a block out again
        only after the asynchronous copies that read it have finished."""
        if not self.pin_memory:
            return None
        side = self.images.shape[-1]
        return torch.empty((n, 3, side, side), dtype=torch.uint8, pin_memory=True)

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[HostBatch]:
        ready: queue.Queue = queue.Queue(maxsize=PREFETCH)
        stop = threading.Event()

        def offer(item: HostBatch | BaseException | None) -> bool:
            """Queue `item` unless the consumer has stopped (it then never reads again: a plain put could
            wait forever on a full queue, and the consumer's join with it)."""
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for queries in self.steps:
                    if not offer(self._host_batch(queries)):
                        return
                offer(None)
            except BaseException as error:  # re-raised in the training thread, which owns the failure
                offer(error)

        thread = threading.Thread(target=produce, name="cirstudy-feed", daemon=True)
        thread.start()
        try:
            while True:
                item = ready.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join()


class FeatureFeed:
    """Iterate the training batches of one epoch from a split's cached features (frozen encoders):
    reference and target are rows of the image features (B, D), `tokens` the texts' features (B, D),
    already on `device`. Gathering rows costs microseconds, so no thread prepares them ahead."""

    def __init__(self, features: CachedFeatures, steps: Sequence[Sequence[Query]], device: torch.device) -> None:
        self.features, self.steps, self.device = features, steps, device

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[Batch]:
        for queries in self.steps:
            rows = self.features.gather(torch.tensor([q.source for q in queries] + [q.target for q in queries]))
            reference, target = rows.to(self.device).chunk(2)  # (B, D) each
            regions = query_regions(queries)
            yield Batch(reference=reference, tokens=self.features.text_features([q.text for q in queries]).to(self.device),
                        lengths=torch.ones(len(queries), dtype=torch.long, device=self.device), target=target,
                        regions=None if regions is None else regions.to(self.device))
