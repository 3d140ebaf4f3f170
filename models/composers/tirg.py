"""TIRG, FC variant: Text Image Residual Gating (Vo et al., "Composing Text and Image for Image
Retrieval - An Empirical Odyssey", CVPR 2019, https://arxiv.org/abs/1812.07119), in google/tirg's form
(methods B.1; `--model=tirg`):

    gate = sigmoid(W_g ReLU(BN([x; t])))                 W_g: 2D -> D
    res  = W_r2 ReLU(W_r1 ReLU(BN([x; t])))              W_r1: 2D -> 2D, W_r2: 2D -> D
    psi  = a0 * gate * x + a1 * res                      a learnable, init (1, 10)

The two branches have their own batch norms, as in the repo. The paper's ablations (tirg_gate_only,
tirg_residual_only, tirg_fixed) are subclasses that switch a branch off or freeze `a` through the class
attributes below; the maths stays here.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from models.composers import COMPOSERS
from models.composers.base import Composer, TextInput
from models.encoders import ImageFeatures


@COMPOSERS.register("tirg")
class TirgComposer(Composer):
    uses_image, uses_text = True, True
    use_gate: ClassVar[bool] = True  # False: the gated term a0 * gate * x becomes the identity skip x
    use_residual: ClassVar[bool] = True  # False: no residual term
    # The weights of the branches present, in order (gate, residual). (1, 10): the residual starts dominant
    # so the text can move the query early in training (repo init).
    weights_init: ClassVar[tuple[float, ...]] = (1.0, 10.0)
    learn_weights: ClassVar[bool] = True

    def __init__(self, embed_dim: int, image_channels: int, vocab_size: int | None = None) -> None:
        super().__init__(embed_dim, image_channels, vocab_size)
        if self.use_gate:
            self.gate = nn.Sequential(nn.BatchNorm1d(2 * embed_dim), nn.ReLU(), nn.Linear(2 * embed_dim, embed_dim))
        if self.use_residual:
            self.residual = nn.Sequential(
                nn.BatchNorm1d(2 * embed_dim), nn.ReLU(),
                nn.Linear(2 * embed_dim, 2 * embed_dim), nn.ReLU(),
                nn.Linear(2 * embed_dim, embed_dim),
            )
        a = torch.tensor(self.weights_init)
        if self.learn_weights:
            self.a = nn.Parameter(a)
        else:
            self.register_buffer("a", a)

    def forward(self, image: ImageFeatures, text: TextInput) -> Tensor:
        x = image.vector  # (B, D)
        joint = torch.cat([x, text.features], dim=1)  # (B, 2D)
        terms = []
        if self.use_gate:
            terms.append(torch.sigmoid(self.gate(joint)) * x)  # (B, D)
        if self.use_residual:
            terms.append(self.residual(joint))  # (B, D)
        psi = sum(weight * term for weight, term in zip(self.a, terms))
        return psi if self.use_gate else x + psi  # (B, D)
