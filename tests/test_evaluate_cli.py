"""`python -m study.evaluate` on a checkpoint written the way training writes it: the recalls it
reports must be recomputable by any other tool from the files it writes (embeddings, gallery
labels, per-query source), and its breakdowns must cover every modification type. Bad input (an
unreadable checkpoint, a missing device, an unwritable --out, a scale other than the trained one)
ends in one message and exit code 2 before anything is evaluated."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from models.model import CirModel, ModelConfig
from models.text import Vocabulary
from study.data import open_dataset
import study.evaluate
from study.evaluate import main, pick_run
from study.train import CHECKPOINT_FILE, HISTORY_FILE


@pytest.fixture(scope="module")
def css_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding the generated css at scale 0.01, generated once for this file's evaluations."""
    cache = tmp_path_factory.mktemp("cache")
    open_dataset("css", scale=0.01, cache_dir=cache)
    return cache


def test_evaluate_writes_recalls_that_the_written_embeddings_reproduce(tmp_path: Path, css_cache: Path) -> None:
    cache = css_cache
    data = open_dataset("css", scale=0.01, cache_dir=cache)
    torch.manual_seed(0)
    vocab = Vocabulary.build([q.text for q in data.train.queries])
    config = ModelConfig(composer="tirg", embed_dim=16, vocab_size=len(vocab))
    # what a training checkpoint holds per run (study/worker.py SeedRun.state), as study.evaluate reads it
    state = {"model": CirModel(config).state_dict(), "vocab": vocab.to_list(), "model_config": asdict(config)}
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    torch.save({"epoch": 1, "runs": {"css@seed0": state}}, checkpoint / CHECKPOINT_FILE)

    out = tmp_path / "eval"
    done = subprocess.run(
        [sys.executable, "-m", "study.evaluate", str(checkpoint), "--dataset", "css", "--scale", "0.01",
         "--out", str(out)], capture_output=True, text=True,
        env={**os.environ, "CIRSTUDY_CACHE": str(cache)},
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "recalls.json").read_text())
    queries = pd.read_parquet(out / "queries.parquet")
    gallery = pd.read_parquet(out / "gallery.parquet")
    q_emb, g_emb = np.load(out / "query_embeddings.npy"), np.load(out / "gallery_embeddings.npy")
    assert len(queries) == len(data.test.queries) == q_emb.shape[0] == summary["queries"]
    assert g_emb.shape[0] == len(gallery) == len(data.test.image_paths)

    # Recompute R@K with a plain loop over the written files: cosine, source excluded, label hit.
    path_to_id = {p: i for i, p in enumerate(gallery["path"])}
    q = q_emb / np.linalg.norm(q_emb, axis=1, keepdims=True)
    g = g_emb / np.linalg.norm(g_emb, axis=1, keepdims=True)
    hits = {int(k): 0 for k in summary["recall"]}
    for i, row in queries.iterrows():
        source, target = path_to_id[row["source"]], path_to_id[row["target"]]
        sims = g @ q[i]
        order = [j for j in np.argsort(-sims, kind="stable") if j != source]
        top10 = [int(j) for j in row["top10"]]  # gallery ids, see gallery.parquet
        assert top10 == order[:10] or np.allclose(sims[top10], sims[order[:10]])  # equal up to exact ties
        first = next(r for r, j in enumerate(order) if gallery["label"][j] == gallery["label"][target])
        assert first == row["first_hit_rank"] or np.isclose(sims[order[first]], sims[order[row["first_hit_rank"]]])
        for k in hits:
            hits[k] += first < k
    for k, count in hits.items():
        assert summary["recall"][str(k)] == count / len(queries)
    assert set(summary["breakdowns"]) == {"add", "remove", "make"}
    assert summary["manifest"]["missing"] == 0
    assert (out / "retrievals.png").stat().st_size > 10_000  # the picture was drawn
    maps = [p.name for p in (cache / "images").glob("*.cirimg")]  # it read the test split through the node's map
    assert len(maps) == 1 and maps[0].startswith("css-v1-seed0-scale0.01-test-64px-"), maps


