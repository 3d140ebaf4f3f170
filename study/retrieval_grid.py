"""A picture of what a model retrieves: one row per query, the reference image and its text, then
the top-K gallery images, each framed green when it carries the target's label (a hit) and grey
otherwise. Written by `python -m study.evaluate` as `retrievals.png`."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from matplotlib.figure import Figure  # a bare Figure renders with Agg: no pyplot, no display
from matplotlib.patches import Rectangle

from study.data import ImageMap, Split


def write_retrieval_grid(split: Split, images: ImageMap, rows: Sequence[int], top: Sequence[Sequence[int]],
                         path: Path, *, k: int = 5) -> None:
    """`images`: the split's image map (each drawn image is read from it alone); `rows`: query
    indices to draw; `top[i]`: gallery ids ranked for query i (best first)."""
    columns = 2 + k
    figure = Figure(figsize=(1.4 * columns, 1.5 * len(rows)))
    for r, query_index in enumerate(rows):
        query = split.queries[query_index]
        target_label = split.labels[query.target]
        panels = [("query", query.source, None)] + [(f"#{i + 1}", g, split.labels[g] == target_label)
                                                    for i, g in enumerate(top[query_index][:k])]
        text_axis = figure.add_subplot(len(rows), columns, r * columns + 2)
        text_axis.axis("off")
        text_axis.text(0.5, 0.5, query.text, ha="center", va="center", wrap=True, fontsize=7)
        for c, (title, image_id, hit) in enumerate(panels):
            axis = figure.add_subplot(len(rows), columns, r * columns + (1 if c == 0 else c + 2))
            axis.imshow(images[image_id].permute(1, 2, 0).numpy())
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(title, fontsize=7)
            if hit is not None:
                size = images.image_size
                axis.add_patch(Rectangle((0, 0), size - 1, size - 1, fill=False, linewidth=3,
                                         edgecolor="limegreen" if hit else "lightgray"))
    figure.suptitle(f"top-{k} retrievals (green: the target's label)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
