"""MMGrad: text-conditioned gradient attention (methods reference A.7), after Udhayanan et al., "Learning
with Multi-modal Gradient Attention for Explainable Composed Image Retrieval" (arXiv 2308.16649; no public
code, so this is the reference's Grad-CAM reconstruction):

    s_i     = <NL(psi_i), NL(phi+_i)>                        the composed match, so the map depends on the text
    alpha_c = mean_jk d s_i / d A_i[c, j, k]                 A_i: the reference image's last conv map (C, h, w)
    M_i     = ReLU(sum_c alpha_c A_i[c]) / sum_jk(...)       normalised to sum 1
    L_att   = mmgrad_weight * mean_i (1 - sum_jk M_i G_i)    G_i: the binary map of Batch.regions[i] at h x w

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


def region_masks(regions: Tensor, height: int, width: int) -> Tensor:
    """Binary maps (B, h, w) of boxes (B, 4) = (top, left, bottom, right) as fractions of the image:
    a cell counts when its centre lies inside the box, edges included."""
    if regions.dim() != 2 or regions.shape[1] != 4:
        raise ValueError(f"Batch.regions must be (B, 4) boxes (top, left, bottom, right), got shape "
                         f"{tuple(regions.shape)}")
    rows = (torch.arange(height, device=regions.device, dtype=regions.dtype) + 0.5) / height  # (h,) centres
    cols = (torch.arange(width, device=regions.device, dtype=regions.dtype) + 0.5) / width  # (w,)
    top, left, bottom, right = (regions[:, k].view(-1, 1, 1) for k in range(4))  # each (B, 1, 1)
    inside_rows = (rows.view(1, -1, 1) >= top) & (rows.view(1, -1, 1) <= bottom)  # (B, h, 1)
    inside_cols = (cols.view(1, 1, -1) >= left) & (cols.view(1, 1, -1) <= right)  # (B, 1, w)
    return (inside_rows & inside_cols).to(regions.dtype)  # (B, h, w)


def gradient_attention(feature_map: Tensor, gradient: Tensor) -> Tensor:
    """Grad-CAM maps (B, h, w), each summing to 1 (or all 0), from a map A and d s / d A, both (B, C, h, w)."""
    alpha = gradient.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    cam = torch.relu((alpha * feature_map).sum(dim=1))  # (B, h, w)
    return cam / cam.sum(dim=(1, 2), keepdim=True).clamp_min(EPSILON)


def pointing_game(attention: Tensor, masks: Tensor) -> Tensor:
    """(B,) bool: the map's maximum lies inside the region; an all-zero map points nowhere."""
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