def test_the_run_of_a_dataset_is_found_or_asked_for() -> None:
    runs = ["css@seed0", "states@seed0", "states@seed1"]
    assert pick_run(runs, "css", None) == "css@seed0"
    assert pick_run(runs, "states", "states@seed1") == "states@seed1"
    with pytest.raises(ValueError, match=r"2 for dataset 'states'; pick one with --run"):
        pick_run(runs, "states", None)
    with pytest.raises(ValueError, match=r"not 'css@seed1'; pick one with --run"):
        pick_run(runs, "css", "css@seed1")


def test_category_average_over_one_dataset_listed_with_several_options() -> None:
    from study.budget import DatasetEntry
    from study.trial_run import category_averages

    entries = (DatasetEntry("fashioniq", options=(("category", "dress"),)),
               DatasetEntry("fashioniq", options=(("category", "shirt"),)), DatasetEntry("css"))
    metrics = {"recall/fashioniq-dress/test@10": 0.2, "recall/fashioniq-shirt/test@10": 0.4,
               "recall/fashioniq-dress/test@50": 0.5, "recall/fashioniq-shirt/test@50": 0.7,
               "recall/css/test@10": 0.9}
    assert category_averages(entries, metrics) == pytest.approx(
        {"breakdown/fashioniq/test/average@10": 0.3, "breakdown/fashioniq/test/average@50": 0.6})


def write_checkpoint(directory: Path, history: list[dict] | None = None) -> Path:
    """A one-model checkpoint folder as study.train writes it (state.pt, history.json); any vocabulary
    will do for these tests (unknown words share one id)."""
    torch.manual_seed(0)
    vocab = Vocabulary.build(["add red cube", "remove blue sphere"])
    config = ModelConfig(composer="tirg", embed_dim=16, vocab_size=len(vocab))
    state = {"model": CirModel(config).state_dict(), "vocab": vocab.to_list(), "model_config": asdict(config)}
    directory.mkdir(parents=True)
    torch.save({"epoch": 1, "runs": {"css@seed0": state}}, directory / CHECKPOINT_FILE)
    if history is not None:
        (directory / HISTORY_FILE).write_text(json.dumps(history))
    return directory


def trained_at(scale: float) -> list[dict]:
    return [{"epoch": 1, "setup/scale": scale, "setup/image_size/css": 64}]


