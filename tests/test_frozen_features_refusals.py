"""What the budget's encoders cannot give a space's configurations is refused by validate_space, so
`python -m study.run` exits 2 with the reason before Ray starts (study/trial_config.py check_encoders):
on cached frozen features, GA's input-gradient term, MMGrad, DIM's local term (it reads the layer-2
map), conv-map and word-id composers and augmentation; word-id composers on CLIP's text side; unknown
encoders and unusable weights files. GA's isotropic term, DIM's global term, CMAP and every K are
accepted."""
from __future__ import annotations

from pathlib import Path

import pytest
import ray

from study.run import main
from study.space import SpaceError, load_space
from study.trial_config import validate_space

FROZEN = "image_encoder: clip_tiny, encoder_lr_factor: 0"


def space(tmp_path: Path, parameters: str, budget: str = FROZEN, dataset: str = "css: {weight: 1}") -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(f"# q\ndatasets: {{{dataset}}}\nseeds: 1\nparameters:\n{parameters}"
                    f"budgets:\n  smoke: {{num_samples: 1, epochs: 1, batch_size: 8, {budget}}}\n")
    return path


def validate(path: Path) -> None:
    loaded = load_space(path)
    validate_space(loaded, loaded.budgets["smoke"])


COMPOSERS = "  composer: {type: choice, values: [combiner, tirg, concat]}\n"
REGULARIZER = "  regularizer: {type: choice, values: [none, %s]}\n"


@pytest.mark.parametrize("regularizer, strength, reason", [
    ("ga", "ga_strength: {type: loguniform, low: 0.001, high: 0.1, when: {regularizer: ga}}",
     "regularizer 'ga' differentiates the loss w.r.t. the reference image's pixels"),
    ("mmgrad", "mmgrad_weight: {type: choice, values: [0.5], when: {regularizer: mmgrad}}",
     "regularizer 'mmgrad' reads the last conv map (ImageFeatures.last_map), and cached features"),
    ("dim", "dim_weight: {type: choice, values: [0.1], when: {regularizer: dim}}",
     "regularizer 'dim' reads the layer2-level map (ImageFeatures.mid_map), and cached features"),
])
def test_regularizers_needing_the_encoders_are_refused_on_cached_features(tmp_path, regularizer, strength, reason):
    path = space(tmp_path, COMPOSERS + REGULARIZER % regularizer + f"  {strength}\n")
    with pytest.raises(SpaceError, match="encoder_lr_factor: 0, feature_cache: true") as refused:
        validate(path)
    assert reason in str(refused.value) and "set feature_cache: false" in str(refused.value)
    validate(space(tmp_path, COMPOSERS + REGULARIZER % regularizer + f"  {strength}\n",
                   budget=FROZEN + ", feature_cache: false"))  # the frozen encoders run at every step: accepted


@pytest.mark.parametrize("composer, reason", [
    ("tirg_conv", "composer 'tirg_conv' reads the last conv map"),
    ("film", "composer 'film' reads the last conv map"),
    ("relationship", "composer 'relationship' reads the last conv map"),
])
def test_conv_map_composers_are_refused_on_cached_features(tmp_path, composer, reason):
    with pytest.raises(SpaceError, match=reason):
        validate(space(tmp_path, f"  composer: {{type: choice, values: [tirg, {composer}]}}\n"))


def test_word_id_composers_are_refused_with_clips_text_side(tmp_path):
    path = space(tmp_path, "  composer: {type: choice, values: [show_and_tell]}\n", budget="image_encoder: clip_tiny")
    with pytest.raises(SpaceError, match=r"composer 'show_and_tell' reads word ids .*CLIP's tokenizer gives BPE"):
        validate(path)
    validate(space(tmp_path, "  composer: {type: choice, values: [show_and_tell]}\n", budget="image_encoder: small_cnn"))


def test_isotropic_ga_dims_global_term_cmap_and_every_k_work_on_cached_features(tmp_path):
    validate(space(tmp_path, COMPOSERS + REGULARIZER % "ga, dim, cmap"
                   + "  ga_noise: {type: loguniform, low: 0.00001, high: 0.01, when: {regularizer: ga}}\n"
                   + "  dim_weight: {type: loguniform, low: 0.001, high: 1, when: {regularizer: dim}}\n"
                   + "  dim_terms: {type: choice, values: [global], when: {regularizer: dim}}\n"
                   + "  cmap_weight: {type: loguniform, low: 0.01, high: 1, when: {regularizer: cmap}}\n"
                   + "  K: {type: choice, values: [2, 4, batch]}\n"))


def test_augmentation_is_refused_on_cached_features(tmp_path):
    path = space(tmp_path, COMPOSERS, dataset="css: {weight: 1, augment: flip}")
    with pytest.raises(SpaceError, match="dataset 'css' has `augment`.*use augment: none, or set feature_cache: false"):
        validate(path)
    validate(space(tmp_path, COMPOSERS, budget=FROZEN + ", feature_cache: false", dataset="css: {weight: 1, augment: flip}"))


def test_unknown_encoders_and_missing_weights_are_refused(tmp_path):
    with pytest.raises(SpaceError, match=r"unknown image_encoder 'clip_rn51'; known: \['clip_rn50'"):
        validate(space(tmp_path, COMPOSERS, budget="image_encoder: clip_rn51"))
    missing = tmp_path / "nope.pt"
    with pytest.raises(SpaceError, match=r"image_weights: clip_tiny weights file '.*nope.pt' does not exist"):
        validate(space(tmp_path, COMPOSERS, budget=f"image_encoder: clip_tiny, image_weights: {missing}"))
    with pytest.raises(SpaceError, match=r"line 7: budget 'smoke': `encoder_lr_factor` must be a number in \[0, 1\]"):
        validate(space(tmp_path, COMPOSERS, budget="image_encoder: clip_tiny, encoder_lr_factor: 2"))


def test_study_run_exits_2_with_the_reason_before_ray_starts(tmp_path, capsys):
    path = space(tmp_path, COMPOSERS + REGULARIZER % "mmgrad"
                 + "  mmgrad_weight: {type: choice, values: [0.5], when: {regularizer: mmgrad}}\n")
    code = main(["--space", str(path), "--budget", "smoke", "--storage", str(tmp_path / "studies"),
                 "--cache-dir", str(tmp_path / "cache")])
    assert code == 2 and not ray.is_initialized() and not (tmp_path / "cache").exists()
    assert "regularizer 'mmgrad' reads the last conv map" in capsys.readouterr().err
