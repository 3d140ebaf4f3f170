"""The "fashion200k" loader follows TIRG's protocol on a hand-written fixture in the real layout."""
from __future__ import annotations

from pathlib import Path

import pytest
from data_layout_writers import FASHION200K_IMAGES, FASHION200K_TEST_QUERIES, fashion200k_path, write_fashion200k

from study.data import DatasetError, open_dataset, open_image_map
from study.data.fashion200k import attribute_of, clean_caption, different_words, load_fashion200k, parents


def test_tirg_helpers() -> None:
    assert clean_caption(" a.b? c & d*\n") == "adotmarkbquestionmark c andmark dstarmark"
    assert parents("red striped dress") == ["striped dress", "red dress", "red striped"]
    assert different_words("red striped long dress", "blue striped long dress") == ("red", "blue")
    assert different_words("a b", "a b") == ("b", "b")  # TIRG falls through to the last words
    assert [attribute_of(*w) for w in [("red", "blue"), ("dotted", "striped"), ("long", "short"), ("dress", "top"), ("silk", "velvet")]] == [
        "color", "pattern", "length", "category", "word"]


def test_reads_the_layout_with_tirg_rules(tmp_path: Path) -> None:
    data = open_dataset("fashion200k", root=write_fashion200k(tmp_path))
    assert data.name == "fashion200k" and data.recall_ks == (1, 10, 50)
    train_rows = [(i, caption) for i, (split, _, caption) in enumerate(FASHION200K_IMAGES) if split == "train"]
    # label files are read in name order (dress before top), lines in file order
    assert data.train.image_paths == tuple(fashion200k_path(i) for i, _ in train_rows)
    assert data.train.labels == tuple(caption for _, caption in train_rows)
    assert "sale! top andmark teedotmark" in data.test.labels
    # one training query per image whose caption has a sibling; "black lace gown" has none
    assert sorted(q.source for q in data.train.queries) == [0, 1, 2, 3, 5, 6]
    assert any("1 training images have none" in note for note in data.notes)
    for q in data.train.queries:
        source, target = data.train.labels[q.source].split(), data.train.labels[q.target].split()
        assert len(source) == len(target) and sum(a != b for a, b in zip(source, target)) == 1
        a, b = next((a, b) for a, b in zip(source, target) if a != b)
        assert q.text == f"replace {a} with {b}" and q.region is None
        assert q.kind == {"red": "color", "blue": "color", "dotted": "pattern", "striped": "pattern", "silk": "word", "velvet": "word"}[a]
    # test queries are test_queries.txt, in order; the hit rule is the caption
    test_index = {p: i for i, p in enumerate(data.test.image_paths)}
    got = [(data.test.image_paths[q.source], data.test.image_paths[q.target], q.text, q.kind) for q in data.test.queries]
    assert got == [
        (fashion200k_path(7), fashion200k_path(8), "replace red with blue", "color"),
        (fashion200k_path(7), fashion200k_path(9), "replace long with short", "length"),
        (fashion200k_path(9), fashion200k_path(7), "replace short with long", "length"),
    ]
    assert len(got) == len(FASHION200K_TEST_QUERIES) and len(test_index) == 4
    assert open_image_map(data.test).shape == (4, 3, 224, 224)  # 16 px files, delivered at the papers' 224
    assert data.manifest is not None and data.manifest.listed == len(FASHION200K_IMAGES) and data.manifest.missing == 0


def test_takes_no_options(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"fashion200k: unknown option\(s\) \['category'\]; valid options: none"):
        load_fashion200k(write_fashion200k(tmp_path), category="dress")
