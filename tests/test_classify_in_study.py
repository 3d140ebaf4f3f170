"""A trial on a composition split classifies its unseen compositions every epoch (study/trial_run.py):
`classify/<key>/top1`, and the pseudo-split `recall/<key>/classify@K` that a space weighs in the WHM
with `splits: {classify: w}`; its per-image ranks go with the query ranks, so the statistics resample
them. Without Ray."""
from __future__ import annotations

import pytest
import torch

from study.budget import Budget, DatasetEntry
from study.classify import classify_compositions
from study.data import open_dataset
from study.metrics import whm
from study.space import SpaceError, cell_weights
from study.trial_config import TrialConfig
from study.trial_run import TrialRun

BUDGET = Budget(epochs=1, scale=0.02, embed_dim=16, batch_size=8, train_eval_queries=10, max_steps_per_epoch=2)
ENTRY = DatasetEntry("states", options=(("split", "compositions"),))
KEY = ENTRY.key  # "states-compositions"


def test_cells_of_the_classify_split_exist_only_for_composition_splits() -> None:
    css = DatasetEntry("css")
    cells = cell_weights((ENTRY, css), {"test": 1.0, "classify": 2.0}, None, {KEY: (1, 5), "css": (1,)})
    assert cells == {f"{KEY}/test@1": 1.0, f"{KEY}/test@5": 1.0, f"{KEY}/classify@1": 2.0,
                     f"{KEY}/classify@5": 2.0, "css/test@1": 1.0}


def test_a_trial_logs_the_classification_and_weighs_it_in_the_whm(tmp_path) -> None:
    data = {KEY: open_dataset("states", scale=BUDGET.scale, cache_dir=tmp_path, options=dict(ENTRY.options))}
    weights = {f"{KEY}/test@1": 1.0, f"{KEY}/classify@1": 1.0, f"{KEY}/classify@5": 1.0}
    torch.set_num_threads(1)
    trial = TrialConfig.from_params({"composer": "tirg", "K": 4}, seeds=(0,))
    run = TrialRun.build(trial, BUDGET, (ENTRY,), data, cell_weights=weights, data_seed=0, cache_dir=str(tmp_path),
                         rank=0, world=1, device=torch.device("cpu"))
    run.train_epoch()
    metrics, frames = run.evaluate()
    seed_run = run.runs[0][0]
    direct = classify_compositions(seed_run.model, seed_run.share.data, seed_run.share.images, seed_run.share.vocab,
                                   torch.device("cpu"))
    ranks = direct.closed_world_ranks
    for k in (1, 5):
        assert metrics[f"seed/0/recall/{KEY}/classify@{k}"] == pytest.approx(float((ranks < k).float().mean()))
    assert metrics[f"seed/0/classify/{KEY}/top1"] == pytest.approx(direct.closed_world_top1)
    assert metrics["seed/0/whm"] == pytest.approx(whm([metrics[f"seed/0/recall/{cell}"] for cell in weights], [1.0] * 3))
    classify_frame = next(f for f in frames if (f["split"] == "classify").all())
    assert classify_frame["rank"].tolist() == ranks.tolist() and len(ranks) == len(data[KEY].test.labels)


def test_a_space_that_weighs_classification_needs_a_composition_split(tmp_path) -> None:
    from study.space import load_space

    space = tmp_path / "bad.yaml"
    space.write_text("name: bad\ndatasets:\n  css: {weight: 1.0}\nsplits: {test: 1.0, classify: 1.0}\nseeds: 1\n"
                     "parameters:\n  composer: {type: choice, values: [tirg]}\nbudgets:\n  smoke: {epochs: 1}\n")
    with pytest.raises(SpaceError, match="split: compositions"):
        load_space(str(space))
