"""MRN: Multimodal Residual Network (Kim et al., "Multimodal Residual Learning for Visual QA", NIPS 2016,
https://arxiv.org/abs/1606.01455), one learning block, in the form of the RTIC re-implementation
(nashory/rtic-gcn-pytorch `model/mrn.py`, structure (b) of the MRN paper's Figure 3; methods B.1):

    v   = tanh(L2(drop(tanh(L1(drop(x))))))
    u   = tanh(L3(drop(t)))
    psi = v * u + L4(drop(t))                dropout 0.5, all layers D -> D

The shortcut L4 carries the text (MRN's question side); the image enters only through the product.
"""
from __future__ import annotations

from torch import Tensor, nn

from models.composers import COMPOSERS
from models.composers.base import Composer, TextInput
from models.encoders import ImageFeatures


@COMPOSERS.register("mrn")
class MrnComposer(Composer):
    uses_image, uses_text = True, True

    def __init__(self, embed_dim: int, image_channels: int, vocab_size: int | None = None) -> None:
        super().__init__(embed_dim, image_channels, vocab_size)
        d = embed_dim
        self.image_block = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(d, d), nn.Tanh(), nn.Dropout(0.5), nn.Linear(d, d), nn.Tanh())
        self.text_block = nn.Sequential(nn.Dropout(0.5), nn.Linear(d, d), nn.Tanh())
        self.shortcut = nn.Sequential(nn.Dropout(0.5), nn.Linear(d, d))

    def forward(self, image: ImageFeatures, text: TextInput) -> Tensor:
        v = self.image_block(image.vector)  # (B, D)
        u = self.text_block(text.features)  # (B, D)
        return v * u + self.shortcut(text.features)  # (B, D)
