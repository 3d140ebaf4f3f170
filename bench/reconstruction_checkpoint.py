"""A short real training run on the generated CSS, saved as a checkpoint that study.evaluate and
study.reconstruct read: what docs/reconstruction.png was drawn from.

    python bench/reconstruction_checkpoint.py --out /tmp/recon/checkpoint          # tirg, 8 epochs, scale 0.05
    python -m study.reconstruct /tmp/recon/checkpoint --dataset css --out /tmp/recon/grid

Trains one seed the way a study trial does (study.worker.SeedRun, as bench/composer_table.py), without
Ray, and writes `state.pt` ({"epoch", "runs": {"css@seed<s>": SeedRun.state()}}, study/train.py's
layout) and `history.json` (the scale and image size it trained at, and its test recalls). Prints
the test R@1 / R@10 it reached.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from study.data import open_dataset  # noqa: E402
from study.space import Budget  # noqa: E402
from study.train import CHECKPOINT_FILE, HISTORY_FILE  # noqa: E402
from study.worker import seed_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the checkpoint folder to write")
    parser.add_argument("--composer", default="tirg")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--scale", type=float, default=0.05)
    parser.add_argument("--embed-dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = open_dataset("css", scale=args.scale)
    budget = Budget(epochs=args.epochs, scale=args.scale, embed_dim=args.embed_dim, batch_size=32,
                    train_eval_queries=100)
    run = seed_run(data, {"composer": args.composer, "K": budget.batch_size}, budget, seed=args.seed)
    began = time.time()
    for epoch in range(args.epochs):
        run.train_epoch(epoch, rank=0, world=1)
    recalls = run.evaluate(rank=0, world=1)["test"].recalls
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": args.epochs, "runs": {run.name: run.state()}}, args.out / CHECKPOINT_FILE)
    history = {"epoch": args.epochs, "setup/scale": args.scale, "setup/image_size/css": data.train.image_size,
               **{f"recall/css/test@{k}": v for k, v in recalls.items()}}
    (args.out / HISTORY_FILE).write_text(json.dumps([history], indent=1))
    print(f"{args.composer} on css (scale {args.scale}, D {args.embed_dim}), {args.epochs} epochs in "
          f"{time.time() - began:.0f} s: test R@1 {recalls[1]:.3f}, R@10 {recalls[10]:.3f}; wrote {args.out}")


if __name__ == "__main__":
    main()
