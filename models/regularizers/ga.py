"""GA: gradient augmentation (methods reference A.4), after "Gradient Augmentation for Composed Image
Retrieval" (GA; code github.com/fuxianghuang1/GA). Two terms, each switchable:

* explicit adversarial term (ga_strength = eps): the first-order form of an L-inf perturbation of the
  reference image, L_adv = eps * mean_i ||d l_i / d x_i||_1, by double back-propagation
  (`ga_mode="penalty"`, GA's released code), or true FGSM training (`ga_mode="fgsm"`): a second
  forward pass on x + eps * sign(grad), clean and perturbed losses averaged.
* implicit isotropic term (ga_noise = sigma0): after the gradient all-reduce, g <- g + sigma_t * xi,
  sigma_t = sigma0 / (1 + t)^0.55, xi ~ N(0, I) drawn from a generator seeded by (seed, step), so every
  data-parallel replica adds the same noise and the replicas stay identical.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from torch import Tensor, nn

from models.batch import Batch, Outputs
from models.regularizers import REGULARIZERS
from models.regularizers.base import Regularizer, RegularizerConfig, Rematch, Terms

if TYPE_CHECKING:
    from models.model import CirModel

__all__ = ["GaRegularizer", "noise_sigma", "noise_generator"]

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
        logs = {"ga/input_grad_l1": float(l1.detach().mean())}
        if not fgsm:
            return Terms({"loss/ga_adv": eps * l1.mean()}, logs)
        perturbed = (images + eps * grad.sign()).detach()  # the perturbation is a constant, as in FGSM training
        adversarial = rematch(replace(batch, reference=perturbed)).mean()
        logs["ga/adversarial_match"] = float(adversarial.detach())
        # match + this term = the mean of the clean and the perturbed losses.
        return Terms({"loss/ga_adv": 0.5 * (adversarial - match_loss.mean())}, logs)

    def after_gradient_sync(self, parameters: list[nn.Parameter], *, step: int, seed: int) -> dict[str, float]:
        if self.config.ga_noise == 0:
            return {}
        sigma = noise_sigma(self.config.ga_noise, step)
        generators: dict[torch.device, torch.Generator] = {}
        squares = []
        for parameter in parameters:
            grad = parameter.grad
            if grad is None:  # unused this step on every replica alike; noise would make it move
                continue
            if grad.device not in generators:
                generators[grad.device] = noise_generator(seed, step, grad.device)
            noise = torch.randn(grad.shape, generator=generators[grad.device], device=grad.device,
                                dtype=grad.dtype)
            grad.add_(noise, alpha=sigma)
            squares.append(noise.float().pow(2).sum())  # stays on its device: one sync at the end, not one per tensor
        norm = sigma * math.sqrt(sum(float(torch.stack([s for s in squares if s.device == d]).sum())
                                     for d in generators)) if squares else 0.0
        return {"ga/noise_norm": norm, "ga/noise_sigma": sigma}
