"""bench/dp_scaling.py's parsing and arithmetic, without Ray or training: rank 0's epoch record,
the steady epochs, leaving contended epochs out, keeping the lockstep run apart from the 2-worker
one, and the scaling figure by hand."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "dp_scaling.py"
_spec = importlib.util.spec_from_file_location("dp_scaling", BENCH)
bench = importlib.util.module_from_spec(_spec)
sys.modules["dp_scaling"] = bench  # dataclasses look their module up while it loads
_spec.loader.exec_module(bench)

RECORD = [  # what rank 0 writes for a 2-worker run of 3 epochs
    {"epoch": 1, "began": 100.0, "ended": 110.0, "steps": 28, "samples": 896, "cpu_s": [9.0, 8.5]},
    {"epoch": 2, "began": 110.5, "ended": 117.5, "steps": 28, "samples": 896, "cpu_s": [6.9, 6.8]},
    {"epoch": 3, "began": 118.0, "ended": 126.0, "steps": 28, "samples": 896, "cpu_s": [7.9, 7.7]},
]


def test_parse_epochs_reads_rank_zeros_record() -> None:
    assert bench.parse_epochs(json.dumps(RECORD), workers=2, round=1) == RECORD


@pytest.mark.parametrize("text, message", [
    ("{not json", r"2 worker\(s\), round 3: not JSON"),
    ("[]", "expected a non-empty list of epochs"),
    (json.dumps([{"epoch": 1, "began": 1.0, "ended": 2.0, "samples": 8}]), r"lacks \['cpu_s'\]"),
    (json.dumps([{**RECORD[0], "ended": 99.0}]), "epoch 1: needs ended > began and samples > 0"),
    (json.dumps([{**RECORD[0], "samples": 0}]), "epoch 1: needs ended > began and samples > 0"),
    (json.dumps([{**RECORD[0], "cpu_s": [9.0]}]), "epoch 1: 1 ranks' CPU times, expected 2"),
])
def test_parse_epochs_names_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bench.parse_epochs(text, workers=2, round=3)


def _epoch(workers: int, epoch: int, seconds: float, contention: float = 0.0, samples: int = 896) -> "bench.Epoch":
    return bench.Epoch(workers=workers, round=1, epoch=epoch, seconds=seconds, samples=samples,
                       cpu_s=(seconds,) * workers, contention=contention)


def test_rate_work_and_cores_by_hand() -> None:
    epoch = bench.Epoch(workers=2, round=1, epoch=2, seconds=8.0, samples=896, cpu_s=(7.0, 6.44), contention=0.0)
    assert epoch.rate == pytest.approx(112.0)  # 896 / 8
    assert epoch.cpu_per_1000 == pytest.approx(15.0)  # 1000 x 13.44 / 896
    assert epoch.cores_used == pytest.approx(1.68)  # 13.44 / 8


def test_steady_leaves_out_each_runs_first_epoch() -> None:
    epochs = [_epoch(1, 1, 20.0), _epoch(1, 2, 14.0), _epoch(2, 1, 12.0), _epoch(2, 2, 8.0), _epoch(2, 3, 7.0)]
    assert [(e.workers, e.epoch) for e in bench.steady(epochs)] == [(1, 2), (2, 2), (2, 3)]


def test_kept_leaves_out_contended_epochs_while_a_clean_one_remains() -> None:
    clean, busy = _epoch(2, 2, 8.0, contention=0.02), _epoch(2, 3, 12.0, contention=0.30)
    assert bench.kept([clean, busy], 0.05) == ([clean], True)
    assert bench.kept([busy], 0.05) == ([busy], False)  # nothing clean: all kept, and said so
    assert bench.kept([_epoch(2, 2, 8.0, contention=0.05)], 0.05)[1]  # at the limit is clean


def test_scaling_by_hand() -> None:
    # 1 worker: 896 samples in 14, 16, 15 s -> median 59.73 samples/s; 2 workers: in 8, 7, 9 s -> 112
    one = [896 / 14, 896 / 16, 896 / 15]
    two = [896 / 8, 896 / 7, 896 / 9]
    assert bench.scaling(one, two) == pytest.approx(15 / 8)  # 1.875
    assert bench.verdict(1.6, 1.6) == "met" and bench.verdict(1.59, 1.6) == "missed"


def test_cpu_bound_by_hand() -> None:
    # 13.2 CPU-s per 1,000 samples alone, 16.5 with 2 workers: 2 cores do 2000 / 16.5 samples per s
    # where 1 core did 1000 / 13.2
    assert bench.cpu_bound(13.2, 16.5) == pytest.approx(1.6)
    assert bench.cpu_bound(10.0, 10.0) == 2.0  # no added work: perfect scaling


def test_budget_keeps_the_global_batch_at_every_worker_count() -> None:
    one, two = bench.budget_for(1, scale=0.05), bench.budget_for(2, scale=0.05)
    assert (one.batch_size, two.batch_size) == (32, 32)
    assert (one.rank_batch_size, two.rank_batch_size) == (32, 16)
    assert (one.threads_per_worker, two.threads_per_worker, two.cpus_per_worker) == (1, 1, 1.0)


def test_lockstep_workers_each_train_one_ranks_share_alone() -> None:
    alone = bench.lockstep_budget(scale=0.05)
    assert (alone.workers_per_trial, alone.batch_size, alone.rank_batch_size) == (1, 16, 16)
    assert bench.RUNS["lockstep"] == (2, True)  # two of them at once, on the 2 nodes


def test_by_run_keeps_lockstep_apart_from_two_workers() -> None:
    def epoch(workers: int, number: int, seconds: float, lockstep: bool = False) -> "bench.Epoch":
        return bench.Epoch(workers=workers, round=1, epoch=number, seconds=seconds, samples=896,
                           cpu_s=(seconds,) * workers, contention=0.0, lockstep=lockstep)

    epochs = [epoch(1, 1, 20.0), epoch(1, 2, 14.0), epoch(2, 1, 12.0), epoch(2, 2, 8.0),
              epoch(2, 1, 11.0, lockstep=True), epoch(2, 2, 7.0, lockstep=True), epoch(2, 3, 6.0, lockstep=True)]
    runs = bench.by_run(epochs, max_contention=0.05)
    assert [e.seconds for e in runs["1 worker"][0]] == [14.0]
    assert [e.seconds for e in runs["2 workers"][0]] == [8.0]
    assert [e.seconds for e in runs["lockstep"][0]] == [7.0, 6.0]
