"""Study scheduling efficiency (issue 12): how much of a study's wall time its trial slots spend in
trials. Sixteen smoke-size configurations (bench/scheduling_efficiency.yaml: css at scale 0.01, one
seed, one epoch of 4 steps), two at a time, run through the real CLI,

    python -m study.run --space bench/scheduling_efficiency.yaml --budget smoke --storage <tmp> --cache-dir <tmp>

and efficiency = (sum over configurations of each configuration's own wall time / concurrency) /
the study's wall time. Target >= 0.85.

    python bench/scheduling_efficiency.py                  # about 8 minutes on a 2-core machine
    python bench/scheduling_efficiency.py --num-samples 4  # a quick look (the output says so)

What is measured, and from where:
- A configuration's own wall time is Tune's `time_total_s` in the last line of the trial's
  result.json: from the moment Tune first asks the trial's function for a result (its actor is up)
  to its last report, so the TorchTrainer's controller and worker start-up, the data, every epoch
  and every checkpoint are in it. trials.parquet's `wall_time_s` (the worker's own `time/total_s`)
  leaves the start-up out, so it is printed beside it but not used: at smoke size the start-up is
  most of a trial.
- The study's wall time is this process's clock around `python -m study.run`: its imports, the
  data, Ray's start and stop, every trial, the tables and the ranking.
- The timeline: study.run prints a line per trial event on stderr (study/progress.py), flushed as
  it happens; this bench stamps each line as it arrives. `started` is when Tune saw the trial's
  actor up, `finished` when Tune completed the trial: when its function returned (Train's workers
  shut down), or, where a finished trial's process is reused, at its last result, before the
  function returns: the Train run's shutdown then falls in the gap before the next trial.
  From these spans, every second of the two slots that no trial held is put in one of three
  places: the start of the study (before any trial had ended), between trials (a slot empty
  between one trial's end and the next one's start), and the end (after the last trial started);
  the seconds inside a span beyond the trial's own time are its tail (last report to the
  function's return). Slots x wall = own time + tails + the three idle parts, exactly.
- Other processes' share of the machine during the study (bench/contention.py) is printed, and a
  warning when it was over --max-contention: a busy machine stretches trials and gaps alike.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Iterable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.contention import CpuSampler  # noqa: E402

SPACE = Path(__file__).with_name("scheduling_efficiency.yaml")
TARGET = 0.85  # (sum of configurations' own wall times / concurrency) / study wall time, at least
ROOT = Path(__file__).resolve().parent.parent

# study/progress.py's event lines (after the "[elapsed state] " prefix when stderr is not a terminal)
_STARTED = re.compile(r"config (?P<config>\S+) \(trial (?P<trial>\S+)\) started$")
_RESULT = re.compile(r"config (?P<config>\S+) \(trial (?P<trial>\S+)\) epoch (?P<epoch>\d+)/")
_ENDED = re.compile(r"trial (?P<trial>\S+) (?P<status>stopped early, finished|finished|FAILED)")
_RESTARTED = re.compile(r"trial (?P<trial>\S+) lost its process")


class BenchError(RuntimeError):
    """The study did not give this bench what it measures from (a failed or restarted trial)."""


# ---------------------------------------------------------------- parsing what the study wrote


@dataclass(frozen=True)
class TrialSpan:
    """One trial as the driver saw it, in this bench's clock (time.time())."""

    trial_id: str
    config_id: str
    started: float  # Tune saw its actor up
    last_result: float | None  # Tune saw its last result
    ended: float  # Tune completed the trial (its function returned, or its last result with reused processes)
    status: str  # "finished", "stopped early, finished" or "FAILED"


def parse_events(lines: Iterable[tuple[float, str]], *, log: str = "study.run's stderr") -> dict[str, TrialSpan]:
    """Trial spans from (arrival time, line) pairs of study.run's stderr. A trial restarted after a
    lost process, started twice, or never ended is an error: its span would not be one run."""
    started: dict[str, tuple[str, float]] = {}
    results: dict[str, float] = {}
    spans: dict[str, TrialSpan] = {}
    for number, (stamp, line) in enumerate(lines, start=1):
        line = line.rstrip()
        if match := _STARTED.search(line):
            trial = match["trial"]
            if trial in started:
                raise BenchError(f"{log}, line {number}: trial {trial} started a second time; this bench measures "
                                 "a study without restarts: run it again on a quieter machine")
            started[trial] = (match["config"], stamp)
        elif match := _RESULT.search(line):
            results[match["trial"]] = stamp
        elif match := _ENDED.search(line):
            trial = match["trial"]
            if trial not in started:
                raise BenchError(f"{log}, line {number}: trial {trial} ended but its start was never printed")
            config, began = started[trial]
            spans[trial] = TrialSpan(trial, config, began, results.get(trial), stamp, match["status"])
        elif match := _RESTARTED.search(line):
            raise BenchError(f"{log}, line {number}: trial {match['trial']} lost its process and was restarted; "
                             "this bench measures a study without faults: run it again")
    open_trials = sorted(set(started) - set(spans))
    if open_trials:
        raise BenchError(f"{log}: trials {open_trials} started but never ended (was study.run stopped?)")
    return spans


