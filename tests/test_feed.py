"""study/feed.py: batches gathered ahead of the step are exactly the step's queries, augmentation
is what its docstring says and the same in every run, and a failure in the feed thread reaches the
training loop."""
from __future__ import annotations

import pytest
import torch

from models.encoders import normalize_images
from models.text import Vocabulary
from study.data import Query
from study.feed import BatchFeed, augment_images


class TensorImages:
    """An image map over a tensor (the feed only needs `shape` and `gather`)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images, self.shape = images, tuple(images.shape)

    def gather(self, indices, out=None):
        picked = self.images[torch.as_tensor(indices)]
        return picked if out is None else out.copy_(picked)


def make_images(n: int = 6, side: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_batches_are_the_steps_queries_in_order() -> None:
    images = make_images()
    vocab = Vocabulary.build(["make it red", "add a circle"])
    steps = [[Query(0, "make it red", 1, "make", None), Query(2, "add a circle", 3, "add", (0, 0, 0.5, 0.5))],
             [Query(4, "make it red", 5, "make", (0.1, 0.2, 0.3, 0.4)), Query(5, "add", 0, "add", (0, 0, 1, 1))]]
    batches = list(BatchFeed(TensorImages(images), vocab, steps))
    assert len(batches) == 2
    assert torch.equal(batches[0].reference, images[[0, 2]]) and torch.equal(batches[0].target, images[[1, 3]])
    assert torch.equal(batches[1].reference, images[[4, 5]]) and torch.equal(batches[1].target, images[[5, 0]])
    tokens, lengths = vocab.encode(["make it red", "add"])
    assert torch.equal(batches[1].tokens, tokens) and torch.equal(batches[1].lengths, lengths)
    assert batches[0].regions is None  # one query of the first step has no region
    assert torch.allclose(batches[1].regions, torch.tensor([[0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1]]))
    device = batches[1].to_device(torch.device("cpu"))
    assert torch.equal(device.reference, normalize_images(images[[4, 5]]))


def test_flip_mirrors_exactly_the_drawn_images() -> None:
    images = make_images(n=64)
    out = augment_images(images, "flip", torch.Generator().manual_seed(3))
    drawn = torch.rand(64, generator=torch.Generator().manual_seed(3)) < 0.5
    for i in range(64):
        assert torch.equal(out[i], images[i].flip(2) if drawn[i] else images[i])
    assert 0 < int(drawn.sum()) < 64


def test_crop_flip_is_a_shifted_window_of_the_padded_image() -> None:
    images = make_images(n=16, side=16)
    out = augment_images(images, "crop_flip", torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(16):  # every output is one of the 5 x 5 windows, mirrored or not
        windows = [padded[i, :, y : y + 16, x : x + 16] for y in range(5) for x in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(2)) for w in windows)


def test_augmented_feed_is_the_same_in_every_run() -> None:
    images = TensorImages(make_images(n=10))
    vocab = Vocabulary.build(["x"])
    steps = [[Query(i, "x", (i + 1) % 10, "k", None) for i in range(j, j + 2)] for j in range(0, 8, 2)]

    def run() -> list[torch.Tensor]:
        feed = BatchFeed(images, vocab, steps, augment="crop_flip", generator=torch.Generator().manual_seed(7))
        return [b.reference for b in feed]

    assert all(torch.equal(a, b) for a, b in zip(run(), run()))


def test_a_failure_in_the_feed_thread_reaches_the_loop() -> None:
    class Broken(TensorImages):
        def gather(self, indices, out=None):
            raise OSError("disk gone")

    feed = BatchFeed(Broken(make_images()), Vocabulary.build(["x"]), [[Query(0, "x", 1, "k", None)]])
    with pytest.raises(OSError, match="disk gone"):
        list(feed)
