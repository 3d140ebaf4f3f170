"""What every composer shares: the text it receives (`TextInput`), the class attributes a caller reads
without building one (`Composer`), and the requirements a composer may put on a dataset."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from models.encoders import ImageFeatures

__all__ = ["REQUIREMENTS", "Composer", "TextInput", "require_vocab_size"]

# What a composer may ask of a dataset (`Composer.requires`); a capability check refuses a composer whose
# requirements the dataset cannot meet. "single_word_text": every modification text is one word
# (an attribute, as in MIT-States and the generated states dataset).
REQUIREMENTS: frozenset[str] = frozenset({"single_word_text"})


@dataclass(frozen=True)
class TextInput:
    """The modification text, both as the text encoder's feature and as the token ids it was computed from."""

    features: Tensor  # (B, D) phi_t from the text encoder
    tokens: Tensor  # (B, L) long, padded with 0
    lengths: Tensor  # (B,) long, >= 1


class Composer(nn.Module):
    """Base of every composer. The class itself is the registered builder:
    `Cls(embed_dim, image_channels, vocab_size=None)`; forward(image: ImageFeatures, text: TextInput) -> (B, D).

    Class attributes, readable through `composer_class(name)` without building:
      uses_image / uses_text: whether psi depends on the reference image / the text at all;
      needs_tokens: reads text.tokens / text.lengths instead of text.features (the text encoder then gets
        no gradient through the composer);
      requires: dataset requirements, a subset of REQUIREMENTS;
      shares_image_head: CirModel hands it the image encoder's `fc` (`share_image_head`), as TIRG's
        last-conv variant re-uses the image model's fc.
    """

    uses_image: ClassVar[bool] = True
    uses_text: ClassVar[bool] = True
    needs_tokens: ClassVar[bool] = False
    requires: ClassVar[frozenset[str]] = frozenset()
    shares_image_head: ClassVar[bool] = False

    def __init__(self, embed_dim: int, image_channels: int, vocab_size: int | None = None) -> None:
        super().__init__()

    def forward(self, image: ImageFeatures, text: TextInput) -> Tensor:
        raise NotImplementedError

    def share_image_head(self, head: nn.Module) -> None:
        raise TypeError(f"{type(self).__name__} does not share the image encoder's head "
                        "(shares_image_head is False)")


def require_vocab_size(name: str, vocab_size: int | None) -> int:
    """Composers that own per-word parameters need the vocabulary size; say so clearly when it is missing."""
    if vocab_size is None or isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"composer {name!r} reads token ids and needs vocab_size=len(Vocabulary) (>= 1), "
                         f"got vocab_size={vocab_size!r}; CirModel passes ModelConfig.vocab_size")
    return vocab_size
