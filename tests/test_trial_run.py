"""One configuration on one worker (study/trial_run.py), without Ray: a seed's numbers are the
same whether it trains alone or beside other seeds, and a run restored from its checkpoint state
continues with exactly the metrics the uninterrupted run produces (issue 9, items 1 and 2)."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from study.budget import Budget, DatasetEntry
from study.data import open_dataset
from study.trial_config import TrialConfig
from study.trial_run import TrialRun, ranks_frame

BUDGET = Budget(epochs=2, scale=0.01, embed_dim=16, batch_size=8, train_eval_queries=10, max_steps_per_epoch=2)
ENTRIES = (DatasetEntry("css"),)
WEIGHTS = {"css/test@1": 1.0, "css/test@10": 1.0}
# GA's noise and input-gradient penalty, dropout in the text encoder: every source of randomness
PARAMS = {"composer": "tirg", "K": 3, "regularizer": "ga", "ga_noise": 0.01, "ga_strength": 0.01}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    cache = tmp_path_factory.mktemp("cache")
    return {"css": open_dataset("css", scale=BUDGET.scale, cache_dir=cache)}, cache


def build(data, seeds: tuple[int, ...]) -> TrialRun:
    datasets, cache = data
    torch.set_num_threads(1)
    trial = TrialConfig.from_params(PARAMS, seeds=seeds)
    return TrialRun.build(trial, BUDGET, ENTRIES, datasets, cell_weights=WEIGHTS, data_seed=0, cache_dir=str(cache),
                          rank=0, world=1, device=torch.device("cpu"))


def epoch(run: TrialRun) -> dict:
    logs = run.train_epoch()
    evaluation, frames = run.evaluate()
    run.epoch += 1
    run.ranks.extend(frames)
    metrics = run.epoch_metrics(logs, evaluation)
    run.history.append(metrics)
    return metrics


def test_a_seed_trains_the_same_alone_or_beside_another(data) -> None:
    together, alone = build(data, (0, 1)), build(data, (1,))
    for _ in range(2):
        both, one = epoch(together), epoch(alone)
        mine = {k: v for k, v in both.items() if k.startswith("seed/1/")}
        assert mine and mine == {k: v for k, v in one.items() if k.startswith("seed/1/")}
        assert both["whm"] == pytest.approx((both["seed/0/whm"] + both["seed/1/whm"]) / 2)
    assert both["seed/0/whm"] != both["seed/1/whm"]  # the seeds really differ


def test_restored_state_continues_exactly(data) -> None:
    uninterrupted = build(data, (0, 1))
    first = epoch(uninterrupted)
    uninterrupted.timed(3.0, 5.0)  # the seconds spent before the kill
    buffer = io.BytesIO()
    torch.save(uninterrupted.state(uninterrupted.gather_randomness()), buffer)
    history, ranks = list(uninterrupted.history), ranks_frame(uninterrupted.ranks)
    second = epoch(uninterrupted)

    resumed = build(data, (0, 1))
    epoch(resumed)  # a different past (a second epoch-1 pass would differ)...
    buffer.seek(0)
    resumed.load_state(torch.load(buffer, weights_only=True), history, ranks)  # ...replaced by the checkpoint
    assert resumed.epoch == 1 and resumed.history == [first]
    assert epoch(resumed) == second
    assert ranks_frame(resumed.ranks).equals(ranks_frame(uninterrupted.ranks))
    # time and compute accumulate across the resume: the checkpoint's totals plus this process's
    assert resumed.timed(2.0, 1.5) == {"time/total_s": 5.0, "time/cpu_s": 6.5, "time/gpu_s": 0.0}


def test_ranks_hold_every_query_of_every_evaluation(data) -> None:
    run = build(data, (0,))
    epoch(run)
    frame = ranks_frame(run.ranks)
    datasets, _ = data
    assert (frame.groupby("split").size().to_dict()
            == {"test": len(datasets["css"].test.queries), "train": BUDGET.train_eval_queries})
    test = frame[frame["split"] == "test"]
    for k in (1, 10):  # the stored ranks give back the reported recall
        assert (test["rank"] < k).mean() == pytest.approx(run.history[-1][f"seed/0/recall/css/test@{k}"])


def test_the_probes_reuse_the_first_seeds_test_gallery_of_the_evaluation(data) -> None:
    from study.evaluation import embed_gallery
    from study.probes import probe_pictures

    run = build(data, (1, 0))  # seed 1 is the trial's first
    epoch(run)
    first = run.runs[1][0]
    first.model.eval()
    chunks = embed_gallery(first.model, first.share.images["test"], torch.device("cpu"))
    assert torch.equal(run.probe_galleries["css"], torch.cat([chunks[c] for c in sorted(chunks)]))
    again = probe_pictures(first, data_seed=0)  # embeds the gallery itself
    reused = probe_pictures(first, data_seed=0, gallery_emb=run.probe_galleries["css"])
    assert again.keys() == reused.keys() and all((again[k] == reused[k]).all() for k in again)
