"""Image-only baseline: psi = phi_x, the text is ignored (TIRG's `imgonly`; Vo et al., CVPR 2019,
https://arxiv.org/abs/1812.07119)."""
from __future__ import annotations

from torch import Tensor

from models.composers import COMPOSERS
from models.composers.base import Composer, TextInput
from models.encoders import ImageFeatures


@COMPOSERS.register("image_only")
class ImageOnlyComposer(Composer):
    uses_image, uses_text = True, False

    def forward(self, image: ImageFeatures, text: TextInput) -> Tensor:
        return image.vector  # (B, D)
