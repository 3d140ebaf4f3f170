"""Does a composer learn the generated data? Test recall per epoch of one small configuration.

    python bench/generated_learning.py cirr --epochs 6 --scale 0.05
    python bench/generated_learning.py fashioniq --option category=dress --epochs 6 --scale 0.05

Trains tirg (small_cnn, D 64, batch 32, K 8, seed 0, one thread) on a generated dataset through the
code a Ray Train worker runs (study.worker.SeedRun), without Ray, and prints the test split's
Recall@K before training and after each epoch (plus Recall_subset@K where queries carry an img_set,
CIRR). A generator whose captions say what changes should climb well above epoch 0's chance level.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from study.budget import DatasetEntry
from study.data import open_dataset
from study.data.checks import parse_options
from study.evaluation import evaluate_split
from study.space import Budget
from study.subset_recall import has_subsets, subset_recalls
from study.trial_config import TrialConfig
from study.worker import DatasetShare, SeedRun


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="a generator, e.g. cirr, fashioniq")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE", help="loader option")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--scale", type=float, default=0.05)
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = parse_options(args.option)
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="generated-learning-"))
    budget = Budget(epochs=args.epochs, embed_dim=64, batch_size=32, train_eval_queries=50)
    data = open_dataset(args.dataset, scale=args.scale, cache_dir=cache, options=options)
    share = DatasetShare.open(DatasetEntry(args.dataset, options=tuple(options.items())), data, budget=budget,
                              data_seed=0, cache_dir=str(cache))
    trial = TrialConfig.from_params({"composer": "tirg", "K": 8}, seeds=(0,))
    run = SeedRun.build(share, trial, budget, seed=0, device=torch.device("cpu"))
    test = data.test
    print(f"{args.dataset} {options or ''} scale {args.scale}: {len(data.train.queries)} train queries, "
          f"{len(test.queries)} test queries, {len(test.image_paths)} test images")
    start = time.monotonic()
    for epoch in range(args.epochs + 1):
        if epoch:
            run.train_epoch(epoch - 1, rank=0, world=1)
        result = evaluate_split(run.model, test, share.images["test"], test.queries, share.vocab, data.recall_ks,
                                torch.device("cpu"))
        line = "  ".join(f"R@{k} {v:.3f}" for k, v in result.recalls.items())
        if has_subsets(test.queries):
            subset = subset_recalls(result.query_emb, result.gallery_emb, test.queries, test.labels)
            line += "  |  " + "  ".join(f"Rs@{k} {v:.3f}" for k, v in subset.items())
        print(f"epoch {epoch}: {line}  ({time.monotonic() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
