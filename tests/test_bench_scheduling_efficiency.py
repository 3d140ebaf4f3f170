"""bench/scheduling_efficiency.py's parsing and arithmetic, without Ray: trial spans from
study.run's event lines (as study/progress.py prints them), Tune's times from result.json files,
the efficiency by hand, and the idle slot-seconds against a brute-force sum over a fine grid."""
from __future__ import annotations

import importlib.util
import json
import random
import sys
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "scheduling_efficiency.py"
_spec = importlib.util.spec_from_file_location("scheduling_efficiency", BENCH)
bench = importlib.util.module_from_spec(_spec)
sys.modules["scheduling_efficiency"] = bench  # dataclasses look their module up while it loads
_spec.loader.exec_module(bench)

PREFIX = "[1m02s 0/4 trials done, 2 running, 0 stopped early, best -] "
LINES = [  # (arrival time, line) as study.run's stderr gives them
    (0.0, "preparing dataset css (scale 0.01) ...\n"),
    (10.0, PREFIX + "config c0000 (trial aaa) started\n"),
    (11.0, PREFIX + "config c0001 (trial bbb) started\n"),
    (40.0, PREFIX + "config c0000 (trial aaa) epoch 1/1: seed-mean whm 0.0281  css/test@1 0.011\n"),
    (42.0, PREFIX + "trial aaa finished\n"),
    (45.0, PREFIX + "config c0001 (trial bbb) epoch 1/1: seed-mean whm 0.0277  css/test@1 0.011\n"),
    (46.0, PREFIX + "trial bbb stopped early, finished\n"),
    (50.0, PREFIX + "config c0002 (trial ccc) started\n"),
    (70.0, PREFIX + "trial ccc FAILED: see /tmp/x/error.txt\n"),
]


def test_parse_events_by_hand() -> None:
    spans = bench.parse_events(LINES)
    assert set(spans) == {"aaa", "bbb", "ccc"}
    assert spans["aaa"] == bench.TrialSpan("aaa", "c0000", 10.0, 40.0, 42.0, "finished")
    assert spans["bbb"] == bench.TrialSpan("bbb", "c0001", 11.0, 45.0, 46.0, "stopped early, finished")
    assert spans["ccc"] == bench.TrialSpan("ccc", "c0002", 50.0, None, 70.0, "FAILED")


def test_parse_events_refuses_what_is_not_one_run() -> None:
    restarted = [*LINES[:2], (5.0, PREFIX + "trial aaa lost its process (a node died?): restarting it\n")]
    with pytest.raises(bench.BenchError, match=r"log, line 3: trial aaa lost its process"):
        bench.parse_events(restarted, log="log")
    twice = [*LINES[:2], LINES[1]]
    with pytest.raises(bench.BenchError, match=r"line 3: trial aaa started a second time"):
        bench.parse_events(twice)
    with pytest.raises(bench.BenchError, match=r"trials \['aaa'\] started but never ended"):
        bench.parse_events(LINES[:2])
    with pytest.raises(bench.BenchError, match=r"line 1: trial zzz ended but its start was never printed"):
        bench.parse_events([(0.0, "trial zzz finished")])


def test_parse_events_reads_what_study_progress_prints(capsys) -> None:
    """The real ProgressCallback's lines (stderr not a terminal), so a change of its format shows here."""
    from study.progress import ProgressCallback
    from study.trial_config import CONFIG_ID, UNTIL

    callback = ProgressCallback(epochs=2)
    callback.setup(total_num_samples=2)
    one = SimpleNamespace(trial_id="t1", config={CONFIG_ID: "c0007", UNTIL: 2}, status="RUNNING", path="/x")
    two = SimpleNamespace(trial_id="t2", config={CONFIG_ID: "b0001", UNTIL: 2}, status="RUNNING", path="/y")
    callback.on_trial_start(0, [one, two], one)
    callback.on_trial_start(0, [one, two], two)
    callback.on_trial_result(0, [one, two], one, {"epoch": 1, "whm": 0.5})
    callback.on_trial_complete(0, [one, two], one)  # stopped early: its last epoch 1 < 2
    callback.on_trial_error(0, [one, two], two)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 5
    spans = bench.parse_events([(float(i), line) for i, line in enumerate(lines)])
    assert spans["t1"] == bench.TrialSpan("t1", "c0007", 0.0, 2.0, 3.0, "stopped early, finished")
    assert spans["t2"] == bench.TrialSpan("t2", "b0001", 1.0, None, 4.0, "FAILED")


