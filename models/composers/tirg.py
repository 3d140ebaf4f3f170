"""TIRG, FC variant: Text Image Residual Gating (Vo et al., "Composing Text and Image for Image
Retrieval - An Empirical Odyssey", CVPR 2019, https://arxiv.org/abs/1812.07119), in google/tirg's form
(methods B.1; `--model=tirg`):

    gate = sigmoid(W_g ReLU(BN([x; t])))                 W_g: 2D -> D
    res  = W_r2 ReLU(W_r1 ReLU(BN([x; t])))              W_r1: 2D -> 2D, W_r2: 2D -> D
    psi  = a0 * gate * x + a1 * res                      a learnable, init (1, 10)

The two branches have their own batch norms, as in the repo.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from models.composers import COMPOSERS
from models.encoders import ImageFeatures


class TirgComposer(nn.Module):
    uses_image, uses_text = True, True

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.BatchNorm1d(2 * embed_dim), nn.ReLU(), nn.Linear(2 * embed_dim, embed_dim))
        self.residual = nn.Sequential(
            nn.BatchNorm1d(2 * embed_dim), nn.ReLU(),
            nn.Linear(2 * embed_dim, 2 * embed_dim), nn.ReLU(),
            nn.Linear(2 * embed_dim, embed_dim),
        )
        # (1, 10): the residual starts dominant so the text can move the query early in training (repo init).
        self.a = nn.Parameter(torch.tensor([1.0, 10.0]))

    def forward(self, image: ImageFeatures, text: Tensor) -> Tensor:
        x = image.vector  # (B, D)
        joint = torch.cat([x, text], dim=1)  # (B, 2D)
        gated = torch.sigmoid(self.gate(joint)) * x  # (B, D)
        return self.a[0] * gated + self.a[1] * self.residual(joint)  # (B, D)


@COMPOSERS.register("tirg")
def build_tirg(embed_dim: int, image_channels: int) -> TirgComposer:
    return TirgComposer(embed_dim)
