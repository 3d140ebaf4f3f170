"""Generator "states": MIT-States-like images of shape classes in visual states.

Follows MIT-States (Isola, Lim and Adelson, "Discovering States and Transformations in Image
Collections", CVPR 2015) as TIRG (Vo et al., CVPR 2019, arXiv 1812.07119) uses it: one object per
image, labelled "adj noun"; the query text is the target adjective alone; test nouns are disjoint
from training nouns. Nouns are states_shapes.NOUNS (TEST_NOUNS held out), adjectives
states_render.ADJECTIVES; each noun takes ADJECTIVES_PER_NOUN of them, drawn from the seed. The
loader's option `split: compositions` reads the same folder as Misra et al.'s composition split
instead (held-out adjective-noun pairs, not nouns; study/data/mitstates.py).

Writes MIT-States' layout plus two sidecar files that the "mitstates" loader reads when present:
    <out>/images/<adj noun>/<id>.png   64 x 64 renders
    <out>/test_nouns.txt               one noun per line; replaces MIT-States' 49 test nouns
    <out>/regions.json                 {"images/<adj noun>/<id>.png": [top, left, bottom, right]}
                                       the object's bounding box as image fractions
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from study.data.images import write_png
from study.data.mitstates import REGIONS_FILE, TEST_NOUNS_FILE
from study.data.progress import Progress
from study.data.registry import GENERATORS, Generator, check_scale
from study.data.states_render import ADJECTIVES, render_object
from study.data.states_shapes import NOUNS, TEST_NOUNS

VERSION = 1
IMAGES_PER_LABEL = 80  # at scale 1.0: 20 nouns x 6 adjectives x 80 = 9,600 images
ADJECTIVES_PER_NOUN = 6
MIN_IMAGES_PER_LABEL = 2  # so a label always has another image than the one queried


def noun_adjectives(seed: int) -> dict[str, tuple[str, ...]]:
    """Which adjectives each noun comes in (MIT-States nouns take a subset of the states)."""
    rng = np.random.default_rng([seed, 2])
    picks = {}
    for noun in NOUNS:
        chosen = rng.choice(len(ADJECTIVES), size=ADJECTIVES_PER_NOUN, replace=False)
        picks[noun] = tuple(ADJECTIVES[i] for i in sorted(chosen))
    return picks


def generate_states(out: Path, *, seed: int, scale: float) -> None:
    """Write a MIT-States-like dataset into `out` (created if missing), deterministic in (seed, scale)."""
    check_scale(scale, "generator states")
    out = Path(out)
    per_label = max(MIN_IMAGES_PER_LABEL, round(IMAGES_PER_LABEL * scale))
    picks = noun_adjectives(seed)
    progress = Progress("states: rendered images", per_label * sum(len(a) for a in picks.values()))
    regions: dict[str, list[float]] = {}
    for n, (noun, adjectives) in enumerate(picks.items()):
        for adjective in adjectives:
            folder = out / "images" / f"{adjective} {noun}"
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_label):
                # one stream per image: an image does not depend on how many came before it
                rng = np.random.default_rng([seed, 3, n, ADJECTIVES.index(adjective), k])
                pixels, box = render_object(noun, adjective, rng)
                write_png(folder / f"{k:05d}.png", pixels)
                regions[f"images/{adjective} {noun}/{k:05d}.png"] = [round(v, 6) for v in box]
                progress.step()
    (out / TEST_NOUNS_FILE).write_text("".join(f"{noun}\n" for noun in TEST_NOUNS))
    (out / REGIONS_FILE).write_text(json.dumps(regions, sort_keys=True, indent=0) + "\n")


@GENERATORS.register("states")
def states_generator() -> Generator:
    return Generator(name="states", version=VERSION, loader="mitstates", generate=generate_states)
