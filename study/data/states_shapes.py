"""The nouns of the generated MIT-States-like data: procedurally drawn shape classes.

MIT-States (Isola et al., "Discovering States and Transformations in Image Collections", CVPR
2015) pairs nouns with states; here a noun is a polygon outline in unit coordinates (centre 0,
radius about 1, y down), later rotated, scaled and moved by the renderer.
"""
from __future__ import annotations

import math
from typing import Callable

Points = list[tuple[float, float]]


def _regular(n: int, start: float = -math.pi / 2) -> Points:
    return [(math.cos(start + 2 * math.pi * k / n), math.sin(start + 2 * math.pi * k / n)) for k in range(n)]


def _star() -> Points:
    return [((1.0 if k % 2 == 0 else 0.45) * math.cos(-math.pi / 2 + math.pi * k / 5),
             (1.0 if k % 2 == 0 else 0.45) * math.sin(-math.pi / 2 + math.pi * k / 5)) for k in range(10)]


def _ellipse() -> Points:
    return [(math.cos(t), 0.55 * math.sin(t)) for t in (2 * math.pi * k / 40 for k in range(40))]


def _moon() -> Points:
    outer = [(math.cos(t), math.sin(t)) for t in (math.pi / 2 + math.pi * k / 20 for k in range(21))]
    inner = [(0.45 * math.cos(t) - 0.1, math.sin(t)) for t in (3 * math.pi / 2 - math.pi * k / 20 for k in range(21))]
    return outer + inner


def _heart() -> Points:
    pts = []
    for k in range(48):
        t = 2 * math.pi * k / 48
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x / 17, -y / 17 + 0.1))
    return pts


def _drop() -> Points:
    body = [(0.7 * math.cos(t), 0.3 + 0.7 * math.sin(t)) for t in (math.pi * k / 20 - math.pi / 6 for k in range(28))]
    return [(0.0, -1.0)] + body


def _semicircle() -> Points:
    return [(math.cos(t), 0.4 - math.sin(t)) for t in (math.pi * k / 24 for k in range(25))]


NOUNS: dict[str, Callable[[], Points]] = {
    "circle": lambda: _regular(40),
    "square": lambda: [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "triangle": lambda: _regular(3, -math.pi / 2),
    "pentagon": lambda: _regular(5),
    "hexagon": lambda: _regular(6),
    "octagon": lambda: _regular(8, -math.pi / 8),
    "star": _star,
    "cross": lambda: [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3),
                      (0.3, 1), (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)],
    "heart": _heart,
    "moon": _moon,
    "arrow": lambda: [(-1, -0.25), (0.2, -0.25), (0.2, -0.7), (1, 0), (0.2, 0.7), (0.2, 0.25), (-1, 0.25)],
    "diamond": lambda: [(0, -1), (0.6, 0), (0, 1), (-0.6, 0)],
    "ellipse": _ellipse,
    "trapezoid": lambda: [(-0.5, -0.6), (0.5, -0.6), (1, 0.6), (-1, 0.6)],
    "kite": lambda: [(0, -1), (0.6, -0.3), (0, 1), (-0.6, -0.3)],
    "bolt": lambda: [(0.1, -1), (0.7, -1), (0.2, -0.15), (0.6, -0.15), (-0.4, 1), (-0.05, 0.1), (-0.5, 0.1)],
    "house": lambda: [(0, -1), (0.9, -0.2), (0.9, 0.9), (-0.9, 0.9), (-0.9, -0.2)],
    "drop": _drop,
    "semicircle": _semicircle,
    "chevron": lambda: [(-1, -0.6), (0, 0.2), (1, -0.6), (1, 0.1), (0, 0.9), (-1, 0.1)],
}

# Held out of training, as MIT-States' 49 test nouns are (Isola et al. 2015; TIRG's protocol).
TEST_NOUNS: tuple[str, ...] = ("hexagon", "heart", "arrow", "kite", "chevron")
