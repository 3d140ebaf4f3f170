"""Every registered regulariser (parametrised over REGULARIZERS), then GA's and DIM's maths by hand."""
from __future__ import annotations

import itertools
import math
import typing
from dataclasses import fields

import pytest
import torch
from conftest import EMBED_DIM, grads_of, make_batch, make_model, reached

from models.batch import Outputs
from models.encoders import ImageFeatures
from models.objective import Objective, ObjectiveConfig
from models.regularizers import REGULARIZERS, regularizer_configs, regularizer_param_names
from models.regularizers.dim import DimRegularizer, infonce_mi, jsd_mi
from models.regularizers.ga import GaRegularizer, noise_generator, noise_sigma


def enabled_configs(name: str) -> list:
    """Every float field at 0.1 (weights / strengths on), crossed with every choice of every Literal field."""
    config_cls = REGULARIZERS.get(name).Config
    hints = typing.get_type_hints(config_cls)
    choices = {f.name: typing.get_args(hints[f.name]) for f in fields(config_cls)
               if typing.get_origin(hints[f.name]) is typing.Literal}
    floats = {f.name: 0.1 for f in fields(config_cls) if hints[f.name] is float}
    return [config_cls(**floats, **dict(zip(choices, combo))) for combo in itertools.product(*choices.values())]


ENABLED = [(name, config) for name in REGULARIZERS.names() for config in enabled_configs(name)]


def run(vocab, configs=(), k: int = 2, seed: int = 0):
    model = make_model(vocab, seed=seed)
    objective = Objective(ObjectiveConfig(k=k, regularizers=tuple(configs)), embed_dim=EMBED_DIM,
                          mid_channels=model.image_encoder.mid_channels)
    torch.manual_seed(seed)  # dropout
    result = objective(model, make_batch(vocab), generator=torch.Generator().manual_seed(seed))
    return model, objective, result


@pytest.mark.parametrize("name,config", ENABLED, ids=[f"{n}-{c}" for n, c in ENABLED])
def test_regularizer_terms_are_finite_and_reach_the_parameters(name, config, vocab):
    model, objective, result = run(vocab, [config])
    regularizer = objective.regularizers[name]
    assert {f.name for f in fields(regularizer.config)} <= set(regularizer_param_names())
    terms = {key: v for key, v in result.logs.items() if key.startswith("loss/") and key not in
             ("loss/match", "loss/total")}
    assert terms, f"{name} logged no loss term"
    assert all(math.isfinite(v) for v in result.logs.values())
    # Back-propagate the regulariser's part alone: it must reach the model and all the regulariser's own parameters.
    (result.loss - result.terms["loss/match"]).backward()
    assert reached(model.image_encoder), f"{name}: no gradient reaches the image encoder"
    for pname, p in regularizer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient reaches {pname}"


@pytest.mark.parametrize("name", REGULARIZERS.names())
def test_weight_zero_gives_exactly_the_unregularized_loss_and_gradients(name, vocab):
    plain_model, _, plain = run(vocab)
    plain.loss.backward()
    for config in [REGULARIZERS.get(name).Config()] + [
            type(c)(**{f.name: (0.0 if isinstance(getattr(c, f.name), float) else getattr(c, f.name))
                       for f in fields(c)}) for c in enabled_configs(name)]:
        assert not config.enabled
        model, objective, result = run(vocab, [config])
        assert len(objective.regularizers) == 0 and not list(objective.parameters())
        result.loss.backward()
        assert torch.equal(result.loss, plain.loss)
        for (pname, a), b in zip(grads_of(plain_model).items(), grads_of(model).values()):
            assert (a is None and b is None) or torch.equal(a, b), pname


def test_regularizer_param_names_and_configs():
    assert regularizer_param_names() == {"ga_strength": "ga", "ga_noise": "ga", "ga_mode": "ga",
                                         "dim_weight": "dim", "dim_estimator": "dim"}
    configs = regularizer_configs({"ga_strength": 1, "lr": 0.1, "composer": "tirg"})
    assert configs == (GaRegularizer.Config(ga_strength=1.0),)
    assert isinstance(configs[0].ga_strength, float)
    assert regularizer_configs({"dim_estimator": "infonce", "dim_weight": 0.5, "ga_noise": 0.0}) == (
        DimRegularizer.Config(dim_weight=0.5, dim_estimator="infonce"), GaRegularizer.Config())
    assert regularizer_configs({}) == ()


