"""Run a study: `python -m study.run --space ga_vs_dim`.

Loads and validates `search_spaces/<space>.yaml` (a bad file fails here, naming file, line and fix,
before Ray starts), generates the datasets it needs and decodes their images once into the node's
cache, then runs Ray Tune with Optuna and a scheduler on an embedded local Ray (or `--address` for a
cluster); each trial is one configuration with all its seeds, in one TorchTrainer. Writes
`studies/<name>/trials.parquet`, `history.parquet`, `ranks/`, `ranking.parquet`, `gains.parquet`,
`importance.parquet`, `optuna.log` (as trials end: study/table_writer.py) and TensorBoard files, and
prints the ranking by WHM.

    python -m study.run --space ga_vs_dim --budget smoke
    python -m study.run --space ga_vs_dim --scheduler sync  # stop decisions independent of timing
    python -m study.run --space ga_vs_dim --resume          # continue an interrupted study
    tensorboard --logdir studies/ga_vs_dim
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

# Ray's auto TBX logger writes one HParams experiment per trial, hiding conditional parameters;
# study.tensorboard writes the dashboard instead. Must be set before ray.tune is imported.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

from study.budget import SCHEDULERS  # noqa: E402
from study.space import BUDGET_NAMES, SearchSpace, SpaceError, load_space  # noqa: E402
from study.trial_config import check_capabilities, validate_space  # noqa: E402

if TYPE_CHECKING:
    from study.table_writer import TableWriter


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m study.run", description="Run a cirstudy hyperparameter study.")
    parser.add_argument("--space", required=True, help="a name in search_spaces/ or a path to a .yaml file")
    parser.add_argument("--budget", default="default", choices=BUDGET_NAMES)
    parser.add_argument("--scheduler", default="asha", choices=SCHEDULERS,
                        help="asha: asynchronous early stopping (default); sync: successive halving by rungs, "
                             "whose stop decisions do not depend on the order results arrive in, so two runs "
                             "give identical tables")
    parser.add_argument("--num-samples", type=int, help="configurations to try (each runs once per seed)")
    parser.add_argument("--address", help="an existing Ray cluster (e.g. auto, or ray://head:10001); default: local Ray")
    parser.add_argument("--storage", default="studies", help="parent directory of the study (shared storage on a cluster)")
    parser.add_argument("--name", help="study name (default: the space's name)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted study of the same name")
    parser.add_argument("--workers-per-trial", type=int, help="data-parallel Ray Train workers per trial")
    parser.add_argument("--gpus-per-worker", type=float, help="GPUs per worker (0 = CPU)")
    parser.add_argument("--allow-missing-images", action="store_true",
                        help="run although a real dataset lists images that are absent (their queries are dropped; "
                             "the manifest is stored with the results)")
    parser.add_argument("--cache-dir", help="where generated datasets are cached (default ~/.cache/cirstudy/data)")
    return parser.parse_args(argv)


def _budget(space: SearchSpace, args: argparse.Namespace):
    if args.budget not in space.budgets:
        raise SpaceError(f"{space.path}: no budget {args.budget!r}; this space has {sorted(space.budgets)}")
    budget = space.budgets[args.budget]
    overrides = {
        "num_samples": args.num_samples, "workers_per_trial": args.workers_per_trial,
        "gpus_per_worker": args.gpus_per_worker,
    }
    for name, value in overrides.items():
        if value is not None and (not math.isfinite(value) or value < 0 or (name != "gpus_per_worker" and value < 1)):
            raise SpaceError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    try:
        budget = replace(budget, **{k: v for k, v in overrides.items() if v is not None})
    except ValueError as error:
        raise SpaceError(f"{space.path}: budget {args.budget!r} with the command-line overrides: {error}") from None
    if budget.gpus_per_worker == 0:
        for name, wanted in (("precision", budget.precision == "bf16"), ("sync_batchnorm", budget.sync_batchnorm)):
            if wanted:
                raise SpaceError(f"{space.path}: budget {args.budget!r} sets `{name}`, which needs CUDA workers; "
                                 "set gpus_per_worker > 0 or remove it")
    return budget


STUDY_FILE = "study.json"  # how the study was started: a resume must use the same


def _study_record(space: SearchSpace, budget, args: argparse.Namespace) -> dict:
    from study.train import package_versions

    return {"space": space.name, "space_path": str(space.path), "budget_name": args.budget, "budget": asdict(budget),
            "scheduler": args.scheduler, "seeds": list(space.seeds), "versions": json.loads(package_versions())}


def _check_resume(study_dir: Path, record: dict) -> None:
    """`--resume` continues the study it finds only with the budget and scheduler it was started with."""
    path = study_dir / STUDY_FILE
    if not path.is_file():
        return
    saved = json.loads(path.read_text())
    for key in ("budget_name", "budget", "scheduler", "seeds"):
        if saved.get(key) != record[key]:
            raise SpaceError(
                f"{path}: this study was started with {key} {saved.get(key)!r}, not {record[key]!r}; resume it "
                f"with the same options (--budget {saved.get('budget_name')} --scheduler {saved.get('scheduler')}), "
                "or start a new study with --name"
            )


def _write_study_record(study_dir: Path, space: SearchSpace, record: dict) -> None:
    study_dir.mkdir(parents=True, exist_ok=True)
    for name, text in ((STUDY_FILE, json.dumps(record, indent=1) + "\n"), ("space.yaml", space.path.read_text())):
        temporary = study_dir / f".{name}.tmp"
        temporary.write_text(text)
        temporary.replace(study_dir / name)


MIN_FREE_BYTES = 1 << 30  # checkpoints, tables and TensorBoard files of a study need room


def _check_storage(study_dir: Path) -> None:
    """The study folder can be made, written to, and has room, before anything else runs."""
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
        probe = study_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
        free = shutil.disk_usage(study_dir).free
    except OSError as error:
        raise SpaceError(f"--storage: cannot write the study folder {study_dir} ({error.strerror or error}); "
                         "pass --storage a writable folder (shared storage on a cluster)") from None
    if free < MIN_FREE_BYTES:
        raise SpaceError(f"--storage: {study_dir} has {free / 2**20:.0f} MiB free; a study needs at least "
                         f"{MIN_FREE_BYTES / 2**30:.0f} GiB for checkpoints and tables: free some space or "
                         "pass --storage elsewhere")


def _prepare_data(space: SearchSpace, budget, args: argparse.Namespace) -> dict:
    """Generate (cached) or read every dataset of the study before Ray starts: a broken dataset
    fails here, and trials on this node find the generated data ready."""
    from study.train import open_study_data

    from study.data.cirr import targets_hidden
    from study.data.image_cache import open_image_map

    datasets = {}
    for entry in space.datasets:
        began = time.time()
        print(f"preparing dataset {entry.key} (scale {budget.scale}) ...", file=sys.stderr, flush=True)
        data = open_study_data(entry, budget=budget, data_seed=space.data_seed, cache_dir=args.cache_dir,
                               allow_missing_images=args.allow_missing_images)
        if targets_hidden(data.test):
            raise SpaceError(f"dataset {entry.key}: its test split's targets are hidden (CIRR's test1), so no "
                             f"trial could be scored; study on split: val and write test1's server files with "
                             f"`python -m study.evaluate CHECKPOINT --dataset cirr --root ... --option split=test1`")
        for split in (data.train, data.test):  # decoded once into this node's cache; trials map it
            open_image_map(split, cache_dir=Path(args.cache_dir) if args.cache_dir else None, progress=True)
        datasets[entry.key] = data
        print(
            f"  {entry.key}: {len(data.train.image_paths)} train / {len(data.test.image_paths)} test images at "
            f"{data.train.image_size} px, {len(data.train.queries)} / {len(data.test.queries)} queries "
            f"({time.time() - began:.1f}s)", file=sys.stderr, flush=True,
        )
    return datasets


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    began = time.time()
    try:
        space = load_space(args.space)
        budget = _budget(space, args)
        space = space.for_budget(budget)
        validate_space(space, budget)
    except SpaceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    name = args.name or space.name
    study_dir = (Path(args.storage) / name).resolve()
    if (study_dir / "tuner.pkl").exists() and not args.resume:
        print(f"error: {study_dir} already holds a study; pass --resume to continue it, "
              f"or --name to start another", file=sys.stderr)
        return 2
    if args.resume and not (study_dir / "tuner.pkl").exists():
        print(f"error: --resume: no study to continue in {study_dir}", file=sys.stderr)
        return 2
    from study.data import DatasetError
    from study.ray_session import RayAddressError, check_reachable
    from study.resources import check_resources, local_node_shapes

    record = _study_record(space, budget, args)
    try:
        if args.resume:
            _check_resume(study_dir, record)
        _check_storage(study_dir)
        if args.address is None:
            check_resources(budget, local_node_shapes(), where="this machine", budget_name=args.budget)
        else:
            check_reachable(args.address)
        datasets = _prepare_data(space, budget, args)
        check_capabilities(space, datasets)
        cell_weights = space.cell_weights({key: tuple(data.recall_ks) for key, data in datasets.items()})
    except (DatasetError, SpaceError, RayAddressError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from study.table_writer import TableWriter

    _write_study_record(study_dir, space, record)
    manifests = {key: data.manifest for key, data in datasets.items()}
    tables = TableWriter(study_dir, space, budget_name=args.budget, epochs=budget.epochs, cell_weights=cell_weights,
                         manifests=manifests)
    try:
        _tune(space, budget, args, study_dir, cell_weights, tables)
    except (SpaceError, RayAddressError) as error:  # what the cluster offers, checked once connected
        print(f"error: {error}", file=sys.stderr)
        return 2
    return _report(space, study_dir, tables, began, cache_dir=args.cache_dir,
                   reconstruction_steps=budget.reconstruction_steps)


def _tune(space, budget, args, study_dir: Path, cell_weights, tables: TableWriter):
    from study.ray_session import ray_session
    from study.stop_signal import sigterm_as_sigint
    from study.trainer import start_train_coordinator

    record = study_dir / ".ray-session"  # a local Ray's session, so a resume can stop what a SIGKILL left
    with ray_session(args.address, record=record) as address, sigterm_as_sigint():  # after ray.init's own handler
        if args.address is not None:
            from study.resources import check_resources, cluster_node_shapes

            check_resources(budget, cluster_node_shapes(), where=f"the cluster at {address}", budget_name=args.budget)
        if "://" not in address:
            start_train_coordinator()
        return _fit(space, budget, args, study_dir, cell_weights, tables)


def _fit(space, budget, args, study_dir: Path, cell_weights, tables: TableWriter):
    from study.trainable import StudySettings, trainable, trials_end_by_themselves

    settings = StudySettings(
        seeds=space.seeds, budget=budget, datasets=space.datasets, cell_weights=cell_weights,
        data_seed=space.data_seed, cache_dir=args.cache_dir, train_storage=str(study_dir / "train"),
        allow_missing_images=args.allow_missing_images,
    )
    return fit_study(trainable(settings), settings, space, budget, study_dir=study_dir, tables=tables,
                     scheduler=args.scheduler, resume=args.resume,
                     reuse_actors=trials_end_by_themselves(budget, args.scheduler))


def fit_study(trainable, settings, space: SearchSpace, budget, *, study_dir: Path, tables: TableWriter,
              scheduler: str, resume: bool = False, callbacks: tuple = (), reuse_actors: bool = False):
    """Tune around `trainable` with the study's search, scheduler and callbacks (Tune's JSON and CSV
    loggers, TensorBoard, the tables, progress, stop signal, trial records, then `callbacks`); on an
    initialised Ray. `reuse_actors`: a finished trial's process runs the next trial (see
    study.trainable.trials_end_by_themselves for when that is safe); bench/driver_cost.py passes it
    with a no-op trainable, to measure what the driver adds per trial without a process start in the way."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from study.progress import ProgressCallback
    from study.stop_signal import StopSignalCallback
    from study.table_writer import TablesCallback
    from study.search import build_search
    from study.tensorboard import TensorBoardCallback, write_hparams_config

    study_dir.mkdir(parents=True, exist_ok=True)
    write_hparams_config(study_dir, space, ["whm", *(f"recall/{cell}" for cell in settings.cell_weights)])
    if resume:
        print(f"resuming {study_dir}", file=sys.stderr, flush=True)
        tuner = tune.Tuner.restore(str(study_dir), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        search, trial_scheduler, trials = build_search(space, budget, scheduler)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=search, scheduler=trial_scheduler, num_samples=trials,
                max_concurrent_trials=budget.max_concurrent, reuse_actors=reuse_actors,
            ),
            run_config=tune.RunConfig(
                name=study_dir.name, storage_path=str(study_dir.parent), verbose=0,
                callbacks=[JsonLoggerCallback(), CSVLoggerCallback(),  # Tune's own, minus its TBX logger
                           TensorBoardCallback(study_dir, space),
                           TablesCallback(tables),  # before the progress line: "finished" means written
                           ProgressCallback(budget.epochs), StopSignalCallback(), _record_callback(settings, tables),
                           *callbacks],
                failure_config=tune.FailureConfig(max_failures=1),
            ),
        )
    return tuner.fit()


