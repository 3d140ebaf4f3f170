"""What the node's cache holds, and freeing it: `python -m study.data cache list|clear`.

Two kinds of item: decoded image maps (`<cache>/images/*.cirimg`, study/data/image_cache.py) and
opened datasets (`<cache>/datasets/*.cirdata`, study/data/dataset_cache.py). An item is "used" each
time a process opens it (its mtime is touched), so `clear --older-than DAYS` keeps what recent
studies read. An item whose lock is held (being built, or being checked by a starting trial) is
skipped, never deleted under a writer; a reader that already has a map open keeps reading it after
it is deleted (POSIX keeps the file until the last descriptor closes).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from filelock import Timeout

from study.data.cache import item_lock, remove_path
from study.data.dataset_cache import SUFFIX as ENTRY_SUFFIX
from study.data.dataset_cache import DamagedEntry, EntryHeader, dataset_cache_dir, read_entry_header
from study.data.errors import DatasetError
from study.data.image_cache import SUFFIX, DamagedMap, MapHeader, image_cache_dir, read_header

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class CachedItem:
    """One file of the cache: an image map (header: MapHeader) or an opened dataset (EntryHeader)."""

    path: Path
    header: MapHeader | EntryHeader | None  # None: damaged or foreign (`problem` says which)
    problem: str | None
    bytes_on_disk: int  # allocated blocks (a sparse, half-built file counts what it holds)
    last_used: float  # unix time (mtime)


def list_maps(cache_dir: Path | None = None) -> list[CachedItem]:
    """Every map file (and every file with a map's suffix) in `<cache_dir>/images`, oldest use first."""
    return _list(image_cache_dir(cache_dir), SUFFIX, read_header, DamagedMap)


def list_datasets(cache_dir: Path | None = None) -> list[CachedItem]:
    """Every dataset entry (and every file with an entry's suffix) in `<cache_dir>/datasets`, oldest use first."""
    return _list(dataset_cache_dir(cache_dir), ENTRY_SUFFIX, read_entry_header, DamagedEntry)


def _list(folder: Path, suffix: str, read: Callable[[Path], MapHeader | EntryHeader],
          damaged: type[DatasetError]) -> list[CachedItem]:
    found = []
    for path in sorted(folder.glob(f"*{suffix}")) if folder.is_dir() else []:
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue  # cleared meanwhile
        header, problem = None, None
        try:
            header = read(path)
        except damaged as why:
            problem = f"damaged ({why}); rebuilt on next use"
        except DatasetError:
            problem = "not written by cirstudy"
        found.append(CachedItem(path, header, problem, stat.st_blocks * 512, stat.st_mtime))
    return sorted(found, key=lambda item: item.last_used)


def describe_maps(maps: list[CachedItem], folder: Path, now: float | None = None) -> list[str]:
    """The lines `cache list` prints: one per map, then the total."""
    def line(header: MapHeader) -> str:
        n, _, s, _ = header.shape
        return f"{header.root} [{header.split}] {s} px, {n} images"

    return _describe(maps, line, "image maps", folder, now)


def describe_datasets(entries: list[CachedItem], folder: Path, now: float | None = None) -> list[str]:
    """The lines `cache list` prints for opened datasets: one per entry, then the total."""
    def line(header: EntryHeader) -> str:
        r = header.request
        size = f"{r['image_size']} px" if r["image_size"] is not None else "native size"
        return f"{r['root']} [{r['loader']}] {size}, {header.images} images, {header.folders} folders watched"

    return _describe(entries, line, "opened datasets", folder, now)


def _describe(items: list[CachedItem], line: Callable[[Any], str], kind: str, folder: Path,
              now: float | None) -> list[str]:
    now = time.time() if now is None else now
    lines = []
    for item in items:
        used = (f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(item.last_used))} "
                f"({(now - item.last_used) / SECONDS_PER_DAY:.1f} days ago)")
        if item.header is None:
            lines.append(f"{item.path.name}: {item.problem}; {_size(item.bytes_on_disk)}, last used {used}")
        else:
            lines.append(f"{line(item.header)}, {_size(item.bytes_on_disk)}, last used {used}: {item.path.name}")
    lines.append(f"{len(items)} {kind}, {_size(sum(item.bytes_on_disk for item in items))} in {folder}")
    return lines


def clear_maps(cache_dir: Path | None = None, *, older_than_days: float | None = None) -> tuple[list[Path], list[Path]]:
    """Delete every map (unused for more than `older_than_days`, when given) and temporaries left by
    killed builds; returns (deleted, skipped because a process holds its lock)."""
    return _clear(image_cache_dir(cache_dir), SUFFIX, older_than_days)


def clear_datasets(cache_dir: Path | None = None, *, older_than_days: float | None = None) -> tuple[list[Path], list[Path]]:
    """As clear_maps, for the opened-dataset entries: the next open of each reads its layout again."""
    return _clear(dataset_cache_dir(cache_dir), ENTRY_SUFFIX, older_than_days)


def _clear(folder: Path, suffix: str, older_than_days: float | None) -> tuple[list[Path], list[Path]]:
    if older_than_days is not None and not older_than_days >= 0:
        raise DatasetError(f"--older-than must be a number of days >= 0, got {older_than_days!r}")
    if not folder.is_dir():
        return [], []
    cutoff = None if older_than_days is None else time.time() - older_than_days * SECONDS_PER_DAY
    deleted, skipped = [], []
    names = {p.name for p in folder.glob(f"*{suffix}")}
    names |= {p.name[1:].split(".tmp-")[0] for p in folder.glob(f".*{suffix}.tmp-*")}  # a killed build's temporary
    for name in sorted(names):
        path = folder / name
        if cutoff is not None and path.exists() and path.stat().st_mtime >= cutoff:
            continue
        lock = item_lock(folder, name)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            skipped.append(path)
            continue
        try:
            for victim in [path, *folder.glob(f".{name}.tmp-*")]:
                if victim.exists():
                    remove_path(victim)
                    deleted.append(victim)
            Path(lock.lock_file).unlink(missing_ok=True)  # waiters poll by reopening the file: safe to drop
        finally:
            lock.release()
    return deleted, skipped


def _size(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1024
        if n < 1024 or unit == "TB":
            break
    return f"{n:.1f} {unit}"
