"""Generator "css": grammar, exact changes, held-out pairs, labels, renders and determinism."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np

from study.data.css import SCENE_FILE
from study.data.css_generate import PAIRS, generate_css
from study.data.css_render import render_scene
from study.data.css_scene import HELD_OUT_PAIRS
from study.data.images import load_image

from data_layout_writers import CSS_SCALE

POS = r"(?:top|middle|bottom)-(?:left|center|right)"
SIZE, COLOR = r"(?:small|large)", r"(?:gray|red|blue|green|brown|purple|cyan|yellow)"
SHAPE = r"(?:rectangle|circle|triangle)"
DESC = rf"(?P<pos>{POS} )?(?P<size>{SIZE} )?(?P<color>{COLOR} )?(?P<shape>{SHAPE}|object)"
GRAMMAR = {
    "add": re.compile(rf"^add (?P<size>{SIZE}) (?P<color>{COLOR}) (?P<shape>{SHAPE}) to (?P<pos>{POS})$"),
    "remove": re.compile(rf"^remove {DESC}$"),
    "make": re.compile(rf"^make {DESC} (?P<new>{SIZE}|{COLOR})$"),
}
ROWS, COLS = ("top", "middle", "bottom"), ("left", "center", "right")


def cell(o: dict) -> str:
    return f"{ROWS[int(o['pos'][0] * 3)]}-{COLS[int(o['pos'][1] * 3)]}"


def cells(objects: list[dict]) -> dict[str, tuple[str, str, str]]:
    return {cell(o): (o["size"], o["color"], o["shape"]) for o in objects}


def expected_target(text: str, kind: str, source: list[dict]) -> dict[str, tuple[str, str, str]]:
    """An independent reading of the text: the source's cells after the change it asks for."""
    m = GRAMMAR[kind].match(text)
    assert m, f"text {text!r} does not follow the {kind} grammar"
    want = {k: (v or "").strip() for k, v in m.groupdict().items()}
    out = cells(source)
    if kind == "add":
        assert want["pos"] not in out and len(source) < 5
        out[want["pos"]] = (want["size"], want["color"], want["shape"])
        return out
    hits = [c for c, (size, color, shape) in out.items()
            if all(not want[k] or want[k] == v for k, v in (("pos", c), ("size", size), ("color", color)))
            and want["shape"] in ("object", shape)]
    assert len(hits) == 1, f"{text!r} matches {len(hits)} objects of {out}"
    if kind == "remove":
        del out[hits[0]]
    else:
        size, color, shape = out[hits[0]]
        new = want["new"]
        out[hits[0]] = (new, color, shape) if new in ("small", "large") else (size, new, shape)
        assert out[hits[0]] != (size, color, shape), f"{text!r} changes nothing"
    return out


def test_every_text_follows_the_grammar_and_targets_are_exact(css_raw: dict[str, Any]) -> None:
    kinds = set()
    for split in ("train", "test"):
        objects = css_raw[split]["objects_img"]
        for mod in css_raw[split]["mods"]:
            kinds.add(mod["type"])
            for f, t in zip(mod["from"], mod["to"]):
                assert cells(objects[t]) == expected_target(mod["to_str"], mod["type"], objects[f])
                # unchanged objects keep their exact positions
                kept = {cell(o): o["pos"] for o in objects[t]}
                for o in objects[f]:
                    if cell(o) in kept and cells(objects[t])[cell(o)] == cells([o])[cell(o)]:
                        assert kept[cell(o)] == o["pos"]
    assert kinds == {"add", "remove", "make"}


def test_scene_rules(css_raw: dict[str, Any]) -> None:
    for split in ("train", "test"):
        for objects in css_raw[split]["objects_img"]:
            assert 1 <= len(objects) <= 5
            assert len({cell(o) for o in objects}) == len(objects), "two objects share a cell"


def test_held_out_pairs_only_in_test(css_raw: dict[str, Any]) -> None:
    train_pairs = {(o["shape"], o["color"]) for objs in css_raw["train"]["objects_img"] for o in objs}
    test_pairs = {(o["shape"], o["color"]) for objs in css_raw["test"]["objects_img"] for o in objs}
    assert len(HELD_OUT_PAIRS) == 4
    assert not train_pairs & HELD_OUT_PAIRS
    assert HELD_OUT_PAIRS <= test_pairs
    for mod in css_raw["test"]["mods"]:  # every test query starts from a scene with a novel pair
        for f in mod["from"]:
            assert {(o["shape"], o["color"]) for o in css_raw["test"]["objects_img"][f]} & HELD_OUT_PAIRS


def test_counts_follow_scale(css_raw: dict[str, Any]) -> None:
    for split in ("train", "test"):
        pairs = sum(len(m["from"]) for m in css_raw[split]["mods"])
        assert pairs == round(PAIRS[split] * CSS_SCALE)
        assert len(css_raw[split]["objects_img"]) == round(1000 * CSS_SCALE) + pairs
        assert all(1 <= len(m["from"]) <= 3 for m in css_raw[split]["mods"])


def test_labels_group_exactly_the_same_scenes(css_raw: dict[str, Any]) -> None:
    for split in ("train", "test"):
        by_label: dict[str, set] = {}
        for label, objects in zip(css_raw[split]["labels"], css_raw[split]["objects_img"]):
            by_label.setdefault(label, set()).add(tuple(sorted(cells(objects).items())))
        assert all(len(scenes) == 1 for scenes in by_label.values())
        assert len({next(iter(s)) for s in by_label.values()}) == len(by_label)


def test_pngs_are_the_renders(css_root: Path, css_raw: dict[str, Any]) -> None:
    for split in ("train", "test"):
        for i, objects in enumerate(css_raw[split]["objects_img"]):
            png = load_image(css_root / "images" / f"css_{split}_{i:06d}.png", 64).permute(1, 2, 0).numpy()
            assert np.array_equal(png, render_scene(objects)), f"{split} image {i}"


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_files(tmp_path: Path) -> None:
    for name in ("a", "b"):
        generate_css(tmp_path / name, seed=3, scale=0.01)
    generate_css(tmp_path / "c", seed=4, scale=0.01)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a")[SCENE_FILE] != _digest(tmp_path / "c")[SCENE_FILE]


def test_every_object_stays_inside_its_cell_whatever_its_size(css_raw: dict[str, Any]) -> None:
    for split in ("train", "test"):
        for objects in css_raw[split]["objects_img"]:
            for o in objects:
                r, c = int(o["pos"][0] * 3), int(o["pos"][1] * 3)
                for size in ("small", "large"):  # "make ... large" keeps the position
                    rows, cols = np.nonzero((render_scene([{**o, "size": size}]) != 255).any(axis=2))
                    assert rows.min() >= r * 64 / 3 and rows.max() < (r + 1) * 64 / 3
                    assert cols.min() >= c * 64 / 3 and cols.max() < (c + 1) * 64 / 3
