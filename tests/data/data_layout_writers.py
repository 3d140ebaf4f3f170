"""Writers of tiny, seeded fixtures in the real file layouts of Fashion200k, FashionIQ and Shoes,
and the scales of the generated fixtures in conftest.py (imported by the data tests; not a test
module: tests import from here, never from `conftest`, whose name tests/models shares)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CSS_SCALE = 0.03  # 30 base scenes and ~540 pairs per split: seconds, yet every mod kind many times
STATES_SCALE = 0.03  # 2 images per label
FASHION_SCALE = 0.01  # 2 train + 1 test image per caption: 960 images, a few seconds


def write_image(path: Path, seed: int, size: int | tuple[int, int] = 16) -> None:
    """Random RGB pixels, `size` = side or (width, height), as PNG or JPEG by the suffix."""
    width, height = (size, size) if isinstance(size, int) else size
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}[path.suffix]
    Image.fromarray(pixels, mode="RGB").save(path, format=fmt)


# (split, category, caption) of every Fashion200k fixture image, in label-file order
FASHION200K_IMAGES = [
    ("train", "dress", "red striped long dress"),
    ("train", "dress", "red striped long dress"),
    ("train", "dress", "blue striped long dress"),
    ("train", "dress", "red dotted long dress"),
    ("train", "dress", "black lace gown"),  # no caption shares a parent: no training query
    ("train", "top", "green silk top"),
    ("train", "top", "green velvet top"),  # replace silk with velvet: kind "word"
    ("test", "dress", "red striped long dress"),
    ("test", "dress", "blue striped long dress"),
    ("test", "dress", "red striped short dress"),
    ("test", "top", "sale! top & tee."),  # TIRG's clean-up: & and . become words
]
FASHION200K_TEST_QUERIES = [(7, 8), (7, 9), (9, 7)]  # indices into FASHION200K_IMAGES


def fashion200k_path(i: int) -> str:
    split, category, caption = FASHION200K_IMAGES[i]
    return f"women/{category}/{caption.replace(' ', '_').replace('!', '')}/{100 + i}/{i}.jpeg"


def write_fashion200k(root: Path) -> Path:
    (root / "labels").mkdir(parents=True)
    files: dict[str, list[str]] = {}
    for i, (split, category, caption) in enumerate(FASHION200K_IMAGES):
        write_image(root / fashion200k_path(i), i)
        files.setdefault(f"{category}_{split}_detect_all.txt", []).append(f"{fashion200k_path(i)}\t0.{i + 10}\t{caption}\n")
    for name, lines in files.items():
        (root / "labels" / name).write_text("".join(lines))
    (root / "test_queries.txt").write_text("".join(f"{fashion200k_path(a)} {fashion200k_path(b)}\n" for a, b in FASHION200K_TEST_QUERIES))
    return root


FASHIONIQ_SPLITS = {  # category -> FashionIQ split -> image ids
    "dress": {"train": ["d0", "d1", "d2", "d3"], "val": ["d4", "d5", "d6"]},
    "shirt": {"train": ["s0", "s1"], "val": ["s2", "s3", "s4"]},
}
FASHIONIQ_CAPTIONS = {
    "dress": {
        "train": [("d0", "d1", ["is red", "has sleeves"]), ("d2", "d3", ["is longer", "is blue"])],
        "val": [("d4", "d5", ["is shorter", "has a belt"]), ("d6", "d4", ["is green", "is plain"])],
    },
    "shirt": {"train": [("s0", "s1", ["has a collar", "is white"])], "val": [("s2", "s4", ["has buttons", "is darker"])]},
}


def write_fashioniq(root: Path) -> Path:
    for folder in ("captions", "image_splits", "images"):
        (root / folder).mkdir(parents=True)
    seed = 0
    for category, splits in FASHIONIQ_SPLITS.items():
        for split, ids in splits.items():
            (root / "image_splits" / f"split.{category}.{split}.json").write_text(json.dumps(ids))
            for image_id in ids:
                seed += 1  # FashionIQ ships both .png and .jpg releases
                write_image(root / "images" / f"{image_id}{'.png' if seed % 2 else '.jpg'}", seed)
            entries = [{"candidate": c, "target": t, "captions": caps} for c, t, caps in FASHIONIQ_CAPTIONS[category][split]]
            (root / "captions" / f"cap.{category}.{split}.json").write_text(json.dumps(entries, indent=1))
    return root


SHOES_SPLITS = {
    "train": ["img_womens_boots_1.jpg", "img_womens_boots_2.jpg", "img_womens_pumps_3.jpg"],
    "test": ["img_womens_boots_4.jpg", "img_womens_pumps_5.jpg", "img_womens_pumps_6.jpg", "img_womens_flats_7.jpg"],
}
SHOES_TRIPLETS = {
    "train": [("img_womens_boots_1.jpg", "img_womens_boots_2.jpg", "has a higher heel"),
              ("img_womens_pumps_3.jpg", "img_womens_boots_1.jpg", "is a boot")],
    "test": [("img_womens_boots_4.jpg", "img_womens_pumps_5.jpg", "is a pump "),
             ("img_womens_pumps_6.jpg", "img_womens_flats_7.jpg", "is flat")],
}


def shoes_path(name: str, folder: str = "images") -> str:
    """Where a Shoes image lives: the download unpacks to attributedata/womens_<kind>/<n>/<name>;
    `folder` "images" is the same tree moved under images/."""
    kind = name.split("_")[2]
    return f"{folder}/womens_{kind}/0/{name}"


def write_shoes(root: Path, folder: str = "images") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, names in SHOES_SPLITS.items():
        (root / f"split.{split}.json").write_text(json.dumps(names))
        triplets = [{"ReferenceImageName": a, "ImageName": b, "RelativeCaption": c} for a, b, c in SHOES_TRIPLETS[split]]
        (root / f"triplet.{split}.json").write_text(json.dumps(triplets, indent=1))
        for k, name in enumerate(names):
            write_image(root / shoes_path(name, folder), 100 + k)
    return root
