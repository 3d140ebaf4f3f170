"""One training run on Ray Train's workers (study/trainer.py builds the trainer): each trains one
configuration on every dataset of a study, evaluates Recall@K each epoch (test split and a fixed
train sample), checkpoints, and reports per-dataset recalls and the WHM (methods.md A.8, A.9).

    python -m study.train --composer tirg --dataset css --workers 2 --epochs 3
    python -m study.train --composer concat --dataset css --dataset states --param regularizer=ga --param ga_strength=0.01
    python -m study.train --composer tirg --dataset shoes --root /data/shoes --address 10.0.0.1:6379
    python -m study.train --composer concat --dataset fashioniq --root /data/fiq --option category=dress
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from models.encoders import ENCODERS
from study.budget import Budget, DatasetEntry
from study.data import DATASETS, GENERATORS, known_datasets, open_dataset
from study.data.checks import parse_options
from study.probes import PROBES_DIR, probe_pictures, write_probe_files
from study.ray_session import RayAddressError, check_reachable, ray_session
from study.space import SearchSpace, SpaceError, cell_weights
from study.trial_config import TrialConfig, check_capabilities
from study.trial_failure import nonfinite_loss, record_failure, recorded_failure
from study.trainer import CHECKPOINT_FILE, HISTORY_FILE, RANKS_FILE, RunSpec, build_trainer, reached  # noqa: F401 (reached: imported from here too)
from study.trial_run import TrialRun, ranks_frame
from study.worker import SeedRun

def open_study_data(entry: DatasetEntry, *, budget: Budget, data_seed: int, cache_dir: str | None,
                    allow_missing_images: bool = False):
    """A study's dataset at the size its entry, else its budget, asks for (None: the dataset's default)."""
    root = Path(entry.root) if entry.root else None
    return open_dataset(entry.name, root=root, seed=data_seed, scale=budget.scale, options=dict(entry.options),
                        cache_dir=Path(cache_dir) if cache_dir else None, allow_missing_images=allow_missing_images,
                        image_size=entry.image_size or budget.image_size)


def setup_record(spec: RunSpec, trial: TrialConfig, run: TrialRun, world: int) -> dict[str, Any]:
    """How this trial computed, stored with every result (issue 9: nothing silent)."""
    record: dict[str, Any] = {
        "setup/workers": world, "setup/threads": spec.budget.threads_per_worker,
        "setup/precision": spec.budget.precision, "setup/channels_last": spec.budget.channels_last,
        "setup/batch_size": spec.budget.batch_size, "setup/versions": package_versions(),
        "setup/scale": spec.budget.scale,  # the generated datasets' size: study.evaluate evaluates at it
    }
    for share in (r.share for r in run.runs[trial.seeds[0]]):
        record[f"setup/image_size/{share.key}"] = share.data.train.image_size
        record[f"setup/augment/{share.key}"] = share.entry.augment
    return record


def package_versions() -> str:
    """The versions that decide a trial's numbers, read from the installed metadata (no imports)."""
    import platform
    from importlib.metadata import version

    packages = ("torch", "torchvision", "ray", "optuna", "numpy")
    return json.dumps({"python": platform.python_version(), **{p: version(p) for p in packages}}, sort_keys=True)


