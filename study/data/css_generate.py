"""Generator "css": CSS-2D scenes, modifications and renders in CSS's own file layout.

Follows CSS (Vo et al., "Composing Text and Image for Image Retrieval - An Empirical Odyssey",
CVPR 2019, arXiv 1812.07119) as its released file shows it: each split has 1,000 base scenes and
about 6,000 modification groups of 3 (source, target) pairs; every source is a base scene and
every target a new image, so a split holds 1,000 + 18,012 (train) / 18,057 (test) images. Sources
of a group are base scenes in which the group's text is unambiguous. Test base scenes each hold a
shape-colour pair from HELD_OUT_PAIRS; no training image holds one (CSS's "novel" split).

Writes:
    <out>/css_toy_dataset_novel2_small.dup.npy   np.save of {'train': ..., 'test': ...}
    <out>/images/css_{train,test}_{idx:06d}.png  64 x 64 renders by TIRG's 2D renderer
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from study.data.css import SCENE_FILE
from study.data.css_mods import apply_mod, can_apply, mod_record, random_mod
from study.data.css_render import render_scene
from study.data.css_scene import ALL_PAIRS, HELD_OUT_PAIRS, random_scene, scene_label
from study.data.images import write_png
from study.data.progress import Progress
from study.data.registry import GENERATORS, Generator, check_scale

VERSION = 1
BASE_SCENES = 1000  # per split at scale 1.0, as in CSS
PAIRS = {"train": 18012, "test": 18057}  # (source, target) pairs at scale 1.0, as in CSS
PAIRS_PER_GROUP = 3


def _split_scenes(split: str, seed: int, scale: float) -> dict[str, Any]:
    """objects_img / mods / labels of one split."""
    rng = np.random.default_rng([seed, ("train", "test").index(split)])
    if split == "train":
        forbidden = HELD_OUT_PAIRS
        pool, must_hold = [p for p in ALL_PAIRS if p not in HELD_OUT_PAIRS], []
    else:
        forbidden, pool, must_hold = frozenset(), list(ALL_PAIRS), sorted(HELD_OUT_PAIRS)
    n_base = max(2, round(BASE_SCENES * scale))
    n_pairs = max(1, round(PAIRS[split] * scale))
    objects_img = [random_scene(rng, pool, must_hold) for _ in range(n_base)]
    mods: list[dict[str, Any]] = []
    made = 0
    while made < n_pairs:
        first = int(rng.integers(n_base))
        mod = random_mod(objects_img[first], rng, forbidden)
        if mod is None:
            continue
        want = min(PAIRS_PER_GROUP, n_pairs - made)
        sources = [first]
        for other in rng.permutation(n_base):
            if len(sources) == want:
                break
            if other != first and can_apply(mod, objects_img[other], forbidden):
                sources.append(int(other))
        targets = []
        for source in sources:
            targets.append(len(objects_img))
            objects_img.append(apply_mod(mod, objects_img[source], rng))
        mods.append(mod_record(mod, sources, targets))
        made += len(sources)
    return {"objects_img": objects_img, "mods": mods, "labels": [scene_label(o) for o in objects_img]}


def generate_css(out: Path, *, seed: int, scale: float) -> None:
    """Write a CSS-2D dataset into `out` (created if missing), deterministic in (seed, scale)."""
    check_scale(scale, "generator css")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    data = {split: _split_scenes(split, seed, scale) for split in ("train", "test")}
    progress = Progress("css: rendered images", sum(len(d["objects_img"]) for d in data.values()))
    for split, d in data.items():
        for idx, objects in enumerate(d["objects_img"]):
            write_png(out / "images" / f"css_{split}_{idx:06d}.png", render_scene(objects))
            progress.step()
    # a 0-d object array holding the dict: what TIRG's np.load(...).item() expects
    np.save(out / SCENE_FILE, np.array(data, dtype=object), allow_pickle=True)


@GENERATORS.register("css")
def css_generator() -> Generator:
    return Generator(name="css", version=VERSION, loader="css", generate=generate_css)
