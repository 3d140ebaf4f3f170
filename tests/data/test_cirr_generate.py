"""Generator "cirr": CIRR's layout read back by the real "cirr" loader, captions that say what the
target changes, sets of six distinct related scenes, test1 without targets, determinism in (seed,
scale), the cache, and `python -m study.data describe`."""
from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from study.data import open_dataset
from study.data.cache import generate_into
from study.data.cirr import load_cirr, targets_hidden
from study.data.cirr_generate import BACKGROUNDS, MEMBERS, MIN_SETS, SETS, generate_cirr

SCALE = 0.002  # MIN_SETS sets per split: 72 images


@pytest.fixture(scope="module")
def cirr_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cirr")
    generate_into("cirr", root, seed=0, scale=SCALE)
    return root


def pixels(root: Path, path: str) -> np.ndarray:
    return np.asarray(Image.open(root / path).convert("RGB")).astype(int)


def most_common(image: np.ndarray) -> tuple[int, ...]:
    colours, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
    return tuple(int(c) for c in colours[counts.argmax()])


def test_the_loader_reads_sets_of_six_with_a_query_per_step(cirr_root: Path) -> None:
    data = load_cirr(cirr_root)
    assert MIN_SETS > round(SETS["val"] * SCALE) and round(SETS["train"] * SCALE) == 6  # val at the floor
    for split, theirs, sets in ((data.train, "train", 6), (data.test, "val", MIN_SETS)):
        assert len(split.image_paths) == sets * MEMBERS and len(split.queries) == sets * (MEMBERS - 1)
        prefix = "train" if theirs == "train" else "dev"
        assert all(label.startswith(f"{prefix}-") for label in split.labels)
        assert split.image_paths[0].startswith(f"img_raw/{'train/0' if theirs == 'train' else 'dev'}/")
        for q in split.queries:
            assert len(q.subset) == MEMBERS and q.source in q.subset and q.target in q.subset and q.source != q.target
            assert q.kind == "caption" and q.query_id is not None
        images = [pixels(cirr_root, p) for p in split.image_paths]
        for set_start in range(0, len(images), MEMBERS):  # the members of a set are distinct scenes
            members = images[set_start:set_start + MEMBERS]
            assert all(not np.array_equal(a, b) for i, a in enumerate(members) for b in members[i + 1:])
    assert len({q.query_id for q in data.train.queries + data.test.queries}) == (6 + MIN_SETS) * (MEMBERS - 1)


def test_captions_say_what_changes(cirr_root: Path) -> None:
    split = load_cirr(cirr_root).test
    seen = set()
    for q in split.queries:
        before, after = pixels(cirr_root, split.image_paths[q.source]), pixels(cirr_root, split.image_paths[q.target])
        changed = (before != after).any(axis=-1)
        assert changed.any()
        verb = q.text.split()[0]
        seen.add(verb)
        if q.text.startswith("change the background to "):
            tone = BACKGROUNDS[q.text.rsplit(" ", 1)[1]]
            assert (after[changed] == tone).all()  # only the background changed, to the named tone
            assert len({tuple(c) for c in before[changed]}) == 1  # the old background, one tone
        else:  # CSS's add / remove / make: one grid cell changes, the background stays
            assert verb in {"add", "remove", "make"}
            rows, cols = np.nonzero(changed)
            assert rows.max() - rows.min() < 22 and cols.max() - cols.min() < 22  # within one cell (64 / 3 px)
            assert most_common(before) == most_common(after) in {tuple(t) for t in BACKGROUNDS.values()}
    assert len(seen) >= 3  # several kinds of change at this size already


def test_test1_hides_its_targets(cirr_root: Path) -> None:
    entries = json.loads((cirr_root / "captions" / "cap.rc2.test1.json").read_text())
    assert entries and all(set(e) == {"pairid", "reference", "caption", "img_set"} for e in entries)
    assert all("target_rank" not in e["img_set"] for e in entries)
    val = json.loads((cirr_root / "captions" / "cap.rc2.val.json").read_text())
    assert all(set(e) == {"pairid", "reference", "target_hard", "target_soft", "caption", "img_set"} for e in val)
    data = load_cirr(cirr_root, split="test1")
    assert targets_hidden(data.test) and len(data.test.queries) == MIN_SETS * (MEMBERS - 1)
    assert all(p.startswith("img_raw/test1/test1-") for p in data.test.image_paths)


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_in_seed_and_scale(cirr_root: Path, tmp_path: Path) -> None:
    generate_cirr(tmp_path / "again", seed=0, scale=SCALE)
    generate_cirr(tmp_path / "other", seed=1, scale=SCALE)
    written = {k: v for k, v in files(cirr_root).items() if k != "generated.json"}
    assert files(tmp_path / "again") == written
    other = files(tmp_path / "other")
    assert other.keys() == written.keys() and other != written


def test_opened_by_name_through_the_cache_and_described(cirr_root: Path, tmp_path: Path) -> None:
    data = open_dataset("cirr", scale=SCALE, cache_dir=tmp_path)
    assert data.name == "cirr" and data.test.image_size == 64 and data.recall_ks == (1, 5, 10, 50)
    assert (tmp_path / f"cirr-v1-seed0-scale{SCALE!r}" / "generated.json").is_file()
    from study.data.__main__ import main

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["describe", str(cirr_root), "--grid", str(tmp_path / "grid.png")]) == 0
    assert f"{cirr_root}: layout cirr\n" in out.getvalue() and "test: 24 images (64x64)" in out.getvalue()
    assert (tmp_path / "grid.png").stat().st_size > 10_000
