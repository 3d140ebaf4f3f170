"""Reading and writing the PNG/JPEG files of every layout, with errors that name the file.

Every image is delivered square at the protocol's size S by TIRG's preprocessing (Vo et al., CVPR
2019, arXiv 1812.07119): decode as RGB, resize the shorter side to S (bilinear, antialiased), then
centre-crop S x S. `Preprocessing` says so in one line, which every result records, and its
`version` keys the node's decoded-image cache (study/data/image_cache.py): change what
`load_image` delivers, bump it.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

import numpy as np
import torch
from PIL import Image

from study.data.errors import DatasetError

# torchvision 0.29 warns on every decode that TorchCodec will take its decoders over; one warning
# per image floods a study's log. Moving to torchcodec.decoders.decode_image changes no pixels' rule.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision are deprecated",
                        category=DeprecationWarning)

# what to do about an image file that is there but cannot be decoded
DAMAGED_IMAGE_FIX = ("re-download (or regenerate) it, or delete it and pass --allow-missing-images "
                     "(open_dataset(..., allow_missing_images=True)) to drop it and the queries that touch it")

REAL_IMAGE_SIZE = 224  # real layouts' default side: the papers' (TIRG, FashionIQ, ...) input size
MIN_IMAGE_SIZE = 8  # as study/budget.py: below this no encoder has a feature map left


@dataclass(frozen=True)
class Preprocessing:
    """How a file becomes a uint8 (3, S, S) image; recorded with every result."""

    image_size: int  # S
    resize: Literal["shorter_side"] = "shorter_side"  # shorter side -> S, bilinear, antialias=True
    crop: Literal["center"] = "center"  # then the central S x S
    version: int = 1  # bump when load_image's output changes: it keys the image cache

    def describe(self) -> str:
        return (f"decode RGB (torchvision), resize shorter side to {self.image_size} (bilinear, antialias), "
                f"centre-crop {self.image_size}x{self.image_size} (v{self.version})")


PREPROCESSING_VERSION = Preprocessing(REAL_IMAGE_SIZE).version


@functools.cache
def decoders() -> tuple[ModuleType, ModuleType]:
    """torchvision's io and v2 functional modules, imported on the first decode: importing them costs
    seconds, which a process that only opens a dataset or reads a built map never needs to pay."""
    import torchvision.io as io
    import torchvision.transforms.v2.functional as functional

    return io, functional


def read_bytes(path: Path) -> torch.Tensor:
    """A file's bytes as a uint8 tensor; a missing or unreadable file raises DatasetError naming it."""
    try:
        with open(path, "rb") as f:
            data = bytearray(f.read())
    except FileNotFoundError:
        raise DatasetError(
            f"{path}: image file is missing; re-download or regenerate the dataset "
            f"(python -m study.data generate ...)"
        ) from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read the image ({err}); replace or regenerate the file") from None
    return torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


def load_image(path: Path, size: int) -> torch.Tensor:
    """One image as uint8 (3, size, size) RGB, by `Preprocessing(size)`.

    A truncated or undecodable file raises DatasetError naming it (torchvision's decoders refuse
    a truncated JPEG or PNG rather than fill it in, so a damaged file never becomes pixels)."""
    io, functional = decoders()
    data = read_bytes(path)
    try:
        image = io.decode_image(data, mode=io.ImageReadMode.RGB)  # (3, H, W)
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise DatasetError(f"{path}: cannot read the image ({reason[-160:]}); the file is truncated or not a "
                           f"JPEG/PNG/WebP/GIF: {DAMAGED_IMAGE_FIX}") from None
    if image.ndim == 4:  # an animated GIF: its first frame
        image = image[0]
    if image.dtype != torch.uint8:  # a 16-bit PNG decodes to uint16: keep its high byte, as PIL does
        image = functional.to_dtype_image(image, torch.uint8, scale=True)
    if image.shape[-2:] != (size, size):
        # v2.Resize(S, antialias=True) + v2.CenterCrop(S) on a plain tensor call exactly these kernels;
        # calling them directly skips v2's dispatch, Python that holds the GIL (image_cache.py's threads)
        image = functional.resize_image(image, [size], antialias=True)  # (3, S, S * long / short), bilinear
        image = functional.center_crop_image(image, [size])  # (3, S, S)
    return image.contiguous()


def write_png(path: Path, pixels: np.ndarray) -> None:
    """Write uint8 (H, W, 3) pixels losslessly; PNG keeps the renderer's exact colours."""
    Image.fromarray(pixels, mode="RGB").save(path, format="PNG", optimize=False)
