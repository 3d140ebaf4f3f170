"""Composed features as images (issue 14; TIRG, Vo et al., CVPR 2019, https://arxiv.org/abs/1812.07119):
train a small decoder to turn a frozen model's TARGET-image embeddings back into images, then decode
the COMPOSED query features of test queries and draw what came out beside the reference, the text and
the true target. Definitions (ours; TIRG's exact procedure could not be re-read): docs/reconstruction.md.

    python -m study.reconstruct CHECKPOINT --dataset css --out /tmp/recon        # 1-2 min on 2 cores
    python -m study.reconstruct CHECKPOINT --dataset css --out /tmp/recon --steps 100 --queries 3
    python -m study.reconstruct --study studies/ga_vs_dim                        # the best configuration's

- Decoder: study/reconstruct_decoder.py (0.44 M parameters at D = 128), pixel MSE on 64 x 64 images in
  [0, 1], trained on the training split's images; the images of `--held-out` of its labels (default
  10%) are kept out to measure the loss before and after; the model stays frozen (eval mode, no gradient).
- Pictures: study/reconstruct_grid.py; `--queries` test queries drawn by the probes' rule
  (study/probes.py probe_queries: the same for every run of a data seed).
- Files (`--out`): grid.png (every drawn query), query-<id>.png (one per query, id = its index in the
  split) and reconstruction.json (the decoder's losses; the pixel loss against the true target, over
  every test query, of the image decoded from the composed feature, from the target's own embedding,
  from the reference's embedding ("no change"), and of the training images' mean image (a constant guess)).
- `--study DIR` (and `reconstruct_for_study`, which `study.run` calls at the end of a study): the best
  configuration of `<study>/ranking.parquet`, its newest checkpoint, its first seed, every dataset of
  CSS layout in the study: `<study>/reconstruction/<dataset key>.png` and `.json`, and the picture
  in the configuration's TensorBoard run as `reconstruction/<dataset key>`.

Checkpoints are read as study.evaluate reads them (same functions); the scale and image size default
to the trained ones. Bad input ends with one message and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from models.encoders import normalize_images
from models.model import CirModel
from models.text import Vocabulary
from study.data import DatasetError, RetrievalData, open_dataset, open_image_map
from study.data.checks import parse_options
from study.data.image_cache import ImageMap
from study.data.registry import loader_of
from study.evaluate import (DEFAULT_SCALE, check_device, check_out, load_model, open_checkpoint, read_state,
                            trained_setup)
from study.evaluation import embed_queries
from study.probes import probe_queries
from study.reconstruct_decoder import (Decoder, DecoderFit, FitConfig, decoded_pixels, fit_decoder, pixel_loss,
                                       to_unit_pixels)
from study.reconstruct_grid import TILE, GridRow, render_grid
from study.space import SpaceError, load_space
from study.parquet_io import read_parquet_frame

__all__ = ["GRID_QUERIES", "RECONSTRUCTION_DIR", "Reconstruction", "best_checkpoint", "embedded_images", "main",
           "reconstruct", "reconstruct_for_study", "study_reconstructions", "write_reconstruction"]

GRID_QUERIES = 6  # rows of the combined grid
RECONSTRUCTION_DIR = "reconstruction"  # in a study folder; study/report/reconstruction.py reads it
CSS_LAYOUT = "css"  # the loader whose datasets a study reconstructs (the generated css and TIRG's CSS)
CHUNK = 256


@dataclass(frozen=True)
class Reconstruction:
    dataset: str
    fit: DecoderFit
    queries: tuple[int, ...]  # indices into the test split's queries, one per grid row
    rows: tuple[GridRow, ...]
    errors: dict[str, float]  # pixel loss against the true target over every test query, per decoded feature
    test_queries: int


@torch.no_grad()
def embedded_images(model: CirModel, images: ImageMap, device: torch.device) -> tuple[Tensor, Tensor]:
    """Every image of a split: embeddings (N, D) on the CPU, and the pixels reduced to 64 px, uint8 (N, 3, 64, 64)."""
    features, pixels = [], []
    for start in range(0, len(images), CHUNK):
        chunk = images.gather(torch.arange(start, min(start + CHUNK, len(images))))
        features.append(model.embed_images(normalize_images(chunk.to(device))).float().cpu())
        pixels.append(decoded_pixels(to_unit_pixels(chunk)))
    return torch.cat(features), torch.cat(pixels)


@torch.no_grad()
def _decode(decoder: Decoder, features: Tensor) -> Tensor:
    """(N, D) -> (N, 3, 64, 64) in [0, 1], in chunks, on the CPU."""
    return torch.cat([decoder(features[s:s + CHUNK]) for s in range(0, len(features), CHUNK)])


def reconstruct(model: CirModel, vocab: Vocabulary, data: RetrievalData, images: dict[str, ImageMap], *,
                device: torch.device, fit: FitConfig = FitConfig(), count: int = GRID_QUERIES, data_seed: int = 0,
                key: str | None = None) -> Reconstruction:
    """Train the decoder on `data.train`'s images under the frozen `model`, decode the composed
    features of `data.test`'s queries; `images`: split name -> its image map."""
    model.eval()
    train_features, train_pixels = embedded_images(model, images["train"], device)
    # trained where the model runs (features and 64 px pixels fit on any device), applied on the CPU
    decoder, result = fit_decoder(train_features.to(device), train_pixels.to(device), data.train.labels, fit)
    decoder = decoder.cpu()
    test = data.test
    gallery_features, gallery_pixels = embedded_images(model, images["test"], device)
    chunks = embed_queries(model, images["test"], test.queries, vocab, device)
    composed = torch.cat([chunks[c] for c in sorted(chunks)])  # (Q, D)
    sources = torch.tensor([q.source for q in test.queries])
    targets = torch.tensor([q.target for q in test.queries])
    truth = gallery_pixels[targets].float() / 255.0  # (Q, 3, 64, 64)
    decoded = _decode(decoder, composed)
    mean_image = (train_pixels.float() / 255.0).mean(dim=0, keepdim=True)  # (1, 3, 64, 64): a constant guess
    errors = {"composed": pixel_loss(decoded, truth).item(),
              "target_embedding": pixel_loss(_decode(decoder, gallery_features[targets]), truth).item(),
              "reference_embedding": pixel_loss(_decode(decoder, gallery_features[sources]), truth).item(),
              "train_mean_image": pixel_loss(mean_image.expand_as(truth), truth).item()}
    chosen = probe_queries(test.queries, data_seed=data_seed, key=key or data.name, count=count)
    rows_of = [test.queries.index(q) for q in chosen]
    pictures = images["test"].gather(torch.tensor([i for q in chosen for i in (q.source, q.target)], dtype=torch.long))
    rows = tuple(GridRow(reference=pictures[2 * n], text=q.text, decoded=decoded_pixels(decoded[i]),
                         target=pictures[2 * n + 1]) for n, (q, i) in enumerate(zip(chosen, rows_of)))
    return Reconstruction(data.name, result, tuple(rows_of), rows, errors, len(test.queries))


