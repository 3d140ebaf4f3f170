"""The "cirr" loader on fixtures in CIRR's real layout, written here: both folder arrangements, val as
the test split or test1 with hidden targets, Recall@K and Recall_subset@K on the loaded data against
a loop over the JSON files themselves, missing images, and malformed files named with the fix."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from data_layout_writers import write_image

from study.data import DatasetError, open_dataset
from study.data.cirr import HIDDEN, targets_hidden
from study.data.describe import describe
from study.metrics import recall_at_k
from study.subset_recall import subset_recalls


def _set(prefix: str, set_id: int) -> list[str]:
    return [f"{prefix}-{set_id}-{m // 2}-img{m % 2}" for m in range(6)]


SETS = {"train": {5: _set("train", 5)}, "val": {0: _set("dev", 0), 1: _set("dev", 1)}, "test1": {3: _set("test1", 3)}}
EXTRA = {"train": [], "val": ["dev-9-0-img0", "dev-9-0-img1"], "test1": ["test1-8-1-img0"]}  # in the gallery, in no set
# (pairid, set, reference member, target member, caption); test1's targets are hidden (None)
PAIRS = {
    "train": [(1, 5, 0, 1, "add a red circle"), (2, 5, 1, 4, "remove the cube")],
    "val": [(100, 0, 0, 3, "make it blue"), (101, 0, 3, 4, "  show two dogs "), (102, 1, 2, 5, "change the background"),
            (103, 1, 5, 0, "fewer objects")],
    "test1": [(200, 3, 1, None, "mirror the image"), (201, 3, 4, None, " ")],  # CIRR's test1 has one blank caption
}


def image_path(name: str) -> str:
    """As CIRR's split files say it: train images in NLVR2's numbered sub-folders."""
    prefix, set_id = name.split("-")[:2]
    folder = {"train": f"train/{int(set_id) % 100}", "dev": "dev", "test1": "test1"}[prefix]
    return f"./{folder}/{name}.png"


def write_cirr(root: Path, arrangement: str = "readme") -> Path:
    """CIRR's layout: "readme" = annotations at the root, images under img_raw/ (CIRR's README);
    "clip4cir" = annotations under cirr/, images at the root (CLIP4Cir's CIRR/ folder)."""
    annotations = root / "cirr" if arrangement == "clip4cir" else root
    images = root if arrangement == "clip4cir" else root / "img_raw"
    seed = 0
    for split in ("train", "val", "test1"):
        names = [n for members in SETS[split].values() for n in members] + EXTRA[split]
        for name in names:
            seed += 1
            write_image(images / image_path(name), seed)
        entries: list[dict[str, Any]] = []
        for pairid, set_id, ref, tgt, caption in PAIRS[split]:
            members = SETS[split][set_id]
            shuffled = members[3:] + members[:3]  # CIRR lists members in no particular order
            entry: dict[str, Any] = {"pairid": pairid, "reference": members[ref]}
            if tgt is not None:
                entry |= {"target_hard": members[tgt], "target_soft": {members[tgt]: 1.0}}
            img_set = {"id": set_id, "members": shuffled, "reference_rank": ref}
            entries.append({**entry, "caption": caption, "img_set": img_set})
        (annotations / "captions").mkdir(parents=True, exist_ok=True)
        (annotations / "image_splits").mkdir(parents=True, exist_ok=True)
        (annotations / "captions" / f"cap.rc2.{split}.json").write_text(json.dumps(entries))
        (annotations / "image_splits" / f"split.rc2.{split}.json").write_text(json.dumps({n: image_path(n) for n in names}))
    return root


@pytest.mark.parametrize("arrangement", ["readme", "clip4cir"])
def test_val_is_the_test_split_with_cirr_protocol(tmp_path: Path, arrangement: str) -> None:
    root = write_cirr(tmp_path / "CIRR", arrangement)
    data = open_dataset("cirr", root=root)
    assert data.recall_ks == (1, 5, 10, 50)
    prefix = "img_raw/" if arrangement == "readme" else ""
    for split, theirs in ((data.train, "train"), (data.test, "val")):
        names = [n for members in SETS[theirs].values() for n in members] + EXTRA[theirs]
        assert list(split.labels) == names  # the gallery: the split file, in its order; labels are image names
        assert list(split.image_paths) == [prefix + image_path(n)[2:] for n in names]
        assert all((root / p).is_file() for p in split.image_paths)
        assert len(split.queries) == len(PAIRS[theirs])
        for q, (pairid, set_id, ref, tgt, caption) in zip(split.queries, PAIRS[theirs]):
            members = SETS[theirs][set_id]
            assert (split.labels[q.source], split.labels[q.target]) == (members[ref], members[tgt])
            assert q.text == caption.strip() and q.kind == "caption" and q.region is None
            assert q.query_id == str(pairid)
            assert sorted(split.labels[i] for i in q.subset) == sorted(members)
    assert not targets_hidden(data.test)
    assert "test split = CIRR's val" in data.notes[0]


def test_test1_has_hidden_targets_and_keeps_pairids(tmp_path: Path) -> None:
    root = write_cirr(tmp_path / "CIRR")
    data = open_dataset("cirr", root=root, options={"split": "test1"})
    assert targets_hidden(data.test) and not targets_hidden(data.train)
    assert [q.query_id for q in data.test.queries] == ["200", "201"]
    for q, (_, set_id, ref, _, caption) in zip(data.test.queries, PAIRS["test1"]):
        assert q.kind == HIDDEN and q.target == q.source and q.text == caption.strip()
        assert data.test.labels[q.source] == SETS["test1"][set_id][ref] and len(q.subset) == 6
    assert "targets hidden" in data.notes[0] and "python -m study.evaluate" in data.notes[0]
    with pytest.raises(DatasetError, match=r"option split='test'.*\['val', 'test1'\]"):
        open_dataset("cirr", root=root, options={"split": "test"})
    with pytest.raises(DatasetError, match=r"unknown option\(s\) \['category'\].*split \(val \| test1\)"):
        open_dataset("cirr", root=root, options={"category": "dress"})


def brute_force(embedding: dict[str, torch.Tensor], split: str, ks: tuple[int, ...], subset: bool) -> dict[int, float]:
    """Recall from the JSON files alone: rank by cosine every image of the split file (or of the
    query's img_set) but the reference; a hit when the target_hard name is within the first K."""
    root_names = [n for members in SETS[split].values() for n in members] + EXTRA[split]
    hits = {k: 0 for k in ks}
    for _, set_id, ref, tgt, _ in PAIRS[split]:
        members = SETS[split][set_id]
        query = embedding[f"query {members[ref]}"]
        pool = [n for n in (members if subset else root_names) if n != members[ref]]
        score = {n: float(torch.nn.functional.cosine_similarity(query, embedding[n], dim=0)) for n in pool}
        ranked = sorted(pool, key=lambda n: -score[n])
        for k in ks:
            hits[k] += members[tgt] in ranked[:k]
    return {k: hits[k] / len(PAIRS[split]) for k in ks}


def test_both_recalls_on_the_loaded_data_match_a_loop_over_the_files(tmp_path: Path) -> None:
    data = open_dataset("cirr", root=write_cirr(tmp_path / "CIRR"))
    split = data.test
    gen = torch.Generator().manual_seed(0)
    embedding = {n: torch.randn(5, generator=gen, dtype=torch.float64) for n in split.labels}
    embedding |= {f"query {n}": torch.randn(5, generator=gen, dtype=torch.float64) for n in split.labels}
    gallery = torch.stack([embedding[n] for n in split.labels])
    queries = torch.stack([embedding[f"query {split.labels[q.source]}"] for q in split.queries])
    got = recall_at_k(queries, gallery, query_sources=[q.source for q in split.queries],
                      query_targets=[q.target for q in split.queries], gallery_labels=split.labels, ks=data.recall_ks)
    assert got == brute_force(embedding, "val", data.recall_ks, subset=False)
    got_subset = subset_recalls(queries, gallery, split.queries, split.labels, ks=(1, 2, 3))
    assert got_subset == brute_force(embedding, "val", (1, 2, 3), subset=True)
    assert got[1] <= got_subset[1]  # five candidates are easier than thirteen


def test_missing_images_drop_their_queries_and_leave_the_subsets(tmp_path: Path) -> None:
    root = write_cirr(tmp_path / "CIRR")
    (root / "img_raw/dev/dev-0-2-img0.png").unlink()  # member 4 of set 0: the target of pairid 101
    (root / "img_raw/dev/dev-1-1-img1.png").unlink()  # member 3 of set 1: in no query but its subset
    with pytest.raises(DatasetError, match=r"dev-0-2-img0.png: image file is missing.*2 of \d+ images.*--allow-missing-images"):
        open_dataset("cirr", root=root)
    data = open_dataset("cirr", root=root, allow_missing_images=True)
    split = data.test
    assert [q.query_id for q in split.queries] == ["100", "102", "103"]
    for q in split.queries:
        names = sorted(split.labels[i] for i in q.subset)
        pair = next(p for p in PAIRS["val"] if str(p[0]) == q.query_id)
        assert names == sorted(set(SETS["val"][pair[1]]) - {"dev-0-2-img0", "dev-1-1-img1"})
        assert split.labels[q.target] == SETS["val"][pair[1]][pair[3]]
    assert [q.query_id for q in data.train.queries] == ["1", "2"] and all(len(q.subset) == 6 for q in data.train.queries)


def _edit(path: str, change) -> Any:
    def apply(root: Path) -> None:
        file = root / path
        file.write_text(json.dumps(change(json.loads(file.read_text()))))
    return apply


BROKEN = [
    ("no captions", lambda root: (root / "captions/cap.rc2.val.json").unlink(),
     r"captions/cap.rc2.val.json: file is missing; re-download CIRR's annotations"),
    ("truncated split", lambda root: (root / "image_splits/split.rc2.train.json").write_text('{"train-5-0-img0": "./tr'),
     r"split.rc2.train.json, line 1: not valid JSON"),
    ("split is a list", _edit("image_splits/split.rc2.val.json", lambda d: list(d)),
     r"split.rc2.val.json: expected a JSON object mapping image names to relative paths"),
    ("path outside", _edit("image_splits/split.rc2.val.json", lambda d: d | {"dev-0-0-img0": "../../etc/passwd"}),
     r"image 'dev-0-0-img0' has path '../../etc/passwd', outside the dataset folder"),
    ("no target", _edit("captions/cap.rc2.val.json", lambda d: [{k: v for k, v in e.items() if k != "target_hard"} for e in d]),
     r"cap.rc2.val.json: entry 0 \(pairid 100\) must have .*target_hard"),
    ("no members", _edit("captions/cap.rc2.train.json", lambda d: [d[0], {**d[1], "img_set": {"id": 5}}]),
     r"cap.rc2.train.json: entry 1 \(pairid 2\) must have img_set.members"),
    ("unknown member", _edit("captions/cap.rc2.val.json",
                             lambda d: d[:2] + [{**d[2], "img_set": {"id": 1, "members": ["dev-7-0-img0"]}}] + d[3:]),
     r"cap.rc2.val.json: entry 2 \(pairid 102\) names image 'dev-7-0-img0', which is not in .*split.rc2.val.json"),
    ("captions not a list", _edit("captions/cap.rc2.val.json", lambda d: {"entries": d}),
     r"cap.rc2.val.json: expected a JSON list of query entries"),
]


@pytest.mark.parametrize("name, damage, message", BROKEN, ids=[b[0] for b in BROKEN])
def test_malformed_files_are_named_with_the_fix(tmp_path: Path, name: str, damage, message: str) -> None:
    root = write_cirr(tmp_path / "CIRR")
    damage(root)
    with pytest.raises(DatasetError, match=message):
        open_dataset("cirr", root=root)


def test_describe_finds_the_layout_in_both_arrangements(tmp_path: Path) -> None:
    out = io.StringIO()
    root = write_cirr(tmp_path / "readme", "readme")
    describe(root, tmp_path / "val.png", out=out)
    assert f"{root}: layout cirr\n" in out.getvalue() and "test: 14 images" in out.getvalue()
    out = io.StringIO()
    root = write_cirr(tmp_path / "clip4cir", "clip4cir")
    describe(root, tmp_path / "test1.png", out=out, options={"split": "test1"})
    assert f"{root}: layout cirr (split=test1)" in out.getvalue() and "hidden target 2" in out.getvalue()
    assert (tmp_path / "val.png").stat().st_size > 1000 and (tmp_path / "test1.png").stat().st_size > 1000


def test_a_study_on_test1_is_refused_before_ray_with_the_way_to_score_it(tmp_path: Path, capsys) -> None:
    import ray

    from study.run import main

    root = write_cirr(tmp_path / "CIRR")
    space = tmp_path / "space.yaml"
    space.write_text(f"datasets:\n  - {{name: cirr, root: {root}, split: test1}}\nseeds: 1\n"
                     "parameters:\n  composer: {type: choice, values: [concat]}\n"
                     "budgets:\n  smoke: {num_samples: 1, epochs: 1, image_size: 16, batch_size: 2}\n")
    code = main(["--space", str(space), "--budget", "smoke", "--storage", str(tmp_path / "studies"),
                 "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and not ray.is_initialized()
    assert "dataset cirr-test1: its test split's targets are hidden" in err
    assert "split: val" in err and "--option split=test1" in err
