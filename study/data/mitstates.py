"""Loader "mitstates": reads MIT-States' layout (and what generator "states" writes), in one of two splits.

MIT-States (Isola, Lim and Adelson, CVPR 2015) with TIRG's protocol (Vo et al., CVPR 2019, arXiv
1812.07119; methods.md B.7):
    <root>/images/<adj noun>/*.jpg   folders without a space and the placeholder "adj noun" skipped
A query is an image and another adjective of its noun (both in the same split); its target is an
image labelled "target_adj noun". Regions come from `<root>/regions.json` when present.

Options (both optional):
  split: nouns (default)  TIRG's noun-disjoint split. Test nouns are MIT-States' 49 (below) unless
                          `<root>/test_nouns.txt` lists others (one per line, '#' comments); every
                          other noun trains.
  split: compositions     the compositional split of Misra, Gupta and Hebert, "From Red Wine to Red
                          Tomato: Composition with Context", CVPR 2017: every adjective and every
                          noun appears in training, but the test adjective-noun *pairs* never do.
                          Per noun with m adjectives, floor(TEST_PAIR_SHARE * m) of its pairs are
                          held out (at most m - 2, so the noun keeps two training adjectives and so
                          training queries), drawn from `split_seed`, skipping a pair whose
                          adjective would be left without a training query text. The test split
                          holds the images of the held-out pairs; a test query is an image of a
                          held-out pair (a', n) -> the text "a" -> an image of another held-out pair
                          (a, n): source and target are both unseen compositions, the text a seen
                          word. A noun with one held-out pair gives no test query (its images are
                          still classified: study/classify.py). test_nouns.txt is ignored. This is
                          our rule, not Misra et al.'s released pair list (docs/classification.md).
  split_seed: int >= 0    (compositions only; default 0) which pairs are held out.
Images are found by listing the folders, so none can be listed but absent.
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
SPLITS = ("nouns", "compositions")  # option `split`; SPLITTERS below holds each one's rule
NOTE_PAIRS = 30  # test pairs named in the notes (`python -m study.data describe`)
# Misra et al. hold out about 700 of MIT-States' 1,962 pairs (36%) [recalled]; per noun, floored
TEST_PAIR_SHARE = 0.35
MIN_TRAIN_ADJECTIVES = 2  # a noun keeps two training adjectives: its images have a training query
MIT_STATES_TEST_NOUNS: tuple[str, ...] = (
    "armor", "bracelet", "bush", "camera", "candy", "castle", "ceramic", "cheese", "clock", "clothes",
    "coffee", "fan", "fig", "fish", "foam", "forest", "fruit", "furniture", "garden", "gate", "glass",
    "horse", "island", "laptop", "lead", "lightning", "mirror", "orange", "paint", "persimmon",
    "plastic", "plate", "potato", "road", "rubber", "sand", "shell", "sky", "smoke", "steel", "stream",
    "table", "tea", "tomato", "vacuum", "wax", "wheel", "window", "wool",
)  # fmt: skip

Region = tuple[float, float, float, float]
LabelledImage = tuple[str, str, str]  # (relative path, adjective, noun)


class SeedValues:
    """check_options' valid values of `split_seed`: any integer >= 0, as an int (a space file) or
    its digits (`--option split_seed=3` arrives as a string)."""

    def __contains__(self, value: object) -> bool:
        return read_seed(value) is not None

    def __iter__(self):
        return iter(["an integer >= 0"])


def read_seed(value: object) -> int | None:
    """`value` as a seed, or None when it is not an integer >= 0 (or its ASCII digits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def read_split_options(options: dict[str, Any]) -> tuple[str, int]:
    """(split, split_seed) from the loader's options, defaults filled in; bad ones raise DatasetError."""
    checked = check_options("mitstates", {"split": "nouns", "split_seed": 0, **options},
                            {"split": SPLITS, "split_seed": SeedValues()})
    if checked["split"] == "nouns" and "split_seed" in options:
        raise DatasetError(f"dataset mitstates: option split_seed={options['split_seed']!r} applies to "
                           "split=compositions only (the noun split is fixed by the test nouns); drop it or pass "
                           "split=compositions")
    return checked["split"], int(read_seed(checked["split_seed"]))  # type: ignore[arg-type]


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


def _list_images(root: Path) -> list[LabelledImage]:
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


def _split(name: str, images: list[LabelledImage], regions: dict[str, Region]) -> SplitParts:
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


def held_out_pairs(images: list[LabelledImage], seed: int) -> frozenset[tuple[str, str]]:
    """The (adjective, noun) pairs the composition split tests on (module docstring), from `seed`.

    Nouns are visited in sorted order, each noun's adjectives in an order drawn from the seed; a pair
    is held out while its noun's quota lasts and its adjective keeps a training query text (a pair
    of a noun with at least MIN_TRAIN_ADJECTIVES training adjectives)."""
    adjectives: dict[str, set[str]] = defaultdict(set)
    for _, adj, noun in images:
        adjectives[noun].add(adj)
    nouns = sorted(adjectives)
    # how many training nouns give each adjective a query text, updated as pairs are held out
    texts = defaultdict(int)
    for noun in nouns:
        if len(adjectives[noun]) >= MIN_TRAIN_ADJECTIVES:
            for adj in adjectives[noun]:
                texts[adj] += 1
    rng = np.random.default_rng([seed, 14])
    held: set[tuple[str, str]] = set()
    for noun in nouns:
        own = sorted(adjectives[noun])
        quota = min(int(TEST_PAIR_SHARE * len(own)), len(own) - MIN_TRAIN_ADJECTIVES)
        for k in rng.permutation(len(own)).tolist():
            if quota <= 0:
                break
            if texts[own[k]] > 1:
                held.add((own[k], noun))
                texts[own[k]] -= 1
                quota -= 1
    return frozenset(held)


def _split_by_nouns(root: Path, images: list[LabelledImage],
                    seed: int) -> tuple[dict[str, list[LabelledImage]], list[str]]:
    del seed  # fixed by the test nouns (read_split_options refuses a split_seed here)
    test_nouns, source = read_test_nouns(root)
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
    train_nouns = sorted({noun for _, _, noun in parts["train"]})
    used_test = sorted({noun for _, _, noun in parts["test"]})
    notes = [
        f"test nouns ({len(used_test)}, from {source}): {', '.join(used_test)}",
        f"train nouns ({len(train_nouns)}), disjoint from the test nouns: {', '.join(train_nouns)}",
    ]
    return parts, notes


def _split_by_compositions(root: Path, images: list[LabelledImage],
                           seed: int) -> tuple[dict[str, list[LabelledImage]], list[str]]:
    held = held_out_pairs(images, seed)
    if not held:
        raise DatasetError(f"{root / 'images'}: split=compositions holds out no pair: no noun has "
                           f"{MIN_TRAIN_ADJECTIVES + 1} or more adjectives, or none can leave training; "
                           "use split=nouns, or add <adj noun> folders")
    parts = {
        "train": [im for im in images if (im[1], im[2]) not in held],
        "test": [im for im in images if (im[1], im[2]) in held],
    }
    pairs = {(adj, noun) for _, adj, noun in images}
    named = [f"{a} {n}" for a, n in sorted(held, key=lambda p: (p[1], p[0]))]
    by_noun = defaultdict(int)
    for _, noun in held:
        by_noun[noun] += 1
    notes = [
        f"composition split (Misra et al., CVPR 2017), split_seed {seed}: {len(held)} of {len(pairs)} "
        f"adjective-noun pairs held out for test; every adjective and noun also trains",
        f"test pairs: {', '.join(named[:NOTE_PAIRS])}{f' and {len(named) - NOTE_PAIRS} more' if len(named) > NOTE_PAIRS else ''}",
        f"test queries: an image of a held-out pair -> another held-out adjective of its noun "
        f"({sum(c >= 2 for c in by_noun.values())} of {len(by_noun)} test nouns have two or more held-out pairs)",
        f"{TEST_NOUNS_FILE} is not used by this split",
    ]
    return parts, notes


SPLITTERS = {"nouns": _split_by_nouns, "compositions": _split_by_compositions}  # option split -> its rule


@DATASETS.register("mitstates")
def load_mitstates(root: Path, *, allow_missing_images: bool = False, **options: Any) -> RetrievalData:
    """Read a MIT-States layout at `root` (released or generated): options {"split": "nouns"} (the
    default) or {"split": "compositions", "split_seed": 0} (module docstring)."""
    split, seed = read_split_options(options)
    root = Path(root)
    images = _list_images(root)
    regions = read_regions(root)
    parts, notes = SPLITTERS[split](root, images, seed)
    train, test = (_split(name, part, regions) for name, part in parts.items())
    if split == "compositions" and not test.queries:
        raise DatasetError(f"{root / 'images'}: split=compositions gives no test query (no noun has two held-out "
                           "pairs); use another split_seed, or split=nouns")
    return assemble("mitstates", root, train, test, recall_ks=RECALL_KS, notes=notes,
                    allow_missing_images=allow_missing_images, fix="re-download MIT-States' images/ folder",
                    label_parts=("adjective", "noun"))


@DETECTORS.register("mitstates")
def is_mitstates(root: Path) -> dict[str, Any] | None:
    images_dir = Path(root) / "images"
    found = images_dir.is_dir() and any(p.is_dir() and " " in p.name for p in images_dir.iterdir())
    return {} if found else None