def summary(result: Reconstruction) -> dict[str, Any]:
    """What reconstruction.json holds: the decoder's fit, the pixel losses, the queries drawn."""
    return {"dataset": result.dataset, "decoder": asdict(result.fit), "test_queries": result.test_queries,
            "test_pixel_loss": result.errors,
            "queries": [{"query": i, "text": row.text} for i, row in zip(result.queries, result.rows)]}


def _save_png(picture, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    Image.fromarray(picture).save(temporary, format="PNG")
    os.replace(temporary, path)


def write_reconstruction(result: Reconstruction, out: Path, *, tile: int = TILE, extra: dict | None = None) -> Path:
    """grid.png, query-<id>.png per query and reconstruction.json in `out`; returns grid.png's path."""
    out.mkdir(parents=True, exist_ok=True)
    grid = out / "grid.png"
    _save_png(render_grid(result.rows, tile=tile), grid)
    for i, row in zip(result.queries, result.rows):
        _save_png(render_grid([row], tile=tile), out / f"query-{i}.png")
    (out / "reconstruction.json").write_text(json.dumps({**summary(result), **(extra or {})}, indent=1) + "\n")
    return grid


def describe(result: Reconstruction) -> str:
    f, e = result.fit, result.errors
    return (f"decoder: {f.parameters:,} parameters, {f.steps} steps on {f.train_images} {result.dataset} training "
            f"images in {f.seconds:.0f} s; held-out pixel loss {f.held_out_before:.4f} -> {f.held_out_after:.4f} "
            f"({f.held_out_images} images)\n"
            f"pixel loss against the true target over the {result.test_queries} test queries, image decoded from: "
            f"the composed feature {e['composed']:.4f}, the target's own embedding {e['target_embedding']:.4f}, "
            f"the reference's embedding {e['reference_embedding']:.4f}; the training images' mean image "
            f"{e['train_mean_image']:.4f}")


# --- a study's best configuration -------------------------------------------------------------------

def best_checkpoint(study_dir: Path) -> tuple[str, Path]:
    """The best configuration of `<study>/ranking.parquet` and its newest Train checkpoint's state.pt
    (`train-<config id>` is study.trainable.train_run_name's, not imported: it pulls Ray)."""
    ranking_path = study_dir / "ranking.parquet"
    if not ranking_path.is_file():
        raise ValueError(f"{ranking_path}: not found; write the study's tables with `python -m study.results "
                         f"{study_dir} --write`")
    ranking = read_parquet_frame(ranking_path, columns=["config_id"])
    if ranking.empty:
        raise ValueError(f"{ranking_path}: no configuration finished, so there is no best to reconstruct from")
    best = str(ranking.iloc[0]["config_id"])
    run = study_dir / "train" / f"train-{best}"
    checkpoints = sorted(p for p in run.glob("checkpoint_*") if (p / "state.pt").is_file())
    if not checkpoints:
        raise ValueError(f"{run}: no checkpoint holding state.pt for the best configuration {best}")
    return best, checkpoints[-1] / "state.pt"


def _first_seed(runs: list[str], key: str) -> str | None:
    """`<key>@seed<n>` with the smallest n (the ranking's seeds train the same configuration)."""
    mine = [r for r in runs if r.split("@")[0] == key]
    return min(mine, key=lambda r: int(r.rsplit("@seed", 1)[1]), default=None)


def study_reconstructions(study_dir: Path, *, cache_dir: Path | None = None, fit: FitConfig = FitConfig(),
                          count: int = GRID_QUERIES, device: torch.device | None = None,
                          tensorboard: bool = True) -> list[Path]:
    """`<study>/reconstruction/<key>.png` (and .json) for every CSS-layout dataset of the study, from
    the best configuration; raises ValueError / DatasetError naming what is missing."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise ValueError(f"{study_dir}: {'not a directory' if study_dir.exists() else 'no such directory'}; "
                         "give a study folder written by `python -m study.run`")
    try:
        space = load_space(study_dir / "space.yaml")
    except (SpaceError, OSError) as error:
        raise ValueError(f"{study_dir / 'space.yaml'}: not read ({error}); give a study folder written by "
                         "`python -m study.run`") from None
    entries = [e for e in space.datasets if loader_of(e.name) == CSS_LAYOUT]
    if not entries:
        raise ValueError(f"{study_dir}: no dataset of CSS layout in the study ({[e.key for e in space.datasets]}); "
                         "composed features are drawn as images on CSS only")
    best, path = best_checkpoint(study_dir)
    state = read_state(path)
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    record = _study_record(study_dir)
    written = []
    for entry in entries:
        run = _first_seed(list(state["runs"]), entry.key)
        if run is None:
            raise ValueError(f"{path}: holds models {sorted(state['runs'])}, none of dataset {entry.key}")
        trained = trained_setup(path, run)
        budget = record.get("budget") or {}
        data = open_dataset(entry.name, root=Path(entry.root) if entry.root else None, seed=space.data_seed,
                            scale=trained.scale or budget.get("scale") or DEFAULT_SCALE, options=dict(entry.options),
                            image_size=trained.image_size or entry.image_size or budget.get("image_size"),
                            cache_dir=cache_dir, allow_missing_images=True)  # a picture needs only some images
        model, vocab = load_model(path, state["runs"][run], run, device)
        images = {s.name: open_image_map(s, cache_dir=cache_dir) for s in (data.train, data.test)}
        result = reconstruct(model, vocab, data, images, device=device, fit=fit, count=count,
                             data_seed=space.data_seed, key=entry.key)
        folder = study_dir / RECONSTRUCTION_DIR
        folder.mkdir(parents=True, exist_ok=True)
        png = folder / f"{entry.key}.png"
        _save_png(render_grid(result.rows), png)
        (folder / f"{entry.key}.json").write_text(json.dumps(
            {**summary(result), "config_id": best, "run": run, "checkpoint": str(path.parent.relative_to(study_dir))},
            indent=1) + "\n")
        if tensorboard:
            from study.tensorboard import TRIALS_SUBDIR, log_picture  # Ray's import only when a study asks

            log_picture(study_dir / TRIALS_SUBDIR / best, f"reconstruction/{entry.key}", png,
                        step=int(state.get("epoch", 0)))  # at the epoch of the checkpoint it decodes
        written.append(png)
    return written


def _study_record(study_dir: Path) -> dict:
    try:
        record = json.loads((study_dir / "study.json").read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def reconstruct_for_study(study_dir: str | Path, *, cache_dir: str | Path | None = None,
                          fit: FitConfig = FitConfig(), count: int = GRID_QUERIES,
                          device: torch.device | None = None) -> Path | None:
    """For a finished study: the best configuration's composed features as images, in
    `<study>/reconstruction/<dataset key>.png` (+ .json) and its TensorBoard run. Returns that folder,
    or None, with one line on stderr saying why, when the study has nothing to draw (no CSS-layout
    dataset, no finished configuration, no checkpoint, unreadable data): it never fails a study."""
    began = time.perf_counter()
    try:
        written = study_reconstructions(Path(study_dir), cache_dir=Path(cache_dir) if cache_dir else None, fit=fit,
                                        count=count, device=device)
    except (OSError, ValueError, DatasetError) as error:
        print(f"composed features as images: skipped: {error}", file=sys.stderr)
        return None
    except Exception as error:  # noqa: BLE001 - an extra picture after a finished study must not fail it
        print(f"composed features as images: skipped: {type(error).__name__}: {error}", file=sys.stderr)
        return None
    print(f"composed features as images: {', '.join(str(p) for p in written)} "
          f"({time.perf_counter() - began:.0f} s)", file=sys.stderr)
    return written[0].parent


# --- command line -----------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m study.reconstruct", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, nargs="?", help="a Train checkpoint directory (or its state.pt)")
    parser.add_argument("--study", type=Path, help="a finished study folder: its best configuration on its CSS-layout "
                        "datasets, as the study ran them (instead of CHECKPOINT, --dataset, --out and the data options)")
    parser.add_argument("--dataset", help="dataset name, e.g. css")
    parser.add_argument("--out", type=Path, help="folder for grid.png, query-<id>.png, reconstruction.json")
    parser.add_argument("--root", type=Path, help="a real download; default: the generated dataset")
    parser.add_argument("--run", help="which of the checkpoint's models (`<dataset key>@seed<n>`)")
    parser.add_argument("--scale", type=float, default=None, help="generated dataset size; default: as trained")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE", help="loader option")
    parser.add_argument("--image-size", type=int, default=None, help="square side; default: as trained")
    parser.add_argument("--allow-other-scale", action="store_true")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    defaults = FitConfig()
    parser.add_argument("--steps", type=int, default=defaults.steps, help="decoder training steps")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--held-out", type=float, default=defaults.held_out,
                        help="share of the training images kept out to measure the decoder's loss")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="the decoder's initial weights and batches")
    parser.add_argument("--queries", type=int, default=GRID_QUERIES, help="test queries drawn")
    parser.add_argument("--tile", type=int, default=TILE, help="px per drawn image")
    return parser


def _check_args(args: argparse.Namespace) -> FitConfig:
    if args.study is not None and (args.checkpoint is not None or args.dataset or args.out):
        raise ValueError("--study draws the study's best configuration: give it without CHECKPOINT, --dataset, --out")
    if args.study is None and (args.checkpoint is None or not args.dataset or args.out is None):
        raise ValueError("give CHECKPOINT --dataset NAME --out DIR (or --study DIR)")
    if args.queries < 1:
        raise ValueError(f"--queries {args.queries}: draw at least 1")
    if args.tile < 8:
        raise ValueError(f"--tile {args.tile}: at least 8 px")
    try:
        return FitConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, held_out=args.held_out,
                         seed=args.seed)
    except ValueError as error:
        raise ValueError(f"--{str(error).split()[0].replace('_', '-')}: {error}") from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        fit = _check_args(args)
        device = check_device(args.device)
        if args.study is not None:
            written = study_reconstructions(args.study, cache_dir=args.cache_dir, fit=fit, count=args.queries,
                                            device=device)
            print("\n".join(f"wrote {p}" for p in written))
            return 0
        check_out(args.out)
        opened = open_checkpoint(args, key=args.dataset, options=parse_options(args.option), device=device)
        model, vocab, data, run = opened.model, opened.vocab, opened.data, opened.run
        images = {s.name: open_image_map(s, cache_dir=args.cache_dir, progress=True) for s in (data.train, data.test)}
    except (OSError, ValueError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = reconstruct(model, vocab, data, images, device=device, fit=fit, count=args.queries,
                         data_seed=args.data_seed, key=args.dataset)
    grid = write_reconstruction(result, args.out, tile=args.tile, extra={"checkpoint": str(args.checkpoint),
                                                                          "run": run})
    print(describe(result))
    print(f"wrote {grid}, {len(result.rows)} query pictures (query-<id>.png) and reconstruction.json in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
