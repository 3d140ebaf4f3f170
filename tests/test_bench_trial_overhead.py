"""bench/trial_overhead.py's arithmetic on hand-written result lines (no Ray, no torch): the share of
a trial's wall time outside training and evaluation, samples per second, the verdicts, the py-spy
summary, and the memory sampler on a real child process."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "trial_overhead.py"
_spec = importlib.util.spec_from_file_location("trial_overhead", BENCH)
trial_overhead = importlib.util.module_from_spec(_spec)
sys.modules["trial_overhead"] = trial_overhead  # dataclasses look their module up while it loads
_spec.loader.exec_module(trial_overhead)

# Three epochs of one trial as Tune writes them (only the fields the bench reads).
RESULTS = [
    {"epoch": 1, "time_total_s": 20.0, "time/epoch_s": 8.0, "time/train_s": 5.0, "time/probes_s": 0.5, "timestamp": 1020},
    {"epoch": 2, "time_total_s": 29.0, "time/epoch_s": 8.0, "time/train_s": 5.5, "time/probes_s": 0.5, "timestamp": 1029},
    {"epoch": 3, "time_total_s": 38.5, "time/epoch_s": 8.5, "time/train_s": 6.3, "time/probes_s": 0.5, "timestamp": 1039},
]


def test_time_split_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in RESULTS))
    split = trial_overhead.time_split(trial_overhead.read_results(path))
    # wall 38.5; inside = sum(epoch_s) = 8 + 8 + 8.5 = 24.5; outside = 14.0
    assert split.wall_s == 38.5
    assert split.train_s == pytest.approx(16.8)  # 5 + 5.5 + 6.3
    assert split.probes_s == pytest.approx(1.5)
    assert split.evaluation_s == pytest.approx(6.2)  # 24.5 - 16.8 - 1.5
    assert split.inside_s == pytest.approx(24.5)
    assert split.outside_s == pytest.approx(14.0)
    assert split.outside_share == pytest.approx(14.0 / 38.5)  # 0.3636...
    # first gap: 20 - 0 - 8 (start-up + epoch 1's checkpoint); then 29 - 20 - 8, 38.5 - 29 - 8.5
    assert split.gaps_s == pytest.approx((12.0, 1.0, 1.0))


def test_time_split_refuses_a_restarted_trial() -> None:
    with pytest.raises(ValueError, match=r"epochs \[1, 2, 1\]"):
        trial_overhead.time_split([*RESULTS[:2], RESULTS[0]])


def test_samples_per_second_by_hand() -> None:
    # 28 steps x 32 queries x 2 seeds = 1792 queries in 5.6 s
    assert trial_overhead.samples_per_second(28, 32, 2, 5.6) == pytest.approx(320.0)
    # all three epochs: 3 x 28 x 32 x 2 = 5376 queries over 5 + 5.5 + 6.3 = 16.8 s
    assert trial_overhead.platform_samples_per_second(RESULTS, [28, 28, 28], batch_size=32, seeds=2) \
        == pytest.approx(320.0)


def test_platform_rate_takes_each_epochs_own_steps() -> None:
    results = [{"epoch": 1, "time/train_s": 1.0}, {"epoch": 2, "time/train_s": 2.0}]
    # (10 + 20) steps x 4 queries x 1 seed = 120 queries in 3 s
    assert trial_overhead.platform_samples_per_second(results, [10, 20], batch_size=4, seeds=1) == pytest.approx(40.0)


def test_verdict_at_the_target_passes() -> None:
    assert trial_overhead.verdict(0.90, 0.90, at_least=True) == "PASS"
    assert trial_overhead.verdict(0.89, 0.90, at_least=True) == "MISS"
    assert trial_overhead.verdict(0.15, 0.15, at_least=False) == "PASS"
    assert trial_overhead.verdict(0.16, 0.15, at_least=False) == "MISS"


def test_training_windows_by_hand() -> None:
    # the trial started at or after 1020 - 20, 1029 - 29 and 1039 - 38.5: at 1000.5
    windows = trial_overhead.training_windows(RESULTS)
    expected = [(1012.5, 1017.5),  # 1000.5 + 20 - 8, then 5 s of training
                (1021.5, 1027.0),  # 1000.5 + 29 - 8, 5.5 s
                (1030.5, 1036.8)]  # 1000.5 + 38.5 - 8.5, 6.3 s
    assert windows == [pytest.approx(w) for w in expected]


def test_cpu_in_windows_by_hand() -> None:
    history = [(0.0, 0.0), (10.0, 5.0), (20.0, 5.0), (30.0, 15.0)]  # (time, cumulative CPU s)
    # 5..15: 2.5 -> 5.0 is 2.5 s; 25..40: 10.0 -> 15.0 (its last value after the last sample) is 5 s
    assert trial_overhead.cpu_in_windows(history, [(5.0, 15.0), (25.0, 40.0)]) == pytest.approx(7.5)
    assert trial_overhead.cpu_in_windows(history, [(-5.0, -1.0)]) == 0.0  # before it started


def test_stack_summary_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "worker.pyspy"
    path.write_text(
        "main;run_worker (study/train.py:115);TrialRun.train_epoch (study/trial_run.py:97);"
        "train_step (study/worker.py:89);Conv2d._conv_forward (torch/conv.py:3) 30\n"
        "main;run_worker (study/train.py:115);TrialRun.train_epoch (study/trial_run.py:97);"
        "_engine_run_backward (torch/graph.py:1) 10\n"
        "main;run_worker (study/train.py:120);TrialRun.evaluate (study/trial_run.py:105);"
        "SeedRun.evaluate (study/worker.py:180) 20\n"
        "main;run_worker (study/train.py:101);TrialRun.build (study/trial_run.py:83);"
        "SeedRun.build (study/worker.py:135);_find_and_load (<frozen importlib._bootstrap>:1) 16\n"
        "main;run_worker (study/train.py:150);save (torch/serialization.py:9) 4\n"
        "<module> (default_worker.py:1);Worker.main_loop (ray/worker.py:1069) 20\n"
    )
    lines = trial_overhead.stack_summary(path, top=2)
    assert lines[0].startswith("py-spy on the Train worker, 100 samples at 20 Hz")
    # "  seconds s share  label": seconds = samples / 20 Hz
    by_label = {label: (float(seconds), share) for seconds, _, share, label in (l.split(None, 3) for l in lines[1:10])}
    assert by_label["training (SeedRun.train_epoch)"] == (2.0, "40.0%")  # 30 + 10 samples
    assert by_label["evaluation"] == (1.0, "20.0%")
    # the import under TrialRun.build counts as building models, not as an import of the function's modules
    assert by_label["start-up: models and optimisers"] == (0.8, "16.0%")
    assert by_label["start-up: imports (the train function's modules)"] == (0.0, "0.0%")
    assert by_label["rest of the loop: checkpoints, report"] == (0.2, "4.0%")
    assert by_label["Ray's task loop (mostly waits in C++ that --nonblocking counts)"] == (1.0, "20.0%")
    assert by_label["other"] == (0.0, "0.0%")
    assert lines[-2].split() == ["75.0%", "Conv2d._conv_forward", "(torch/conv.py:3)"]  # 30 of training's 40
    assert lines[-1].split() == ["25.0%", "_engine_run_backward", "(torch/graph.py:1)"]


def test_memory_sampler_finds_the_worker_among_the_descendants() -> None:
    # a child whose command line names Train's worker, as Ray's process title does
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", trial_overhead.WORKER_TITLE])
    try:
        sampler = trial_overhead.MemorySampler(trial_overhead.psutil.Process().pid, interval=1.0, full_every=2)
        sampler.sample(full=True)
        sampler.sample(full=False)  # RSS and CPU only
    finally:
        child.kill()
        child.wait()
    peaks = sampler.peaks
    assert (peaks.samples, peaks.full_samples) == (2, 1)
    assert peaks.processes >= 2  # this process and the child
    assert peaks.worker_pid == child.pid
    assert 0 < peaks.worker_uss <= peaks.worker_pss <= peaks.worker_rss
    assert peaks.worker_pss < peaks.total_pss <= peaks.total_rss
    seen = sampler.seen[child.pid]
    assert len(seen.history) == 3 and seen.history[0] == (seen.started, 0.0)  # from its start, then 2 samples
