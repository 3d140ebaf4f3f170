"""Evaluate a trained checkpoint on a dataset and write everything another tool needs to check it:

    python -m study.evaluate studies/ga_vs_dim/train/train-<trial>/checkpoint_<time> --dataset css --out /tmp/eval
    python -m study.evaluate CHECKPOINT --dataset fashioniq --root /data/fiq --option category=dress \
        --image-size 224 --cache-dir /nvme/cirstudy --out /tmp/eval
    python -m study.evaluate CHECKPOINT --dataset cirr --root /data/CIRR --option split=test1 --out /tmp/cirr

writes `recalls.json` (Recall@K and the breakdowns, plus the dataset's image manifest where it has
one), `queries.parquet` (a row per query: id, source, text, target, kind, rank of the first hit,
top-10 gallery ids), `gallery.parquet` (gallery id -> image path, label) and the embeddings
`query_embeddings.npy` / `gallery_embeddings.npy`, and `retrievals.png` (queries with their top-5).
Where queries carry an img_set (CIRR), `recalls.json` also holds Recall_subset@{1, 2, 3}
(study/subset_recall.py). Where the targets are hidden (CIRR's test1, --option split=test1) no recall
can be computed: it writes the two files CIRR's evaluation server takes instead,
`recall_submission.json` and `recall_subset_submission.json` (study/cirr_server.py), beside the
embeddings. Images are read from the node's image map (study/data/image_cache.py), decoded on first use.

The generated dataset's scale and the image size default to the ones the model was trained at, read
from the `history.json` beside `state.pt` (study/train.py setup_record); another `--scale` or
`--image-size` is refused unless `--allow-other-scale`. A checkpoint that does not record them is
evaluated at --scale (default 0.05) and the dataset's image size (224 real / 64 generated), with a
warning. Bad input (an unreadable checkpoint, a device this machine lacks, an --out that cannot be
written) ends with one message and exit code 2 before anything is evaluated.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from models.model import CirModel, ModelConfig
from models.text import Vocabulary
from study.data import DatasetError, ImageMap, Split, open_dataset, open_image_map
from study.data.checks import parse_options
from study.data.cirr import targets_hidden
from study.cirr_server import write_server_files
from study.evaluation import embed_gallery, embed_queries, evaluate_split
from study.metrics import top_k
from study.parquet_io import write_parquet_atomic
from study.retrieval_grid import write_retrieval_grid
from study.train import CHECKPOINT_FILE, HISTORY_FILE

TOP = 10
GRID_ROWS = 8  # queries drawn in retrievals.png, spread evenly over the split
DEFAULT_SCALE = 0.05  # the budget's default (study/budget.py), for a checkpoint that does not record its scale


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


def checkpoint_file(checkpoint: Path) -> Path:
    """The state.pt of a Train checkpoint directory (or the file itself)."""
    path = checkpoint / CHECKPOINT_FILE if checkpoint.is_dir() else checkpoint
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint (expected a Ray Train checkpoint directory holding {CHECKPOINT_FILE})")
    return path


def read_state(path: Path) -> dict[str, Any]:
    fix = "pass the checkpoint_<time> folder of a run that reported, or copy the file again if it was cut short"
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; torch.load's own errors on others mislead
        raise ValueError(f"{path}: not a readable checkpoint (not a complete torch.save archive: cut short, or "
                         f"another kind of file); {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch.load raises pickle, zip, EOF and runtime errors alike
        reason = (str(error).strip().splitlines() or [""])[0].split(". ")[0][:160]
        raise ValueError(f"{path}: not a readable checkpoint ({type(error).__name__}: {reason}); {fix}") from None
    if not isinstance(state, dict) or not isinstance(state.get("runs"), dict):
        raise ValueError(f"{path}: not a readable checkpoint (no `runs` in it: not written by study.train)")
    return state


def load_model(path: Path, saved: Mapping[str, Any], run: str, device: torch.device) -> tuple[CirModel, Vocabulary]:
    """The model `run` of the checkpoint at `path`, from its saved state (study/worker.py SeedRun.state)."""
    try:
        model = CirModel(ModelConfig(**saved["model_config"]))
        model.load_state_dict(saved["model"])
        vocab = Vocabulary.from_list(saved["vocab"])
    except (KeyError, TypeError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0]
        raise ValueError(f"{path}: not a readable checkpoint (model {run}: {type(error).__name__}: {reason})") from None
    return model.to(device).eval(), vocab


@dataclass(frozen=True)
class TrainedSetup:
    """How the checkpoint's model was trained, from the last row of the history.json beside its
    state.pt (study/train.py setup_record); None where that is not recorded."""

    source: Path  # the history.json
    read: bool  # False: absent or unreadable, so nothing is known
    scale: float | None
    image_size: int | None

    def missing(self, key: str) -> str:
        return f"{self.source} has no {key}" if self.read else f"no readable {self.source}"


def trained_setup(path: Path, run: str) -> TrainedSetup:
    history = path.parent / HISTORY_FILE
    try:
        last = json.loads(history.read_text())[-1]
    except (OSError, ValueError, IndexError, KeyError, TypeError):
        last = None
    if not isinstance(last, dict):  # absent or unreadable: nothing is known
        return TrainedSetup(history, False, None, None)
    key = run.split("@")[0]  # runs are named `<dataset key>@seed<n>`
    return TrainedSetup(history, True, last.get("setup/scale"), last.get(f"setup/image_size/{key}"))


def evaluation_setup(trained: TrainedSetup, *, scale: float | None, image_size: int | None, generated: bool,
                     allow_other: bool) -> tuple[float, int | None, list[str]]:
    """The scale and image size to evaluate at, and warnings: the trained ones unless asked otherwise;
    an explicit other one is refused unless `allow_other`. The scale decides only generated data."""
    warnings = []
    if trained.scale is None:
        how = "as --scale says" if scale is not None else "by default: pass --scale as trained"
        scale = DEFAULT_SCALE if scale is None else scale
        if generated:
            warnings.append(f"the scale the model was trained at is unknown ({trained.missing('setup/scale')}); "
                            f"evaluating at scale {scale:g} {how}")
    elif scale is None:
        scale = trained.scale
    elif generated and not math.isclose(scale, trained.scale) and not allow_other:
        raise ValueError(f"--scale {scale:g}: the model was trained at scale {trained.scale:g} ({trained.source}), and "
                         "another scale generates other test queries and gallery; leave --scale out to evaluate at "
                         f"{trained.scale:g}, or pass --allow-other-scale")
    if trained.image_size is None:
        size = (f"{image_size} px as --image-size says" if image_size is not None
                else "the dataset's default size: pass --image-size as trained")
        warnings.append(f"the image size the model was trained at is unknown "
                        f"({trained.missing('setup/image_size')}); evaluating at {size}")
    elif image_size is None:
        image_size = int(trained.image_size)
    elif image_size != trained.image_size and not allow_other:
        raise ValueError(f"--image-size {image_size}: the model was trained at {trained.image_size} px "
                         f"({trained.source}); leave --image-size out, or pass --allow-other-scale")
    return scale, image_size, warnings


@dataclass(frozen=True)
class OpenedCheckpoint:
    """A checkpoint's model for one dataset, and that dataset opened as the model was trained on it."""

    path: Path  # the state.pt
    run: str  # `<dataset key>@seed<n>`
    model: CirModel
    vocab: Vocabulary
    data: Any  # RetrievalData
    scale: float


