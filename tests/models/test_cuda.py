"""The same objective on a GPU: no tensor may be left on the CPU (skipped where there is no CUDA)."""
from __future__ import annotations

import pytest
import torch
from conftest import EMBED_DIM, make_batch, make_model

from models.encoders import normalize_images
from models.losses import matching_loss
from models.objective import Objective, ObjectiveConfig
from models.regularizers import regularizer_configs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("mode", ["penalty", "fgsm"])
@pytest.mark.parametrize("estimator", ["jsd", "infonce"])
def test_objective_runs_on_cuda(vocab, mode, estimator):
    device = torch.device("cuda")
    model = make_model(vocab).to(device)
    config = ObjectiveConfig(k=3, regularizers=regularizer_configs(
        {"ga_strength": 1e-3, "ga_noise": 1e-4, "ga_mode": mode, "dim_weight": 0.1, "dim_estimator": estimator}))
    objective = Objective(config, embed_dim=EMBED_DIM, mid_channels=model.image_encoder.mid_channels).to(device)
    batch = make_batch(vocab).to(device)
    for generator in (None, torch.Generator().manual_seed(0), torch.Generator(device=device).manual_seed(0)):
        result = objective(model, batch, generator=generator)
        assert result.loss.device.type == "cuda"
        result.loss.backward()
    params = list(model.parameters()) + list(objective.parameters())
    logs = objective.after_gradient_sync(params, step=1, seed=3)
    assert logs["ga/noise_norm"] > 0
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in params)


def test_noise_is_identical_across_two_cuda_replicas():
    from models.regularizers.ga import GaRegularizer

    ga = GaRegularizer(GaRegularizer.Config(ga_noise=0.1), embed_dim=2, mid_channels=2)
    replicas = []
    for _ in range(2):
        p = torch.nn.Parameter(torch.zeros(1000, device="cuda"))
        p.grad = torch.zeros_like(p)
        ga.after_gradient_sync([p], step=5, seed=11)
        replicas.append(p.grad)
    assert torch.equal(*replicas)


def test_helpers_keep_the_device():
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, device="cuda")
    assert normalize_images(images).device.type == "cuda"
    q, t = torch.randn(5, 4, device="cuda"), torch.randn(5, 4, device="cuda")
    assert matching_loss(q, t, k=2, generator=torch.Generator().manual_seed(0)).device.type == "cuda"