@pytest.mark.parametrize("params,field", [
    ({"ga_strength": "big"}, "ga_strength"), ({"ga_noise": -1e-3}, "ga_noise"), ({"ga_mode": "pgd"}, "ga_mode"),
    ({"dim_weight": True}, "dim_weight"), ({"dim_estimator": "dv"}, "dim_estimator"),
    ({"dim_weight": float("nan")}, "dim_weight"),
])
def test_regularizer_configs_reject_bad_values_naming_field_and_value(params, field):
    with pytest.raises(ValueError, match=field) as error:
        regularizer_configs(params)
    assert repr(params[field]) in str(error.value)


# --- GA ------------------------------------------------------------------------------------------------

def test_ga_penalty_on_a_linear_model_by_hand():
    # query_i = W x_i, l_i = <c, query_i>  =>  d l_i / d x_i = W^T c = (1 + 6, -2 + 2, 0 - 2) = (7, 0, -2).
    w = torch.tensor([[1.0, -2.0, 0.0], [3.0, 1.0, -1.0]], requires_grad=True)
    c = torch.tensor([1.0, 2.0])
    x = torch.randn(2, 3, 1, 1, requires_grad=True)
    query = x.flatten(1) @ w.T  # (2, 2)
    dummy = ImageFeatures(vector=query, last_map=x, mid_map=x)
    outputs = Outputs(query=query, target=query, reference_features=dummy, target_features=dummy,
                      text=query, reference_images=x)
    ga = GaRegularizer(GaRegularizer.Config(ga_strength=0.1), embed_dim=2, mid_channels=3)
    terms = ga(outputs, query @ c, model=None, batch=None, rematch=None)
    assert terms.losses["loss/ga_adv"].item() == pytest.approx(0.1 * (7 + 0 + 2))
    assert terms.logs["ga/input_grad_l1"] == pytest.approx(9.0)
    # create_graph: L_adv = eps * sum_p |(W^T c)_p| is differentiable in W: eps * c_a * sign((W^T c)_p).
    terms.losses["loss/ga_adv"].backward()
    assert w.grad.flatten().tolist() == pytest.approx([0.1, 0.0, -0.1, 0.2, 0.0, -0.2])


def test_ga_penalty_reaches_the_image_encoder_through_the_input_gradient(vocab):
    model, objective, result = run(vocab, [GaRegularizer.Config(ga_strength=0.01)])
    assert objective.needs_input_grad and "loss/ga_adv" in result.logs
    adversarial = result.loss - result.terms["loss/match"]
    adversarial.backward()
    assert reached(model.image_encoder) and reached(model.composer)


def test_ga_fgsm_averages_clean_and_perturbed_losses(vocab):
    _, _, result = run(vocab, [GaRegularizer.Config(ga_strength=0.05, ga_mode="fgsm")], k=4)
    logs = result.logs
    assert logs["loss/total"] == pytest.approx(0.5 * (logs["loss/match"] + logs["ga/adversarial_match"]), rel=1e-5)


def test_ga_caller_reference_tensor_is_left_alone(vocab):
    model = make_model(vocab)
    objective = Objective(ObjectiveConfig(regularizers=(GaRegularizer.Config(ga_strength=0.1),)),
                          embed_dim=EMBED_DIM, mid_channels=model.image_encoder.mid_channels)
    batch = make_batch(vocab)
    objective(model, batch).loss.backward()
    assert not batch.reference.requires_grad and batch.reference.grad is None


def test_noise_sigma_schedule_by_hand():
    assert noise_sigma(0.01, 0) == pytest.approx(0.01)
    assert noise_sigma(0.01, 3) == pytest.approx(0.01 / 4 ** 0.55)
    assert noise_sigma(0.01, 3) == pytest.approx(0.01 * 0.4665165, rel=1e-6)  # 4^-0.55 = 2^-1.1


def _params_with_grads() -> list[torch.nn.Parameter]:
    params = [torch.nn.Parameter(torch.ones(3, 2)), torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(2))]
    params[0].grad, params[1].grad = torch.full((3, 2), 0.5), torch.zeros(4)  # params[2] unused: grad None
    return params


