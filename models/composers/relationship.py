"""Relationship: a relation network (Santoro et al., "A simple neural network module for relational
reasoning", NIPS 2017, https://arxiv.org/abs/1706.01427) over the last conv map, as TIRG's
"Relationship" baseline (methods B.1):

    o_i = [X[:, i]; x_i; y_i]                       each of the N = h*w cells with its coordinates in [-1, 1]
    psi = f( sum_{i, j} g([o_i; o_j; t]) )          all N^2 ordered pairs, the text in every pair

g: 4 layers of 256 units with ReLU, f: 256, 256, Dropout(0.5), D (Santoro's CLEVR sizes, last layer D).
g's first layer is linear in [o_i; o_j; t], so its three blocks are applied once per cell and once per
text and the results broadcast-added over the pairs: the same values as on the concatenation, without
materialising N^2 concatenated rows (N^2 rows only from the second layer on: 256 pairs on a 4x4 map,
2401 on ResNet-18's 7x7).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.composers import COMPOSERS
from models.composers.base import Composer, TextInput
from models.encoders import ImageFeatures


def cell_coordinates(h: int, w: int, *, device: torch.device, dtype: torch.dtype) -> Tensor:
    ys = torch.linspace(-1.0, 1.0, h, device=device, dtype=dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=device, dtype=dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1).reshape(h * w, 2)  # (N, 2), row-major like flatten


@COMPOSERS.register("relationship")
class RelationshipComposer(Composer):
    uses_image, uses_text = True, True

    def __init__(self, embed_dim: int, image_channels: int, vocab_size: int | None = None, *,
                 hidden_dim: int = 256) -> None:
        super().__init__(embed_dim, image_channels, vocab_size)
        self.cell_dim = image_channels + 2
        self.g_in = nn.Linear(2 * self.cell_dim + embed_dim, hidden_dim)  # on [o_i; o_j; t]
        self.g = nn.Sequential(
            nn.ReLU(), nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
        )
        self.f = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Dropout(0.5), nn.Linear(hidden_dim, embed_dim),
        )

    def objects(self, last_map: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, N, C + 2): one object per cell, with its coordinates."""
        b, _, h, w = last_map.shape
        cells = last_map.flatten(2).transpose(1, 2)  # (B, N, C)
        coords = cell_coordinates(h, w, device=last_map.device, dtype=last_map.dtype).expand(b, -1, -1)
        return torch.cat([cells, coords], dim=2)  # (B, N, C+2)

    def forward(self, image: ImageFeatures, text: TextInput) -> Tensor:
        o = self.objects(image.last_map)  # (B, N, C+2)
        c = self.cell_dim
        w_i, w_j, w_t = self.g_in.weight.split([c, c, self.g_in.in_features - 2 * c], dim=1)
        first_i = F.linear(o, w_i)  # (B, N, H)
        first_j = F.linear(o, w_j)  # (B, N, H)
        first_t = F.linear(text.features, w_t, self.g_in.bias)  # (B, H)
        pairs = first_i[:, :, None, :] + first_j[:, None, :, :] + first_t[:, None, None, :]  # (B, N, N, H)
        relations = self.g(pairs).sum(dim=(1, 2))  # (B, H)
        return self.f(relations)  # (B, D)
