"""What a loader looked at while it read a layout: the files it read, the folders it listed, the
images it listed. study/data/dataset_cache.py records it to know when a cached dataset is stale.

Loaders read annotation files through `read_text` (checks.py's `read_lines` and `read_json` do,
and safe_npy.py calls `note_file`), list folders through `note_folder`, and hand their image lists
to checks.py's `assemble`, which calls `note_images`. Outside `recording()` every call is a no-op.
A file's size and mtime are taken from the open descriptor BEFORE its bytes are read, so a change
made while it is read shows up as a changed mtime the next time.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

__all__ = ["Reads", "note_file", "note_folder", "note_images", "read_text", "recording"]


@dataclass
class Reads:
    files: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (size, mtime_ns) when read
    folders: set[str] = field(default_factory=set)  # listed by the loader
    images: list[str] = field(default_factory=list)  # every listed image, relative to the root, missing ones too


_current: ContextVar[Reads | None] = ContextVar("cirstudy_reads", default=None)


@contextmanager
def recording() -> Iterator[Reads]:
    """Collect what the loaders called inside the block read (this thread / task only)."""
    reads = Reads()
    token = _current.set(reads)
    try:
        yield reads
    finally:
        _current.reset(token)


def note_file(path: Path | str, stat: os.stat_result) -> None:
    reads = _current.get()
    if reads is not None:
        reads.files[os.fspath(path)] = (stat.st_size, stat.st_mtime_ns)


def note_folder(path: Path | str) -> None:
    reads = _current.get()
    if reads is not None:
        reads.folders.add(os.fspath(path))


def note_images(paths: Iterable[str]) -> None:
    reads = _current.get()
    if reads is not None:
        reads.images.extend(paths)


def read_text(path: Path) -> str:
    """`path.read_text(encoding="utf-8")`, noted: same text, same exceptions."""
    with open(path, encoding="utf-8") as f:
        note_file(path, os.fstat(f.fileno()))
        return f.read()
