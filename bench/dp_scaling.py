"""Data-parallel scaling (issue 12): training samples/s of one configuration with 2 Ray Train
workers on 2 local nodes of 1 CPU each, against 1 worker, with the same global batch and the same
data, in the steady state. Target >= 1.6x.

    python bench/dp_scaling.py                                   # 3-4 minutes on 2 cores (busy: 8)
    python bench/dp_scaling.py --rounds 2 --epochs 3             # alternate twice (about 5 minutes quiet)
    python bench/dp_scaling.py --epochs 2 --scale 0.01           # a quick look (noisier)
    python bench/dp_scaling.py --profile --epochs 3              # and rank 0's torch.profiler table of each run

The configuration is bench/trial_overhead.py's: tirg + none (K 8) on css at scale 0.05, small_cnn,
embed 128, global batch 32 (16 per worker with 2), one intra-op thread per worker, seed 0.

The cluster: `ray.cluster_utils.Cluster` with a head of 0 CPUs (Train's controller asks none) and
2 nodes of 1 CPU; every worker asks 1 CPU, so 2 workers run on 2 nodes and 1 worker on one.

The measurement: a TorchTrainer whose workers run the project's training loop,
`study.trial_run.TrialRun.train_epoch` (the feed thread, `train_step` with the matching loss over
the global batch and the flat gradient all-reduce, the logged terms synchronised once), epoch after
epoch, without evaluation or checkpoints. Every rank waits at a barrier before and after an epoch,
and rank 0 records the epoch's wall-clock window and every rank's CPU seconds. Epoch 1 is warm-up
(thread pools; the first optimiser step imports torch._dynamo) and is left out; the later epochs
are the steady state. samples/s = steps x global batch / an epoch's seconds; the figure is the median
over the steady epochs of 2 workers over that of 1 worker. With --rounds > 1 the runs alternate 1
worker, 2 workers and lockstep, so a drift of the machine's speed hits all three.

The machine's own limit: a third run, "lockstep", has 2 workers on the same 2 nodes each train a
configuration of its own at one rank's batch (16), with no collective but a barrier where the
gradient all-reduce goes. That is everything data parallelism costs except the communication: the
smaller per-rank batch, two ranks computing at once on this machine's cores, and one wait per step
for the slower rank. Its samples/s over 1 worker is the most any data-parallel step that
synchronises once per step can reach here; the real run's shortfall from it is the collectives.

Where the difference goes: every rank's CPU seconds per sample. If data parallelism added no work,
2 workers that each had a core would reach 2x; `2 x (CPU per sample, 1 worker) / (CPU per sample,
2 workers)` is the most they can reach here, printed as a bound beside the figure. Without Ray, in
this process, the same training loop at a batch of 32 and of 16 (one rank's share of 2) on the
same number of samples (the least CPU time of two epochs each) splits the added work into the smaller per-rank batch and the rest
(gathering the targets, the gradient all-reduce, waiting for the other rank).

The machine may be shared: a thread here samples the machine's busy CPU time and this bench's own
(every process of the cluster is its descendant) every second, and each epoch gets the share of
the cores other processes took during its window (bench/contention.py). Epochs above
--max-contention are left out while a clean one remains for that worker count; otherwise all are
kept and the result says it was contended.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.contention import CpuSampler  # noqa: E402

TARGET = 1.6  # samples/s with 2 workers over 1 worker, at least
WORKER_COUNTS = (1, 2)
# each run of a round: label -> (workers, lockstep); "lockstep" is the machine's limit (the module's doc)
RUNS = {"1 worker": (1, False), "2 workers": (2, False), "lockstep": (2, True)}
PARAMS = {"composer": "tirg", "regularizer": "none", "K": 8}  # bench/trial_overhead.yaml's configuration


@dataclass(frozen=True)
class ScalingRun:
    """What each worker needs; pickled to the workers."""

    budget: Any  # study.budget.Budget with this run's workers_per_trial
    dataset: Any  # study.budget.DatasetEntry
    epochs: int
    cache_dir: str
    out: str  # rank 0 writes its epochs here as JSON (the nodes are this machine: one filesystem)
    profile: bool = False  # rank 0 profiles its last epoch with torch.profiler, table beside `out`
    lockstep: bool = False  # every worker trains alone at `budget`'s batch, a barrier per step (the module's doc)


GLOBAL_BATCH = 32


def budget_for(workers: int, *, scale: float, batch_size: int = GLOBAL_BATCH):
    """bench/trial_overhead.yaml's default budget, with `workers` workers of 1 CPU each."""
    from study.budget import Budget

    return Budget(epochs=1, scale=scale, image_encoder="small_cnn", embed_dim=128, batch_size=batch_size,
                  max_steps_per_epoch=40, threads_per_worker=1, workers_per_trial=workers, cpus_per_worker=1.0)


