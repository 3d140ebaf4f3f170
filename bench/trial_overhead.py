"""What one trial costs inside the platform beyond its own computation (issue 12, three rows): one
configuration (bench/trial_overhead.yaml: tirg, no regulariser, css, small_cnn, batch 32, the
default budget) run as a real study with `python -m study.run`, against a bare PyTorch loop over
the same model and the same batches measured in the same run. Prints a table of figure, measured,
target, PASS/MISS, and the machine.

    python bench/trial_overhead.py                     # about 7 minutes on a 2-core machine
    python bench/trial_overhead.py --seeds 1           # a shorter study (the figures say so)
    python bench/trial_overhead.py --py-spy            # also sample the Train worker's stacks

The figures:
- training samples/s inside the platform: (steps per epoch x batch x seeds) / `time/train_s`, summed
  over the epochs of the trial's result.json. `time/train_s` is the Ray Train worker's
  `TrialRun.train_epoch`: every seed's batches from the feed thread, train_step, the logged terms.
  The bare loop runs after the study, in this process, with the budget's threads: the same
  `SeedRun`s (study.worker.seed_run: the same initial weights), the same batches (`SeedRun.steps`
  and the feed's generators, gathered before the clock starts), timing `to_device` + `train_step`
  only. A third line runs `SeedRun.train_epoch` itself without Ray, to split a gap into the worker's
  own loop (feed thread, logging) and the Ray processes around it. The machine is shared and its
  speed drifts: the bare loop's first epoch also runs before the study, and the CPU every process
  (the session's, other users', the hypervisor's steal) used while the worker trained is printed.
- share of the trial's wall time outside training steps and evaluation: 1 - sum(`time/epoch_s`) /
  `time_total_s` of the last result. `time/epoch_s` = training + evaluation (test and train recall)
  + probe pictures; `time_total_s` is Tune's clock since the trial's function started: the
  TorchTrainer's controller and worker start, the data and image map opened on the worker, the
  models built, every epoch, and each epoch's checkpoint written and reported. It ends at the last
  report, so the workers' shutdown is not in it.
- peak memory: every process of the study's Ray session (study.run and all its descendants: GCS,
  raylet, dashboard and agents, the Tune trial, Train's controller, helpers and worker). RSS and CPU
  times every second; PSS and USS (psutil's memory_full_info, smaps_rollup) every 10 s: at 1 Hz they
  took 18% of a core here, which the study's worker would have lost. The figure is the sum of PSS
  (shared pages split between the processes that map them, so the sum counts each page once); USS
  and RSS sums are printed beside it. A peak shorter than the interval can be missed; memory here
  rises at start-up and then stays flat.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SPACE = Path(__file__).with_name("trial_overhead.yaml")
GIB = 1024**3
TARGET_RATIO = 0.90  # platform samples/s over bare-loop samples/s, at least
TARGET_OUTSIDE = 0.15  # share of the trial's wall time outside training and evaluation, at most
TARGET_MEMORY_GIB = 3.0  # peak memory of the configuration's Ray session, at most
WORKER_TITLE = "RayTrainWorker"  # Ray Train's worker actor sets its process title to ray::RayTrainWorker...


# ---------------------------------------------------------------- the figures, from result lines


def read_results(path: Path) -> list[dict[str, Any]]:
    """Tune's result.json: one JSON object per reported epoch."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class TimeSplit:
    """Where a trial's wall time went, from its result lines."""

    wall_s: float  # Tune's time_total_s of the last result
    train_s: float  # sum of time/train_s
    evaluation_s: float  # sum of time/epoch_s - time/train_s - time/probes_s
    probes_s: float  # sum of time/probes_s
    gaps_s: tuple[float, ...]  # per result: time_total_s since the previous result minus that epoch_s

    @property
    def inside_s(self) -> float:
        return self.train_s + self.evaluation_s + self.probes_s

    @property
    def outside_s(self) -> float:
        return self.wall_s - self.inside_s

    @property
    def outside_share(self) -> float:
        return self.outside_s / self.wall_s


