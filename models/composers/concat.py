"""Concatenation baseline exactly as google/tirg's `concat` (Vo et al., "Composing Text and Image for
Image Retrieval - An Empirical Odyssey", CVPR 2019, https://arxiv.org/abs/1812.07119):
psi = FC(Dropout0.1(ReLU(BN(FC(ReLU(BN([x; t]))))))), FC 2D -> 2D then 2D -> D (methods B.1)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from models.composers import COMPOSERS
from models.composers.base import Composer, TextInput
from models.encoders import ImageFeatures


@COMPOSERS.register("concat")
class ConcatComposer(Composer):
    uses_image, uses_text = True, True

    def __init__(self, embed_dim: int, image_channels: int, vocab_size: int | None = None) -> None:
        super().__init__(embed_dim, image_channels, vocab_size)
        self.mlp = nn.Sequential(
            nn.BatchNorm1d(2 * embed_dim), nn.ReLU(),
            nn.Linear(2 * embed_dim, 2 * embed_dim),
            nn.BatchNorm1d(2 * embed_dim), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(2 * embed_dim, embed_dim),
        )

    def forward(self, image: ImageFeatures, text: TextInput) -> Tensor:
        return self.mlp(torch.cat([image.vector, text.features], dim=1))  # (B, 2D) -> (B, D)
