"""Loader "cirr": reads CIRR's layout (and what generator "cirr" writes).

CIRR (Liu et al., "Image Retrieval on Real-life Images with Pre-trained Vision-and-Language
Models", ICCV 2021, arXiv 2108.04024; github.com/Cuberick-Orion/CIRR, branch cirr_dataset):
    <annotations>/captions/cap.rc2.{train,val,test1}.json
        [{"pairid": 12060, "reference": "dev-244-0-img0", "target_hard": "dev-1028-1-img1",
          "target_soft": {"dev-1028-1-img1": 1.0}, "caption": "show three bottles of soft drink",
          "img_set": {"id": 36, "members": [six image names], "reference_rank": 2, "target_rank": 3}}, ...]
        (test1 entries have no target_hard, target_soft or target_rank: its targets are hidden)
    <annotations>/image_splits/split.rc2.{train,val,test1}.json
        {"dev-244-0-img0": "./dev/dev-244-0-img0.png", "train-11041-2-img0": "./train/34/train-11041-2-img0.png", ...}
where <annotations> is the root itself or its `cirr/` folder, and the split files' paths are
relative to `<annotations>/img_raw/` when that folder exists (CIRR's README), else to the root
(CLIP4Cir's CIRR/{train,dev,test1,cirr/} arrangement).

Protocol (CIRR's validation code, as CLIP4Cir's validate.py implements it): our "train" split is
CIRR's train, "test" is val (option split=val, the default) or test1 (split=test1). The gallery is
every image of the split's image_splits file; labels are image names, so a hit is the target image
itself (target_hard; target_soft is not used); the reference is excluded. Recall@{1, 5, 10, 50}
over the gallery, and Recall_subset@{1, 2, 3} among the query's img_set members without the
reference (Query.subset; study/subset_recall.py). test1's queries keep their pairid
(Query.query_id) for the evaluation server's files (python -m study.evaluate); their target is
set to the reference and their kind to HIDDEN, so every recall on test1 is 0 by construction.
"""
from __future__ import annotations

import dataclasses
import posixpath
from pathlib import Path
from typing import Any

from study.data.checks import SplitParts, assemble, check_options, read_json
from study.data.errors import DatasetError
from study.data.registry import DATASETS, DETECTORS
from study.data.types import Query, RetrievalData, Split

VERSION = "rc2"  # the annotation release the files are named after, and the server files carry
TEST_SPLITS = ("val", "test1")  # option split: which CIRR split is our test split
RECALL_KS = (1, 5, 10, 50)
SUBSET_KS = (1, 2, 3)
KIND = "caption"  # free text, no modification type
HIDDEN = "hidden target"  # test1's kind: the target is not public
IMAGE_FOLDER = "img_raw"  # CIRR's README: the split files' paths are relative to cirr/img_raw/
FIX = ("re-download CIRR's annotations (git clone -b cirr_dataset https://github.com/Cuberick-Orion/CIRR) "
       "and its NLVR2 images")


def annotation_dir(root: Path) -> Path:
    """The folder holding captions/ and image_splits/: the root, or its cirr/ folder."""
    return root / "cirr" if not (root / "captions").is_dir() and (root / "cirr" / "captions").is_dir() else root


def image_prefix(root: Path, annotations: Path) -> str:
    """Where the split files' relative paths start, relative to the root ("" = the root itself)."""
    folder = annotations / IMAGE_FOLDER
    return folder.relative_to(root).as_posix() if folder.is_dir() else ""


def split_file(annotations: Path, split: str) -> Path:
    return annotations / "image_splits" / f"split.{VERSION}.{split}.json"


def caption_file(annotations: Path, split: str) -> Path:
    return annotations / "captions" / f"cap.{VERSION}.{split}.json"


def read_image_split(path: Path, prefix: str) -> dict[str, str]:
    """Image name -> path relative to the root, in the file's order."""
    entries = read_json(path, FIX)
    if not isinstance(entries, dict):
        raise DatasetError(f"{path}: expected a JSON object mapping image names to relative paths "
                           f"(\"dev-0-0-img0\": \"./dev/dev-0-0-img0.png\"), got {type(entries).__name__}; {FIX}")
    paths = {}
    for name, relative in entries.items():
        if not isinstance(relative, str) or not relative:
            raise DatasetError(f"{path}: image {name!r} must map to a relative path (a non-empty string), got {relative!r}")
        clean = posixpath.normpath(relative)
        if clean.startswith(("/", "..")):
            raise DatasetError(f"{path}: image {name!r} has path {relative!r}, outside the dataset folder; "
                               "paths are relative to it, as ./dev/<name>.png")
        paths[name] = posixpath.join(prefix, clean) if prefix else clean
    return paths


def _entry_error(path: Path, i: int, entry: Any, need: str) -> DatasetError:
    pair = f" (pairid {entry['pairid']})" if isinstance(entry, dict) and "pairid" in entry else ""
    return DatasetError(f"{path}: entry {i}{pair} must have {need}; got {str(entry)[:160]}; {FIX}")


