"""Frozen-feature trials (study/feature_cache.py, study/worker.py) on clip_tiny and generated CSS,
without Ray: the features are embedded once per (dataset, encoders' weights) and reused; a trial on
them reads no image and runs no encoder; it gives the recalls of the same trial with the frozen
encoders run at every step; checkpoints leave out encoders that a weights file holds."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import open_clip
import pytest
import torch

from models.clip import ClipTextTower, ClipTinyEncoders, ClipViTTower
from models.model import restore_model
from study.budget import Budget, DatasetEntry
from study.data import open_dataset
from study.data.image_cache import ImageMap
from study.feature_cache import feature_cache_dir
from study.trial_config import TrialConfig
from study.trial_run import TrialRun
from study.worker import DatasetShare, SeedRun

FROZEN = Budget(epochs=1, scale=0.01, image_encoder="clip_tiny", encoder_lr_factor=0.0, batch_size=8,
                train_eval_queries=10, max_steps_per_epoch=3)
PARAMS = {"composer": "combiner", "K": 4, "regularizer": "cmap", "cmap_weight": 0.5}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def css(tmp_path_factory) -> tuple:
    """Generated CSS at scale 0.01 (190 + 191 images at 64 px) and a clip_tiny weights file."""
    folder = tmp_path_factory.mktemp("frozen")
    data = open_dataset("css", scale=0.01, cache_dir=folder / "data")
    torch.manual_seed(7)
    weights = folder / "clip_tiny.pt"
    torch.save(open_clip.CLIP(**ClipTinyEncoders.clip_config()).state_dict(), weights)
    return data, folder / "data", str(weights)


class Calls:
    """How many images and texts the CLIP towers embedded, and how many image-map reads happened."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.images = self.texts = self.gathers = 0

        def count(cls, name, attribute):
            original = getattr(cls, name)

            def counted(module, *args, **kwargs):
                setattr(self, attribute, getattr(self, attribute) + (len(args[0]) if attribute != "gathers" else 1))
                return original(module, *args, **kwargs)

            monkeypatch.setattr(cls, name, counted)

        count(ClipViTTower, "forward", "images")
        count(ClipTextTower, "forward", "texts")
        count(ImageMap, "gather", "gathers")

    def reset(self) -> None:
        self.images = self.texts = self.gathers = 0


def seed_run(css, cache: Path, budget: Budget, *, seed: int = 0, params: dict = PARAMS) -> SeedRun:
    data, _, _ = css
    share = DatasetShare.open(DatasetEntry("css"), data, budget=budget, data_seed=0, cache_dir=str(cache))
    return SeedRun.build(share, TrialConfig.from_params(params, seeds=(seed,)), budget, seed=seed, device=CPU)


def distinct_texts(split) -> int:
    return len({q.text for q in split.queries})


def test_features_are_embedded_once_per_weights_and_reused(css, tmp_path: Path, monkeypatch) -> None:
    data, _, weights = css
    calls = Calls(monkeypatch)
    budget = replace(FROZEN, image_weights=weights)
    seed_run(css, tmp_path, budget, seed=0)
    assert calls.images == len(data.train.image_paths) + len(data.test.image_paths)  # every image once
    assert calls.texts == distinct_texts(data.train) + distinct_texts(data.test)  # every distinct text once
    assert len([p for p in feature_cache_dir(tmp_path).iterdir() if p.is_dir()]) == 2  # train and test
    calls.reset()
    seed_run(css, tmp_path, budget, seed=1)  # another seed, the same weights file: the same features
    assert (calls.images, calls.texts) == (0, 0)
    seed_run(css, tmp_path, FROZEN, seed=0)  # random weights: other encoders, other features
    assert calls.images == len(data.train.image_paths) + len(data.test.image_paths)
    assert len([p for p in feature_cache_dir(tmp_path).iterdir() if p.is_dir()]) == 4


def test_a_trial_on_cached_features_reads_no_image_and_runs_no_encoder(css, tmp_path: Path, monkeypatch) -> None:
    run = seed_run(css, tmp_path, FROZEN)
    calls = Calls(monkeypatch)
    encoders = {k: v.clone() for k, v in run.model.state_dict().items() if k.startswith(("image_", "text_"))}
    composer = [p.detach().clone() for p in run.model.composer.parameters()]
    logs = run.train_epoch(0, rank=0, world=1)
    evaluations = run.evaluate(rank=0, world=1)
    assert (calls.images, calls.texts, calls.gathers) == (0, 0, 0)
    assert torch.isfinite(logs["train/css/loss/total"]) and logs["train/css/loss/cmap"] > 0
    assert len(evaluations["test"].ranks) == len(css[0].test.queries)
    assert all(torch.equal(v, run.model.state_dict()[k]) for k, v in encoders.items())  # frozen
    assert any(not torch.equal(b, a) for b, a in zip(composer, run.model.composer.parameters()))  # trained
    assert not any(p.requires_grad for p in run.model.encoder_parameters())
    optimised = {id(p) for group in run.optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in run.model.encoder_parameters()}


