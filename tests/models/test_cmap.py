"""CMAP-style self-contrastive preservation (methods reference A.6): values by hand on 2-item batches with
a fixed attention, the hinge form, gradient flow, and the temperature rule."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import EMBED_DIM, make_batch, make_model, reached

from models.batch import Outputs
from models.encoders import ImageFeatures
from models.objective import Objective, ObjectiveConfig
from models.regularizers import regularizer_configs
from models.regularizers.cmap import CmapRegularizer, reverse_attention, self_contrastive_loss

# D = 2 and a fixed attention A = (0.75, 0.25) for every query, so Rev(A) = 2 * 0.5 - A = (0.25, 0.75).
TEXT = [(1.0, 0.0), (0.0, 1.0)]  # phi_t
TARGET = [(1.0, 1.0), (1.0, 3.0)]  # phi+
REFERENCE = [(1.0, 1.0), (1.0, -1.0)]  # phi_x
A, REV = (0.75, 0.25), (0.25, 0.75)


def cos(u, v) -> float:
    return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))


def times(a, v):
    return tuple(x * y for x, y in zip(a, v))


def unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return tuple(x / n for x in v)


P = [cos(t, times(A, x)) for t, x in zip(TEXT, TARGET)]  # p_1 = 3 / sqrt(10), p_2 = 1 / sqrt(2)
R = [cos(t, times(REV, x)) for t, x in zip(TEXT, TARGET)]  # r_1 = 1 / sqrt(10), r_2 = 2.25 / sqrt(5.125)


def sc_by_hand(tau: float) -> float:
    return sum(-math.log(math.exp(r / tau) / (math.exp(r / tau) + math.exp(p / tau))) for p, r in zip(P, R)) / 2


def pres_by_hand(tau: float) -> float:
    u = [unit(times(A, x)) for x in REFERENCE]
    v = [unit(times(A, x)) for x in TARGET]
    total = 0.0
    for i in range(2):
        logits = [sum(a * b for a, b in zip(u[i], v[j])) / tau for j in range(2)]
        total += -math.log(math.exp(logits[i]) / sum(math.exp(z) for z in logits))
    return total / 2


def fixed_attention_cmap(**config) -> CmapRegularizer:
    cmap = CmapRegularizer(CmapRegularizer.Config(**config), embed_dim=2, mid_channels=2)
    with torch.no_grad():  # zero weights: A = softmax(last bias) = (0.75, 0.25) whatever the text
        for layer in cmap.attention:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
                layer.bias.zero_()
        cmap.attention[-1].bias.copy_(torch.tensor([math.log(3.0), 0.0]))
    return cmap


def outputs_2x2() -> Outputs:
    reference, target = torch.tensor(REFERENCE), torch.tensor(TARGET)
    maps = torch.zeros(2, 1, 1, 1)
    return Outputs(query=target, target=target,
                   reference_features=ImageFeatures(vector=reference, last_map=maps, mid_map=maps),
                   target_features=ImageFeatures(vector=target, last_map=maps, mid_map=maps),
                   text=torch.tensor(TEXT), reference_images=torch.zeros(2, 3, 1, 1))


def test_reverse_attention_by_hand():
    assert reverse_attention(torch.tensor([[0.75, 0.25], [0.5, 0.5]])).tolist() == [[0.25, 0.75], [0.5, 0.5]]
    assert P[0] == pytest.approx(3 / math.sqrt(10)) and R[0] == pytest.approx(1 / math.sqrt(10))


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_softmax_mode_by_hand(tau):
    cmap = fixed_attention_cmap(cmap_weight=0.5, sc_temperature=tau)
    terms = cmap(outputs_2x2(), torch.zeros(2), model=None, batch=None, rematch=None)
    assert float(terms.logs["cmap/sc"]) == pytest.approx(sc_by_hand(tau), rel=1e-5)
    assert float(terms.logs["cmap/pres"]) == pytest.approx(pres_by_hand(tau), rel=1e-5)
    assert terms.losses["loss/cmap"].item() == pytest.approx(0.5 * (sc_by_hand(tau) + pres_by_hand(tau)), rel=1e-5)
    assert float(terms.logs["cmap/p_minus_r"]) == pytest.approx((P[0] - R[0] + P[1] - R[1]) / 2, rel=1e-5)
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert float(terms.logs["cmap/attention_entropy"]) == pytest.approx(entropy, rel=1e-5)


def test_hinge_mode_by_hand():
    # CMAP's margin form: mean_i max(0, 0.6 + p_i - r_i); no temperature in the self-contrastive part.
    expected = sum(max(0.0, 0.6 + p - r) for p, r in zip(P, R)) / 2
    assert min(P[0] - R[0], P[1] - R[1]) > -0.6  # both hinges active here; an inactive one at the end
    cmap = fixed_attention_cmap(cmap_weight=1.0, sc_temperature=0.2, sc_mode="hinge")
    terms = cmap(outputs_2x2(), torch.zeros(2), model=None, batch=None, rematch=None)
    assert float(terms.logs["cmap/sc"]) == pytest.approx(expected, rel=1e-5)
    assert terms.losses["loss/cmap"].item() == pytest.approx(expected + pres_by_hand(0.2), rel=1e-5)
    assert self_contrastive_loss(torch.tensor([0.0]), torch.tensor([1.0]), tau=1.0, mode="hinge").item() == 0.0


def test_self_contrastive_loss_is_stable_at_small_temperature():
    value = self_contrastive_loss(torch.tensor([1.0]), torch.tensor([-1.0]), tau=1e-3)
    assert value.item() == pytest.approx(2000.0)  # -log(e^(-1000) / (e^(-1000) + e^(1000))) without overflow


def test_cmap_reaches_its_attention_mlp_the_text_and_the_image_encoders(vocab):
    model = make_model(vocab)
    objective = Objective(ObjectiveConfig(k=2, regularizers=regularizer_configs({"cmap_weight": 1.0})),
                          embed_dim=EMBED_DIM, mid_channels=model.image_encoder.mid_channels)
    result = objective(model, make_batch(vocab))
    assert {"loss/cmap", "cmap/sc", "cmap/pres", "cmap/attention_entropy", "cmap/p_minus_r"} <= result.logs.keys()
    (result.loss - result.terms["loss/match"]).backward()
    cmap = objective.regularizers["cmap"]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cmap.attention.parameters())
    assert reached(model.text_encoder) and reached(model.image_encoder)
    assert model.text_encoder.embedding.weight.grad.abs().sum() > 0


def test_temperature_must_be_positive_only_when_enabled():
    with pytest.raises(ValueError, match="sc_temperature must be > 0 when cmap_weight > 0.*0.0"):
        CmapRegularizer.Config(cmap_weight=0.1, sc_temperature=0.0)
    assert not CmapRegularizer.Config(cmap_weight=0.0, sc_temperature=0.0).enabled