def time_split(results: Sequence[dict[str, Any]]) -> TimeSplit:
    """The first gap is start-up plus the first epoch's checkpoint and report; each later gap is one
    epoch's checkpoint and report (and whatever else happened between two epochs)."""
    epochs = [int(r["epoch"]) for r in results]
    if epochs != list(range(1, len(results) + 1)):
        raise ValueError(f"expected one result per epoch 1..{len(results)} from a trial that ran once, got "
                         f"epochs {epochs}; run the bench on a fresh study")
    gaps, previous = [], 0.0
    for result in results:
        gaps.append(result["time_total_s"] - previous - result["time/epoch_s"])
        previous = result["time_total_s"]
    train = sum(r["time/train_s"] for r in results)
    probes = sum(r["time/probes_s"] for r in results)
    return TimeSplit(wall_s=results[-1]["time_total_s"], train_s=train, probes_s=probes,
                     evaluation_s=sum(r["time/epoch_s"] for r in results) - train - probes, gaps_s=tuple(gaps))


def samples_per_second(steps: int, batch_size: int, seeds: int, seconds: float) -> float:
    """Training queries per second: every seed trains `steps` batches of `batch_size` queries."""
    return steps * batch_size * seeds / seconds


def platform_samples_per_second(results: Sequence[dict[str, Any]], steps_per_epoch: Sequence[int], *,
                                batch_size: int, seeds: int) -> float:
    """Over every epoch of the trial: all the queries it trained on over all its `time/train_s`;
    `steps_per_epoch[e]` is epoch e+1's (SeedRun.steps: the same for every seed)."""
    steps = sum(steps_per_epoch[int(r["epoch"]) - 1] for r in results)
    return samples_per_second(steps, batch_size, seeds, sum(r["time/train_s"] for r in results))


def verdict(measured: float, target: float, *, at_least: bool) -> str:
    return "PASS" if (measured >= target if at_least else measured <= target) else "MISS"


def busy_cpu_s() -> float:
    """CPU seconds every process of the machine has used since boot (all users, all cores)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq  # guest time is already in user and nice


def steal_s() -> float:
    """CPU seconds the hypervisor gave this virtual machine's cores to others since boot."""
    return getattr(psutil.cpu_times(), "steal", 0.0)


def training_windows(results: Sequence[dict[str, Any]]) -> list[tuple[float, float]]:
    """When each epoch's training steps ran, in epoch seconds: the trial started at
    timestamp - time_total_s (Tune's `timestamp` is whole seconds, so each result bounds the start
    from below; the largest bound is the closest), and epoch e trained for its train_s from
    start + time_total_s - epoch_s (its checkpoint and report, about 0.1 s, are left out)."""
    start = max(r["timestamp"] - r["time_total_s"] for r in results)
    windows = []
    for r in results:
        began = start + r["time_total_s"] - r["time/epoch_s"]
        windows.append((began, began + r["time/train_s"]))
    return windows


def cpu_in_windows(history: Sequence[tuple[float, float]], windows: Sequence[tuple[float, float]]) -> float:
    """CPU seconds a process used inside the windows, from its sampled (time, cumulative CPU)
    points, interpolated linearly between samples (0 before its first sample, its last value after)."""
    def at(t: float) -> float:
        if not history or t <= history[0][0]:
            return 0.0
        for (t0, c0), (t1, c1) in zip(history, history[1:]):
            if t <= t1:
                return c0 + (c1 - c0) * (t - t0) / (t1 - t0)
        return history[-1][1]

    return sum(at(end) - at(began) for began, end in windows)


# ---------------------------------------------------------------- memory of the Ray session


@dataclass
class MemoryPeaks:
    total_pss: int = 0  # full passes only
    total_uss: int = 0  # full passes only
    total_rss: int = 0  # every pass
    worker_uss: int = 0
    worker_pss: int = 0
    worker_rss: int = 0
    worker_pid: int | None = None
    processes: int = 0  # the most processes the session had at once
    samples: int = 0  # passes
    full_samples: int = 0  # passes that read PSS and USS
    at_peak: list[tuple[int, str, int]] = field(default_factory=list)  # (pss, title, pid) at the PSS peak


@dataclass
class SeenProcess:
    title: str
    started: float  # psutil create_time (epoch seconds)
    history: list[tuple[float, float]] = field(default_factory=list)  # (time.time(), user + system CPU s)


