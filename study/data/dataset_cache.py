"""A node's cache of opened datasets: a later trial reads what opening a dataset computed from one file.

Opening Fashion200k means parsing its label files, building TIRG's training queries, checking that
every listed image exists and stat-ing every image again for its image-map key: about 35 us per
image, 8 s for 202k images, in every trial. The first process on a node that opens a dataset (for
one loader, root, options, allow_missing_images and image_size) writes what it got into
`<cache>/datasets/<root>-<loader>-<key>.cirdata`; every later open reads that file back.

The file: MAGIC, then three pickles of plain Python values (dicts, tuples, strings, numbers; no
class is ever named, and the unpickler refuses any that is, as study/data/safe_npy.py does):
  header   format, the request, the root folder's (device, inode), every annotation file the loader
           read with its (size, mtime_ns) taken when it was read, the byte lengths of the two others
  folders  the folders to watch, relative to the root, and each one's mtime_ns (None: absent)
  data     the RetrievalData field by field (queries as one column per Query field) and each
           split's image-map key (study/data/image_cache.py's map_key, computed when written)
Its key hashes the request, FORMAT, the data package's source files and numpy's version, so a
changed loader reads afresh. It is written beside its final name and renamed into place under the
item's lock (study/data/cache.py), so a file under its final name is complete.

A cached dataset is used only while (a) every annotation file the loader read has the same size and
mtime_ns, and (b) every watched folder has the same mtime_ns: the root, each folder the loader
listed or read a file from, and each folder holding a listed image (missing images included) with
the folders above it up to the root. Adding, removing or renaming a file changes its folder's
mtime, so an image that appears or vanishes, a new label file or a new optional file (regions.json)
is seen. The warm path stats those folders, never an image; Fashion200k keeps each product's images
in a folder of their own, so it is still one stat per product (4-5 us each on the 2-core development
VM, where a system call is slow), plus about 2 us per query to rebuild the frozen Query objects:
bench/data_scale.py measures it.
NOT detected: an image overwritten in place under the same name (its map key is the cached one, so
its old pixels stay in the node's image map), or a file restored with its old size and mtime
(`cp -p`, `rsync -t`). After such an edit run `python -m study.data cache clear` or touch the
image's folder. An entry is written only when every file and folder it depends on is more than
RACY_SECONDS older than the open that reads them, so a change made during that open, or within one
timestamp tick of it, cannot hide behind an equal mtime; an open of data written moments ago just
reads it, and a later open writes the entry.

Every warm open must equal the cold one: before writing, the entry is read back and compared with
what the loader returned, and not written if they differ. A damaged entry of ours (truncated,
unreadable) is rebuilt; a foreign file under our name, or one whose pickle names a class, is refused.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import pickle
import re
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from study.data.cache import build_atomically, default_cache_dir, item_lock
from study.data.errors import DatasetError
from study.data.image_cache import FORMAT as MAP_FORMAT
from study.data.image_cache import map_key, remember_map_key
from study.data.images import PREPROCESSING_VERSION
from study.data.reads import Reads, recording
from study.data.types import ImageManifest, Query, RetrievalData, Split

__all__ = ["DatasetRequest", "EntryHeader", "dataset_cache_dir", "open_cached", "read_entry_header"]

FORMAT = 1
MAGIC = b"cirstudy dataset cache\n"
SUFFIX = ".cirdata"
DATASETS_SUBDIR = "datasets"
RACY_SECONDS = 2  # > the coarsest mtime tick of the file systems we expect (ext3, FAT: 1-2 s)
SPLIT_FIELDS = tuple(f.name for f in fields(Split) if f.name not in ("root", "queries"))
DATA_FIELDS = tuple(f.name for f in fields(RetrievalData) if f.name not in ("train", "test", "manifest"))
QUERY_FIELDS = tuple(f.name for f in fields(Query))


def dataset_cache_dir(cache_dir: Path | None = None) -> Path:
    """Where entries live: `<cache_dir>/datasets`, default `default_cache_dir()/datasets`."""
    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / DATASETS_SUBDIR


def clear_hint(folder: Path) -> str:
    return f"delete it, or run `python -m study.data cache clear --cache-dir {folder.parent}`"


@dataclass(frozen=True)
class DatasetRequest:
    """What open_dataset was asked for, after defaults: the entry's identity."""

    loader: str
    root: Path  # as given (Split.root of the result)
    options: Mapping[str, Any]
    allow_missing_images: bool
    image_size: int | None  # None: the layout's native size

    def describe(self) -> dict[str, Any]:
        return {"loader": self.loader, "root": os.path.abspath(self.root), "options": repr(sorted(self.options.items())),
                "allow_missing_images": self.allow_missing_images, "image_size": self.image_size}

    def key(self) -> str:
        text = json.dumps([FORMAT, code_fingerprint(), self.describe()], sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def entry_name(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(os.path.abspath(self.root)).name)[:40] or "root"
        return f"{slug}-{self.loader}-{self.key()[:20]}{SUFFIX}"


@functools.cache
def code_fingerprint() -> str:
    """sha256 of the data package's sources, numpy's version (training queries are drawn with its
    Generator) and the image maps' format and preprocessing version (the cached map keys)."""
    digest = hashlib.sha256(f"{np.__version__}/{MAP_FORMAT}/{PREPROCESSING_VERSION}".encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class EntryHeader:
    """The first pickle of an entry (`python -m study.data cache list` shows it)."""

    format: int
    request: dict[str, Any]  # DatasetRequest.describe()
    root_id: tuple[int, int]  # (st_dev, st_ino) of the root folder
    files: tuple[tuple[str, int, int], ...]  # (path relative to the root, or absolute; size; mtime_ns)
    sizes: tuple[int, int]  # bytes of the folders pickle and of the data pickle
    images: int  # in both splits
    folders: int
    created: float  # unix time
    load_seconds: float  # what the cold open cost


class ForeignEntry(DatasetError):
    """A file under an entry's name that cirstudy did not write: refused, never overwritten."""


class DamagedEntry(Exception):
    """An entry of ours that cannot be read (truncated, another format): rebuilt under the lock."""


class _PlainUnpickler(pickle.Unpickler):
    """Admits plain values only: an entry names no class, so any global means someone else's file."""

    def __init__(self, file: io.BytesIO, source: Path) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        raise ForeignEntry(f"{self._source}: its pickle names {module}.{name}, which no dataset cache entry does; "
                           f"it was not written by cirstudy (or was tampered with): {clear_hint(self._source.parent)}")


def _load(stream: io.BytesIO, source: Path) -> Any:
    try:
        return _PlainUnpickler(stream, source).load()
    except DatasetError:
        raise
    except Exception as err:  # a truncated or corrupt pickle: any error the pickle machinery raises
        raise DamagedEntry(f"unreadable pickle ({err!r})") from None


def _relative(path: str, root: str) -> str:
    """`path` relative to `root` when it lies under it ("." for the root itself), else absolute."""
    if path == root:
        return "."
    prefix = root.rstrip(os.sep) + os.sep
    return path[len(prefix):] if path.startswith(prefix) else os.path.abspath(path)


def _watched_folders(root: str, reads: Reads) -> list[str]:
    """The root, every folder listed or read from, every folder of a listed image, and the folders
    above each, up to the root (relative to it)."""
    starts = {"."} | {_relative(p, root) for p in reads.folders}
    starts |= {os.path.dirname(_relative(p, root)) or "." for p in reads.files}
    starts |= {rel.rpartition("/")[0] or "." for rel in reads.images}
    watched: set[str] = set()
    for folder in starts:
        while folder not in watched:
            watched.add(folder)
            if folder in (".", os.sep):
                break
            folder = os.path.dirname(folder) or "."
    return sorted(watched)


def _mtimes(fd: int, folders: list[str] | tuple[str, ...]) -> list[int | None]:
    stamps: list[int | None] = []
    for folder in folders:
        try:
            stamps.append(os.stat(folder, dir_fd=fd).st_mtime_ns)
        except OSError:
            stamps.append(None)
    return stamps


def _first_changed_folder(fd: int, folders: tuple[str, ...], stamps: tuple[int | None, ...]) -> str | None:
    for folder, stamp in zip(folders, stamps):  # the warm path's one loop: one stat per folder
        try:
            now = os.stat(folder, dir_fd=fd).st_mtime_ns
        except OSError:
            now = None
        if now != stamp:
            return folder
    return None


def _data_fields(data: RetrievalData, keys: dict[str, str]) -> dict[str, Any]:
    def split(s: Split) -> dict[str, Any]:
        columns = {name: tuple(getattr(q, name) for q in s.queries) for name in QUERY_FIELDS}
        return {**{name: getattr(s, name) for name in SPLIT_FIELDS}, "queries": columns, "map_key": keys[s.name]}

    manifest = None if data.manifest is None else dataclasses.astuple(data.manifest)
    return {**{name: getattr(data, name) for name in DATA_FIELDS}, "manifest": manifest,
            "train": split(data.train), "test": split(data.test)}


def _restore(fields_: dict[str, Any], root: Path) -> tuple[RetrievalData, dict[str, str]]:
    """The RetrievalData an entry holds and its splits' map keys; DamagedEntry when its shape is wrong."""
    try:
        def split(s: dict[str, Any]) -> Split:
            columns = s["queries"]
            queries = tuple(map(Query, *(columns[name] for name in QUERY_FIELDS)))
            return Split(root=root, queries=queries, **{name: s[name] for name in SPLIT_FIELDS})

        train, test = split(fields_["train"]), split(fields_["test"])
        manifest = None if fields_["manifest"] is None else ImageManifest(*fields_["manifest"])
        data = RetrievalData(train=train, test=test, manifest=manifest, **{name: fields_[name] for name in DATA_FIELDS})
        return data, {"train": fields_["train"]["map_key"], "test": fields_["test"]["map_key"]}
    except (KeyError, TypeError, ValueError) as err:
        raise DamagedEntry(f"its data does not fit this version's RetrievalData ({err!r})") from None


def _read_warm(path: Path, request: DatasetRequest) -> tuple[RetrievalData, dict[str, str]] | str:
    """The entry's data and map keys when it is current, else why not (a sentence). ForeignEntry
    when the file is not ours; DamagedEntry when it is ours but unreadable."""
    try:
        return _read_entry(path, request)
    except DatasetError:
        raise
    except (TypeError, ValueError, KeyError, IndexError) as err:  # plain values, of the wrong shape
        raise DamagedEntry(f"its contents are malformed ({err!r})") from None


def _read_entry(path: Path, request: DatasetRequest) -> tuple[RetrievalData, dict[str, str]] | str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return "no entry"
    except OSError as err:
        raise DamagedEntry(f"cannot read it ({err})") from None
    if not raw.startswith(MAGIC):
        raise ForeignEntry(f"{path}: not a dataset cache entry written by cirstudy (it lacks the {MAGIC!r} header); "
                           f"{clear_hint(path.parent)}")
    stream = io.BytesIO(raw)
    stream.seek(len(MAGIC))
    header = read_header_from(stream, path)
    if len(raw) != stream.tell() + sum(header.sizes):
        raise DamagedEntry(f"it holds {len(raw)} bytes but its header needs {stream.tell() + sum(header.sizes)} (truncated?)")
    if header.request != request.describe():
        return "the entry is for another request (a hash collision)"
    try:
        fd = os.open(request.root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        return f"cannot open the root folder ({err})"
    try:
        found = os.fstat(fd)
        if (found.st_dev, found.st_ino) != tuple(header.root_id):
            return "the root is another folder"
        for rel, size, mtime in header.files:
            try:
                now = os.stat(rel, dir_fd=fd)
            except OSError:
                return f"{rel} is gone"
            if (now.st_size, now.st_mtime_ns) != (size, mtime):
                return f"{rel} changed"
        watched = _load(stream, path)
        changed = _first_changed_folder(fd, watched["folders"], watched["mtimes"])
        if changed is not None:
            return f"folder {changed} changed"
    finally:
        os.close(fd)
    return _restore(_load(stream, path), request.root)


def read_header_from(stream: io.BytesIO, path: Path) -> EntryHeader:
    raw = _load(stream, path)
    try:
        header = EntryHeader(**raw)
    except TypeError as err:
        raise DamagedEntry(f"its header is malformed ({err})") from None
    if header.format != FORMAT:
        raise DamagedEntry(f"format {header.format}, expected {FORMAT}")
    return header


def read_entry_header(path: Path) -> EntryHeader:
    """The header of the entry at `path` (ForeignEntry, DamagedEntry as for a warm read)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(1 << 20)  # a header lists the annotation files: kilobytes
    except OSError as err:
        raise DamagedEntry(f"cannot read it ({err})") from None
    if not raw.startswith(MAGIC):
        raise ForeignEntry(f"{path}: not a dataset cache entry written by cirstudy; {clear_hint(path.parent)}")
    stream = io.BytesIO(raw)
    stream.seek(len(MAGIC))
    return read_header_from(stream, path)


def _usable(path: Path, request: DatasetRequest, *, report: bool) -> RetrievalData | None:
    """The entry's data when it is current, else None (then read afresh); ForeignEntry raises."""
    try:
        found = _read_warm(path, request)
    except DamagedEntry as why:
        if report:
            print(f"{path}: damaged dataset cache entry ({why}); rebuilding it", file=sys.stderr)
        return None
    if isinstance(found, str):
        return None
    data, keys = found
    for split in (data.train, data.test):
        remember_map_key(split, keys[split.name])  # open_image_map stats no image for these
    try:
        os.utime(path)  # "last used", for `python -m study.data cache list` and `clear --older-than`
    except OSError:
        pass
    return data


def _entry_bytes(request: DatasetRequest, data: RetrievalData, reads: Reads, started_ns: int,
                 seconds: float) -> bytes | None:
    """The entry for what a cold open read, or None when it must not be cached (see the module
    docstring: racy timestamps, a split rooted elsewhere, an image gone meanwhile)."""
    root = os.fspath(request.root)
    if data.train.root != request.root or data.test.root != request.root:
        return None  # a loader that re-roots its splits: the entry could not restore them
    newest = started_ns - RACY_SECONDS * 10**9
    files = tuple((_relative(p, root), size, mtime) for p, (size, mtime) in sorted(reads.files.items()))
    if any(mtime >= newest for _, _, mtime in files):
        return None
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        found = os.fstat(fd)
        folders = _watched_folders(root, reads)
        stamps = _mtimes(fd, folders)  # after the loader looked: a change it may have missed is racy
    finally:
        os.close(fd)
    if any(stamp is not None and stamp >= newest for stamp in stamps):
        return None
    try:
        keys = {s.name: map_key(s) for s in (data.train, data.test)}  # one stat per image, as open_image_map's
    except DatasetError:
        return None  # an image vanished since the loader looked: the next open sees it
    watched = pickle.dumps({"folders": tuple(folders), "mtimes": tuple(stamps)}, protocol=pickle.HIGHEST_PROTOCOL)
    body = pickle.dumps(_data_fields(data, keys), protocol=pickle.HIGHEST_PROTOCOL)
    header = EntryHeader(
        format=FORMAT, request=request.describe(), root_id=(found.st_dev, found.st_ino), files=files,
        sizes=(len(watched), len(body)), images=len(data.train.image_paths) + len(data.test.image_paths),
        folders=len(folders), created=time.time(), load_seconds=round(seconds, 3),
    )
    try:
        restored, _ = _restore(_load(io.BytesIO(body), Path(root)), request.root)
    except (DamagedEntry, DatasetError):
        return None  # a value that is not plain data (a new field's type): never cached, always read
    if restored != data:
        return None
    return MAGIC + pickle.dumps(dataclasses.asdict(header), protocol=pickle.HIGHEST_PROTOCOL) + watched + body


def open_cached(request: DatasetRequest, load: Callable[[], RetrievalData], *, cache_dir: Path | None = None) -> RetrievalData:
    """`load()`'s RetrievalData for `request`, from the node's entry when it is current (see the
    module docstring); otherwise `load()` runs, recorded, and its result is written for the next
    process. The first process to miss holds the entry's lock while it loads: the others wait and
    read what it wrote."""
    folder = dataset_cache_dir(cache_dir)
    name = request.entry_name()
    path = folder / name
    data = _usable(path, request, report=False)
    if data is not None:
        return data
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = item_lock(folder, name)
        lock.acquire()
    except OSError:  # a read-only cache: every open reads the layout
        return load()
    try:
        data = _usable(path, request, report=True)  # another process may have written it meanwhile
        if data is not None:
            return data
        started_ns = time.time_ns()
        with recording() as reads:
            data = load()
        entry = _entry_bytes(request, data, reads, started_ns, (time.time_ns() - started_ns) / 1e9)
        if entry is not None:
            _write(folder, name, entry)
        return data
    finally:
        lock.release()


def _write(folder: Path, name: str, entry: bytes) -> None:
    try:
        with build_atomically(folder, name) as tmp:
            with open(tmp, "xb") as f:
                f.write(entry)
                f.flush()
                os.fsync(f.fileno())  # a machine crash must not leave a renamed, empty entry
    except OSError as err:  # the data is fine; only the next open will read the layout again
        print(f"{folder / name}: cannot write the dataset cache entry ({err}); later opens read the layout", file=sys.stderr)
