"""Generator "fashion": Fashion200k-like garment images with product captions.

Follows Fashion200k (Han et al., ICCV 2017) as TIRG (Vo et al., CVPR 2019, arXiv 1812.07119)
uses it (methods.md A.10, B.7): every image carries a product caption "<colour> <pattern>
<length> <category>" ("red striped long dress"); two captions that differ in one word share a
parent, which makes a query "replace red with blue"; a hit is an image with the target caption.
Garments are fashion_render.CATEGORIES in COLORS x PATTERNS x LENGTHS, so every caption has
siblings in each attribute. Both splits hold every caption (Fashion200k splits images, not
captions); each test image is the source of one test query that changes one attribute, drawn
uniformly, to another value, with a random test image of that caption as target.

Writes Fashion200k's layout plus a sidecar that the "fashion200k" loader reads when present:
    <out>/labels/<category>_{train,test}_detect_all.txt   image path \\t detection score \\t caption
    <out>/women/<category>/<caption_with_underscores>/<id>/0.jpeg   64 x 64, JPEG quality 95, 4:4:4
    <out>/test_queries.txt                                "source_path target_path" per line
    <out>/regions.json      {path: {"garment": box, "length": box}}, boxes [top, left, bottom, right]
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
from PIL import Image

from study.data.fashion200k import LABEL_SUFFIX, LABELS_DIR, REGIONS_FILE, TEST_QUERIES_FILE
from study.data.fashion_render import CATEGORIES, COLORS, LENGTHS, PATTERNS, render_garment
from study.data.progress import Progress
from study.data.registry import GENERATORS, Generator, check_scale

VERSION = 1
IMAGES_PER_CAPTION = {"train": 24, "test": 6}  # at scale 1.0: 320 captions -> 7,680 + 1,920 images
MIN_IMAGES_PER_CAPTION = {"train": 2, "test": 1}  # train: a caption always has a second image
JPEG_QUALITY = 95  # with 4:4:4 chroma, colours stay within a few levels of the rendered ones
FIRST_PRODUCT_ID = 10_000_000  # Fashion200k's product ids are 8-digit numbers

Caption = tuple[str, str, str, str]  # (colour, pattern, length, category): the caption's word order


def all_captions() -> list[Caption]:
    return [(c, p, n, g) for g in CATEGORIES for c in COLORS for p in PATTERNS for n in LENGTHS]


def caption_text(caption: Caption) -> str:
    return " ".join(caption)


def image_path(caption: Caption, product_id: int) -> str:
    return f"women/{caption[3]}/{caption_text(caption).replace(' ', '_')}/{product_id}/0.jpeg"


def write_jpeg(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels, mode="RGB").save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0)


def _test_queries(images: dict[Caption, list[str]], seed: int) -> list[tuple[str, str]]:
    """One (source, target) per test image: change one attribute to another value."""
    rng = np.random.default_rng([seed, 6])
    values = (tuple(COLORS), PATTERNS, LENGTHS, CATEGORIES)
    pairs = []
    for caption, paths in images.items():
        for source in paths:
            slot = int(rng.integers(4))
            choices = [v for v in values[slot] if v != caption[slot]]
            target_caption = list(caption)
            target_caption[slot] = choices[int(rng.integers(len(choices)))]
            targets = images[tuple(target_caption)]  # type: ignore[index]
            pairs.append((source, targets[int(rng.integers(len(targets)))]))
    return pairs


def generate_fashion(out: Path, *, seed: int, scale: float) -> None:
    """Write a Fashion200k-like dataset into `out` (created if missing), deterministic in (seed, scale)."""
    check_scale(scale, "generator fashion")
    out = Path(out)
    (out / LABELS_DIR).mkdir(parents=True, exist_ok=True)
    captions = all_captions()
    per_caption = {s: max(MIN_IMAGES_PER_CAPTION[s], round(n * scale)) for s, n in IMAGES_PER_CAPTION.items()}
    progress = Progress("fashion: rendered images", len(captions) * sum(per_caption.values()))
    product_ids = itertools.count(FIRST_PRODUCT_ID)
    regions: dict[str, dict[str, list[float]]] = {}
    test_images: dict[Caption, list[str]] = {}
    for s, split in enumerate(("train", "test")):
        lines: dict[str, list[str]] = {category: [] for category in CATEGORIES}
        score_rng = np.random.default_rng([seed, 4, s])
        for c, caption in enumerate(captions):
            for k in range(per_caption[split]):
                # one stream per image: an image does not depend on how many came before it
                rng = np.random.default_rng([seed, 5, s, c, k])
                color, pattern, length, category = caption
                pixels, boxes = render_garment(category, color, pattern, length, rng)
                rel = image_path(caption, next(product_ids))
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                write_jpeg(out / rel, pixels)
                regions[rel] = {name: [round(v, 6) for v in box] for name, box in boxes.items()}
                lines[category].append(f"{rel}\t{score_rng.uniform(0.5, 1.0):.4f}\t{caption_text(caption)}\n")
                if split == "test":
                    test_images.setdefault(caption, []).append(rel)
                progress.step()
        for category, rows in lines.items():
            (out / LABELS_DIR / f"{category}_{split}{LABEL_SUFFIX}").write_text("".join(rows))
    (out / TEST_QUERIES_FILE).write_text("".join(f"{a} {b}\n" for a, b in _test_queries(test_images, seed)))
    (out / REGIONS_FILE).write_text(json.dumps(regions, sort_keys=True, indent=0) + "\n")


@GENERATORS.register("fashion")
def fashion_generator() -> Generator:
    return Generator(name="fashion", version=VERSION, loader="fashion200k", generate=generate_fashion)