def _result_lines(*results: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in results)


def test_read_tune_times_takes_each_trials_last_line(tmp_path: Path) -> None:
    (tmp_path / "run_trial_aaa_1_K=2").mkdir()
    (tmp_path / "run_trial_aaa_1_K=2" / "result.json").write_text(_result_lines(
        {"trial_id": "aaa", "config_id": "c0000", "epoch": 1, "time_total_s": 50.0, "time/total_s": 4.0},
        {"trial_id": "aaa", "config_id": "c0000", "epoch": 2, "time_total_s": 57.5, "time/total_s": 9.0},
    ))
    (tmp_path / "run_trial_bbb_2_K=4").mkdir()
    (tmp_path / "run_trial_bbb_2_K=4" / "result.json").write_text(_result_lines(
        {"trial_id": "bbb", "config_id": "c0001", "epoch": 1, "time_total_s": 61.0, "time/total_s": 6.0}))
    times = bench.read_tune_times(tmp_path)
    assert times == {"aaa": bench.TuneTime("aaa", "c0000", 57.5, 9.0, 2), "bbb": bench.TuneTime("bbb", "c0001", 61.0, 6.0, 1)}


def test_read_tune_times_names_the_broken_file(tmp_path: Path) -> None:
    with pytest.raises(bench.BenchError, match="no run_trial_"):
        bench.read_tune_times(tmp_path)
    trial = tmp_path / "run_trial_aaa_1"
    trial.mkdir()
    (trial / "result.json").write_text(_result_lines({"trial_id": "aaa", "time_total_s": 1.0}) + '{"trial_id": "aaa"}\n')
    with pytest.raises(bench.BenchError, match=r"run_trial_aaa_1/result.json, line 2: .*time_total_s"):
        bench.read_tune_times(tmp_path)
    (trial / "result.json").write_text("\n")
    with pytest.raises(bench.BenchError, match=r"run_trial_aaa_1/result.json: no result"):
        bench.read_tune_times(tmp_path)


def test_efficiency_by_hand() -> None:
    # 4 trials of 30 s on 2 slots: 60 s of work per slot in a 75 s study
    assert bench.efficiency([30.0] * 4, 2, 75.0) == pytest.approx(0.8)
    assert bench.efficiency([30.0] * 4, 2, 60.0) == pytest.approx(1.0)
    assert bench.verdict(0.85, 0.85) == "met" and bench.verdict(0.849, 0.85) == "missed"


# the timeline of LINES: the process ran 0..80 s; trials aaa 10-42, bbb 11-46, ccc 50-70
SPANS = [(10.0, 42.0), (11.0, 46.0), (50.0, 70.0)]


def test_idle_slots_by_hand() -> None:
    idle = bench.idle_slots(SPANS, 0.0, 80.0, 2)
    # start (before the first end at 42): 0-10 both slots (20), 10-11 one slot (1)
    assert idle.start_s == pytest.approx(21.0)
    # between (42 .. the last start at 50): 42-46 one slot (4), 46-50 both (8)
    assert idle.between_s == pytest.approx(12.0)
    # end (after 50): 50-70 one slot (20), 70-80 both (20)
    assert idle.end_s == pytest.approx(40.0)
    # slots x wall = the spans + the idle parts
    assert sum(e - s for s, e in SPANS) + idle.total_s == pytest.approx(2 * 80.0)


def test_idle_slots_against_a_brute_force_grid() -> None:
    """Random integer timelines of at most 2 trials at once; a 0.5 s grid's midpoints are exact."""
    rng = random.Random(0)
    for _ in range(50):
        spans, free = [], [rng.randint(0, 20), rng.randint(0, 20)]  # when each slot is next free
        for _ in range(rng.randint(1, 7)):
            slot = min(range(2), key=lambda i: free[i])
            start = free[slot] + rng.randint(0, 6)
            end = start + rng.randint(1, 30)
            spans.append((float(start), float(end)))
            free[slot] = end
        begin, finish = 0.0, float(max(e for _, e in spans) + rng.randint(0, 10))
        first_end, last_start = min(e for _, e in spans), max(s for s, _ in spans)
        brute = {"start": 0.0, "between": 0.0, "end": 0.0}
        t = begin + 0.25
        while t < finish:
            running = sum(s <= t < e for s, e in spans)
            where = "start" if t < first_end else "end" if t > last_start else "between"
            brute[where] += max(2 - running, 0) * 0.5
            t += 0.5
        idle = bench.idle_slots(spans, begin, finish, 2)
        assert (idle.start_s, idle.between_s, idle.end_s) == pytest.approx(
            (brute["start"], brute["between"], brute["end"])), spans


