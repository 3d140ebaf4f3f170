"""`python -m study.data describe DIR`: what a dataset folder holds, and a grid of sample queries."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, TextIO

from matplotlib.figure import Figure  # a bare Figure renders with Agg: no pyplot, no display
from matplotlib.patches import Rectangle

from study.data.errors import DatasetError
from study.data.registry import DATASETS, DETECTORS, detected_options, layouts_in
from study.data.types import RetrievalData, Split

GRID_ROWS_PER_SPLIT = 4


def summary(data: RetrievalData) -> list[str]:
    lines = [f"dataset {data.name}: recall@K for K in {list(data.recall_ks)}"]
    for split in (data.train, data.test):
        kinds = Counter(q.kind for q in split.queries)
        with_region = sum(q.region is not None for q in split.queries)
        lines.append(
            f"  {split.name}: {len(split.image_paths)} images ({split.image_size}x{split.image_size}), "
            f"{len(set(split.labels))} labels, {len(split.queries)} queries "
            f"({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}; {with_region} with a region)"
        )
    lines += [f"  {note}" for note in data.notes]
    if data.manifest is not None:
        m = data.manifest
        examples = f" (e.g. {', '.join(m.missing_examples)})" if m.missing else ""
        lines.append(f"  images: {m.listed} listed, {m.missing} missing{examples}, "
                     f"{m.dropped_queries} queries dropped; sha256 of the listed paths {m.sha256[:16]}")
    return lines


def _rows(split: Split) -> list[int]:
    """Query indices spread evenly over the split, so every kind tends to appear."""
    n = len(split.queries)
    count = min(GRID_ROWS_PER_SPLIT, n)
    return sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(count)}) if n else []


def write_grid(data: RetrievalData, path: Path) -> None:
    """A PNG of sample queries, one per row: source (region boxed) | text | target."""
    rows = [(split, i) for split in (data.train, data.test) for i in _rows(split)]
    fig = Figure(figsize=(7.5, 2.0 * max(len(rows), 1)))
    for r, (split, i) in enumerate(rows):
        query = split.queries[i]
        for c, (index, title) in enumerate(((query.source, "source"), (None, ""), (query.target, "target"))):
            ax = fig.add_subplot(len(rows), 3, 3 * r + c + 1)
            ax.set_axis_off()
            if index is None:
                ax.text(0.5, 0.5, f"{split.name} / {query.kind}\n\"{query.text}\"", ha="center", va="center", wrap=True, fontsize=9)
                continue
            ax.imshow(split.load_image(index).permute(1, 2, 0).numpy())
            ax.set_title(f"{title}: {split.labels[index]}"[:60], fontsize=6)
            if index == query.source and query.region is not None:
                top, left, bottom, right = (v * split.image_size for v in query.region)
                ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, edgecolor="magenta", linewidth=1.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def check_grid_path(path: Path) -> None:
    """Refuse, before anything is read, a grid path that cannot be written: a folder, a path under
    a file, or in a folder this process cannot write (read-only, another user's)."""
    if path.is_dir():
        raise DatasetError(f"sample grid {path}: is a folder; pass --grid with a file name, e.g. {path / 'sample_grid.png'}")
    existing = next(p for p in path.absolute().parents if p.exists())
    if not existing.is_dir():
        raise DatasetError(f"sample grid {path}: {existing} is a file, not a folder; pass --grid PATH in a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DatasetError(f"sample grid {path}: cannot write in {existing} (read-only or not yours); "
                           "pass --grid PATH in a folder you can write")


def no_images(data: RetrievalData, root: Path) -> str:
    """Why `data` has no image to show, naming where its loader looked; "" when it has some."""
    if data.train.image_paths or data.test.image_paths:
        return ""
    return data.unusable or (f"{root}: layout {data.name} lists no images; the module docstring of "
                             f"study/data/{data.name}.py says which files list them")


def describe(root: Path, grid: Path | None = None, out: TextIO | None = None,
             options: Mapping[str, Any] | None = None) -> RetrievalData:
    """Print counts per split for the layout found in `root`, and write the sample grid
    (default `root/sample_grid.png`). Loader options are the detector's (FashionIQ: the first
    category found) overridden by `options`; missing images are reported, not refused (with none
    found there is no grid to draw: `no_images` says why for the command line)."""
    root = Path(root)
    grid_path = Path(grid) if grid is not None else root / "sample_grid.png"
    check_grid_path(grid_path)
    layouts = layouts_in(root)
    if not layouts:
        raise DatasetError(
            f"{root}: no known dataset layout found (layouts: {DETECTORS.names()}); "
            f"the module docstring of each study/data/<layout>.py says which files it expects"
        )
    chosen = {**detected_options(layouts[0], root), **dict(options or {})}
    data = DATASETS.get(layouts[0])(root, allow_missing_images=True, **chosen)
    shown = f" ({', '.join(f'{k}={v}' for k, v in chosen.items())})" if chosen else ""
    lines = [f"{root}: layout {layouts[0]}{shown}", *summary(data)]
    if no_images(data, root):
        print("\n".join(lines), file=out)
        return data
    grid_path.parent.mkdir(parents=True, exist_ok=True)
    write_grid(data, grid_path)
    print("\n".join([*lines, f"sample grid: {grid_path}"]), file=out)
    return data
