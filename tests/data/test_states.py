"""Generator "states": disjoint test nouns, one-adjective texts, "adj noun" labels, regions."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from study.data.mitstates import load_mitstates
from study.data.states import ADJECTIVES_PER_NOUN, generate_states, noun_adjectives
from study.data.states_render import ADJECTIVES
from study.data.states_shapes import NOUNS, TEST_NOUNS


def test_test_nouns_are_disjoint_from_train_nouns(states_root: Path) -> None:
    assert (states_root / "test_nouns.txt").read_text().split() == list(TEST_NOUNS)
    data = load_mitstates(states_root)
    train_nouns = {label.split()[1] for label in data.train.labels}
    test_nouns = {label.split()[1] for label in data.test.labels}
    assert test_nouns == set(TEST_NOUNS) and train_nouns == set(NOUNS) - set(TEST_NOUNS)
    assert len(NOUNS) >= 16 and not train_nouns & test_nouns


def test_texts_are_single_adjectives_and_targets_carry_them(states_root: Path) -> None:
    data = load_mitstates(states_root)
    for split in (data.train, data.test):
        assert all(len(label.split()) == 2 for label in split.labels)
        for q in split.queries:
            source_adj, noun = split.labels[q.source].split()
            assert q.text in ADJECTIVES and " " not in q.text and q.kind == "adjective"
            assert q.text != source_adj and split.labels[q.target] == f"{q.text} {noun}"


def test_each_noun_has_several_adjectives(states_root: Path) -> None:
    picks = noun_adjectives(0)
    assert all(len(adjs) == ADJECTIVES_PER_NOUN for adjs in picks.values())
    folders = {p.name for p in (states_root / "images").iterdir()}
    assert folders == {f"{a} {n}" for n, adjs in picks.items() for a in adjs}


def test_regions_bound_the_object(states_root: Path) -> None:
    regions = json.loads((states_root / "regions.json").read_text())
    images = sorted((states_root / "images").rglob("*.png"))
    assert len(regions) == len(images)
    for path in images:
        rel = str(path.relative_to(states_root))
        if rel.split("/")[1].startswith("blurred"):
            continue  # blur spreads colour past the object's outline
        ink = np.nonzero((np.asarray(Image.open(path).convert("RGB")) < 250).any(axis=2))
        top, left, bottom, right = regions[rel]
        assert ink[0].min() >= top * 64 - 1 and ink[0].max() < bottom * 64 + 1
        assert ink[1].min() >= left * 64 - 1 and ink[1].max() < right * 64 + 1


def test_images_of_one_label_differ_and_sizes_read(states_root: Path) -> None:
    def pixels(label: str) -> list[np.ndarray]:
        return [np.asarray(Image.open(p)) for p in sorted((states_root / "images" / label).glob("*.png"))]

    for folder in (states_root / "images").iterdir():
        a, b = pixels(folder.name)[:2]
        assert not np.array_equal(a, b), folder.name

    def area(adjective: str) -> float:
        regions = json.loads((states_root / "regions.json").read_text())
        boxes = [v for k, v in regions.items() if k.split("/")[1].startswith(adjective + " ")]
        return float(np.mean([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]))

    assert area("tiny") * 4 < area("striped") < area("huge")


def test_same_seed_same_images(tmp_path: Path) -> None:
    generate_states(tmp_path / "a", seed=5, scale=0.01)
    generate_states(tmp_path / "b", seed=5, scale=0.01)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
