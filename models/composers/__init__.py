"""Composers: (image features, text) -> query feature psi. One file per composer (methods A.2, B.1).

To add one: a new file here holding a `Composer` subclass decorated with `@COMPOSERS.register("name")`
(the class is its own builder), and an import line below. `composer_class(name)` gives the class, so a
caller can read `uses_image`, `uses_text`, `needs_tokens` and `requires` without building one.
"""
from __future__ import annotations

from models.composers.base import REQUIREMENTS, Composer, TextInput
from models.registry import Registry

COMPOSERS = Registry(
    "composer",
    "models/composers",
    "Builders `(*, embed_dim: int, image_channels: int, vocab_size: int | None = None) -> Composer` (every "
    "builder takes all three keywords; vocab_size is needed only by composers with needs_tokens) whose "
    "forward(image: ImageFeatures, text: TextInput) returns the query feature (B, D). Each builder is its "
    "Composer class, which sets `uses_image`, `uses_text`, `needs_tokens` and `requires`.",
)


def composer_class(name: str) -> type[Composer]:
    """The registered class of composer `name` (raises, listing the known names, when there is none)."""
    builder = COMPOSERS.get(name)
    if not (isinstance(builder, type) and issubclass(builder, Composer)):
        raise TypeError(f"composer {name!r} is registered as {builder!r}, not a Composer subclass; "
                        f"register the class itself in models/composers/{name}.py")
    return builder


# Imported after COMPOSERS exists: each file registers itself on import.
from models.composers import (  # noqa: E402,F401
    attribute_operator,
    combiner,
    concat,
    film,
    image_only,
    mrn,
    param_hash,
    relationship,
    show_and_tell,
    text_only,
    tirg,
    tirg_conv,
    tirg_fixed,
    tirg_gate_only,
    tirg_residual_only,
)

__all__ = ["COMPOSERS", "REQUIREMENTS", "Composer", "TextInput", "composer_class"]
