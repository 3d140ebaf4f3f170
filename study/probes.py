"""Probes (issue 11): a fixed handful of test queries per dataset, pictured at every evaluation.

- Which: PROBE_COUNT test queries drawn with a generator seeded by the study's data seed and the
  dataset key, so every trial of a study shows the same queries, epoch after epoch.
- What the model retrieves: the top-TOP of the whole test gallery, the query's own source image
  removed, a hit being an image whose label equals the target's: the metrics' rule (methods.md A.8).
- Where it looks: the Grad-CAM map M_i of methods.md A.7, s_i = <NL(psi_i), NL(phi+_i)>
  differentiated w.r.t. the reference image's last conv map, so it depends on the text; taken
  as MMGrad takes it (models/regularizers/mmgrad.py), in eval mode, where batch-norm uses its
  running statistics: the gradient of sum_i s_i is then exactly each d s_i / d A_i. A composer
  that takes no image (text_only) has no such map.

Two RGB pictures per dataset, (H, W, 3) uint8: "retrievals" (reference, text, top-TOP framed green
for a hit, grey otherwise) and "attention" (reference, and reference under its upsampled map, the
text as title). Rank 0 saves them as `<dataset key>-<picture>.png` in each checkpoint's `probes/`
folder, so they travel with Train's checkpoint; the Tune driver's TensorBoard callback
(study/tensorboard.py) logs them as `probes/<dataset key>/<picture>` into the configuration's run,
one writer per run (TensorBoard follows only the newest event file of a run by default).
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from models.batch import Batch
from models.encoders import normalize_images
from models.model import CirModel
from models.regularizers.mmgrad import gradient_attention
from models.text import Vocabulary
from study.data import Query, Split
from study.evaluation import Images, embed_gallery, embed_queries
from study.metrics import top_k
from study.randomness import stream_seed

if TYPE_CHECKING:
    from study.worker import SeedRun

__all__ = ["PROBES_DIR", "PROBE_COUNT", "TOP", "Probe", "attention_maps", "probe", "probe_pictures",
           "probe_queries", "probe_tag", "render_attention", "render_retrievals", "retrieval_box", "retrieve",
           "write_probe_files"]

PROBE_COUNT = 4  # rows of a picture: enough to see a pattern, few enough to read at a glance
TOP = 5
TILE = 96  # px per drawn image: generated 64 px images enlarged, real 224 px ones reduced
GAP = 6
FRAME = 4  # px of the hit / miss frame, drawn over the image's edge
TEXT_WIDTH = 2 * TILE
HEADER = 18
LINE = 13  # px per line of text
HIT, MISS = (50, 205, 50), (190, 190, 190)
EDGE = (120, 120, 120)  # a 1 px outline around a reference: generated images are white to their edge


@dataclass(frozen=True)
class Probe:
    query: Query
    top: tuple[int, ...]  # gallery ids, best first, the query's source excluded
    hits: tuple[bool, ...]  # top[j] carries the target's label
    attention: Tensor | None  # (h, w) M_i on the CPU, summing to 1 (or all 0); None: no image in the query


def probe_queries(queries: Sequence[Query], *, data_seed: int, key: str, count: int = PROBE_COUNT) -> list[Query]:
    """The probe set of one dataset's test queries: the same for every trial and epoch of a study."""
    rows = random.Random(stream_seed("probes", data_seed, key)).sample(range(len(queries)), min(count, len(queries)))
    return [queries[i] for i in sorted(rows)]


@contextmanager
def _evaluating(model: CirModel) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def retrieve(model: CirModel, split: Split, images: Images, queries: Sequence[Query], vocab: Vocabulary,
             device: torch.device, *, k: int = TOP, gallery_emb: Tensor | None = None) -> list[tuple[int, ...]]:
    """Each query's top-k gallery ids under the metrics' protocol. `gallery_emb` (N, D): the split's
    gallery already embedded by this model; else it is embedded here (the whole split: the costly part)."""
    with _evaluating(model):
        if gallery_emb is None:
            chunks = embed_gallery(model, images, device)
            gallery_emb = torch.cat([chunks[c] for c in sorted(chunks)])
        chunks = embed_queries(model, images, queries, vocab, device)
    query_emb = torch.cat([chunks[c] for c in sorted(chunks)])  # (P, D)
    top = top_k(query_emb, gallery_emb, k=k, query_sources=[q.source for q in queries])  # (P, k)
    return [tuple(row) for row in top.tolist()]