def test_isotropic_noise_is_identical_for_the_same_seed_and_step():
    ga = GaRegularizer(GaRegularizer.Config(ga_noise=0.2), embed_dim=2, mid_channels=2)
    a, b, c = _params_with_grads(), _params_with_grads(), _params_with_grads()
    logs = ga.after_gradient_sync(a, step=3, seed=7)
    ga.after_gradient_sync(b, step=3, seed=7)  # another replica
    ga.after_gradient_sync(c, step=4, seed=7)
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(a[:2], b[:2]))
    assert not torch.equal(a[0].grad, c[0].grad)
    assert a[2].grad is None  # an unused parameter stays unused
    sigma = noise_sigma(0.2, 3)
    generator = noise_generator(7, 3)
    expected = [torch.randn(3, 2, generator=generator), torch.randn(4, generator=generator)]
    assert torch.allclose(a[0].grad, 0.5 + sigma * expected[0]) and torch.allclose(a[1].grad, sigma * expected[1])
    norm = sigma * math.sqrt(sum(float(e.pow(2).sum()) for e in expected))
    assert logs["ga/noise_norm"] == pytest.approx(norm, rel=1e-5)


def test_objective_applies_ga_noise_only_when_enabled(vocab):
    model, objective, result = run(vocab, [GaRegularizer.Config(ga_noise=1e-3)])
    assert not objective.needs_input_grad and "loss/ga_adv" not in result.logs
    result.loss.backward()
    before = grads_of(model)
    logs = objective.after_gradient_sync(model.parameters(), step=0, seed=1)
    assert logs["ga/noise_norm"] > 0
    assert any(not torch.equal(before[n], p.grad) for n, p in model.named_parameters() if p.grad is not None)
    _, plain, _ = run(vocab)
    assert plain.after_gradient_sync(model.parameters(), step=0, seed=1) == {}


# --- DIM -----------------------------------------------------------------------------------------------

SCORES = torch.tensor([[2.0, 0.0], [-1.0, 1.0]])  # T[i, j]: positives 2 and 1, negatives 0 and -1
SP = lambda z: math.log(1 + math.exp(z))  # noqa: E731
JSD = (-SP(-2) - SP(-1)) / 2 - (SP(0) + SP(-1)) / 2
INFONCE = ((2 - math.log(math.exp(2) + 1)) + (1 - math.log(math.exp(-1) + math.exp(1)))) / 2


def test_estimators_on_a_2x2_case_by_hand():
    assert jsd_mi(SCORES).item() == pytest.approx(JSD, rel=1e-6)
    assert JSD == pytest.approx(-0.7232994, rel=1e-6)
    assert infonce_mi(SCORES).item() == pytest.approx(INFONCE, rel=1e-6)
    assert jsd_mi(SCORES.expand(3, 2, 2)).item() == pytest.approx(JSD, rel=1e-6)  # mean over cells


@pytest.mark.parametrize("estimator,value", [("jsd", JSD), ("infonce", INFONCE)])
def test_dim_regularizer_by_hand(estimator, value):
    dim = DimRegularizer(DimRegularizer.Config(dim_weight=0.5, dim_estimator=estimator), embed_dim=2, mid_channels=2)
    with torch.no_grad():  # identity critics and projection: scores are plain dot products
        dim.global_critic.copy_(torch.eye(2))
        dim.local_critic.copy_(torch.eye(2))
        dim.local_projection.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        dim.local_projection.bias.zero_()
    eye = torch.eye(2)
    # global: text @ image^T = SCORES; local: one cell per target image equal to SCORES' rows, psi = I.
    reference = ImageFeatures(vector=eye, last_map=torch.zeros(2, 1, 1, 1), mid_map=torch.zeros(2, 2, 1, 1))
    target = ImageFeatures(vector=eye, last_map=torch.zeros(2, 1, 1, 1), mid_map=SCORES.view(2, 2, 1, 1))
    outputs = Outputs(query=eye, target=eye, reference_features=reference, target_features=target,
                      text=SCORES, reference_images=torch.zeros(2, 3, 1, 1))
    terms = dim(outputs, torch.zeros(2), model=None, batch=None, rematch=None)
    assert terms.logs["dim/mi_global"] == pytest.approx(value, rel=1e-6)
    assert terms.logs["dim/mi_local"] == pytest.approx(value, rel=1e-6)
    assert terms.losses["loss/dim"].item() == pytest.approx(-0.5 * 2 * value, rel=1e-6)
    assert terms.logs["dim/critic_accuracy"] == 1.0  # both rows rank their positive first


def test_dim_reaches_its_critics_and_both_encoders(vocab):
    model, objective, result = run(vocab, [DimRegularizer.Config(dim_weight=1.0)])
    assert {"dim/mi_global", "dim/mi_local", "dim/critic_accuracy", "loss/dim"} <= result.logs.keys()
    (result.loss - result.terms["loss/match"]).backward()
    assert reached(model.image_encoder) and reached(model.text_encoder) and reached(model.composer)
    dim = objective.regularizers["dim"]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in dim.parameters())
    assert model.image_encoder.stage1[0].weight.grad.abs().sum() > 0
