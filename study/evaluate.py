"""Evaluate a trained checkpoint on a dataset and write everything another tool needs to check it:

    python -m study.evaluate studies/ga_vs_dim/train/train-<trial>/checkpoint_<time> --dataset css --out /tmp/eval
    python -m study.evaluate CHECKPOINT --dataset fashioniq --root /data/fiq --option category=dress \
        --image-size 224 --cache-dir /nvme/cirstudy --out /tmp/eval

writes `recalls.json` (Recall@K and the breakdowns, plus the dataset's image manifest where it has
one), `queries.parquet` (a row per query: id, source, text, target, kind, rank of the first hit,
top-10 gallery ids), `gallery.parquet` (gallery id -> image path, label) and the embeddings
`query_embeddings.npy` / `gallery_embeddings.npy`, and `retrievals.png` (queries with their top-5).
Images are read from the node's image map (study/data/image_cache.py), decoded on first use; pass
the `--image-size` the model was trained at (default: the dataset's, 224 real / 64 generated).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.model import CirModel, ModelConfig
from models.text import Vocabulary
from study.data import DatasetError, open_dataset, open_image_map
from study.evaluation import evaluate_split
from study.metrics import top_k
from study.parquet_io import write_parquet_atomic
from study.retrieval_grid import write_retrieval_grid
from study.train import CHECKPOINT_FILE

TOP = 10
GRID_ROWS = 8  # queries drawn in retrievals.png, spread evenly over the split


def pick_run(runs: list[str], dataset: str, run: str | None) -> str:
    """`run` if given, else the checkpoint's one model of `dataset` (keys are `<dataset key>@seed<n>`)."""
    if run is not None:
        if run not in runs:
            raise ValueError(f"the checkpoint holds models {sorted(runs)}, not {run!r}; pick one with --run")
        return run
    mine = [r for r in runs if r == dataset or r.split("@")[0] == dataset]
    if len(mine) != 1:
        raise ValueError(f"the checkpoint holds models {sorted(runs)}: {len(mine)} for dataset {dataset!r}; pick one with --run")
    return mine[0]


def load_model(checkpoint: Path, dataset: str, run: str | None, device: torch.device) -> tuple[CirModel, Vocabulary]:
    path = checkpoint / CHECKPOINT_FILE if checkpoint.is_dir() else checkpoint
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint (expected a Ray Train checkpoint directory holding {CHECKPOINT_FILE})")
    state = torch.load(path, map_location="cpu", weights_only=True)
    runs = state["runs"]
    try:
        saved = runs[pick_run(list(runs), dataset, run)]
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    model = CirModel(ModelConfig(**saved["model_config"]))
    model.load_state_dict(saved["model"])
    return model.to(device).eval(), Vocabulary.from_list(saved["vocab"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a Train checkpoint directory (or its state.pt)")
    parser.add_argument("--dataset", required=True, help="dataset name, e.g. css, states, fashioniq")
    parser.add_argument("--root", type=Path, help="a real download; default: the generated dataset")
    parser.add_argument("--run", help="which of the checkpoint's models (`<dataset key>@seed<n>`); default: the one of --dataset")
    parser.add_argument("--split", default="test", choices=["test", "train"])
    parser.add_argument("--scale", type=float, default=0.05, help="generated dataset size (as trained)")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE", help="loader option, e.g. category=dress")
    parser.add_argument("--image-size", type=int, default=None, help="square side the model was trained at; default: the dataset's")
    parser.add_argument("--cache-dir", type=Path, default=None, help="cache folder (generated data, image maps under images/); "
                        "default $CIRSTUDY_CACHE or ~/.cache/cirstudy/data")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    try:
        options = dict(item.split("=", 1) for item in args.option)
        model, vocab = load_model(args.checkpoint, args.dataset, args.run, device)
        data = open_dataset(args.dataset, root=args.root, seed=args.data_seed, scale=args.scale, options=options,
                            image_size=args.image_size, cache_dir=args.cache_dir)
        split = getattr(data, args.split)
        images = open_image_map(split, cache_dir=args.cache_dir, progress=True)
    except (OSError, ValueError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = evaluate_split(model, split, images, split.queries, vocab, data.recall_ks, device,
                            label_parts=data.label_parts)
    sources = torch.tensor([q.source for q in split.queries], device=device)
    top = top_k(result.query_emb, result.gallery_emb, k=TOP, query_sources=sources).cpu().tolist()

    args.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "checkpoint": str(args.checkpoint), "dataset": args.dataset, "split": args.split,
        "queries": len(split.queries), "gallery": len(split.image_paths),
        "recall": {str(k): v for k, v in result.recalls.items()},
        "breakdowns": {part: {str(k): v for k, v in r.items()} for part, r in result.breakdowns.items()},
        "manifest": asdict(data.manifest) if data.manifest is not None else None,
    }
    tmp = args.out / ".recalls.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, args.out / "recalls.json")
    write_parquet_atomic(pd.DataFrame({
        "query_id": range(len(split.queries)),
        "source": [split.image_paths[q.source] for q in split.queries],
        "text": [q.text for q in split.queries],
        "target": [split.image_paths[q.target] for q in split.queries],
        "kind": [q.kind for q in split.queries],
        "first_hit_rank": result.ranks.cpu().numpy(),
        f"top{TOP}": top,
    }), args.out / "queries.parquet")
    write_parquet_atomic(pd.DataFrame({"gallery_id": range(len(split.image_paths)), "path": list(split.image_paths),
                                       "label": list(split.labels)}), args.out / "gallery.parquet")
    rows = list(range(0, len(split.queries), max(1, len(split.queries) // GRID_ROWS)))[:GRID_ROWS]
    write_retrieval_grid(split, images, rows, top, args.out / "retrievals.png")
    np.save(args.out / "query_embeddings.npy", result.query_emb.cpu().numpy())
    np.save(args.out / "gallery_embeddings.npy", result.gallery_emb.cpu().numpy())
    recalls = "  ".join(f"R@{k} {v:.4f}" for k, v in result.recalls.items())
    print(f"{args.dataset} {args.split}: {len(split.queries)} queries, {len(split.image_paths)} gallery images: {recalls}")
    for part, r in result.breakdowns.items():
        print(f"  {part:16s} " + "  ".join(f"R@{k} {v:.4f}" for k, v in r.items()))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
