"""DIM: Deep InfoMax between modalities (methods reference A.5), after Gu et al., "Cross-modal Image
Retrieval with Deep Mutual Information Maximization" (arXiv 2103.06032, Neurocomputing 2022) and the
estimators of Hjelm et al., "Learning deep representations by mutual information estimation and
maximization" (ICLR 2019, https://arxiv.org/abs/1808.06670):

    L_dim = -dim_weight * ( I(phi_t; phi_x) + mean_cells I(C_cell(x+); psi) )

global term: text feature vs reference image feature; local term: every cell of the target image's
layer2-level map (1x1 conv to D) vs the composed query. `dim_terms: global` keeps the global term
alone (L_dim = -dim_weight * I(phi_t; phi_x)): what trials on cached frozen features can run, since
those hold no conv map. Bilinear critics T(a, b) = a^T W b; the
negatives are all other pairs of the batch (every shuffle of the batch at once).
"""
from __future__ import annotations

import math
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

__all__ = ["DimRegularizer", "jsd_mi", "infonce_mi", "critic_accuracy"]


def jsd_mi(scores: Tensor) -> Tensor:
    """Jensen-Shannon MI estimate E_pos[-sp(-T)] - E_neg[sp(T)] from scores (..., B, B), T[i, j] = T(a_i, b_j):
    the diagonal holds the positive pairs, every off-diagonal entry is a negative. Mean over leading dims."""
    b = scores.shape[-1]
    eye = torch.eye(b, dtype=torch.bool, device=scores.device)
    positive = -F.softplus(-scores.diagonal(dim1=-2, dim2=-1)).mean()
    negative = F.softplus(scores.masked_select(~eye.expand_as(scores))).mean()
    return positive - negative


def infonce_mi(scores: Tensor) -> Tensor:
    """InfoNCE estimate E_i[T(a_i, b_i) - log sum_j exp T(a_i, b_j)] from scores (..., B, B)."""
    return (scores.diagonal(dim1=-2, dim2=-1) - torch.logsumexp(scores, dim=-1)).mean()


def critic_accuracy(scores: Tensor) -> float:
    """How often a row's positive (diagonal) pair scores above all its negatives."""
    return float(_critic_hits(scores))


def _critic_hits(scores: Tensor) -> Tensor:
    """critic_accuracy as a 0-dim tensor on the scores' device (no sync)."""
    b = scores.shape[-1]
    return (scores.argmax(dim=-1) == torch.arange(b, device=scores.device)).float().mean()


ESTIMATORS = {"jsd": jsd_mi, "infonce": infonce_mi}


@REGULARIZERS.register("dim")
class DimRegularizer(Regularizer):
    @dataclass(frozen=True)
    class Config(RegularizerConfig):
        name: ClassVar[str] = "dim"
        dim_weight: float = 0.0  # study range log-uniform 1e-3 .. 1
        dim_estimator: Literal["jsd", "infonce"] = "jsd"  # jsd is Deep InfoMax's default
        dim_terms: Literal["both", "global"] = "both"  # global: no local term (cached frozen features)

        @property
        def enabled(self) -> bool:
            return self.dim_weight > 0

    def __init__(self, config: Config, *, embed_dim: int, mid_channels: int) -> None:
        super().__init__(config, embed_dim=embed_dim, mid_channels=mid_channels)
        bound = 1.0 / math.sqrt(embed_dim)  # nn.Bilinear's init: scores start near 0, not saturating softplus
        self.global_critic = nn.Parameter(torch.empty(embed_dim, embed_dim).uniform_(-bound, bound))
        if config.dim_terms == "both":  # the global term alone has no local critic to train
            self.local_critic = nn.Parameter(torch.empty(embed_dim, embed_dim).uniform_(-bound, bound))
            self.local_projection = nn.Conv2d(mid_channels, embed_dim, kernel_size=1)

    def forward(self, outputs: Outputs, match_loss: Tensor, *, model: CirModel, batch: Batch,
                rematch: Rematch) -> Terms:
        estimate = ESTIMATORS[self.config.dim_estimator]
        text, image = outputs.text, outputs.reference_features.vector  # (B, D), (B, D)
        global_scores = text @ (self.global_critic @ image.T)  # (B, B): T(phi_t_i, phi_x_j)
        mi_global = estimate(global_scores)
        if self.config.dim_terms == "global":
            logs = {"dim/mi_global": mi_global.detach(), "dim/critic_accuracy": _critic_hits(global_scores.detach())}
            return Terms({"loss/dim": -self.config.dim_weight * mi_global}, logs)
        # T(C_n(x+_i), psi_j) = (P m_n,i + b)^T W psi_j for the 1x1 conv (P, b) on the layer2 map m: contract
        # W psi and P first, (C2, B), so the N = h * w cells are never projected to D (most of DIM's cost).
        critic_query = self.local_critic @ outputs.query.T  # (D, B)
        projection = self.local_projection.weight.flatten(1)  # (D, C2)
        cells = outputs.target_features.mid_map.flatten(2).permute(2, 0, 1)  # (N, B, C2)
        local_scores = cells @ (projection.T @ critic_query) + self.local_projection.bias @ critic_query  # (N, B, B)
        mi_local = estimate(local_scores)  # mean over cells
        loss = -self.config.dim_weight * (mi_global + mi_local)
        accuracy = 0.5 * (_critic_hits(global_scores.detach()) + _critic_hits(local_scores.detach()))
        logs = {"dim/mi_global": mi_global.detach(), "dim/mi_local": mi_local.detach(),
                "dim/critic_accuracy": accuracy}
        return Terms({"loss/dim": loss}, logs)
