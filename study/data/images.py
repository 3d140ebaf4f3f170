"""Reading and writing the PNG/JPEG files of every layout, with errors that name the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from study.data.errors import DatasetError


def read_image(path: Path, size: int) -> np.ndarray:
    """One image as uint8 (size, size, 3) RGB.

    A square image is resized; a non-square one (CSS-3D renders are 120x180) is resized on its
    shorter side and centre-cropped, so objects keep their aspect ratio.
    """
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(
            f"{path}: image file is missing; re-download or regenerate the dataset "
            f"(python -m study.data generate ...)"
        ) from None
    except (UnidentifiedImageError, OSError) as err:
        raise DatasetError(f"{path}: cannot read the image ({err}); replace or regenerate the file") from None
    if rgb.size != (size, size):
        rgb = ImageOps.fit(rgb, (size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def image_side(path: Path) -> int:
    """The shorter side of an image: the square size a split is delivered at."""
    try:
        with Image.open(path) as img:
            return min(img.size)
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file is missing; re-download or regenerate the dataset") from None
    except (UnidentifiedImageError, OSError) as err:
        raise DatasetError(f"{path}: cannot read the image ({err}); replace or regenerate the file") from None


def write_png(path: Path, pixels: np.ndarray) -> None:
    """Write uint8 (H, W, 3) pixels losslessly; PNG keeps the renderer's exact colours."""
    Image.fromarray(pixels, mode="RGB").save(path, format="PNG", optimize=False)
