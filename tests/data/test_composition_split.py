"""The composition split of "mitstates" (Misra et al., CVPR 2017): every adjective and noun trains,
no test pair does, test queries go between held-out pairs, the draw follows split_seed; on a tiny
MIT-States folder this test writes and on the generated "states" data."""
from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from data_layout_writers import STATES_SCALE

from study.data import DatasetError, RetrievalData, open_dataset
from study.data.mitstates import load_mitstates
from study.data.states import ADJECTIVES_PER_NOUN
from study.data.states_shapes import NOUNS

# noun -> its adjectives; quotas by the rule min(floor(0.35 m), m - 2): 2, 2, 2, 1, 0, 0
TINY = {
    "apple": ("ripe", "sliced", "peeled", "old", "wet", "burnt"),
    "tomato": ("ripe", "sliced", "peeled", "wet", "burnt", "new"),
    "car": ("old", "new", "wet", "burnt", "tiny", "ripe"),
    "shirt": ("old", "new", "wet", "tiny"),
    "road": ("wet", "old"),
    "moon": ("tiny",),  # one adjective: trains, never queried
}
TINY_HELD = {"apple": 2, "tomato": 2, "car": 2, "shirt": 1}
IMAGES_PER_PAIR = 2


def write_tiny(root: Path) -> Path:
    for noun, adjectives in TINY.items():
        for adj in adjectives:
            folder = root / "images" / f"{adj} {noun}"
            folder.mkdir(parents=True)
            for k in range(IMAGES_PER_PAIR):
                Image.new("RGB", (8, 8), (k * 90, len(adj) * 20, len(noun) * 30)).save(folder / f"{k}.png")
    return root


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny(tmp_path_factory.mktemp("mitstates"))


def pairs(labels: tuple[str, ...]) -> set[tuple[str, str]]:
    return {(label.split()[0], label.split()[1]) for label in labels}


def check_composition_split(data: RetrievalData) -> None:
    """The split's promises, checked from the labels and queries alone."""
    train, test = pairs(data.train.labels), pairs(data.test.labels)
    assert test and not train & test  # no test pair ever trains
    everything = train | test
    assert {a for a, _ in everything} == {a for a, _ in train}  # every adjective trains
    assert {n for _, n in everything} == {n for _, n in train}  # every noun trains
    # every test adjective is a training query's text, so the model's vocabulary has it
    assert {a for a, _ in test} <= {q.text for q in data.train.queries}
    assert not set(data.train.image_paths) & set(data.test.image_paths)
    for split in (data.train, data.test):
        assert split.queries
        for q in split.queries:
            source, target = split.labels[q.source].split(), split.labels[q.target].split()
            assert target == [q.text, source[1]] and source[0] != q.text  # same noun, another adjective
    # test queries: a held-out pair -> another held-out pair of its noun, every such combination
    held = Counter(n for _, n in test)
    images_of = Counter(data.test.labels)
    expected = sum(images_of[f"{a} {n}"] * (held[n] - 1) for a, n in test)
    assert len(data.test.queries) == expected


@pytest.mark.parametrize("seed", range(10))
def test_tiny_folder_holds_out_pairs_by_the_rule(tiny_root: Path, seed: int) -> None:
    data = load_mitstates(tiny_root, split="compositions", split_seed=seed)
    check_composition_split(data)
    assert Counter(n for _, n in pairs(data.test.labels)) == TINY_HELD
    assert len(data.train.image_paths) + len(data.test.image_paths) == IMAGES_PER_PAIR * sum(map(len, TINY.values()))


def test_generated_states_split_and_open_dataset(states_root: Path, tmp_path: Path) -> None:
    data = open_dataset("states", root=states_root, options={"split": "compositions"}, cache_dir=tmp_path)
    check_composition_split(data)
    held = Counter(n for _, n in pairs(data.test.labels))
    assert held == {noun: int(0.35 * ADJECTIVES_PER_NOUN) for noun in NOUNS}  # 2 of 6 per noun: 40 of 120
    # the generator's own path, as a study opens it: generated into the cache, read with the option
    generated = open_dataset("states", scale=STATES_SCALE, seed=0, cache_dir=tmp_path,
                             options={"split": "compositions"})
    assert generated.test.labels == data.test.labels and generated.train.queries == data.train.queries


