"""CLIP4Cir's combiner (models/composers/combiner.py) by hand, and every composer on CLIP's features:
those that read word ids are refused for CLIP encoders (tests/test_frozen_features.py), every other
one composes on clip_tiny's global features and maps and trains into both towers."""
from __future__ import annotations

import pytest
import torch

from models.clip import ClipTinyEncoders
from models.composers import COMPOSERS, TextInput, composer_class
from models.encoders import ImageFeatures
from models.model import CirModel, ModelConfig

TEXTS = ["make the red cube small", "add a circle"]


def test_combiner_sizes_follow_clip4cir() -> None:
    combiner = COMPOSERS.build("combiner", embed_dim=6, image_channels=3)
    assert (combiner.text_projection.in_features, combiner.text_projection.out_features) == (6, 24)  # P = 4D
    assert (combiner.combiner.in_features, combiner.combiner.out_features) == (48, 48)  # 2P -> H = 8D
    assert (combiner.output.in_features, combiner.output.out_features) == (48, 6)
    kinds = [type(m).__name__ for m in combiner.dynamic_scalar]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "Sigmoid"] and combiner.dynamic_scalar[2].p == 0.5


def test_combiner_mixes_text_and_image_by_the_learned_scalar() -> None:
    """Output layer 0 and the scalar's last layer a constant b: psi = s t + (1 - s) x, s = sigmoid(b)."""
    combiner = COMPOSERS.build("combiner", embed_dim=3, image_channels=1).eval()
    with torch.no_grad():
        combiner.output.weight.zero_()
        combiner.output.bias.zero_()
        combiner.dynamic_scalar[3].weight.zero_()
        combiner.dynamic_scalar[3].bias.fill_(0.5)
    x = torch.tensor([[1.0, 0.0, -2.0], [0.5, 0.5, 0.5]])
    t = torch.tensor([[0.0, 3.0, 1.0], [-1.0, 2.0, 0.0]])
    s = 1 / (1 + torch.exp(torch.tensor(-0.5)))  # 0.62246
    text = TextInput(features=t, tokens=torch.zeros(2, 1, dtype=torch.long), lengths=torch.ones(2, dtype=torch.long))
    psi = combiner(ImageFeatures(x), text)
    assert torch.allclose(psi, s * t + (1 - s) * x)
    assert torch.allclose(psi[0], torch.tensor([0.37754, 1.86738, -0.13262]), atol=1e-4)  # by hand


def test_combiner_output_layer_adds_to_the_mix() -> None:
    """Scalar 1/2 and one hidden unit on: psi = W_o c + (t + x) / 2, c = ReLU(W_c r) computed by hand."""
    combiner = COMPOSERS.build("combiner", embed_dim=1, image_channels=1, projection_factor=1, hidden_factor=1).eval()
    with torch.no_grad():
        for layer in (combiner.text_projection, combiner.image_projection, combiner.combiner, combiner.output):
            layer.bias.zero_()
        combiner.text_projection.weight.fill_(2.0)  # t' = ReLU(2 t)
        combiner.image_projection.weight.fill_(-1.0)  # x' = ReLU(-x)
        combiner.combiner.weight.copy_(torch.tensor([[1.0, 3.0]]))  # c = ReLU(t' + 3 x')
        combiner.output.weight.fill_(0.5)
        combiner.dynamic_scalar[3].weight.zero_()
        combiner.dynamic_scalar[3].bias.zero_()  # s = 1/2
    x, t = torch.tensor([[-1.0]]), torch.tensor([[2.0]])
    text = TextInput(features=t, tokens=torch.zeros(1, 1, dtype=torch.long), lengths=torch.ones(1, dtype=torch.long))
    # t' = 4, x' = 1, c = 4 + 3 = 7, psi = 0.5 * 7 + (2 - 1) / 2 = 4
    assert combiner(ImageFeatures(x), text).item() == pytest.approx(4.0)


WORD_FREE = [name for name in COMPOSERS.names() if not composer_class(name).needs_tokens]


@pytest.mark.parametrize("name", WORD_FREE)
def test_every_composer_without_word_ids_trains_on_clip_features(name: str) -> None:
    torch.manual_seed(0)
    tokenizer = ClipTinyEncoders.tokenizer([])
    model = CirModel(ModelConfig(composer=name, image_encoder="clip_tiny", vocab_size=len(tokenizer)))
    tokens, lengths = tokenizer.encode(TEXTS)
    query = model.compose(torch.randn(2, 3, 64, 64), tokens, lengths)
    assert query.shape == (2, 64) and torch.isfinite(query).all()
    query.pow(2).sum().backward()
    cls = composer_class(name)
    for tower, used in ((model.image_encoder, cls.uses_image), (model.text_encoder, cls.uses_text)):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tower.parameters()) == used
