"""The node's image maps: TIRG's preprocessing at the protocol's size, decoded once and reused,
built once under concurrency, damaged or foreign files never read as data, and the cache CLI."""
from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from data_layout_writers import fashion200k_path, write_fashion200k, write_image
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms import v2

import study.data.image_cache as image_cache
from study.data import DatasetError, Preprocessing, open_dataset, open_image_map
from study.data.__main__ import main
from study.data.image_cache import HEADER_BYTES, MAGIC, image_cache_dir, read_header

REPO = Path(__file__).resolve().parents[2]


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    decoded: list[Path] = []
    real = image_cache.load_image

    def counted(path: Path, size: int) -> torch.Tensor:
        decoded.append(path)
        return real(path, size)

    monkeypatch.setattr(image_cache, "load_image", counted)
    return decoded


def test_built_once_then_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = write_fashion200k(tmp_path / "f200k"), tmp_path / "cache"
    decoded = count_decodes(monkeypatch)
    test = open_dataset("fashion200k", root=root, image_size=16).test
    first = open_image_map(test, cache_dir=cache)
    assert len(decoded) == len(test.image_paths) == 4 and first.shape == (4, 3, 16, 16)
    assert first.path.parent == cache / "images" and first.path.name.startswith("f200k-test-16px-")
    assert first.header.root == str(root.resolve()) and first.header.split == "test"
    assert first.header.preprocessing == Preprocessing(16).describe()
    again = open_image_map(open_dataset("fashion200k", root=root, image_size=16).test, cache_dir=cache)
    assert len(decoded) == 4 and again.path == first.path  # the second open decoded nothing
    assert torch.equal(again[:], first[:])
    # another size is another map; so is an edited image (its size and mtime are in the key)
    assert open_image_map(open_dataset("fashion200k", root=root, image_size=8).test, cache_dir=cache).image_size == 8
    assert len(decoded) == 8
    write_image(root / test.image_paths[2], seed=99)
    edited = open_image_map(test, cache_dir=cache)
    assert len(decoded) == 12 and edited.path != first.path
    assert not torch.equal(edited[2], first[2]) and torch.equal(edited[3], first[3])


def _open_in_child(root: str, cache: str, log: str, barrier: multiprocessing.synchronize.Barrier,
                   queue: multiprocessing.Queue) -> None:
    real = image_cache._build

    def counted(*args: object, **kwargs: object) -> image_cache.MapHeader:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return real(*args, **kwargs)

    image_cache._build = counted  # this child's copy only
    split = open_dataset("fashion200k", root=Path(root), image_size=16).train
    barrier.wait()
    images = open_image_map(split, cache_dir=Path(cache))
    queue.put((str(images.path), images[:].sum().item()))


