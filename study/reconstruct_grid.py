"""The picture `study.reconstruct` draws: one row per test query, four columns

    reference | text | decoded from the composed feature | true target

under a header naming them. Every image is drawn as a `tile` x `tile` square (bilinear; pasted as is
when it already has that size), with a 1 px grey outline just outside it (generated images are white
to their edge), so a tile's pixels are exactly its image's. Sizes, in px (GAP and HEADER below):

    width  = GAP + tile + GAP + 2 * tile + GAP + tile + GAP + tile + GAP = 5 * tile + 5 * GAP
    height = HEADER + rows * (tile + GAP)

`grid_box(row, column, tile)` gives the top-left corner of any cell.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw
from torch import Tensor

from study.probes import EDGE, GAP, LINE, _font, _wrap  # the probe pictures' spacing, font and text wrapping

__all__ = ["COLUMNS", "HEADER", "TILE", "GridRow", "grid_box", "grid_size", "render_grid"]

TILE = 96  # px per image: the 64 px CSS images enlarged enough to see a small object
COLUMNS = ("reference", "text", "decoded from the composed feature", "true target")
HEADER = 2 * LINE + 6  # two lines of column titles


@dataclass(frozen=True)
class GridRow:
    reference: Tensor  # (3, S, S) uint8
    text: str
    decoded: Tensor  # (3, 64, 64) uint8, the decoder's image of the composed feature
    target: Tensor  # (3, S, S) uint8


def _widths(tile: int) -> tuple[int, int, int, int]:
    return tile, 2 * tile, tile, tile  # the text column is two tiles wide


def grid_box(row: int, column: int, tile: int = TILE) -> tuple[int, int]:
    """(left, top) px of cell (`row`, `column`); columns as in COLUMNS."""
    left = GAP + sum(w + GAP for w in _widths(tile)[:column])
    return left, HEADER + row * (tile + GAP)


def grid_size(rows: int, tile: int = TILE) -> tuple[int, int]:
    """(width, height) px of a grid of `rows` queries."""
    return GAP + sum(w + GAP for w in _widths(tile)), HEADER + rows * (tile + GAP)


def _image(image: Tensor, tile: int) -> Image.Image:
    picture = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
    return picture if picture.size == (tile, tile) else picture.resize((tile, tile), Image.Resampling.BILINEAR)


def render_grid(rows: Sequence[GridRow], *, tile: int = TILE) -> np.ndarray:
    """(H, W, 3) uint8, laid out as the module docstring says."""
    canvas = Image.new("RGB", grid_size(len(rows), tile), "white")
    draw = ImageDraw.Draw(canvas)
    widths = _widths(tile)
    for column, title in enumerate(COLUMNS):
        left, _ = grid_box(0, column, tile)
        for n, line in enumerate(_wrap(title, widths[column], 2)):
            draw.text((left, 3 + n * LINE), line, fill="black", font=_font())
    for r, row in enumerate(rows):
        for column, image in ((0, row.reference), (2, row.decoded), (3, row.target)):
            left, top = grid_box(r, column, tile)
            canvas.paste(_image(image, tile), (left, top))
            draw.rectangle((left - 1, top - 1, left + tile, top + tile), outline=EDGE, width=1)
        left, top = grid_box(r, 1, tile)
        for n, line in enumerate(_wrap(row.text, widths[1], max(1, tile // LINE))):
            draw.text((left, top + n * LINE), line, fill="black", font=_font())
    return np.asarray(canvas)