def lockstep_budget(*, scale: float):
    """One worker's budget at one rank's share of the global batch: what each lockstep worker trains."""
    return budget_for(1, scale=scale, batch_size=GLOBAL_BATCH // RUNS["lockstep"][0])


# ---------------------------------------------------------------- on the workers


PROFILE_ROWS = 14


def _profiler(enabled: bool):
    """torch.profiler over CPU operators (collectives included: their time is the wait for the
    other rank too), or nothing."""
    from contextlib import nullcontext

    from torch.profiler import ProfilerActivity, profile

    return profile(activities=[ProfilerActivity.CPU]) if enabled else nullcontext()


def train_loop(config: dict[str, Any]) -> None:
    """Each epoch of the project's training loop, timed between two barriers."""
    import ray.train
    import torch
    import torch.distributed as dist

    from study.train import open_study_data
    from study.trial_config import TrialConfig
    from study.trial_run import TrialRun

    spec: ScalingRun = config["spec"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(spec.budget.threads_per_worker)
    data = {spec.dataset.key: open_study_data(spec.dataset, budget=spec.budget, data_seed=0, cache_dir=spec.cache_dir)}
    trial = TrialConfig.from_params(PARAMS, seeds=(0,), where="bench/dp_scaling.py")
    trial_rank, trial_world = (0, 1) if spec.lockstep else (rank, world)  # lockstep: each worker trains alone
    run = TrialRun.build(trial, spec.budget, (spec.dataset,), data, cell_weights={}, data_seed=0,
                         cache_dir=spec.cache_dir, rank=trial_rank, world=trial_world, device=torch.device("cpu"))

    def barrier() -> None:
        if world > 1:
            dist.barrier()

    if spec.lockstep:
        from study.gradient_mean import GradientMean

        class BarrierInsteadOfMean(GradientMean):  # a barrier where the gradient all-reduce goes
            def mean(self) -> None:
                dist.barrier()

        for seed_run in run.all_runs():
            seed_run.gradients = BarrierInsteadOfMean(
                [p for group in seed_run.optimizer.param_groups for p in group["params"]], world=1)

    epochs = []
    for epoch in range(spec.epochs):
        steps = sum(len(r.steps(run.epoch, trial_rank, trial_world)) for r in run.all_runs())
        profiler = _profiler(spec.profile and rank == 0 and epoch == spec.epochs - 1)
        barrier()
        began, cpu = time.time(), time.process_time()
        with profiler:
            run.train_epoch()
        barrier()
        ended, cpu = time.time(), time.process_time() - cpu
        if spec.profile and rank == 0 and epoch == spec.epochs - 1:
            table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=PROFILE_ROWS)
            Path(spec.out).with_suffix(".profile.txt").write_text(table)
        run.epoch += 1
        cpus: list[Any] = [cpu]
        if world > 1:
            cpus = [None] * world
            dist.all_gather_object(cpus, cpu)
        epochs.append({"epoch": epoch + 1, "began": began, "ended": ended, "steps": steps,
                       "samples": steps * spec.budget.batch_size * (world if spec.lockstep else 1), "cpu_s": cpus})
    if rank == 0:
        Path(spec.out).write_text(json.dumps(epochs))


# ---------------------------------------------------------------- the arithmetic


@dataclass(frozen=True)
class Epoch:
    workers: int
    round: int
    epoch: int
    seconds: float
    samples: int
    cpu_s: tuple[float, ...]  # per rank
    contention: float  # share of the machine other processes took during the epoch
    lockstep: bool = False  # a lockstep run's epoch (each worker alone, a barrier per step)

    @property
    def rate(self) -> float:
        return self.samples / self.seconds

    @property
    def cpu_per_1000(self) -> float:
        """CPU seconds of all ranks per 1,000 samples: the work, whoever's core it ran on."""
        return 1000 * sum(self.cpu_s) / self.samples

    @property
    def cores_used(self) -> float:
        """Cores the ranks kept busy, together: 2 workers that got their two cores use about 2."""
        return sum(self.cpu_s) / self.seconds


def parse_epochs(text: str, *, workers: int, round: int) -> list[dict[str, Any]]:
    """Rank 0's record: a JSON list of epochs with began, ended, samples and per-rank cpu_s."""
    where = f"the record of {workers} worker(s), round {round}"
    try:
        epochs = json.loads(text)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: not JSON ({error})") from None
    if not isinstance(epochs, list) or not epochs:
        raise ValueError(f"{where}: expected a non-empty list of epochs, got {text[:80]!r}")
    for entry in epochs:
        missing = {"epoch", "began", "ended", "samples", "cpu_s"} - set(entry)
        if missing:
            raise ValueError(f"{where}: epoch entry {entry} lacks {sorted(missing)}")
        if entry["ended"] <= entry["began"] or entry["samples"] <= 0:
            raise ValueError(f"{where}, epoch {entry['epoch']}: needs ended > began and samples > 0, got {entry}")
        if len(entry["cpu_s"]) != workers:
            raise ValueError(f"{where}, epoch {entry['epoch']}: {len(entry['cpu_s'])} ranks' CPU times, "
                             f"expected {workers}")
    return epochs


def steady(epochs: Sequence[Epoch], *, warmup: int = 1) -> list[Epoch]:
    """The epochs after the first `warmup` of each (workers, round) run."""
    return [e for e in epochs if e.epoch > warmup]


def kept(epochs: Sequence[Epoch], max_contention: float) -> tuple[list[Epoch], bool]:
    """The epochs other processes left alone (share <= max_contention); all of them, and False,
    when none was."""
    clean = [e for e in epochs if e.contention <= max_contention]
    return (clean, True) if clean else (list(epochs), False)


def by_run(epochs: Sequence[Epoch], max_contention: float) -> dict[str, tuple[list[Epoch], bool]]:
    """Each run's steady epochs (RUNS' labels) that other processes left alone (`kept`)."""
    return {label: kept(steady([e for e in epochs if (e.workers, e.lockstep) == key]), max_contention)
            for label, key in RUNS.items()}


def scaling(rates_1: Sequence[float], rates_2: Sequence[float]) -> float:
    """Median samples/s with 2 workers over the median with 1."""
    return median(rates_2) / median(rates_1)


def cpu_bound(cpu_1: float, cpu_2: float, workers: int = 2) -> float:
    """The most `workers` workers can reach over 1, each rank with a whole core and never waiting,
    when a sample costs cpu_1 CPU seconds with 1 worker and cpu_2 with `workers` (all ranks')."""
    return workers * cpu_1 / cpu_2


def verdict(value: float, target: float) -> str:
    return "met" if value >= target else "missed"


# ---------------------------------------------------------------- the driver


def batch_cost(data, *, scale: float, cache_dir: Path, samples: int = 448) -> dict[int, float]:
    """CPU seconds per 1,000 samples of the training loop in this process (1 thread, no Ray, no
    collectives) at the per-rank batch of 1 worker (32) and of 2 workers (16): the least of two
    epochs of `samples` samples after a warm-up epoch (another process can only add to a CPU time)."""
    from dataclasses import replace

    import torch

    from study.worker import seed_run

    torch.set_num_threads(1)
    cost = {}
    for batch in (32, 16):
        budget = replace(budget_for(1, scale=scale), batch_size=batch, max_steps_per_epoch=samples // batch)
        run = seed_run(data, PARAMS, budget, seed=0, cache_dir=str(cache_dir))
        run.train_epoch(0, 0, 1)  # warm-up: thread pools, the first optimiser step's imports
        seconds = []
        for epoch in (1, 2):
            steps = len(run.steps(epoch, 0, 1))  # fewer than samples // batch on a small dataset
            began = time.process_time()
            run.train_epoch(epoch, 0, 1)
            seconds.append(1000 * (time.process_time() - began) / (steps * batch))
        cost[batch] = min(seconds)
    return cost


def prepare_data(scale: float, cache_dir: Path):
    """Generates the dataset and decodes its images into the cache once, before any clock starts
    (as study.run does), so the workers only map them."""
    from study.budget import DatasetEntry
    from study.data.image_cache import open_image_map
    from study.train import open_study_data

    entry = DatasetEntry("css")
    data = open_study_data(entry, budget=budget_for(1, scale=scale), data_seed=0, cache_dir=str(cache_dir))
    for split in (data.train, data.test):
        open_image_map(split, cache_dir=cache_dir)
    return entry, data


def run_name(workers: int, round: int, lockstep: bool) -> str:
    return f"dp-{workers}w{'-lockstep' if lockstep else ''}-round{round}"


def fit(workers: int, round: int, *, entry, epochs: int, scale: float, cache_dir: Path, storage: Path,
        profile: bool = False, lockstep: bool = False) -> str:
    """One TorchTrainer run; returns rank 0's epochs (JSON) (and with `profile`, its profile of the
    last epoch beside it: profile_table)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    name = run_name(workers, round, lockstep)
    out = storage / f"{name}.json"
    storage.mkdir(parents=True, exist_ok=True)
    budget = lockstep_budget(scale=scale) if lockstep else budget_for(workers, scale=scale)
    spec = ScalingRun(budget=budget, dataset=entry, epochs=epochs, cache_dir=str(cache_dir), out=str(out),
                      profile=profile, lockstep=lockstep)
    trainer = TorchTrainer(
        train_loop, train_loop_config={"spec": spec},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1.0},
                                               placement_strategy="SPREAD"),
        run_config=ray.train.RunConfig(name=name, storage_path=str(storage)),
    )
    trainer.fit()
    return out.read_text()


def profile_table(storage: Path, name: str) -> str | None:
    """Rank 0's torch.profiler table of a --profile run, if it wrote one."""
    path = storage / f"{name}.profile.txt"
    return path.read_text() if path.is_file() else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run, the first one warm-up (>= 2)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of 1 worker, 2 workers and lockstep, alternating (each run costs a "
                             "TorchTrainer start: about "
                             "30 s here, 90 s on a busy machine)")
    parser.add_argument("--scale", type=float, default=0.05, help="css's generated size (0.05: 28 steps an epoch)")
    parser.add_argument("--max-contention", type=float, default=0.05,
                        help="leave out epochs during which other processes used more of the machine")
    parser.add_argument("--profile", action="store_true",
                        help="also profile each run's last epoch on rank 0 with torch.profiler and print the tables "
                             "(that epoch is left out of the figure)")
    parser.add_argument("--workdir", type=Path, help="keep the cache and Train's folders here (default: a "
                                                     "temporary folder, removed afterwards)")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error(f"--epochs must be at least 2 (the first is warm-up), got {args.epochs}")
    if args.profile and args.epochs < 3:
        parser.error(f"--profile needs --epochs of at least 3 (warm-up, measured, profiled), got {args.epochs}")
    if args.rounds < 1:
        parser.error(f"--rounds must be a positive integer, got {args.rounds}")
    if not 0 < args.scale <= 1:
        parser.error(f"--scale must be in (0, 1], got {args.scale}")

    import ray
    from ray.cluster_utils import Cluster

    from study.ray_session import ray_session

    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_before = os.getloadavg()
    began = time.time()
    measured: list[Epoch] = []
    tables: dict[tuple[str, int], str | None] = {}
    with tempfile.TemporaryDirectory(prefix="cirstudy-dp-scaling-") as scratch:
        work = args.workdir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        entry, data = prepare_data(args.scale, work / "cache")
        cost = batch_cost(data, scale=args.scale, cache_dir=work / "cache")
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        try:
            for _ in range(max(WORKER_COUNTS)):
                cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            with ray_session(cluster.address), CpuSampler(interval=1.0) as sampler:
                for round in range(1, args.rounds + 1):
                    for label, (workers, lockstep) in RUNS.items():
                        record = fit(workers, round, entry=entry, epochs=args.epochs, scale=args.scale,
                                     cache_dir=work / "cache", storage=work / "train", profile=args.profile,
                                     lockstep=lockstep)
                        if args.profile:
                            tables[(label, round)] = profile_table(work / "train", run_name(workers, round, lockstep))
                        for e in parse_epochs(record, workers=workers, round=round):
                            epoch = Epoch(workers, round, e["epoch"], e["ended"] - e["began"], e["samples"],
                                          tuple(e["cpu_s"]), sampler.share(e["began"], e["ended"]), lockstep)
                            measured.append(epoch)
                            print(f"  {label}, round {round}, epoch {epoch.epoch}: {epoch.rate:6.1f} "
                                  f"samples/s ({epoch.seconds:5.2f} s), ranks used "
                                  f"{', '.join(f'{c / epoch.seconds:.2f}' for c in epoch.cpu_s)} cores, others "
                                  f"{epoch.contention:.0%} of the machine", file=sys.stderr, flush=True)
        finally:
            ray.shutdown()
            cluster.shutdown()
    load_after = os.getloadavg()

    if args.profile:  # the profiled last epoch of each run ran slower
        measured = [e for e in measured if e.epoch < args.epochs]
    runs = by_run(measured, args.max_contention)
    rates = {label: [e.rate for e in runs[label][0]] for label in RUNS}
    figure = scaling(rates["1 worker"], rates["2 workers"])
    limit = scaling(rates["1 worker"], rates["lockstep"])
    contended = [label for label in RUNS if not runs[label][1]]
    worst = max(e.contention for label in RUNS for e in runs[label][0])

    print(f"command: python {' '.join(sys.argv)}")
    print(f"data-parallel scaling (issue 12): tirg + none (K 8) on css at scale {args.scale} "
          f"({len(data.train.queries)} training queries), small_cnn, global batch {GLOBAL_BATCH}, 1 thread per worker; "
          f"{args.rounds} round(s) of 1 worker, 2 workers and lockstep, {args.epochs} epochs each, epoch 1 warm-up")
    print(f"machine: {os.cpu_count()} cores; {date}; load average {load_before[0]:.1f} before, {load_after[0]:.1f} "
          f"after; {time.time() - began:.0f} s in all; cluster: head 0 CPUs + 2 nodes x 1 CPU")
    print()
    for label in RUNS:
        epochs, clean = runs[label]
        print(f"{label + ':':10s} median {median(rates[label]):6.1f} samples/s over {len(epochs)} steady epoch(s) "
              f"({', '.join(f'{r:.1f}' for r in rates[label])}); others took at most "
              f"{max(e.contention for e in epochs):.0%} of the machine in them"
              + ("" if clean else f" (no epoch under {args.max_contention:.0%}: all kept)"))
    cpu = {label: median(e.cpu_per_1000 for e in runs[label][0]) for label in RUNS}
    cores = {label: median(e.cores_used for e in runs[label][0]) for label in RUNS}
    one, two, alone = cpu["1 worker"], cpu["2 workers"], cpu["lockstep"]
    print(f"CPU seconds per 1,000 samples, all ranks: 1 worker {one:.1f}, "
          f"lockstep {alone:.1f} ({alone / one - 1:+.0%}), "
          f"2 workers {two:.1f} ({two / one - 1:+.0%}); cores the ranks kept busy: {cores['1 worker']:.2f} of 1, "
          f"{cores['lockstep']:.2f} and {cores['2 workers']:.2f} of 2")
    print(f"  the same loop in this process without Ray (1 thread): batch 32 {cost[32]:.1f}, batch 16 {cost[16]:.1f} "
          f"({cost[16] / cost[32] - 1:+.0%}: the smaller per-rank batch); lockstep {alone / cost[16] - 1:+.0%} over "
          f"batch 16 (two ranks computing at once on this machine); 2 workers {two / alone - 1:+.0%} over lockstep "
          f"(the targets' gather, the gradient all-reduce)")
    print(f"  at most 2 x {one:.1f} / {two:.1f} = {cpu_bound(one, two):.2f}x with a whole core per rank and no waiting")
    print(f"  lockstep, 2 workers each training alone at batch {GLOBAL_BATCH // 2} with a barrier per step and no "
          f"collective, reaches {limit:.2f}x: the most a data-parallel step that synchronises once per step reaches "
          f"on this machine; 2 workers reach {figure / limit:.0%} of it")
    print()
    print(f"{'figure':48s} {'measured':>9s} {'target':>8s}")
    print(f"{'samples/s, 2 workers on 2 nodes / 1 worker':48s} {figure:9.2f} {'>= ' + str(TARGET):>8s}  "
          f"{verdict(figure, TARGET)}")
    print(f"{'  machine limit: lockstep, no collective / 1':48s} {limit:9.2f} {'-':>8s}")
    if contended:
        print(f"WARNING: contended: other processes took up to {worst:.0%} of the machine during the kept epochs "
              f"({' and '.join(contended)} had no epoch under {args.max_contention:.0%}); "
              "2 workers need both cores, so the figure is low by about that much")
    for (label, round), table in tables.items():
        print(f"\nrank 0 of {label}, round {round}, epoch {args.epochs} (torch.profiler, self CPU; a "
              f"collective's time includes waiting for the other rank):\n{table or 'no profile written'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
