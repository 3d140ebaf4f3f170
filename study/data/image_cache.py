"""Decode once per node, map everywhere: one uint8 file of a split's images, shared by every trial.

    from study.data import open_dataset
    from study.data.image_cache import open_image_map
    split = open_dataset("fashion200k", root=Path("/data/fashion200k")).train
    images = open_image_map(split, cache_dir=Path("/nvme/cirstudy"))   # decodes on first use only
    batch = images.gather(torch.tensor([5, 17, 3]), out=pinned)       # uint8 (3, 3, 224, 224)

The first process on a node that asks for a split at a size decodes every image (study/data/
images.py's `load_image`) on all the node's CPUs and writes ONE file, `<cache>/images/<root>-<split>-
<S>px-<key>.cirimg`: a 4 KiB header (magic, format, key, shape, dtype, where it came from) and then
the (N, 3, S, S) uint8 pixels, row i at HEADER_BYTES + i * 3 * S * S. It is written beside its final
name and renamed into place under a file lock (study/data/cache.py), so a file under its final name
is complete. The key hashes the image list with each file's size and mtime, S and the preprocessing
version: editing, replacing or adding an image gives a new file. A split that open_dataset read
from the node's dataset cache (study/data/dataset_cache.py) comes with the key computed when that
entry was written, and no image is stat-ed here (`remember_map_key`). Every later caller checks the
header and the file's length and reads the same file. A damaged map of ours is rebuilt; a foreign file under
our name is refused, naming it.

Why threads decode: torchvision's decoders and resize kernels run in C++ without the GIL; the Python
left per image (file read, dispatch) is about 0.1 ms of the 1-3 ms an image costs at 224 px, so
threads use the node's cores without the seconds each spawned process spends importing torch (a
worker may be a Ray actor, where forking a threaded process is unsafe). bench/data_scale.py on the
2-core development machine: 312 images/s on 1 thread, 625/s on 2 threads (x2.0), 51/s with 2
spawned processes for the same 384 images (start-up included); a whole build ran at 365-394
images/s per core. On a large node the Python share bounds threads near 10x; a build is once per
node and split, so that is minutes for Fashion200k's 200k images, not per trial.

Why `gather` reads with `os.preadv` rather than indexing a memory map: a mapped page that only one
process touched counts as that process's private memory (USS, Private_Clean in /proc/PID/smaps), so
a worker reading a map through mmap shows a USS growing toward the map's size even though the pages
are page cache and freeable (bench: one pass over a 2.4 GB map through np.memmap grew USS by 2.4 GB,
through gather by 2 MB). `preadv` copies each row (runs of consecutive indices in one call) from the
node's single page-cache copy straight into the caller's (pinned) buffer: the worker's private
memory stays at its buffers, whatever N. The copy costs about 50 us per 224 px image (250-325
batches of 2 x 32 per second), three orders of magnitude above what a CPU training step consumes.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
import weakref
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from study.data.cache import build_atomically, default_cache_dir, item_lock
from study.data.errors import DatasetError
from study.data.images import PREPROCESSING_VERSION, decoders, load_image
from study.data.progress import Progress
from study.data.types import Split

__all__ = ["ImageMap", "MapHeader", "image_cache_dir", "map_key", "open_image_map", "read_header", "remember_map_key",
           "remembered_map_key"]

FORMAT = 1  # of the file itself (header layout); part of the key
MAGIC = b"cirstudy image map\n"
HEADER_BYTES = 4096  # one page: the pixels start page-aligned
SUFFIX = ".cirimg"
IMAGES_SUBDIR = "images"
BUILD_CHUNK = 32  # images per decoding task: small enough to spread, large enough to amortise
MAX_READ = 1 << 30  # one preadv call reads at most this (Linux caps a call near 2 GiB)


def clear_hint(maps_folder: Path) -> str:
    """How to get rid of a bad file in `maps_folder` (`<cache dir>/images`)."""
    return f"delete it, or run `python -m study.data cache clear --cache-dir {maps_folder.parent}`"


@dataclass(frozen=True)
class MapHeader:
    """What a map file says about itself (its first HEADER_BYTES)."""

    format: int
    key: str
    shape: tuple[int, int, int, int]  # (N, 3, S, S)
    dtype: str  # "uint8"
    root: str  # the dataset folder it was decoded from (on the node that built it)
    split: str
    preprocessing: str  # study/data/images.py Preprocessing.describe()
    created: float  # unix time
    build_seconds: float
    threads: int  # decoding threads used

    def to_bytes(self) -> bytes:
        text = json.dumps({**self.__dict__, "shape": list(self.shape)}).encode("utf-8")
        raw = MAGIC + text + b"\n"
        if len(raw) > HEADER_BYTES:
            raise ValueError(f"image map header of {len(raw)} bytes exceeds {HEADER_BYTES}")  # a bug: root is clipped
        return raw.ljust(HEADER_BYTES, b" ")


class ForeignFile(DatasetError):
    """A file under a map's name that cirstudy did not write: refused, never overwritten."""


