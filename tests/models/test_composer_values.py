"""Single composers against values worked out by hand on tiny inputs (the registry-wide checks are in
test_composers.py)."""
from __future__ import annotations

import pytest
import torch
from conftest import make_model

from models.composers import COMPOSERS, TextInput
from models.encoders import ImageFeatures


def features(vector: torch.Tensor | None = None, last_map: torch.Tensor | None = None) -> ImageFeatures:
    b = (vector if vector is not None else last_map).shape[0]
    vector = torch.zeros(b, 1) if vector is None else vector
    last_map = torch.zeros(b, 1, 1, 1) if last_map is None else last_map
    return ImageFeatures(vector=vector, last_map=last_map, mid_map=torch.zeros(b, 1, 1, 1))


def text_input(features: torch.Tensor | None = None, tokens: list[list[int]] | None = None,
               lengths: list[int] | None = None, b: int = 2, d: int = 4) -> TextInput:
    tokens_t = torch.zeros(b, 1, dtype=torch.long) if tokens is None else torch.tensor(tokens)
    lengths_t = torch.full((tokens_t.shape[0],), tokens_t.shape[1]) if lengths is None else torch.tensor(lengths)
    feats = torch.randn(tokens_t.shape[0], d) if features is None else features
    return TextInput(features=feats, tokens=tokens_t, lengths=lengths_t)