def attention_maps(model: CirModel, images: Images, queries: Sequence[Query], vocab: Vocabulary,
                   device: torch.device) -> Tensor:
    """(P, h, w) Grad-CAM maps M_i (methods.md A.7) on the CPU; parameters and their gradients untouched."""
    tokens, lengths = vocab.encode([q.text for q in queries])

    def gathered(ids: list[int]) -> Tensor:
        return normalize_images(images.gather(torch.tensor(ids)).to(device))

    batch = Batch(reference=gathered([q.source for q in queries]), tokens=tokens.to(device),
                  lengths=lengths.to(device), target=gathered([q.target for q in queries]))
    with _evaluating(model), torch.enable_grad():
        outputs = model(batch)
        feature_map = outputs.reference_features.last_map  # (P, C, h, w)
        score = (model.norm(outputs.query) * model.norm(outputs.target)).sum(dim=1)  # (P,) s_i
        # only w.r.t. the map: no parameter's .grad is written
        (gradient,) = torch.autograd.grad(score.sum(), feature_map, allow_unused=True)
        if gradient is None:  # a composer that ignores the image after all
            gradient = torch.zeros_like(feature_map)
        return gradient_attention(feature_map.detach().float(), gradient.float()).cpu()


def probe(model: CirModel, split: Split, images: Images, vocab: Vocabulary, device: torch.device, *,
          data_seed: int, key: str, gallery_emb: Tensor | None = None) -> list[Probe]:
    """The probe set of `split` (a dataset's test split) under `model`."""
    queries = probe_queries(split.queries, data_seed=data_seed, key=key)
    tops = retrieve(model, split, images, queries, vocab, device, gallery_emb=gallery_emb)
    maps = (attention_maps(model, images, queries, vocab, device) if model.composer.uses_image
            else [None] * len(queries))
    return [Probe(q, top, tuple(split.labels[g] == split.labels[q.target] for g in top), m)
            for q, top, m in zip(queries, tops, maps)]


# --- pictures ---------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=11)


def _wrap(text: str, width: int, lines: int) -> list[str]:
    """`text` broken into at most `lines` lines of at most `width` px (a last line cut short ends in ...)."""
    font, out, line = _font(), [], ""
    for word in text.split():
        longer = f"{line} {word}".strip()
        if line and font.getlength(longer) > width:
            out.append(line)
            line = word
        else:
            line = longer
    out += [line] if line else []
    if len(out) > lines:
        out = out[:lines]
        out[-1] = out[-1] + " ..."
    return out


def _tile(image: Tensor) -> Image.Image:
    """(3, S, S) uint8 -> a TILE x TILE picture."""
    return Image.fromarray(image.permute(1, 2, 0).numpy()).resize((TILE, TILE), Image.Resampling.BILINEAR)


def retrieval_box(row: int, column: int) -> tuple[int, int]:
    """(left, top) px of the image of probe `row` in the retrievals picture; column 0 the reference,
    j >= 1 the j-th retrieved image."""
    left = GAP + (0 if column == 0 else TILE + GAP + TEXT_WIDTH + GAP + (column - 1) * (TILE + GAP))
    return left, HEADER + row * (TILE + GAP)