class DamagedMap(Exception):
    """A map of ours that cannot be read as data (truncated, bad header): rebuilt under the lock."""


def read_header(path: Path) -> MapHeader:
    """The header of the map file at `path`; ForeignFile when it is not ours, DamagedMap when it is
    ours but its header or length is wrong."""
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
            size = os.fstat(f.fileno()).st_size
    except OSError as err:
        raise DamagedMap(f"cannot read it ({err})") from None
    if not raw.startswith(MAGIC):
        raise ForeignFile(f"{path}: not an image map written by cirstudy (it lacks the {MAGIC!r} header); "
                          f"{clear_hint(path.parent)}")
    try:
        fields = json.loads(raw[len(MAGIC):].decode("utf-8"))
        header = MapHeader(**{**fields, "shape": tuple(fields["shape"])})
        n, c, h, w = (int(v) for v in header.shape)
    except (ValueError, TypeError, KeyError) as err:
        raise DamagedMap(f"its header is unreadable ({err})") from None
    if header.format != FORMAT or header.dtype != "uint8" or c != 3 or h != w:
        raise DamagedMap(f"its header describes format {header.format}, {header.dtype} {list(header.shape)}; "
                         f"expected format {FORMAT}, uint8 (N, 3, S, S)")
    expected = HEADER_BYTES + n * c * h * w
    if size != expected:
        raise DamagedMap(f"it holds {size} bytes but its header's shape {list(header.shape)} needs {expected} (truncated?)")
    return header


def image_cache_dir(cache_dir: Path | None = None) -> Path:
    """Where maps live: `<cache_dir>/images`, default `default_cache_dir()/images`."""
    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / IMAGES_SUBDIR


