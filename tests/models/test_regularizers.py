"""Every registered regulariser (parametrised over REGULARIZERS), requirements, then DIM's maths by hand.
GA, CMAP and MMGrad have their own files (test_ga.py, test_cmap.py, test_mmgrad.py)."""
from __future__ import annotations

import itertools
import math
import typing
from dataclasses import fields, replace

import pytest
import torch
from conftest import EMBED_DIM, grads_of, make_batch, make_model, reached

from models.batch import Outputs
from models.encoders import ImageFeatures
from models.objective import Objective, ObjectiveConfig
from models.regularizers import (REGULARIZERS, REQUIREMENTS, Regularizer, regularizer_configs,
                                 regularizer_param_names, requirements)
from models.regularizers.cmap import CmapRegularizer
from models.regularizers.dim import DimRegularizer, infonce_mi, jsd_mi
from models.regularizers.ga import GaRegularizer
from models.regularizers.mmgrad import MmgradRegularizer

REGIONS = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 1.0, 0.5], [0.25, 0.25, 0.75, 0.75]])


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
    batch = replace(make_batch(vocab), regions=REGIONS)  # (top, left, bottom, right): MMGrad reads them
    result = objective(model, batch, generator=torch.Generator().manual_seed(seed))
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
                                         "dim_weight": "dim", "dim_estimator": "dim", "dim_terms": "dim",
                                         "cmap_weight": "cmap", "sc_temperature": "cmap", "sc_mode": "cmap",
                                         "mmgrad_weight": "mmgrad"}
    configs = regularizer_configs({"ga_strength": 1, "lr": 0.1, "composer": "tirg"})
    assert configs == (GaRegularizer.Config(ga_strength=1.0),)
    assert isinstance(configs[0].ga_strength, float)
    assert regularizer_configs({"dim_estimator": "infonce", "dim_weight": 0.5, "ga_noise": 0.0}) == (
        DimRegularizer.Config(dim_weight=0.5, dim_estimator="infonce"), GaRegularizer.Config())
    assert regularizer_configs({}) == ()


@pytest.mark.parametrize("params,field", [
    ({"ga_strength": "big"}, "ga_strength"), ({"ga_noise": -1e-3}, "ga_noise"), ({"ga_mode": "pgd"}, "ga_mode"),
    ({"dim_weight": True}, "dim_weight"), ({"dim_estimator": "dv"}, "dim_estimator"), ({"dim_terms": "local"}, "dim_terms"),
    ({"dim_weight": float("nan")}, "dim_weight"), ({"sc_mode": "margin"}, "sc_mode"),
    ({"cmap_weight": 0.1, "sc_temperature": 0.0}, "sc_temperature"), ({"mmgrad_weight": -1}, "mmgrad_weight"),
])
def test_regularizer_configs_reject_bad_values_naming_field_and_value(params, field):
    with pytest.raises(ValueError, match=field) as error:
        regularizer_configs(params)
    assert repr(params[field]) in str(error.value)


def test_every_regularizer_declares_known_requirements():
    for name in REGULARIZERS.names():
        cls = REGULARIZERS.get(name)
        assert issubclass(cls, Regularizer) and isinstance(cls.requires, frozenset)
        assert cls.requires <= REQUIREMENTS, name
    with pytest.raises(ValueError, match="unknown requirement.*'region'"):
        type("Typo", (Regularizer,), {"requires": frozenset({"region"})})


def test_requirements_of_the_enabled_regularizers():
    configs = regularizer_configs({"ga_strength": 0.01, "dim_weight": 0.1, "cmap_weight": 0.1, "mmgrad_weight": 0.1})
    assert requirements(configs) == {"ga": frozenset({"image_in_query"}), "dim": frozenset(), "cmap": frozenset(),
                                     "mmgrad": frozenset({"regions", "image_in_query"})}
    # GA's isotropic noise alone needs nothing of the composer; disabled configs are left out.
    assert requirements(regularizer_configs({"ga_noise": 1e-3, "mmgrad_weight": 0.0})) == {"ga": frozenset()}
    assert requirements(()) == {}
    assert MmgradRegularizer.requires == {"regions", "image_in_query"} and CmapRegularizer.requires == frozenset()
    assert GaRegularizer.requires == {"image_in_query"} and DimRegularizer.requires == frozenset()


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
    assert float(terms.logs["dim/mi_global"]) == pytest.approx(value, rel=1e-6)
    assert float(terms.logs["dim/mi_local"]) == pytest.approx(value, rel=1e-6)
    assert terms.losses["loss/dim"].item() == pytest.approx(-0.5 * 2 * value, rel=1e-6)
    assert float(terms.logs["dim/critic_accuracy"]) == 1.0  # both rows rank their positive first
    # the global term alone: half the loss, and the target's map is never read (cached features have none)
    dim = DimRegularizer(DimRegularizer.Config(dim_weight=0.5, dim_estimator=estimator, dim_terms="global"),
                         embed_dim=2, mid_channels=2)
    with torch.no_grad():
        dim.global_critic.copy_(torch.eye(2))
    assert [name for name, _ in dim.named_parameters()] == ["global_critic"]
    bare = ImageFeatures(vector=eye, last_map=torch.zeros(2, 1, 1, 1), mid_map=torch.full((2, 2, 1, 1), float("nan")))
    terms = dim(Outputs(query=eye, target=eye, reference_features=reference, target_features=bare, text=SCORES,
                        reference_images=torch.zeros(2, 3, 1, 1)), torch.zeros(2), model=None, batch=None, rematch=None)
    assert terms.losses["loss/dim"].item() == pytest.approx(-0.5 * value, rel=1e-6) and "dim/mi_local" not in terms.logs


def test_dim_reaches_its_critics_and_both_encoders(vocab):
    model, objective, result = run(vocab, [DimRegularizer.Config(dim_weight=1.0)])
    assert {"dim/mi_global", "dim/mi_local", "dim/critic_accuracy", "loss/dim"} <= result.logs.keys()
    (result.loss - result.terms["loss/match"]).backward()
    assert reached(model.image_encoder) and reached(model.text_encoder) and reached(model.composer)
    dim = objective.regularizers["dim"]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in dim.parameters())
    assert model.image_encoder.stage1[0].weight.grad.abs().sum() > 0
