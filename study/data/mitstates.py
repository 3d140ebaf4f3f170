"""Loader "mitstates": reads MIT-States' layout (and what generator "states" writes).

MIT-States (Isola, Lim and Adelson, CVPR 2015) with TIRG's protocol (Vo et al., CVPR 2019, arXiv
1812.07119; methods.md B.7):
    <root>/images/<adj noun>/*.jpg   folders without a space and the placeholder "adj noun" skipped
Test nouns are MIT-States' 49 (below) unless `<root>/test_nouns.txt` lists others (one per line,
'#' comments); every other noun trains. A query is an image and another adjective of its noun; its
target is an image labelled "target_adj noun". Regions come from `<root>/regions.json` when present.
Options: none. Images are found by listing the folders, so none can be listed but absent.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from study.data.checks import SplitParts, assemble, check_options
from study.data.errors import DatasetError
from study.data.reads import note_folder, read_text
from study.data.registry import DATASETS, DETECTORS
from study.data.types import Query, RetrievalData

RECALL_KS = (1, 5, 10)
TEST_NOUNS_FILE = "test_nouns.txt"  # sidecar of generator "states"; overrides MIT_STATES_TEST_NOUNS
REGIONS_FILE = "regions.json"  # sidecar of generator "states": image path -> [top, left, bottom, right]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
TRAIN_QUERY_CAP = 50_000  # all (image, other adjective) pairs of real MIT-States train are ~10x this
MIT_STATES_TEST_NOUNS: tuple[str, ...] = (
    "armor", "bracelet", "bush", "camera", "candy", "castle", "ceramic", "cheese", "clock", "clothes",
    "coffee", "fan", "fig", "fish", "foam", "forest", "fruit", "furniture", "garden", "gate", "glass",
    "horse", "island", "laptop", "lead", "lightning", "mirror", "orange", "paint", "persimmon",
    "plastic", "plate", "potato", "road", "rubber", "sand", "shell", "sky", "smoke", "steel", "stream",
    "table", "tea", "tomato", "vacuum", "wax", "wheel", "window", "wool",
)  # fmt: skip

Region = tuple[float, float, float, float]


def read_test_nouns(root: Path) -> tuple[frozenset[str], str]:
    """The test nouns and where they came from."""
    path = root / TEST_NOUNS_FILE
    if not path.is_file():
        return frozenset(MIT_STATES_TEST_NOUNS), "MIT-States' 49 test nouns"
    nouns = set()
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        word = line.split("#", 1)[0].strip()
        if word and len(word.split()) != 1:
            raise DatasetError(f"{path}, line {line_no}: expected one noun per line, got {line!r}")
        if word:
            nouns.add(word)
    return frozenset(nouns), str(path)


def read_regions(root: Path) -> dict[str, Region]:
    path = root / REGIONS_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}, line {err.lineno}: not valid JSON ({err.msg}); delete the file or regenerate the dataset") from None
    regions = {}
    for rel, box in raw.items():
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in box)):
            raise DatasetError(f"{path}: region of {rel!r} must be [top, left, bottom, right] in [0, 1], got {box!r}")
        regions[rel] = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
    return regions


def _list_images(root: Path) -> list[tuple[str, str, str]]:
    """(relative path, adj, noun) of every image, sorted for a stable order."""
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir}: folder is missing; MIT-States needs <root>/images/<adj noun>/*.jpg")
    note_folder(images_dir)
    found = []
    for folder in sorted(p for p in images_dir.iterdir() if p.is_dir() and " " in p.name):
        words = folder.name.split()
        if len(words) != 2:
            raise DatasetError(f"{folder}: folder name must be '<adj> <noun>', got {len(words)} words; rename or remove it")
        adj, noun = words
        if adj == "adj":  # MIT-States ships an empty placeholder folder "adj noun"
            continue
        note_folder(folder)
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                found.append((f"images/{folder.name}/{file.name}", adj, noun))
    return found


def _split(name: str, images: list[tuple[str, str, str]], regions: dict[str, Region]) -> SplitParts:
    paths = tuple(p for p, _, _ in images)
    labels = tuple(f"{adj} {noun}" for _, adj, noun in images)
    by_label: dict[str, list[int]] = defaultdict(list)
    adjectives: dict[str, set[str]] = defaultdict(set)
    for i, (_, adj, noun) in enumerate(images):
        by_label[labels[i]].append(i)
        adjectives[noun].add(adj)
    queries = []
    for i, (path, adj, noun) in enumerate(images):
        for target_adj in sorted(adjectives[noun] - {adj}):
            candidates = by_label[f"{target_adj} {noun}"]
            # spread the fixed targets over the label's images instead of always the first one
            queries.append(Query(i, target_adj, candidates[i % len(candidates)], "adjective", regions.get(path)))
    if name == "train" and len(queries) > TRAIN_QUERY_CAP:
        keep = np.sort(np.random.default_rng(0).choice(len(queries), size=TRAIN_QUERY_CAP, replace=False))
        queries = [queries[k] for k in keep]
    return SplitParts(name, list(paths), list(labels), queries, present=set(paths))  # found by listing


@DATASETS.register("mitstates")
def load_mitstates(root: Path, *, allow_missing_images: bool = False, **options: Any) -> RetrievalData:
    """Read a MIT-States layout at `root` (released or generated); takes no options."""
    check_options("mitstates", options, {})
    root = Path(root)
    test_nouns, source = read_test_nouns(root)
    images = _list_images(root)
    regions = read_regions(root)
    parts = {
        "train": [im for im in images if im[2] not in test_nouns],
        "test": [im for im in images if im[2] in test_nouns],
    }
    for name, part in parts.items():
        if not part:
            raise DatasetError(
                f"{root / 'images'}: no {name} images (test nouns from {source}); "
                f"check the <adj noun> folders and test_nouns.txt"
            )
    train, test = (_split(name, part, regions) for name, part in parts.items())
    train_nouns = sorted({noun for _, _, noun in parts["train"]})
    used_test = sorted({noun for _, _, noun in parts["test"]})
    notes = (
        f"test nouns ({len(used_test)}, from {source}): {', '.join(used_test)}",
        f"train nouns ({len(train_nouns)}), disjoint from the test nouns: {', '.join(train_nouns)}",
    )
    return assemble("mitstates", root, train, test, recall_ks=RECALL_KS, notes=notes,
                    allow_missing_images=allow_missing_images, fix="re-download MIT-States' images/ folder",
                    label_parts=("adjective", "noun"))


@DETECTORS.register("mitstates")
def is_mitstates(root: Path) -> dict[str, Any] | None:
    images_dir = Path(root) / "images"
    found = images_dir.is_dir() and any(p.is_dir() and " " in p.name for p in images_dir.iterdir())
    return {} if found else None
