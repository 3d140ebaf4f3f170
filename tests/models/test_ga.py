"""GA (methods reference A.4): the adversarial penalty and FGSM by hand and through the model, and the
isotropic noise: its schedule, one flat draw per device, identical replicas."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from conftest import EMBED_DIM, grads_of, make_batch, make_model, reached

from models.batch import Outputs
from models.encoders import ImageFeatures
from models.objective import Objective, ObjectiveConfig
from models.regularizers.ga import GaRegularizer, add_gradient_noise, noise_generator, noise_sigma


def run(vocab, configs=(), k: int = 2, seed: int = 0):
    model = make_model(vocab, seed=seed)
    objective = Objective(ObjectiveConfig(k=k, regularizers=tuple(configs)), embed_dim=EMBED_DIM,
                          mid_channels=model.image_encoder.mid_channels)
    torch.manual_seed(seed)  # dropout
    result = objective(model, make_batch(vocab), generator=torch.Generator().manual_seed(seed))
    return model, objective, result


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
    flat = torch.randn(6 + 4, generator=noise_generator(7, 3))  # one flat draw, cut in parameter order
    expected = [flat[:6].view(3, 2), flat[6:]]
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


def test_noise_sigma_schedule_at_later_steps_by_hand():
    # sigma_t = sigma0 / (1 + t)^0.55: t = 0 -> sigma0; t = 99 -> sigma0 / 100^0.55 = sigma0 / 10^1.1
    assert noise_sigma(1e-3, 99) == pytest.approx(1e-3 / 10 ** 1.1, rel=1e-12)
    assert noise_sigma(2e-3, 1) == pytest.approx(2e-3 * 2 ** -0.55, rel=1e-12)
    assert noise_sigma(0.0, 5) == 0.0


def test_flat_noise_is_identical_on_two_separately_built_models(vocab):
    replicas = []
    for _ in range(2):  # two replicas, built and given gradients independently
        model = make_model(vocab, seed=0)
        _, objective, result = run(vocab, [GaRegularizer.Config(ga_noise=1e-2)])
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        logs = objective.after_gradient_sync(list(model.parameters()), step=17, seed=3)
        replicas.append(([p.grad.clone() for p in model.parameters()], logs))
    (first, logs_a), (second, logs_b) = replicas
    assert all(torch.equal(a, b) for a, b in zip(first, second)) and logs_a == logs_b
    # It is one flat draw over all gradients in parameter order, scaled by sigma_t.
    sigma = noise_sigma(1e-2, 17)
    flat = torch.randn(sum(g.numel() for g in first), generator=noise_generator(3, 17))
    assert torch.allclose(torch.cat([g.flatten() for g in first]), sigma * flat)
    assert logs_a["ga/noise_norm"] == pytest.approx(sigma * float(flat.norm()), rel=1e-5)
    assert logs_a["ga/noise_sigma"] == sigma


def test_flat_noise_keeps_each_gradient_dtype_and_draws_once_per_device():
    params = [torch.nn.Parameter(torch.zeros(5, dtype=torch.float64)), torch.nn.Parameter(torch.zeros(3))]
    for p in params:
        p.grad = torch.zeros_like(p)
    norm = add_gradient_noise(params, 0.5, seed=1, step=2)
    assert params[0].grad.dtype == torch.float64 and params[1].grad.dtype == torch.float32
    flat = torch.randn(8, generator=noise_generator(1, 2))  # mixed dtypes: drawn in float32
    assert torch.allclose(params[0].grad.float(), 0.5 * flat[:5]) and torch.allclose(params[1].grad, 0.5 * flat[5:])
    assert norm == pytest.approx(0.5 * float(flat.norm()), rel=1e-6)
    assert add_gradient_noise([torch.nn.Parameter(torch.zeros(2))], 0.5, seed=1, step=2) == 0.0  # no gradients


def test_fgsm_perturbed_loss_equals_a_full_second_pass_of_the_model(vocab):
    # The Objective reuses the clean target features for the perturbed pass (no second target forward);
    # in eval mode (batch-norm statistics fixed, no dropout) that equals running the whole model again.
    model = make_model(vocab)
    model.eval()
    objective = Objective(ObjectiveConfig(k=3, regularizers=(GaRegularizer.Config(ga_strength=0.05, ga_mode="fgsm"),)),
                          embed_dim=EMBED_DIM, mid_channels=model.image_encoder.mid_channels)
    batch = make_batch(vocab)
    result = objective(model, batch, generator=torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    images = batch.reference.clone().requires_grad_(True)
    clean = objective.match(model, model(replace(batch, reference=images)), generator)
    (grad,) = torch.autograd.grad(clean.sum(), images)
    perturbed = replace(batch, reference=(images + 0.05 * grad.sign()).detach())
    full = objective.match(model, model(perturbed), generator).mean()
    assert result.logs["ga/adversarial_match"] == pytest.approx(float(full.detach()), rel=1e-5)
    result.loss.backward()
    assert reached(model.image_encoder) and reached(model.text_encoder) and reached(model.composer)
