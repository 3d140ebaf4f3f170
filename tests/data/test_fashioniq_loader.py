"""The "fashioniq" loader: val is the test split, one category's gallery, captions joined."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from data_layout_writers import FASHIONIQ_CAPTIONS, FASHIONIQ_SPLITS, write_fashioniq

from study.data import DatasetError, open_dataset, open_image_map
from study.data.describe import describe


@pytest.mark.parametrize("category", ["dress", "shirt"])
def test_reads_one_category(tmp_path: Path, category: str) -> None:
    data = open_dataset("fashioniq", root=write_fashioniq(tmp_path), options={"category": category})
    assert data.recall_ks == (10, 50)
    for split, fiq_split in (("train", "train"), ("test", "val")):  # the val split is our test split
        part = getattr(data, split)
        ids = FASHIONIQ_SPLITS[category][fiq_split]
        assert part.labels == tuple(ids)  # gallery = this category's image split; hit = the image itself
        assert [Path(p).stem for p in part.image_paths] == ids
        want = [(c, t, f"{caps[0]} and {caps[1]}", "caption") for c, t, caps in FASHIONIQ_CAPTIONS[category][fiq_split]]
        assert [(part.labels[q.source], part.labels[q.target], q.text, q.kind) for q in part.queries] == want
    assert "captions joined with ' and ' in the order given; hit = the target image itself" in data.notes
    assert any(note.startswith(f"category {category} (categories in this folder: dress, shirt)") for note in data.notes)
    assert open_image_map(data.test).shape == (3, 3, 224, 224)


def test_category_option_is_checked(tmp_path: Path) -> None:
    root = write_fashioniq(tmp_path)
    with pytest.raises(DatasetError, match=r"option 'category' is required.*'dress', 'shirt', 'toptee'"):
        open_dataset("fashioniq", root=root)
    with pytest.raises(DatasetError, match=r"category='shoe' is not valid; choose one of \['dress', 'shirt', 'toptee'\]"):
        open_dataset("fashioniq", root=root, options={"category": "shoe"})
    with pytest.raises(DatasetError, match=r"unknown option\(s\) \['split'\]; valid options: category \(dress \| shirt \| toptee\)"):
        open_dataset("fashioniq", root=root, options={"category": "dress", "split": "val"})
    with pytest.raises(DatasetError, match=r"cap\.toptee\.train\.json|split\.toptee\.train\.json"):
        open_dataset("fashioniq", root=root, options={"category": "toptee"})  # not in this folder


def test_describe_picks_a_category(tmp_path: Path) -> None:
    root = write_fashioniq(tmp_path / "fiq")
    out = io.StringIO()
    describe(root, tmp_path / "grid.png", out=out)
    assert "layout fashioniq (category=dress)" in out.getvalue() and (tmp_path / "grid.png").is_file()
    out = io.StringIO()
    describe(root, tmp_path / "grid.png", out=out, options={"category": "shirt"})
    assert "layout fashioniq (category=shirt)" in out.getvalue() and "test: 3 images" in out.getvalue()
