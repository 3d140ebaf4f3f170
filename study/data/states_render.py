"""Drawing one object in one visual state: the images of the generated MIT-States-like data.

MIT-States (Isola et al., CVPR 2015) photographs objects in states ("sliced apple", "rusty
knife"). Here the object is a shape class (states_shapes.NOUNS) and a state is a visual change of
its fill, outline, sharpness, tone or size. Placement, rotation, scale and colour are jittered so
that images of one "adj noun" label differ and only the adjective and the noun are shared.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from study.data.states_shapes import NOUNS, Points

SIZE = 64  # delivered image side
SUPER = 4  # drawn at 4x and box-filtered down: smooth edges without anti-aliasing code
PALETTE: tuple[tuple[int, int, int], ...] = ((220, 40, 40), (40, 80, 220), (40, 170, 60), (240, 140, 30), (140, 50, 190), (30, 160, 170))
# radius as a fraction of half the canvas: sizes must not overlap, so "tiny" and "huge" stay visible
RADIUS = {"tiny": (0.16, 0.22), "huge": (0.84, 0.95)}
DEFAULT_RADIUS = (0.48, 0.62)

RGB = tuple[int, int, int]
# (canvas, mask, polygon points, colour, rng) -> canvas, all drawn at 4x
Fill = Callable[[Image.Image, Image.Image, Points, RGB, np.random.Generator], Image.Image]


def _blend(color: RGB, toward: int, amount: float) -> RGB:
    return tuple(int(round(c + (toward - c) * amount)) for c in color)  # type: ignore[return-value]


def _solid(canvas: Image.Image, mask: Image.Image, points: Points, color: RGB, rng: np.random.Generator) -> Image.Image:
    canvas.paste(color, mask=mask)
    return canvas


def _pattern(canvas: Image.Image, mask: Image.Image, color: RGB, on: np.ndarray) -> Image.Image:
    """Paint `color` where the boolean pattern `on` is set inside the mask, a pale tint elsewhere."""
    canvas.paste(_blend(color, 255, 0.8), mask=mask)
    pattern_mask = Image.fromarray((on * 255).astype(np.uint8), mode="L")
    inside = Image.fromarray(np.minimum(np.asarray(mask), np.asarray(pattern_mask)), mode="L")
    canvas.paste(color, mask=inside)
    return canvas


def _grid(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rotated pixel coordinates (u, v) at 4x, for the periodic patterns."""
    angle = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0 : SIZE * SUPER, 0 : SIZE * SUPER].astype(np.float32)
    return xx * math.cos(angle) + yy * math.sin(angle), -xx * math.sin(angle) + yy * math.cos(angle)


def _striped(canvas: Image.Image, mask: Image.Image, points: Points, color: RGB, rng: np.random.Generator) -> Image.Image:
    u, _ = _grid(rng)
    return _pattern(canvas, mask, color, (u // (3 * SUPER)) % 2 == 0)


def _checkered(canvas: Image.Image, mask: Image.Image, points: Points, color: RGB, rng: np.random.Generator) -> Image.Image:
    u, v = _grid(rng)
    return _pattern(canvas, mask, color, ((u // (5 * SUPER)) + (v // (5 * SUPER))) % 2 == 0)


def _dotted(canvas: Image.Image, mask: Image.Image, points: Points, color: RGB, rng: np.random.Generator) -> Image.Image:
    u, v = _grid(rng)
    period = 6 * SUPER
    du, dv = (u % period) - period / 2, (v % period) - period / 2
    return _pattern(canvas, mask, color, du * du + dv * dv <= (1.6 * SUPER) ** 2)


def _cracked(canvas: Image.Image, mask: Image.Image, points: Points, color: RGB, rng: np.random.Generator) -> Image.Image:
    canvas.paste(color, mask=mask)
    cracks = Image.new("L", canvas.size, 0)
    draw = ImageDraw.Draw(cracks)
    ys, xs = np.nonzero(np.asarray(mask))
    for _ in range(3):  # jagged lines from random inside pixels in random directions
        k = int(rng.integers(len(xs)))
        x, y, heading = float(xs[k]), float(ys[k]), rng.uniform(0, 2 * math.pi)
        crack = [(x, y)]
        for _ in range(6):
            heading += rng.uniform(-0.9, 0.9)
            x, y = x + 6 * SUPER * math.cos(heading), y + 6 * SUPER * math.sin(heading)
            crack.append((x, y))
        draw.line(crack, fill=255, width=int(1.5 * SUPER))
    inside = Image.fromarray(np.minimum(np.asarray(mask), np.asarray(cracks)), mode="L")
    canvas.paste((30, 30, 30), mask=inside)
    return canvas


def _hollow(canvas: Image.Image, mask: Image.Image, points: Points, color: RGB, rng: np.random.Generator) -> Image.Image:
    # a band of width 2w centred on the outline, kept inside the mask: an inner rim of width w
    band = Image.new("L", canvas.size, 0)
    ImageDraw.Draw(band).line(points + points[:1], fill=255, width=2 * 3 * SUPER, joint="curve")
    ring = Image.fromarray(np.minimum(np.asarray(mask), np.asarray(band)), mode="L")
    canvas.paste(color, mask=ring)
    return canvas


FILLS: dict[str, Fill] = {"striped": _striped, "dotted": _dotted, "checkered": _checkered, "cracked": _cracked, "hollow": _hollow}
TONES: dict[str, Callable[[RGB], RGB]] = {
    "faded": lambda c: _blend(c, 255, 0.65),
    "dark": lambda c: _blend(c, 0, 0.6),
}
BLUR_RADIUS = {"blurred": 2.2}
ADJECTIVES: tuple[str, ...] = ("striped", "dotted", "checkered", "hollow", "cracked", "blurred", "faded", "dark", "tiny", "huge")


def render_object(noun: str, adjective: str, rng: np.random.Generator) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """uint8 (64, 64, 3) RGB of `adjective noun`, and the object's bounding box as
    (top, left, bottom, right) image fractions (before any blur)."""
    big = SIZE * SUPER
    low, high = RADIUS.get(adjective, DEFAULT_RADIUS)
    radius = rng.uniform(low, high) * big / 2
    room = max(big / 2 - radius, 0.0) * 0.9
    cx, cy = big / 2 + rng.uniform(-room, room), big / 2 + rng.uniform(-room, room)
    angle = rng.uniform(0, 2 * math.pi)
    cos, sin = math.cos(angle), math.sin(angle)
    points = [(cx + radius * (x * cos - y * sin), cy + radius * (x * sin + y * cos)) for x, y in NOUNS[noun]()]
    mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask).polygon(points, fill=255)
    color = TONES.get(adjective, lambda c: c)(PALETTE[int(rng.integers(len(PALETTE)))])
    canvas = FILLS.get(adjective, _solid)(Image.new("RGB", (big, big), (255, 255, 255)), mask, points, color, rng)
    image = canvas.resize((SIZE, SIZE), Image.Resampling.BOX)
    if adjective in BLUR_RADIUS:
        image = image.filter(ImageFilter.GaussianBlur(BLUR_RADIUS[adjective]))
    rows, cols = np.nonzero(np.asarray(mask.resize((SIZE, SIZE), Image.Resampling.BOX)) > 0)
    box = (rows.min() / SIZE, cols.min() / SIZE, (rows.max() + 1) / SIZE, (cols.max() + 1) / SIZE)
    return np.asarray(image, dtype=np.uint8), tuple(float(v) for v in box)  # type: ignore[return-value]
