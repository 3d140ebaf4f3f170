"""The one cache mechanism of the data package: a per-item file lock and an atomic write.

Every trial of a study on one node asks for the same data; the first process builds it, the others
wait on a file lock and reuse it (the "lock around shared downloads" of Ray Tune's examples). A
build writes into a temporary path beside the final one and renames it into place (`build_atomically`),
so an item under its final name is always complete, even if a process dies mid-way. Three kinds of
item use it: generated datasets (one folder per generator, version, seed and scale: here), decoded
image maps (one file per split, size and preprocessing: study/data/image_cache.py) and opened
datasets (one file per loader, root, options and size: study/data/dataset_cache.py).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock

from study.data.checks import GENERATED_MANIFEST
from study.data.errors import DatasetError
from study.data.registry import DATASETS, GENERATORS, Generator, check_scale

MANIFEST = GENERATED_MANIFEST  # written last into a generated folder: what was generated, how, at which size


def default_cache_dir() -> Path:
    """$CIRSTUDY_CACHE, else ~/.cache/cirstudy/data."""
    env = os.environ.get("CIRSTUDY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "cirstudy" / "data"


def known_datasets() -> list[str]:
    """Every name open_dataset accepts: loaders of real layouts and generators."""
    return sorted(set(DATASETS.names()) | set(GENERATORS.names()))


def item_lock(folder: Path, name: str) -> FileLock:
    """The lock every process of a node takes before building or repairing `folder/name`."""
    return FileLock(str(folder / f"{name}.lock"))


def remove_path(path: Path) -> None:
    """Delete a file or a folder tree; an absent path is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def build_atomically(folder: Path, name: str) -> Iterator[Path]:
    """A temporary path beside `folder/name` to build into (a file or a folder: the caller creates
    it); renamed onto `folder/name` when the block ends cleanly, deleted when it raises. Call it
    holding `item_lock(folder, name)`: any temporary of `name` found then was left by a process
    killed mid-build, and is removed."""
    for stale in folder.glob(f".{name}.tmp-*"):
        remove_path(stale)
    tmp = folder / f".{name}.tmp-{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, folder / name)
    except BaseException:
        remove_path(tmp)
        raise


def write_generated_manifest(folder: Path, gen: Generator, *, seed: int, scale: float, seconds: float) -> None:
    """Mark `folder` as generator output: loaders then deliver its images at the generator's
    native size (`image_size` here) rather than the 224 px of real layouts."""
    manifest = {"generator": gen.name, "version": gen.version, "seed": seed, "scale": scale,
                "image_size": gen.image_size, "seconds": round(seconds, 3), "pid": os.getpid()}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def generate_into(name: str, out: Path, *, seed: int, scale: float) -> float:
    """Run generator `name` into the folder `out` and write its manifest; returns the seconds taken."""
    gen = generator(name)
    start = time.monotonic()
    gen.generate(out, seed=seed, scale=scale)
    seconds = time.monotonic() - start
    write_generated_manifest(out, gen, seed=seed, scale=scale, seconds=seconds)
    return seconds


def generator(name: str) -> Generator:
    if name not in GENERATORS:
        hint = f"{name!r} is a loader of a downloaded layout: pass root=<folder>. " if name in DATASETS else ""
        raise DatasetError(
            f"unknown generator {name!r}; {hint}generators: {GENERATORS.names()}, "
            f"all datasets: {known_datasets()}; add a generator in study/data/{name}.py"
        )
    return GENERATORS.build(name)


def cache_key(gen: Generator, seed: int, scale: float) -> str:
    return f"{gen.name}-v{gen.version}-seed{seed}-scale{float(scale)!r}"


def prepare_generated(name: str, *, seed: int, scale: float, cache_dir: Path | None = None) -> Path:
    """The folder holding generator `name`'s data for (seed, scale), generating it on first use.

    Safe under concurrency: processes of one node share the folder through a FileLock.
    Example: prepare_generated("css", seed=0, scale=0.05) -> ~/.cache/cirstudy/data/css-v1-seed0-scale0.05
    """
    gen = generator(name)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DatasetError(f"generator {name}: seed must be an integer >= 0, got {seed!r}")
    check_scale(scale, f"generator {name}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    key = cache_key(gen, seed, scale)
    final = cache / key
    with item_lock(cache, key):
        if final.is_dir():
            if not (final / MANIFEST).is_file():
                raise DatasetError(f"{final}: folder exists but has no {MANIFEST}, so it was not written by prepare_generated; delete it")
            return final
        with build_atomically(cache, key) as tmp:
            tmp.mkdir()
            generate_into(name, tmp, seed=seed, scale=scale)  # the manifest is written last
    return final
