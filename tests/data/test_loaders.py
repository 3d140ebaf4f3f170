"""The "css" and "mitstates" loaders read exactly what the generators wrote; broken inputs fail
with a DatasetError naming the file."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from study.data import DatasetError, known_datasets, open_dataset
from study.data.css import SCENE_FILE, load_css
from study.data.css_render import render_scene
from study.data.image_cache import open_image_map
from study.data.mitstates import MIT_STATES_TEST_NOUNS, load_mitstates


def test_css_loader_matches_the_scene_file(css_root: Path, css_raw: dict[str, Any]) -> None:
    data = load_css(css_root)
    assert data.recall_ks == (1, 5, 10, 50)
    for split in (data.train, data.test):
        raw = css_raw[split.name]
        assert len(split.image_paths) == len(raw["objects_img"]) and split.image_size == 64
        assert split.labels == tuple(str(label) for label in raw["labels"])
        pairs = [(f, t, m["to_str"], m["type"]) for m in raw["mods"] for f, t in zip(m["from"], m["to"])]
        assert [(q.source, q.target, q.text, q.kind) for q in split.queries] == pairs
    assert any("red rectangle" in note for note in data.notes)


def test_css_query_images_and_regions(css_root: Path, css_raw: dict[str, Any]) -> None:
    split = load_css(css_root).test
    images = open_image_map(split)[:]
    assert images.shape == (len(split.image_paths), 3, 64, 64) and str(images.dtype) == "torch.uint8"
    objects = css_raw["test"]["objects_img"]
    for q in split.queries[:50]:
        for index in (q.source, q.target):
            assert np.array_equal(images[index].permute(1, 2, 0).numpy(), render_scene(objects[index]))
        # the region is the one cell whose content differs between source and target
        assert q.region is not None
        top, left, bottom, right = q.region
        assert bottom - top == pytest.approx(1 / 3) and right - left == pytest.approx(1 / 3)
        diff = (images[q.source] != images[q.target]).any(dim=0).nonzero()
        rows, cols = diff[:, 0].float() / 64, diff[:, 1].float() / 64
        assert rows.min() >= top and rows.max() < bottom and cols.min() >= left and cols.max() < right


def test_states_loader_matches_the_folders(states_root: Path) -> None:
    data = load_mitstates(states_root)
    assert data.recall_ks == (1, 5, 10)
    folders = [p for p in (states_root / "images").iterdir()]
    assert len(data.train.image_paths) + len(data.test.image_paths) == sum(len(list(f.iterdir())) for f in folders)
    for split in (data.train, data.test):
        for path, label in zip(split.image_paths, split.labels):
            assert path.split("/")[1] == label
        adjs: dict[str, set[str]] = {}
        for label in split.labels:
            adj, noun = label.split()
            adjs.setdefault(noun, set()).add(adj)
        assert len(split.queries) == sum(len(adjs[label.split()[1]]) - 1 for label in split.labels)
        img = split.load_image(split.queries[0].target)
        raw = np.asarray(Image.open(states_root / split.image_paths[split.queries[0].target]).convert("RGB"))
        assert np.array_equal(img.permute(1, 2, 0).numpy(), raw)


def test_missing_scene_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_css(tmp_path)
    assert str(tmp_path / SCENE_FILE) in str(info.value)


def test_missing_image_is_named(css_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "css"
    shutil.copytree(css_root, root)
    data = load_css(root)
    victim = root / "images" / "css_test_000007.png"
    victim.unlink()
    with pytest.raises(DatasetError, match=str(victim)):
        open_image_map(data.test)
    with pytest.raises(DatasetError, match=str(victim)):
        load_css(root)


def test_unreadable_image_is_named(css_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "css"
    shutil.copytree(css_root, root)
    (root / "images" / "css_train_000002.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="css_train_000002.png"):
        open_image_map(load_css(root).train)


def write_tiny_mitstates(root: Path, folders: dict[str, int]) -> None:
    for folder, count in folders.items():
        (root / "images" / folder).mkdir(parents=True)
        for k in range(count):
            Image.new("RGB", (32, 48), (k * 40, 0, 0)).save(root / "images" / folder / f"{k}.jpg")


def test_real_mitstates_rules(tmp_path: Path) -> None:
    # built-in test nouns (tomato is one), placeholder and space-less folders skipped, jpg read
    assert "tomato" in MIT_STATES_TEST_NOUNS and len(MIT_STATES_TEST_NOUNS) == 49
    write_tiny_mitstates(tmp_path, {"ripe tomato": 2, "sliced tomato": 1, "peeled tomato": 1, "ripe apple": 2,
                                    "sliced apple": 1, "adj noun": 3, "misc": 2})
    data = open_dataset("mitstates", root=tmp_path)
    assert set(data.test.labels) == {"ripe tomato", "sliced tomato", "peeled tomato"}
    assert set(data.train.labels) == {"ripe apple", "sliced apple"}
    assert data.test.image_size == 224  # a real layout: the papers' size, whatever the files' size
    assert open_image_map(data.test).shape == (4, 3, 224, 224)
    assert len(data.test.queries) == 4 * 2 and len(data.train.queries) == 3 * 1
    for split in (data.train, data.test):
        for q in split.queries:
            assert split.labels[q.target] == f"{q.text} {split.labels[q.source].split()[1]}"
            assert q.text != split.labels[q.source].split()[0] and q.region is None
    (tmp_path / "test_nouns.txt").write_text("# override\napple\n")
    assert set(load_mitstates(tmp_path).test.labels) == {"ripe apple", "sliced apple"}
    (tmp_path / "test_nouns.txt").write_text("apple\ntwo words\n")
    with pytest.raises(DatasetError, match=r"test_nouns.txt, line 2"):
        load_mitstates(tmp_path)


def test_mitstates_without_images_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=str(tmp_path / "images")):
        load_mitstates(tmp_path)


def test_open_dataset_names(tmp_path: Path, states_root: Path) -> None:
    assert known_datasets() == ["cirr", "css", "fashion", "fashion200k", "fashioniq", "mitstates", "shoes", "states"]
    with pytest.raises(DatasetError, match=r"unknown dataset 'nope'.*css.*mitstates.*states"):
        open_dataset("nope")
    with pytest.raises(DatasetError, match="pass root="):
        open_dataset("mitstates", cache_dir=tmp_path)
    data = open_dataset("states", root=states_root)  # a generator's name reads with its layout's loader
    assert data.name == "states" and data.recall_ks == (1, 5, 10)
