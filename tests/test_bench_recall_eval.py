"""bench/recall_eval.py at a tiny size: its three methods (our evaluation, recalls from a bare
topk, TIRG's full-matrix-and-argsort procedure) give identical recalls, so the benchmark compares
the speed of equal answers. No timing assertions."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

PATH = Path(__file__).resolve().parent.parent / "bench" / "recall_eval.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("recall_eval", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


KS = [1, 5, 10, 50]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_three_methods_give_identical_recalls(bench, seed):
    problem = bench.make_problem(300, 400, 16, seed=seed, noise=1.0)
    ours = bench.evaluate("ours", problem, KS, chunk_size=64)
    assert 0.0 < ours[1] < ours[50] < 1.0  # not a vacuous comparison: hits and misses at every K
    assert bench.evaluate("bare topk", problem, KS) == ours
    assert bench.evaluate("tirg", problem, KS) == ours


def test_source_removal_and_duplicate_labels_matter(bench):
    """The problem exercises both rules: without removal the source would often rank first, and
    some hits are a duplicate of the target's label rather than the target itself."""
    problem = bench.make_problem(300, 400, 16, seed=0, noise=1.0)
    first = (problem.queries @ problem.gallery.T).argmax(dim=1)
    assert (first == problem.sources).float().mean() > 0.2
    labels = problem.labels
    assert (labels.bincount() > 1).any()
    ranked = bench.score_bare(problem, KS, 0)
    hit_not_target = (labels[ranked] == labels[problem.targets][:, None]) & (ranked != problem.targets[:, None])
    assert hit_not_target.any()


def test_all_methods_rank_the_same_unit_vectors(bench):
    """Ours normalises the raw features itself; that must give the others' inputs bit for bit."""
    problem = bench.make_problem(300, 400, 16, seed=0)
    assert torch.equal(F.normalize(problem.raw_queries, dim=1), problem.queries)
    assert torch.equal(F.normalize(problem.raw_gallery, dim=1), problem.gallery)


def test_recalls_from_topk_drop_the_source_and_hit_by_label(bench):
    """By hand: gallery labels [a, b, a, c]; query 0's source is item 0 (ranked first), its target
    item 2 (label a), so after the source the first label-a item is at rank 1."""
    empty = torch.zeros(2, 2)
    problem = bench.Problem(raw_queries=empty, raw_gallery=empty, queries=empty, gallery=empty,
                            sources=torch.tensor([0, 3]), targets=torch.tensor([2, 1]),
                            labels=torch.tensor([0, 1, 0, 2]))
    indices = torch.tensor([[0, 1, 2], [3, 0, 2]])  # query 1: source first, then no label-b item
    assert bench.recalls_from_topk(problem, indices, [1, 2]) == {1: 0.0, 2: 0.5}


def test_measure_reports_time_memory_and_recalls(bench):
    problem = bench.make_problem(100, 120, 8, seed=0, noise=1.0)
    for method in bench.METHODS:
        result = bench.measure(method, problem, KS, 32)
        assert result["seconds"] > 0 and result["extra_mib"] >= 0
        assert result["recalls"] == {str(k): v for k, v in bench.evaluate("ours", problem, KS).items()}