class MemorySampler:
    """Samples study.run and all its descendants on a thread: RSS and CPU times every `interval`
    seconds (statm, stat: cheap), PSS and USS every `full_every`-th pass (smaps_rollup: the kernel
    walks every page table, about 8 ms per Ray process here, too much to do every second on 2 cores)."""

    def __init__(self, root_pid: int, interval: float, full_every: int) -> None:
        self.root, self.interval, self.full_every = psutil.Process(root_pid), interval, full_every
        self.peaks = MemoryPeaks()
        self.seen: dict[int, SeenProcess] = {}
        self.machine: list[tuple[float, float]] = []  # (time, CPU seconds every process of the machine used)
        self.steal: list[tuple[float, float]] = []  # (time, CPU seconds stolen by the hypervisor)
        self.cpu_s = 0.0  # this thread's own CPU time: it competes with the study for the cores
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.thread_time()
            self.sample(full=self.peaks.samples % self.full_every == 0)
            self.cpu_s += time.thread_time() - began
            self._stop.wait(self.interval)

    def sample(self, *, full: bool = True) -> None:
        now = time.time()
        self.machine.append((now, busy_cpu_s()))
        self.steal.append((now, steal_s()))
        try:
            members = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        rows = []
        for process in members:
            try:
                with process.oneshot():
                    info = process.memory_full_info() if full else process.memory_info()
                    cpu = process.cpu_times()
                    title = " ".join(process.cmdline())[:80].strip() or process.name()
                    if process.pid not in self.seen:  # no CPU used before it started
                        started = process.create_time()
                        self.seen[process.pid] = SeenProcess(title, started, [(started, 0.0)])
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue  # ended between the listing and the read
            seen = self.seen[process.pid]
            seen.title = title
            seen.history.append((time.time(), cpu.user + cpu.system))
            rows.append((process.pid, title, info))
        peaks = self.peaks
        peaks.samples += 1
        peaks.processes = max(peaks.processes, len(rows))
        peaks.total_rss = max(peaks.total_rss, sum(info.rss for _, _, info in rows))
        for pid, title, info in rows:
            if WORKER_TITLE in title:
                peaks.worker_pid = pid
                peaks.worker_rss = max(peaks.worker_rss, info.rss)
                if full and info.uss > peaks.worker_uss:
                    peaks.worker_uss, peaks.worker_pss = info.uss, info.pss
        if not full:
            return
        peaks.full_samples += 1
        pss = sum(info.pss for _, _, info in rows)
        if pss > peaks.total_pss:
            peaks.total_pss = pss
            peaks.at_peak = sorted(((info.pss, title, pid) for pid, title, info in rows), reverse=True)
        peaks.total_uss = max(peaks.total_uss, sum(info.uss for _, _, info in rows))


# ---------------------------------------------------------------- the study, through its CLI


def worker_profiler(sampler: MemorySampler, output: Path, stop: threading.Event) -> threading.Thread:
    """py-spy on the Train worker from when it appears until it exits (collapsed stacks, 20 Hz,
    without pausing it): where the in-platform training time goes."""
    def attach() -> None:
        while sampler.peaks.worker_pid is None and not stop.is_set():
            time.sleep(0.2)
        if sampler.peaks.worker_pid is not None:
            subprocess.run(["py-spy", "record", "--pid", str(sampler.peaks.worker_pid), "--rate", str(PY_SPY_RATE),
                            "--nonblocking", "--format", "raw", "--output", str(output)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)

    thread = threading.Thread(target=attach, name="py-spy", daemon=True)
    thread.start()
    return thread


def run_study(work: Path, space_path: Path, *, cache_dir: Path, interval: float, full_every: int,
              py_spy: bool) -> tuple[float, MemorySampler, Path]:
    """Runs the one-configuration study; returns its wall time, the memory sampler and the study folder."""
    storage = work / "studies"
    command = [sys.executable, "-m", "study.run", "--space", str(space_path), "--storage", str(storage),
               "--cache-dir", str(cache_dir)]
    log = work / "study.log"
    began = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True,
                                   cwd=Path(__file__).resolve().parent.parent)
        sampler = MemorySampler(process.pid, interval, full_every)
        sampler.start()
        stop = threading.Event()
        profiler = worker_profiler(sampler, work / "worker.pyspy", stop) if py_spy else None
        code = process.wait()
        stop.set()
        sampler.stop()
        if profiler is not None:
            profiler.join(timeout=30)
    wall = time.perf_counter() - began
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise SystemExit(f"study.run failed (exit {code}); the end of its output:\n{tail}")
    return wall, sampler, storage / "trial_overhead"


