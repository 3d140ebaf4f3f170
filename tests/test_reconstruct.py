"""study.reconstruct (composed features as images, issue 14): the decoder's held-out pixel loss goes
down with training; the grid has the documented size and its tiles hold exactly the images put in;
the CLI on a checkpoint written as training writes it draws the test split's own images; bad input
ends in one line and exit code 2; a study's best configuration gets its grid in the study folder,
its TensorBoard run (read back with EventAccumulator) and its report."""
from __future__ import annotations

import base64
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from models.encoders import normalize_images
from models.model import CirModel, ModelConfig
from models.text import Vocabulary
from study.data import open_dataset, open_image_map
from study.probes import EDGE, GAP
from study.reconstruct import main, reconstruct_for_study
from study.reconstruct_decoder import (Decoder, DecoderConfig, FitConfig, fit_decoder, held_out_split, parameter_count,
                                       pixel_loss, to_unit_pixels)
from study.reconstruct_grid import HEADER, TILE, GridRow, grid_box, grid_size, render_grid
from study.train import CHECKPOINT_FILE, HISTORY_FILE

SCALE = 0.01  # css: 190 train / 191 test images, 181 test queries


def scenes(count: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """uint8 (count, 3, size, size): white, one coloured square each, like a CSS scene of one object."""
    rng = np.random.default_rng(seed)
    images = np.full((count, size, size, 3), 255, dtype=np.uint8)
    for image in images:
        side = int(rng.integers(size // 6, size // 3))
        top, left = rng.integers(0, size - side, 2)
        image[top:top + side, left:left + side] = rng.integers(0, 200, 3)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


# --- the decoder ---------------------------------------------------------------------------------------

def test_decoder_size_is_the_documented_one() -> None:
    # Linear(D -> 128*16) + three ConvTranspose(4x4) with batch-norm + the RGB ConvTranspose with bias
    d = 128
    by_hand = (d * 2048 + 2048) + (128 * 64 * 16 + 2 * 64) + (64 * 32 * 16 + 2 * 32) + (32 * 16 * 16 + 2 * 16) \
        + (16 * 3 * 16 + 3)
    assert parameter_count(DecoderConfig(embed_dim=d)) == by_hand == 437_219  # "0.44 M" in the docs
    images = Decoder(DecoderConfig(embed_dim=16)).eval()(torch.randn(5, 16))
    assert images.shape == (5, 3, 64, 64) and images.min() >= 0 and images.max() <= 1


def test_decoder_ignores_the_feature_norm() -> None:
    decoder = Decoder(DecoderConfig(embed_dim=8)).eval()
    feature = torch.randn(2, 8)
    assert torch.allclose(decoder(feature), decoder(7.5 * feature), atol=1e-6)  # retrieval sees cosines only


def test_held_out_pixel_loss_goes_down_with_training() -> None:
    torch.manual_seed(0)
    model = CirModel(ModelConfig(composer="tirg", embed_dim=16, vocab_size=4)).eval()  # untrained, frozen
    images = scenes(48)
    labels = [f"scene {i % 40}" for i in range(48)]  # 8 scenes rendered twice, as CSS does
    with torch.no_grad():
        features = model.embed_images(normalize_images(images))
    config = FitConfig(steps=40, batch_size=16, held_out=0.25)
    decoder, fit = fit_decoder(features, images, labels, config)
    held, train = held_out_split(labels, config)
    assert fit.steps == 40 and (fit.held_out_images, fit.train_images) == (len(held), len(train))
    assert len({labels[i] for i in held}) == 10 and len(held) + len(train) == 48
    assert not {labels[i] for i in held} & {labels[i] for i in train}  # no duplicate on both sides
    assert fit.held_out_after < 0.5 * fit.held_out_before  # grey start, white background learnt
    with torch.no_grad():  # the reported loss is the returned decoder's on those held-out images
        again = pixel_loss(decoder(features[held]), to_unit_pixels(images[held])).item()
    assert again == pytest.approx(fit.held_out_after, rel=1e-5)


def test_fit_refuses_what_it_cannot_train_on() -> None:
    with pytest.raises(ValueError, match=r"at least 2 labels \(one held out\), got 3 images of 1 label"):
        fit_decoder(torch.randn(3, 4), scenes(3), ["same"] * 3, FitConfig(steps=1))
    with pytest.raises(ValueError, match=r"held_out .* in \(0, 1\), got 1.5"):
        FitConfig(held_out=1.5)


def test_larger_images_are_reduced_to_64_px_by_area() -> None:
    big = torch.zeros(1, 3, 128, 128, dtype=torch.uint8)
    big[..., ::2, :] = 255  # every other row white: each 2x2 block averages to half
    assert torch.allclose(to_unit_pixels(big), torch.full((1, 3, 64, 64), 0.5))


# --- the grid ------------------------------------------------------------------------------------------

def test_grid_has_the_documented_layout() -> None:
    tile = 64
    pictures = scenes(9, size=tile, seed=1)
    rows = [GridRow(reference=pictures[3 * r], text=f"make the square number {r} small", decoded=pictures[3 * r + 1],
                    target=pictures[3 * r + 2]) for r in range(3)]
    grid = render_grid(rows, tile=tile)
    assert grid.shape == (HEADER + 3 * (tile + GAP), 5 * tile + 5 * GAP, 3)
    assert grid_size(3, tile) == (grid.shape[1], grid.shape[0])
    for r, row in enumerate(rows):
        for column, image in ((0, row.reference), (2, row.decoded), (3, row.target)):
            left, top = grid_box(r, column, tile)
            assert np.array_equal(grid[top:top + tile, left:left + tile], image.permute(1, 2, 0).numpy()), (r, column)
            assert tuple(grid[top - 1, left + 3]) == EDGE  # the outline lies outside the image
        left, top = grid_box(r, 1, tile)
        assert left == GAP + tile + GAP and (grid[top:top + tile, left:left + 2 * tile] < 128).any()  # the text
    assert render_grid(rows[:1], tile=tile).shape == (HEADER + tile + GAP, 5 * tile + 5 * GAP, 3)  # one query


def test_grid_enlarges_images_to_the_tile() -> None:
    row = GridRow(scenes(1, 32)[0], "add a circle", torch.full((3, 64, 64), 7, dtype=torch.uint8), scenes(1, 32)[0])
    grid = render_grid([row], tile=48)
    assert (grid.shape[1], grid.shape[0]) == grid_size(1, 48) == (5 * 48 + 5 * GAP, HEADER + 48 + GAP)
    left, top = grid_box(0, 2, 48)
    assert (grid[top:top + 48, left:left + 48] == 7).all()


# --- the command line --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def css_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    open_dataset("css", scale=SCALE, cache_dir=cache)
    return cache


def write_checkpoint(directory: Path, cache: Path, *, seeds: tuple[int, ...] = (0,)) -> Path:
    """A checkpoint folder as study.train writes it: state.pt with an (untrained) model per seed, history.json."""
    data = open_dataset("css", scale=SCALE, cache_dir=cache)
    vocab = Vocabulary.build([q.text for q in data.train.queries])
    config = ModelConfig(composer="tirg", embed_dim=16, vocab_size=len(vocab))
    runs = {}
    for seed in seeds:
        torch.manual_seed(seed)
        runs[f"css@seed{seed}"] = {"model": CirModel(config).state_dict(), "vocab": vocab.to_list(),
                                   "model_config": asdict(config)}
    directory.mkdir(parents=True)
    torch.save({"epoch": 2, "runs": runs}, directory / CHECKPOINT_FILE)
    (directory / HISTORY_FILE).write_text(json.dumps([{"epoch": 2, "setup/scale": SCALE, "setup/image_size/css": 64}]))
    return directory


def test_cli_draws_the_test_queries_own_images(tmp_path: Path, css_cache: Path, capsys) -> None:
    checkpoint = write_checkpoint(tmp_path / "checkpoint", css_cache)
    out = tmp_path / "out"
    assert main([str(checkpoint), "--dataset", "css", "--out", str(out), "--cache-dir", str(css_cache),
                 "--steps", "30", "--batch-size", "16", "--queries", "2", "--tile", "64"]) == 0
    printed = capsys.readouterr().out
    assert "held-out pixel loss" in printed and "the composed feature" in printed
    facts = json.loads((out / "reconstruction.json").read_text())
    assert facts["decoder"]["held_out_after"] < facts["decoder"]["held_out_before"]
    assert facts["decoder"]["train_images"] + facts["decoder"]["held_out_images"] == 190  # the train split's
    assert facts["test_queries"] == 181 and set(facts["test_pixel_loss"]) == {
        "composed", "target_embedding", "reference_embedding", "train_mean_image"}
    drawn = [q["query"] for q in facts["queries"]]
    assert len(drawn) == 2
    with Image.open(out / "grid.png") as image:
        grid = np.asarray(image.convert("RGB"))
    assert (grid.shape[1], grid.shape[0]) == grid_size(2, 64)
    test = open_dataset("css", scale=SCALE, cache_dir=css_cache).test
    images = open_image_map(test, cache_dir=css_cache)
    for r, i in enumerate(drawn):
        query = test.queries[i]
        assert facts["queries"][r]["text"] == query.text
        for column, index in ((0, query.source), (3, query.target)):
            left, top = grid_box(r, column, 64)
            assert np.array_equal(grid[top:top + 64, left:left + 64], images[index].permute(1, 2, 0).numpy())
        with Image.open(out / f"query-{i}.png") as one:
            assert one.size == grid_size(1, 64)


@pytest.mark.parametrize("args, says", [
    (["{missing}", "--dataset", "css", "--out", "{out}"], "no checkpoint (expected a Ray Train checkpoint"),
    (["{not_zip}", "--dataset", "css", "--out", "{out}"], "not a readable checkpoint"),
    (["{checkpoint}", "--dataset", "css", "--out", "{out}", "--steps", "0"], "--steps: steps must be a positive"),
    (["{checkpoint}", "--dataset", "css", "--out", "{out}", "--held-out", "1.5"], "--held-out: held_out is a share"),
    (["{checkpoint}", "--dataset", "css", "--out", "{out}", "--queries", "0"], "--queries 0: draw at least 1"),
    (["{checkpoint}", "--out", "{out}"], "give CHECKPOINT --dataset NAME --out DIR (or --study DIR)"),
    (["{checkpoint}", "--dataset", "states", "--out", "{out}"], "0 for dataset 'states'; pick one with --run"),
    (["--study", "{missing}"], "no such directory; give a study folder"),
    (["--study", "{out}", "--dataset", "css"], "--study draws the study's best configuration"),
])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, css_cache: Path, capsys, args, says) -> None:
    paths = {"missing": tmp_path / "nope", "out": tmp_path / "out", "checkpoint": tmp_path / "checkpoint",
             "not_zip": tmp_path / "broken"}
    (tmp_path / "checkpoint").mkdir()
    torch.save({"runs": {"css@seed0": {}}}, tmp_path / "checkpoint" / CHECKPOINT_FILE)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / CHECKPOINT_FILE).write_bytes(b"cut short")
    assert main([a.format(**paths) for a in args] + ["--cache-dir", str(css_cache)]) == 2
    error = capsys.readouterr().err
    assert says in error and error.startswith("error: ") and error.count("\n") == 1, error
    assert "Traceback" not in error


# --- a study's best configuration ------------------------------------------------------------------

SPACE = """\
# reconstruct_fixture (tests/test_reconstruct.py)
name: reconstruct_fixture
datasets:
  {dataset}: {{weight: 1.0}}
seeds: 2
parameters:
  composer: {{type: choice, values: [tirg]}}
budgets:
  smoke: {{num_samples: 1, epochs: 2, scale: {scale}, embed_dim: 16, batch_size: 8}}
"""


def write_study(directory: Path, cache: Path, dataset: str = "css") -> Path:
    """study.run's layout, as far as reconstruct_for_study reads it: the space, the record, the
    ranking (best first), and the best configuration's Train checkpoints (an older, broken one first)."""
    directory.mkdir(parents=True)
    (directory / "space.yaml").write_text(SPACE.format(dataset=dataset, scale=SCALE))
    (directory / "study.json").write_text(json.dumps({"budget": {"scale": SCALE}}))
    pd.DataFrame({"config_id": ["c0001", "c0000"], "rank": [1, 2]}).to_parquet(directory / "ranking.parquet")
    run = directory / "train" / "train-c0001"
    older = run / "checkpoint_2026-01-01_00-00-01.000000"
    older.mkdir(parents=True)
    (older / CHECKPOINT_FILE).write_bytes(b"an older checkpoint, cut short: never read")
    write_checkpoint(run / "checkpoint_2026-01-01_00-00-02.000000", cache, seeds=(1, 0))
    return directory


def test_a_study_gets_its_best_configurations_grid_and_tensorboard_image(tmp_path: Path, css_cache: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    study = write_study(tmp_path / "study", css_cache)
    folder = reconstruct_for_study(study, cache_dir=css_cache, fit=FitConfig(steps=10, batch_size=8), count=2)
    assert folder == study / "reconstruction"
    with Image.open(folder / "css.png") as image:
        assert image.size == grid_size(2, TILE)
        picture = np.asarray(image.convert("RGB"))
    facts = json.loads((folder / "css.json").read_text())
    assert (facts["config_id"], facts["run"]) == ("c0001", "css@seed0")  # the best, its first seed
    assert facts["checkpoint"].endswith("00-00-02.000000")  # the newest checkpoint
    events = EventAccumulator(str(study / "tensorboard" / "c0001"), size_guidance={IMAGES: 0})
    events.Reload()
    assert events.Tags()["images"] == ["reconstruction/css"]
    (logged,) = events.Images("reconstruction/css")
    assert (logged.width, logged.height, logged.step) == (picture.shape[1], picture.shape[0], 2)
    with Image.open(__import__("io").BytesIO(logged.encoded_image_string)) as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), picture)


