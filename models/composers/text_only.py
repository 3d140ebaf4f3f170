"""Text-only baseline: psi = phi_t, the reference image is ignored (TIRG's `textonly`; Vo et al., CVPR 2019,
https://arxiv.org/abs/1812.07119)."""
from __future__ import annotations

from torch import Tensor

from models.composers import COMPOSERS
from models.composers.base import Composer, TextInput
from models.encoders import ImageFeatures


@COMPOSERS.register("text_only")
class TextOnlyComposer(Composer):
    uses_image, uses_text = False, True

    def forward(self, image: ImageFeatures, text: TextInput) -> Tensor:
        return text.features  # (B, D)
