"""The query level of the hierarchical bootstrap against direct loops through study.metrics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import study.stats.bootstrap as bootstrap
from study.metrics import recall_from_ranks, whm
from study.stats.bootstrap import (Cells, bootstrap_recalls, cell_recalls, query_indices,
                                   recalls_for_indices, whm_of)

CELLS = Cells.from_weights({"css/test@1": 1.0, "css/test@5": 2.0, "states/test@2": 1.0,
                            "css/train@1": 0.0})  # weight 0: not a cell of the score


def ranks_of(rng: np.random.Generator, n_seeds: int) -> dict[tuple[str, str], np.ndarray]:
    return {("css", "test"): rng.integers(0, 12, (n_seeds, 7)),
            ("states", "test"): rng.integers(0, 5, (n_seeds, 4))}


def test_cells_drop_weight_zero_and_group_by_dataset_and_split():
    assert CELLS.names == ("css/test@1", "css/test@5", "states/test@2")
    assert CELLS.ks == (1, 5, 2) and CELLS.datasets == ("css", "states")
    assert CELLS.by_group() == {("css", "test"): [0, 1], ("states", "test"): [2]}
    with pytest.raises(ValueError, match="no cell has weight > 0"):
        Cells.from_weights({"css/test@1": 0.0})
    with pytest.raises(ValueError, match="not '<dataset>/<split>@<k>'"):
        Cells.from_weights({"css@1": 1.0})


def test_whm_of_equals_metrics_whm():
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 1, (50, 3))
    values[3, 1] = 0.0  # a zero recall zeroes the WHM
    weights = [1.0, 2.0, 0.5]
    expected = [whm(list(v), weights) for v in values]
    assert whm_of(values, weights) == pytest.approx(expected, abs=1e-15)
    assert whm_of(values, weights)[3] == 0.0
    assert whm_of([0.5, 0.25], [1.0, 1.0]) == pytest.approx(2 / (2 + 4))  # by hand: 1/3


def test_cell_recalls_equal_recall_from_ranks():
    ranks = ranks_of(np.random.default_rng(1), 3)
    got = cell_recalls(ranks, CELLS)  # (3 seeds, 3 cells)
    for s in range(3):
        css = recall_from_ranks(torch.as_tensor(ranks[("css", "test")][s]), [1, 5])
        states = recall_from_ranks(torch.as_tensor(ranks[("states", "test")][s]), [2])
        assert got[s].tolist() == pytest.approx([css[1], css[5], states[2]], abs=1e-15)


def test_paired_bootstrap_equals_a_direct_loop():
    """Same indices: per draw, every seed of both arms is scored on the same resampled queries."""
    rng = np.random.default_rng(2)
    x, y = ranks_of(rng, 3), ranks_of(rng, 3)
    indices = {g: rng.integers(0, r.shape[-1], (6, r.shape[-1])) for g, r in x.items()}
    weights = list(CELLS.weights)
    diff = (whm_of(recalls_for_indices(x, CELLS, indices), weights)
            - whm_of(recalls_for_indices(y, CELLS, indices), weights)).mean(axis=-1)  # (6 draws,)
    for b in range(6):
        per_seed = []
        for s in range(3):
            scores = []
            for arm in (x, y):
                css = recall_from_ranks(torch.as_tensor(arm[("css", "test")][s][indices[("css", "test")][b]]), [1, 5])
                states = recall_from_ranks(torch.as_tensor(arm[("states", "test")][s][indices[("states", "test")][b]]), [2])
                scores.append(whm([css[1], css[5], states[2]], weights))
            per_seed.append(scores[0] - scores[1])
        assert diff[b] == pytest.approx(sum(per_seed) / 3, abs=1e-12)


def test_bootstrap_recalls_draws_query_indices_in_chunks(monkeypatch):
    ranks = ranks_of(np.random.default_rng(3), 2)
    whole = bootstrap_recalls(ranks, CELLS, n_draws=9, seed=5)
    monkeypatch.setattr(bootstrap, "_CHUNK_FLOATS", 14)  # 2 draws per chunk
    assert np.array_equal(bootstrap_recalls(ranks, CELLS, n_draws=9, seed=5), whole)
    indices = {g: query_indices(g, r.shape[-1], 9, seed=5) for g, r in ranks.items()}
    assert np.array_equal(recalls_for_indices(ranks, CELLS, indices), whole)
    # the same dataset gets the same resamples in every configuration: paired draws
    other = ranks_of(np.random.default_rng(4), 2)
    again = {g: query_indices(g, r.shape[-1], 9, seed=5) for g, r in other.items()}
    assert all(np.array_equal(indices[g], again[g]) for g in indices)
    assert not np.array_equal(indices[("css", "test")][:, :4], indices[("states", "test")])
