"""TIRG, last-conv variant (Vo et al., "Composing Text and Image for Image Retrieval - An Empirical
Odyssey", CVPR 2019, https://arxiv.org/abs/1812.07119), google/tirg's `TIRGLastConv` (methods B.1;
`--model=tirg_lastconv`, the spatial version used for CSS):

    Z   = [X; tile(t, h, w)]                                   X = last conv map (C, h, w), t (D)
    T   = Conv3x3(C+D -> C)(ReLU(Conv3x3(C+D -> C+D)(BN2d(Z))))  padding 1
    G   = same structure, separate weights
    X'  = a0 * sigmoid(G) * X + a1 * T                          a learnable, init (1, 10)
    psi = fc(GlobalAvgPool(X'))                                  fc: C -> D

As in the repo, `fc` is the image model's own fc: inside CirModel the composer is handed the image
encoder's head (`shares_image_head`), so with the gate open and no residual the query is the image
feature. Built on its own (tests), the composer holds a fresh Linear(C -> D).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from models.composers import COMPOSERS
from models.composers.base import Composer, TextInput
from models.encoders import ImageFeatures


def _branch(image_channels: int, embed_dim: int) -> nn.Sequential:
    joint = image_channels + embed_dim
    return nn.Sequential(
        nn.BatchNorm2d(joint),
        nn.Conv2d(joint, joint, 3, padding=1), nn.ReLU(),
        nn.Conv2d(joint, image_channels, 3, padding=1),
    )


@COMPOSERS.register("tirg_conv")
class TirgConvComposer(Composer):
    uses_image, uses_text = True, True
    shares_image_head = True

    def __init__(self, embed_dim: int, image_channels: int, vocab_size: int | None = None) -> None:
        super().__init__(embed_dim, image_channels, vocab_size)
        self.residual = _branch(image_channels, embed_dim)
        self.gate = _branch(image_channels, embed_dim)
        self.a = nn.Parameter(torch.tensor([1.0, 10.0]))  # repo init, as in the FC variant
        self.fc = nn.Linear(image_channels, embed_dim)

    def share_image_head(self, head: nn.Module) -> None:
        self.fc = head

    def forward(self, image: ImageFeatures, text: TextInput) -> Tensor:
        x = image.last_map  # (B, C, h, w)
        tiled = text.features[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])  # (B, D, h, w)
        z = torch.cat([x, tiled], dim=1)  # (B, C+D, h, w)
        mixed = self.a[0] * torch.sigmoid(self.gate(z)) * x + self.a[1] * self.residual(z)  # (B, C, h, w)
        return self.fc(mixed.mean(dim=(2, 3)))  # (B, C) -> (B, D)
