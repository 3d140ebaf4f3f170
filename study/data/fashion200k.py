"""Loader "fashion200k": reads Fashion200k's layout (and what generator "fashion" writes).

Fashion200k (Han et al., "Automatic Spatially-aware Fashion Concept Discovery", ICCV 2017) with
TIRG's protocol (Vo et al., CVPR 2019, arXiv 1812.07119; code `datasets.Fashion200k`; methods.md B.7):
    <root>/labels/<category>_{train,test}_detect_all.txt   TSV: image path \\t detection score \\t caption
    <root>/women/<category>/<caption_folder>/<id>/*.jpeg    image paths are relative to <root>
    <root>/test_queries.txt                                "source_path target_path" per line
    <root>/regions.json                                    optional (generator "fashion"):
                                                           {path: {"garment": box, "length": box}}
A label file belongs to the split whose name appears in its file name (TIRG's rule). Captions are
cleaned as TIRG does (strip; . ? & * -> dotmark questionmark andmark starmark). A caption's parents
are the caption with one word removed (word by word; TIRG removes the substring, which can also
cut inside other words); two captions sharing a parent differ in one word. Training queries: one
per image whose caption has such a sibling, to a seeded random sibling caption and image. Test
queries: test_queries.txt. Text: "replace <first source word not in target> with <first target
word not in source>"; a hit is any image with the target's caption; the source is excluded.
Query.kind is the replaced attribute ("color", "pattern", "length", "category" from
ATTRIBUTE_WORDS; "word" otherwise). Options: none.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from study.data.checks import SplitParts, assemble, check_options, read_json, read_lines
from study.data.errors import DatasetError
from study.data.reads import note_folder
from study.data.registry import DATASETS, DETECTORS
from study.data.types import Query, RetrievalData

RECALL_KS = (1, 10, 50)
LABELS_DIR = "labels"
LABEL_SUFFIX = "_detect_all.txt"
TEST_QUERIES_FILE = "test_queries.txt"
REGIONS_FILE = "regions.json"
TRAIN_QUERY_SEED = 0  # training queries are fixed per layout, like MIT-States' (study/data/mitstates.py)
FIX = "re-download Fashion200k (labels/, women/, test_queries.txt) or regenerate with `python -m study.data generate fashion --out DIR`"

# Words that name an attribute in Fashion200k-style product captions; the generator's words are
# a subset (tests/data/test_fashion_generate.py checks it).
ATTRIBUTE_WORDS: dict[str, frozenset[str]] = {
    "color": frozenset(
        "black white red blue green yellow pink purple orange brown gray grey beige navy ivory cream "
        "gold silver khaki tan burgundy maroon coral teal turquoise olive mint lavender lilac camel "
        "charcoal multicolor multi nude rose blush wine fuchsia indigo denim".split()
    ),
    "pattern": frozenset(
        "solid striped stripe stripes dotted dot dots polka checked check plaid gingham floral flower "
        "print printed paisley leopard camouflage geometric houndstooth embroidered lace sequin".split()
    ),
    "length": frozenset("short long midi mini maxi cropped knee ankle full-length sleeveless".split()),
    "category": frozenset("dress dresses skirt skirts top tops pants trousers jacket jackets".split()),
}


def clean_caption(raw: str) -> str:
    """TIRG's `caption_post_process`."""
    return raw.strip().replace(".", "dotmark").replace("?", "questionmark").replace("&", "andmark").replace("*", "starmark")


def different_words(source: str, target: str) -> tuple[str, str]:
    """TIRG's `get_different_word`: the first source word not in the target and the first target
    word not in the source (the last word when there is none)."""
    source_words, target_words = source.split(), target.split()
    source_word = next((w for w in source_words if w not in target_words), source_words[-1])
    target_word = next((w for w in target_words if w not in source_words), target_words[-1])
    return source_word, target_word


def attribute_of(source_word: str, target_word: str) -> str:
    """Which attribute a "replace A with B" changes, from ATTRIBUTE_WORDS; "word" when unknown."""
    for word in (source_word, target_word):
        for kind, words in ATTRIBUTE_WORDS.items():
            if word.lower() in words:
                return kind
    return "word"


def parents(caption: str) -> list[str]:
    words = caption.split()
    return [" ".join(words[:i] + words[i + 1 :]) for i in range(len(words))]


