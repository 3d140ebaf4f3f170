"""What goes into the model (`Batch`) and what comes out of it (`Outputs`): every tensor the matching
loss and the regularisers read, so none of them re-runs the encoders.

With frozen encoders a batch may carry their cached output instead of their input
(study/feature_cache.py): then `reference` and `target` are (B, D) image features and `tokens` the
(B, D) text features, and the model runs no encoder (models/model.py)."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from models.encoders import ImageFeatures

__all__ = ["Batch", "Outputs"]


@dataclass(frozen=True)
class Batch:
    reference: Tensor  # (B, 3, H, W) float, normalised (normalize_images); or (B, D) cached features
    tokens: Tensor  # (B, L) long, padded with 0; or (B, D) float cached text features
    lengths: Tensor  # (B,) long, >= 1
    target: Tensor  # (B, 3, H, W) float, normalised; or (B, D) cached features
    regions: Tensor | None = None  # (B, 4) float box of the region the text changes, where the dataset has one

    def to(self, device: torch.device | str) -> Batch:
        regions = None if self.regions is None else self.regions.to(device)
        return replace(self, reference=self.reference.to(device), tokens=self.tokens.to(device),
                       lengths=self.lengths.to(device), target=self.target.to(device), regions=regions)

    def __len__(self) -> int:
        return self.reference.shape[0]


@dataclass(frozen=True)
class Outputs:
    query: Tensor  # (B, D) psi = compose(x, t), un-normalised
    target: Tensor  # (B, D) phi+ = target image feature, un-normalised
    reference_features: ImageFeatures  # of the reference image x
    target_features: ImageFeatures  # of the target image x+
    text: Tensor  # (B, D) phi_t
    reference_images: Tensor  # (B, 3, H, W) the tensor x was computed from (GA differentiates w.r.t. it);
    # (B, D) with cached features, which have no pixels to differentiate (GA's term is refused there)