def test_idle_slots_without_trials_is_all_start() -> None:
    assert bench.idle_slots([], 0.0, 10.0, 2) == bench.IdleSlots(20.0, 0.0, 0.0)


def test_launches_by_hand() -> None:
    # ccc (index 2), the third to start, took the slot aaa left at 42
    assert bench.launches(SPANS, 2) == [(2, 42.0)]
    more = [(0.0, 10.0), (0.0, 12.0), (21.0, 25.0), (13.0, 20.0), (15.0, 30.0)]
    # ends sorted 10, 12, 20, 25, 30; the 3rd..5th to start (13: index 3, 15: index 4, 21: index 2)
    # took the slots freed at 10, 12 and 20
    assert bench.launches(more, 2) == [(3, 10.0), (4, 12.0), (2, 20.0)]
    assert bench.launches(more[:2], 2) == []


def test_read_created_from_tunes_folder_names(tmp_path: Path) -> None:
    (tmp_path / "run_trial_3c9d29cd_4_K=8,config=c0003,role=searched,until=1,composer=concat_2026-12-02_02-39-07").mkdir()
    (tmp_path / "run_trial_1bc085e1_3_K=8,composer=image_only_2026-12-02_02-39-05").mkdir()
    (tmp_path / "run_trial_no_date").mkdir()
    created = bench.read_created(tmp_path)
    assert set(created) == {"3c9d29cd", "1bc085e1"}
    assert created["3c9d29cd"] - created["1bc085e1"] == 2.0
    local = datetime(2026, 12, 2, 2, 39, 7).timestamp()  # Tune names folders in local time
    assert created["3c9d29cd"] == local


def test_data_ready_is_the_last_datasets_summary_line() -> None:
    lines = [(1.0, "preparing dataset css (scale 0.01) ...\n"),
             (5.0, "  css: 190 train / 191 test images at 64 px, 180 / 181 queries (4.3s)\n"),
             (9.0, "  states: 90 train / 91 test images at 64 px, 80 / 81 queries (4.0s)\n"),
             (10.0, PREFIX + "config c0000 (trial aaa) started\n")]
    assert bench.data_ready(lines) == 9.0
    assert bench.data_ready(lines[:1]) is None


def test_report_prints_the_figure_and_accounts_for_every_slot_second(capsys) -> None:
    spans = bench.parse_events(LINES)
    tune = {"aaa": bench.TuneTime("aaa", "c0000", 30.0, 3.0, 1), "bbb": bench.TuneTime("bbb", "c0001", 33.0, 3.0, 1),
            "ccc": bench.TuneTime("ccc", "c0002", 18.0, 0.0, 0)}
    created = {"aaa": 8.0, "bbb": 8.0, "ccc": 43.0}
    run = bench.StudyRun(command=["python"], began=0.0, ended=80.0, lines=LINES, spans=spans, tune=tune,
                         created=created, contention=0.0)
    bench.report(run, 2)
    out = capsys.readouterr().out
    # (30 + 33 + 18) / 2 / 80 = 0.50625
    figure = next(line for line in out.splitlines() if line.startswith("(sum of own wall times"))
    assert figure.split()[-4:] == ["0.506", ">=", "0.85", "missed"]
    # own 81; tails (32 - 30) + (35 - 33) + (20 - 18) = 6; idle 21, 12, 40 (test_idle_slots_by_hand); nothing left
    values = [float(line.split()[0]) for line in out.splitlines() if line.split()[1:2] == ["slot-s"]]
    assert values == [81.0, 6.0, 21.0, 12.0, 40.0, 0.0]
    # ccc waited 50 - 42 = 8 s: created 1 s after aaa's end, its actor up 7 s later
    assert "median 8.0 s, max 8.0 s, over 1 starts (8.0)" in out
    assert "created the next trial +1.0 s after the end" in out and "was up 7.0 s after that" in out
    assert "datasets prepared" not in out  # LINES has no dataset summary line
