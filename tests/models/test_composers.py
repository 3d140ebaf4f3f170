"""Every registered composer: shapes, finite values, gradient flow, and what it must ignore.

Hand-checked values of single composers are in test_composer_values.py."""
from __future__ import annotations

import pytest
import torch
from conftest import EMBED_DIM, make_batch, make_model, reached

from models.batch import Batch
from models.composers import COMPOSERS, REQUIREMENTS, Composer, TextInput, composer_class
from models.encoders import ImageFeatures
from models.model import ModelConfig
from models.text import Vocabulary

SINGLE_WORDS = ["add", "red", "circle", "cube"]  # words of conftest.TEXTS, for composers that need one word


def batch_for(name: str, vocab: Vocabulary, seed: int = 0) -> Batch:
    """conftest's batch, with one-word texts when the composer requires them."""
    batch = make_batch(vocab, seed=seed)
    if "single_word_text" in composer_class(name).requires:
        tokens, lengths = vocab.encode(SINGLE_WORDS)
        batch = Batch(reference=batch.reference, tokens=tokens, lengths=lengths, target=batch.target)
    return batch


def other_text(name: str, vocab: Vocabulary) -> tuple[torch.Tensor, torch.Tensor]:
    single = "single_word_text" in composer_class(name).requires
    return vocab.encode(["remove" if single else "remove blue square"] * 4)


@pytest.mark.parametrize("name", COMPOSERS.names())
def test_composer_class_declares_its_capabilities(name):
    cls = composer_class(name)
    assert issubclass(cls, Composer)
    assert isinstance(cls.uses_image, bool) and isinstance(cls.uses_text, bool) and isinstance(cls.needs_tokens, bool)
    assert isinstance(cls.requires, frozenset) and cls.requires <= REQUIREMENTS
    assert cls.uses_image or cls.uses_text
    assert not cls.needs_tokens or cls.uses_text


@pytest.mark.parametrize("name", COMPOSERS.names())
def test_composer_shape_finite_and_gradient_flow(name, vocab):
    model = make_model(vocab, composer=name)
    batch = batch_for(name, vocab)
    query = model.compose(batch.reference, batch.tokens, batch.lengths)
    assert query.shape == (4, EMBED_DIM)
    assert torch.isfinite(query).all()
    query.pow(2).sum().backward()
    composer = model.composer
    assert reached(model.image_encoder) == composer.uses_image
    # A composer that reads token ids encodes the text itself: the text encoder is not on its path.
    assert reached(model.text_encoder) == (composer.uses_text and not composer.needs_tokens)
    for pname, p in composer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient reaches {pname}"


@pytest.mark.parametrize("name", COMPOSERS.names())
def test_composer_ignores_what_it_does_not_use(name, vocab):
    model = make_model(vocab, composer=name).eval()  # eval: dropout and batch statistics fixed
    batch, other = batch_for(name, vocab, seed=0), batch_for(name, vocab, seed=1)
    tokens, lengths = other_text(name, vocab)
    base = model.compose(batch.reference, batch.tokens, batch.lengths)
    new_text = model.compose(batch.reference, tokens, lengths)
    new_image = model.compose(other.reference, batch.tokens, batch.lengths)
    assert torch.equal(base, new_text) == (not model.composer.uses_text)
    assert torch.equal(base, new_image) == (not model.composer.uses_image)


@pytest.mark.parametrize("name", COMPOSERS.names())
def test_every_builder_takes_the_same_keywords(name):
    composer = COMPOSERS.build(name, embed_dim=8, image_channels=16, vocab_size=5)
    assert isinstance(composer, composer_class(name))
    if composer_class(name).needs_tokens:  # per-word parameters: the vocabulary size is required
        with pytest.raises(ValueError, match=rf"composer '{name}'.*needs vocab_size"):
            COMPOSERS.build(name, embed_dim=8, image_channels=16)
    else:
        COMPOSERS.build(name, embed_dim=8, image_channels=16)


def test_composer_class_of_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown composer 'film2'.*attribute_operator.*tirg_residual_only"):
        composer_class("film2")


def test_tirg_parameters_start_at_1_10_and_follow_the_repo_formula():
    composer = COMPOSERS.build("tirg", embed_dim=4, image_channels=8)
    assert composer.a.tolist() == [1.0, 10.0]
    # Silence the residual (a1 = 0) and open the gate half way (W_g = 0, b_g = 0): psi = 0.5 x.
    with torch.no_grad():
        composer.a[1] = 0.0
        composer.gate[-1].weight.zero_()
        composer.gate[-1].bias.zero_()
    x = torch.tensor([[1.0, -2.0, 3.0, 0.5], [0.0, 4.0, -1.0, 2.0]])
    image = ImageFeatures(vector=x, last_map=torch.zeros(2, 8, 1, 1), mid_map=torch.zeros(2, 8, 1, 1))
    text = TextInput(features=torch.randn(2, 4), tokens=torch.zeros(2, 1, dtype=torch.long), lengths=torch.ones(2, dtype=torch.long))
    assert torch.allclose(composer(image, text), 0.5 * x)


def test_tirg_and_concat_layer_order_follows_the_repo():
    tirg = COMPOSERS.build("tirg", embed_dim=4, image_channels=8)
    kinds = lambda seq: [type(m).__name__ for m in seq]  # noqa: E731
    assert kinds(tirg.gate) == ["BatchNorm1d", "ReLU", "Linear"]
    assert kinds(tirg.residual) == ["BatchNorm1d", "ReLU", "Linear", "ReLU", "Linear"]
    assert (tirg.residual[2].in_features, tirg.residual[2].out_features, tirg.residual[4].out_features) == (8, 8, 4)
    concat = COMPOSERS.build("concat", embed_dim=4, image_channels=8)
    assert kinds(concat.mlp) == ["BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    assert concat.mlp[5].p == 0.1 and concat.mlp[6].out_features == 4


def test_unknown_composer_lists_the_known_names():
    with pytest.raises(ValueError, match=r"unknown composer 'film2'.*concat.*image_only.*text_only.*tirg"):
        ModelConfig(composer="film2")


def test_model_with_resnet18_at_64px(vocab):
    model = make_model(vocab, composer="tirg", image_encoder="resnet18")
    batch = make_batch(vocab, b=2, size=64)
    outputs = model(batch)
    assert outputs.query.shape == outputs.target.shape == (2, EMBED_DIM)
    assert outputs.reference_features.last_map.shape == (2, 512, 2, 2)
    assert model.embed_images(batch.target).shape == (2, EMBED_DIM)