def trial_results(study_dir: Path) -> list[dict[str, Any]]:
    files = sorted(study_dir.glob("run_trial_*/result.json"))
    if len(files) != 1:
        raise SystemExit(f"expected one trial in {study_dir}, found {len(files)}")
    return read_results(files[0])


# ---------------------------------------------------------------- the bare loop, without Ray


def bare_loop(space, budget, *, seeds: Sequence[int], cache_dir: Path, epochs: int,
              with_train_epoch: bool) -> dict[str, Any]:
    """The study's configuration trained without Ray for its first `epochs`, epoch by epoch and seed
    by seed as the trial does: `bare_s` times to_device + train_step over batches gathered
    beforehand; `train_epoch_s` (with_train_epoch) times SeedRun.train_epoch (feed thread and
    logging included). Each has its own SeedRuns, so both start from the trial's initial weights."""
    import torch  # here, not at the top: the tests of the arithmetic above need no torch

    from study.feed import BatchFeed
    from study.gradient_mean import GradientMean
    from study.randomness import stream_seed
    from study.space import grid_points
    from study.train import open_study_data
    from study.worker import seed_run, train_step

    torch.set_num_threads(budget.threads_per_worker)  # as train_loop_per_worker does
    entry = space.datasets[0]
    data = open_study_data(entry, budget=budget, data_seed=space.data_seed, cache_dir=str(cache_dir))
    params = {**grid_points(space)[0], **space.fixed}
    bare = {seed: seed_run(data, params, budget, seed=seed, cache_dir=str(cache_dir)) for seed in seeds}
    whole = {seed: seed_run(data, params, budget, seed=seed, cache_dir=str(cache_dir)) for seed in seeds}
    bare_s: list[float] = []  # per epoch, all seeds
    epoch_s = bare_cpu = epoch_cpu = 0.0
    machine_before, steal_before = busy_cpu_s(), steal_s()
    own_before, wall_before = time.process_time(), time.perf_counter()
    steps_per_epoch: list[int] = []
    for epoch in range(epochs):
        steps_per_epoch.append(len(bare[seeds[0]].steps(epoch, 0, 1)))
        bare_s.append(0.0)
        for seed in seeds:
            run = bare[seed]
            run.model.train()
            run.objective.train()
            gradients = GradientMean([p for group in run.optimizer.param_groups for p in group["params"]], world=1)
            # SeedRun.train_epoch's generators, so these are the trial's batches and negative groups
            augment = torch.Generator().manual_seed(stream_seed("augment", seed, epoch, run.share.key, 0))
            negatives = torch.Generator().manual_seed(stream_seed("negatives", seed, epoch, run.share.key))
            hosts = list(BatchFeed(run.share.images["train"], run.share.vocab, run.steps(epoch, 0, 1),
                                   augment=entry.augment, generator=augment))
            began, cpu = time.perf_counter(), time.process_time()
            for host in hosts:
                batch = host.to_device(run.device)
                train_step(run.model, run.objective, run.optimizer, batch, gradients=gradients,
                           generator=negatives, step=run.step, seed=seed)
                run.step += 1
            bare_s[-1] += time.perf_counter() - began
            bare_cpu += time.process_time() - cpu
            if with_train_epoch:
                began, cpu = time.perf_counter(), time.process_time()
                whole[seed].train_epoch(epoch, 0, 1)
                epoch_s += time.perf_counter() - began
                epoch_cpu += time.process_time() - cpu
    wall = time.perf_counter() - wall_before
    # what the rest of the machine (other users) and the hypervisor took from the cores meanwhile
    others = busy_cpu_s() - machine_before - (time.process_time() - own_before)
    return {"bare_epoch_s": bare_s, "bare_s": sum(bare_s), "train_epoch_s": epoch_s, "bare_cpu_s": bare_cpu,
            "train_epoch_cpu_s": epoch_cpu, "others_cores": others / wall, "steal_cores": (steal_s() - steal_before) / wall,
            "steps_per_epoch": steps_per_epoch, "threads": torch.get_num_threads(), "torch": torch.__version__}