@dataclass(frozen=True)
class TuneTime:
    trial_id: str
    config_id: str
    time_total_s: float  # Tune's clock: the function's first result request to its last report
    worker_s: float  # the worker's time/total_s (= trials.parquet's wall_time_s): the epochs only
    epochs: int


_TRIAL_DIR = re.compile(r"^run_trial_(?P<trial>[^_]+)_.*_(?P<date>\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})$")
_DATA_READY = re.compile(r"^\s+\S+: \d+ train / \d+ test images")  # study.run's line per prepared dataset


def read_created(study_dir: Path) -> dict[str, float]:
    """When Tune created each trial (time.time(), whole seconds): the date at the end of its
    folder's name, which Tune writes in local time as it creates the trial."""
    created = {}
    for path in study_dir.glob("run_trial_*"):
        if match := _TRIAL_DIR.match(path.name):
            created[match["trial"]] = datetime.strptime(match["date"], "%Y-%m-%d_%H-%M-%S").timestamp()
    return created


def data_ready(lines: Iterable[tuple[float, str]]) -> float | None:
    """When study.run had prepared its last dataset (the arrival of its last summary line)."""
    stamps = [stamp for stamp, line in lines if _DATA_READY.match(line)]
    return stamps[-1] if stamps else None


def read_tune_times(study_dir: Path) -> dict[str, TuneTime]:
    """The last line of each trial's result.json (Tune writes one line per reported epoch)."""
    times = {}
    for path in sorted(study_dir.glob("run_trial_*/result.json")):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        if not lines:
            raise BenchError(f"{path}: no result (the trial reported nothing)")
        try:
            last = json.loads(lines[-1])
            times[last["trial_id"]] = TuneTime(last["trial_id"], str(last.get("config_id", "?")),
                                               float(last["time_total_s"]), float(last.get("time/total_s", 0.0)),
                                               int(last.get("epoch", 0)))
        except (ValueError, KeyError) as error:
            raise BenchError(f"{path}, line {len(lines)}: not a Tune result with trial_id and time_total_s "
                             f"({error})") from None
    if not times:
        raise BenchError(f"{study_dir}: no run_trial_*/result.json; did the study run?")
    return times


# ---------------------------------------------------------------- the arithmetic


def efficiency(own_s: Sequence[float], concurrency: int, wall_s: float) -> float:
    """(sum of the configurations' own wall times / concurrency) / the study's wall time."""
    return sum(own_s) / concurrency / wall_s


@dataclass(frozen=True)
class IdleSlots:
    """Slot-seconds no trial held, by where they fell."""

    start_s: float  # before any trial had ended: the process, data, Ray, Tune, the first actors
    between_s: float  # a trial had ended and another was still to start
    end_s: float  # after the last trial started: the last trials' ends, tables, ranking, Ray's stop

    @property
    def total_s(self) -> float:
        return self.start_s + self.between_s + self.end_s


def idle_slots(spans: Sequence[tuple[float, float]], begin: float, end: float, concurrency: int) -> IdleSlots:
    """Integrates max(concurrency - running trials, 0) over [begin, end], piecewise between the
    spans' starts and ends. A moment before the first end is "start" (also when it is after the
    last start: a study of no more trials than slots), after the last start "end", else "between"."""
    if not spans:
        return IdleSlots((end - begin) * concurrency, 0.0, 0.0)
    first_end = min(e for _, e in spans)
    last_start = max(s for s, _ in spans)
    points = sorted({begin, end, *(t for span in spans for t in span if begin < t < end)})
    parts = {"start": 0.0, "between": 0.0, "end": 0.0}
    for a, b in zip(points, points[1:]):
        middle = (a + b) / 2
        running = sum(s <= middle < e for s, e in spans)
        where = "start" if middle < first_end else "end" if middle > last_start else "between"
        parts[where] += max(concurrency - running, 0) * (b - a)
    return IdleSlots(parts["start"], parts["between"], parts["end"])