@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening a dataset fails the test: these refusals must come before any data."""
    def refuse(*args, **kwargs):
        raise AssertionError("study.evaluate opened data before refusing")
    monkeypatch.setattr(study.evaluate, "open_dataset", refuse)


@pytest.mark.parametrize("damage", ["random bytes", "cut short"])
def test_an_unreadable_checkpoint_is_one_message_and_exit_2(tmp_path: Path, damage: str, no_data,
                                                              capsys: pytest.CaptureFixture) -> None:
    checkpoint = write_checkpoint(tmp_path / "checkpoint")
    whole = (checkpoint / CHECKPOINT_FILE).read_bytes()
    damaged = np.random.default_rng(0).bytes(len(whole)) if damage == "random bytes" else whole[: len(whole) // 2]
    (checkpoint / CHECKPOINT_FILE).write_bytes(damaged)
    assert main([str(checkpoint), "--dataset", "css", "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {checkpoint / CHECKPOINT_FILE}: not a readable checkpoint (")
    assert "copy the file again" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_cuda_without_cuda_is_refused_before_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    missing = tmp_path / "no-such-checkpoint"  # had it looked, it would say "no checkpoint"
    assert main([str(missing), "--dataset", "css", "--device", "cuda", "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err
    assert "--device cuda: this machine has no CUDA device" in err and "pass --device cpu" in err


def test_an_unwritable_out_is_refused_before_evaluating(tmp_path: Path, no_data, capsys: pytest.CaptureFixture) -> None:
    checkpoint = write_checkpoint(tmp_path / "checkpoint", trained_at(0.01))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    for out in (a_file, a_file / "eval"):
        assert main([str(checkpoint), "--dataset", "css", "--out", str(out)]) == 2
        assert f"--out {out}: {a_file} is a file, not a folder" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_refused_before_evaluating(tmp_path: Path, no_data, capsys: pytest.CaptureFixture) -> None:
    checkpoint = write_checkpoint(tmp_path / "checkpoint", trained_at(0.01))
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert main([str(checkpoint), "--dataset", "css", "--out", str(locked / "eval")]) == 2
    assert f"cannot write in {locked}" in capsys.readouterr().err


def test_another_scale_or_image_size_than_trained_is_refused(tmp_path: Path, no_data,
                                                             capsys: pytest.CaptureFixture) -> None:
    checkpoint = write_checkpoint(tmp_path / "checkpoint", trained_at(0.01))
    out = ["--dataset", "css", "--out", str(tmp_path / "eval")]
    assert main([str(checkpoint), *out, "--scale", "0.05"]) == 2
    err = capsys.readouterr().err
    assert "--scale 0.05: the model was trained at scale 0.01" in err and "--allow-other-scale" in err
    assert main([str(checkpoint), *out, "--image-size", "32"]) == 2
    assert "--image-size 32: the model was trained at 64 px" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()


def test_the_trained_scale_is_the_default_and_an_other_one_needs_the_flag(
        tmp_path: Path, css_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("CIRSTUDY_CACHE", str(css_cache))
    checkpoint = write_checkpoint(tmp_path / "checkpoint", trained_at(0.01))
    assert main([str(checkpoint), "--dataset", "css", "--out", str(tmp_path / "eval")]) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "eval" / "recalls.json").read_text())
    assert (summary["scale"], summary["image_size"]) == (0.01, 64)
    assert "warning" not in capsys.readouterr().err

    asked = {}

    def stop(name, **kwargs):  # what it would open, without generating another dataset
        asked.update(kwargs)
        raise study.evaluate.DatasetError("stopped here by the test")
    monkeypatch.setattr(study.evaluate, "open_dataset", stop)
    assert main([str(checkpoint), "--dataset", "css", "--scale", "0.02", "--image-size", "32",
                 "--allow-other-scale", "--out", str(tmp_path / "other")]) == 2
    assert (asked["scale"], asked["image_size"]) == (0.02, 32)


def test_a_checkpoint_that_does_not_record_its_scale_is_evaluated_with_a_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    asked = {}

    def stop(name, **kwargs):
        asked.update(kwargs)
        raise study.evaluate.DatasetError("stopped here by the test")
    monkeypatch.setattr(study.evaluate, "open_dataset", stop)
    checkpoint = write_checkpoint(tmp_path / "checkpoint", [{"epoch": 1, "setup/image_size/css": 64}])  # before setup/scale
    main([str(checkpoint), "--dataset", "css", "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert f"warning: the scale the model was trained at is unknown ({checkpoint / HISTORY_FILE} has no setup/scale)" in err
    assert (asked["scale"], asked["image_size"]) == (0.05, 64)


CIRR_SCALE = 0.002  # four img_sets of six per val / test1 split


@pytest.fixture(scope="module")
def cirr_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding the generated cirr (CIRR's layout) at CIRR_SCALE."""
    cache = tmp_path_factory.mktemp("cirr-cache")
    open_dataset("cirr", scale=CIRR_SCALE, cache_dir=cache)
    return cache


def cirr_checkpoint(directory: Path, cache: Path) -> Path:
    data = open_dataset("cirr", scale=CIRR_SCALE, cache_dir=cache)
    torch.manual_seed(0)
    vocab = Vocabulary.build([q.text for q in data.train.queries])
    config = ModelConfig(composer="tirg", embed_dim=16, vocab_size=len(vocab))
    state = {"model": CirModel(config).state_dict(), "vocab": vocab.to_list(), "model_config": asdict(config)}
    directory.mkdir(parents=True)
    torch.save({"epoch": 1, "runs": {"cirr@seed0": state}}, directory / CHECKPOINT_FILE)
    (directory / HISTORY_FILE).write_text(json.dumps([{"epoch": 1, "setup/scale": CIRR_SCALE, "setup/image_size/cirr": 64}]))
    return directory


def cirr_files(cache: Path, split: str) -> tuple[list[dict], dict[str, str]]:
    folder = next(p for p in cache.glob("cirr-v1-*") if p.is_dir())
    return (json.loads((folder / "captions" / f"cap.rc2.{split}.json").read_text()),
            json.loads((folder / "image_splits" / f"split.rc2.{split}.json").read_text()))


