"""Generator "cirr": sets of six related scenes with captions, in CIRR's own file layout.

Follows CIRR (Liu et al., ICCV 2021, arXiv 2108.04024) as its annotation files show it: images
come in img_sets of six related images, and a query takes one member as reference, another as
target, with a caption saying what changes. Here a set is a chain: a random CSS scene (1-5 shapes
on a 3x3 grid, study/data/css_scene.py, drawn by TIRG's 2D renderer) on a background tone, then
five more, each the previous one with one change: CSS's add / remove / make (study/data/css_mods.py,
"make red circle large") or a new background ("change the background to grass"). Each step is a
query (reference = member i, target = member i + 1, caption = the change), so the caption says
exactly what differs and everything else (objects, places, jitter) is kept: a composer can learn it,
and the other members are the hard negatives Recall_subset ranks among. No scene (objects with
their cells, and background) appears twice in a split. test1's targets are written nowhere, as in
CIRR.

Writes CIRR's layout as its README arranges it (the "cirr" loader reads it):
    <out>/captions/cap.rc2.{train,val,test1}.json
    <out>/image_splits/split.rc2.{train,val,test1}.json       name -> "./dev/dev-3-1-img0.png"
    <out>/img_raw/train/<set % 100>/train-<set>-<k>-img<j>.png, img_raw/dev/dev-..., img_raw/test1/test1-...
    64 x 64 PNGs; names as CIRR's (NLVR2's) <split>-<set>-<k>-img<j>, member 2k + j of the set.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from study.data.cirr import IMAGE_FOLDER, VERSION
from study.data.css_mods import apply_mod, random_mod
from study.data.css_render import render_scene
from study.data.css_scene import ALL_PAIRS, Obj, random_scene, scene_label
from study.data.images import write_png
from study.data.progress import Progress
from study.data.registry import GENERATORS, Generator, check_scale

GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test1")
FOLDERS = {"train": "train", "val": "dev", "test1": "test1"}  # CIRR's image folder and name prefix per split
SETS = {"train": 2800, "val": 380, "test1": 385}  # at scale 1.0: about CIRR's 16,939 / 2,297 / 2,315 images
MIN_SETS = 4
MEMBERS = 6  # images per img_set, as in CIRR
TRAIN_SUBFOLDERS = 100  # CIRR keeps NLVR2's train/0 .. train/99
# Pale tones that no object colour is near, so a background change is visible and objects stay apart.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255), "sand": (236, 220, 180), "grass": (190, 228, 170), "sky": (196, 220, 250),
}
BACKGROUND_SHARE = 0.2  # of the changes: the rest are CSS's add / remove / make
ATTEMPTS = 200  # draws of a change before a chain is restarted from a new scene

Scene = tuple[list[Obj], str]  # objects, background name


def scene_key(scene: Scene) -> str:
    return f"{scene_label(scene[0])} | {scene[1]}"


def render(scene: Scene) -> np.ndarray:
    """uint8 (64, 64, 3): TIRG's white canvas with the white replaced by the background tone."""
    pixels = render_scene(scene[0])
    pixels[(pixels == 255).all(axis=-1)] = BACKGROUNDS[scene[1]]
    return pixels


def _change(scene: Scene, rng: np.random.Generator) -> tuple[Scene, str] | None:
    """One random change of `scene` and its caption, or None when the drawn kind does not apply."""
    objects, background = scene
    if rng.random() < BACKGROUND_SHARE:
        new = str(rng.choice([b for b in BACKGROUNDS if b != background]))
        return (objects, new), f"change the background to {new}"
    mod = random_mod(objects, rng, frozenset())
    return None if mod is None else ((apply_mod(mod, objects, rng), background), mod.text)


def _chain(rng: np.random.Generator, taken: set[str]) -> tuple[list[Scene], list[str]]:
    """MEMBERS scenes, each the previous one changed, none in `taken` (which gains them), and the
    MEMBERS - 1 captions."""
    while True:
        scenes = [(random_scene(rng, ALL_PAIRS), str(rng.choice(list(BACKGROUNDS))))]
        captions: list[str] = []
        keys = {scene_key(scenes[0])}
        for _ in range(ATTEMPTS):
            if len(scenes) == MEMBERS:
                break
            step = _change(scenes[-1], rng)
            key = None if step is None else scene_key(step[0])
            if step is not None and key not in keys and key not in taken:
                scenes.append(step[0])
                captions.append(step[1])
                keys.add(key)
        if len(scenes) == MEMBERS and not keys & taken:
            taken |= keys
            return scenes, captions


def _name(split: str, set_id: int, member: int) -> str:
    return f"{FOLDERS[split]}-{set_id}-{member // 2}-img{member % 2}"


def _relative_path(split: str, name: str, set_id: int) -> str:
    folder = f"train/{set_id % TRAIN_SUBFOLDERS}" if split == "train" else FOLDERS[split]
    return f"./{folder}/{name}.png"


def generate_cirr(out: Path, *, seed: int, scale: float) -> None:
    """Write a CIRR-like dataset into `out` (created if missing), deterministic in (seed, scale)."""
    check_scale(scale, "generator cirr")
    out = Path(out)
    for folder in ("captions", "image_splits", IMAGE_FOLDER):
        (out / folder).mkdir(parents=True, exist_ok=True)
    sets = {split: max(MIN_SETS, round(n * scale)) for split, n in SETS.items()}
    progress = Progress("cirr: rendered images", MEMBERS * sum(sets.values()))
    pair_id = 0
    for s, split in enumerate(SPLITS):
        taken: set[str] = set()
        paths: dict[str, str] = {}
        entries: list[dict[str, Any]] = []
        for set_id in range(sets[split]):
            rng = np.random.default_rng([seed, 1, s, set_id])
            scenes, captions = _chain(rng, taken)
            names = [_name(split, set_id, m) for m in range(MEMBERS)]
            for name, scene in zip(names, scenes):
                paths[name] = _relative_path(split, name, set_id)
                image = out / IMAGE_FOLDER / paths[name]
                image.parent.mkdir(parents=True, exist_ok=True)
                write_png(image, render(scene))
                progress.step()
            members = [names[int(i)] for i in rng.permutation(MEMBERS)]  # CIRR lists members in no chain order
            for step, caption in enumerate(captions):
                entry: dict[str, Any] = {"pairid": pair_id, "reference": names[step]}
                if split != "test1":  # test1's targets are hidden, as in CIRR
                    entry |= {"target_hard": names[step + 1], "target_soft": {names[step + 1]: 1.0}}
                img_set = {"id": set_id, "members": members, "reference_rank": step}
                if split != "test1":
                    img_set["target_rank"] = step + 1
                entries.append({**entry, "caption": caption, "img_set": img_set})
                pair_id += 1
        (out / "captions" / f"cap.{VERSION}.{split}.json").write_text(json.dumps(entries, indent=1) + "\n")
        (out / "image_splits" / f"split.{VERSION}.{split}.json").write_text(json.dumps(paths, indent=1) + "\n")


@GENERATORS.register("cirr")
def cirr_generator() -> Generator:
    return Generator(name="cirr", version=GENERATOR_VERSION, loader="cirr", generate=generate_cirr)