def launches(spans: Sequence[tuple[float, float]], concurrency: int) -> list[tuple[int, float]]:
    """Each trial that had to wait for a slot: (its index in `spans`, when that slot was freed).
    With at most `concurrency` trials at once, the i-th trial to start (0-based, i >= concurrency)
    waited for the (i - concurrency)-th trial to end."""
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])
    ends = sorted(e for _, e in spans)
    return list(zip(order[concurrency:], ends))


def verdict(value: float, target: float) -> str:
    return "met" if value >= target else "missed"


# ---------------------------------------------------------------- running the study


@dataclass(frozen=True)
class StudyRun:
    """One run of study.run and what it left, in this bench's clock."""

    command: list[str]
    began: float
    ended: float
    lines: list[tuple[float, str]]  # stderr, stamped on arrival
    spans: dict[str, TrialSpan]
    tune: dict[str, TuneTime]
    created: dict[str, float]
    contention: float  # share of the machine other processes used meanwhile


def run_study(command: list[str], log: Path) -> tuple[list[tuple[float, str]], float, float, int]:
    """Runs study.run; returns its stderr lines stamped on arrival, its start and end (time.time())
    and its exit code. stderr is also written to `log`, stdout (the ranking) beside it."""
    lines: list[tuple[float, str]] = []
    began = time.time()
    with open(log, "w", buffering=1) as err, open(log.with_suffix(".stdout"), "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.PIPE, text=True, cwd=ROOT, bufsize=1)
        for line in process.stderr:
            lines.append((time.time(), line))
            err.write(line)
        code = process.wait()
    return lines, began, time.time(), code


def measure(work: Path, samples: int, space_name: str, *, runner: Sequence[str] = ("-m", "study.run")) -> StudyRun:
    """Runs the study (`runner`: how Python is told to run study.run) and reads what it left."""
    command = [sys.executable, *runner, "--space", str(SPACE), "--budget", "smoke",
               "--num-samples", str(samples), "--storage", str(work / "studies"), "--cache-dir", str(work / "cache")]
    with CpuSampler() as sampler:
        lines, began, ended, code = run_study(command, work / "study.log")
    contention = sampler.share(began, ended)
    if code != 0:
        tail = "".join(line for _, line in lines[-30:])
        raise BenchError(f"study.run exited {code}; the end of its stderr ({work / 'study.log'}):\n{tail}")
    study_dir = work / "studies" / space_name
    spans = parse_events(lines, log=str(work / "study.log"))
    tune = read_tune_times(study_dir)
    unmatched = sorted(set(spans) ^ set(tune))
    if unmatched:
        raise BenchError(f"trials {unmatched} are in only one of study.run's event lines and {study_dir}'s "
                         "result.json files")
    return StudyRun(command, began, ended, lines, spans, tune, read_created(study_dir), contention)


def report(run: StudyRun, concurrency: int) -> None:
    """The figure against its target, then where the slots' time went."""
    wall = run.ended - run.began
    spans, tune = run.spans, run.tune
    own = [tune[t].time_total_s for t in spans]
    worker = [tune[t].worker_s for t in spans]
    span_s = [s.ended - s.started for s in spans.values()]
    figure = efficiency(own, concurrency, wall)
    print(f"{'figure':62s} {'measured':>9s} {'target':>8s}")
    print(f"{'(sum of own wall times / concurrency) / study wall time':62s} {figure:9.3f} {'>= ' + str(TARGET):>8s}  "
          f"{verdict(figure, TARGET)}")
    print(f"  = ({sum(own):.1f} s / {concurrency}) / {wall:.1f} s;  own wall time = Tune's time_total_s per trial "
          f"(function start to last report, worker start-up included)")
    print(f"  the same with trials.parquet's wall_time_s (epochs only, no start-up): "
          f"{efficiency(worker, concurrency, wall):.3f} ({sum(worker):.1f} s, {sum(worker) / sum(own):.0%} of Tune's)")
    print(f"  the same with the driver's started->finished spans (tails included): "
          f"{efficiency(span_s, concurrency, wall):.3f} ({sum(span_s):.1f} s)")

    pairs = [(s.started, s.ended) for s in spans.values()]
    idle = idle_slots(pairs, run.began, run.ended, concurrency)
    tails = [s.ended - s.started - tune[t].time_total_s for t, s in spans.items()]
    slot_s = concurrency * wall
    first_start, last_end = min(s for s, _ in pairs), max(e for _, e in pairs)
    print(f"\nwhere the {concurrency} slots x {wall:.1f} s = {slot_s:.1f} slot-s went:")
    rows = [
        ("configurations' own time (Tune's time_total_s)", sum(own)),
        ("trial tails: last report -> Tune completed the trial (and actor up -> first result request)", sum(tails)),
        (f"idle, start of study: process start -> first trial started at +{first_start - run.began:.1f} s, and "
         "slots empty until a trial had ended", idle.start_s),
        ("idle, between trials: a slot empty between one trial's end and the next one's start", idle.between_s),
        (f"idle, end of study: after the last trial started; last trial ended at +{last_end - run.began:.1f} s, "
         f"process at +{wall:.1f} s", idle.end_s),
    ]
    for label, seconds in rows:
        print(f"  {seconds:7.1f} slot-s {seconds / slot_s:6.1%}  {label}")
    rest = slot_s - sum(seconds for _, seconds in rows)
    print(f"  {rest:7.1f} slot-s {rest / slot_s:6.1%}  unaccounted (trials overlapping in the driver's clock)")

    ready = data_ready(run.lines)
    first_created = min(run.created.values(), default=None)
    print("start of study: " + ", ".join(
        f"{label} at +{stamp - run.began:.1f} s" for label, stamp in (
            ("datasets prepared", ready), ("Tune created the first trial", first_created),
            ("the first trial's actor was up", first_start)) if stamp is not None))
    ids = list(spans)
    waited = [(ids[i], freed) for i, freed in launches(pairs, concurrency)]
    if waited:
        gaps = [spans[t].started - freed for t, freed in waited]
        print(f"a slot stood empty between a trial's end and the next start: median {median(gaps):.1f} s, max "
              f"{max(gaps):.1f} s, over {len(gaps)} starts ({', '.join(f'{g:.1f}' for g in gaps)})")
        if all(t in run.created for t, _ in waited):
            made = [run.created[t] - freed for t, freed in waited]
            up = [spans[t].started - run.created[t] for t, _ in waited]
            print(f"  of which: Tune created the next trial {median(made):+.1f} s after the end (median; its folder "
                  f"name has whole seconds), and its actor (a new process: imports, the trainable's setup; or a "
                  f"finished trial's, reused) was up "
                  f"{median(up):.1f} s after that (median, max {max(up):.1f} s)")
    print(f"trial tails (last report -> Tune completed the trial): median {median(tails):.1f} s, max {max(tails):.1f} s")
    print(f"per configuration, own time (Tune) / worker's epochs: median {median(own):.1f} / {median(worker):.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-samples", type=int, default=None,
                        help="configurations (default: the space's 16; fewer is a quicker, noisier look)")
    parser.add_argument("--workdir", type=Path, help="keep the study, its logs and the cache here "
                                                     "(default: a temporary folder, removed afterwards)")
    parser.add_argument("--max-contention", type=float, default=0.05,
                        help="warn when other processes used more than this share of the machine during the study")
    args = parser.parse_args()
    if args.num_samples is not None and args.num_samples < 1:
        parser.error(f"--num-samples must be a positive integer, got {args.num_samples}")

    from study.space import load_space

    space = load_space(SPACE)
    budget = space.budgets["smoke"]
    samples = args.num_samples or budget.num_samples
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cirstudy-scheduling-") as scratch:
        work = args.workdir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        try:
            run = measure(work, samples, space.name)
        except BenchError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    load_after = os.getloadavg()

    print(f"command: python {' '.join(sys.argv)}")
    print(f"study:   {' '.join(run.command[1:])}")
    print(f"scheduling efficiency (issue 12): {len(run.spans)} configurations of {SPACE.name} (budget smoke: "
          f"{budget.epochs} epoch(s), scale {budget.scale}, {len(space.seeds)} seed), {budget.max_concurrent} at a time"
          + ("" if samples == budget.num_samples else f"  (--num-samples {samples}: not the issue's 16)"))
    print(f"machine: {os.cpu_count()} cores; {date}; load average {load_before[0]:.1f} before, {load_after[0]:.1f} "
          f"after; other processes used {run.contention:.0%} of the machine during the study"
          + (f"  WARNING: contended (limit {args.max_contention:.0%}), trials and gaps are stretched"
             if run.contention > args.max_contention else ""))
    print()
    report(run, budget.max_concurrent)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