def trial_metrics(css, budget: Budget) -> tuple[dict, list]:
    data, cache, _ = css
    torch.set_num_threads(1)
    trial = TrialConfig.from_params(PARAMS, seeds=(0,))
    run = TrialRun.build(trial, budget, (DatasetEntry("css"),), {"css": data}, cell_weights={"css/test@1": 1.0},
                         data_seed=0, cache_dir=str(cache), rank=0, world=1, device=CPU)
    logs = run.train_epoch()
    metrics, frames = run.evaluate()
    return {**logs, **metrics}, frames


def test_cached_features_give_the_recalls_of_frozen_encoders_run_live(css) -> None:
    cached, cached_ranks = trial_metrics(css, FROZEN)
    live, live_ranks = trial_metrics(css, replace(FROZEN, feature_cache=False))
    recalls = [k for k in live if "/recall/" in k or k.endswith("whm")]
    assert recalls and {k: cached[k] for k in recalls} == pytest.approx({k: live[k] for k in recalls}, abs=1e-9)
    losses = [k for k in live if "/loss/" in k]
    assert {k: cached[k] for k in losses} == pytest.approx({k: live[k] for k in losses}, rel=1e-4)
    for a, b in zip(cached_ranks, live_ranks):
        assert a["rank"].tolist() == b["rank"].tolist()


def test_a_checkpoint_leaves_out_encoders_a_weights_file_holds(css, tmp_path: Path) -> None:
    data, _, weights = css
    budget = replace(FROZEN, image_weights=weights)
    run = seed_run(css, tmp_path, budget)
    run.train_epoch(0, rank=0, world=1)
    state = run.state()
    assert not any(k.startswith(("image_encoder.", "text_encoder.")) for k in state["model"])
    assert any(k.startswith("composer.") for k in state["model"])
    model, tokenizer = restore_model(state)  # what study.evaluate needs: encoders from the file, the rest saved
    run.model.eval()
    tokens, lengths = tokenizer.encode(["add red circle"])
    image = torch.randn(1, 3, 64, 64)
    assert torch.allclose(model.eval().compose(image, tokens, lengths), run.model.compose(image, tokens, lengths))
    again = seed_run(css, tmp_path, budget, seed=1)  # another seed's run takes the saved state
    again.load_state(state)
    assert again.step == run.step
    torch.manual_seed(9)
    torch.save(open_clip.CLIP(**ClipTinyEncoders.clip_config()).state_dict(), tmp_path / "other.pt")
    other = seed_run(css, tmp_path, replace(budget, image_weights=str(tmp_path / "other.pt")))
    with pytest.raises(ValueError, match="trained with other frozen encoders"):
        other.load_state(state)


def test_encoders_train_at_their_fraction_of_the_learning_rate(css, tmp_path: Path) -> None:
    budget = replace(FROZEN, encoder_lr_factor=0.25, lr=0.02)
    run = seed_run(css, tmp_path, budget)
    assert run.features is None  # only frozen encoders give cached features
    head, encoders = run.optimizer.param_groups
    assert (head["lr"], encoders["lr"]) == (0.02, 0.005)
    assert {id(p) for p in encoders["params"]} == {id(p) for p in run.model.encoder_parameters()}
    before = run.model.image_encoder.visual.conv1.weight.detach().clone()
    run.train_epoch(0, rank=0, world=1)
    assert not torch.equal(before, run.model.image_encoder.visual.conv1.weight)


def test_a_damaged_feature_folder_is_built_again(css, tmp_path: Path, monkeypatch, capsys) -> None:
    data, _, weights = css
    budget = replace(FROZEN, image_weights=weights)
    seed_run(css, tmp_path, budget)
    folder = next(p for p in feature_cache_dir(tmp_path).iterdir() if p.is_dir() and "-train-" in p.name)
    (folder / "texts.npy").write_bytes(b"cut short")
    calls = Calls(monkeypatch)
    run = seed_run(css, tmp_path, budget)
    assert calls.images == len(data.train.image_paths)  # the train split again, the test split reused
    assert "damaged feature cache" in capsys.readouterr().err
    assert run.features["train"].text_features([data.train.queries[0].text]).shape == (1, 64)


@pytest.mark.parametrize("params, term", [({"regularizer": "mmgrad", "mmgrad_weight": 0.5}, "mmgrad"),
                                          ({"regularizer": "ga", "ga_strength": 0.01}, "ga_adv")])
def test_frozen_encoders_run_live_keep_mmgrad_and_gas_input_gradient(css, tmp_path: Path, params, term) -> None:
    """What cached features refuse works when the frozen encoders run at every step (feature_cache: false)."""
    run = seed_run(css, tmp_path, replace(FROZEN, feature_cache=False), params={"composer": "tirg", "K": 4, **params})
    logs = run.train_epoch(0, rank=0, world=1)
    assert torch.isfinite(logs[f"train/css/loss/{term}"]) and logs[f"train/css/loss/{term}"] > 0