def cosine_order(query: np.ndarray, gallery: np.ndarray, names: list[str], pool: list[str]) -> list[str]:
    """`pool` sorted by cosine with `query`, best first (ties: gallery order)."""
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    sims = g @ (query / np.linalg.norm(query))
    return sorted(pool, key=lambda n: (-sims[names.index(n)], names.index(n)))


def test_cirr_test1_writes_the_two_server_files_in_the_official_structure(
        tmp_path: Path, cirr_cache: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint = cirr_checkpoint(tmp_path / "checkpoint", cirr_cache)
    out = tmp_path / "submission"
    assert main([str(checkpoint), "--dataset", "cirr", "--option", "split=test1", "--cache-dir", str(cirr_cache),
                 "--out", str(out)]) == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    assert "hidden targets" in said and "recall_submission.json, recall_subset_submission.json" in said
    assert not (out / "recalls.json").exists()  # no recall can be computed without targets
    entries, split_file = cirr_files(cirr_cache, "test1")
    names = list(split_file)
    q_emb, g_emb = np.load(out / "query_embeddings.npy"), np.load(out / "gallery_embeddings.npy")
    assert q_emb.shape[0] == len(entries) and g_emb.shape[0] == len(names)
    for file, metric, top in (("recall_submission.json", "recall", 50), ("recall_subset_submission.json", "recall_subset", 3)):
        content = json.loads((out / file).read_text())
        # CIRR's Test-split_server.md: {"version": "rc2", "metric": ..., "<pairid>": [image names, best first]}
        assert (content.pop("version"), content.pop("metric")) == ("rc2", metric)
        assert sorted(content) == sorted(str(e["pairid"]) for e in entries)
        for i, entry in enumerate(entries):
            predicted = content[str(entry["pairid"])]
            pool = [n for n in (entry["img_set"]["members"] if metric == "recall_subset" else names) if n != entry["reference"]]
            assert len(predicted) == min(top, len(pool)) and len(set(predicted)) == len(predicted) and set(predicted) <= set(pool)
            expected = cosine_order(q_emb[i], g_emb, names, pool)[:top]
            assert predicted == expected or np.allclose(  # the model's ranking, up to exact ties
                [float(np.dot(q_emb[i], g_emb[names.index(n)])) for n in predicted],
                [float(np.dot(q_emb[i], g_emb[names.index(n)])) for n in expected])


def test_cirr_val_reports_recall_and_recall_subset_that_the_files_reproduce(
        tmp_path: Path, cirr_cache: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint = cirr_checkpoint(tmp_path / "checkpoint", cirr_cache)
    out = tmp_path / "eval"
    assert main([str(checkpoint), "--dataset", "cirr", "--cache-dir", str(cirr_cache), "--out", str(out)]) == 0
    assert "recall_subset    R@1 " in capsys.readouterr().out
    summary = json.loads((out / "recalls.json").read_text())
    assert list(summary["recall"]) == ["1", "5", "10", "50"] and list(summary["recall_subset"]) == ["1", "2", "3"]
    entries, split_file = cirr_files(cirr_cache, "val")
    names = list(split_file)
    assert list(pd.read_parquet(out / "gallery.parquet")["label"]) == names
    q_emb, g_emb = np.load(out / "query_embeddings.npy"), np.load(out / "gallery_embeddings.npy")
    hits = {"recall": {k: 0 for k in (1, 5, 10, 50)}, "recall_subset": {k: 0 for k in (1, 2, 3)}}
    for i, entry in enumerate(entries):  # from the annotation files and the written embeddings alone
        for kind, pool in (("recall", names), ("recall_subset", entry["img_set"]["members"])):
            order = cosine_order(q_emb[i], g_emb, names, [n for n in pool if n != entry["reference"]])
            for k in hits[kind]:
                hits[kind][k] += entry["target_hard"] in order[:k]
    for kind, counts in hits.items():
        assert summary[kind] == {str(k): n / len(entries) for k, n in counts.items()}
