"""Classification of unseen adjective-noun compositions (issue 14; definitions in
docs/classification.md) on the composition split of the generated states data: closed-world and
all-pairs top-1 of each composer, mean over seeds with a 95% Student t interval over seeds.

    python bench/composition_table.py                       # tirg, concat, image_only x 3 seeds: ~5 CPU-minutes
    python bench/composition_table.py --seeds 1 --epochs 1 --composers tirg   # a quick look

Each run trains as a study trial does (study.worker.SeedRun, small_cnn, without Ray), on one
intra-op thread (the thread count changes the floats), then calls study.classify.classify_compositions.
The interval covers seed variation only, not the sampling of the test images (plain t over seeds,
study.stats.intervals.estimate_mean without query draws); fewer than 3 seeds give none.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from study.classify import ClassificationResult, classify_compositions  # noqa: E402
from study.data import open_dataset  # noqa: E402
from study.space import Budget  # noqa: E402
from study.stats.intervals import estimate_mean  # noqa: E402
from study.worker import seed_run  # noqa: E402

CPU = torch.device("cpu")


def train_and_classify(data, composer: str, seed: int, budget: Budget) -> ClassificationResult:
    # K = batch size: batch-based classification, as bench/composer_table.py trains
    run = seed_run(data, {"composer": composer, "K": budget.batch_size}, budget, seed=seed)
    for epoch in range(budget.epochs):
        run.train_epoch(epoch, rank=0, world=1)
    return classify_compositions(run.model, data, run.share.images, run.share.vocab, CPU)


def summary(values: list[float]) -> str:
    """"mean [low, high]" with the 95% t interval over seeds, or "mean [n/a]" below 3 seeds."""
    estimate = estimate_mean(np.array(values))
    low, high = estimate.interval(0.95, bounds=(0.0, 1.0))
    if np.isnan(low):
        return f"{100 * float(estimate.mean):5.1f} [   n/a     ]"
    return f"{100 * float(estimate.mean):5.1f} [{100 * float(low):4.1f}, {100 * float(high):4.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--composers", nargs="+", default=["tirg", "concat", "image_only"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.05)
    parser.add_argument("--split-seed", type=int, default=0, help="which pairs the composition split holds out")
    parser.add_argument("--embed-dim", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    began, cpu_began = time.time(), time.process_time()
    data = open_dataset("states", scale=args.scale, options={"split": "compositions", "split_seed": args.split_seed})
    budget = Budget(epochs=args.epochs, scale=args.scale, embed_dim=args.embed_dim, batch_size=32,
                    train_eval_queries=100)
    unseen = len(set(data.test.labels))
    every = len(set(data.train.labels) | set(data.test.labels))
    print(f"states at scale {args.scale}, split=compositions split_seed={args.split_seed}: {unseen} unseen of {every} "
          f"pairs, {len(data.train.image_paths)} train images ({len(data.train.queries)} queries), "
          f"{len(data.test.image_paths)} test images; small_cnn, D={args.embed_dim}, {args.epochs} epochs, "
          f"batch 32, K=32, {args.threads} thread(s), seeds 0..{args.seeds - 1}", flush=True)
    rows = []
    for composer in args.composers:
        results = []
        for seed in range(args.seeds):
            start = time.time()
            result = train_and_classify(data, composer, seed, budget)
            results.append(result)
            print(f"  {composer:12s} seed {seed}: closed world {100 * result.closed_world_top1:5.1f}  all pairs "
                  f"{100 * result.all_pairs_top1:5.1f}  ({time.time() - start:.0f} s)", flush=True)
        rows.append((composer, results))
    print(f"\ntop-1 accuracy (%) over {len(data.test.image_paths)} test images of unseen pairs, "
          f"mean [95% t interval over {args.seeds} seeds]")
    print(f"{'composer':12s} {'closed world':>20s} {'all pairs':>20s}   per seed (closed / all)")
    for composer, results in rows:
        closed = [r.closed_world_top1 for r in results]
        everything = [r.all_pairs_top1 for r in results]
        seeds = "  ".join(f"{100 * c:.1f}/{100 * a:.1f}" for c, a in zip(closed, everything))
        print(f"{composer:12s} {summary(closed):>20s} {summary(everything):>20s}   {seeds}")
    print(f"{'chance':12s} {100 / unseen:5.1f}{'':15s} {100 / every:5.2f}")
    print(f"\n{time.time() - began:.0f} s wall, {time.process_time() - cpu_began:.0f} s CPU of this process")


if __name__ == "__main__":
    main()