# ---------------------------------------------------------------- py-spy summary


PY_SPY_RATE = 20  # samples per second
# Where a sampled stack of the Train worker belongs: the first phase one of whose functions is on it.
PHASES = (
    ("training (SeedRun.train_epoch)", ("train_epoch",)),
    ("evaluation", ("evaluate",)),
    ("probe pictures", ("probe_pictures",)),
    ("start-up: data and image maps", ("open_study_data",)),
    ("start-up: models and optimisers", ("TrialRun.build", "_restore")),
    ("start-up: imports (the train function's modules)", ("_find_and_load",)),
    ("rest of the loop: checkpoints, report", ("run_worker",)),
    ("Ray's task loop (mostly waits in C++ that --nonblocking counts)", ("main_loop",)),
)


def _calls(frame: str, mark: str) -> bool:
    """Whether a py-spy frame `Class.function (file.py:12)` is the function `mark` (`evaluate`
    matches `SeedRun.evaluate`; `TrialRun.build` matches only itself)."""
    name = frame.rsplit(" (", 1)[0]
    return name == mark or name.endswith("." + mark)


def stack_summary(path: Path, *, top: int = 8) -> list[str]:
    """Lines of py-spy's collapsed stacks (`frame;frame;... count`): seconds of samples per phase
    (PHASES), and the leaf functions with the most samples inside training."""
    phases: Counter = Counter()
    leaves: Counter = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        phase = next((label for label, marks in PHASES if any(_calls(f, m) for f in frames for m in marks)), "other")
        phases[phase] += n
        if phase == PHASES[0][0]:
            leaves[frames[-1]] += n
    if not total:
        return ["py-spy recorded no samples"]
    lines = [f"py-spy on the Train worker, {total} samples at {PY_SPY_RATE} Hz of its busy threads "
             f"(s = samples / rate):"]
    lines += [f"  {phases[label] / PY_SPY_RATE:6.1f} s {phases[label] / total:6.1%}  {label}"
              for label in [*(label for label, _ in PHASES), "other"]]
    inside = sum(leaves.values())
    lines += ["  inside training, the leaf functions:"]
    lines += [f"  {n / inside:6.1%} {leaf[:110]}" for leaf, n in leaves.most_common(top)]
    return lines


