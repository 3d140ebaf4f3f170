"""GA: gradient augmentation (methods reference A.4), after "Gradient Augmentation for Composed Image
Retrieval" (GA; code github.com/fuxianghuang1/GA). Two terms, each switchable:

* explicit adversarial term (ga_strength = eps): the first-order form of an L-inf perturbation of the
  reference image, L_adv = eps * mean_i ||d l_i / d x_i||_1, by double back-propagation
  (`ga_mode="penalty"`, GA's released code), or true FGSM training (`ga_mode="fgsm"`): a second
  forward pass on x + eps * sign(grad), clean and perturbed losses averaged.
* implicit isotropic term (ga_noise = sigma0): after the gradient all-reduce, g <- g + sigma_t * xi,
  sigma_t = sigma0 / (1 + t)^0.55, xi ~ N(0, I) drawn from a generator seeded by (seed, step), so every
  data-parallel replica adds the same noise and the replicas stay identical. The noise of all gradients
  on a device is one flat draw, added with one foreach kernel: one kernel per parameter made it cost
  11-33 % of a GPU step.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from torch import Tensor, nn

from models.batch import Batch, Outputs
from models.regularizers import REGULARIZERS
from models.regularizers.base import Regularizer, RegularizerConfig, Rematch, Terms

if TYPE_CHECKING:
    from models.model import CirModel

__all__ = ["GaRegularizer", "noise_sigma", "noise_generator", "add_gradient_noise"]

NOISE_DECAY = 0.55  # annealed gradient noise exponent (Neelakantan et al. 2015)


def noise_sigma(sigma0: float, step: int) -> float:
    return sigma0 / (1.0 + step) ** NOISE_DECAY


def noise_generator(seed: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator that depends only on (seed, step): the same on every replica, different every step."""
    # Multiplying by a large odd constant keeps (seed, step) and (seed + 1, step - c) from colliding for small c.
    mixed = (int(seed) * 0x9E3779B97F4A7C15 + int(step)) % (2**63)
    return torch.Generator(device=device).manual_seed(mixed)


@REGULARIZERS.register("ga")
class GaRegularizer(Regularizer):
    requires = frozenset({"image_in_query"})  # the adversarial term: d psi / d x is zero without the image

    @dataclass(frozen=True)
    class Config(RegularizerConfig):
        name: ClassVar[str] = "ga"
        ga_strength: float = 0.0  # eps, in normalised pixel units; study range log-uniform 1e-4 .. 1e-1
        ga_noise: float = 0.0  # sigma0; study range log-uniform 1e-5 .. 1e-2
        ga_mode: Literal["penalty", "fgsm"] = "penalty"

        @property
        def enabled(self) -> bool:
            return self.ga_strength > 0 or self.ga_noise > 0

    def __init__(self, config: Config, *, embed_dim: int, mid_channels: int) -> None:
        super().__init__(config, embed_dim=embed_dim, mid_channels=mid_channels)
        self.needs_input_grad = config.ga_strength > 0

    @classmethod
    def required_by(cls, config: Config) -> frozenset[str]:
        return cls.requires if config.ga_strength > 0 else frozenset()  # the isotropic noise needs nothing

    def forward(self, outputs: Outputs, match_loss: Tensor, *, model: CirModel, batch: Batch,
                rematch: Rematch) -> Terms:
        eps = self.config.ga_strength
        if eps == 0:
            return Terms()
        images = outputs.reference_images  # (B, 3, H, W)
        if not images.requires_grad:
            raise RuntimeError("GA's adversarial term needs the reference image to require grad; "
                               "run it through models.objective.Objective, which sets it")
        fgsm = self.config.ga_mode == "fgsm"
        # d(sum_i l_i)/dx_i is d l_i/dx_i up to the coupling of the batch-norm statistics across the batch:
        # one backward pass instead of B. allow_unused: text_only's query does not depend on the image.
        (grad,) = torch.autograd.grad(match_loss.sum(), images, create_graph=not fgsm, retain_graph=True,
                                      allow_unused=True)
        if grad is None:
            grad = torch.zeros_like(images)
        l1 = grad.abs().flatten(1).sum(dim=1)  # (B,) ||d l_i / d x_i||_1
        logs = {"ga/input_grad_l1": l1.detach().mean()}
        if not fgsm:
            return Terms({"loss/ga_adv": eps * l1.mean()}, logs)
        perturbed = (images + eps * grad.sign()).detach()  # the perturbation is a constant, as in FGSM training
        adversarial = rematch(replace(batch, reference=perturbed)).mean()
        logs["ga/adversarial_match"] = adversarial.detach()
        # match + this term = the mean of the clean and the perturbed losses.
        return Terms({"loss/ga_adv": 0.5 * (adversarial - match_loss.mean())}, logs)

    def after_gradient_sync(self, parameters: list[nn.Parameter], *, step: int, seed: int) -> dict[str, float | Tensor]:
        if self.config.ga_noise == 0:
            return {}
        sigma = noise_sigma(self.config.ga_noise, step)
        norm = add_gradient_noise(parameters, sigma, seed=seed, step=step)
        return {"ga/noise_norm": norm, "ga/noise_sigma": sigma}


def add_gradient_noise(parameters: list[nn.Parameter], sigma: float, *, seed: int, step: int) -> Tensor:
    """g <- g + sigma * xi for every parameter with a gradient; returns ||sigma * xi|| as a 0-dim tensor on
    the gradients' device (no sync: the training loop reads logs once per epoch).

    Per device, xi is ONE flat draw of N(0, 1) from `noise_generator(seed, step, device)`, cut into the
    gradients in `parameters` order (parameters without a gradient are skipped: unused on every replica
    alike, and noise would make them move). Same (seed, step) and parameters -> same noise on every replica.
    """
    by_device: dict[torch.device, list[Tensor]] = {}
    for parameter in parameters:
        if parameter.grad is not None:
            by_device.setdefault(parameter.grad.device, []).append(parameter.grad)
    squares: list[Tensor] = []
    for device, grads in by_device.items():
        dtypes = {g.dtype for g in grads}
        dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
        flat = torch.randn(sum(g.numel() for g in grads), generator=noise_generator(seed, step, device),
                           device=device, dtype=dtype)  # (N,)
        # Views of `flat` shaped like each gradient, cut in C++ (a Python loop of views costs more than the add).
        noise = list(torch._utils._unflatten_dense_tensors(flat, grads))
        if len({g.dtype for g in grads}) > 1:
            noise = [n.to(g.dtype) for n, g in zip(noise, grads)]
        torch._foreach_add_(grads, noise, alpha=sigma)
        squares.append(torch.linalg.vector_norm(flat, dtype=torch.float32).square())
    if not squares:
        return torch.zeros(())
    first = squares[0].device
    return sigma * torch.stack([s.to(first) for s in squares]).sum().sqrt()