def read_captions(path: Path, gallery: dict[str, int], split_path: Path, *, hidden: bool) -> list[Query]:
    """The queries of one captions file; `hidden`: test1, whose entries name no target."""
    entries = read_json(path, FIX)
    if not isinstance(entries, list):
        raise DatasetError(f"{path}: expected a JSON list of query entries (pairid, reference, caption, img_set, "
                           f"target_hard), got {type(entries).__name__}; {FIX}")
    names = ("reference",) if hidden else ("reference", "target_hard")
    queries = []
    for i, entry in enumerate(entries):
        if (not isinstance(entry, dict) or isinstance(entry.get("pairid"), bool) or not isinstance(entry.get("pairid"), int)
                or not isinstance(entry.get("caption"), str) or not all(isinstance(entry.get(n), str) for n in names)):
            raise _entry_error(path, i, entry, "an integer pairid, a caption and image names " + " and ".join(names))
        members = entry.get("img_set", {}).get("members") if isinstance(entry.get("img_set"), dict) else None
        if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
            raise _entry_error(path, i, entry, "img_set.members: a list of image names")
        for name in [*(entry[n] for n in names), *members]:
            if name not in gallery:
                raise DatasetError(f"{path}: entry {i} (pairid {entry['pairid']}) names image {name!r}, which is not in "
                                   f"{split_path}; the two files are of different releases: {FIX}")
        source = gallery[entry["reference"]]
        target = source if hidden else gallery[entry["target_hard"]]
        subset = tuple(dict.fromkeys(gallery[m] for m in members))
        queries.append(Query(source, entry["caption"].strip(), target, HIDDEN if hidden else KIND, None,
                             subset=subset, query_id=str(entry["pairid"])))
    return queries


def _parts(root: Path, annotations: Path, ours: str, theirs: str) -> SplitParts:
    split_path = split_file(annotations, theirs)
    paths = read_image_split(split_path, image_prefix(root, annotations))
    names = list(paths)
    gallery = {name: i for i, name in enumerate(names)}
    queries = read_captions(caption_file(annotations, theirs), gallery, split_path, hidden=theirs == "test1")
    image_paths = list(paths.values())
    return SplitParts(ours, image_paths, names, queries, listed_in=(split_path.relative_to(root).as_posix(),))


def _restore_subsets(parts: SplitParts, split: Split) -> Split:
    """assemble rebuilds the queries it keeps when it drops missing images, without their subset and
    id: give them back, subsets mapped to the kept images (a missing member leaves the subset)."""
    if all(q.query_id is not None for q in split.queries):
        return split  # no image missing anywhere: the queries are ours
    index = {path: i for i, path in enumerate(split.image_paths)}
    paths = parts.image_paths
    kept = [q for q in parts.queries if paths[q.source] in index and paths[q.target] in index]  # assemble's rule, same order
    queries = tuple(
        dataclasses.replace(new, subset=tuple(index[paths[m]] for m in old.subset if paths[m] in index), query_id=old.query_id)
        for old, new in zip(kept, split.queries)
    )
    return dataclasses.replace(split, queries=queries)


@DATASETS.register("cirr")
def load_cirr(root: Path, *, allow_missing_images: bool = False, **options: Any) -> RetrievalData:
    """Read a CIRR layout at `root`: options={"split": "val"} (default) or {"split": "test1"}."""
    test_split = check_options("cirr", {"split": "val", **options}, {"split": TEST_SPLITS})["split"]
    root = Path(root)
    annotations = annotation_dir(root)
    train, test = _parts(root, annotations, "train", "train"), _parts(root, annotations, "test", test_split)
    where = annotations.relative_to(root).as_posix()
    notes = (
        f"test split = CIRR's {test_split}" + (" (targets hidden: every recall is 0; write the evaluation server's files "
                                               "with python -m study.evaluate)" if test_split == "test1" else ""),
        "gallery = the split's image_splits file; hit = the target image itself (target_hard); reference excluded",
        f"Recall_subset@{{{', '.join(map(str, SUBSET_KS))}}}: among the query's img_set members, reference excluded",
        f"annotations in {where}/, images under {image_prefix(root, annotations) or '.'}/",
    )
    data = assemble("cirr", root, train, test, recall_ks=RECALL_KS, notes=notes,
                    allow_missing_images=allow_missing_images, fix=FIX)
    return dataclasses.replace(data, train=_restore_subsets(train, data.train), test=_restore_subsets(test, data.test))


def targets_hidden(split: Split) -> bool:
    """Whether the split's targets are not public (CIRR test1): only predictions can be written."""
    return bool(split.queries) and all(q.kind == HIDDEN for q in split.queries)


@DETECTORS.register("cirr")
def is_cirr(root: Path) -> dict[str, Any] | None:
    root = Path(root)
    return {} if caption_file(annotation_dir(root), "val").is_file() else None
