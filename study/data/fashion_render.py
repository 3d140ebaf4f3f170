"""64 x 64 garment silhouettes for generator "fashion": category, colour, pattern and length.

Each garment is a union of simple masks in garment coordinates: Y runs from the garment's top (0)
to its longest hem (1), X from its centre line (0) to half its width (+-1). A long and a short
garment differ only below SHORT_END[category], so "length" has its own region there; colour,
pattern and category change the whole garment. Placement, size and background tone are jittered
so that images of one caption differ.
"""
from __future__ import annotations

import numpy as np

SIZE = 64
CATEGORIES: tuple[str, ...] = ("dress", "skirt", "top", "pants", "jacket")
# Far apart in RGB and in hue so JPEG (quality 95, no chroma subsampling) keeps them apart.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "blue": (35, 70, 210),
    "green": (30, 160, 50),
    "yellow": (245, 215, 40),
    "black": (25, 25, 25),
    "pink": (245, 130, 190),
    "purple": (120, 40, 170),
    "orange": (245, 135, 20),
}
PATTERNS: tuple[str, ...] = ("solid", "striped", "dotted", "checked")
LENGTHS: tuple[str, ...] = ("short", "long")
# Where a short garment ends (Y of its hem or sleeve end); the long one reaches LONG_END.
SHORT_END: dict[str, float] = {"dress": 0.6, "skirt": 0.55, "top": 0.22, "pants": 0.45, "jacket": 0.28}
LONG_END: dict[str, float] = {"dress": 1.0, "skirt": 1.0, "top": 0.62, "pants": 1.0, "jacket": 0.8}

Box = tuple[float, float, float, float]


def _garment_mask(category: str, length: str, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    end = LONG_END[category] if length == "long" else SHORT_END[category]
    if category == "dress":
        bodice = (Y >= 0) & (Y < 0.35) & (np.abs(X) < 0.32)
        skirt = (Y >= 0.35) & (Y <= end) & (np.abs(X) < 0.32 + (Y - 0.35) * 0.9)
        return bodice | skirt
    if category == "skirt":
        return (Y >= 0.05) & (Y <= end) & (np.abs(X) < 0.38 + (Y - 0.05) * 0.7)
    if category == "pants":
        waist = (Y >= 0) & (Y < 0.12) & (np.abs(X) < 0.45)
        legs = (Y >= 0.12) & (Y <= end) & (np.abs(X) < 0.45 + Y * 0.05) & (np.abs(X) > 0.06)
        return waist | legs
    # top and jacket: a torso with two sleeves; the jacket is longer, wider and open at the front
    torso_end, half = (0.62, 0.42) if category == "top" else (0.8, 0.5)
    torso = (Y >= 0) & (Y < torso_end) & (np.abs(X) < half)
    sleeves = (Y >= 0.02) & (Y <= end) & (np.abs(X) >= half) & (np.abs(X) < half + 0.3)
    neck = (Y < 0.08) & (np.abs(X) < 0.14)
    mask = (torso | sleeves) & ~neck
    if category == "jacket":
        lapels = (Y < 0.3) & (np.abs(X) < 0.14 + (0.3 - Y) * 0.3)
        mask &= ~lapels
    return mask


def _pattern(pattern: str, yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Where the pattern's second tone goes (bool, H x W)."""
    py, px = rng.integers(0, 8, size=2)
    if pattern == "striped":
        return (yy + py) % 6 < 2
    if pattern == "dotted":
        return ((yy + py) % 7 - 3) ** 2 + ((xx + px) % 7 - 3) ** 2 <= 2
    if pattern == "checked":
        return ((yy + py) % 8 < 2) | ((xx + px) % 8 < 2)
    return np.zeros(yy.shape, dtype=bool)


def second_tone(rgb: tuple[int, int, int]) -> np.ndarray:
    """The pattern tone: a darker shade of a light colour, a lighter one of a dark colour."""
    c = np.asarray(rgb, dtype=np.float64)
    return c * 0.45 if c.mean() > 100 else c + (255 - c) * 0.55


def render_garment(category: str, color: str, pattern: str, length: str, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Box]]:
    """uint8 (64, 64, 3) RGB and the regions {"garment": box, "length": box} as image fractions
    (top, left, bottom, right)."""
    scale = rng.uniform(0.85, 1.0)
    height, half_width = 56 * scale, 24 * scale
    top = rng.uniform(2, SIZE - 2 - height)
    centre = SIZE / 2 + rng.uniform(-3, 3)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    X, Y = (xx + 0.5 - centre) / half_width, (yy + 0.5 - top) / height
    mask = _garment_mask(category, length, X, Y)
    background = 238 + rng.integers(-6, 7)
    pixels = np.full((SIZE, SIZE, 3), background, dtype=np.float64)
    tone = np.asarray(COLORS[color], dtype=np.float64) + rng.integers(-6, 7, size=3)
    pixels[mask] = tone
    pixels[mask & _pattern(pattern, yy, xx, rng)] = second_tone(COLORS[color])
    if category == "jacket":  # the open front: a seam line in the second tone
        pixels[mask & (np.abs(X) < 0.05)] = second_tone(COLORS[color])
    rows, cols = np.nonzero(mask)
    garment = (rows.min() / SIZE, cols.min() / SIZE, (rows.max() + 1) / SIZE, (cols.max() + 1) / SIZE)
    # rows where a short and a long garment of this category differ (plus a margin above the short end)
    first = min(SIZE - 1, max(0, int(top + (SHORT_END[category] - 0.05) * height)))
    last = min(SIZE, int(np.ceil(top + LONG_END[category] * height)) + 1)
    length_box = (first / SIZE, garment[1], max(last, first + 1) / SIZE, garment[3])
    return np.clip(pixels, 0, 255).astype(np.uint8), {"garment": garment, "length": length_box}