def run_worker(spec: RunSpec) -> None:
    """One worker of the run (study.trainer.train_loop_per_worker calls it on every worker)."""
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    try:
        trial = spec.trial()
    except ValueError as error:  # every attempt would fail alike: record why and end (study/trial_failure.py)
        if rank == 0 and spec.run_dir:
            record_failure(spec.run_dir, f"its configuration is not valid: {error}")
        return
    device = ray.train.torch.get_device()
    torch.set_num_threads(spec.budget.threads_per_worker)  # the budget's, not Ray's placement: it changes the floats
    data = {e.key: open_study_data(e, budget=spec.budget, data_seed=spec.data_seed, cache_dir=spec.cache_dir,
                                   allow_missing_images=spec.allow_missing_images) for e in spec.datasets}
    run = TrialRun.build(trial, spec.budget, spec.datasets, data, cell_weights=spec.cell_weights,
                         data_seed=spec.data_seed, cache_dir=spec.cache_dir, rank=rank, world=world, device=device)
    _restore(run)
    if run.epoch >= spec.until:
        # Trained this far before (a trial re-run after a resume, or a rung reached before the driver
        # stopped): tell Tune the last result again, so the trial ends with the epoch it was asked for.
        # The trainable usually answers this itself without starting workers (`reached`); this is for
        # when it could not read the run folder from its node.
        ray.train.report(run.history[-1] if rank == 0 and run.history else {"epoch": run.epoch})
        return
    nodes = ",".join(sorted(set(_gather_node_ids(world))))
    setup = setup_record(spec, trial, run, world)
    for epoch in range(run.epoch, spec.until):
        began, cpu_began = time.time(), time.process_time()
        train_logs = run.train_epoch()
        failure = nonfinite_loss(train_logs, epoch=epoch + 1, world=world)
        if failure is not None:  # retrying would repeat it: record why and end (study/trial_failure.py)
            if rank == 0 and spec.run_dir:
                record_failure(spec.run_dir, failure)
            return
        train_s = time.time() - began
        evaluation, frames = run.evaluate()
        run.epoch = epoch + 1
        # Rank 0 alone draws the probes, on its replica (identical on every rank), for the first seed:
        # nothing collective. The other ranks wait for it in the next collective, as they would in
        # report()'s barrier anyway; drawn before `timed`, so the trial's wall and CPU time count it.
        probes_began = time.time()
        first_seed = run.runs[trial.seeds[0]]
        pictures = {r.share.key: probe_pictures(r, data_seed=spec.data_seed, gallery_emb=run.probe_galleries.get(r.share.key))
                    for r in first_seed} if rank == 0 else {}
        probes_s = time.time() - probes_began
        identical = _replicas_identical(run.all_runs(), world)
        randomness = run.gather_randomness()
        times = run.timed(time.time() - began, time.process_time() - cpu_began)
        if rank != 0:
            ray.train.report({"epoch": run.epoch})
            continue
        metrics = run.epoch_metrics(train_logs, evaluation)
        metrics.update(times)
        metrics.update(setup)
        metrics.update({
            "epoch": run.epoch, "until": spec.until, "config_id": trial.config_id,
            "check/replicas_identical": float(identical), "time/train_s": train_s, "time/probes_s": probes_s,
            "time/epoch_s": time.time() - began, "nodes": nodes, "driver_node": spec.driver_node,
        })
        run.history.append(metrics)
        run.ranks.extend(frames)
        # A temporary directory that is removed once report() has copied it into storage: one
        # checkpoint per trial is kept (num_to_keep=1) and nothing is left behind in /tmp.
        with tempfile.TemporaryDirectory(prefix="cirstudy-ckpt-") as directory:
            torch.save(run.state(randomness), os.path.join(directory, CHECKPOINT_FILE))
            Path(directory, HISTORY_FILE).write_text(json.dumps(run.history))
            ranks_frame(run.ranks).to_parquet(os.path.join(directory, RANKS_FILE), index=False)
            write_probe_files(pictures, Path(directory, PROBES_DIR))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def _restore(run: TrialRun) -> None:
    """Continue from the last checkpoint of this run (Train V2 resumes a stable run name)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return
    with checkpoint.as_directory() as directory:
        state = torch.load(os.path.join(directory, CHECKPOINT_FILE), map_location="cpu", weights_only=True)
        history = json.loads(Path(directory, HISTORY_FILE).read_text())
        ranks = pd.read_parquet(os.path.join(directory, RANKS_FILE))
    run.load_state(state, history, ranks)


def _replicas_identical(runs: list[SeedRun], world: int) -> bool:
    """Whether every rank holds bit-identical parameters (data parallelism, GA's noise included,
    must keep them so); a cheap fingerprint per rank, gathered."""
    if world == 1:
        return True
    digest = hashlib.sha1()
    for run in runs:
        for parameter in run.model.parameters():
            digest.update(parameter.detach().cpu().numpy().tobytes())
    fingerprints: list[Any] = [None] * world
    dist.all_gather_object(fingerprints, digest.hexdigest())
    return len(set(fingerprints)) == 1


def _gather_node_ids(world: int) -> list[str]:
    node = ray.get_runtime_context().get_node_id()
    if world == 1:
        return [node]
    nodes: list[Any] = [None] * world
    dist.all_gather_object(nodes, node)
    return nodes


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1] (a fraction of the real dataset's size), got {text}")
    return value


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m study.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--composer", default="tirg")
    parser.add_argument("--dataset", action="append", choices=known_datasets(), help="repeatable; default css")
    parser.add_argument("--root", type=Path, default=None, metavar="DIR",
                        help=f"the folder of a downloaded layout, read by the --dataset that has a loader of one "
                             f"({DATASETS.names()}); without it datasets are generated ({GENERATORS.names()})")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a loader option of the one --dataset, e.g. category=dress, split=compositions")
    parser.add_argument("--workers", type=_positive_int, default=1, help="data-parallel workers")
    parser.add_argument("--use-gpu", action="store_true")
    parser.add_argument("--epochs", type=_positive_int, default=3)
    parser.add_argument("--scale", type=_fraction, default=0.05, help="generated dataset size, in (0, 1] (1.0 = full)")
    parser.add_argument("--batch-size", type=_positive_int, default=32)
    parser.add_argument("--lr", type=float, default=Budget.lr, help="SGD learning rate")
    parser.add_argument("--embed-dim", type=_positive_int, default=128)
    parser.add_argument("--image-encoder", default="small_cnn", choices=ENCODERS.names())
    parser.add_argument("--K", type=lambda v: v if v == "batch" else int(v), default=2,
                        help="candidates per group in the matching loss (an int >= 2, or `batch`)")
    parser.add_argument("--seed", type=int, action="append", help="repeatable: every seed trains in this one run; default 0")
    parser.add_argument("--threads", type=_positive_int, default=1, help="intra-op threads per worker (they change the floats)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a regulariser hyperparameter, e.g. regularizer=ga, ga_strength=0.01")
    parser.add_argument("--storage", default="studies/_train")
    parser.add_argument("--address", default=None, help="an existing Ray cluster; default: local Ray")
    parser.add_argument("--from-trial", type=Path, default=None, metavar="TRIAL_DIR",
                        help="re-run one trial of a study from its record (studies/<name>/run_trial_...) and compare "
                             "its recalls with the study's; the other training options are the record's")
    return parser.parse_args(argv)


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _dataset_entries(names: list[str], root: Path | None, options: list[str] = ()) -> tuple[DatasetEntry, ...]:
    """`--dataset NAME ... [--root DIR] [--option NAME=VALUE ...]`: DIR is read by the one dataset with a
    loader of a real layout; without it every dataset is generated, so one that only reads a download is
    refused. Options are the loader's (checked when it opens) and need exactly one --dataset."""
    if options:
        if len(names) != 1:
            raise ValueError(f"--option goes to one dataset; got --dataset {names}: train them one per run, "
                             "or give each its options in a search space (python -m study.run)")
        parsed = tuple(sorted(parse_options(options).items()))
        return tuple(replace(entry, options=parsed) for entry in _dataset_entries(names, root))
    if root is None:
        downloads = [name for name in names if name not in GENERATORS]
        if downloads:
            raise ValueError(f"--dataset {downloads[0]} reads a downloaded layout: pass --root DIR (the folder "
                             f"holding it); datasets generated without one: {GENERATORS.names()}")
        return tuple(DatasetEntry(name) for name in names)
    readers = [name for name in names if name in DATASETS]
    if not readers:
        raise ValueError(f"--root {root}: none of --dataset {names} reads a downloaded layout (loaders: "
                         f"{DATASETS.names()}); leave --root out to generate them")
    if len(readers) > 1:
        raise ValueError(f"--root {root} would be read by each of {readers}: pass one of them per run (a search "
                         "space gives each dataset its own root: python -m study.run)")
    return tuple(DatasetEntry(name, root=str(root) if name in DATASETS else None) for name in names)


