"""Composers: (image features, text feature) -> query feature psi. One file per composer (methods A.2, B.1).

To add one: a new file here, `@COMPOSERS.register("name")` on its builder, and an import line below.
"""
from models.registry import Registry

COMPOSERS = Registry(
    "composer",
    "models/composers",
    "Builders `(embed_dim: int, image_channels: int) -> nn.Module` whose forward(image: ImageFeatures, "
    "text: Tensor (B, D)) returns the query feature (B, D). The module sets `uses_image` / `uses_text`.",
)

# Imported after COMPOSERS exists: each file registers itself on import.
from models.composers import concat, image_only, text_only, tirg  # noqa: E402,F401

__all__ = ["COMPOSERS"]
