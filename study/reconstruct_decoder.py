"""The decoder of `study.reconstruct`: a small deconvolutional network that maps an embedding back to
a 64 x 64 image, trained with a pixel loss on a frozen model's image embeddings (docs/reconstruction.md).

TIRG (Vo et al., CVPR 2019, https://arxiv.org/abs/1812.07119) shows composed CSS features as images
this way; its exact decoder could not be re-read, so this one is ours:

    feature (B, D) -> unit length x sqrt(D)          retrieval scores by cosine: only the direction counts
    Linear(D -> 128 * 4 * 4) -> ReLU -> (B, 128, 4, 4)
    ConvTranspose2d(128 -> 64, 4, stride 2) -> BatchNorm -> ReLU      8 x 8
    ConvTranspose2d(64 -> 32, 4, stride 2) -> BatchNorm -> ReLU       16 x 16
    ConvTranspose2d(32 -> 16, 4, stride 2) -> BatchNorm -> ReLU       32 x 32
    ConvTranspose2d(16 -> 3, 4, stride 2) -> sigmoid                  64 x 64, RGB in [0, 1]

About 0.44 M parameters at D = 128 (the default budget's) and 1.22 M at D = 512 (`parameter_count`);
the loss is the mean squared error per pixel and channel against the image scaled to [0, 1].
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DECODED_SIZE", "Decoder", "DecoderConfig", "DecoderFit", "FitConfig", "decoded_pixels", "fit_decoder",
           "held_out_split", "parameter_count", "pixel_loss", "to_unit_pixels"]

DECODED_SIZE = 64  # px: the generated CSS's native size; larger images are reduced to it for the loss


@dataclass(frozen=True)
class DecoderConfig:
    embed_dim: int
    width: int = 128  # channels of the 4 x 4 seed map, halved by each up-sampling stage

    def __post_init__(self) -> None:
        for name in ("embed_dim", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DecoderConfig.{name} must be a positive int, got {value!r}")
        if self.width % 8:
            raise ValueError(f"DecoderConfig.width must be a multiple of 8 (halved three times), got {self.width}")


def _up(c_in: int, c_out: int) -> nn.Sequential:
    # kernel 4, stride 2, padding 1 doubles the side exactly (no checkerboard offset at the border)
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class Decoder(nn.Module):
    """Embedding (B, D) -> image (B, 3, 64, 64) in [0, 1]."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.seed = nn.Sequential(nn.Linear(config.embed_dim, w * 16), nn.ReLU(inplace=True))
        self.up = nn.Sequential(_up(w, w // 2), _up(w // 2, w // 4), _up(w // 4, w // 8),
                                nn.ConvTranspose2d(w // 8, 3, 4, stride=2, padding=1))

    def forward(self, features: Tensor) -> Tensor:  # features (B, D), un-normalised
        unit = F.normalize(features.float(), dim=1) * math.sqrt(self.config.embed_dim)  # entries of order 1
        seed = self.seed(unit).view(len(features), self.config.width, 4, 4)  # (B, w, 4, 4)
        return torch.sigmoid(self.up(seed))  # (B, 3, 64, 64)


def parameter_count(config: DecoderConfig) -> int:
    return sum(p.numel() for p in Decoder(config).parameters())


def to_unit_pixels(images: Tensor) -> Tensor:
    """uint8 (B, 3, S, S) -> float (B, 3, 64, 64) in [0, 1]: what the decoder is trained to output.
    Larger images are area-averaged down, smaller ones bilinearly enlarged."""
    pixels = images.float() / 255.0
    if pixels.shape[-1] == DECODED_SIZE and pixels.shape[-2] == DECODED_SIZE:
        return pixels
    mode = "area" if pixels.shape[-1] > DECODED_SIZE else "bilinear"
    return F.interpolate(pixels, size=(DECODED_SIZE, DECODED_SIZE), mode=mode,
                         **({} if mode == "area" else {"align_corners": False}))


def pixel_loss(decoded: Tensor, pixels: Tensor) -> Tensor:
    """Mean squared error per pixel and channel, both in [0, 1]: 0 is a perfect image, 1 the worst."""
    return F.mse_loss(decoded, pixels)


def decoded_pixels(decoded: Tensor) -> Tensor:
    """[0, 1] float (B, 3, 64, 64) -> uint8, for pictures."""
    return (decoded.clamp(0, 1) * 255).round().to(torch.uint8)


@dataclass(frozen=True)
class FitConfig:
    # about 0.12 CPU-s a step at batch 64 on one thread: a minute. More steps overfit the training
    # scenes: at 1,500 the test images' loss rises (docs/reconstruction.md)
    steps: int = 500
    batch_size: int = 64
    lr: float = 2e-3  # Adam, cosine-annealed to 0
    held_out: float = 0.1  # share of the training labels (scenes) whose images are kept out to measure the loss on
    seed: int = 0  # the decoder's initial weights, the held-out draw and the batches

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if not 0 < self.held_out < 1:
            raise ValueError(f"held_out is a share of the training labels, in (0, 1), got {self.held_out!r}")


@dataclass(frozen=True)
class DecoderFit:
    """How the decoder's training went: the pixel loss on the held-out images before and after."""

    train_images: int
    held_out_images: int
    held_out_before: float
    held_out_after: float
    train_after: float  # on at most 1,000 of the training images
    steps: int
    seconds: float
    parameters: int


@torch.no_grad()
def _loss_on(decoder: Decoder, features: Tensor, pixels: Tensor, batch: int = 256) -> float:
    """Mean pixel loss over `features` (N, D) against `pixels` (N, 3, S, S) uint8, in eval mode."""
    decoder.eval()
    total = 0.0
    for start in range(0, len(features), batch):
        part = slice(start, start + batch)
        target = to_unit_pixels(pixels[part]).to(features.device)
        total += pixel_loss(decoder(features[part]), target).item() * len(target)
    return total / max(len(features), 1)


def held_out_split(groups: Sequence[str], config: FitConfig) -> tuple[Tensor, Tensor]:
    """(held-out ids, training ids) of N images with labels `groups`: a seeded `config.held_out` share
    of the distinct labels is held out with every image carrying them, so no held-out scene has a
    duplicate rendering among the training images (CSS renders some scenes twice)."""
    labels = list(dict.fromkeys(groups))
    if len(labels) < 2:
        raise ValueError(f"the decoder needs images of at least 2 labels (one held out), got {len(groups)} images "
                         f"of {len(labels)} label(s)")
    generator = torch.Generator().manual_seed(config.seed)
    count = min(len(labels) - 1, max(1, round(config.held_out * len(labels))))
    held = {labels[i] for i in torch.randperm(len(labels), generator=generator)[:count].tolist()}
    is_held = torch.tensor([g in held for g in groups])
    return is_held.nonzero().flatten(), (~is_held).nonzero().flatten()


def fit_decoder(features: Tensor, pixels: Tensor, groups: Sequence[str],
                config: FitConfig = FitConfig()) -> tuple[Decoder, DecoderFit]:
    """Train a decoder from image embeddings `features` (N, D) to their images `pixels` (N, 3, S, S)
    uint8 with labels `groups` (N), holding out `held_out_split`'s; returned in eval mode."""
    held_ids, train_ids = held_out_split(groups, config)
    generator = torch.Generator().manual_seed(config.seed + 1)  # the batches
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        decoder = Decoder(DecoderConfig(embed_dim=features.shape[1])).to(features.device)
    before = _loss_on(decoder, features[held_ids], pixels[held_ids])
    optimizer = torch.optim.Adam(decoder.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    began = time.perf_counter()
    decoder.train()
    for _ in range(config.steps):
        pick = train_ids[torch.randint(len(train_ids), (min(config.batch_size, len(train_ids)),), generator=generator)]
        target = to_unit_pixels(pixels[pick]).to(features.device)  # (b, 3, 64, 64)
        loss = pixel_loss(decoder(features[pick]), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    seconds = time.perf_counter() - began
    after = _loss_on(decoder, features[held_ids], pixels[held_ids])
    train_after = _loss_on(decoder, features[train_ids[:1000]], pixels[train_ids[:1000]])
    return decoder, DecoderFit(train_images=len(train_ids), held_out_images=len(held_ids), held_out_before=before,
                               held_out_after=after, train_after=train_after, steps=config.steps, seconds=seconds,
                               parameters=sum(p.numel() for p in decoder.parameters()))
