"""Attributes as operators (Nagarajan and Grauman, "Attributes as Operators: Factorizing Unseen
Attribute-Object Compositions", ECCV 2018, https://arxiv.org/abs/1803.09851), as TIRG's baseline on
MIT-States (Vo et al., CVPR 2019, https://arxiv.org/abs/1812.07119; methods A.2, B.1):

    psi = M_w x                  M_w a learned D x D matrix owned by the text's one word w, x the image feature

Defined only when every text is a single attribute word (`requires = {"single_word_text"}`): the
capability check refuses other datasets before training, and forward refuses a multi-word batch. The
matrices start at the identity plus small noise, so the untrained operator leaves x almost unchanged.
The paper's auxiliary, inverse-consistency and commutativity losses are not part of this composer.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from models.composers import COMPOSERS
from models.composers.base import Composer, TextInput, require_vocab_size
from models.encoders import ImageFeatures


@COMPOSERS.register("attribute_operator")
class AttributeOperatorComposer(Composer):
    uses_image, uses_text = True, True
    needs_tokens = True
    requires: ClassVar[frozenset[str]] = frozenset({"single_word_text"})

    def __init__(self, embed_dim: int, image_channels: int, vocab_size: int | None = None, *,
                 init_noise: float = 0.01) -> None:
        super().__init__(embed_dim, image_channels, vocab_size)
        vocab_size = require_vocab_size("attribute_operator", vocab_size)
        eye = torch.eye(embed_dim).expand(vocab_size, -1, -1)
        self.operators = nn.Parameter(eye + init_noise * torch.randn(vocab_size, embed_dim, embed_dim))  # (V, D, D)

    def forward(self, image: ImageFeatures, text: TextInput) -> Tensor:
        # A batch padded to one column is single-word; otherwise look at the lengths (rare: costs a sync).
        if text.tokens.shape[1] != 1 and bool((text.lengths != 1).any()):
            raise ValueError(
                f"attribute_operator needs single-word texts (requires 'single_word_text'), got a batch with "
                f"lengths {text.lengths.tolist()}; use it on a dataset whose texts are one attribute word "
                "(states, MIT-States) or pick another composer")
        operators = self.operators[text.tokens[:, 0]]  # (B, D, D)
        return torch.bmm(operators, image.vector[:, :, None]).squeeze(2)  # (B, D)