def open_checkpoint(args: argparse.Namespace, *, key: str, options: Mapping[str, Any],
                    device: torch.device) -> OpenedCheckpoint:
    """What every command that reads a checkpoint does first (study.evaluate, study.classify,
    study.reconstruct): pick its model for dataset `key` (or `args.run`), settle the scale and image
    size (the trained ones unless asked otherwise; warnings printed), load the model, open the data.
    `args` carries checkpoint, run, dataset, root, scale, image_size, allow_other_scale, data_seed,
    cache_dir. Raises ValueError (or OSError, DatasetError) with a message naming the file."""
    path = checkpoint_file(args.checkpoint)
    state = read_state(path)
    try:
        run = pick_run(list(state["runs"]), key, args.run)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    scale, image_size, warnings = evaluation_setup(
        trained_setup(path, run), scale=args.scale, image_size=args.image_size, generated=args.root is None,
        allow_other=args.allow_other_scale)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    model, vocab = load_model(path, state["runs"][run], run, device)
    data = open_dataset(args.dataset, root=args.root, seed=args.data_seed, scale=scale, options=options,
                        image_size=image_size, cache_dir=args.cache_dir)
    return OpenedCheckpoint(path, run, model, vocab, data, scale)


def check_device(name: str) -> torch.device:
    """`--device`, refused before anything is loaded when this machine does not have it."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name!r}: {error}; use cpu or cuda") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {name}: this machine has no CUDA device (torch {torch.__version__}, "
                             f"CUDA build {torch.version.cuda}); pass --device cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return device


def check_out(out: Path) -> None:
    """Refuse, before the evaluation, an `--out` that cannot take the files: under a file, or in a
    folder this process cannot write (read-only, another user's)."""
    existing = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"--out {out}: {existing} is a file, not a folder; choose a folder to write the results in")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: cannot write in {existing} (read-only or not yours); choose a folder you can write")