def test_split_seed_decides_the_pairs(tiny_root: Path, states_root: Path) -> None:
    again = load_mitstates(states_root, split="compositions", split_seed=0)
    assert again == load_mitstates(states_root, split="compositions", split_seed="0")  # --option gives a string
    assert again == load_mitstates(states_root, split="compositions")  # split_seed defaults to 0
    other = load_mitstates(states_root, split="compositions", split_seed=1)
    assert pairs(other.test.labels) != pairs(again.test.labels)
    draws = {frozenset(pairs(load_mitstates(tiny_root, split="compositions", split_seed=s).test.labels))
             for s in range(10)}
    assert len(draws) > 1


def test_nouns_is_the_default_split(states_root: Path) -> None:
    nouns = load_mitstates(states_root, split="nouns")
    assert nouns == load_mitstates(states_root)
    assert not {n for _, n in pairs(nouns.train.labels)} & {n for _, n in pairs(nouns.test.labels)}


def age(root: Path, seconds: float = 3600) -> None:
    """Every file under `root` changed an hour ago: the dataset cache writes entries only for data
    older than the open (study/data/dataset_cache.py RACY_SECONDS)."""
    then = time.time() - seconds
    for folder, _, names in os.walk(root):
        for name in names:
            os.utime(os.path.join(folder, name), (then, then))
        os.utime(folder, (then, then))


def test_dataset_cache_keeps_the_splits_apart(tmp_path: Path) -> None:
    root, cache = write_tiny(tmp_path / "mit"), tmp_path / "cache"
    age(root)
    for _ in range(2):  # the second round reads the cache's entries
        nouns = open_dataset("mitstates", root=root, cache_dir=cache, image_size=16)
        compositions = open_dataset("mitstates", root=root, cache_dir=cache, image_size=16,
                                    options={"split": "compositions"})
        assert pairs(compositions.test.labels) == pairs(load_mitstates(root, split="compositions").test.labels)
        assert pairs(nouns.test.labels) == pairs(load_mitstates(root).test.labels)
        assert len(list((cache / "datasets").glob("*.cirdata"))) == 2


@pytest.mark.parametrize("options, message", [
    ({"split": "pairs"}, r"option split='pairs' is not valid; choose one of \['nouns', 'compositions'\]"),
    ({"split": "compositions", "split_seed": -1}, r"option split_seed=-1 is not valid; choose one of \['an integer >= 0'\]"),
    ({"split": "compositions", "split_seed": "one"}, r"option split_seed='one' is not valid"),
    ({"split": "compositions", "split_seed": True}, r"option split_seed=True is not valid"),
    ({"split_seed": 3}, r"split_seed=3 applies to split=compositions only"),
    ({"splits": "nouns"}, r"unknown option\(s\) \['splits'\]; valid options: split \(nouns \| compositions\), "
                          r"split_seed \(an integer >= 0\)"),
])  # fmt: skip
def test_bad_options_are_refused(tiny_root: Path, options: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_mitstates(tiny_root, **options)


def test_the_generated_datasets_bad_options_name_it_not_its_loader(states_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"^dataset states: option split='pairs' is not valid; choose one of "):
        open_dataset("states", root=states_root, options={"split": "pairs"}, cache_dir=tmp_path)
    with pytest.raises(DatasetError, match=r"^dataset mitstates: unknown option\(s\) \['splits'\]"):
        open_dataset("mitstates", root=states_root, options={"splits": "nouns"}, cache_dir=tmp_path)


def test_folders_that_cannot_be_split_by_compositions(tmp_path: Path) -> None:
    few = tmp_path / "few"
    for folder in ("wet road", "old road", "wet car", "old car"):  # two adjectives per noun: none can leave
        (few / "images" / folder).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(few / "images" / folder / "0.png")
    with pytest.raises(DatasetError, match=r"few/images: split=compositions holds out no pair"):
        load_mitstates(few, split="compositions")
    single = tmp_path / "single"
    for folder in ("wet road", "old road", "new road", "wet car", "old car", "new car"):  # one held-out pair each
        (single / "images" / folder).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(single / "images" / folder / "0.png")
    with pytest.raises(DatasetError, match=r"single/images: split=compositions gives no test query"):
        load_mitstates(single, split="compositions")
