"""Loader "css": reads CSS's released layout (and what generator "css" writes).

CSS (Vo et al., CVPR 2019, arXiv 1812.07119), methods.md B.7:
    <root>/css_toy_dataset_novel2_small.dup.npy    pickled {'train'|'test': {'objects_img', 'mods', 'labels'}}
    <root>/images/css_{train,test}_{idx:06d}.png
Queries are every (from, to) pair of every mod group (TIRG's test protocol); a hit is an image
whose str(label) equals the target's, so duplicate renderings of a scene count. A query's region is
the grid cell named by the group's `target_pos`, else the one cell where source and target
scenes differ, else None. Options: none. Images listed but absent: see study/data/checks.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from study.data.checks import SplitParts, assemble, check_options
from study.data.css_scene import POSITIONS, cell_of, cell_region
from study.data.errors import DatasetError
from study.data.registry import DATASETS, DETECTORS
from study.data.safe_npy import read_pickled_npy
from study.data.types import Query, RetrievalData

SCENE_FILE = "css_toy_dataset_novel2_small.dup.npy"
RECALL_KS = (1, 5, 10, 50)


def _cells(objects: Sequence[Mapping[str, Any]]) -> dict[int, tuple[Any, ...]]:
    return {cell_of(o): (o.get("shape"), o.get("color"), o.get("size")) for o in objects}


def _region(mod: Mapping[str, Any], source: Sequence[Any], target: Sequence[Any]) -> tuple[float, float, float, float] | None:
    if mod.get("target_pos") in POSITIONS:
        return cell_region(POSITIONS.index(mod["target_pos"]))
    try:
        before, after = _cells(source), _cells(target)
    except (KeyError, TypeError, ValueError, IndexError):  # objects without a usable `pos`
        return None
    changed = [c for c in set(before) | set(after) if before.get(c) != after.get(c)]
    return cell_region(changed[0]) if len(changed) == 1 else None


def _split(path: Path, name: str, part: Any) -> SplitParts:
    if not isinstance(part, Mapping) or "objects_img" not in part or "mods" not in part:
        raise DatasetError(f"{path}: data[{name!r}] must be a dict with 'objects_img' and 'mods'; the file is not a CSS scene file")
    objects_img = list(part["objects_img"])
    n = len(objects_img)
    labels = list(part["labels"]) if "labels" in part else list(range(n))
    if len(labels) != n:
        raise DatasetError(f"{path}: data[{name!r}] has {n} images but {len(labels)} labels; the file is corrupt")
    queries = []
    for m, mod in enumerate(part["mods"]):
        sources, targets = list(mod["from"]), list(mod["to"])
        if len(sources) != len(targets):
            raise DatasetError(f"{path}: data[{name!r}]['mods'][{m}] has {len(sources)} 'from' but {len(targets)} 'to' ids")
        for f, t in zip(sources, targets):
            if not (0 <= int(f) < n and 0 <= int(t) < n):
                raise DatasetError(f"{path}: data[{name!r}]['mods'][{m}] refers to image {f} -> {t}, but the split has {n} images")
            region = _region(mod, objects_img[int(f)], objects_img[int(t)])
            queries.append(Query(int(f), str(mod["to_str"]), int(t), str(mod["type"]), region))
    image_paths = [f"images/css_{name}_{i:06d}.png" for i in range(n)]
    return SplitParts(name, image_paths, [str(label) for label in labels], queries, listed_in=(path.name,))


def _held_out_note(data: Mapping[str, Any]) -> tuple[str, ...]:
    def pairs(name: str) -> set[tuple[str, str]]:
        return {(o["shape"], o["color"]) for objects in data[name]["objects_img"] for o in objects if "shape" in o and "color" in o}

    novel = sorted(pairs("test") - pairs("train"))
    if not novel:
        return ()
    return ("shape-colour pairs in test images but in no training image: " + ", ".join(f"{c} {s}" for s, c in novel),)


@DATASETS.register("css")
def load_css(root: Path, *, allow_missing_images: bool = False, **options: Any) -> RetrievalData:
    """Read a CSS layout at `root` (released or generated); takes no options."""
    check_options("css", options, {})
    root = Path(root)
    path = root / SCENE_FILE
    data = read_pickled_npy(path)
    if not isinstance(data, Mapping) or not {"train", "test"} <= set(data):
        raise DatasetError(
            f"{path}: expected a dict with keys 'train' and 'test', got {type(data).__name__}; "
            f"the file is not a CSS scene file"
        )
    try:
        train, test = _split(path, "train", data["train"]), _split(path, "test", data["test"])
        notes = _held_out_note(data)
    except (KeyError, TypeError, ValueError) as err:
        raise DatasetError(f"{path}: a mod group or object lacks a field or has a bad value ({err!r}); the file is not a CSS scene file") from None
    return assemble(
        "css", root, train, test, recall_ks=RECALL_KS, notes=notes, allow_missing_images=allow_missing_images,
        fix=f"unpack CSS's images/ folder into {root} or regenerate with `python -m study.data generate css --out {root}`",
    )


@DETECTORS.register("css")
def is_css(root: Path) -> dict[str, Any] | None:
    return {} if (Path(root) / SCENE_FILE).is_file() else None
