"""Every registered composer trains and evaluates on every generated dataset it supports, through
the same per-dataset training code a Ray Train worker runs (study.worker.DatasetRun); a pairing
it does not support (attribute_operator on multi-word texts) is refused before a study starts."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.composers import COMPOSERS, composer_class
from study.data import open_dataset
from study.space import Budget, SpaceError, load_space
from study.trial_config import TrialConfig, check_capabilities, dataset_capabilities
from study.worker import DatasetRun

GENERATED = ("css", "states", "fashion")
BUDGET = Budget(epochs=1, embed_dim=16, batch_size=16, train_eval_queries=20, max_steps_per_epoch=2)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict:
    cache = tmp_path_factory.mktemp("cache")
    return {name: open_dataset(name, scale=0.01, cache_dir=cache) for name in GENERATED}


@pytest.mark.parametrize("dataset", GENERATED)
@pytest.mark.parametrize("composer", COMPOSERS.names())
def test_composer_trains_on_every_generated_dataset_it_supports(composer: str, dataset: str, datasets, tmp_path: Path) -> None:
    data = datasets[dataset]
    if not composer_class(composer).requires <= dataset_capabilities(data):
        space_file = tmp_path / "space.yaml"
        space_file.write_text(f"# q\ndatasets: {{{dataset}: {{weight: 1}}}}\nseeds: 1\nparameters:\n"
                              f"  composer: {{type: choice, values: [{composer}]}}\n"
                              "budgets:\n  smoke: {num_samples: 1, epochs: 1}\n")
        with pytest.raises(SpaceError, match=f"composer '{composer}' needs"):
            check_capabilities(load_space(space_file), {dataset: data})
        return
    torch.manual_seed(0)
    trial = TrialConfig.from_params({"composer": composer, "K": 4}, seeds=(0,))
    run = DatasetRun.build(data, trial, BUDGET, data_seed=0, device=torch.device("cpu"))
    before = [p.detach().clone() for p in run.model.composer.parameters()]
    logs = run.train_epoch(0, rank=0, world=1)
    assert torch.isfinite(torch.tensor(logs[f"train/{dataset}/loss/total"]))
    after = list(run.model.composer.parameters())
    assert not before or any(not torch.equal(b, a) for b, a in zip(before, after)), "the composer did not train"
    metrics = run.evaluate()
    for k in data.recall_ks:
        assert 0.0 <= metrics[f"recall/{dataset}/test@{k}"] <= 1.0