def test_a_study_without_css_is_skipped_with_a_reason(tmp_path: Path, css_cache: Path, capsys) -> None:
    study = write_study(tmp_path / "study", css_cache, dataset="states")
    assert reconstruct_for_study(study, cache_dir=css_cache) is None
    error = capsys.readouterr().err
    assert "skipped" in error and "no dataset of CSS layout in the study (['states'])" in error
    assert not (study / "reconstruction").exists()


def test_a_failure_inside_never_fails_the_study(tmp_path: Path, css_cache: Path, capsys, monkeypatch) -> None:
    import study.reconstruct

    def broken(*args, **kwargs):
        raise RuntimeError("a kernel this machine lacks")

    monkeypatch.setattr(study.reconstruct, "reconstruct", broken)
    study_dir = write_study(tmp_path / "study", css_cache)
    assert reconstruct_for_study(study_dir, cache_dir=css_cache) is None
    assert "skipped: RuntimeError: a kernel this machine lacks" in capsys.readouterr().err


def test_log_picture_reads_back(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    from study.tensorboard import log_picture

    picture = scenes(1, 40)[0].permute(1, 2, 0).numpy()
    Image.fromarray(picture).save(tmp_path / "grid.png")
    log_picture(tmp_path / "run", "reconstruction/css", tmp_path / "grid.png", step=3)
    events = EventAccumulator(str(tmp_path / "run"), size_guidance={IMAGES: 0})
    events.Reload()
    (logged,) = events.Images("reconstruction/css")
    assert (logged.width, logged.height, logged.step) == (40, 40, 3)
    with Image.open(__import__("io").BytesIO(logged.encoded_image_string)) as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), picture)


