"""TIRG's 2D renderer for CSS scenes (`datasets.CSSDataset.get_img(..., get_2d=True)`).

Vo et al., "Composing Text and Image for Image Retrieval - An Empirical Odyssey", CVPR 2019,
arXiv 1812.07119. Reproduced rule for rule (methods.md B.7): white canvas; half-size s = 4 px
(small) or 8 px (large); centre y = pos[0] * H, x = pos[1] * W; 'rectangle' fills
[int(y-s), int(y+s)) x [int(x-s), int(x+s)); 'circle' is the diamond TIRG's loop draws; 'triangle'
has rows int(y-s) .. int(y+s)-1, apex up; objects are painted in list order (later on top).
One departure: rows and columns outside the canvas are skipped, where TIRG's numpy indexing would
raise (row >= H) or wrap around (negative index). Generated scenes never reach the border.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

# Exact uint8 RGB of TIRG's `colortext2values`; TIRG stores c / 255 in a float canvas, which PNG
# writes back as these values.
COLORS: dict[str, tuple[int, int, int]] = {
    "gray": (87, 87, 87),
    "red": (244, 35, 35),
    "blue": (42, 75, 215),
    "green": (29, 205, 20),
    "brown": (129, 74, 25),
    "purple": (129, 38, 192),
    "cyan": (41, 208, 208),
    "yellow": (255, 238, 51),
}
SHAPES: tuple[str, ...] = ("rectangle", "circle", "triangle")
HALF_SIZES: dict[str, float] = {"small": 4.0, "large": 8.0}
CANVAS = 64  # TIRG's 2D canvas is 64 x 64


def _fill_row(img: np.ndarray, row: int, x0: float, x1: float, color: np.ndarray) -> None:
    """Paint img[row, int(x0):int(x1)] as TIRG does, skipping what lies off the canvas."""
    height, width = img.shape[:2]
    if not 0 <= row < height:
        return
    lo, hi = max(int(x0), 0), min(int(x1), width)
    if lo < hi:
        img[row, lo:hi] = color


def render_scene(objects: Sequence[Mapping[str, Any]], size: int = CANVAS) -> np.ndarray:
    """Render a CSS object list to uint8 (size, size, 3) RGB, exactly as TIRG's 2D renderer."""
    img = np.full((size, size, 3), 255, dtype=np.uint8)
    for obj in objects:
        s = HALF_SIZES[obj["size"]]
        color = np.asarray(COLORS[obj["color"]], dtype=np.uint8)
        y = float(obj["pos"][0]) * size
        x = float(obj["pos"][1]) * size
        shape = obj["shape"]
        if shape == "rectangle":
            for row in range(int(y - s), int(y + s)):
                _fill_row(img, row, x - s, x + s, color)
        elif shape == "circle":
            # TIRG's "circle": row y0 spans [x - s + |y0 - y|, x + s - |y0 - y|), a diamond
            for row in range(int(y - s), int(y + s) + 1):
                x0 = x + (abs(row - y) - s)
                _fill_row(img, row, x0, 2 * x - x0, color)
        elif shape == "triangle":
            # width grows by one pixel per row from the apex at the top to 2s at the base
            for row in range(int(y - s), int(y + s)):
                x0 = x + (row - y + s) / 2
                x1 = 2 * x - x0
                _fill_row(img, row, min(x0, x1), max(x0, x1), color)
        else:
            raise ValueError(f"unknown CSS shape {shape!r}; known: {list(SHAPES)}")
    return img
