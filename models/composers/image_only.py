"""Image-only baseline: psi = phi_x, the text is ignored (TIRG's `imgonly`; Vo et al., CVPR 2019,
https://arxiv.org/abs/1812.07119)."""
from __future__ import annotations

from torch import Tensor, nn

from models.composers import COMPOSERS
from models.encoders import ImageFeatures


class ImageOnlyComposer(nn.Module):
    uses_image, uses_text = True, False

    def forward(self, image: ImageFeatures, text: Tensor) -> Tensor:
        return image.vector  # (B, D)


@COMPOSERS.register("image_only")
def build_image_only(embed_dim: int, image_channels: int) -> ImageOnlyComposer:
    return ImageOnlyComposer()
