"""The "shoes" loader: split and triplet files, images found by name under images/."""
from __future__ import annotations

from pathlib import Path

import pytest
from data_layout_writers import SHOES_SPLITS, SHOES_TRIPLETS, shoes_path, write_image, write_shoes

from study.data import DatasetError, open_dataset


def test_reads_splits_and_triplets(tmp_path: Path) -> None:
    data = open_dataset("shoes", root=write_shoes(tmp_path))
    assert data.recall_ks == (1, 10, 50)
    for split in ("train", "test"):
        part = getattr(data, split)
        assert part.labels == tuple(SHOES_SPLITS[split])
        assert part.image_paths == tuple(shoes_path(name) for name in SHOES_SPLITS[split])
        want = [(a, b, c.strip(), "caption") for a, b, c in SHOES_TRIPLETS[split]]
        assert [(part.labels[q.source], part.labels[q.target], q.text, q.kind) for q in part.queries] == want
    assert data.train.load_images().shape == (3, 3, 16, 16)
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
