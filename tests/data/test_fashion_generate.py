"""Generator "fashion": Fashion200k's layout, product captions, one-word queries, and the
"fashion200k" loader reading exactly what it wrote."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from data_layout_writers import FASHION_SCALE

from study.data import open_dataset, open_image_map
from study.data.dataset_cache import DATASETS_SUBDIR
from study.data.fashion import all_captions
from study.data.fashion200k import ATTRIBUTE_WORDS, load_fashion200k, parents
from study.data.fashion_render import CATEGORIES, COLORS, LENGTHS, PATTERNS, render_garment

ATTRIBUTES = ("color", "pattern", "length", "category")  # the caption's word order


def read_label_files(root: Path, split: str) -> list[tuple[str, str]]:
    rows = []
    for category in sorted(CATEGORIES):
        for line in (root / "labels" / f"{category}_{split}_detect_all.txt").read_text().splitlines():
            path, score, caption = line.split("\t")
            assert 0.5 <= float(score) <= 1.0 and path.startswith(f"women/{category}/{caption.replace(' ', '_')}/")
            assert path.endswith("/0.jpeg") and (root / path).is_file()
            rows.append((path, caption))
    return rows


def test_captions_use_the_attribute_vocabularies() -> None:
    captions = all_captions()
    assert len(captions) == len(set(captions)) == len(COLORS) * len(PATTERNS) * len(LENGTHS) * len(CATEGORIES)
    for caption in captions:
        for word, attribute in zip(caption, ATTRIBUTES):
            assert word in ATTRIBUTE_WORDS[attribute]
    assert ("red", "striped", "long", "dress") in captions


def test_loader_reads_what_the_generator_wrote(fashion_root: Path) -> None:
    data = load_fashion200k(fashion_root)
    for split in (data.train, data.test):
        rows = read_label_files(fashion_root, split.name)
        assert list(zip(split.image_paths, split.labels)) == rows
        assert len(set(split.labels)) == len(all_captions())  # every caption in both splits
    assert len(data.train.image_paths) == 2 * len(all_captions()) and len(data.test.image_paths) == len(all_captions())
    regions = json.loads((fashion_root / "regions.json").read_text())
    for split in (data.train, data.test):
        for q in split.queries:
            source, target = split.labels[q.source].split(), split.labels[q.target].split()
            changed = [i for i in range(4) if source[i] != target[i]]
            assert len(changed) == 1  # captions share a parent: one word removed
            assert set(parents(" ".join(source))) & set(parents(" ".join(target)))
            assert q.text == f"replace {source[changed[0]]} with {target[changed[0]]}"
            assert q.kind == ATTRIBUTES[changed[0]]
            box = regions[split.image_paths[q.source]]["length" if q.kind == "length" else "garment"]
            assert q.region == tuple(box)
    # test queries: one per test image, in test_queries.txt order
    lines = (fashion_root / "test_queries.txt").read_text().splitlines()
    assert [f"{data.test.image_paths[q.source]} {data.test.image_paths[q.target]}" for q in data.test.queries] == lines
    assert sorted(q.source for q in data.test.queries) == list(range(len(data.test.image_paths)))
    assert {q.kind for q in data.test.queries} == set(ATTRIBUTES)


def test_jpeg_keeps_the_rendered_colours(fashion_root: Path) -> None:
    split = load_fashion200k(fashion_root).test
    images = open_image_map(split)[:].permute(0, 2, 3, 1).numpy().astype(int)  # (N, 64, 64, 3)
    captions = all_captions()
    for c in range(0, len(captions), 37):
        color, pattern, length, category = captions[c]
        # the generator's stream for test image k=0 of caption c (split index 1)
        pixels, boxes = render_garment(category, color, pattern, length, np.random.default_rng([0, 5, 1, c, 0]))
        index = split.labels.index(" ".join(captions[c]))
        assert np.abs(images[index] - pixels.astype(int)).mean() < 3.0
        top, left, bottom, right = (round(v * 64) for v in boxes["garment"])
        assert 0 <= top < bottom <= 64 and 0 <= left < right <= 64
        if pattern == "solid":
            garment = images[index][top:bottom, left:right].reshape(-1, 3)
            nominal = np.asarray(COLORS[color])
            assert (np.abs(garment - nominal).max(axis=1) < 20).mean() > 0.3  # the garment's colour survives


def test_cached_through_prepare_generated_and_deterministic(fashion_root: Path, tmp_path: Path) -> None:
    data = open_dataset("fashion", scale=FASHION_SCALE, seed=0, cache_dir=tmp_path)
    assert data.name == "fashion" and data.recall_ks == (1, 10, 50)
    (cached,) = [p for p in tmp_path.iterdir() if p.is_dir() and p.name != DATASETS_SUBDIR]  # beside: opened datasets
    assert cached.name == "fashion-v1-seed0-scale0.01"
    for rel in ("test_queries.txt", "labels/dress_train_detect_all.txt", "regions.json", data.test.image_paths[5]):
        assert (cached / rel).read_bytes() == (fashion_root / rel).read_bytes()
    assert data.manifest == load_fashion200k(fashion_root).manifest


def test_describe_and_cli_options(fashion_root: Path, tmp_path: Path) -> None:
    import io

    from study.data.__main__ import main
    from study.data.describe import describe

    out = io.StringIO()
    describe(fashion_root, tmp_path / "grid.png", out=out)
    text = out.getvalue()
    assert "layout fashion200k" in text and "images: 960 listed, 0 missing" in text and (tmp_path / "grid.png").is_file()
    assert main(["describe", str(fashion_root), "--grid", str(tmp_path / "g.png"), "--option", "category"]) == 2