def render_retrievals(images: Images, probes: Sequence[Probe]) -> np.ndarray:
    """(H, W, 3) uint8: one row per probe, the reference, its text, the top images framed (hit / miss)."""
    k = max((len(p.top) for p in probes), default=0)
    width, _ = retrieval_box(0, k + 1)
    canvas = Image.new("RGB", (width, HEADER + len(probes) * (TILE + GAP)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((GAP, 3), f"reference, text, top-{k} (green: the target's label)", fill="black", font=_font())
    pictures = images.gather(torch.tensor([i for p in probes for i in (p.query.source, *p.top)], dtype=torch.long))
    drawn = iter(pictures)
    for row, p in enumerate(probes):
        left, top = retrieval_box(row, 0)
        canvas.paste(_tile(next(drawn)), (left, top))
        draw.rectangle((left, top, left + TILE - 1, top + TILE - 1), outline=EDGE, width=1)
        for n, line in enumerate(_wrap(p.query.text, TEXT_WIDTH, TILE // LINE)):
            draw.text((left + TILE + GAP, top + n * LINE), line, fill="black", font=_font())
        for column, hit in enumerate(p.hits, start=1):
            left, top = retrieval_box(row, column)
            canvas.paste(_tile(next(drawn)), (left, top))
            draw.rectangle((left, top, left + TILE - 1, top + TILE - 1), outline=HIT if hit else MISS, width=FRAME)
    return np.asarray(canvas)


def _heat(image: Tensor, attention: Tensor) -> Image.Image:
    """The reference under its map, upsampled and scaled to its maximum (jet colours, half opacity)."""
    from matplotlib import colormaps  # only here: half a second of import for the colour table

    cam = F.interpolate(attention[None, None].float(), size=(TILE, TILE), mode="bilinear", align_corners=False)[0, 0]
    peak = cam.max()
    cam = cam / peak if peak > 0 else torch.zeros_like(cam)  # (TILE, TILE) in [0, 1]; a NaN map shows nothing
    colours = colormaps["jet"](cam.numpy())[..., :3] * 255  # (TILE, TILE, 3)
    base = np.asarray(_tile(image), dtype=np.float32)
    return Image.fromarray((0.5 * base + 0.5 * colours).round().astype(np.uint8))


def render_attention(images: Images, probes: Sequence[Probe]) -> np.ndarray | None:
    """(H, W, 3) uint8: per probe, its text as title over the reference and the reference under M_i;
    None when no probe has a map (a composer without an image in the query)."""
    probes = [p for p in probes if p.attention is not None]
    if not probes:
        return None
    lines = 3
    block = 2 * TILE + GAP
    title = lines * LINE + 2
    canvas = Image.new("RGB", (GAP + len(probes) * (block + 2 * GAP), GAP + title + TILE + GAP), "white")
    draw = ImageDraw.Draw(canvas)
    references = images.gather(torch.tensor([p.query.source for p in probes], dtype=torch.long))
    for n, (p, image) in enumerate(zip(probes, references)):
        left = GAP + n * (block + 2 * GAP)
        text = p.query.text if p.attention.sum() > 0 else f"{p.query.text} (map all 0: no positive evidence)"
        for i, line in enumerate(_wrap(text, block, lines)):
            draw.text((left, GAP + i * LINE), line, fill="black", font=_font())
        canvas.paste(_tile(image), (left, GAP + title))
        draw.rectangle((left, GAP + title, left + TILE - 1, GAP + title + TILE - 1), outline=EDGE, width=1)
        canvas.paste(_heat(image, p.attention), (left + TILE + GAP, GAP + title))
    return np.asarray(canvas)


def probe_pictures(run: SeedRun, *, data_seed: int, gallery_emb: Tensor | None = None) -> dict[str, np.ndarray]:
    """The pictures of `run`'s dataset under its model: "retrievals" and, when the composer takes
    an image, "attention". Rank-local: no collective, so rank 0 can call it alone. `gallery_emb`:
    the test gallery as this evaluation embedded it (else embedded again here)."""
    share = run.share
    images = share.images["test"]
    probes = probe(run.model, share.data.test, images, share.vocab, run.device, data_seed=data_seed, key=share.key,
                   gallery_emb=gallery_emb)
    pictures = {"retrievals": render_retrievals(images, probes)}
    attention = render_attention(images, probes)
    if attention is not None:
        pictures["attention"] = attention
    return pictures


PROBES_DIR = "probes"  # in each checkpoint: the evaluation's pictures, <dataset key>-<picture>.png


def write_probe_files(pictures: Mapping[str, Mapping[str, np.ndarray]], folder: Path) -> None:
    """`pictures`: dataset key -> picture name -> (H, W, 3) uint8, saved as `<key>-<name>.png`."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, named in pictures.items():
        for name, picture in named.items():
            Image.fromarray(picture).save(folder / f"{key}-{name}.png")


def probe_tag(file_name: str) -> str:
    """`<dataset key>-<picture>.png` (a key may hold dashes: fashioniq-dress) -> `probes/<key>/<picture>`."""
    key, name = file_name.removesuffix(".png").rsplit("-", 1)
    return f"probes/{key}/{name}"
