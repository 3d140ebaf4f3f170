"""A frozen-feature trial's training speed against the same composer trained end to end (issue 13).

    python bench/frozen_features.py                     # clip_rn50 + combiner on generated CSS at 224 px, batch 32
    python bench/frozen_features.py --encoder clip_tiny --image-size 64 --steps 20 --end-to-end-steps 3  # seconds

Every measurement runs the code a Ray Train worker runs (study.worker.SeedRun.train_epoch: the feed, the
objective, backward, the optimiser step) on the same data, composer, batch and seed; only the budget's
`encoder_lr_factor` / `feature_cache` differ:

  cached features   encoder_lr_factor 0, feature_cache true: the composer trains on rows of the node's
                    feature cache (study/feature_cache.py); no image is read, no encoder runs
  frozen, live      encoder_lr_factor 0, feature_cache false: the frozen encoders run forward every step
  end to end        encoder_lr_factor 1: both encoders train with the composer

and the one-off cost of building the feature cache: every image of both splits and every distinct
query text embedded once (what the first trial of a study on a node pays). Each training figure is
samples per second over timed steps after one untimed warm-up step. Prints each figure beside the
target (cached / end to end >= 20x on CPU). Bound the run with --steps and --end-to-end-steps:
the defaults take about 5 minutes on a 2-core machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
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
    parser.add_argument("--scale", type=float, default=0.01, help="generated dataset size (default 0.01: 190 + 191 images)")
    parser.add_argument("--image-size", type=int, default=224, help="image side the maps are decoded at (default 224)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30, help="timed steps on cached features (default 30)")
    parser.add_argument("--live-steps", type=int, default=2, help="timed steps with frozen encoders run live (default 2)")
    parser.add_argument("--end-to-end-steps", type=int, default=2, help="timed steps end to end (default 2)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: every core)")
    parser.add_argument("--cache-dir", default=None, help="data cache (default: a temporary folder)")
    args = parser.parse_args(argv)
    for name in ("steps", "live_steps", "end_to_end_steps", "batch_size", "threads", "image_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def samples_per_second(run: SeedRun, steps: int) -> float:
    """Training samples/s of `run` over `steps` timed steps, after one untimed warm-up step."""
    run.budget = replace(run.budget, max_steps_per_epoch=1)
    run.train_epoch(0, rank=0, world=1)  # warm-up: first-call allocations, lazy imports
    run.budget = replace(run.budget, max_steps_per_epoch=steps)
    began = time.perf_counter()
    run.train_epoch(1, rank=0, world=1)
    return steps * run.budget.batch_size / (time.perf_counter() - began)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cache = Path(args.cache_dir or tempfile.mkdtemp(prefix="cirstudy-bench-frozen-"))
    data = open_dataset(args.dataset, scale=args.scale, cache_dir=cache, image_size=args.image_size)
    steps_needed = max(args.steps, args.live_steps, args.end_to_end_steps) * args.batch_size
    if len(data.train.queries) < steps_needed:
        print(f"error: --scale {args.scale} gives {len(data.train.queries)} training queries; the steps need "
              f"{steps_needed}: raise --scale or lower the steps", file=sys.stderr)
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
    began = time.perf_counter()
    features = {split: open_split_features(live.model, live.share.vocab, images=live.share.images[split],
                                           texts=[q.text for q in getattr(data, split).queries],
                                           encoder=args.encoder, cache_dir=cache, device=CPU)
                for split in ("train", "test")}
    build_s = time.perf_counter() - began
    images = sum(f.shape[0] for f in features.values())
    texts = sum(len(f.to_list()) for f in features.values())
    print(f"feature cache: {images} images + {texts} texts embedded once in {build_s:.1f} s "
          f"({images / build_s:.1f} images/s incl. texts), into {next(iter(features.values())).folder.parent}",
          flush=True)

    rates = {"cached features": samples_per_second(seed_run(cached), args.steps)}
    print(f"training samples/s, cached features: {rates['cached features']:.1f} ({args.steps} steps)", flush=True)
    rates["frozen, live"] = samples_per_second(live, args.live_steps)
    print(f"training samples/s, frozen encoders run live: {rates['frozen, live']:.2f} ({args.live_steps} steps)",
          flush=True)
    rates["end to end"] = samples_per_second(seed_run(end_to_end), args.end_to_end_steps)
    print(f"training samples/s, end to end: {rates['end to end']:.2f} ({args.end_to_end_steps} steps)", flush=True)

    speedup = rates["cached features"] / rates["end to end"]
    verdict = "met" if speedup >= TARGET else "MISSED"
    print(f"speed-up, cached features / end to end: {speedup:.1f}x (target >= {TARGET:.0f}x: {verdict}); "
          f"cached / frozen live: {rates['cached features'] / rates['frozen, live']:.1f}x; the cache's one-off "
          f"build costs {build_s * rates['end to end']:.0f} end-to-end training samples' time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
