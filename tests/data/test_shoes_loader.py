"""The "shoes" loader: split and triplet files, images found by name under images/."""
from __future__ import annotations

from pathlib import Path

import pytest
from data_layout_writers import SHOES_SPLITS, SHOES_TRIPLETS, shoes_path, write_image, write_shoes

from study.data import DatasetError, open_dataset, open_image_map


def test_reads_splits_and_triplets(tmp_path: Path) -> None:
    data = open_dataset("shoes", root=write_shoes(tmp_path))
    assert data.recall_ks == (1, 10, 50)
    for split in ("train", "test"):
        part = getattr(data, split)
        assert part.labels == tuple(SHOES_SPLITS[split])
        assert part.image_paths == tuple(shoes_path(name) for name in SHOES_SPLITS[split])
        want = [(a, b, c.strip(), "caption") for a, b, c in SHOES_TRIPLETS[split]]
        assert [(part.labels[q.source], part.labels[q.target], q.text, q.kind) for q in part.queries] == want
    assert open_image_map(data.train).shape == (3, 3, 224, 224)
    assert data.manifest is not None and data.manifest.listed == 7 and data.manifest.missing == 0


def test_image_names_must_be_unique(tmp_path: Path) -> None:
    root = write_shoes(tmp_path)
    write_image(root / "images" / "other" / "img_womens_boots_1.jpg", 0)
    with pytest.raises(DatasetError, match=r"womens_boots/0/img_womens_boots_1.jpg: image name 'img_womens_boots_1.jpg' also at .*other/img_womens_boots_1.jpg"):
        open_dataset("shoes", root=root)


def test_triplet_outside_the_split(tmp_path: Path) -> None:
    root = write_shoes(tmp_path)
    (root / "triplet.test.json").write_text('[{"ReferenceImageName": "img_womens_boots_1.jpg", "ImageName": "img_womens_pumps_5.jpg", "RelativeCaption": "x"}]')
    with pytest.raises(DatasetError, match=r"triplet.test.json: entry 0: ReferenceImageName 'img_womens_boots_1.jpg' is not in .*split.test.json"):
        open_dataset("shoes", root=root)


def test_reads_the_download_layout_under_attributedata(tmp_path: Path) -> None:
    # the real download: attributedata/womens_pumps/0/img_womens_pumps_3.jpg, no images/ folder
    root = write_shoes(tmp_path, folder="attributedata")
    assert not (root / "images").exists()
    data = open_dataset("shoes", root=root, image_size=16)
    assert data.train.image_paths == tuple(shoes_path(name, "attributedata") for name in SHOES_SPLITS["train"])
    assert data.test.image_paths[1] == "attributedata/womens_pumps/0/img_womens_pumps_5.jpg"
    assert data.manifest is not None and data.manifest.listed == 7 and data.manifest.missing == 0
    assert open_image_map(data.test).shape == (4, 3, 16, 16)


def test_images_may_be_split_over_both_folders_but_names_stay_unique(tmp_path: Path) -> None:
    root = write_shoes(tmp_path, folder="attributedata")
    moved = root / shoes_path("img_womens_flats_7.jpg", "images")
    moved.parent.mkdir(parents=True)
    (root / shoes_path("img_womens_flats_7.jpg", "attributedata")).rename(moved)
    data = open_dataset("shoes", root=root)
    assert data.test.image_paths[3] == "images/womens_flats/0/img_womens_flats_7.jpg"
    write_image(root / "images" / "img_womens_boots_4.jpg", 0)  # a second copy of an attributedata image
    with pytest.raises(DatasetError, match=r"images/img_womens_boots_4.jpg: image name 'img_womens_boots_4.jpg' also at .*attributedata/womens_boots/0/img_womens_boots_4.jpg"):
        open_dataset("shoes", root=root)
