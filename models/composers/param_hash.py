"""Parameter hashing (Noh, Seo and Han, "Image Question Answering using Convolutional Neural Network with
Dynamic Parameter Prediction", CVPR 2016, https://arxiv.org/abs/1511.05756), in the form of the RTIC
re-implementation (nashory/rtic-gcn-pytorch `model/param_hash.py`; methods B.1):

    h   = HashLinear(t)                                  D -> D, W[i, j] = sign[i, j] * w[index[i, j]]
    psi = Linear(Dropout0.5(ReLU(BN(x + h))))

HashLinear is the hashing trick of Chen et al., "Compressing Neural Networks with the Hashing Trick",
ICML 2015 (https://arxiv.org/abs/1504.04788): the virtual D x D weight (and the bias) read a shared
vector of `compression * D * D` free values through a fixed index map, each entry with a fixed random
sign. RTIC draws the map and the signs with xxhash; here a torch.Generator seeded with `hash_seed` draws
them, so two instances with the same seed share them (and they are saved as buffers). compression = 1,
RTIC's default, still ties entries through collisions.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.composers import COMPOSERS
from models.composers.base import Composer, TextInput
from models.encoders import ImageFeatures


class HashLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, *, compression: float = 1.0, hash_seed: int = 2) -> None:
        super().__init__()
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"HashLinear compression must be in (0, 1], got {compression}")
        generator = torch.Generator().manual_seed(hash_seed)
        n_weight = math.ceil(in_features * out_features * compression)
        n_bias = math.ceil(out_features * compression)
        # Drawn in a fixed order from one generator: the same seed gives the same map on every instance.
        self.register_buffer("weight_index", torch.randint(n_weight, (out_features, in_features), generator=generator))
        self.register_buffer("weight_sign", torch.randint(2, (out_features, in_features), generator=generator) * 2.0 - 1)
        self.register_buffer("bias_index", torch.randint(n_bias, (out_features,), generator=generator))
        self.register_buffer("bias_sign", torch.randint(2, (out_features,), generator=generator) * 2.0 - 1)
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's default range, as RTIC
        self.hashed_weight = nn.Parameter(torch.empty(n_weight).uniform_(-bound, bound))
        self.hashed_bias = nn.Parameter(torch.empty(n_bias).uniform_(-bound, bound))

    def virtual_weight(self) -> Tensor:
        return self.hashed_weight[self.weight_index] * self.weight_sign  # (out, in)

    def forward(self, x: Tensor) -> Tensor:  # x (B, in)
        bias = self.hashed_bias[self.bias_index] * self.bias_sign  # (out,)
        return F.linear(x, self.virtual_weight(), bias)  # (B, out)


@COMPOSERS.register("param_hash")
class ParamHashComposer(Composer):
    uses_image, uses_text = True, True

    def __init__(self, embed_dim: int, image_channels: int, vocab_size: int | None = None, *,
                 compression: float = 1.0, hash_seed: int = 2) -> None:
        super().__init__(embed_dim, image_channels, vocab_size)
        self.hash_linear = HashLinear(embed_dim, embed_dim, compression=compression, hash_seed=hash_seed)
        self.mlp = nn.Sequential(nn.BatchNorm1d(embed_dim), nn.ReLU(), nn.Dropout(0.5), nn.Linear(embed_dim, embed_dim))

    def forward(self, image: ImageFeatures, text: TextInput) -> Tensor:
        return self.mlp(image.vector + self.hash_linear(text.features))  # (B, D)
