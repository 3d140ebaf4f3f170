"""Loader "fashioniq": reads FashionIQ's layout, one category at a time.

FashionIQ (Wu et al., "Fashion IQ: A New Dataset Towards Retrieving Images by Natural Language
Feedback", CVPR 2021), methods.md B.7:
    <root>/captions/cap.{dress,shirt,toptee}.{train,val}.json
        [{"candidate": id, "target": id, "captions": [c1, c2]}, ...]
    <root>/image_splits/split.{dress,shirt,toptee}.{train,val}.json   [id, ...]: the gallery
    <root>/images/<id>.png | .jpg | .jpeg
Protocol: the test targets are not public, so our "test" split is FashionIQ's val split; the
gallery is the category's image split; R@10 and R@50 per category (papers average the six). A
query's text is its captions joined with JOIN in the order given; a hit is the target image itself
(labels are image ids); the source is excluded. Query.kind is "caption" (free text, no type).
The ImageManifest lists "images/<id>" (the annotations name ids, not files).
Options: category (required): one of CATEGORIES.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from study.data.checks import SplitParts, assemble, check_options, expect_list, read_json
from study.data.errors import DatasetError
from study.data.reads import note_folder
from study.data.registry import DATASETS, DETECTORS
from study.data.types import Query, RetrievalData

CATEGORIES = ("dress", "shirt", "toptee")
SPLIT_FILES = {"train": "train", "test": "val"}  # our split -> FashionIQ's file name
RECALL_KS = (10, 50)
JOIN = " and "
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FIX = "re-download FashionIQ (captions/, image_splits/, images/)"


def image_files(root: Path) -> dict[str, str]:
    """id -> relative path of every image under images/ (listed once, not one stat per id)."""
    folder = root / "images"
    if not folder.is_dir():
        return {}
    found: dict[str, str] = {}
    note_folder(folder)
    for file in sorted(folder.iterdir()):
        if file.suffix.lower() in IMAGE_SUFFIXES:
            found.setdefault(file.stem, f"images/{file.name}")
    return found


def read_image_split(path: Path) -> list[str]:
    ids = expect_list(read_json(path, FIX), path, "image ids")
    for i, image_id in enumerate(ids):
        if not isinstance(image_id, str) or not image_id:
            raise DatasetError(f"{path}: entry {i} must be an image id (a non-empty string), got {image_id!r}")
    return list(dict.fromkeys(ids))  # drop repeats, keep order


def read_captions(path: Path, gallery: dict[str, int], split_path: Path) -> list[Query]:
    entries = expect_list(read_json(path, FIX), path, "{candidate, target, captions} objects")
    queries = []
    for i, entry in enumerate(entries):
        captions = entry.get("captions") if isinstance(entry, dict) else None
        if (not isinstance(entry, dict) or not isinstance(entry.get("candidate"), str) or not isinstance(entry.get("target"), str)
                or not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions)):
            raise DatasetError(
                f"{path}: entry {i} must be {{'candidate': id, 'target': id, 'captions': [text, ...]}}, got {str(entry)[:120]}"
            )
        for key in ("candidate", "target"):
            if entry[key] not in gallery:
                raise DatasetError(f"{path}: entry {i}: {key} {entry[key]!r} is not in the gallery {split_path}; the files do not match")
        text = JOIN.join(c.strip() for c in captions)
        queries.append(Query(gallery[entry["candidate"]], text, gallery[entry["target"]], "caption", None))
    return queries


def categories_in(root: Path) -> list[str]:
    return [c for c in CATEGORIES if (Path(root) / "captions" / f"cap.{c}.{SPLIT_FILES['test']}.json").is_file()]


def _split(root: Path, name: str, category: str, files: dict[str, str]) -> SplitParts:
    split_path = root / "image_splits" / f"split.{category}.{SPLIT_FILES[name]}.json"
    ids = read_image_split(split_path)
    gallery = {image_id: i for i, image_id in enumerate(ids)}
    queries = read_captions(root / "captions" / f"cap.{category}.{SPLIT_FILES[name]}.json", gallery, split_path)
    paths = [files.get(image_id, f"images/{image_id}.png") for image_id in ids]
    return SplitParts(name, paths, ids, queries, present=set(files.values()), listed=[f"images/{i}" for i in ids],
                      listed_in=(split_path.relative_to(root).as_posix(),))


@DATASETS.register("fashioniq")
def load_fashioniq(root: Path, *, allow_missing_images: bool = False, **options: Any) -> RetrievalData:
    """Read one category of a FashionIQ layout at `root`: options={"category": "dress"}."""
    category = check_options("fashioniq", options, {"category": CATEGORIES})["category"]
    root = Path(root)
    files = image_files(root)
    train, test = (_split(root, name, category, files) for name in ("train", "test"))
    notes = (
        f"category {category} (categories in this folder: {', '.join(categories_in(root)) or 'none'})",
        "test split = FashionIQ's val split (test targets are not public); gallery = the category's image split",
        f"captions joined with {JOIN!r} in the order given; hit = the target image itself",
        "image manifest lists images/<id> (FashionIQ lists ids; the file may be .png or .jpg)",
    )
    return assemble("fashioniq", root, train, test, recall_ks=RECALL_KS, notes=notes,
                    allow_missing_images=allow_missing_images, fix=FIX)


@DETECTORS.register("fashioniq")
def is_fashioniq(root: Path) -> dict[str, Any] | None:
    found = categories_in(root)
    return {"category": found[0]} if found else None
