from __future__ import annotations

import pytest
import torch
from conftest import EMBED_DIM, make_batch, make_model

from models.objective import Objective, ObjectiveConfig
from models.regularizers import regularizer_configs
from models.regularizers.dim import DimRegularizer
from models.regularizers.ga import GaRegularizer


def test_objective_config_rules():
    with pytest.raises(ValueError, match="k >= 2.*k=1"):
        ObjectiveConfig(k=1)
    with pytest.raises(ValueError, match="configured twice"):
        ObjectiveConfig(regularizers=(GaRegularizer.Config(), GaRegularizer.Config(ga_noise=1.0)))
    with pytest.raises(ValueError, match="RegularizerConfig"):
        ObjectiveConfig(regularizers=({"ga_strength": 1.0},))
    with pytest.raises(ValueError, match="k <= batch size.*k=8 with batch size 4"):
        ObjectiveConfig(k=8).check_batch_size(4)
    ObjectiveConfig(k=4).check_batch_size(4)


def test_objective_logs_every_named_term_and_sums_them(vocab):
    model = make_model(vocab)
    config = ObjectiveConfig(k=3, regularizers=regularizer_configs(
        {"ga_strength": 1e-3, "ga_noise": 1e-4, "dim_weight": 0.1, "lr": 0.01}))
    objective = Objective(config, embed_dim=EMBED_DIM, mid_channels=model.image_encoder.mid_channels)
    assert sorted(objective.regularizers) == ["dim", "ga"] and len(list(objective.parameters())) == 4  # 2 critics, 1x1 conv
    result = objective(model, make_batch(vocab), generator=torch.Generator().manual_seed(0))
    logs = result.logs
    expected = {"loss/match", "loss/ga_adv", "loss/dim", "loss/total", "model/scale", "ga/input_grad_l1",
                "dim/mi_global", "dim/mi_local", "dim/critic_accuracy"}
    assert expected <= logs.keys()
    assert logs["loss/total"] == pytest.approx(logs["loss/match"] + logs["loss/ga_adv"] + logs["loss/dim"], rel=1e-5)
    assert logs["model/scale"] == 4.0
    assert result.loss.item() == pytest.approx(logs["loss/total"])
    result.loss.backward()
    noise_logs = objective.after_gradient_sync(list(model.parameters()) + list(objective.parameters()), step=2, seed=0)
    assert noise_logs["ga/noise_norm"] > 0


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(vocab):
    # The training loop's contract: backward, gradient sync, after_gradient_sync, step; objective params trained too.
    model = make_model(vocab)
    config = ObjectiveConfig(k=4, regularizers=(GaRegularizer.Config(ga_strength=1e-4, ga_noise=1e-5),
                                                DimRegularizer.Config(dim_weight=0.01)))
    objective = Objective(config, embed_dim=EMBED_DIM, mid_channels=model.image_encoder.mid_channels)
    optimizer = torch.optim.Adam(list(model.parameters()) + list(objective.parameters()), lr=1e-3)
    batch = make_batch(vocab)
    losses = []
    for step in range(12):
        optimizer.zero_grad()
        result = objective(model, batch)
        result.loss.backward()
        objective.after_gradient_sync(list(model.parameters()) + list(objective.parameters()), step=step, seed=0)
        optimizer.step()
        losses.append(result.logs["loss/match"])
    assert losses[-1] < losses[0]


def test_ga_dim_and_cmap_together_sum_their_terms_and_train(vocab):
    model = make_model(vocab)
    config = ObjectiveConfig(k=3, regularizers=regularizer_configs(
        {"ga_strength": 1e-3, "ga_noise": 1e-4, "dim_weight": 0.1, "cmap_weight": 0.1, "sc_mode": "hinge"}))
    objective = Objective(config, embed_dim=EMBED_DIM, mid_channels=model.image_encoder.mid_channels)
    assert sorted(objective.regularizers) == ["cmap", "dim", "ga"]
    optimizer = torch.optim.Adam(list(model.parameters()) + list(objective.parameters()), lr=1e-3)
    batch = make_batch(vocab)
    for step in range(3):
        optimizer.zero_grad()
        result = objective(model, batch, generator=torch.Generator().manual_seed(step))
        logs = result.logs
        assert {"loss/ga_adv", "loss/dim", "loss/cmap", "ga/input_grad_l1", "cmap/sc", "dim/mi_global"} <= logs.keys()
        assert logs["loss/total"] == pytest.approx(
            logs["loss/match"] + logs["loss/ga_adv"] + logs["loss/dim"] + logs["loss/cmap"], rel=1e-5)
        result.loss.backward()
        parameters = list(model.parameters()) + list(objective.parameters())
        assert objective.after_gradient_sync(parameters, step=step, seed=0)["ga/noise_norm"] > 0
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in parameters)
        optimizer.step()
    cmap_attention = objective.regularizers["cmap"].attention
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cmap_attention.parameters())


def test_every_regularizer_at_once_with_regions(vocab):
    from dataclasses import replace

    model = make_model(vocab)
    config = ObjectiveConfig(k=2, regularizers=regularizer_configs(
        {"ga_strength": 1e-3, "ga_mode": "fgsm", "dim_weight": 0.1, "cmap_weight": 0.1, "mmgrad_weight": 0.1}))
    objective = Objective(config, embed_dim=EMBED_DIM, mid_channels=model.image_encoder.mid_channels)
    batch = replace(make_batch(vocab), regions=torch.tensor([[0.0, 0.0, 0.5, 0.5]] * 4))
    result = objective(model, batch)
    assert {"loss/ga_adv", "loss/dim", "loss/cmap", "loss/mmgrad"} <= result.logs.keys()
    result.loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