def map_key(split: Split) -> str:
    """sha256 of (format, preprocessing version, S, every image's relative path, size and mtime)."""
    lines = [f"cirstudy-image-map/{FORMAT}/{PREPROCESSING_VERSION}/{split.image_size}"]
    folder = os.fspath(split.root)
    for rel in split.image_paths:  # one stat per image on every open: strings, not pathlib (3x faster)
        path = os.path.join(folder, rel)
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise DatasetError(f"{path}: image file is missing; re-download or regenerate the dataset, or open it "
                               f"with allow_missing_images=True to drop it") from None
        except OSError as err:
            raise DatasetError(f"{path}: cannot read the image ({err}); replace or regenerate the file") from None
        lines.append(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


# id(split) -> (the split, weakly; its key): keys of the splits open_dataset read from its cache in
# this process. By object, not by value: dataclasses.replace gives a new Split, which is stat-ed.
_REMEMBERED: dict[int, tuple[weakref.ref, str]] = {}


def remember_map_key(split: Split, key: str) -> None:
    """Let open_image_map use `key` for this very Split object (study/data/dataset_cache.py: the key
    that map_key gave when the node's dataset cache was written, still valid by its checks)."""
    ident = id(split)
    _REMEMBERED[ident] = (weakref.ref(split, lambda _, ident=ident: _REMEMBERED.pop(ident, None)), key)


def remembered_map_key(split: Split) -> str | None:
    entry = _REMEMBERED.get(id(split))
    return entry[1] if entry is not None and entry[0]() is split else None


def map_name(split: Split, key: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", split.root.resolve().name)[:40] or "root"
    return f"{slug}-{split.name}-{split.image_size}px-{key[:20]}{SUFFIX}"


class ImageMap:
    """A split's decoded images, uint8 (N, 3, S, S), read from the node's map file on demand.

    Every read is a copy into memory the caller owns (`gather`, `__getitem__`), so the object is
    safe to share between threads and cheap to pickle (it reopens the file by path)."""

    def __init__(self, path: Path, header: MapHeader) -> None:
        self._fd: int | None = None
        self.path, self.header = Path(path), header
        n, c, s, _ = header.shape
        self._row = c * s * s
        self._fd = os.open(self.path, os.O_RDONLY)
        if os.fstat(self._fd).st_size != HEADER_BYTES + n * self._row:  # replaced since its header was read
            self.close()
            raise DatasetError(f"{self.path}: image map changed while being opened; open it again, or {clear_hint(self.path.parent)}")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        n, c, h, w = self.header.shape
        return (int(n), int(c), int(h), int(w))

    @property
    def image_size(self) -> int:
        return self.shape[-1]

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ImageMap({str(self.path)!r}, shape={self.shape})"

    def gather(self, indices: torch.Tensor | Sequence[int], out: torch.Tensor | None = None) -> torch.Tensor:
        """Images `indices` (0 <= i < N, any order, repeats allowed) as a uint8 (B, 3, S, S) copy,
        written into `out` when given (a contiguous uint8 CPU tensor of that shape, e.g. pinned)."""
        idx = self._indices(indices)
        shape = (len(idx), *self.shape[1:])
        if out is None:
            out = torch.empty(shape, dtype=torch.uint8)
        elif out.dtype != torch.uint8 or out.device.type != "cpu" or tuple(out.shape) != shape or not out.is_contiguous():
            raise ValueError(f"gather: out must be a contiguous uint8 CPU tensor of shape {shape}, "
                             f"got {out.dtype} {tuple(out.shape)} on {out.device}{'' if out.is_contiguous() else ', not contiguous'}")
        if len(idx) == 0:
            return out
        buffer = memoryview(out.numpy().reshape(-1))
        starts = np.concatenate(([0], np.flatnonzero(np.diff(idx) != 1) + 1))  # runs of consecutive indices
        ends = np.append(starts[1:], len(idx))
        for start, end in zip(starts.tolist(), ends.tolist()):
            self._read(buffer[start * self._row : end * self._row], HEADER_BYTES + int(idx[start]) * self._row)
        return out

    def __getitem__(self, key: int | slice | torch.Tensor | Sequence[int]) -> torch.Tensor:
        """A copy: image `key` (int, negative counts from the end) as (3, S, S), else (B, 3, S, S)."""
        n = len(self)
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"image {key} out of range for {n} images ({self.path})")
            return self.gather([i])[0]
        if isinstance(key, slice):
            return self.gather(np.arange(*key.indices(n)))
        if isinstance(key, torch.Tensor) and key.dtype == torch.bool:
            key = key.nonzero().flatten()
        return self.gather(key)

    def _indices(self, indices: torch.Tensor | Sequence[int]) -> np.ndarray:
        if isinstance(indices, torch.Tensor):
            idx = indices.detach().cpu().numpy()
        else:
            idx = np.asarray(indices)
        if idx.size == 0:
            return np.zeros(0, dtype=np.int64)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"gather: indices must be a 1-D sequence of integers, got {idx.dtype} of shape {idx.shape}")
        idx = idx.astype(np.int64, copy=False)
        if idx.min() < 0 or idx.max() >= len(self):
            raise IndexError(f"gather: indices must lie in [0, {len(self)}), got {idx.min()}..{idx.max()} ({self.path})")
        return idx

    def _read(self, view: memoryview, offset: int) -> None:
        if self._fd is None:
            raise ValueError(f"{self.path}: image map is closed")
        while len(view):
            got = os.preadv(self._fd, [view[:MAX_READ]], offset)
            if got <= 0:
                raise DatasetError(f"{self.path}: image map ended early (was it truncated while in use?); {clear_hint(self.path.parent)}")
            view, offset = view[got:], offset + got

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "ImageMap":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def __reduce__(self) -> tuple:
        return (_reopen, (str(self.path),))


def _reopen(path: str) -> ImageMap:
    return ImageMap(Path(path), read_header(Path(path)))


