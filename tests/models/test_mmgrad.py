"""MMGrad (methods reference A.7): region maps, the Grad-CAM map and L_att by hand (including the gradient
through the double backward), gradient flow into the model, and batches without regions."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from conftest import EMBED_DIM, make_batch, make_model, reached

from models.batch import Outputs
from models.encoders import ImageFeatures
from models.objective import Objective, ObjectiveConfig
from models.regularizers.mmgrad import MmgradRegularizer, gradient_attention, pointing_game, region_masks

# One 2-channel 2x2 map. With alpha = (1, 0.5): cam = relu(1 * C0 + 0.5 * C1) = relu([[2, -2], [0, 1]])
# = [[2, 0], [0, 1]], so M = [[2/3, 0], [0, 1/3]].
C0 = [[2.0, 0.0], [0.0, 0.0]]
C1 = [[0.0, -4.0], [0.0, 2.0]]
TOP_LEFT = [0.0, 0.0, 0.5, 0.5]  # (top, left, bottom, right): covers exactly cell (0, 0) of a 2x2 map


def test_region_masks_by_covered_area():
    masks = region_masks(torch.tensor([TOP_LEFT, [0.0, 0.3, 1.0, 0.8], [0.6, 0.6, 0.7, 0.7]]), 2, 4)
    assert masks[0].tolist() == [[1, 1, 0, 0], [0, 0, 0, 0]]  # rows [0, .5] | [.5, 1]; columns of width .25
    # columns [0, .25] [.25, .5] [.5, .75] [.75, 1] against 0.3 .. 0.8: 0, .2/.25, 1, .05/.25
    assert masks[1].flatten().tolist() == pytest.approx([0, 0.8, 1, 0.2] * 2)
    # a small box inside cell (1, 2): rows .1/.5 of row 1, columns .1/.25 of column 2
    assert masks[2].flatten().tolist() == pytest.approx([0, 0, 0, 0, 0, 0, 0.2 * 0.4, 0])
    with pytest.raises(ValueError, match=r"\(B, 4\).*\(2, 3\)"):
        region_masks(torch.zeros(2, 3), 2, 2)


def test_every_css_region_reaches_a_2x2_map():
    # CSS's 3x3 regions on a 2x2 map: each third of [0, 1] covers cells [0, .5] and [.5, 1] by
    # (2/3, 0), (1/3, 1/3) and (0, 2/3); a region's mask is the product of its row and column shares.
    shares = [[2 / 3, 0.0], [1 / 3, 1 / 3], [0.0, 2 / 3]]
    boxes = [[r / 3, c / 3, (r + 1) / 3, (c + 1) / 3] for r in range(3) for c in range(3)]
    masks = region_masks(torch.tensor(boxes), 2, 2)
    for k, mask in enumerate(masks):
        r, c = divmod(k, 3)
        want = [shares[r][i] * shares[c][j] for i in range(2) for j in range(2)]
        assert mask.flatten().tolist() == pytest.approx(want, abs=1e-6)
        assert mask.sum() > 0 and mask.sum().item() == pytest.approx(4 / 9, abs=1e-6)  # a ninth of 4 cells
    assert masks[4].flatten().tolist() == pytest.approx([1 / 9] * 4)  # the centre touches all four


def test_gradient_attention_and_pointing_game_by_hand():
    feature_map = torch.tensor([[C0, C1]])  # (1, 2, 2, 2)
    gradient = torch.tensor([[[[1.0, 3.0], [0.0, 0.0]], [[0.5, 1.5], [0.0, 0.0]]]])
    # alpha_c = mean_jk gradient[c]: (1 + 3) / 4 = 1 and (0.5 + 1.5) / 4 = 0.5
    attention = gradient_attention(feature_map, gradient)
    assert attention.flatten().tolist() == pytest.approx([2 / 3, 0.0, 0.0, 1 / 3])
    masks = region_masks(torch.tensor([TOP_LEFT]), 2, 2)
    assert pointing_game(attention, masks).tolist() == [True]
    assert pointing_game(attention, 1 - masks).tolist() == [False]
    zero = gradient_attention(feature_map, torch.zeros_like(feature_map))  # no evidence: zero map, no NaN
    assert torch.equal(zero, torch.zeros(1, 2, 2)) and pointing_game(zero, masks).tolist() == [False]


def test_mmgrad_loss_and_its_second_order_gradient_by_hand():
    # psi_i = sum_c w_c mean_jk A_i[c], phi+ = 1, NL = identity: s_i = psi_i, so alpha_c = w_c / 4 and
    # with w = (4, 2) the map is M above. sum M G = M[0, 0] = w0 / (w0 + w1) = 2/3, so
    # L = lam * (1 - w0 / (w0 + w1)),  dL/dw0 = -lam * w1 / 36 = -lam / 18,  dL/dw1 = lam * w0 / 36 = lam / 9.
    w = torch.tensor([4.0, 2.0], requires_grad=True)
    feature_map = torch.tensor([[C0, C1]], requires_grad=True)  # (1, 2, 2, 2)
    query = (feature_map.mean(dim=(2, 3)) * w).sum(dim=1, keepdim=True)  # (1, 1)
    features = ImageFeatures(vector=query, last_map=feature_map, mid_map=feature_map)
    outputs = Outputs(query=query, target=torch.ones(1, 1), reference_features=features, target_features=features,
                      text=query, reference_images=torch.zeros(1, 3, 2, 2))
    batch = SimpleNamespace(regions=torch.tensor([TOP_LEFT]))
    lam = 0.3
    mmgrad = MmgradRegularizer(MmgradRegularizer.Config(mmgrad_weight=lam), embed_dim=1, mid_channels=2)
    terms = mmgrad(outputs, torch.zeros(1), model=SimpleNamespace(norm=lambda f: f), batch=batch, rematch=None)
    assert terms.losses["loss/mmgrad"].item() == pytest.approx(lam / 3, rel=1e-6)
    assert float(terms.logs["mmgrad/attention_in_region"]) == pytest.approx(2 / 3, rel=1e-6)
    assert float(terms.logs["mmgrad/pointing_game"]) == 1.0
    terms.losses["loss/mmgrad"].backward()
    assert w.grad.tolist() == pytest.approx([-lam / 18, lam / 9], rel=1e-5)


def objective_and_model(vocab, composer: str = "tirg"):
    model = make_model(vocab, composer=composer)
    objective = Objective(ObjectiveConfig(k=2, regularizers=(MmgradRegularizer.Config(mmgrad_weight=1.0),)),
                          embed_dim=EMBED_DIM, mid_channels=model.image_encoder.mid_channels)
    return model, objective


def test_mmgrad_trains_the_image_encoder_and_the_composer_through_the_double_backward(vocab):
    model, objective = objective_and_model(vocab)
    batch = replace(make_batch(vocab), regions=torch.tensor([TOP_LEFT, [0.5, 0.5, 1.0, 1.0]] * 2))
    result = objective(model, batch)
    assert {"loss/mmgrad", "mmgrad/pointing_game", "mmgrad/attention_in_region"} <= result.logs.keys()
    assert 0.0 <= result.logs["mmgrad/attention_in_region"] <= 1.0
    result.terms["loss/mmgrad"].backward()
    # The composer enters L_att only through alpha = d s / d A, i.e. through the create_graph backward.
    assert reached(model.composer) and reached(model.image_encoder)
    assert model.image_encoder.stage1[0].weight.grad.abs().sum() > 0


def test_a_batch_without_regions_is_a_clear_error(vocab):
    model, objective = objective_and_model(vocab)
    with pytest.raises(ValueError, match="mmgrad needs Batch.regions.*mmgrad_weight = 0"):
        objective(model, make_batch(vocab))
