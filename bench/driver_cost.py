"""The driver's cost per trial at scale (issue 12): N configurations (default 1,000) of a no-op trainable
on a 3-node local cluster (`ray.cluster_utils.Cluster`), run through cirstudy's driver and through raw
Ray Tune + OptunaSearch with the same trainable, the same search space, the same concurrency. Prints
each figure next to its target, and how busy the machine was.

    python bench/driver_cost.py                    # 1,000 configurations per driver
    python bench/driver_cost.py --configs 100      # a quick look (the figures say at which N)

* The trainable reports one result shaped like a real trial's (epoch 1, the seed-mean WHM, per-seed
  recalls, time) and returns; it runs on the cluster's nodes, so what is measured is the driver.
* cirstudy's driver is `study.run.fit_study`: our search (MatchedSearcher over OptunaSearch, matched
  ASHA), Tune's JSON and CSV loggers, our TensorBoard, tables (a part per trial end, merges and
  statistics by study/table_writer.py's rule), progress, stop-signal and trial-record callbacks,
  then the study's end (`TableWriter.write`: the tables whole from Tune's record, ranked, optuna.log). Raw Tune is
  `tune.Tuner(trainable, TuneConfig(search_alg=OptunaSearch(...)))` with Tune's default loggers.
  Both reuse trial actors (`reuse_actors=True`; study.run keeps Tune's default of a process per
  trial): a process start per no-op trial would make the cluster's start-ups, not the driver, the
  bottleneck of this 2-core machine.
* Each driver is its own process, started after the cluster: its CPU seconds (getrusage, every
  thread of the driver, nothing of the cluster's) per trial, while the trials run (from the Tuner's
  creation to `fit` returning) and with our study's end; its RSS after the `--early`th trial end and
  after the last, the growth per trial between them.
* Writing per result: what each trial end of ours wrote (`TableWriter.last`): the part's bytes and
  seconds over the first and the last 100 trial ends, the rows written per trial end counting the
  merges, and the merges' and the statistics' counts and seconds.
* The machine is shared: the load average and the CPU share other processes took while each driver
  ran (bench/contention.py: all busy CPU time less the bench's own processes') are printed with each
  run.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.contention import CpuSampler  # noqa: E402

SPACE = Path(__file__).with_name("driver_cost.yaml")
TARGET_CPU_RATIO = 1.2  # ours / raw Tune's driver CPU seconds per trial, at most
TARGET_RSS_MB = 1.0  # driver RSS growth per trial, at most
NODES = 3
CPUS_PER_NODE = 2  # logical: the trials are no-ops
START_TRIES = 3
SOCKET_ROOM = 40  # characters of Ray's temp dir that keep its socket paths under 108 bytes
WINDOW = 100  # trial ends compared at the start and at the end of the study
MB = 2**20


def noop(config: dict[str, Any]) -> None:
    """One result shaped like a real trial's, from the configuration's hyperparameters only (our
    driver adds control keys to the config; both drivers' samplers must see the same objective),
    and return."""
    from ray import tune

    from study.trial_config import CONTROL_KEYS
    from study.trial_run import seed_prefix

    params = {k: v for k, v in config.items() if k not in CONTROL_KEYS}
    score = zlib.crc32(json.dumps(params, sort_keys=True, default=str).encode()) % 1000 / 1000
    result = {"epoch": 1, "whm": score, "time/total_s": 0.01}
    for seed in (0,):
        prefix = seed_prefix(seed)
        result.update({f"{prefix}recall/css/test@1": score / 2, f"{prefix}recall/css/test@10": score,
                       f"{prefix}recall/css/test@50": min(1.0, 2 * score), f"{prefix}whm": score})
    tune.report(result)


def meter(out: Path, tables=None):
    """A Tune callback, built in the driver (Ray imported): the driver's CPU seconds and RSS at each
    trial end, with what our tables wrote there (`TableWriter.last`), saved to `out` at the end
    (Tune may copy its callbacks, so the record travels through a file)."""
    from ray.tune import Callback

    class Meter(Callback):
        def __init__(self) -> None:
            self.ends = []

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            end = {"cpu_s": _cpu_s(), "rss": psutil.Process().memory_info().rss, "t": time.monotonic()}
            last = getattr(tables, "last", None)
            if last is not None:
                end.update(part_rows=last.part_rows, part_bytes=last.part_bytes, part_s=last.part_s,
                           merged_rows=last.merged_rows, merge_s=last.merge_s, ranked=last.ranked,
                           rank_s=last.rank_s)
            self.ends.append(end)

        def on_experiment_end(self, trials, **info) -> None:
            out.write_text(json.dumps(self.ends))

    return Meter()


def _cpu_s() -> float:
    """This process's CPU seconds, every thread, user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def drive_raw(configs: int, space, budget, work: Path) -> dict[str, Any]:
    """Raw Tune + OptunaSearch around `noop`: the baseline driver."""
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from study.space import define_by_run

    ends = work / "ends-raw.json"
    began_cpu, began, rss = _cpu_s(), time.monotonic(), psutil.Process().memory_info().rss
    tuner = tune.Tuner(
        tune.with_resources(noop, {"cpu": budget.trial_cpus}),
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(space=define_by_run(space), metric="whm", mode="max", seed=space.optuna_seed),
            num_samples=configs, max_concurrent_trials=budget.max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(name="raw", storage_path=str(work), verbose=0, callbacks=[meter(ends)]),
    )
    results = tuner.fit()
    cpu, wall = _cpu_s() - began_cpu, time.monotonic() - began
    return {"cpu_s": cpu, "fit_cpu_s": cpu, "wall_s": wall, "rss_began": rss, "trials": len(results),
            "errors": len(results.errors), "ends": json.loads(ends.read_text())}


def drive_ours(configs: int, space, budget, work: Path) -> dict[str, Any]:
    """cirstudy's driver (`study.run.fit_study`) around `noop`, then the study's end."""
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # as study.run sets it, before Tune reads it
    from ray import tune

    from study.run import fit_study
    from study.table_writer import TableWriter
    from study.trainable import StudySettings

    study_dir, ends = work / space.name, work / "ends-ours.json"
    cell_weights = space.cell_weights({"css": (1, 10, 50)})
    tables = TableWriter(study_dir, space, budget_name="smoke", epochs=budget.epochs, cell_weights=cell_weights,
                         manifests={})
    settings = StudySettings(seeds=space.seeds, budget=budget, datasets=space.datasets, cell_weights=cell_weights,
                             data_seed=space.data_seed, cache_dir=None, train_storage=str(study_dir / "train"))
    began_cpu, began, rss = _cpu_s(), time.monotonic(), psutil.Process().memory_info().rss
    results = fit_study(tune.with_resources(noop, {"cpu": budget.trial_cpus}), settings, space, budget,
                        study_dir=study_dir, tables=tables, scheduler="asha", callbacks=(meter(ends, tables),),
                        reuse_actors=True)
    fit_cpu, end_began = _cpu_s() - began_cpu, time.monotonic()
    frame = tables.write()  # the study's end: the tables whole, ranked, optuna.log
    return {"cpu_s": _cpu_s() - began_cpu, "fit_cpu_s": fit_cpu, "wall_s": time.monotonic() - began,
            "end_s": time.monotonic() - end_began, "rss_began": rss, "trials": len(results),
            "errors": len(results.errors), "rows": len(frame), "ends": json.loads(ends.read_text())}


def drive(arm: str, address: str, configs: int, work: Path, out: Path, *, profile: bool = False) -> None:
    """The driver process of one arm: join the cluster, run, write the measurements to `out`; with
    `profile`, also the driver's CPU per trial in each callback and searcher (`profiled`)."""
    import ray

    from study.space import load_space

    space = load_space(SPACE)
    budget = replace(space.budgets["smoke"], num_samples=configs)
    ray.init(address=address, log_to_driver=False, include_dashboard=False)
    work.mkdir(parents=True, exist_ok=True)
    run = drive_ours if arm == "ours" else drive_raw
    if not profile:
        out.write_text(json.dumps(run(configs, space, budget, work)))
        return
    profiler = cProfile.Profile(time.process_time)
    measured = profiler.runcall(run, configs, space, budget, work)
    measured["profile"] = profiled(pstats.Stats(profiler), measured["trials"])
    out.write_text(json.dumps(measured))


PROFILED = ("on_trial_start", "on_trial_result", "on_trial_complete", "on_trial_error", "suggest")
DISPATCH = ("callback.py", "concurrency_limiter.py", "search_generator.py")  # Tune's, around the others


def profiled(stats: pstats.Stats, trials: int) -> dict[str, float]:
    """ms of process CPU per trial in each module's Tune callback hooks and searchers' `suggest`,
    from a profile on the process clock: every thread's CPU while the function ran, so an upper
    bound on a busy machine. Tune's dispatch around them (DISPATCH) is left out."""
    found: dict[str, float] = {}
    for (filename, _, function), (_, _, _, cumulative, _) in stats.stats.items():
        if function not in PROFILED or Path(filename).name in DISPATCH:
            continue
        module = Path(filename).with_suffix("").parts[-2:]
        key = f"{'/'.join(module)}.{function}"
        found[key] = found.get(key, 0.0) + 1000 * cumulative / trials
    return dict(sorted(found.items(), key=lambda item: -item[1]))


def run_arm(arm: str, address: str, configs: int, work: Path, sampler, *, profile: bool = False) -> dict[str, Any]:
    """One driver process; returns its measurements with the machine's load while it ran."""
    out = work / f"{arm}.json"
    load_before, began = os.getloadavg()[0], time.time()
    with open(work / f"{arm}.log", "w") as log:
        code = subprocess.call([sys.executable, __file__, "--drive", arm, "--address", address, "--configs",
                                str(configs), "--work", str(work / arm), "--out", str(out)]
                               + (["--profile"] if profile else []), stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        tail = (work / f"{arm}.log").read_text()[-4000:]
        raise SystemExit(f"the {arm} driver failed (exit {code}); the end of its log:\n{tail}")
    sampler.sample()
    measured = json.loads(out.read_text())
    measured.update(load=(load_before, os.getloadavg()[0]), others_share=sampler.share(began, time.time()))
    return measured


def per_trial_cpu_ms(measured: dict[str, Any], key: str = "cpu_s") -> float:
    return 1000 * measured[key] / measured["trials"]


def rss_growth_mb(ends: list[dict[str, Any]], early: int) -> float:
    """Driver RSS growth per trial end between the `early`th trial end and the last, in MiB."""
    if len(ends) <= early:
        return float("nan")
    return (ends[-1]["rss"] - ends[early - 1]["rss"]) / (len(ends) - early) / MB


def writing(ends: list[dict[str, Any]], window: int) -> dict[str, float]:
    """What our trial ends wrote: part bytes and ms, mean over the first and the last `window` ends;
    rows written per trial end (parts and merges) over the first `window` ends and over them all;
    the merges and the statistics, how many and their seconds."""
    first, last = ends[:window], ends[-window:]
    def mean(items, key, scale=1.0):
        return scale * sum(e[key] for e in items) / len(items)
    def rows(items):
        return sum(e["part_rows"] + e["merged_rows"] for e in items) / len(items)
    return {"bytes_first": mean(first, "part_bytes"), "bytes_last": mean(last, "part_bytes"),
            "ms_first": mean(first, "part_s", 1000), "ms_last": mean(last, "part_s", 1000),
            "rows_first": rows(first), "rows_all": rows(ends),
            "merges": sum(1 for e in ends if e["merged_rows"]), "merge_s": sum(e["merge_s"] for e in ends),
            "ranks": sum(1 for e in ends if e["ranked"]), "rank_s": sum(e["rank_s"] for e in ends),
            "every_end_rows": sum(e["part_rows"] * (i + 1) for i, e in enumerate(ends)) / len(ends)}


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(ours: dict[str, Any], raw: dict[str, Any], configs: int, early: int, began: float) -> None:
    fit_ours, cpu_ours, cpu_raw = per_trial_cpu_ms(ours, "fit_cpu_s"), per_trial_cpu_ms(ours), per_trial_cpu_ms(raw)
    growth = {arm: rss_growth_mb(m["ends"], early) for arm, m in (("ours", ours), ("raw", raw))}
    window = min(WINDOW, len(ours["ends"]) // 2)  # the first and the last ends apart
    written = writing(ours["ends"], window)
    print(f"\ndriver cost per trial, {configs} configurations of a no-op trainable, {NODES}-node local cluster "
          f"({NODES} x {CPUS_PER_NODE} logical CPUs), {ours['trials']} / {raw['trials']} trials "
          f"({ours['errors']} / {raw['errors']} failed), concurrency as the space's budget")
    for arm, m in (("cirstudy", ours), ("raw Tune", raw)):
        print(f"  {arm:9s} driver: {m['cpu_s']:6.1f} CPU s in {m['wall_s']:6.1f} s wall "
              f"({per_trial_cpu_ms(m):5.1f} ms/trial; while trials ran {per_trial_cpu_ms(m, 'fit_cpu_s'):5.1f}), "
              f"RSS {m['rss_began'] / MB:5.0f} -> {m['ends'][-1]['rss'] / MB:5.0f} MiB; machine: load "
              f"{m['load'][0]:.1f} -> {m['load'][1]:.1f}, others took {m['others_share']:.0%} of the CPUs")
    print(f"  cirstudy's study end (tables whole from Tune's record, ranked, optuna.log): {ours['end_s']:.1f} s wall, "
          f"{ours['rows']} rows")
    print(f"\n{'figure':66s} {'measured':>22s} {'target':>10s}")
    for name, value, ms in (("driver CPU per trial while trials run, cirstudy / raw Tune", fit_ours / cpu_raw, fit_ours),
                            ("the same with cirstudy's study end", cpu_ours / cpu_raw, cpu_ours)):
        print(f"{name:66s} {value:8.2f}x ({ms:.0f}/{cpu_raw:.0f} ms) {'<= ' + str(TARGET_CPU_RATIO) + 'x':>10s}  "
              f"{verdict(value <= TARGET_CPU_RATIO)}")
    for arm in ("ours", "raw"):
        name = f"driver RSS growth per trial, trial {early} -> {configs}, {'cirstudy' if arm == 'ours' else 'raw Tune'}"
        value = growth[arm]
        print(f"{name:66s} {value * 1024:17.1f} KiB {'<= 1 MB':>10s}  {verdict(value <= TARGET_RSS_MB)}")
    print(f"{'bytes written per trial end, first / last ' + str(window):66s} "
          f"{written['bytes_first']:9.0f} / {written['bytes_last']:<9.0f} {'no growth':>10s}  "
          f"{verdict(written['bytes_last'] <= 1.1 * written['bytes_first'])}")
    print(f"{'ms per trial end (the part), first / last ' + str(window):66s} "
          f"{written['ms_first']:9.1f} / {written['ms_last']:<9.1f} {'no growth':>10s}  "
          f"{verdict(written['ms_last'] <= 1.5 * written['ms_first'])}")
    print(f"{'rows written per trial end with merges, first ' + str(window) + ' / all':66s} "
          f"{written['rows_first']:9.1f} / {written['rows_all']:<9.1f} {'O(1)':>10s}  "
          f"(rewriting the tables at every end: {written['every_end_rows']:.0f} / end)")
    n = len(ours["ends"])
    print(f"  merges of trials.parquet and history.parquet: {written['merges']}, {written['merge_s']:.1f} s "
          f"({1000 * written['merge_s'] / n:.1f} ms per trial end); statistics (ranking, gains, importance, "
          f"optuna.log): {written['ranks']} times, {written['rank_s']:.1f} s ({1000 * written['rank_s'] / n:.1f} ms "
          "per trial end)")
    for arm, m in (("cirstudy", ours), ("raw Tune", raw)):
        if "profile" in m:
            print(f"\n{arm} driver, ms of process CPU per trial (cProfile, all threads: upper bounds):")
            for name, ms in list(m["profile"].items())[:14]:
                print(f"  {ms:7.1f}  {name}")
    print(f"\nbench wall time {time.monotonic() - began:.0f} s; {os.cpu_count()} cores")


def start_cluster():
    """The local cluster, NODES nodes of CPUS_PER_NODE logical CPUs. Tried up to START_TRIES times a
    minute apart: Ray gives a node 30 s to register, which a busy machine sometimes exceeds."""
    from ray.cluster_utils import Cluster

    for attempt in range(1, START_TRIES + 1):
        cluster = Cluster()
        try:
            for _ in range(NODES):  # the first is the head
                cluster.add_node(num_cpus=CPUS_PER_NODE, include_dashboard=False)
            cluster.wait_for_nodes()
            return cluster
        except Exception as error:  # noqa: BLE001 - Ray raises a bare Exception on a start-up timeout
            cluster.shutdown()
            if attempt == START_TRIES:
                raise SystemExit(f"the local Ray cluster did not start in {START_TRIES} tries ({error}); the "
                                 "machine is too busy: try again later") from None
            print(f"the local Ray cluster did not start ({error}); trying again in a minute", file=sys.stderr,
                  flush=True)
            time.sleep(60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/driver_cost.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", type=int, default=1000, help="configurations per driver (default 1000)")
    parser.add_argument("--early", type=int, help="the trial end RSS growth is counted from (default configs / 5)")
    parser.add_argument("--work", type=Path, help="where the studies go (default: a temporary folder, removed)")
    parser.add_argument("--profile", action="store_true",
                        help="also print each driver's CPU per trial by callback and searcher (cProfile: the "
                             "figures above then include the profiler's own cost)")
    parser.add_argument("--drive", choices=("ours", "raw"), help=argparse.SUPPRESS)  # a driver process
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.configs < 10:
        parser.error(f"--configs must be at least 10, got {args.configs}")
    if args.drive:
        drive(args.drive, args.address, args.configs, args.work, args.out, profile=args.profile)
        return 0
    early = args.early or max(1, args.configs // 5)
    if not 1 <= early < args.configs:
        parser.error(f"--early must be between 1 and --configs - 1, got {early}")
    from ray._common.utils import get_default_system_temp_dir

    if len(get_default_system_temp_dir()) > SOCKET_ROOM:  # Ray's sockets: <temp>/ray/session_.../sockets/...
        os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="dc", dir="/tmp")

    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="driver_cost_") as scratch, CpuSampler() as sampler:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        cluster = start_cluster()
        try:
            measured = {}
            for arm in ("raw", "ours"):
                print(f"running {arm} ({args.configs} configurations) ...", file=sys.stderr, flush=True)
                measured[arm] = run_arm(arm, cluster.address, args.configs, work, sampler, profile=args.profile)
        finally:
            cluster.shutdown()
    report(measured["ours"], measured["raw"], args.configs, early, began)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
