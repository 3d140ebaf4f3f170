"""TIRG's composer comparison on our generated CSS: R@1 per composer over several seeds, printed
beside the ordering the TIRG paper reports on CSS (methods.md B.1, "3D->3D" column, recalled).

    python bench/composer_table.py                     # 5 composers x 3 seeds, about 15 min on 2 cores
    python bench/composer_table.py --epochs 2 --seeds 1 --composers concat tirg   # a quick look

The finding to reproduce: tirg above concat, both far above image_only and text_only. Each run
uses the same training path as a study trial (study.worker.SeedRun), without Ray.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from study.data import open_dataset  # noqa: E402
from study.space import Budget  # noqa: E402
from study.worker import seed_run  # noqa: E402

# TIRG paper, CSS R@1 (3D->3D), as recalled in methods.md B.1 [recalled, verify]
PAPER_R1 = {"image_only": 6.3, "text_only": 0.1, "concat": 60.6, "film": 65.6, "tirg": 73.7,
            "show_and_tell": 33.0, "param_hash": 60.5, "relationship": 62.1}


def train_once(data, composer: str, seed: int, budget: Budget) -> float:
    run = seed_run(data, {"composer": composer, "K": budget.batch_size}, budget, seed=seed)
    for epoch in range(budget.epochs):
        run.train_epoch(epoch, rank=0, world=1)
    return run.evaluate(rank=0, world=1)["test"].recalls[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--composers", nargs="+", default=["image_only", "text_only", "concat", "film", "tirg"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--scale", type=float, default=0.05)
    parser.add_argument("--embed-dim", type=int, default=128)
    args = parser.parse_args()
    data = open_dataset("css", scale=args.scale)
    # K = batch size: batch-based classification, the loss GA's code and TIRG's Fashion200k runs use
    budget = Budget(epochs=args.epochs, scale=args.scale, embed_dim=args.embed_dim, batch_size=32,
                    train_eval_queries=100)
    print(f"css at scale {args.scale}: {len(data.train.queries)} train / {len(data.test.queries)} test queries, "
          f"small_cnn, D={args.embed_dim}, {args.epochs} epochs, batch 32, K=32, seeds 0..{args.seeds - 1}")
    rows = []
    for composer in args.composers:
        began = time.time()
        recalls = [train_once(data, composer, seed, budget) for seed in range(args.seeds)]
        spread = statistics.stdev(recalls) if len(recalls) > 1 else 0.0
        rows.append((composer, statistics.mean(recalls), spread, recalls))
        print(f"  {composer:14s} R@1 {100 * statistics.mean(recalls):5.1f} +- {100 * spread:4.1f}  "
              f"({time.time() - began:.0f}s)", flush=True)
    print(f"\n{'composer':14s} {'ours R@1 (%)':>16s} {'TIRG paper CSS R@1':>19s}")
    for composer, mean, spread, _ in sorted(rows, key=lambda r: -r[1]):
        paper = PAPER_R1.get(composer)
        print(f"{composer:14s} {100 * mean:8.1f} +- {100 * spread:4.1f} {'' if paper is None else f'{paper:19.1f}'}")
    ours = [c for c, *_ in sorted(rows, key=lambda r: -r[1])]
    paper_order = sorted((c for c in ours if c in PAPER_R1), key=lambda c: -PAPER_R1[c])
    print(f"\nour order:   {' > '.join(ours)}\npaper order: {' > '.join(paper_order)}")


if __name__ == "__main__":
    main()
