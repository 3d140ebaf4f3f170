"""The node's cache of opened datasets: a warm open reads no annotation file and stats no image,
equals the cold open, and is dropped when an annotation file or an image folder changes; damaged
entries are rebuilt and foreign ones refused."""
from __future__ import annotations

import builtins
import dataclasses
import io
import os
import pickle
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from data_layout_writers import fashion200k_path, shoes_path, write_fashion200k, write_fashioniq, write_image, write_shoes

import study.data.image_cache as image_cache
from study.data import DATASETS, DatasetError, open_dataset, open_image_map
from study.data.__main__ import main
from study.data.dataset_cache import MAGIC, SUFFIX, dataset_cache_dir, read_entry_header

HOUR = 3600


def age(root: Path, seconds: float = HOUR) -> None:
    """Every file and folder under `root` last changed `seconds` ago: data a study opens is older
    than the open (an entry is not written for data changed moments before, see RACY_SECONDS)."""
    then = time.time() - seconds
    for folder, _, names in os.walk(root):
        for name in names:
            os.utime(os.path.join(folder, name), (then, then), follow_symlinks=False)
        os.utime(folder, (then, then))


def count_loads(monkeypatch: pytest.MonkeyPatch, loader: str) -> list[Path]:
    """Roots the `loader` read (a warm open reads none)."""
    loaded: list[Path] = []
    real = DATASETS.get(loader)

    def counted(root: Path, **kwargs: Any) -> Any:
        loaded.append(root)
        return real(root, **kwargs)

    monkeypatch.setitem(DATASETS._builders, loader, counted)
    return loaded


def entries(cache: Path) -> list[Path]:
    folder = dataset_cache_dir(cache)
    return sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []


def test_warm_open_reads_no_annotation_file_and_stats_no_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = write_fashion200k(tmp_path / "f200k"), tmp_path / "cache"
    age(root)
    cold = open_dataset("fashion200k", root=root, cache_dir=cache, image_size=16)
    maps = {s.name: open_image_map(s, cache_dir=cache).path for s in (cold.train, cold.test)}
    (entry,) = entries(cache)
    header = read_entry_header(entry)
    assert [f for f, _, _ in header.files] == ["labels/dress_test_detect_all.txt", "labels/dress_train_detect_all.txt",
                                               "labels/top_test_detect_all.txt", "labels/top_train_detect_all.txt",
                                               "test_queries.txt"]
    # the root, labels/, women/, women/{dress,top}, 8 caption folders, 11 product folders
    assert header.images == 11 and header.folders == 1 + 1 + 1 + 2 + 8 + 11

    opened, stated = [], []
    real_open, real_io_open, real_stat = builtins.open, io.open, os.stat

    def record_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(os.fspath(file) if not isinstance(file, int) else file)
        return real_open(file, *args, **kwargs)

    def record_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        stated.append(os.fspath(path))
        return real_stat(path, *args, **kwargs)

    def no_map_key(split: Any) -> str:
        raise AssertionError("map_key stat-ed every image of a split opened warm")

    loaded = count_loads(monkeypatch, "fashion200k")
    monkeypatch.setattr(builtins, "open", record_open)
    monkeypatch.setattr(io, "open", record_open)
    monkeypatch.setattr(os, "stat", record_stat)
    monkeypatch.setattr(image_cache, "map_key", no_map_key)
    warm = open_dataset("fashion200k", root=root, cache_dir=cache, image_size=16)
    warm_maps = {s.name: open_image_map(s, cache_dir=cache).path for s in (warm.train, warm.test)}
    monkeypatch.undo()

    assert loaded == [] and warm == cold and warm_maps == maps
    assert [p for p in opened if str(p).startswith(str(root))] == []  # the entry and the maps, nothing under the root
    assert not any(p.endswith(".jpeg") for p in stated)
    inside = [p for p in stated if not p.startswith(str(cache)) and p != str(root)]  # map_name resolves the root
    assert len(inside) == header.folders + len(header.files)  # one stat per watched folder and annotation file
    # a Split made from a warm one is another object: its key is computed, never borrowed
    assert image_cache.remembered_map_key(warm.train) is not None
    assert image_cache.remembered_map_key(dataclasses.replace(warm.train, image_size=8)) is None


