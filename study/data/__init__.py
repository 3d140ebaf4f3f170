"""Datasets for composed image retrieval: loaders of real layouts and synthetic generators.

    from study.data import open_dataset
    data = open_dataset("css", scale=0.05)                    # generated (cached), CSS layout
    data = open_dataset("mitstates", root=Path("/data/mit"))   # a real download
    data = open_dataset("fashioniq", root=Path("/data/fiq"), options={"category": "dress"})
    data = open_dataset("shoes", root=Path("/data/shoes"), allow_missing_images=True)
    data = open_dataset("shoes", root=Path("/data/shoes"), image_size=256)  # default: 224 real, 64 generated
    images = open_image_map(data.test)                         # decoded once per node: (N, 3, S, S) uint8
    batch = images.gather(torch.tensor([3, 1, 4]))             # uint8 (3, 3, S, S)
    data.manifest                                              # ImageManifest: listed / missing

Loaders (DATASETS) read a file layout: "css" (TIRG's CSS, Vo et al., CVPR 2019, arXiv 1812.07119),
"mitstates" (Isola et al., CVPR 2015), "fashion200k" (Han et al., ICCV 2017), "fashioniq" (Wu et
al., CVPR 2021; option category), "shoes" (Guo et al., NeurIPS 2018) and "cirr" (Liu et al., ICCV
2021; option split). Generators (GENERATORS) write one of those layouts: "css" (CSS-2D), "states"
(MIT-States-like), "fashion" (Fashion200k-like), "fashioniq" (FashionIQ-like) and "cirr"
(CIRR-like); see methods.md A.10 and B.7. Every loader checks its files at the edge
(study/data/checks.py): one DatasetError names the bad file and line. Images are delivered square
at `image_size` by TIRG's preprocessing (study/data/images.py) and decoded once per node into a
file every process reads (study/data/image_cache.py). What opening a dataset computed is cached per
node too (study/data/dataset_cache.py): a later trial reads it from one file.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

# registration: one import line per loader or generator
from study.data import cirr, cirr_generate, css, css_generate, fashion, fashion200k, fashioniq, fashioniq_generate, mitstates, shoes, states  # noqa: F401
from study.data.cache import default_cache_dir, known_datasets, prepare_generated
from study.data.checks import check_image_size
from study.data.dataset_cache import DatasetRequest, open_cached
from study.data.errors import DatasetError
from study.data.image_cache import ImageMap, open_image_map
from study.data.images import Preprocessing
from study.data.registry import DATASETS, GENERATORS, Generator
from study.data.types import ImageManifest, Query, RetrievalData, Split

__all__ = [
    "DATASETS", "GENERATORS", "DatasetError", "Generator", "ImageManifest", "ImageMap", "Preprocessing", "Query",
    "RetrievalData", "Split", "default_cache_dir", "known_datasets", "open_dataset", "open_image_map",
    "prepare_generated",
]  # fmt: skip


def open_dataset(
    name: str,
    *,
    root: Path | None = None,
    seed: int = 0,
    scale: float = 1.0,
    cache_dir: Path | None = None,
    options: Mapping[str, Any] | None = None,
    allow_missing_images: bool = False,
    image_size: int | None = None,
) -> RetrievalData:
    """A dataset by name. With `root`, the loader `name` reads that folder (a generator's name
    reads with its layout's loader); without, `name` must be a generator, whose output for
    (seed, scale) is generated once into the cache and then loaded.

    `options` go to the loader (fashioniq: {"category": "dress" | "shirt" | "toptee"}); an
    unknown or missing one raises DatasetError naming the valid ones. Images the layout lists but
    that are absent raise DatasetError with the counts unless `allow_missing_images`, which drops
    them and the queries touching them (and still raises when that leaves no image, or a split
    without images or queries); `data.manifest` records either way.

    `image_size` is the square side S every split is delivered at (`Split.image_size`; resize the
    shorter side to S, centre-crop: `Preprocessing`). None: 224 for a real layout, the generator's
    native size (64) for generated data (a folder holding `generated.json`).

    The first open of a dataset on a node reads its files and writes what it got into the cache
    folder (`cache_dir`, default $CIRSTUDY_CACHE or ~/.cache/cirstudy/data, in `datasets/`); a later
    open reads that back while the annotation files and image folders are unchanged
    (study/data/dataset_cache.py says what is checked, and what is not)."""
    if name not in DATASETS and name not in GENERATORS:
        raise DatasetError(
            f"unknown dataset {name!r}; known: {known_datasets()} "
            f"(loaders of real layouts: {DATASETS.names()}; generators: {GENERATORS.names()})"
        )
    size = None if image_size is None else check_image_size(image_size, f"dataset {name}")
    if root is not None:
        loader = name if name in DATASETS else GENERATORS.build(name).loader
        folder = Path(root)
        if not folder.is_dir():  # a file here would surface as some annotation file "not a directory"
            raise DatasetError(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'}; dataset {name} "
                               "reads the folder its layout was downloaded or generated into: pass that folder as root "
                               "(in a search space, the dataset's `root:`)")
    else:
        if name not in GENERATORS:
            raise DatasetError(f"dataset {name!r} reads a downloaded layout: pass root=<folder>; generated datasets: {GENERATORS.names()}")
        loader = GENERATORS.build(name).loader
        folder = prepare_generated(name, seed=seed, scale=scale, cache_dir=cache_dir)
    options = dict(options or {})
    if "allow_missing_images" in options:
        raise DatasetError(f"dataset {name}: pass allow_missing_images as open_dataset's own argument, not among options")

    def load() -> RetrievalData:
        try:
            data = DATASETS.get(loader)(folder, allow_missing_images=allow_missing_images, **options)
        except DatasetError as error:  # a generator's dataset is named as the user named it, not by its loader
            said, loaders = str(error), f"dataset {loader}:"
            if name == loader or not said.startswith(loaders):
                raise
            raise DatasetError(f"dataset {name}:{said[len(loaders):]}") from None
        if data.unusable:  # refused here, not by the loader: describe shows such a folder
            raise DatasetError(data.unusable)
        if size is None:
            return data
        return dataclasses.replace(data, train=dataclasses.replace(data.train, image_size=size),
                                   test=dataclasses.replace(data.test, image_size=size))

    request = DatasetRequest(loader, folder, options, allow_missing_images, size)
    data = open_cached(request, load, cache_dir=cache_dir)
    return dataclasses.replace(data, name=name)
