"""prepare_generated: one folder per (generator, version, seed, scale), reused, race-free."""
from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

import study.data.states as states_module
from study.data import DatasetError, default_cache_dir, open_dataset, prepare_generated
from study.data.cache import MANIFEST


def test_cache_dir_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CIRSTUDY_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CIRSTUDY_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "cirstudy" / "data"


def test_second_call_reuses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = prepare_generated("states", seed=1, scale=0.01, cache_dir=tmp_path)
    assert path == tmp_path / f"states-v{states_module.VERSION}-seed1-scale0.01"
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["seed"] == 1 and manifest["scale"] == 0.01
    before = (path / MANIFEST).stat().st_mtime_ns

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("generated again")

    monkeypatch.setattr(states_module, "generate_states", must_not_run)
    assert prepare_generated("states", seed=1, scale=0.01, cache_dir=tmp_path) == path
    assert open_dataset("states", seed=1, scale=0.01, cache_dir=tmp_path).name == "states"
    assert (path / MANIFEST).stat().st_mtime_ns == before
    with pytest.raises(AssertionError, match="generated again"):  # another seed is another folder
        prepare_generated("states", seed=2, scale=0.01, cache_dir=tmp_path)


def test_failed_generation_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def half_then_crash(out: Path, *, seed: int, scale: float) -> None:
        (out / "partial.png").write_bytes(b"x")
        raise RuntimeError("disk full")

    monkeypatch.setattr(states_module, "generate_states", half_then_crash)
    with pytest.raises(RuntimeError, match="disk full"):
        prepare_generated("states", seed=0, scale=0.01, cache_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"states-v{states_module.VERSION}-seed0-scale0.01.lock"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": "mitstates", "seed": 0, "scale": 0.1}, "loader of a downloaded layout"),
    ({"name": "css", "seed": -1, "scale": 0.1}, "seed must be an integer"),
    ({"name": "css", "seed": 0, "scale": 0.0}, r"scale must be in \(0, 1\]"),
    ({"name": "css", "seed": 0, "scale": 1.5}, r"scale must be in \(0, 1\]"),
])  # fmt: skip
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        prepare_generated(**kwargs, cache_dir=tmp_path)
    assert not any(p.is_dir() for p in tmp_path.iterdir())


def _race(cache: str, log: str, barrier: multiprocessing.synchronize.Barrier, queue: multiprocessing.Queue) -> None:
    real = states_module.generate_states

    def counted(out: Path, *, seed: int, scale: float) -> None:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        real(out, seed=seed, scale=scale)

    states_module.generate_states = counted  # this child's copy only
    barrier.wait()
    queue.put(str(prepare_generated("states", seed=0, scale=0.02, cache_dir=Path(cache))))


def test_concurrent_processes_generate_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    log = tmp_path / "generations.log"
    cache = tmp_path / "cache"
    procs = [ctx.Process(target=_race, args=(str(cache), str(log), barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    paths = {queue.get() for _ in procs}
    assert len(log.read_text().splitlines()) == 1
    (path,) = paths
    assert sorted(p.name for p in cache.iterdir()) == [Path(path).name, Path(path).name + ".lock"]
    data = open_dataset("states", root=Path(path))
    assert len(data.test.image_paths) == 5 * 6 * 2 and (Path(path) / MANIFEST).is_file()
