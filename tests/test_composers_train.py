"""Every registered composer trains and evaluates on every generated dataset it supports, and every
registered regulariser trains, through the same per-dataset training code a Ray Train worker runs
(study.worker.SeedRun); a pairing it does not support (attribute_operator on multi-word texts) is
refused before a study starts."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.composers import COMPOSERS, composer_class
from models.regularizers import REGULARIZERS
from study.budget import DatasetEntry
from study.data import open_dataset
from study.evaluation import evaluate_split
from study.space import Budget, SpaceError, load_space
from study.trial_config import TrialConfig, check_capabilities, dataset_capabilities
from study.worker import DatasetShare, SeedRun

GENERATED = ("css", "states", "fashion")
BUDGET = Budget(epochs=1, embed_dim=16, batch_size=16, train_eval_queries=20, max_steps_per_epoch=2)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def datasets(cache) -> dict:
    return {name: open_dataset(name, scale=0.01, cache_dir=cache) for name in GENERATED}


def seed_run(data, params: dict, cache: Path) -> SeedRun:
    share = DatasetShare.open(DatasetEntry(data.name), data, budget=BUDGET, data_seed=0, cache_dir=str(cache))
    trial = TrialConfig.from_params(params, seeds=(0,))
    return SeedRun.build(share, trial, BUDGET, seed=0, device=torch.device("cpu"))


@pytest.mark.parametrize("dataset", GENERATED)
@pytest.mark.parametrize("composer", COMPOSERS.names())
def test_composer_trains_on_every_generated_dataset_it_supports(composer: str, dataset: str, datasets, cache,
                                                                tmp_path: Path) -> None:
    data = datasets[dataset]
    if not composer_class(composer).requires <= dataset_capabilities(data):
        space_file = tmp_path / "space.yaml"
        space_file.write_text(f"# q\ndatasets: {{{dataset}: {{weight: 1}}}}\nseeds: 1\nparameters:\n"
                              f"  composer: {{type: choice, values: [{composer}]}}\n"
                              "budgets:\n  smoke: {num_samples: 1, epochs: 1}\n")
        with pytest.raises(SpaceError, match=f"composer '{composer}' needs"):
            check_capabilities(load_space(space_file), {dataset: data})
        return
    run = seed_run(data, {"composer": composer, "K": 4}, cache)
    before = [p.detach().clone() for p in run.model.composer.parameters()]
    logs = run.train_epoch(0, rank=0, world=1)
    assert torch.isfinite(logs[f"train/{dataset}/loss/total"])
    after = list(run.model.composer.parameters())
    assert not before or any(not torch.equal(b, a) for b, a in zip(before, after)), "the composer did not train"
    test = evaluate_split(run.model, data.test, run.share.images["test"], data.test.queries, run.share.vocab,
                          data.recall_ks, torch.device("cpu"))
    assert len(test.ranks) == len(data.test.queries)
    for k in data.recall_ks:
        assert test.recalls[k] == pytest.approx(float((test.ranks < k).double().mean()))


STRENGTHS = {"ga": {"ga_strength": 0.01, "ga_noise": 0.01}, "dim": {"dim_weight": 0.1},
             "cmap": {"cmap_weight": 0.5}, "mmgrad": {"mmgrad_weight": 0.5}}


@pytest.mark.parametrize("regularizer", REGULARIZERS.names())
def test_every_regularizer_trains_a_composer(regularizer: str, datasets, cache) -> None:
    params = {"composer": "tirg", "K": 4, "regularizer": regularizer, **STRENGTHS[regularizer]}
    run = seed_run(datasets["css"], params, cache)
    logs = run.train_epoch(0, rank=0, world=1)
    terms = [k for k in logs if k.startswith(f"train/css/loss/") and k.split("/")[-1] not in ("match", "total")]
    assert terms, f"{regularizer} added no loss term"  # GA's noise alone adds none; its strength does
    assert all(torch.isfinite(logs[k]) for k in terms)