def write_predictions(model: CirModel, split: Split, images: ImageMap, vocab: Vocabulary, device: torch.device,
                      out: Path, dataset: str) -> None:
    """A split whose targets are hidden (CIRR test1): embed it, write the server's files and the embeddings."""
    gallery = embed_gallery(model, images, device)
    queries = embed_queries(model, images, split.queries, vocab, device)
    gallery_emb = torch.cat([gallery[c] for c in sorted(gallery)]).to(device)  # chunk order = gallery order
    query_emb = torch.cat([queries[c] for c in sorted(queries)]).to(device)
    out.mkdir(parents=True, exist_ok=True)
    written = write_server_files(out, split, split.queries, query_emb, gallery_emb)
    np.save(out / "query_embeddings.npy", query_emb.cpu().numpy())
    np.save(out / "gallery_embeddings.npy", gallery_emb.cpu().numpy())
    print(f"{dataset} {split.name}: {len(split.queries)} queries with hidden targets, {len(split.image_paths)} gallery "
          f"images: no recall can be computed here; wrote {', '.join(p.name for p in written)} to {out}: upload them "
          "to CIRR's evaluation server (https://cirr.cecs.anu.edu.au/)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a Train checkpoint directory (or its state.pt)")
    parser.add_argument("--dataset", required=True, help="dataset name, e.g. css, states, fashioniq")
    parser.add_argument("--root", type=Path, help="a real download; default: the generated dataset")
    parser.add_argument("--run", help="which of the checkpoint's models (`<dataset key>@seed<n>`); default: the one of --dataset")
    parser.add_argument("--split", default="test", choices=["test", "train"])
    parser.add_argument("--scale", type=float, default=None,
                        help=f"generated dataset size; default: the one the model was trained at (else {DEFAULT_SCALE})")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE", help="loader option, e.g. category=dress")
    parser.add_argument("--image-size", type=int, default=None,
                        help="square side; default: the one the model was trained at (else the dataset's)")
    parser.add_argument("--allow-other-scale", action="store_true",
                        help="evaluate at a --scale or --image-size other than the model was trained at")
    parser.add_argument("--cache-dir", type=Path, default=None, help="cache folder (generated data, image maps under images/); "
                        "default $CIRSTUDY_CACHE or ~/.cache/cirstudy/data")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        device = check_device(args.device)
        check_out(args.out)
        opened = open_checkpoint(args, key=args.dataset, options=parse_options(args.option), device=device)
        model, vocab, data, scale = opened.model, opened.vocab, opened.data, opened.scale
        split = getattr(data, args.split)
        images = open_image_map(split, cache_dir=args.cache_dir, progress=True)
    except (OSError, ValueError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if targets_hidden(split):
        write_predictions(model, split, images, vocab, device, args.out, args.dataset)
        return 0
    result = evaluate_split(model, split, images, split.queries, vocab, data.recall_ks, device,
                            label_parts=data.label_parts)
    sources = torch.tensor([q.source for q in split.queries], device=device)
    top = top_k(result.query_emb, result.gallery_emb, k=TOP, query_sources=sources).cpu().tolist()

    breakdowns = dict(result.breakdowns)
    subset = breakdowns.pop("subset", None)  # Recall_subset@{1, 2, 3} among each query's img_set (CIRR)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "checkpoint": str(args.checkpoint), "dataset": args.dataset, "split": args.split,
        "scale": scale if args.root is None else None, "image_size": split.image_size,
        "queries": len(split.queries), "gallery": len(split.image_paths),
        "recall": {str(k): v for k, v in result.recalls.items()},
        "breakdowns": {part: {str(k): v for k, v in r.items()} for part, r in breakdowns.items()},
        "manifest": asdict(data.manifest) if data.manifest is not None else None,
    }
    if subset is not None:  # among each query's img_set (CIRR)
        summary["recall_subset"] = {str(k): v for k, v in subset.items()}
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
    for part, r in breakdowns.items():
        print(f"  {part:16s} " + "  ".join(f"R@{k} {v:.4f}" for k, v in r.items()))
    if subset is not None:
        print(f"  {'recall_subset':16s} " + "  ".join(f"R@{k} {v:.4f}" for k, v in subset.items()))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
