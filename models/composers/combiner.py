"""Combiner: CLIP4Cir's composer (Baldrati et al., "Effective conditioned and composed image retrieval
combining CLIP-based features", CVPR-W 2022, and "Composed Image Retrieval using Contrastive Learning
and Task-oriented CLIP-based Features", ACM TOMM 2023; code github.com/ABaldrati/CLIP4Cir `combiner.py`):

    t' = Dropout(ReLU(W_t t)),  x' = Dropout(ReLU(W_x x))        W_t, W_x: D -> P
    r  = [t'; x']                                                (2P)
    c  = Dropout(ReLU(W_c r))                                    W_c: 2P -> H
    l  = sigmoid(W_l2 Dropout(ReLU(W_l1 r)))                     W_l1: 2P -> H, W_l2: H -> 1
    psi = W_o c + l * t + (1 - l) * x                            W_o: H -> D

Dropout 0.5 everywhere, P = 4D and H = 8D as in CLIP4Cir's defaults (2560 and 5120 for RN50x4's
D = 640). The learned scalar l mixes the text and image features themselves into the output, so
psi starts near a blend of the two inputs. CLIP4Cir L2-normalises psi inside the combiner and scales
the logits by 100; here the normalisation layer of the matching loss does both (models/losses.py).
It reads the global features only, so it works with every encoder and on cached frozen features.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.composers import COMPOSERS
from models.composers.base import Composer, TextInput
from models.encoders import ImageFeatures


@COMPOSERS.register("combiner")
class CombinerComposer(Composer):
    uses_image, uses_text = True, True

    def __init__(self, embed_dim: int, image_channels: int, vocab_size: int | None = None, *,
                 projection_factor: int = 4, hidden_factor: int = 8, dropout: float = 0.5) -> None:
        super().__init__(embed_dim, image_channels, vocab_size)
        projection, hidden = projection_factor * embed_dim, hidden_factor * embed_dim
        self.text_projection = nn.Linear(embed_dim, projection)
        self.image_projection = nn.Linear(embed_dim, projection)
        self.combiner = nn.Linear(2 * projection, hidden)
        self.output = nn.Linear(hidden, embed_dim)
        self.dynamic_scalar = nn.Sequential(
            nn.Linear(2 * projection, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1), nn.Sigmoid())
        self.dropout = nn.Dropout(dropout)  # no parameters: one module serves CLIP4Cir's three dropouts

    def forward(self, image: ImageFeatures, text: TextInput) -> Tensor:
        x, t = image.vector, text.features  # (B, D) each
        projected = torch.cat([self.dropout(F.relu(self.text_projection(t))),
                               self.dropout(F.relu(self.image_projection(x)))], dim=1)  # (B, 2P)
        combined = self.dropout(F.relu(self.combiner(projected)))  # (B, H)
        mix = self.dynamic_scalar(projected)  # (B, 1) in (0, 1)
        return self.output(combined) + mix * t + (1 - mix) * x  # (B, D)
