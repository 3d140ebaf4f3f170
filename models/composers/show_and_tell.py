"""Show and Tell as a composer (Vinyals et al., "Show and Tell: A Neural Image Caption Generator",
CVPR 2015, https://arxiv.org/abs/1411.4555), as TIRG's baseline (Vo et al., CVPR 2019,
https://arxiv.org/abs/1812.07119; methods B.1):

    inputs = [x, e(w_1), ..., e(w_L)]            x the image feature (D), e a word embedding to D
    psi    = Linear(H -> D)(LSTM(inputs) at step L)   the state after each text's last real word

The LSTM reads the token ids (needs_tokens), not the text encoder's feature: the text is encoded here,
conditioned on the image from the first step. x is already the image encoder's Linear projection,
which plays the role of Show and Tell's image embedding W_e.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from models.composers import COMPOSERS
from models.composers.base import Composer, TextInput, require_vocab_size
from models.encoders import ImageFeatures


@COMPOSERS.register("show_and_tell")
class ShowAndTellComposer(Composer):
    uses_image, uses_text = True, True
    needs_tokens = True

    def __init__(self, embed_dim: int, image_channels: int, vocab_size: int | None = None, *,
                 hidden_dim: int = 512) -> None:
        super().__init__(embed_dim, image_channels, vocab_size)
        self.embedding = nn.Embedding(require_vocab_size("show_and_tell", vocab_size), embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, num_layers=1, batch_first=True)  # hidden 512: TIRG's text LSTM
        self.fc = nn.Linear(hidden_dim, embed_dim)

    def forward(self, image: ImageFeatures, text: TextInput) -> Tensor:
        inputs = torch.cat([image.vector[:, None, :], self.embedding(text.tokens)], dim=1)  # (B, 1+L, D)
        # The GA penalty differentiates the input gradient again, which cuDNN's RNN cannot do (double
        # backward); the native kernels can. Evaluation (no grad) keeps cuDNN.
        with torch.backends.cudnn.flags(enabled=not torch.is_grad_enabled()):
            states, _ = self.lstm(inputs)  # (B, 1+L, H)
        # Step `length` is the last real word (step 0 is the image); a forward LSTM has not seen the
        # padding after it, so no packing is needed.
        last = text.lengths.to(states.device).view(-1, 1, 1).expand(-1, 1, states.shape[2])
        return self.fc(states.gather(1, last).squeeze(1))  # (B, H) -> (B, D)
