"""Every loader turns a broken layout into ONE DatasetError naming the file (and line), and
records images listed but absent in an ImageManifest."""
from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Callable

import pytest
from data_layout_writers import write_fashion200k, write_fashioniq, write_shoes

from study.data import DatasetError, ImageManifest, open_dataset
from study.data.css import SCENE_FILE
from study.data.image_cache import open_image_map

FIQ = {"category": "dress"}


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def replace_line(path: Path, line_no: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[line_no - 1] = text
    path.write_text("\n".join(lines) + "\n")


# (name, loader, options, writer(tmp_path, css_root, states_root) -> root, break(root) -> the file named, message regex)
Case = tuple[str, str, dict, Callable[..., Path], Callable[[Path], Path], str]


def _f200k(tmp: Path, *_: Path) -> Path:
    return write_fashion200k(tmp / "f200k")


def _fiq(tmp: Path, *_: Path) -> Path:
    return write_fashioniq(tmp / "fiq")


def _shoes(tmp: Path, *_: Path) -> Path:
    return write_shoes(tmp / "shoes")


def _css(tmp: Path, css_root: Path, _: Path) -> Path:
    return copy_of(css_root, tmp / "css")


def _states(tmp: Path, _: Path, states_root: Path) -> Path:
    return copy_of(states_root, tmp / "states")


def _unlink(rel: str) -> Callable[[Path], Path]:
    def go(root: Path) -> Path:
        (root / rel).unlink()
        return root / rel
    return go


def _truncate(rel: str) -> Callable[[Path], Path]:
    def go(root: Path) -> Path:
        truncate(root / rel)
        return root / rel
    return go


def _line(rel: str, line_no: int, text: str) -> Callable[[Path], Path]:
    def go(root: Path) -> Path:
        replace_line(root / rel, line_no, text)
        return root / rel
    return go


CASES: list[Case] = [
    ("css-missing-scene-file", "css", {}, _css, _unlink(SCENE_FILE), r"file is missing"),
    ("css-truncated-scene-file", "css", {}, _css, _truncate(SCENE_FILE), r"corrupt|not a readable"),
    ("mitstates-test-nouns-line", "mitstates", {}, _states, _line("test_nouns.txt", 2, "two nouns"), r"test_nouns.txt, line 2: expected one noun"),
    ("mitstates-truncated-regions", "mitstates", {}, _states, _truncate("regions.json"), r"regions.json, line \d+: not valid JSON"),
    ("f200k-missing-labels", "fashion200k", {}, _f200k, _unlink("test_queries.txt"), r"test_queries.txt: file is missing"),
    ("f200k-label-fields", "fashion200k", {}, _f200k, _line("labels/dress_train_detect_all.txt", 3, "women/x.jpeg\t0.5"),
     r"dress_train_detect_all.txt, line 3: expected 3 tab-separated fields .* got 2"),
    ("f200k-label-score", "fashion200k", {}, _f200k, _line("labels/top_test_detect_all.txt", 1, "a.jpeg\thigh\tred top"),
     r"top_test_detect_all.txt, line 1: detection score must be a number"),
    ("f200k-query-fields", "fashion200k", {}, _f200k, _line("test_queries.txt", 2, "a b c"), r"test_queries.txt, line 2: expected 2 space-separated fields"),
    ("f200k-query-unknown-image", "fashion200k", {}, _f200k, _line("test_queries.txt", 3, "women/nope.jpeg women/nope2.jpeg"),
     r"test_queries.txt, line 3: image 'women/nope.jpeg' is not listed"),
    ("fiq-missing-captions", "fashioniq", FIQ, _fiq, _unlink("captions/cap.dress.val.json"), r"cap.dress.val.json: file is missing"),
    ("fiq-truncated-captions", "fashioniq", FIQ, _fiq, _truncate("captions/cap.dress.train.json"), r"cap.dress.train.json, line \d+: not valid JSON"),
    ("fiq-truncated-split", "fashioniq", FIQ, _fiq, _truncate("image_splits/split.dress.val.json"), r"split.dress.val.json, line 1: not valid JSON"),
    ("fiq-caption-entry", "fashioniq", FIQ, _fiq, lambda r: (r / "captions/cap.dress.val.json").write_text('[{"candidate": "d4", "target": "d5"}]')
     and r / "captions/cap.dress.val.json", r"cap.dress.val.json: entry 0 must be"),
    ("shoes-missing-triplets", "shoes", {}, _shoes, _unlink("triplet.train.json"), r"triplet.train.json: file is missing"),
    ("shoes-truncated-split", "shoes", {}, _shoes, _truncate("split.test.json"), r"split.test.json, line 1: not valid JSON"),
    ("shoes-triplet-fields", "shoes", {}, _shoes, lambda r: (r / "triplet.test.json").write_text('[{"ImageName": "a.jpg"}]')
     and r / "triplet.test.json", r"triplet.test.json: entry 0 must have string fields"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_broken_file_gives_one_clear_error(case: Case, tmp_path: Path, css_root: Path, states_root: Path) -> None:
    _, loader, options, write, breaks, message = case
    root = write(tmp_path, css_root, states_root)
    named = breaks(root)
    with pytest.raises(DatasetError) as info:
        open_dataset(loader, root=root, options=options)
    text = str(info.value)
    assert str(named) in text and re.search(message, text), text
    assert info.value.__cause__ is None or isinstance(info.value.__cause__, DatasetError)  # no library traceback as the message


# loader, options, writer, two listed images to delete (relative paths), one to corrupt, and the
# manifest's name for an image path (FashionIQ lists ids, Shoes image names). Each split keeps a
# query: a split left without any is refused (test_run_refuses_bad_data.py)
ABSENT = [
    ("css", {}, _css, ["images/css_test_000003.png", "images/css_train_000001.png"], "images/css_train_000002.png", str),
    ("fashion200k", {}, _f200k, ["women/dress/blue_striped_long_dress/108/8.jpeg", "women/dress/red_striped_long_dress/100/0.jpeg"],
     "women/dress/blue_striped_long_dress/102/2.jpeg", str),
    ("fashioniq", FIQ, _fiq, ["images/d5.jpg", "images/d0.png"], "images/d1.jpg", lambda p: p.rsplit(".", 1)[0]),
    ("shoes", {}, _shoes, ["images/womens_boots/0/img_womens_boots_4.jpg", "images/womens_boots/0/img_womens_boots_2.jpg"],
     "images/womens_pumps/0/img_womens_pumps_3.jpg", lambda p: p.rsplit("/", 1)[1]),
]


@pytest.mark.parametrize("loader, options, write, victims, corrupt, listed_as", ABSENT, ids=[a[0] for a in ABSENT])
def test_absent_images_are_refused_or_dropped(loader: str, options: dict, write: Callable[..., Path], victims: list[str], corrupt: str,
                                              listed_as: Callable[[str], str], tmp_path: Path, css_root: Path, states_root: Path) -> None:
    root = write(tmp_path, css_root, states_root)
    whole = open_dataset(loader, root=root, options=options)
    listed = sorted({listed_as(p) for p in whole.train.image_paths + whole.test.image_paths})
    digest = hashlib.sha256("\n".join(listed).encode()).hexdigest()
    assert whole.manifest == ImageManifest(len(listed), 0, (), digest, 0)
    touching = sum(
        split.image_paths[q.source] in victims or split.image_paths[q.target] in victims
        for split in (whole.train, whole.test) for q in split.queries
    )
    for rel in victims:
        (root / rel).unlink()
    with pytest.raises(DatasetError) as info:
        open_dataset(loader, root=root, options=options)
    text = str(info.value)
    assert text.startswith(f"{root}/") and ": image file is missing; 2 of " in text
    assert f" of {len(listed)} images listed by {loader} are missing (e.g. {', '.join(sorted(map(listed_as, victims)))})" in text
    assert "--allow-missing-images" in text and f"the {touching} queries that touch them" in text
    data = open_dataset(loader, root=root, options=options, allow_missing_images=True)
    assert data.manifest == ImageManifest(len(listed), 2, tuple(sorted(map(listed_as, victims))), digest, touching)
    assert sum(len(s.queries) for s in (data.train, data.test)) == sum(len(s.queries) for s in (whole.train, whole.test)) - touching
    for split in (data.train, data.test):
        assert not set(victims) & set(split.image_paths)
        for q in split.queries:  # indices remapped onto the surviving images
            assert max(q.source, q.target) < len(split.image_paths)
    assert any("2 of" in note and "missing (allowed)" in note for note in data.notes)
    # an unreadable image is found when the images are decoded, and named
    (root / corrupt).write_bytes(b"not an image")
    split = next(s for s in (data.train, data.test) if corrupt in s.image_paths)
    with pytest.raises(DatasetError, match=f"{root / corrupt}: cannot read the image"):
        open_image_map(split)
