"""MMGrad: text-conditioned gradient attention (methods reference A.7), after Udhayanan et al., "Learning
with Multi-modal Gradient Attention for Explainable Composed Image Retrieval" (arXiv 2308.16649; no public
code, so this is the reference's Grad-CAM reconstruction):

    s_i     = <NL(psi_i), NL(phi+_i)>                        the composed match, so the map depends on the text
    alpha_c = mean_jk d s_i / d A_i[c, j, k]                 A_i: the reference image's last conv map (C, h, w)
    M_i     = ReLU(sum_c alpha_c A_i[c]) / sum_jk(...)       normalised to sum 1
    L_att   = mmgrad_weight * mean_i (1 - sum_jk M_i G_i)    G_i: the map of Batch.regions[i] at h x w, each
                                                             cell the share of its area the box covers

alpha is taken with create_graph=True, so L_att trains the image encoder and the composer through the
double backward. The gradient is that of sum_i s_i (one backward pass instead of B): it equals
d s_i / d A_i up to the coupling of batch-norm statistics across the batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from models.batch import Batch, Outputs
from models.regularizers import REGULARIZERS
from models.regularizers.base import Regularizer, RegularizerConfig, Rematch, Terms

if TYPE_CHECKING:
    from models.model import CirModel

__all__ = ["MmgradRegularizer", "region_masks", "gradient_attention", "pointing_game"]

EPSILON = 1e-12  # an all-zero map (no positive evidence) stays zero instead of dividing by 0


def _coverage(low: Tensor, high: Tensor, cells: int) -> Tensor:
    """(B, cells): the share of each of `cells` equal intervals of [0, 1] that [low, high] (B, 1) covers."""
    edges = torch.arange(cells + 1, device=low.device, dtype=low.dtype) / cells  # (cells + 1,)
    overlap = torch.minimum(high, edges[1:]) - torch.maximum(low, edges[:-1])  # (B, cells)
    return overlap.clamp_min(0) * cells


def region_masks(regions: Tensor, height: int, width: int) -> Tensor:
    """Maps (B, h, w) in [0, 1] of boxes (B, 4) = (top, left, bottom, right) as fractions of the image:
    each cell holds the share of its area inside the box. Area weights rather than "the cell's centre
    is inside": on a coarse map (resnet18's 2x2 on 64 px images) most of CSS's 3x3 region cells
    contain no cell centre, so a centre rule gave them an empty mask and L_att no gradient."""
    if regions.dim() != 2 or regions.shape[1] != 4:
        raise ValueError(f"Batch.regions must be (B, 4) boxes (top, left, bottom, right), got shape "
                         f"{tuple(regions.shape)}")
    top, left, bottom, right = (regions[:, k : k + 1] for k in range(4))  # each (B, 1)
    rows = _coverage(top, bottom, height)  # (B, h)
    cols = _coverage(left, right, width)  # (B, w)
    return rows.unsqueeze(2) * cols.unsqueeze(1)  # (B, h, w): a box's area share is separable


def gradient_attention(feature_map: Tensor, gradient: Tensor) -> Tensor:
    """Grad-CAM maps (B, h, w), each summing to 1 (or all 0), from a map A and d s / d A, both (B, C, h, w)."""
    alpha = gradient.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    cam = torch.relu((alpha * feature_map).sum(dim=1))  # (B, h, w)
    return cam / cam.sum(dim=(1, 2), keepdim=True).clamp_min(EPSILON)


def pointing_game(attention: Tensor, masks: Tensor) -> Tensor:
    """(B,) bool: the map's maximum lies in a cell the region covers (any part of); an all-zero map
    points nowhere."""
    flat = attention.flatten(1)  # (B, h*w)
    hit = masks.flatten(1).gather(1, flat.argmax(dim=1, keepdim=True)).squeeze(1) > 0
    return hit & (flat.amax(dim=1) > 0)


@REGULARIZERS.register("mmgrad")
class MmgradRegularizer(Regularizer):
    requires = frozenset({"regions", "image_in_query"})

    @dataclass(frozen=True)
    class Config(RegularizerConfig):
        name: ClassVar[str] = "mmgrad"
        mmgrad_weight: float = 0.0  # lambda of L_att

        @property
        def enabled(self) -> bool:
            return self.mmgrad_weight > 0

    def forward(self, outputs: Outputs, match_loss: Tensor, *, model: CirModel, batch: Batch,
                rematch: Rematch) -> Terms:
        if batch.regions is None:
            raise ValueError("mmgrad needs Batch.regions (the box each text changes), but this batch has none; "
                             "use a dataset whose queries carry regions (css, states, fashion generators) or "
                             "set mmgrad_weight = 0")
        feature_map = outputs.reference_features.last_map  # (B, C, h, w)
        if not feature_map.requires_grad:
            raise RuntimeError("mmgrad differentiates the match score w.r.t. the reference image's last conv map, "
                               "but that map carries no graph (frozen image encoder or torch.no_grad)")
        score = (model.norm(outputs.query) * model.norm(outputs.target)).sum(dim=1)  # (B,) s_i
        # allow_unused: a composer that ignores the image (text_only) gives no gradient, hence an all-zero map.
        (gradient,) = torch.autograd.grad(score.sum(), feature_map, create_graph=True, allow_unused=True)
        if gradient is None:
            gradient = torch.zeros_like(feature_map)
        attention = gradient_attention(feature_map, gradient)  # (B, h, w)
        masks = region_masks(batch.regions.to(attention.dtype), *attention.shape[1:])  # (B, h, w)
        inside = (attention * masks).sum(dim=(1, 2))  # (B,)
        loss = self.config.mmgrad_weight * (1 - inside).mean()
        logs = {"mmgrad/attention_in_region": inside.detach().mean(),
                "mmgrad/pointing_game": pointing_game(attention.detach(), masks).float().mean()}
        return Terms({"loss/mmgrad": loss}, logs)