def _record_callback(settings, tables: TableWriter):
    """Each trial's record.json: what `study.train --from-trial` re-runs it from."""
    from study.train import package_versions
    from study.trial_record import TrialRecordCallback

    return TrialRecordCallback(
        seeds=settings.seeds, budget=settings.budget, datasets=settings.datasets, cell_weights=settings.cell_weights,
        data_seed=settings.data_seed, cache_dir=settings.cache_dir, manifests=tables.manifests,
        versions=json.loads(package_versions()), allow_missing_images=settings.allow_missing_images,
    )


def _report(space: SearchSpace, study_dir: Path, tables: TableWriter, began: float, *, cache_dir: str | None,
            reconstruction_steps: int) -> int:
    from study import results
    from study.optuna_export import write_optuna_journal
    from study.stop_signal import stop_requested

    frame = tables.write(rank=False)  # the ranking follows, printed
    configs = frame.drop_duplicates("config_id") if len(frame) else frame
    errors = int((configs["status"] == "ERROR").sum()) if len(configs) else 0
    unfinished = int((~configs["status"].isin(["TERMINATED", "ERROR"])).sum()) if len(configs) else 0
    print(f"\n{space.name}: {len(configs)} configurations x {len(space.seeds)} seeds ({errors} failed, "
          f"{unfinished} unfinished) in {time.time() - began:.0f}s")
    results.main([str(study_dir), "--write"])
    if (study_dir / "ranking.parquet").is_file():  # the final ranking's values; nothing written when unchanged
        write_optuna_journal(study_dir, space)
    print(f"\nwritten: {study_dir}/trials.parquet, history.parquet, ranks/, ranking.parquet, gains.parquet, "
          f"importance.parquet, optuna.log\nlook at it: python -m study.report {study_dir}; "
          f"tensorboard --logdir {study_dir}; optuna-dashboard {study_dir}/optuna.log")
    if unfinished or stop_requested():  # a study stopped between rungs has no unfinished row
        print("interrupted: continue with the same command plus --resume", file=sys.stderr)
        return 130
    if errors < len(configs) and reconstruction_steps:  # the best configuration's composed features as images
        from study.reconstruct import reconstruct_for_study
        from study.reconstruct_decoder import FitConfig

        reconstruct_for_study(study_dir, cache_dir=cache_dir, fit=FitConfig(steps=reconstruction_steps))
    return 1 if len(configs) and errors == len(configs) else 0


if __name__ == "__main__":
    exit_code = main()
    # Everything is written and Ray is stopped. The interpreter's teardown would then walk the whole
    # heap (torch, Ray, pandas) for reference cycles, seconds at the end of every study: in
    # bench/scheduling_efficiency.py the last trial's end to the process's end fell from 10.3 s to
    # 7.6 s. Frozen objects are left to the operating system; what holds data (tables, TensorBoard
    # files, the checkpoints) was closed before main returned.
    gc.freeze()
    raise SystemExit(exit_code)
