"""Encoders: an image encoder and the text encoder that goes with it, chosen together by name.

`small_cnn` (from scratch, 64x64 inputs on CPU) and `resnet18` (torchvision) pair with TIRG's LSTM
over a word vocabulary built from the training texts (models/text.py); the CLIP encoders of
models/clip.py (`clip_rn50`, `clip_vit_b32`, `clip_tiny`) bring CLIP's text transformer and its
BPE tokenizer. `ENCODERS` holds the pairs, `IMAGE_ENCODERS` the image towers of the first kind.

Every image encoder returns an `ImageFeatures`: the global vector plus two conv maps that later parts
read (the last map for conv composers and MMGrad, the layer2-level map for DIM's local term).
Methods reference A.1; TIRG (Vo et al., CVPR 2019, https://arxiv.org/abs/1812.07119) uses
ResNet-18 with a Linear(512 -> D) head, and a small from-scratch net on CSS.
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Sequence

import torch
from torch import Tensor, nn

from models.registry import Registry
from models.text import TextEncoder, Tokenizer, Vocabulary

__all__ = ["ENCODERS", "IMAGE_ENCODERS", "Encoders", "ImageFeatures", "MissingFeatures", "SmallCnn", "ResNet18",
           "encoder_class", "graph_leaf", "normalize_images"]

IMAGE_ENCODERS = Registry(
    "image encoder",
    "models/encoders.py",
    "Builders `(embed_dim: int, weights: str | None = None) -> nn.Module` whose forward(images "
    "(B, 3, H, W) float) returns ImageFeatures; the module exposes `last_channels`, `mid_channels` and `fc`, "
    "the Linear(last_channels -> D) after the global pool (tirg_conv re-uses it, as TIRG does).",
)

ENCODERS = Registry(
    "encoder",
    "models",
    "Encoders subclasses (the class is its own builder): `Cls(*, embed_dim: int, weights: str | None = None, "
    "vocab_size: int = 1)` holds `.image` (forward(images (B, 3, H, W) normalised) -> ImageFeatures, with "
    "`last_channels`, `mid_channels`, `fc` or None), `.text` (forward(tokens, lengths) -> (B, width)) and "
    "`.width`; `Cls.tokenizer(training texts)` gives the text side's Tokenizer.",
)

# ImageNet statistics: torchvision's pretrained weights expect them, and TIRG uses them on every dataset.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MissingFeatures(RuntimeError):
    """Something read a part of ImageFeatures that its source does not hold (cached frozen features
    keep the global vector only): `part` names it, `why` says why it is absent."""

    def __init__(self, part: str, why: str) -> None:
        super().__init__(f"{part} is not available: {why}")
        self.part, self.why = part, why


class ImageFeatures:
    """What an image encoder gives: the global vector and, where the source has them, two conv maps.

    Reading a map that is absent raises MissingFeatures naming why (`missing`), so a composer or
    regulariser that needs maps fails with the reason, and the capability check can find it
    (models/feature_needs.py)."""

    __slots__ = ("vector", "_last_map", "_mid_map", "missing")

    def __init__(self, vector: Tensor, last_map: Tensor | None = None, mid_map: Tensor | None = None, *,
                 missing: str = "this image encoder gives no conv maps") -> None:
        self.vector = vector  # (B, D) global feature phi_x
        self._last_map = last_map  # (B, C, h, w) last conv map; C = encoder.last_channels
        self._mid_map = mid_map  # (B, C2, h2, w2) layer2-level map; C2 = encoder.mid_channels
        self.missing = missing

    @property
    def has_maps(self) -> bool:
        return self._last_map is not None and self._mid_map is not None

    @property
    def last_map(self) -> Tensor:
        if self._last_map is None:
            raise MissingFeatures("the last conv map (ImageFeatures.last_map)", self.missing)
        return self._last_map

    @property
    def mid_map(self) -> Tensor:
        if self._mid_map is None:
            raise MissingFeatures("the layer2-level map (ImageFeatures.mid_map)", self.missing)
        return self._mid_map


def graph_leaf(feature_map: Tensor) -> Tensor:
    """A conv map that the rest of the model may differentiate w.r.t. (MMGrad, the probes' Grad-CAM).
    After frozen layers nothing tracks a graph, so the map becomes a leaf that requires grad (in grad
    mode): the global vector computed from it then carries d vector / d map, and no gradient reaches
    the frozen layers. After trained layers (or under no_grad) the map is returned as it is."""
    if torch.is_grad_enabled() and not feature_map.requires_grad:
        return feature_map.detach().requires_grad_()
    return feature_map


def normalize_images(images: Tensor) -> Tensor:
    """uint8 images (B, 3, H, W) in [0, 255] -> float, ImageNet mean/std normalised, same device."""
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize_images expects uint8 images in [0, 255], got dtype {images.dtype}; "
                        "convert float images with (images * 255).round().to(torch.uint8) first")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"normalize_images expects shape (B, 3, H, W), got {tuple(images.shape)}")
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    # One conv per stage: the whole net stays cheap enough for CPU studies.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCnn(nn.Module):
    """4 stages (16, 32, 64, 128 channels), each halving the resolution: 64x64 -> 4x4 last map.

    About 15 M multiply-adds per 64x64 image, so a CPU study trains in minutes; TIRG also used a
    small from-scratch network for CSS."""

    def __init__(self, embed_dim: int, widths: tuple[int, int, int, int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.stage1 = _stage(3, widths[0])
        self.stage2 = _stage(widths[0], widths[1])
        self.stage3 = _stage(widths[1], widths[2])
        self.stage4 = _stage(widths[2], widths[3])
        self.fc = nn.Linear(widths[3], embed_dim)
        self.mid_channels, self.last_channels = widths[1], widths[3]

    def forward(self, images: Tensor) -> ImageFeatures:  # images (B, 3, H, W)
        mid = self.stage2(self.stage1(images))  # (B, C2, H/4, W/4)
        last = graph_leaf(self.stage4(self.stage3(mid)))  # (B, C4, H/16, W/16)
        vector = self.fc(last.mean(dim=(2, 3)))  # (B, D)
        return ImageFeatures(vector=vector, last_map=last, mid_map=mid)


class ResNet18(nn.Module):
    """torchvision ResNet-18 body, adaptive global average pool, Linear(512 -> D) (TIRG's image model)."""

    def __init__(self, embed_dim: int, weights: str | None = None) -> None:
        super().__init__()
        import torchvision  # here, not at the top: importing it costs every Ray worker about 3 s (torch._dynamo)

        net = torchvision.models.resnet18(weights=None)  # never download: weights come from a local file
        if weights is not None:
            _load_resnet_weights(net, weights)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.fc = nn.Linear(512, embed_dim)  # replaces the 1000-class head
        self.mid_channels, self.last_channels = 128, 512

    def forward(self, images: Tensor) -> ImageFeatures:  # images (B, 3, H, W)
        mid = self.layer2(self.layer1(self.stem(images)))  # (B, 128, H/8, W/8)
        last = graph_leaf(self.layer4(self.layer3(mid)))  # (B, 512, H/32, W/32)
        vector = self.fc(last.mean(dim=(2, 3)))  # (B, D)
        return ImageFeatures(vector=vector, last_map=last, mid_map=mid)


def _load_resnet_weights(net: nn.Module, weights: str) -> None:
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"resnet18 weights file {str(path)!r} does not exist; pass the path of a local torchvision "
            "resnet18 state dict (e.g. resnet18-f37072fd.pth), or weights=None for random init")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a pickle/zip error from torch is not a useful message on its own
        raise ValueError(f"resnet18 weights file {str(path)!r} could not be read as a state dict: {error}") from None
    if not isinstance(state, dict):
        raise ValueError(f"resnet18 weights file {str(path)!r} holds a {type(state).__name__}, not a state dict")
    try:
        net.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(
            f"resnet18 weights file {str(path)!r} does not match torchvision's resnet18: {error}") from None


@IMAGE_ENCODERS.register("small_cnn")
def build_small_cnn(embed_dim: int, weights: str | None = None) -> SmallCnn:
    if weights is not None:
        raise ValueError(f"small_cnn is trained from scratch and takes no weights file; got weights={weights!r}")
    return SmallCnn(embed_dim)


@IMAGE_ENCODERS.register("resnet18")
def build_resnet18(embed_dim: int, weights: str | None = None) -> ResNet18:
    return ResNet18(embed_dim, weights)


class Encoders:
    """An image encoder and its text encoder, built together. The class is the registered builder;
    what a caller reads without building one (`encoder_class(name)`):

      word_tokens: the text side gives word ids from a vocabulary of the training texts, which the
        composers with `needs_tokens` read (one id per word); CLIP's BPE pieces are not words.
      fixed_width: the feature width the encoder imposes (CLIP's joint space), or None when the
        heads are built at `embed_dim`.
    """

    word_tokens: ClassVar[bool] = True
    fixed_width: ClassVar[int | None] = None

    def __init__(self, *, embed_dim: int, weights: str | None = None, vocab_size: int = 1) -> None:
        self.image: nn.Module
        self.text: nn.Module
        self.width: int  # D of every feature the encoders give, so of the composer's output

    @classmethod
    def feature_width(cls, embed_dim: int) -> int:
        """The width D the composer works in: the encoder's own, else `embed_dim`."""
        return cls.fixed_width if cls.fixed_width is not None else embed_dim

    @classmethod
    def tokenizer(cls, texts: Sequence[str]) -> Tokenizer:
        """The text side's tokenizer, given the training texts (a word vocabulary is built from them)."""
        return Vocabulary.build(texts)

    @classmethod
    def restore_tokenizer(cls, stored: Sequence[str]) -> Tokenizer:
        """The tokenizer from what `Tokenizer.to_list()` stored in a checkpoint."""
        return Vocabulary.from_list(stored)


class LstmEncoders(Encoders):
    """An image encoder of IMAGE_ENCODERS with TIRG's LSTM text encoder, both with a head to `embed_dim`."""

    image_encoder: ClassVar[str]

    def __init__(self, *, embed_dim: int, weights: str | None = None, vocab_size: int = 1) -> None:
        super().__init__(embed_dim=embed_dim, weights=weights, vocab_size=vocab_size)
        # Image first, then text: the order in which the random initial weights are drawn.
        self.image = IMAGE_ENCODERS.build(self.image_encoder, embed_dim=embed_dim, weights=weights)
        self.text = TextEncoder(vocab_size, embed_dim)
        self.width = embed_dim


@ENCODERS.register("small_cnn")
class SmallCnnEncoders(LstmEncoders):
    image_encoder = "small_cnn"


@ENCODERS.register("resnet18")
class ResNet18Encoders(LstmEncoders):
    image_encoder = "resnet18"


def encoder_class(name: str) -> type[Encoders]:
    """The registered Encoders class `name` (raises, listing the known names, when there is none)."""
    return ENCODERS.get(name)


# Imported after ENCODERS exists: models/clip.py registers the CLIP encoders on import (open_clip itself is
# imported only when one is built: it costs seconds).
from models import clip  # noqa: E402,F401