# ---------------------------------------------------------------- main


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def with_seeds(space_path: Path, seeds: int, out: Path) -> Path:
    """A copy of the space whose default budget trains seeds 0..seeds-1 (Budget.seeds)."""
    import yaml

    raw = yaml.safe_load(space_path.read_text())
    raw["budgets"]["default"]["seeds"] = seeds
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds 0..N-1 instead of the space's (fewer: a shorter run, said in the output)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples of RSS and CPU time")
    parser.add_argument("--full-every", type=int, default=10, help="read PSS and USS every N-th sample")
    parser.add_argument("--workdir", type=Path, help="keep the study, its log and the cache here (default: a "
                                                     "temporary folder, removed afterwards)")
    parser.add_argument("--cache-dir", type=Path, help="generated data (default: under the workdir, fresh)")
    parser.add_argument("--py-spy", action="store_true", help="sample the Train worker's stacks with py-spy")
    args = parser.parse_args()
    from dataclasses import replace

    from study.space import load_space

    space = load_space(SPACE)
    budget = space.budgets["default"]
    if args.seeds is not None:  # the study itself reads the yaml: hand it a copy with these seeds
        budget = replace(budget, seeds=args.seeds)
    space = space.for_budget(budget)
    seeds = space.seeds
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cirstudy-trial-overhead-") as scratch:
        work = args.workdir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        cache = args.cache_dir or work / "cache"
        space_path = SPACE if args.seeds is None else with_seeds(SPACE, args.seeds, work / SPACE.name)
        # a drift check: the bare loop's first epoch before the study too (the machine is shared)
        before = bare_loop(space, budget, seeds=seeds, cache_dir=cache, epochs=1, with_train_epoch=False)
        study_wall, sampler, study_dir = run_study(work, space_path, cache_dir=cache, interval=args.interval,
                                                   full_every=args.full_every, py_spy=args.py_spy)
        results = trial_results(study_dir)
        bare = bare_loop(space, budget, seeds=seeds, cache_dir=cache, epochs=budget.epochs, with_train_epoch=True)
        spy = work / "worker.pyspy"
        profile = stack_summary(spy) if args.py_spy and spy.is_file() else []
    load_after = os.getloadavg()

    split = time_split(results)
    steps = bare["steps_per_epoch"]
    batch = budget.batch_size
    platform_rate = platform_samples_per_second(results, steps, batch_size=batch, seeds=len(seeds))
    bare_rate = samples_per_second(sum(steps), batch, len(seeds), bare["bare_s"])
    epoch_rate = samples_per_second(sum(steps), batch, len(seeds), bare["train_epoch_s"])
    ratio = platform_rate / bare_rate
    peaks = sampler.peaks

    seeds_note = f"seeds {list(seeds)}" + (" (--seeds: fewer than the space's 2)" if len(seeds) < 2 else "")
    steps_note = f"{steps[0]} steps" if len(set(steps)) == 1 else f"{steps} steps"
    print(f"trial overhead (issue 12): {space.name}, tirg + none (K 8) on css, {budget.image_encoder}, batch {batch}, "
          f"{budget.epochs} epochs x {steps_note}, {seeds_note}, scale {budget.scale}, "
          f"{budget.threads_per_worker} thread(s) per worker")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {bare['torch']} with {bare['threads']} "
          f"intra-op thread(s) in the bare loop, Python {platform.python_version()}; {date}; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print()
    rows = [
        ("training samples/s in the platform / bare loop", f"{ratio:.2f} ({platform_rate:.0f} / {bare_rate:.0f})",
         f">= {TARGET_RATIO:.2f}", verdict(ratio, TARGET_RATIO, at_least=True)),
        ("share of trial wall outside training + evaluation", f"{split.outside_share:.1%} "
         f"({split.outside_s:.1f} of {split.wall_s:.1f} s)", f"<= {TARGET_OUTSIDE:.0%}",
         verdict(split.outside_share, TARGET_OUTSIDE, at_least=False)),
        ("peak memory, the study's Ray session (sum of PSS)", f"{peaks.total_pss / GIB:.2f} GiB",
         f"<= {TARGET_MEMORY_GIB:.0f} GiB", verdict(peaks.total_pss / GIB, TARGET_MEMORY_GIB, at_least=False)),
    ]
    print(f"{'figure':52s} {'measured':30s} {'target':9s} verdict")
    for figure, measured, target, mark in rows:
        print(f"{figure:52s} {measured:30s} {target:9s} {mark}")

    print("\ntraining (samples/s; samples = steps x batch x seeds):")
    for r in results:
        rate = samples_per_second(steps[int(r["epoch"]) - 1], batch, len(seeds), r["time/train_s"])
        print(f"  platform, epoch {r['epoch']}: {rate:7.1f}  (time/train_s {r['time/train_s']:.2f} s)")
    print(f"  platform, all epochs: {platform_rate:7.1f}  ({sum(r['time/train_s'] for r in results):.2f} s)")
    print(f"  bare loop (to_device + train_step, no Ray): {bare_rate:7.1f}  ({bare['bare_s']:.2f} s)")
    print(f"  SeedRun.train_epoch without Ray (feed thread, logging): {epoch_rate:7.1f}  ({bare['train_epoch_s']:.2f} s)")
    first_before = samples_per_second(steps[0], batch, len(seeds), before["bare_s"])
    first_after = samples_per_second(steps[0], batch, len(seeds), bare["bare_epoch_s"][0])
    print(f"  drift: the bare loop's epoch 1 before the study {first_before:.1f}, after it {first_after:.1f} "
          f"({first_after / first_before - 1:+.1%}); the rest of the machine used {before['others_cores']:.2f} and "
          f"{bare['others_cores']:.2f} cores, the hypervisor stole {before['steal_cores']:.2f} and "
          f"{bare['steal_cores']:.2f}")

    print(f"\ntrial wall time, Tune's time_total_s {split.wall_s:.1f} s:")
    for name, seconds in (("training steps", split.train_s), ("evaluation", split.evaluation_s),
                          ("probe pictures", split.probes_s), ("outside", split.outside_s)):
        print(f"  {name:16s} {seconds:6.1f} s  {seconds / split.wall_s:6.1%}")
    later = split.gaps_s[1:]
    per_epoch = statistics.mean(later) if later else 0.0
    print(f"    start-up, to the first epoch: about {split.gaps_s[0] - per_epoch:.1f} s (the first gap, "
          f"{split.gaps_s[0]:.1f} s, less one checkpoint + report)")
    print(f"    checkpoint + report of epochs 2.. (+- when Train's controller polled the worker): "
          f"{', '.join(f'{g:.1f}' for g in later) or '-'} s")
    print(f"  python -m study.run, the whole command (imports, data, Ray start and stop, tables): {study_wall:.1f} s")
    print(f"  trials.parquet's wall_time_s (time/total_s): {results[-1]['time/total_s']:.1f} s, the epochs only")

    windows = training_windows(results)
    start = windows[0][0] - (results[0]["time_total_s"] - results[0]["time/epoch_s"])
    trained = sum(end - began for began, end in windows)
    usage = sorted(((cpu_in_windows(p.history, windows), p.history[-1][1], p.started - start, p.title)
                    for p in sampler.seen.values()), reverse=True)
    print(f"\nCPU seconds (user + system) of the session's processes: while the worker trained ({trained:.0f} s "
          f"on {os.cpu_count()} cores, windows from the result lines +-1 s) / over the study; started at (s after "
          "the trial's function started):")
    for during, total, started, title in usage[:12]:
        print(f"  {during:6.1f} {total:7.1f}  {started:+7.1f}  {title}")
    rest = usage[12:]
    print(f"  {sum(u[0] for u in rest):6.1f} {sum(u[1] for u in rest):7.1f}           {len(rest)} other processes")
    print(f"  sampler thread (this process): {sampler.cpu_s:.1f} s over the study")
    worker = sum(u[0] for u in usage if WORKER_TITLE in u[3])
    session = sum(u[0] for u in usage)
    machine = cpu_in_windows(sampler.machine, windows)
    samples = len(seeds) * batch * sum(steps)
    print(f"  while it trained, cores in use: worker {worker / trained:.2f}, the session's other processes "
          f"{(session - worker) / trained:.2f}, the rest of the machine (other users, this bench's sampler) "
          f"{(machine - session) / trained:.2f}, stolen by the hypervisor {cpu_in_windows(sampler.steal, windows) / trained:.2f}, "
          f"of {os.cpu_count()}")
    print(f"  CPU s per 1000 training samples: worker in the platform {1000 * worker / samples:.1f}, "
          f"SeedRun.train_epoch without Ray {1000 * bare['train_epoch_cpu_s'] / samples:.1f} "
          f"({bare['train_epoch_cpu_s'] / bare['train_epoch_s']:.2f} cores), bare loop "
          f"{1000 * bare['bare_cpu_s'] / samples:.1f} ({bare['bare_cpu_s'] / bare['bare_s']:.2f} cores)")

    print(f"\nmemory: {peaks.samples} samples of RSS every {args.interval:g} s, {peaks.full_samples} of PSS and USS "
          f"(psutil memory_full_info, smaps_rollup) every {args.full_every * args.interval:g} s; up to "
          f"{peaks.processes} processes")
    print(f"  session peak: PSS {peaks.total_pss / GIB:.2f} GiB, USS {peaks.total_uss / GIB:.2f} GiB, "
          f"RSS {peaks.total_rss / GIB:.2f} GiB (RSS counts shared pages once per process)")
    print(f"  Train worker alone, peak: USS {peaks.worker_uss / GIB:.2f} GiB, PSS {peaks.worker_pss / GIB:.2f} GiB, "
          f"RSS {peaks.worker_rss / GIB:.2f} GiB")
    print("  PSS by process at the session's PSS peak:")
    for pss, title, pid in peaks.at_peak[:10]:
        print(f"    {pss / GIB:5.2f} GiB  {title}")
    rest_pss = sum(row[0] for row in peaks.at_peak[10:])
    print(f"    {rest_pss / GIB:5.2f} GiB  {len(peaks.at_peak[10:])} other processes")
    if profile:
        print()
        print("\n".join(profile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