# --- the report ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reported_study(tmp_path_factory) -> Path:
    from test_report import build_study  # the report's own fixture study (tests/test_report.py)

    return build_study(tmp_path_factory.mktemp("report") / "s")


def test_report_without_a_grid_says_how_to_make_one(reported_study: Path) -> None:
    from study.report.context import Context
    from study.report.inputs import read_study_tables
    from study.report.reconstruction import reconstruction

    section = reconstruction(Context.of(read_study_tables(reported_study)))
    assert section.title == "Composed features as images"
    notes = [b.text for b in section.blocks if getattr(b, "note", False)]
    assert any(f"python -m study.reconstruct --study {reported_study}" in n for n in notes)
    assert not any(b.kind == "picture" for b in section.blocks)


def test_report_shows_the_grid_and_its_numbers(reported_study: Path, tmp_path: Path) -> None:
    from study.report import check_report
    from study.report import main as report_main

    study = tmp_path / "s"
    shutil.copytree(reported_study, study)
    grid = tmp_path / "grid.png"
    Image.fromarray(scenes(1, 30)[0].permute(1, 2, 0).numpy()).save(grid)
    (study / "reconstruction").mkdir()
    shutil.copy(grid, study / "reconstruction" / "css.png")
    (study / "reconstruction" / "css.json").write_text(json.dumps({
        "decoder": {"parameters": 437219, "steps": 500, "train_images": 856, "held_out_before": 0.25,
                    "held_out_after": 0.0125}, "test_queries": 903,
        "test_pixel_loss": {"composed": 0.02, "target_embedding": 0.015, "reference_embedding": 0.03,
                            "train_mean_image": 0.029},
        "config_id": "c0003", "run": "css@seed0", "checkpoint": "train/train-c0003/checkpoint_x"}))
    out = tmp_path / "report.html"
    assert report_main([str(study), "--out", str(out)]) == 0
    assert check_report(study, out) == []
    html = out.read_text()
    section = html.split('<section id="reconstruction">', 1)[1]
    assert "<h2>Composed features as images</h2>" in section
    embedded = base64.b64encode(grid.read_bytes()).decode()
    assert embedded in section
    for text in ("437,219 parameters", "0.2500 before training, 0.0125 after", "903 test queries",
                 "composed feature is 0.0200", "(no change) 0.0300", "mean image 0.0290", "c0003"):
        assert text in section, text
    # check_report catches a report that lacks the study's grid
    lacking = tmp_path / "lacking.html"
    lacking.write_text(html.replace(embedded, base64.b64encode(b"\x89PNG\r\n\x1a\nother").decode()))
    assert any("reconstruction picture" in p and "is not embedded" in p for p in check_report(study, lacking))
