"""A frozen-feature trial's training speed against the same composer trained end to end (issue 13).

    python bench/frozen_features.py                      # clip_rn50 + combiner, generated CSS at 224 px, batch 32
    python bench/frozen_features.py --encoder clip_vit_b32
    python bench/frozen_features.py --encoder clip_tiny --image-size 64   # CLIP's code paths in a minute

Every measurement runs the code a Ray Train worker runs (study.worker.SeedRun.train_epoch: the feed, the
objective, backward, the optimiser step) on the same data, composer, batch, seed and thread count; only
the budget's `encoder_lr_factor` / `feature_cache` differ:

  cached features           encoder_lr_factor 0, feature_cache true: the composer trains on rows of the
                            node's feature cache (study/feature_cache.py); no image is read, no encoder runs
  frozen encoders run live  encoder_lr_factor 0, feature_cache false: the frozen encoders run every step
  end to end                encoder_lr_factor 1: both encoders train with the composer

and the one-off cost of building the feature cache: every image of both splits and every distinct query
text embedded once (what the first trial of a study on a node pays). Each training figure is samples
per wall second and per CPU second of this process, over timed steps after one untimed warm-up step;
on a machine other processes load, the CPU-second figures are the ones to compare. Prints the speed-up
beside its target (cached / end to end >= 20x on CPU). About 4 minutes of CPU time with the defaults.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import torch  # noqa: E402

from study.budget import Budget, DatasetEntry  # noqa: E402
from study.data import open_dataset  # noqa: E402
from study.feature_cache import open_split_features  # noqa: E402
from study.trial_config import TrialConfig  # noqa: E402
from study.worker import DatasetShare, SeedRun  # noqa: E402

TARGET = 20.0  # cached features / end to end, training samples per second on CPU
CPU = torch.device("cpu")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="clip_rn50", help="an encoder of models.encoders.ENCODERS (default clip_rn50)")
    parser.add_argument("--weights", default=None, help="a local weights file of the encoder (default: random weights)")
    parser.add_argument("--composer", default="combiner")
    parser.add_argument("--dataset", default="css", help="a generated dataset (default css)")
    parser.add_argument("--scale", type=float, default=0.005, help="generated dataset size (default 0.005)")
    parser.add_argument("--image-size", type=int, default=224, help="image side the maps are decoded at (default 224)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="timed steps on cached features (default 20)")
    parser.add_argument("--live-steps", type=int, default=1, help="timed steps with frozen encoders run live (default 1)")
    parser.add_argument("--end-to-end-steps", type=int, default=2, help="timed steps end to end (default 2)")
    parser.add_argument("--threads", type=int, default=Budget.threads_per_worker,
                        help="torch threads, as the budget's threads_per_worker (default 1, a trial's default)")
    parser.add_argument("--cache-dir", default=None, help="data cache (default: a temporary folder)")
    args = parser.parse_args(argv)
    for name in ("steps", "live_steps", "end_to_end_steps", "batch_size", "threads", "image_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


@dataclass(frozen=True)
class Rate:
    """Training samples per wall second and per CPU second of this process (all its threads): on a
    machine others load too, the CPU-second figure is what the work itself costs."""

    wall: float
    cpu: float


def training_rate(run: SeedRun, steps: int) -> Rate:
    """`run`'s training rate over at least `steps` timed steps (as many epochs as that takes), after
    one untimed warm-up step."""
    per_epoch = min(steps, len(run.share.data.train.queries) // run.budget.batch_size)
    run.budget = replace(run.budget, max_steps_per_epoch=1)
    run.train_epoch(0, rank=0, world=1)  # warm-up: first-call allocations, lazy imports
    run.budget = replace(run.budget, max_steps_per_epoch=per_epoch)
    done, epoch = 0, 1
    wall, cpu = time.perf_counter(), time.process_time()
    while done < steps:
        run.train_epoch(epoch, rank=0, world=1)
        done, epoch = done + per_epoch, epoch + 1
    samples = done * run.budget.batch_size
    return Rate(samples / (time.perf_counter() - wall), samples / (time.process_time() - cpu))


def main(argv: list[str] | None = None) -> int:
    began_wall, began_cpu = time.perf_counter(), time.process_time()
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cache = Path(args.cache_dir or tempfile.mkdtemp(prefix="cirstudy-bench-frozen-"))
    data = open_dataset(args.dataset, scale=args.scale, cache_dir=cache, image_size=args.image_size)
    if len(data.train.queries) < args.batch_size:
        print(f"error: --scale {args.scale} gives {len(data.train.queries)} training queries, fewer than one batch of "
              f"{args.batch_size}: raise --scale or lower --batch-size", file=sys.stderr)
        return 2
    end_to_end = Budget(epochs=1, image_encoder=args.encoder, image_weights=args.weights, batch_size=args.batch_size,
                        train_eval_queries=1, threads_per_worker=args.threads)
    frozen = replace(end_to_end, encoder_lr_factor=0.0, feature_cache=False)
    cached = replace(frozen, feature_cache=True)
    trial = TrialConfig.from_params({"composer": args.composer, "K": 2}, seeds=(0,))

    def seed_run(budget: Budget) -> SeedRun:
        share = DatasetShare.open(DatasetEntry(args.dataset), data, budget=budget, data_seed=0, cache_dir=str(cache))
        return SeedRun.build(share, trial, budget, seed=0, device=CPU)

    print(f"{args.encoder} + {args.composer} on generated {args.dataset} (scale {args.scale}: "
          f"{len(data.train.image_paths)} + {len(data.test.image_paths)} images at {data.train.image_size} px), "
          f"batch {args.batch_size}, {args.threads} threads, weights {args.weights or 'random'}", flush=True)

    live = seed_run(frozen)  # frozen encoders, no cache yet
    wall, cpu = time.perf_counter(), time.process_time()
    features = {split: open_split_features(live.model, live.share.vocab, images=live.share.images[split],
                                           texts=[q.text for q in getattr(data, split).queries],
                                           encoder=args.encoder, cache_dir=cache, device=CPU)
                for split in ("train", "test")}
    build_wall, build_cpu = time.perf_counter() - wall, time.process_time() - cpu
    images = sum(f.shape[0] for f in features.values())
    texts = sum(len(f.to_list()) for f in features.values())
    print(f"feature cache, built once: {images} images + {texts} texts in {build_wall:.1f} s "
          f"({build_cpu:.1f} CPU s), into {next(iter(features.values())).folder.parent}", flush=True)

    rates = {}
    for label, budget, steps in (("cached features", cached, args.steps), ("frozen encoders run live", frozen,
                                 args.live_steps), ("end to end", end_to_end, args.end_to_end_steps)):
        rates[label] = training_rate(live if budget is frozen else seed_run(budget), steps)
        print(f"training samples/s, {label}: {rates[label].wall:.2f} per wall s, {rates[label].cpu:.2f} per CPU s "
              f"({steps} steps)", flush=True)

    for unit in ("wall", "cpu"):
        speedup = getattr(rates["cached features"], unit) / getattr(rates["end to end"], unit)
        over_live = getattr(rates["cached features"], unit) / getattr(rates["frozen encoders run live"], unit)
        verdict = "met" if speedup >= TARGET else "MISSED"
        print(f"speed-up per {unit} s, cached features / end to end: {speedup:.1f}x (target >= {TARGET:.0f}x: "
              f"{verdict}); cached / frozen live: {over_live:.1f}x")
    print(f"the cache's one-off build took the CPU time of {build_cpu * rates['end to end'].cpu:.0f} end-to-end "
          f"training samples\nbench: {time.perf_counter() - began_wall:.0f} s wall, {time.process_time() - began_cpu:.0f} CPU s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
