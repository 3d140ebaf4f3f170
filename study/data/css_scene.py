"""CSS scenes: objects on a 3x3 grid, their cells and names, and scene labels.

CSS (Vo et al., CVPR 2019, arXiv 1812.07119) places 1-5 objects in distinct cells of a 3x3 grid,
each a shape in one of 8 colours and 2 sizes. An object is a dict with TIRG's keys
`pos` (row, column in [0, 1]), `color`, `shape`, `size`; this module holds the vocabulary and the
helpers that both the generator and the loader need.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from study.data.css_render import CANVAS, COLORS, HALF_SIZES, SHAPES

SIZES: tuple[str, ...] = ("small", "large")
ROWS: tuple[str, ...] = ("top", "middle", "bottom")
COLUMNS: tuple[str, ...] = ("left", "center", "right")
# TIRG's position words, cell index r * 3 + c -> "top-center" etc.
POSITIONS: tuple[str, ...] = tuple(f"{r}-{c}" for r in ROWS for c in COLUMNS)
MAX_OBJECTS = 5

# Shape-colour pairs that no training image contains and every test source scene does (CSS's
# "novel" split tests compositional generalisation). Fixed so that results compare across seeds.
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("rectangle", "red"), ("circle", "blue"), ("triangle", "yellow"), ("circle", "purple")}
)
ALL_PAIRS: tuple[tuple[str, str], ...] = tuple((s, c) for s in SHAPES for c in COLORS)

Obj = dict[str, Any]


def cell_of(obj: Mapping[str, Any]) -> int:
    """Grid cell 0..8 (row-major) of an object's position."""
    row = min(max(int(float(obj["pos"][0]) * 3), 0), 2)
    col = min(max(int(float(obj["pos"][1]) * 3), 0), 2)
    return row * 3 + col


def cell_region(cell: int) -> tuple[float, float, float, float]:
    """(top, left, bottom, right) image fractions of a grid cell."""
    row, col = divmod(cell, 3)
    return (row / 3, col / 3, (row + 1) / 3, (col + 1) / 3)


def jittered_pos(cell: int, rng: np.random.Generator) -> tuple[float, float]:
    """A position inside `cell`, jittered as far as a large object still fits in the cell (a
    "make ... large" keeps the position), so objects of different cells never overlap and each
    object's pixels lie in its cell's region."""
    row, col = divmod(cell, 3)
    # one spare pixel: TIRG's diamond reaches row int(y + s), one row past the square
    room = (CANVAS / 6 - max(HALF_SIZES.values()) - 1.0) / CANVAS
    dy, dx = rng.uniform(-room, room, size=2)
    return (float((row + 0.5) / 3 + dy), float((col + 0.5) / 3 + dx))


def make_object(cell: int, shape: str, color: str, size: str, rng: np.random.Generator) -> Obj:
    return {"pos": jittered_pos(cell, rng), "color": color, "shape": shape, "size": size}


def random_scene(rng: np.random.Generator, pairs: Sequence[tuple[str, str]], must_hold: Sequence[tuple[str, str]] = ()) -> list[Obj]:
    """1-5 objects in distinct random cells with shape-colour pairs drawn from `pairs`; if
    `must_hold` is given, one object (at a random place in the painting order) takes a pair
    from it."""
    count = int(rng.integers(1, MAX_OBJECTS + 1))
    cells = rng.choice(9, size=count, replace=False)
    forced = int(rng.integers(count)) if must_hold else -1
    objects = []
    for i, cell in enumerate(cells):
        pool = must_hold if i == forced else pairs
        shape, color = pool[int(rng.integers(len(pool)))]
        size = SIZES[int(rng.integers(len(SIZES)))]
        objects.append(make_object(int(cell), shape, color, size, rng))
    return objects


def scene_label(objects: Sequence[Mapping[str, Any]]) -> str:
    """Canonical scene string: equal for scenes with the same objects in the same cells, whatever
    the jitter or painting order (CSS's duplicate labels)."""
    parts = sorted((cell_of(o), f"{POSITIONS[cell_of(o)]}:{o['size']} {o['color']} {o['shape']}") for o in objects)
    return "; ".join(text for _, text in parts)


def scene_pairs(objects: Sequence[Mapping[str, Any]]) -> set[tuple[str, str]]:
    return {(o["shape"], o["color"]) for o in objects}
