"""A regulariser or composer that needs what a dataset or composer cannot provide is refused before
the study starts, with a message naming who needs what (issue 5; issue 4's attribute_operator)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from study.data import open_dataset
from study.space import SpaceError, load_space
from study.trial_config import check_capabilities, dataset_capabilities

SPACE = """\
# capabilities
datasets:
  css: {weight: 1.0}
seeds: 1
parameters:
  composer: {type: choice, values: [COMPOSERS]}
  regularizer: {type: choice, values: [REGULARIZERS]}
MMGRAD
budgets:
  smoke: {num_samples: 1, epochs: 1, batch_size: 8}
"""


@pytest.fixture(scope="module")
def css(tmp_path_factory):
    return open_dataset("css", scale=0.01, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def states(tmp_path_factory):
    return open_dataset("states", scale=0.01, cache_dir=tmp_path_factory.mktemp("cache"))


def without_regions(data):
    def strip(split):
        return dataclasses.replace(split, queries=tuple(dataclasses.replace(q, region=None) for q in split.queries))
    return dataclasses.replace(data, train=strip(data.train), test=strip(data.test))


def space(tmp_path: Path, composers: str, regularizers: str):
    path = tmp_path / "space.yaml"
    mmgrad = "  mmgrad_weight: {type: loguniform, low: 0.01, high: 1.0, when: {regularizer: mmgrad}}"
    text = SPACE.replace("COMPOSERS", composers).replace("REGULARIZERS", regularizers)
    path.write_text(text.replace("MMGRAD", mmgrad if "mmgrad" in regularizers else ""))
    return load_space(path)


def test_capabilities_of_the_generated_datasets(css, states) -> None:
    assert dataset_capabilities(css) == {"regions"}
    assert dataset_capabilities(states) == {"regions", "single_word_text"}
    assert dataset_capabilities(without_regions(css)) == frozenset()


def test_mmgrad_on_a_dataset_without_regions_is_refused(tmp_path: Path, css) -> None:
    study = space(tmp_path, "tirg", "none, mmgrad")
    check_capabilities(study, {"css": css})  # css has regions: fine
    with pytest.raises(SpaceError, match=r"regularizer 'mmgrad' needs \['regions'\], which dataset 'css'"):
        check_capabilities(study, {"css": without_regions(css)})


def test_a_composer_that_ignores_the_image_cannot_feed_mmgrad(tmp_path: Path, css) -> None:
    with pytest.raises(SpaceError, match=r"regularizer 'mmgrad' needs \['image_in_query'\].*composer 'text_only'"):
        check_capabilities(space(tmp_path, "tirg, text_only", "none, mmgrad"), {"css": css})


def test_attribute_operator_needs_single_word_texts(tmp_path: Path, css, states) -> None:
    study = space(tmp_path, "attribute_operator", "none")
    check_capabilities(study, {"css": states})  # MIT-States-like: the text is one adjective
    with pytest.raises(SpaceError, match=r"composer 'attribute_operator' needs \['single_word_text'\]"):
        check_capabilities(study, {"css": css})