def test_two_processes_build_one_map(tmp_path: Path) -> None:
    root = write_fashion200k(tmp_path / "f200k")
    ctx = multiprocessing.get_context("spawn")  # as Ray workers are: no state shared with this process
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    log, cache = tmp_path / "builds.log", tmp_path / "cache"
    procs = [ctx.Process(target=_open_in_child, args=(str(root), str(cache), str(log), barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:  # a child's small result sits in the pipe, so it exits without being read first
        p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    results = [queue.get() for _ in procs]
    assert len(log.read_text().splitlines()) == 1  # one process built, the other waited and mapped it
    assert len(set(results)) == 1
    (path, _), = set(results)
    assert sorted(p.name for p in (cache / "images").iterdir()) == [Path(path).name, Path(path).name + ".lock"]


def test_damaged_map_is_rebuilt_and_foreign_file_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = write_fashion200k(tmp_path / "f200k"), tmp_path / "cache"
    split = open_dataset("fashion200k", root=root, image_size=16).train
    good = open_image_map(split, cache_dir=cache)
    pixels, path = good[:], good.path
    decoded = count_decodes(monkeypatch)
    with open(path, "r+b") as f:  # truncated: the header's shape needs more bytes than the file holds
        f.truncate(HEADER_BYTES + 100)
    with pytest.raises(image_cache.DamagedMap, match=r"holds 4196 bytes but its header's shape \[7, 3, 16, 16\] needs 9472"):
        read_header(path)
    assert torch.equal(open_image_map(split, cache_dir=cache)[:], pixels) and len(decoded) == 7
    raw = path.read_bytes()  # our magic, an unreadable header
    path.write_bytes(MAGIC + b"{not json" + raw[len(MAGIC) + 9 :])
    assert torch.equal(open_image_map(split, cache_dir=cache)[:], pixels) and len(decoded) == 14
    path.write_bytes(b"\x89PNG\r\n" + raw[6:])  # someone else's file under a map's name: never overwritten
    with pytest.raises(DatasetError) as info:
        open_image_map(split, cache_dir=cache)
    message = str(info.value)
    assert message.startswith(f"{path}: not an image map written by cirstudy") and "python -m study.data cache clear" in message
    assert len(decoded) == 14 and path.read_bytes()[:4] == b"\x89PNG"


def test_first_image_size_does_not_change_the_delivered_size(tmp_path: Path) -> None:
    root = write_fashion200k(tmp_path / "f200k")
    write_image(root / fashion200k_path(0), seed=1, size=(1000, 1400))  # the first listed train image
    data = open_dataset("fashion200k", root=root)
    assert data.train.image_paths[0] == fashion200k_path(0)
    assert data.train.image_size == data.test.image_size == 224
    images = open_image_map(data.train, cache_dir=tmp_path / "cache")
    assert images.shape == (7, 3, 224, 224)
    assert open_dataset("fashion200k", root=root, image_size=64).train.image_size == 64
    for bad in (4, 64.0, True, "224"):
        with pytest.raises(DatasetError, match=rf"dataset fashion200k: image_size must be an integer >= 8 .*got {bad!r}"):
            open_dataset("fashion200k", root=root, image_size=bad)


def test_pixels_are_torchvision_resize_then_centre_crop(tmp_path: Path) -> None:
    root = write_fashion200k(tmp_path / "f200k")
    sizes = [(300, 450), (500, 260), (224, 224), (231, 700), (224, 300), (640, 480), (250, 250)]  # (w, h), train
    for i, size in enumerate(sizes):
        write_image(root / fashion200k_path(i), seed=10 + i, size=size)
    split = open_dataset("fashion200k", root=root).train
    assert len(split.image_paths) == len(sizes)
    reference = v2.Compose([v2.Resize(224, antialias=True), v2.CenterCrop(224)])
    images = open_image_map(split, cache_dir=tmp_path / "cache")
    for i, rel in enumerate(split.image_paths):
        decoded = decode_image(read_file(str(root / rel)), mode=ImageReadMode.RGB)
        assert torch.equal(images[i], reference(decoded)), rel


@pytest.mark.parametrize("suffix", [".jpeg", ".png"])
def test_truncated_image_names_the_file_and_leaves_no_map(tmp_path: Path, suffix: str) -> None:
    root = write_fashion200k(tmp_path / "f200k")
    split = open_dataset("fashion200k", root=root, image_size=16).test
    victim = root / split.image_paths[1]
    os.remove(victim)
    write_image(victim.with_suffix(suffix), seed=5, size=64)
    data = victim.with_suffix(suffix).read_bytes()
    victim.write_bytes(data[: len(data) * 2 // 3])  # the layout's name, the first two thirds of the bytes
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match=rf"^{victim}: cannot read the image .*truncated") as info:
        open_image_map(split, cache_dir=cache)
    assert info.value.__cause__ is None
    assert [p.name for p in (cache / "images").iterdir() if not p.name.endswith(".lock")] == []


def test_gather_into_a_buffer_equals_indexing(tmp_path: Path) -> None:
    root = write_fashion200k(tmp_path / "f200k")
    images = open_image_map(open_dataset("fashion200k", root=root, image_size=16).train, cache_dir=tmp_path / "cache")
    everything = images[:]  # (7, 3, 16, 16)
    index = torch.tensor([3, 4, 5, 0, 0, 6, 2])  # a run of three, a repeat, a jump back
    out = torch.full((7, 3, 16, 16), 7, dtype=torch.uint8)
    got = images.gather(index, out=out)
    assert got.data_ptr() == out.data_ptr() and torch.equal(out, everything[index])
    assert torch.equal(images.gather([6, 1]), torch.stack([images[6], images[1]]))
    assert torch.equal(images[-1], everything[6]) and torch.equal(images[1:6:2], everything[1:6:2])
    assert torch.equal(images[torch.tensor([False, True] * 3 + [True])], everything[[1, 3, 5, 6]])
    assert images.gather([]).shape == (0, 3, 16, 16)
    assert torch.equal(pickle.loads(pickle.dumps(images)).gather(index), out)  # reopens by path (Ray tasks)
    with pytest.raises(IndexError, match=r"indices must lie in \[0, 7\), got 0..7"):
        images.gather([0, 7])
    with pytest.raises(ValueError, match=r"out must be a contiguous uint8 CPU tensor of shape \(2, 3, 16, 16\)"):
        images.gather([0, 1], out=torch.empty(2, 3, 16, 16))


def test_generated_data_is_native_size_unless_asked(tmp_path: Path) -> None:
    data = open_dataset("states", scale=0.01, cache_dir=tmp_path)
    assert data.train.image_size == data.test.image_size == 64
    small = open_dataset("states", scale=0.01, cache_dir=tmp_path, image_size=32).test
    images = open_image_map(small, cache_dir=tmp_path)
    assert images.shape == (len(small.image_paths), 3, 32, 32) and images.path.parent == tmp_path / "images"


def test_cache_list_and_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, cache = write_fashion200k(tmp_path / "f200k"), tmp_path / "cache"
    data = open_dataset("fashion200k", root=root, image_size=16)
    old, new = open_image_map(data.train, cache_dir=cache), open_image_map(data.test, cache_dir=cache)
    week_ago = time.time() - 7 * 86_400
    os.utime(old.path, (week_ago, week_ago))
    shown = subprocess.run([sys.executable, "-m", "study.data", "cache", "list", "--cache-dir", str(cache)],
                           cwd=REPO, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"{root.resolve()} [train] 16 px, 7 images, ") and "(7.0 days ago)" in lines[0]
    assert lines[1].startswith(f"{root.resolve()} [test] 16 px, 4 images, ") and lines[1].endswith(new.path.name)
    assert lines[2].startswith("2 image maps, ") and lines[2].endswith(f" in {image_cache_dir(cache)}")
    assert main(["cache", "clear", "--older-than", "3", "--cache-dir", str(cache)]) == 0
    assert "deleted 1 image maps unused for more than 3 days" in capsys.readouterr().out
    assert not old.path.exists() and new.path.exists()
    assert torch.equal(old[:], old[:])  # a process that had it open still reads it
    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 0
    assert "deleted 1 image maps (1 files)" in capsys.readouterr().out and list((cache / "images").iterdir()) == []
    assert main(["cache", "list", "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out.startswith("0 image maps, 0 B in ")


def test_a_full_cache_disk_is_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = write_fashion200k(tmp_path / "f200k"), tmp_path / "cache"
    split = open_dataset("fashion200k", root=root).train  # 7 images at 224 px: 7 * 150,528 + 4,096 bytes
    decoded = count_decodes(monkeypatch)
    monkeypatch.setattr(image_cache.shutil, "disk_usage", lambda path: shutil_usage(free=1_000_000))
    with pytest.raises(DatasetError, match=r"images: the image map of .*f200k \(train, 7 images at 224 px\) needs 0.00 GiB "
                                           r"but the disk has 0.00 GiB free; free space, or point the cache at a larger "
                                           r"local disk \(--cache-dir, or \$CIRSTUDY_CACHE\)"):
        open_image_map(split, cache_dir=cache)
    assert decoded == []


def shutil_usage(free: int) -> SimpleNamespace:
    return SimpleNamespace(total=10 * free, used=9 * free, free=free)  # as shutil.disk_usage
