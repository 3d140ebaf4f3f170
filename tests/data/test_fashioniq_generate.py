"""Generator "fashioniq": FashionIQ's layout read back by the real "fashioniq" loader for each of
its three categories, captions whose every phrase is true of the target (checked on the pixels),
families that share their look, determinism in (seed, scale), the cache, and `describe`."""
from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from study.data import open_dataset
from study.data.cache import generate_into
from study.data.fashion_render import COLORS
from study.data.fashioniq import CATEGORIES, JOIN, load_fashioniq
from study.data.fashioniq_generate import (
    IMAGES, MIN_FAMILIES, MIN_QUERIES, QUERIES, VALUES, VARIANTS, captions, close_pairs, family, generate_fashioniq,
    wordings,
)

SCALE = 0.002  # 3 families (12 images) per category and split would round down: the floors apply


@pytest.fixture(scope="module")
def fiq_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fashioniq")
    generate_into("fashioniq", root, seed=0, scale=SCALE)
    return root


def expected_counts(split: str) -> tuple[int, int]:
    families = max(MIN_FAMILIES, round(IMAGES[split] * SCALE / VARIANTS))
    return families * VARIANTS, max(MIN_QUERIES, round(QUERIES[split] * SCALE))


@pytest.mark.parametrize("category", CATEGORIES)
def test_each_category_loads_with_the_real_loader(fiq_root: Path, category: str) -> None:
    data = load_fashioniq(fiq_root, category=category)
    for split, theirs in ((data.train, "train"), (data.test, "val")):
        ids = json.loads((fiq_root / "image_splits" / f"split.{category}.{theirs}.json").read_text())
        entries = json.loads((fiq_root / "captions" / f"cap.{category}.{theirs}.json").read_text())
        assert list(split.labels) == ids and (len(ids), len(entries)) == expected_counts(theirs)
        assert all(len(i) == 10 and i.startswith(f"B{CATEGORIES.index(category)}") for i in ids)  # ASIN-like, per category
        for q, entry in zip(split.queries, entries):
            assert (split.labels[q.source], split.labels[q.target]) == (entry["candidate"], entry["target"])
            assert q.text == JOIN.join(entry["captions"]) and len(entry["captions"]) == 2
            # a query pairs two variants of one product family (ids number families by VARIANTS)
            assert int(entry["candidate"][3:]) // VARIANTS == int(entry["target"][3:]) // VARIANTS
            assert entry["candidate"] != entry["target"]


def garment(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The garment's mask (pixels unlike the background in the corner) and its main tone."""
    mask = (image != image[0, 0]).any(axis=-1)
    colours, counts = np.unique(image[mask], axis=0, return_counts=True)
    return mask, tuple(int(c) for c in colours[counts.argmax()])


def test_every_caption_phrase_is_true_of_the_target(fiq_root: Path) -> None:
    phrase = {text: (slot, value) for category in CATEGORIES for slot in range(3) for value in VALUES[slot]
              for text in wordings(category, slot, value)}
    checked = 0
    for category in CATEGORIES:
        for theirs in ("train", "val"):
            for entry in json.loads((fiq_root / "captions" / f"cap.{category}.{theirs}.json").read_text()):
                candidate, target = (np.asarray(Image.open(fiq_root / "images" / f"{entry[k]}.png")).astype(int)
                                     for k in ("candidate", "target"))
                assert (candidate[0, 0] == target[0, 0]).all()  # one family, one look: the same background
                (mask_c, tone_c), (mask_t, tone_t) = garment(candidate), garment(target)
                for text in entry["captions"]:
                    slot, value = phrase[text]  # every phrase is one of the vocabularies
                    if slot == 0:  # colour: the target's main tone is the named colour (+- the render's jitter)
                        assert np.abs(np.subtract(tone_t, COLORS[value])).max() <= 6
                        assert np.abs(np.subtract(tone_c, COLORS[value])).max() > 6
                    elif slot == 2:  # length changes the silhouette only: longer = more garment, same look
                        assert (mask_t.sum() > mask_c.sum()) == (value == "long")
                    elif category != "shirt":  # pattern: plain = one tone (a shirt's placket is a second one)
                        share = (target[mask_t] == tone_t).all(axis=-1).mean()
                        assert (share > 0.97) == (value == "solid")
                    checked += 1
    assert checked > 100


def test_captions_name_each_change_once_or_one_change_twice() -> None:
    rng = np.random.default_rng(0)
    one = captions("dress", ("red", "solid", "long"), ("blue", "solid", "long"), rng)
    assert len(set(one)) == 2 and set(one) <= set(wordings("dress", 0, "blue"))
    for _ in range(10):  # two changes: one caption each, in either order
        two = captions("toptee", ("red", "solid", "long"), ("red", "striped", "short"), rng)
        striped = [t in wordings("toptee", 1, "striped") for t in two]
        assert len(two) == 2 and sorted(striped) == [False, True]
        assert any(t in wordings("toptee", 2, "short") for t in two)
    for seed in range(20):  # a family always offers a pair one or two attributes apart
        variants = family(np.random.default_rng(seed))
        assert len(set(variants)) == VARIANTS and (0, 1) in close_pairs(variants)
        assert all(1 <= sum(x != y for x, y in zip(variants[a], variants[b])) <= 2 for a, b in close_pairs(variants))


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_in_seed_and_scale(fiq_root: Path, tmp_path: Path) -> None:
    generate_fashioniq(tmp_path / "again", seed=0, scale=SCALE)
    generate_fashioniq(tmp_path / "other", seed=1, scale=SCALE)
    written = {k: v for k, v in files(fiq_root).items() if k != "generated.json"}
    assert files(tmp_path / "again") == written
    other = files(tmp_path / "other")
    assert other.keys() == written.keys() and other != written


def test_opened_by_name_through_the_cache_and_described(fiq_root: Path, tmp_path: Path) -> None:
    for category in CATEGORIES:  # one generated folder serves the three categories
        data = open_dataset("fashioniq", scale=SCALE, cache_dir=tmp_path, options={"category": category})
        assert data.name == "fashioniq" and data.test.image_size == 64 and data.recall_ks == (10, 50)
    assert len([p for p in tmp_path.glob("fashioniq-v1-*") if p.is_dir()]) == 1
    from study.data.__main__ import main

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["describe", str(fiq_root), "--option", "category=toptee", "--grid", str(tmp_path / "grid.png")]) == 0
    assert f"{fiq_root}: layout fashioniq (category=toptee)" in out.getvalue()
    assert "categories in this folder: dress, shirt, toptee" in out.getvalue()
    assert (tmp_path / "grid.png").stat().st_size > 10_000
