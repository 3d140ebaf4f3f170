"""Generated datasets on disk: one cached folder per (generator, version, seed, scale).

Every trial of a study on one node asks for the same data; the first process generates it, the
others wait on a file lock and reuse it (the "lock around shared downloads" of Ray Tune's
examples). Generation writes into a temporary folder beside the final one and renames it into
place, so a folder under its final name is always complete, even if a process dies mid-way.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from filelock import FileLock

from study.data.errors import DatasetError
from study.data.registry import DATASETS, GENERATORS, Generator, check_scale

MANIFEST = "generated.json"  # written last into the temporary folder: what was generated, how


def default_cache_dir() -> Path:
    """$CIRSTUDY_CACHE, else ~/.cache/cirstudy/data."""
    env = os.environ.get("CIRSTUDY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "cirstudy" / "data"


def known_datasets() -> list[str]:
    """Every name open_dataset accepts: loaders of real layouts and generators."""
    return sorted(set(DATASETS.names()) | set(GENERATORS.names()))


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
    with FileLock(str(cache / f"{key}.lock")):
        if final.is_dir():
            if not (final / MANIFEST).is_file():
                raise DatasetError(f"{final}: folder exists but has no {MANIFEST}, so it was not written by prepare_generated; delete it")
            return final
        for stale in cache.glob(f".{key}.tmp-*"):  # left by a process killed mid-generation
            shutil.rmtree(stale, ignore_errors=True)
        tmp = cache / f".{key}.tmp-{os.getpid()}"
        tmp.mkdir()
        try:
            start = time.monotonic()
            gen.generate(tmp, seed=seed, scale=scale)
            manifest = {"generator": gen.name, "version": gen.version, "seed": seed, "scale": scale,
                        "seconds": round(time.monotonic() - start, 3), "pid": os.getpid()}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final
