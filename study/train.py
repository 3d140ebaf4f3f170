"""One training run on Ray Train: a TorchTrainer whose workers train one configuration on every
dataset of a study, evaluate Recall@K each epoch (test split and a fixed train sample), checkpoint,
and report per-dataset recalls and the WHM (methods.md A.8, A.9).

    python -m study.train --composer tirg --dataset css --workers 2 --epochs 3
    python -m study.train --composer concat --dataset css --dataset states --param regularizer=ga --param ga_strength=0.01
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import ray
import ray.train
import torch
import torch.distributed as dist
from ray.train.torch import TorchTrainer

from study.data import open_dataset
from study.metrics import whm
from study.space import Budget, DatasetEntry, cell_weights
from study.trial_config import TrialConfig
from study.worker import DatasetRun

CHECKPOINT_FILE = "state.pt"


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs; travels to the workers pickled, never as a raw dict."""

    trial: TrialConfig
    budget: Budget
    datasets: tuple[DatasetEntry, ...]
    cell_weights: Mapping[str, float]  # "css/test@1" -> weight (A.9)
    data_seed: int = 0
    cache_dir: str | None = None
    allow_missing_images: bool = False
    driver_node: str = ""  # node of the Tune function that launched this run (reported with the workers')


def open_study_data(entry: DatasetEntry, *, scale: float, data_seed: int, cache_dir: str | None,
                    allow_missing_images: bool = False):
    root = Path(entry.root) if entry.root else None
    return open_dataset(entry.name, root=root, seed=data_seed, scale=scale, options=dict(entry.options),
                        cache_dir=Path(cache_dir) if cache_dir else None, allow_missing_images=allow_missing_images)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    spec: RunSpec = config["spec"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(spec.trial.seed)  # identical initial replicas on every rank
    runs = [
        DatasetRun.build(
            open_study_data(e, scale=spec.budget.scale, data_seed=spec.data_seed, cache_dir=spec.cache_dir,
                            allow_missing_images=spec.allow_missing_images),
            spec.trial, spec.budget, name=e.key, data_seed=spec.data_seed, device=device,
        )
        for e in spec.datasets
    ]
    start_epoch = _restore(runs)
    nodes = _gather_node_ids(world)
    for epoch in range(start_epoch, spec.budget.epochs):
        began = time.time()
        metrics: dict[str, Any] = {"epoch": epoch + 1}
        for run in runs:
            metrics.update(run.train_epoch(epoch, rank, world))
        metrics["time/train_s"] = time.time() - began
        metrics["check/replicas_identical"] = float(_replicas_identical(runs, world))
        checkpoint = None
        if rank == 0:
            for run in runs:
                metrics.update(run.evaluate())
            metrics.update(category_averages(spec.datasets, metrics))
            metrics["whm"] = whm(
                [metrics[f"recall/{cell}"] for cell in spec.cell_weights], list(spec.cell_weights.values())
            )
            metrics["nodes"] = ",".join(sorted(set(nodes)))
            metrics["driver_node"] = spec.driver_node
            metrics["time/epoch_s"] = time.time() - began
            checkpoint_dir = tempfile.mkdtemp(prefix="cirstudy-ckpt-")
            torch.save({"epoch": epoch + 1, "runs": {r.name: r.state() for r in runs}},
                       os.path.join(checkpoint_dir, CHECKPOINT_FILE))
            checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir)
        ray.train.report(metrics, checkpoint=checkpoint)


def category_averages(datasets: tuple[DatasetEntry, ...], metrics: Mapping[str, float]) -> dict[str, float]:
    """Where a study lists one dataset several times with options (FashionIQ's dress, shirt and
    toptee), the mean recall over them: `breakdown/fashioniq/<split>/average@K`, CMAP's mR."""
    groups: dict[str, list[str]] = {}
    for entry in datasets:
        groups.setdefault(entry.name, []).append(entry.key)
    averages = {}
    for name, keys in groups.items():
        if len(keys) < 2:
            continue
        for key in [k for k in metrics if k.startswith(f"recall/{keys[0]}/")]:
            split_k = key.removeprefix(f"recall/{keys[0]}/")  # "test@10"
            values = [metrics[f"recall/{other}/{split_k}"] for other in keys]
            split, k = split_k.split("@")
            averages[f"breakdown/{name}/{split}/average@{k}"] = sum(values) / len(values)
    return averages


