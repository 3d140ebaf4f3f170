"""Text-only baseline: psi = phi_t, the reference image is ignored (TIRG's `textonly`; Vo et al., CVPR 2019,
https://arxiv.org/abs/1812.07119)."""
from __future__ import annotations

from torch import Tensor, nn

from models.composers import COMPOSERS
from models.encoders import ImageFeatures


class TextOnlyComposer(nn.Module):
    uses_image, uses_text = False, True

    def forward(self, image: ImageFeatures, text: Tensor) -> Tensor:
        return text  # (B, D)


@COMPOSERS.register("text_only")
def build_text_only(embed_dim: int, image_channels: int) -> TextOnlyComposer:
    return TextOnlyComposer()