def read_labels(root: Path, split: str) -> tuple[list[str], list[str], list[str]]:
    """(image paths, captions, label file names) of a split, files in name order."""
    folder = root / LABELS_DIR
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder is missing; Fashion200k needs labels/<category>_{{train,test}}{LABEL_SUFFIX}; {FIX}")
    note_folder(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and split in p.name and p.name.endswith(".txt"))
    if not files:
        raise DatasetError(f"{folder}: no label file with {split!r} in its name (e.g. dress_{split}{LABEL_SUFFIX}); {FIX}")
    paths, captions = [], []
    for path in files:
        for line_no, line in enumerate(read_lines(path, FIX), start=1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 3:
                raise DatasetError(
                    f"{path}, line {line_no}: expected 3 tab-separated fields (image path, detection score, "
                    f"caption), got {len(fields)}: {line[:80]!r}; the file is truncated or corrupt: {FIX}"
                )
            image, score, caption = fields
            try:
                float(score)
            except ValueError:
                raise DatasetError(f"{path}, line {line_no}: detection score must be a number, got {score!r}") from None
            caption = clean_caption(caption)
            if not image.strip() or not caption:
                raise DatasetError(f"{path}, line {line_no}: empty image path or caption: {line[:80]!r}")
            paths.append(image.strip())
            captions.append(caption)
    return paths, captions, [p.name for p in files]


def read_regions(root: Path) -> dict[str, dict[str, tuple[float, float, float, float]]]:
    path = root / REGIONS_FILE
    if not path.is_file():
        return {}
    raw = read_json(path, f"delete {path} or regenerate the dataset")
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: expected a JSON object {{image path: {{'garment': box, 'length': box}}}}")
    regions = {}
    for rel, boxes in raw.items():
        ok = isinstance(boxes, dict) and all(
            isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in b) for b in boxes.values()
        )
        if not ok:
            raise DatasetError(f"{path}: regions of {rel!r} must map names to [top, left, bottom, right] in [0, 1], got {boxes!r}")
        regions[rel] = {name: (float(b[0]), float(b[1]), float(b[2]), float(b[3])) for name, b in boxes.items()}
    return regions


def make_query(source: int, target: int, captions: list[str], paths: list[str], regions: dict) -> Query:
    source_word, target_word = different_words(captions[source], captions[target])
    kind = attribute_of(source_word, target_word)
    region = regions.get(paths[source], {}).get("length" if kind == "length" else "garment")
    return Query(source, f"replace {source_word} with {target_word}", target, kind, region)


def make_train_queries(paths: list[str], captions: list[str], regions: dict) -> tuple[list[Query], int]:
    """One query per image whose caption shares a parent with another caption, and how many
    images have none (TIRG's "modifiable" flag)."""
    images_of: dict[str, list[int]] = defaultdict(list)
    for i, caption in enumerate(captions):
        images_of[caption].append(i)
    children: dict[str, set[str]] = defaultdict(set)
    for caption in images_of:
        for parent in parents(caption):
            children[parent].add(caption)
    rng = np.random.default_rng(TRAIN_QUERY_SEED)
    queries, unmodifiable = [], 0
    siblings_of: dict[str, list[str]] = {}  # per caption, not per image: captions repeat across images
    for i, caption in enumerate(captions):
        if caption not in siblings_of:
            siblings_of[caption] = sorted({other for p in parents(caption) for other in children[p]} - {caption})
        siblings = siblings_of[caption]
        if not siblings:
            unmodifiable += 1
            continue
        target_caption = siblings[int(rng.integers(len(siblings)))]
        candidates = images_of[target_caption]
        queries.append(make_query(i, candidates[int(rng.integers(len(candidates)))], captions, paths, regions))
    return queries, unmodifiable


def read_test_queries(root: Path, paths: list[str], captions: list[str], regions: dict) -> list[Query]:
    path = root / TEST_QUERIES_FILE
    index: dict[str, int] = {}
    for i, p in enumerate(paths):
        index.setdefault(p, i)
    queries = []
    for line_no, line in enumerate(read_lines(path, FIX), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise DatasetError(f"{path}, line {line_no}: expected 2 space-separated fields (source path, target path), got {len(fields)}: {line[:80]!r}")
        for image in fields:
            if image not in index:
                raise DatasetError(f"{path}, line {line_no}: image {image!r} is not listed in any {LABELS_DIR}/*test*.txt file")
        queries.append(make_query(index[fields[0]], index[fields[1]], captions, paths, regions))
    return queries


@DATASETS.register("fashion200k")
def load_fashion200k(root: Path, *, allow_missing_images: bool = False, **options: Any) -> RetrievalData:
    """Read a Fashion200k layout at `root` (released or generated); takes no options."""
    check_options("fashion200k", options, {})
    root = Path(root)
    regions = read_regions(root)
    train_paths, train_captions, train_files = read_labels(root, "train")
    test_paths, test_captions, test_files = read_labels(root, "test")
    queries, unmodifiable = make_train_queries(train_paths, train_captions, regions)
    train = SplitParts("train", train_paths, train_captions, queries,
                       listed_in=tuple(f"{LABELS_DIR}/{name}" for name in train_files))
    test = SplitParts("test", test_paths, test_captions, read_test_queries(root, test_paths, test_captions, regions),
                      listed_in=tuple(f"{LABELS_DIR}/{name}" for name in test_files))
    notes = (
        f"label files: train {', '.join(train_files)}; test {', '.join(test_files)}",
        f"training queries: one per image whose caption shares a parent with another caption "
        f"(seed {TRAIN_QUERY_SEED}); {unmodifiable} training images have none",
        f"test queries: {TEST_QUERIES_FILE}; hit = same caption, source excluded",
    )
    return assemble("fashion200k", root, train, test, recall_ks=RECALL_KS, notes=notes,
                    allow_missing_images=allow_missing_images, fix=FIX)


@DETECTORS.register("fashion200k")
def is_fashion200k(root: Path) -> dict[str, Any] | None:
    folder = Path(root) / LABELS_DIR
    found = folder.is_dir() and any(p.name.endswith(LABEL_SUFFIX) for p in folder.iterdir())
    return {} if found else None