def _restore(runs: list[DatasetRun]) -> int:
    """Continue from the last checkpoint of this run (Train V2 resumes a stable run name)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as directory:
        state = torch.load(os.path.join(directory, CHECKPOINT_FILE), map_location="cpu", weights_only=True)
    for run in runs:
        run.load_state(state["runs"][run.name])
    return int(state["epoch"])


def _replicas_identical(runs: list[DatasetRun], world: int) -> bool:
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


def build_trainer(spec: RunSpec, *, run_name: str, storage_path: str, callbacks: list | None = None) -> TorchTrainer:
    budget = spec.budget
    resources = {"CPU": budget.cpus_per_worker}
    if budget.gpus_per_worker > 0:
        resources["GPU"] = budget.gpus_per_worker
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec},
        scaling_config=ray.train.ScalingConfig(
            num_workers=budget.workers_per_trial, use_gpu=budget.gpus_per_worker > 0,
            resources_per_worker=resources,
        ),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage_path, callbacks=callbacks or [],
            failure_config=ray.train.FailureConfig(max_failures=2),  # a lost node: restart from the checkpoint
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
    )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m study.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--composer", default="tirg")
    parser.add_argument("--dataset", action="append", help="repeatable; default css")
    parser.add_argument("--workers", type=int, default=1, help="data-parallel workers")
    parser.add_argument("--use-gpu", action="store_true")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.05, help="generated dataset size (1.0 = full)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--embed-dim", type=int, default=128)
    parser.add_argument("--image-encoder", default="small_cnn", choices=["small_cnn", "resnet18"])
    parser.add_argument("--K", type=lambda v: v if v == "batch" else int(v), default=2,
                        help="candidates per group in the matching loss (an int >= 2, or `batch`)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a regulariser hyperparameter, e.g. regularizer=ga, ga_strength=0.01")
    parser.add_argument("--storage", default="studies/_train")
    parser.add_argument("--address", default=None, help="an existing Ray cluster; default: local Ray")
    return parser.parse_args(argv)


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    params: dict[str, Any] = {"composer": args.composer, "K": args.K}
    for item in args.param:
        if "=" not in item:
            print(f"error: --param needs NAME=VALUE, got {item!r}", file=sys.stderr)
            return 2
        name, value = item.split("=", 1)
        params[name] = _parse_value(value)
    try:
        trial = TrialConfig.from_params(params, seeds=(args.seed,), where="command line")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    budget = Budget(
        num_samples=1, epochs=args.epochs, scale=args.scale, batch_size=args.batch_size, embed_dim=args.embed_dim,
        image_encoder=args.image_encoder, workers_per_trial=args.workers,
        gpus_per_worker=1.0 if args.use_gpu else 0.0, cpus_per_worker=1.0,
    )
    datasets = tuple(DatasetEntry(name) for name in (args.dataset or ["css"]))
    if trial.candidates(budget.batch_size) > budget.batch_size:
        print(f"error: K={trial.k} exceeds the batch size {budget.batch_size}", file=sys.stderr)
        return 2
    print(f"preparing data: {[d.key for d in datasets]} at scale {args.scale}", flush=True)
    ks = {d.key: open_study_data(d, scale=args.scale, data_seed=0, cache_dir=None).recall_ks for d in datasets}
    weights = cell_weights(datasets, {"test": 1.0}, {k: 1.0 for d in ks.values() for k in d}, ks)
    spec = RunSpec(trial=trial, budget=budget, datasets=datasets, cell_weights=weights)
    ray.init(address=args.address)
    storage = str(Path(args.storage).resolve())
    result = build_trainer(spec, run_name=f"train-{args.composer}-{int(time.time())}", storage_path=storage).fit()
    final = {k: v for k, v in result.metrics.items() if k.startswith(("recall/", "whm", "epoch", "check/"))}
    for key in sorted(final):
        print(f"{key:28s} {final[key]:.4f}" if isinstance(final[key], float) else f"{key:28s} {final[key]}")
    print(f"checkpoint: {result.checkpoint.path if result.checkpoint else None}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