def build(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return COMPOSERS.build(name, **kwargs).eval()  # eval: batch norm on running statistics, no dropout


# --- TIRG family -------------------------------------------------------------------------------------

def test_tirg_conv_at_a_0_1_is_its_residual_path():
    composer = build("tirg_conv", embed_dim=4, image_channels=6)
    assert composer.a.tolist() == [1.0, 10.0]
    x, t = torch.randn(2, 6, 3, 3), torch.randn(2, 4)
    with torch.no_grad():
        composer.a.copy_(torch.tensor([0.0, 1.0]))
        z = torch.cat([x, t[:, :, None, None].expand(-1, -1, 3, 3)], dim=1)  # [X; tile(t)]
        expected = composer.fc(composer.residual(z).mean(dim=(2, 3)))
        assert torch.allclose(composer(features(last_map=x), text_input(t)), expected, atol=1e-6)


def test_tirg_conv_branches_follow_the_repo():
    composer = build("tirg_conv", embed_dim=4, image_channels=6)
    kinds = [type(m).__name__ for m in composer.gate]
    assert kinds == [type(m).__name__ for m in composer.residual] == ["BatchNorm2d", "Conv2d", "ReLU", "Conv2d"]
    conv1, conv2 = composer.residual[1], composer.residual[3]
    assert (conv1.in_channels, conv1.out_channels, conv2.out_channels) == (10, 10, 6)
    assert conv1.kernel_size == conv2.kernel_size == (3, 3) and conv1.padding == (1, 1)


def test_tirg_conv_in_the_model_reuses_the_image_encoders_fc(vocab):
    model = make_model(vocab, composer="tirg_conv")
    assert model.composer.fc is model.image_encoder.fc
    names = [name for name, _ in model.named_parameters()]
    assert len(names) == len(set(names)) and "composer.fc.weight" not in names  # counted once, under the encoder


def test_tirg_fixed_has_no_trainable_weights_and_sums_the_branches():
    composer = build("tirg_fixed", embed_dim=4, image_channels=8)
    assert "a" not in dict(composer.named_parameters()) and composer.a.tolist() == [1.0, 1.0]
    x, t = torch.randn(2, 4), torch.randn(2, 4)
    joint = torch.cat([x, t], dim=1)
    with torch.no_grad():
        expected = torch.sigmoid(composer.gate(joint)) * x + composer.residual(joint)
        assert torch.allclose(composer(features(x), text_input(t)), expected, atol=1e-6)


def test_tirg_gate_only_is_the_gated_image():
    composer = build("tirg_gate_only", embed_dim=4, image_channels=8)
    assert not hasattr(composer, "residual") and composer.a.tolist() == [1.0]
    with torch.no_grad():
        composer.gate[-1].weight.zero_()
        composer.gate[-1].bias.zero_()
        composer.a.fill_(3.0)
    x = torch.randn(2, 4)
    assert torch.allclose(composer(features(x), text_input()), 3.0 * 0.5 * x)  # a0 * sigmoid(0) * x


def test_tirg_residual_only_adds_the_weighted_residual_to_the_image():
    composer = build("tirg_residual_only", embed_dim=4, image_channels=8)
    assert not hasattr(composer, "gate") and composer.a.tolist() == [10.0]
    x, t = torch.randn(2, 4), torch.randn(2, 4)
    with torch.no_grad():
        expected = x + 10.0 * composer.residual(torch.cat([x, t], dim=1))
        assert torch.allclose(composer(features(x), text_input(t)), expected, atol=1e-5)
        composer.a.zero_()
        assert torch.equal(composer(features(x), text_input(t)), x)


# --- FiLM, MRN, parameter hashing, relation network ---------------------------------------------------

def test_film_with_gamma_1_beta_0_is_the_plain_block():
    c = 5
    composer = build("film", embed_dim=4, image_channels=c)
    block = composer.blocks[0]
    with torch.no_grad():
        composer.film.weight.zero_()
        composer.film.bias.copy_(torch.cat([torch.ones(c), torch.zeros(c)]))  # (gamma, beta) of block 1
        block.bn.running_mean.uniform_(-1, 1)
        block.bn.running_var.uniform_(0.5, 2)
        x = torch.randn(2, c, 3, 3)
        resid = torch.relu(block.conv1(x))
        out = torch.relu(block.bn(block.conv2(resid))) + resid
        expected = composer.fc(out.mean(dim=(2, 3)))
        assert torch.allclose(composer(features(last_map=x), text_input()), expected, atol=1e-6)


def test_film_modulates_each_channel_by_the_text():
    composer = build("film", embed_dim=4, image_channels=3, n_blocks=2)
    assert composer.film.out_features == 2 * 3 * 2 and not composer.blocks[0].bn.affine
    x = torch.randn(2, 3, 2, 2)
    with torch.no_grad():
        a = composer(features(last_map=x), text_input(torch.zeros(2, 4)))
        b = composer(features(last_map=x), text_input(torch.ones(2, 4)))
    assert not torch.allclose(a, b)


def test_mrn_follows_the_rtic_formula():
    composer = build("mrn", embed_dim=4, image_channels=8)
    x, t = torch.randn(2, 4), torch.randn(2, 4)
    l1, l2 = composer.image_block[1], composer.image_block[4]
    l3, l4 = composer.text_block[1], composer.shortcut[1]
    with torch.no_grad():
        expected = torch.tanh(l2(torch.tanh(l1(x)))) * torch.tanh(l3(t)) + l4(t)
        assert torch.allclose(composer(features(x), text_input(t)), expected, atol=1e-6)


def test_param_hash_is_deterministic_for_a_seed():
    first = build("param_hash", embed_dim=6, image_channels=8, hash_seed=7)
    torch.manual_seed(123)  # a different global RNG state must not change the hash
    second = COMPOSERS.build("param_hash", embed_dim=6, image_channels=8, hash_seed=7).eval()
    for name in ("weight_index", "weight_sign", "bias_index", "bias_sign"):
        assert torch.equal(getattr(first.hash_linear, name), getattr(second.hash_linear, name)), name
    second.load_state_dict(first.state_dict())
    x, t = torch.randn(2, 6), torch.randn(2, 6)
    assert torch.equal(first(features(x), text_input(t, d=6)), second(features(x), text_input(t, d=6)))
    other = COMPOSERS.build("param_hash", embed_dim=6, image_channels=8, hash_seed=8)
    assert not torch.equal(first.hash_linear.weight_index, other.hash_linear.weight_index)


def test_param_hash_weight_is_signed_copies_of_the_shared_vector():
    composer = build("param_hash", embed_dim=6, image_channels=8, compression=0.25)
    hashed = composer.hash_linear
    assert hashed.hashed_weight.numel() == 9 and set(hashed.weight_sign.unique().tolist()) == {-1.0, 1.0}
    with torch.no_grad():
        hashed.hashed_weight.copy_(torch.arange(9.0))
        weight = hashed.virtual_weight()
    assert torch.equal(weight, hashed.weight_index.float() * hashed.weight_sign)
    x, t = torch.randn(2, 6), torch.randn(2, 6)
    bias = hashed.hashed_bias[hashed.bias_index] * hashed.bias_sign
    with torch.no_grad():
        expected = composer.mlp(x + t @ weight.T + bias)
        assert torch.allclose(composer(features(x), text_input(t, d=6)), expected, atol=1e-6)


def test_relationship_equals_g_on_every_concatenated_pair():
    composer = build("relationship", embed_dim=4, image_channels=3, hidden_dim=8)
    x, t = torch.randn(2, 3, 2, 3), torch.randn(2, 4)
    with torch.no_grad():
        got = composer(features(last_map=x), text_input(t))
        objects = composer.objects(x)  # (B, 6, 5)
        assert torch.allclose(objects[0, 4, 3:], torch.tensor([0.0, 1.0]))  # cell (row 1, col 1): x = 0, y = 1
        expected = []
        for b in range(2):
            total = sum(composer.g(composer.g_in(torch.cat([objects[b, i], objects[b, j], t[b]])))
                        for i in range(6) for j in range(6))
            expected.append(composer.f(total))
        assert torch.allclose(got, torch.stack(expected), atol=1e-5)


# --- composers that read token ids --------------------------------------------------------------------

def test_show_and_tell_depends_on_word_order_and_ignores_padding():
    composer = build("show_and_tell", embed_dim=4, image_channels=8, vocab_size=5, hidden_dim=6)
    x = torch.randn(1, 4).expand(2, -1)
    with torch.no_grad():
        forward_, backward_ = composer(features(x), text_input(tokens=[[1, 2, 3], [3, 2, 1]]))
        assert not torch.allclose(forward_, backward_)
        padded = composer(features(x[:1]), text_input(tokens=[[1, 2, 0, 0]], lengths=[2]))
        plain = composer(features(x[:1]), text_input(tokens=[[1, 2]]))
        assert torch.allclose(padded, plain, atol=1e-6)


def test_show_and_tell_reads_the_image_as_the_first_step():
    composer = build("show_and_tell", embed_dim=4, image_channels=8, vocab_size=5, hidden_dim=6)
    x, tokens = torch.randn(1, 4), torch.tensor([[2, 4]])
    with torch.no_grad():
        inputs = torch.cat([x[:, None], composer.embedding(tokens)], dim=1)  # (1, 3, 4)
        states, _ = composer.lstm(inputs)
        expected = composer.fc(states[:, -1])
        assert torch.allclose(composer(features(x), text_input(tokens=tokens.tolist())), expected, atol=1e-6)


def test_attribute_operator_with_identity_matrices_returns_the_image():
    composer = build("attribute_operator", embed_dim=4, image_channels=8, vocab_size=3)
    assert torch.allclose(composer.operators, torch.eye(4).expand(3, -1, -1), atol=0.1)  # identity + small noise
    x = torch.randn(2, 4)
    with torch.no_grad():
        composer.operators.copy_(torch.eye(4).expand(3, -1, -1))
        assert torch.equal(composer(features(x), text_input(tokens=[[1], [2]])), x)
        composer.operators[2].mul_(3.0)  # word 2's operator becomes 3 I; word 1's stays I
        assert torch.allclose(composer(features(x), text_input(tokens=[[1], [2]])), x * torch.tensor([[1.0], [3.0]]))


def test_attribute_operator_refuses_multi_word_texts():
    composer = build("attribute_operator", embed_dim=4, image_channels=8, vocab_size=3)
    assert composer.requires == frozenset({"single_word_text"})
    with pytest.raises(ValueError, match=r"single-word texts.*lengths \[1, 2\]"):
        composer(features(torch.randn(2, 4)), text_input(tokens=[[1, 0], [1, 2]], lengths=[1, 2]))
    # Padded wider than needed but every text one word: accepted.
    out = composer(features(torch.randn(2, 4)), text_input(tokens=[[1, 0], [2, 0]], lengths=[1, 1]))
    assert out.shape == (2, 4)
