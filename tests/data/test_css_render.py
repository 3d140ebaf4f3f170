"""TIRG's 2D renderer, checked pixel by pixel against extents worked out by hand from B.7."""
from __future__ import annotations

import numpy as np
import pytest

from study.data.css_render import render_scene

# methods.md B.7, copied here rather than imported so a typo in the module cannot pass
B7_RGB = {
    "gray": (87, 87, 87), "red": (244, 35, 35), "blue": (42, 75, 215), "green": (29, 205, 20),
    "brown": (129, 74, 25), "purple": (129, 38, 192), "cyan": (41, 208, 208), "yellow": (255, 238, 51),
}  # fmt: skip


def obj(shape: str, color: str = "red", size: str = "small", pos: tuple[float, float] = (0.5, 0.5)) -> dict:
    return {"pos": pos, "shape": shape, "color": color, "size": size}


def painted(img: np.ndarray) -> np.ndarray:
    return (img != 255).any(axis=2)


def row_spans(mask: np.ndarray) -> dict[int, tuple[int, int]]:
    """row -> [first column, last column + 1) of the painted pixels."""
    spans = {}
    for r in np.nonzero(mask.any(axis=1))[0]:
        cols = np.nonzero(mask[r])[0]
        assert cols.max() - cols.min() + 1 == len(cols), f"row {r} is not one run"
        spans[int(r)] = (int(cols.min()), int(cols.max()) + 1)
    return spans


@pytest.mark.parametrize("color", sorted(B7_RGB))
def test_colours_are_exact_and_background_white(color: str) -> None:
    img = render_scene([obj("rectangle", color, "large")])
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    mask = painted(img)
    assert (img[mask] == B7_RGB[color]).all()
    assert (img[~mask] == 255).all()
    assert set(map(tuple, img.reshape(-1, 3))) == {B7_RGB[color], (255, 255, 255)}


def test_rectangle_extent_with_fractional_centre() -> None:
    # y = 0.3 * 64 = 19.2, x = 0.6 * 64 = 38.4; s = 4 -> rows int(15.2)..int(23.2)-1, cols 34..41
    mask = painted(render_scene([obj("rectangle", pos=(0.3, 0.6))]))
    assert row_spans(mask) == {r: (34, 42) for r in range(15, 23)}
    large = painted(render_scene([obj("rectangle", size="large", pos=(0.3, 0.6))]))
    # s = 8 -> rows int(11.2)=11 .. int(27.2)-1=26, cols int(30.4)=30 .. int(46.4)-1=45
    assert row_spans(large) == {r: (30, 46) for r in range(11, 27)}


def test_circle_is_tirgs_diamond() -> None:
    # centre (32, 32): row 32 + d spans [28 + |d|, 36 - |d|) for s = 4; rows 28 and 36 are empty
    mask = painted(render_scene([obj("circle")]))
    assert row_spans(mask) == {32 + d: (28 + abs(d), 36 - abs(d)) for d in range(-3, 4)}
    assert mask.sum() == 32
    large = painted(render_scene([obj("circle", size="large")]))
    assert row_spans(large) == {32 + d: (24 + abs(d), 40 - abs(d)) for d in range(-7, 8)}
    assert large.sum() == 128


def test_triangle_rows_apex_up() -> None:
    # row y0 in 28..35: x0 = 32 + (y0 - 28) / 2, x1 = 64 - x0, painted [int(min), int(max))
    expected = {29: (31, 32), 30: (31, 33), 31: (30, 33), 32: (30, 34), 33: (29, 34), 34: (29, 35), 35: (28, 35)}
    assert row_spans(painted(render_scene([obj("triangle")]))) == expected
    large = row_spans(painted(render_scene([obj("triangle", size="large")])))
    assert min(large) == 25 and max(large) == 39  # rows 24..39, the apex row 24 is empty
    widths = [large[r][1] - large[r][0] for r in sorted(large)]
    assert widths == list(range(1, 16))  # one pixel wider per row: apex up, base ~2s


def test_later_objects_paint_over_earlier_ones() -> None:
    big, small = obj("rectangle", "red", "large"), obj("rectangle", "blue", "small")
    on_top = render_scene([big, small])
    assert tuple(on_top[32, 32]) == B7_RGB["blue"] and tuple(on_top[25, 25]) == B7_RGB["red"]
    hidden = render_scene([small, big])
    assert (hidden[painted(hidden)] == B7_RGB["red"]).all()


def test_objects_off_the_canvas_are_clipped_not_wrapped() -> None:
    img = render_scene([obj("circle", size="large", pos=(0.99, 0.01))])
    mask = painted(img)
    assert mask[60:, :8].any() and not mask[:30].any() and not mask[:, 30:].any()