def _fashion200k(root: Path) -> tuple[str, dict[str, Any]]:
    write_fashion200k(root)
    return "fashion200k", {}


def _fashioniq(root: Path) -> tuple[str, dict[str, Any]]:
    write_fashioniq(root)
    return "fashioniq", {"options": {"category": "dress"}}


def _shoes(root: Path) -> tuple[str, dict[str, Any]]:
    write_shoes(root)
    (root / shoes_path("img_womens_boots_2.jpg")).unlink()
    return "shoes", {"allow_missing_images": True}


def _copy(source: str) -> Callable[[Path, Any], tuple[str, dict[str, Any]]]:
    def copy(root: Path, request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
        shutil.copytree(request.getfixturevalue(f"{source}_root"), root)
        return {"css": "css", "states": "mitstates"}[source], {"image_size": 32}
    return copy


LAYOUTS = {
    "fashion200k": lambda root, _: _fashion200k(root),
    "fashioniq": lambda root, _: _fashioniq(root),
    "shoes missing an image": lambda root, _: _shoes(root),
    "css": _copy("css"),
    "states": _copy("states"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_warm_open_equals_cold_open(layout: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    request: pytest.FixtureRequest) -> None:
    root, cache = tmp_path / "data", tmp_path / "cache"
    loader, kwargs = LAYOUTS[layout](root, request)
    age(root)
    loaded = count_loads(monkeypatch, loader)
    cold = open_dataset(loader, root=root, cache_dir=cache, **kwargs)
    warm = open_dataset(loader, root=root, cache_dir=cache, **kwargs)
    assert len(loaded) == 1 and len(entries(cache)) == 1
    assert warm == cold and warm.train.queries and warm.test.queries
    assert warm.train.root == root and warm.manifest == cold.manifest
    again = open_dataset(loader, root=root, cache_dir=cache, **{**kwargs, "image_size": 24})  # another entry
    assert len(loaded) == 2 and len(entries(cache)) == 2 and again.test.image_size == 24


def test_changed_annotations_and_images_are_read_afresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = write_fashion200k(tmp_path / "f200k"), tmp_path / "cache"
    loaded = count_loads(monkeypatch, "fashion200k")

    def open_(**kwargs: Any) -> Any:
        return open_dataset("fashion200k", root=root, cache_dir=cache, **kwargs)

    def opens_warm(**kwargs: Any) -> Any:
        """Open twice (aged, so the first writes its entry): the second must not read the layout."""
        age(root)
        data = open_(**kwargs)
        before = len(loaded)
        assert open_(**kwargs) == data and len(loaded) == before
        return data

    opens_warm()
    labels = root / "labels" / "dress_train_detect_all.txt"
    os.utime(labels)  # touched, same bytes: read again
    assert open_() is not None and len(loaded) == 2
    labels.write_text(labels.read_text().replace("black lace gown", "black lace robe"))  # same size
    assert "black lace robe" in open_().train.labels and len(loaded) == 3

    data = opens_warm()  # a new label file in labels/: its folder changed
    (root / "labels" / "skirt_train_detect_all.txt").write_text(f"{fashion200k_path(0)[:-6]}9.jpeg\t0.5\tplain skirt\n")
    write_image(root / f"{fashion200k_path(0)[:-6]}9.jpeg", seed=9)
    assert len(open_().train.image_paths) == len(data.train.image_paths) + 1

    image = root / fashion200k_path(2)
    opens_warm()
    image.unlink()  # a listed image removed: refused, as a cold open refuses
    with pytest.raises(DatasetError, match=rf"^{image}: image file is missing; 1 of 12 images"):
        open_()
    missing = opens_warm(allow_missing_images=True)
    assert missing.manifest.missing == 1 and fashion200k_path(2) not in missing.train.image_paths
    write_image(image, seed=2)  # restored: seen
    assert open_(allow_missing_images=True).manifest.missing == 0

    shutil.rmtree(image.parent)  # the image's whole folder goes, then comes back
    opens_warm(allow_missing_images=True)
    write_image(image, seed=2)
    assert open_(allow_missing_images=True).manifest.missing == 0


def test_an_image_added_to_a_listed_folder_is_seen(states_root: Path, tmp_path: Path) -> None:
    root, cache = tmp_path / "states", tmp_path / "cache"
    shutil.copytree(states_root, root)
    age(root)
    before = open_dataset("mitstates", root=root, cache_dir=cache)
    assert open_dataset("mitstates", root=root, cache_dir=cache) == before and len(entries(cache)) == 1
    first = root / before.test.image_paths[0]
    shutil.copy(first, first.with_name("zz_added.png"))
    after = open_dataset("mitstates", root=root, cache_dir=cache)
    assert len(after.test.image_paths) == len(before.test.image_paths) + 1


def test_fresh_data_is_read_but_not_cached(tmp_path: Path) -> None:
    root, cache = write_fashion200k(tmp_path / "f200k"), tmp_path / "cache"
    data = open_dataset("fashion200k", root=root, cache_dir=cache)  # files written moments ago
    assert entries(cache) == [] and len(data.train.image_paths) == 7
    age(root)
    assert open_dataset("fashion200k", root=root, cache_dir=cache) == data and len(entries(cache)) == 1


def test_generated_data_is_cached_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = open_dataset("states", scale=0.01, cache_dir=tmp_path)  # generated now: not cached yet
    (folder,) = [p for p in tmp_path.iterdir() if p.name.startswith("states-") and p.is_dir()]
    age(folder)
    loaded = count_loads(monkeypatch, "mitstates")
    assert open_dataset("states", scale=0.01, cache_dir=tmp_path) == first and len(loaded) == 1
    warm = open_dataset("states", scale=0.01, cache_dir=tmp_path)
    assert warm == first and warm.name == "states" and len(loaded) == 1
    assert len(entries(tmp_path)) == 1


def test_damaged_entry_is_rebuilt_and_foreign_one_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    root, cache = write_fashion200k(tmp_path / "f200k"), tmp_path / "cache"
    age(root)
    data = open_dataset("fashion200k", root=root, cache_dir=cache)
    (entry,) = entries(cache)
    raw = entry.read_bytes()
    loaded = count_loads(monkeypatch, "fashion200k")
    entry.write_bytes(raw[: len(raw) - 100])  # truncated
    assert open_dataset("fashion200k", root=root, cache_dir=cache) == data and len(loaded) == 1
    assert f"{entry}: damaged dataset cache entry (it holds {len(raw) - 100} bytes" in capsys.readouterr().err
    assert read_entry_header(entry).images == 11  # rebuilt
    assert open_dataset("fashion200k", root=root, cache_dir=cache) == data and len(loaded) == 1

    entry.write_bytes(b"\x89PNG\r\n" + raw[6:])  # someone else's file under an entry's name: never overwritten
    with pytest.raises(DatasetError) as info:
        open_dataset("fashion200k", root=root, cache_dir=cache)
    assert str(info.value).startswith(f"{entry}: not a dataset cache entry written by cirstudy")
    assert "python -m study.data cache clear" in str(info.value) and entry.read_bytes()[:4] == b"\x89PNG"

    marker = tmp_path / "ran"
    entry.write_bytes(MAGIC + pickle.dumps(Exploit(str(marker))))  # our magic, then a pickle that names a function
    with pytest.raises(DatasetError, match=rf"^{entry}: its pickle names posix.system, which no dataset cache entry does"):
        open_dataset("fashion200k", root=root, cache_dir=cache)
    assert not marker.exists() and len(loaded) == 1


class Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_cache_cli_lists_and_clears_opened_datasets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, cache = write_fashion200k(tmp_path / "f200k"), tmp_path / "cache"
    age(root)
    open_dataset("fashion200k", root=root, cache_dir=cache, image_size=16)
    assert main(["cache", "list", "--cache-dir", str(cache)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("0 image maps")
    assert lines[1].startswith(f"{root} [fashion200k] 16 px, 11 images, 24 folders watched, ")
    assert lines[2].startswith("1 opened datasets, ") and lines[2].endswith(f" in {dataset_cache_dir(cache)}")
    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 0
    assert "deleted 1 opened datasets (1 files)" in capsys.readouterr().out and entries(cache) == []