def open_image_map(split: Split, *, cache_dir: Path | None = None, progress: bool = False) -> ImageMap:
    """The node's map of `split`'s images at `split.image_size`, decoding them first if no process
    of this node has yet (see the module docstring). `cache_dir`: the study's cache folder (maps go
    in `<cache_dir>/images`), default $CIRSTUDY_CACHE or ~/.cache/cirstudy/data. `progress`: print
    a counter and a summary line on stderr while decoding."""
    folder = image_cache_dir(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    key = remembered_map_key(split) or map_key(split)
    name = map_name(split, key)
    path = folder / name
    expected = (len(split.image_paths), 3, split.image_size, split.image_size)
    header = _usable(path, key, expected)
    if header is None:
        with item_lock(folder, name):
            header = _usable(path, key, expected, report=True)  # another process may have built it meanwhile
            if header is None:
                header = _build(split, key, folder, name, progress=progress)
    try:
        os.utime(path)  # "last used", for `python -m study.data cache list` and `clear --older-than`
    except OSError:
        pass  # a read-only cache is still usable
    return ImageMap(path, header)


def _usable(path: Path, key: str, shape: tuple[int, int, int, int], *, report: bool = False) -> MapHeader | None:
    """The header of a complete map for `key` at `path`, or None when there is none or it is ours
    but damaged (then rebuilt); a foreign file raises."""
    if not path.exists():
        return None
    try:
        header = read_header(path)
    except DamagedMap as why:
        if report:
            print(f"{path}: damaged image map ({why}); rebuilding it", file=sys.stderr)
        return None
    if header.key != key or header.shape != shape:
        if report:
            print(f"{path}: image map header is for another image list or shape; rebuilding it", file=sys.stderr)
        return None
    return header


def _build(split: Split, key: str, folder: Path, name: str, *, progress: bool) -> MapHeader:
    n, size = len(split.image_paths), split.image_size
    row = 3 * size * size
    needed = HEADER_BYTES + n * row
    move = "free space, or point the cache at a larger local disk (--cache-dir, or $CIRSTUDY_CACHE)"
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DatasetError(f"{folder}: the image map of {split.root} ({split.name}, {n} images at {size} px) needs "
                           f"{needed / 2**30:.2f} GiB but the disk has {free / 2**30:.2f} GiB free; {move}")
    threads = max(1, len(os.sched_getaffinity(0)))
    decoders()  # import torchvision's decoders before the clock starts (seconds, once per process)
    start = time.monotonic()
    try:
        with build_atomically(folder, name) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.ftruncate(fd, needed)
                counter = Progress(f"decoding {split.root.name} {split.name} at {size} px", n, min_total=0 if progress else n + 1)
                _decode_into(fd, split, threads, counter)
                header = MapHeader(
                    format=FORMAT, key=key, shape=(n, 3, size, size), dtype="uint8", root=str(split.root.resolve())[-1024:],
                    split=split.name, preprocessing=split.preprocessing.describe(), created=time.time(),
                    build_seconds=round(time.monotonic() - start, 3), threads=threads,
                )
                os.pwrite(fd, header.to_bytes(), 0)  # last: a map is only ever complete under its header
                os.fsync(fd)  # a machine crash must not leave a renamed file of zeros
            finally:
                os.close(fd)
    except OSError as err:  # the cache's disk, not an image: those raise DatasetError naming the image
        raise DatasetError(f"{folder / name}: cannot write the image map ({err}); {move}") from None
    if progress:
        seconds = time.monotonic() - start
        print(f"decoded {n} images of {split.root} ({split.name}) at {size} px in {seconds:.1f} s "
              f"({n / max(seconds, 1e-9):.0f} images/s on {threads} threads) into {folder / name}", file=sys.stderr)
    return header


def _decode_into(fd: int, split: Split, threads: int, progress: Progress) -> None:
    """Every image of `split` into its row of the open file `fd`, on `threads` threads; the first
    failure stops the others and is raised."""
    row = 3 * split.image_size * split.image_size
    stop = threading.Event()

    def decode(first: int, last: int) -> int:
        for i in range(first, last):
            if stop.is_set():
                break
            pixels = load_image(split.root / split.image_paths[i], split.image_size)  # (3, S, S)
            if os.pwrite(fd, pixels.numpy(), HEADER_BYTES + i * row) != row:
                raise OSError(f"short write of image {i} (disk full?)")
        return last - first

    n = len(split.image_paths)
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one image per thread: intra-op threads would only oversubscribe the cores
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="decode") as pool:
            pending = {pool.submit(decode, i, min(i + BUILD_CHUNK, n)) for i in range(0, n, BUILD_CHUNK)}
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    if future.exception() is not None:
                        stop.set()
                        for other in pending:
                            other.cancel()
                        raise future.exception()
                    progress.step(future.result())
    finally:
        progress.end()
        torch.set_num_threads(torch_threads)
