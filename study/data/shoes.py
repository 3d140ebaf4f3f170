"""Loader "shoes": reads the Shoes relative-caption layout.

Shoes: relative captions of Guo et al. ("Dialog-based Interactive Image Retrieval", NeurIPS 2018)
on the shoe images of Berg et al. ("Automatic Attribute Discovery and Characterization from Noisy
Web Data", ECCV 2010); methods.md B.7:
    <root>/split.{train,test}.json     [image name, ...]: the gallery of each split
    <root>/triplet.{train,test}.json   [{"ReferenceImageName", "ImageName", "RelativeCaption"}, ...]
    <root>/attributedata/**/<name>     the images as the download unpacks them
                                       (attributedata/womens_pumps/0/img_womens_pumps_123.jpg),
    or <root>/images/**/<name>         or moved under images/, in any sub-folders; a file is
                                       found by its name, which must be unique over both folders
A query is reference image + caption -> ImageName; a hit is that image itself (labels are image
names); the source is excluded; R@1, R@10, R@50. Query.kind is "caption". Options: none.
The ImageManifest lists image names (the annotations name files, not their folders).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from study.data.checks import SplitParts, assemble, check_options, expect_list, read_json
from study.data.errors import DatasetError
from study.data.reads import note_folder
from study.data.registry import DATASETS, DETECTORS
from study.data.types import Query, RetrievalData

RECALL_KS = (1, 10, 50)
IMAGE_DIRS = ("attributedata", "images")  # the download's folder, and the one users often move images to
TRIPLET_KEYS = ("ReferenceImageName", "ImageName", "RelativeCaption")
FIX = "re-download the Shoes annotations (split.*.json, triplet.*.json) and unpack the images (attributedata/)"


def image_files(root: Path) -> dict[str, str]:
    """image name -> path relative to root, for every file under attributedata/ and images/."""
    found: dict[str, str] = {}
    for top in IMAGE_DIRS:
        note_folder(root / top)  # absent: its parent, the root, is recorded anyway
        for folder, subfolders, names in os.walk(root / top):
            note_folder(folder)
            subfolders.sort()
            for name in sorted(names):
                rel = Path(folder, name).relative_to(root).as_posix()
                if name in found:
                    raise DatasetError(f"{root / rel}: image name {name!r} also at {root / found[name]}; Shoes finds "
                                       f"images by name, so names must be unique: remove one copy")
                found[name] = rel
    return found


def _split(root: Path, name: str, files: dict[str, str]) -> SplitParts:
    split_path = root / f"split.{name}.json"
    names = expect_list(read_json(split_path, FIX), split_path, "image names")
    for i, image in enumerate(names):
        if not isinstance(image, str) or not image:
            raise DatasetError(f"{split_path}: entry {i} must be an image name (a non-empty string), got {image!r}")
    names = list(dict.fromkeys(names))
    gallery = {image: i for i, image in enumerate(names)}
    triplet_path = root / f"triplet.{name}.json"
    queries = []
    for i, entry in enumerate(expect_list(read_json(triplet_path, FIX), triplet_path, "triplets")):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in TRIPLET_KEYS):
            raise DatasetError(f"{triplet_path}: entry {i} must have string fields {list(TRIPLET_KEYS)}, got {str(entry)[:120]}")
        for key in TRIPLET_KEYS[:2]:
            if entry[key] not in gallery:
                raise DatasetError(f"{triplet_path}: entry {i}: {key} {entry[key]!r} is not in {split_path}; the files do not match")
        queries.append(Query(gallery[entry["ReferenceImageName"]], entry["RelativeCaption"].strip(), gallery[entry["ImageName"]], "caption", None))
    paths = [files.get(image, f"{IMAGE_DIRS[0]}/{image}") for image in names]
    return SplitParts(name, paths, names, queries, present=set(files.values()), listed=names,
                      listed_in=(split_path.name,))


@DATASETS.register("shoes")
def load_shoes(root: Path, *, allow_missing_images: bool = False, **options: Any) -> RetrievalData:
    """Read a Shoes layout at `root`; takes no options."""
    check_options("shoes", options, {})
    root = Path(root)
    files = image_files(root)
    train, test = (_split(root, name, files) for name in ("train", "test"))
    notes = (
        f"images found by name under {' and '.join(d + '/' for d in IMAGE_DIRS)} (any sub-folder); the image manifest lists the names",
        "gallery = split.<split>.json; hit = the target image itself, source excluded",
    )
    return assemble("shoes", root, train, test, recall_ks=RECALL_KS, notes=notes,
                    allow_missing_images=allow_missing_images, fix=FIX)


@DETECTORS.register("shoes")
def is_shoes(root: Path) -> dict[str, Any] | None:
    return {} if any((Path(root) / f"triplet.{s}.json").is_file() for s in ("train", "test")) else None
