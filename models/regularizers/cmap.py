"""CMAP-style self-contrastive preservation (methods reference A.6), after Li et al., "Cross-Modal
Attention Preservation with Self-Contrastive Learning for Composed Query-Based Image Retrieval"
(ACM TOMM 2024, https://doi.org/10.1145/3639469; code github.com/CFM-MSG/Code_CMAP).

A text-driven channel attention A = softmax(W2 ReLU(W1 phi_t)) over the D channels marks what the query
must preserve; Rev(A) = 2 * mean(A) - A marks what the text modifies. With
p_i = cos(phi_t_i, norm(A_i * phi+_i)) and r_i = cos(phi_t_i, norm(Rev(A_i) * phi+_i)):

    L_sc   = mean_i -log( e^(r_i/tau) / (e^(r_i/tau) + e^(p_i/tau)) )      ("softmax", cirstudy's form)
           = mean_i max(0, 0.6 + p_i - r_i)                                 ("hinge", CMAP's released code)
    L_pres = InfoNCE at tau between norm(A_i * phi_x_i) and norm(A_j * phi+_j) over the batch
    L_cmap = cmap_weight * (L_sc + L_pres)

CMAP sums its hinge over the batch; here it is the mean, so cmap_weight does not scale with B.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.batch import Batch, Outputs
from models.regularizers import REGULARIZERS
from models.regularizers.base import Regularizer, RegularizerConfig, Rematch, Terms

if TYPE_CHECKING:
    from models.model import CirModel

__all__ = ["CmapRegularizer", "reverse_attention", "self_contrastive_loss", "preservation_loss"]

HINGE_MARGIN = 0.6  # CMAP's margin at its top level (mu = 0.6, 0.4, 0.3 over its three levels)


def reverse_attention(attention: Tensor) -> Tensor:
    """Rev(A) = 2 * mean_c(A) - A for attention (B, D): large where A is small."""
    return 2 * attention.mean(dim=1, keepdim=True) - attention


def self_contrastive_loss(p: Tensor, r: Tensor, *, tau: float,
                          mode: Literal["softmax", "hinge"] = "softmax") -> Tensor:
    """Mean over the batch of the self-contrastive term from the cosines p, r (B,)."""
    if mode == "hinge":
        return F.relu(HINGE_MARGIN + p - r).mean()
    # -log(e^(r/tau) / (e^(r/tau) + e^(p/tau))) = softplus((p - r) / tau), stable for small tau
    return F.softplus((p - r) / tau).mean()


def preservation_loss(reference: Tensor, target: Tensor, *, tau: float) -> Tensor:
    """InfoNCE at tau: row i of `reference` (B, D) must pick row i of `target` (B, D); both L2-normalised."""
    logits = reference @ target.T / tau  # (B, B)
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


@REGULARIZERS.register("cmap")
class CmapRegularizer(Regularizer):
    requires = frozenset()  # reads phi_t, phi_x and phi+ from the encoders, not the composed query

    @dataclass(frozen=True)
    class Config(RegularizerConfig):
        name: ClassVar[str] = "cmap"
        cmap_weight: float = 0.0  # study range log-uniform 1e-2 .. 1
        sc_temperature: float = 0.1  # tau, also the preservation InfoNCE's; study range log-uniform 0.01 .. 1
        sc_mode: Literal["softmax", "hinge"] = "softmax"  # hinge: CMAP's released margin form (no tau)

        @property
        def enabled(self) -> bool:
            return self.cmap_weight > 0

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.enabled and self.sc_temperature <= 0:  # checked only when on: a weight-0 config is inert
                raise ValueError(f"sc_temperature must be > 0 when cmap_weight > 0 (it divides the cosines), "
                                 f"got {self.sc_temperature!r}; the study range is 0.01 .. 1")

    def __init__(self, config: Config, *, embed_dim: int, mid_channels: int) -> None:
        super().__init__(config, embed_dim=embed_dim, mid_channels=mid_channels)
        # CMAP's A_IS = softmax(W4 ReLU(W3 m)), hidden width = D as in its code.
        self.attention = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, outputs: Outputs, match_loss: Tensor, *, model: CirModel, batch: Batch,
                rematch: Rematch) -> Terms:
        # Written in few, batched ops: on a GPU this step is launch-bound, so every small op shows in the overhead.
        tau = self.config.sc_temperature
        text, target = outputs.text, outputs.target  # (B, D), (B, D)
        reference = outputs.reference_features.vector  # (B, D)
        logits = self.attention(text)  # (B, D)
        attention = torch.softmax(logits, dim=1)  # (B, D), rows sum to 1
        # Rev(A) = 2 mean(A) - A = 2/D - A for a softmax row (mean exactly 1/D, and d mean / d logits = 0).
        weights = torch.stack([attention, 2.0 / attention.shape[1] - attention])  # (2, B, D): A, Rev(A)
        parts = weights * target  # (2, B, D): preserved and modified parts of phi+
        p, r = _cosine(text, parts)  # (B,) each: text vs the preserved / modified part
        sc = self_contrastive_loss(p, r, tau=tau, mode=self.config.sc_mode)
        preserved = F.normalize(torch.stack([attention * reference, parts[0]]), dim=2)  # (2, B, D)
        pres = preservation_loss(preserved[0], preserved[1], tau=tau)
        loss = self.config.cmap_weight * (sc + pres)
        with torch.no_grad():  # H(A) = -sum A log A = logsumexp(z) - sum A z for A = softmax(z)
            entropy = (torch.logsumexp(logits, dim=1) - (attention * logits).sum(dim=1)).mean()
        logs = {"cmap/sc": sc.detach(), "cmap/pres": pres.detach(), "cmap/attention_entropy": entropy,
                "cmap/p_minus_r": (p - r).detach().mean()}
        return Terms({"loss/cmap": loss}, logs)


def _cosine(text: Tensor, parts: Tensor) -> Tensor:
    """cos(text_i, parts[k, i]) -> (K, B) for text (B, D) and parts (K, B, D); one batched pass."""
    dot = (parts * text).sum(dim=2)  # (K, B)
    return dot / (parts.norm(dim=2) * text.norm(dim=1)).clamp_min(1e-8)
