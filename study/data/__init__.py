"""Datasets for composed image retrieval: loaders of real layouts and synthetic generators.

    from study.data import open_dataset
    data = open_dataset("css", scale=0.05)                    # generated (cached), CSS layout
    data = open_dataset("mitstates", root=Path("/data/mit"))   # a real download
    images = data.test.load_images()                           # uint8 (N, 3, S, S)

Loaders (DATASETS) read a file layout: "css" (TIRG's CSS, Vo et al., CVPR 2019, arXiv 1812.07119)
and "mitstates" (Isola et al., CVPR 2015). Generators (GENERATORS) write one of those layouts:
"css" (CSS-2D) and "states" (MIT-States-like); see methods.md A.10 and B.7.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

# registration: one import line per loader or generator
from study.data import css, css_generate, mitstates, states  # noqa: F401
from study.data.cache import default_cache_dir, known_datasets, prepare_generated
from study.data.errors import DatasetError
from study.data.registry import DATASETS, GENERATORS, Generator
from study.data.types import Query, RetrievalData, Split

__all__ = [
    "DATASETS", "GENERATORS", "DatasetError", "Generator", "Query", "RetrievalData", "Split",
    "default_cache_dir", "known_datasets", "open_dataset", "prepare_generated",
]  # fmt: skip


def open_dataset(
    name: str, *, root: Path | None = None, seed: int = 0, scale: float = 1.0, cache_dir: Path | None = None
) -> RetrievalData:
    """A dataset by name. With `root`, the loader `name` reads that folder (a generator's name
    reads with its layout's loader); without, `name` must be a generator, whose output for
    (seed, scale) is generated once into the cache and then loaded."""
    if name not in DATASETS and name not in GENERATORS:
        raise DatasetError(
            f"unknown dataset {name!r}; known: {known_datasets()} "
            f"(loaders of real layouts: {DATASETS.names()}; generators: {GENERATORS.names()})"
        )
    if root is not None:
        loader = name if name in DATASETS else GENERATORS.build(name).loader
        folder = Path(root)
    else:
        if name not in GENERATORS:
            raise DatasetError(f"dataset {name!r} reads a downloaded layout: pass root=<folder>; generated datasets: {GENERATORS.names()}")
        loader = GENERATORS.build(name).loader
        folder = prepare_generated(name, seed=seed, scale=scale, cache_dir=cache_dir)
    return dataclasses.replace(DATASETS.get(loader)(folder), name=name)