def _check_capabilities(params: dict[str, Any], seeds: tuple[int, ...], datasets: tuple[DatasetEntry, ...],
                        data: Mapping[str, Any]) -> None:
    """study.run's check before Ray starts, on the command line's one configuration: a space whose
    parameters are all fixed."""
    space = SearchSpace(name="train", path=Path("command line"), question="", datasets=datasets,
                        split_weights={"test": 1.0}, k_weights=None, seeds=seeds, parameters=(), fixed=params,
                        budgets={})
    try:
        check_capabilities(space, data)
    except SpaceError as error:  # its fix speaks of a space file; here the fix is another option
        reason = str(error).split("; restrict it")[0]
        raise SpaceError(f"{reason}; pass another --composer, or a --dataset that provides it") from None


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.from_trial is not None:
        return _from_trial(args)
    params: dict[str, Any] = {"composer": args.composer, "K": args.K}
    for item in args.param:
        if "=" not in item:
            print(f"error: --param needs NAME=VALUE, got {item!r}", file=sys.stderr)
            return 2
        name, value = item.split("=", 1)
        params[name] = _parse_value(value)
    try:
        if args.address is not None:
            check_reachable(args.address)  # seconds now, rather than Ray's minutes of retries after the data
        trial = TrialConfig.from_params(params, seeds=tuple(args.seed or [0]), where="command line")
        budget = Budget(
            num_samples=1, epochs=args.epochs, scale=args.scale, batch_size=args.batch_size, lr=args.lr,
            embed_dim=args.embed_dim,
            image_encoder=args.image_encoder, workers_per_trial=args.workers, threads_per_worker=args.threads,
            gpus_per_worker=1.0 if args.use_gpu else 0.0, cpus_per_worker=1.0,
        )
        datasets = _dataset_entries(args.dataset or ["css"], args.root, args.option)
    except ValueError as error:  # RayAddressError included
        print(f"error: {error}", file=sys.stderr)
        return 2
    if trial.candidates(budget.batch_size) > budget.batch_size:
        print(f"error: K={trial.k} exceeds the batch size {budget.batch_size}", file=sys.stderr)
        return 2
    print(f"preparing data: {[d.key for d in datasets]} at scale {args.scale}", flush=True)
    try:
        data = {d.key: open_study_data(d, budget=budget, data_seed=0, cache_dir=None) for d in datasets}
        _check_capabilities(params, trial.seeds, datasets, data)
    except ValueError as error:  # DatasetError, SpaceError
        print(f"error: {error}", file=sys.stderr)
        return 2
    weights = cell_weights(datasets, {"test": 1.0}, None, {key: d.recall_ks for key, d in data.items()})
    storage = str(Path(args.storage).resolve())
    run_name = f"train-{args.composer}-{int(time.time())}"
    spec = RunSpec(params=params, seeds=trial.seeds, budget=budget, datasets=datasets, cell_weights=weights,
                   until=budget.epochs, run_dir=f"{storage}/{run_name}")
    try:
        with ray_session(args.address, log_to_driver=True):  # the workers' output shows here, as before
            result = build_trainer(spec, run_name=run_name, storage_path=storage).fit()
    except RayAddressError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    failure = recorded_failure(spec.run_dir)
    if failure is not None:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    final = {k: v for k, v in result.metrics.items()
             if k.startswith(("recall/", "whm", "epoch", "check/", "seed/")) and "/breakdown/" not in k}
    for key in sorted(final):
        print(f"{key:28s} {final[key]:.4f}" if isinstance(final[key], float) else f"{key:28s} {final[key]}")
    print(f"checkpoint: {result.checkpoint.path if result.checkpoint else None}")
    return 0


def _from_trial(args: argparse.Namespace) -> int:
    from study.rerun import rerun
    from study.trial_record import TrialRecordError

    try:
        if args.address is not None:
            check_reachable(args.address)
        return rerun(args.from_trial, storage=Path(args.storage), address=args.address)
    except (TrialRecordError, RayAddressError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
