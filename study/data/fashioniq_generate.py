"""Generator "fashioniq": FashionIQ-like garments with pairs of relative captions, in FashionIQ's layout.

Follows FashionIQ (Wu et al., CVPR 2021) as its files show it (methods.md B.7): three categories
(dress, shirt, toptee), each with an image split per data split and captions that pair a candidate
with a target through two short relative texts ("is blue", "has stripes"). Garments are drawn by
study/data/fashion_render.py (the renderer of generator "fashion"): a dress as its dress, a shirt as
its jacket (an open front: a button placket), a toptee as its top; each with a colour, a pattern and
a length (of the hem for a dress, of the sleeves otherwise).

Images come in product families: VARIANTS garments of one category that share their look (size,
place, background and tone jitter, the pattern's phase) and differ in one or two attributes, as a
product sold in several colours. A query takes two variants of one family that differ in one or two
attributes; its two captions name the changes: one change each, or two wordings of a single change.
So the captions say exactly what differs, the reference says the rest, and a composer can learn it;
variants of other families with the target's attributes are the near-duplicates FashionIQ is known
for (a hit is the target image itself).

Writes FashionIQ's layout (the "fashioniq" loader reads it, one category per option):
    <out>/captions/cap.{dress,shirt,toptee}.{train,val}.json   [{"target": id, "candidate": id, "captions": [c1, c2]}]
    <out>/image_splits/split.{dress,shirt,toptee}.{train,val}.json   [id, ...] in no family order
    <out>/images/<id>.png     64 x 64; ids are 10 characters as FashionIQ's ASINs: B<category><split><number>
FashionIQ's test files (targets not public, read by no loader here) are not written.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from study.data.fashion_render import COLORS, LENGTHS, PATTERNS, render_garment
from study.data.fashioniq import CATEGORIES
from study.data.images import write_png
from study.data.progress import Progress
from study.data.registry import GENERATORS, Generator, check_scale

VERSION = 1
SILHOUETTE = {"dress": "dress", "shirt": "jacket", "toptee": "top"}  # FashionIQ category -> fashion_render's
IMAGES = {"train": 6000, "val": 4000}  # per category at scale 1.0 (FashionIQ: about 11k-19k / 4k-6k, recalled)
QUERIES = {"train": 6000, "val": 2000}  # per category at scale 1.0 (FashionIQ: about 6k / 2k)
MIN_FAMILIES, MIN_QUERIES = 4, 8
VARIANTS = 4  # garments per product family
ATTRIBUTES = ("color", "pattern", "length")

Attrs = tuple[str, str, str]  # (colour, pattern, length)

COLOR_TEXT = ("is {}", "is {} in colour", "has a {} colour")
PATTERN_TEXT = {
    "solid": ("is plain", "has no pattern", "is a solid colour"),
    "striped": ("has stripes", "is striped", "has a striped pattern"),
    "dotted": ("has polka dots", "is dotted", "has a dotted pattern"),
    "checked": ("is checked", "has a checked pattern", "has a grid pattern"),
}
LENGTH_TEXT = {  # the dress's hem, the tops' sleeves
    "dress": {"long": ("is longer", "is a long dress", "reaches the ankles"),
              "short": ("is shorter", "is a short dress", "ends above the knee")},
    "top": {"long": ("has long sleeves", "is long sleeved", "has longer sleeves"),
            "short": ("has short sleeves", "is short sleeved", "has shorter sleeves")},
}
VALUES = (tuple(COLORS), PATTERNS, LENGTHS)


def wordings(category: str, slot: int, value: str) -> tuple[str, ...]:
    """The ways a caption says "the target's attribute `slot` is `value`"."""
    if slot == 0:
        return tuple(t.format(value) for t in COLOR_TEXT)
    if slot == 1:
        return PATTERN_TEXT[value]
    return LENGTH_TEXT["dress" if category == "dress" else "top"][value]


def captions(category: str, candidate: Attrs, target: Attrs, rng: np.random.Generator) -> list[str]:
    """Two relative captions naming what changes from `candidate` to `target` (one or two attributes)."""
    changed = [slot for slot in range(3) if candidate[slot] != target[slot]]
    if len(changed) == 1:
        options = wordings(category, changed[0], target[changed[0]])
        first, second = rng.choice(len(options), size=2, replace=False)
        return [options[int(first)], options[int(second)]]
    texts = [str(rng.choice(wordings(category, slot, target[slot]))) for slot in changed]
    return texts if rng.random() < 0.5 else texts[::-1]


def _changed(attrs: Attrs, slots: list[int], rng: np.random.Generator) -> Attrs:
    new = list(attrs)
    for slot in slots:
        new[slot] = str(rng.choice([v for v in VALUES[slot] if v != attrs[slot]]))
    return (new[0], new[1], new[2])


def family(rng: np.random.Generator) -> list[Attrs]:
    """VARIANTS distinct attribute sets: a base, the base with one change, then bases with one or two."""
    base: Attrs = (str(rng.choice(VALUES[0])), str(rng.choice(VALUES[1])), str(rng.choice(VALUES[2])))
    variants = [base, _changed(base, [int(rng.integers(3))], rng)]
    while len(variants) < VARIANTS:
        slots = rng.choice(3, size=int(rng.integers(1, 3)), replace=False)
        new = _changed(base, [int(s) for s in slots], rng)
        if new not in variants:
            variants.append(new)
    return variants


def close_pairs(variants: list[Attrs]) -> list[tuple[int, int]]:
    """Ordered pairs of variants that differ in one or two attributes (never empty: 0 and 1 do)."""
    return [(a, b) for a in range(len(variants)) for b in range(len(variants))
            if 1 <= sum(x != y for x, y in zip(variants[a], variants[b])) <= 2]


def generate_fashioniq(out: Path, *, seed: int, scale: float) -> None:
    """Write a FashionIQ-like dataset into `out` (created if missing), deterministic in (seed, scale)."""
    check_scale(scale, "generator fashioniq")
    out = Path(out)
    for folder in ("captions", "image_splits", "images"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    families = {s: max(MIN_FAMILIES, round(n * scale / VARIANTS)) for s, n in IMAGES.items()}
    progress = Progress("fashioniq: rendered images", len(CATEGORIES) * VARIANTS * sum(families.values()))
    for c, category in enumerate(CATEGORIES):
        for s, split in enumerate(("train", "val")):
            rng = np.random.default_rng([seed, 2, c, s])
            groups = [family(rng) for _ in range(families[split])]
            ids = [[f"B{c}{s}{f * VARIANTS + v:07d}" for v in range(VARIANTS)] for f in range(len(groups))]
            for f, variants in enumerate(groups):
                for v, (color, pattern, length) in enumerate(variants):
                    # one stream per family, restarted for each variant: every variant draws the same jitter
                    look = np.random.default_rng([seed, 3, c, s, f])
                    pixels, _ = render_garment(SILHOUETTE[category], color, pattern, length, look)
                    write_png(out / "images" / f"{ids[f][v]}.png", pixels)
                    progress.step()
            entries = []
            for _ in range(max(MIN_QUERIES, round(QUERIES[split] * scale))):
                f = int(rng.integers(len(groups)))
                pairs = close_pairs(groups[f])
                a, b = pairs[int(rng.integers(len(pairs)))]
                entries.append({"target": ids[f][b], "candidate": ids[f][a],
                                "captions": captions(category, groups[f][a], groups[f][b], rng)})
            gallery = [i for row in ids for i in row]
            gallery = [gallery[int(i)] for i in rng.permutation(len(gallery))]
            name = f"{category}.{split}"  # FashionIQ's split names: val is our test split
            (out / "captions" / f"cap.{name}.json").write_text(json.dumps(entries, indent=1) + "\n")
            (out / "image_splits" / f"split.{name}.json").write_text(json.dumps(gallery, indent=1) + "\n")


@GENERATORS.register("fashioniq")
def fashioniq_generator() -> Generator:
    return Generator(name="fashioniq", version=VERSION, loader="fashioniq", generate=generate_fashioniq)
