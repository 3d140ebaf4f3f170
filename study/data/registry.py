"""The data package's registries: loaders of file layouts, generators, and layout detectors.

Adding a dataset is a new file that registers itself here and one import line in
`study/data/__init__.py`; nothing dispatches on names with if/elif (STYLE.md section 2).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from models.registry import Registry
from study.data.errors import DatasetError

DATASETS = Registry(
    "dataset",
    "study/data",
    "Layout name -> loader `(root: Path, *, allow_missing_images: bool = False, **options) -> "
    "RetrievalData` reading that file layout (the generated data and the real download share one "
    "loader). An unknown, missing or invalid option raises DatasetError naming the valid ones.",
)

GENERATORS = Registry(
    "generator",
    "study/data",
    "Generator name -> builder `() -> Generator`: how to write a synthetic dataset and which "
    "DATASETS loader reads what it writes.",
)

DETECTORS = Registry(
    "layout detector",
    "study/data",
    "Layout name (as in DATASETS) -> `(root: Path) -> dict | None`: None when the folder does not "
    "hold that layout, else the loader options to read it with (`describe` uses them; {} for none).",
)


@dataclass(frozen=True)
class Generator:
    name: str
    version: int  # bump when the output changes for a given (seed, scale): it keys the cache
    loader: str  # DATASETS name that reads what `generate` writes
    generate: Callable[..., None]  # generate(out: Path, *, seed: int, scale: float) -> None
    image_size: int = 64  # the side its images are rendered at: the size its data is delivered at by default


def check_scale(scale: float, where: str) -> None:
    """Reject a scale outside (0, 1] before any file is written."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0.0 < float(scale) <= 1.0:
        raise DatasetError(f"{where}: scale must be in (0, 1] (1.0 = full size), got {scale!r}")


def loader_of(name: str) -> str:
    """The DATASETS loader name for a loader or generator name."""
    if name in DATASETS:
        return name
    return GENERATORS.build(name).loader


def layouts_in(root: Path) -> list[str]:
    """The names of the layouts found in `root`."""
    return [name for name in DETECTORS.names() if DETECTORS.get(name)(root) is not None]


def detected_options(name: str, root: Path) -> dict:
    """The options detector `name` proposes for reading `root` ({} when it needs none)."""
    return dict(DETECTORS.get(name)(root) or {})
