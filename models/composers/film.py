"""FiLM: Feature-wise Linear Modulation (Perez et al., "FiLM: Visual Reasoning with a General
Conditioning Layer", AAAI 2018, https://arxiv.org/abs/1709.07871), applied to the last conv map as in
TIRG's comparison, in the form of the RTIC re-implementation (nashory/rtic-gcn-pytorch `model/film.py`;
methods B.1):

    (gamma_k, beta_k)_k = split(Linear(t))                       Linear: D -> 2 * C * n_blocks
    block_k(X) = r + ReLU(gamma_k * BN(Conv3x3(r)) + beta_k),   r = ReLU(Conv1x1(X)), BN without affine
    psi = Linear(C -> D)(GlobalAvgPool(block_n(... block_1(X))))

Departures from RTIC: its Conv1x1 has padding 1 (the map grows by 2 per block); here padding 0 keeps
the h x w grid. RTIC pools to C and relies on C = D; here a Linear maps C to D. gamma is predicted
directly (not 1 + delta), as in RTIC.
"""
from __future__ import annotations

from torch import Tensor, nn

from models.composers import COMPOSERS
from models.composers.base import Composer, TextInput
from models.encoders import ImageFeatures


class FilmBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)  # BN follows: a bias would cancel
        self.bn = nn.BatchNorm2d(channels, affine=False)  # gamma, beta come from the text instead
        self.relu = nn.ReLU()

    def forward(self, x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:  # x (B, C, h, w), gamma/beta (B, C)
        resid = self.relu(self.conv1(x))
        out = self.bn(self.conv2(resid))
        out = gamma[:, :, None, None] * out + beta[:, :, None, None]
        return self.relu(out) + resid  # (B, C, h, w)


@COMPOSERS.register("film")
class FilmComposer(Composer):
    uses_image, uses_text = True, True

    def __init__(self, embed_dim: int, image_channels: int, vocab_size: int | None = None, *,
                 n_blocks: int = 1) -> None:
        # One block by default: the modulated map feeds straight into the pool, and each block costs a
        # 3x3 conv at C channels (512 on ResNet-18). FiLM's CLEVR model used 4.
        super().__init__(embed_dim, image_channels, vocab_size)
        self.n_blocks = n_blocks
        self.film = nn.Linear(embed_dim, 2 * image_channels * n_blocks)
        self.blocks = nn.ModuleList(FilmBlock(image_channels) for _ in range(n_blocks))
        self.fc = nn.Linear(image_channels, embed_dim)

    def forward(self, image: ImageFeatures, text: TextInput) -> Tensor:
        x = image.last_map  # (B, C, h, w)
        params = self.film(text.features).chunk(2 * self.n_blocks, dim=1)  # 2 * n_blocks tensors (B, C)
        for k, block in enumerate(self.blocks):
            x = block(x, params[2 * k], params[2 * k + 1])
        return self.fc(x.mean(dim=(2, 3)))  # (B, C) -> (B, D)
