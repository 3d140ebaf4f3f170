"""The CIR model: image encoder + text encoder + composer + normalisation layer (TIRG's layout; Vo et al.,
CVPR 2019, https://arxiv.org/abs/1812.07119)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from models.batch import Batch, Outputs
from models.composers import COMPOSERS, TextInput
from models.encoders import IMAGE_ENCODERS
from models.losses import NormalizationLayer
from models.text import TextEncoder

__all__ = ["ModelConfig", "CirModel", "Batch", "Outputs", "TextInput"]


@dataclass(frozen=True)
class ModelConfig:
    composer: str = "tirg"
    image_encoder: str = "small_cnn"  # 64x64 generated datasets on CPU; "resnet18" for real images
    image_weights: str | None = None  # local torchvision state dict; nothing is downloaded
    embed_dim: int = 512
    vocab_size: int = 1  # len(Vocabulary), known only once the training texts are read

    def __post_init__(self) -> None:
        COMPOSERS.get(self.composer)  # raises, listing the known names
        IMAGE_ENCODERS.get(self.image_encoder)
        for name in ("embed_dim", "vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")


class CirModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = IMAGE_ENCODERS.build(
            config.image_encoder, embed_dim=config.embed_dim, weights=config.image_weights)
        self.text_encoder = TextEncoder(config.vocab_size, config.embed_dim)
        self.composer = COMPOSERS.build(
            config.composer, embed_dim=config.embed_dim, image_channels=self.image_encoder.last_channels,
            vocab_size=config.vocab_size)
        if self.composer.shares_image_head:  # TIRG's last-conv variant re-uses the image model's fc
            self.composer.share_image_head(self.image_encoder.fc)
        self.norm = NormalizationLayer()

    def embed_images(self, images: Tensor) -> Tensor:
        """Gallery / target features (B, D), un-normalised."""
        return self.image_encoder(images).vector

    def encode_text(self, tokens: Tensor, lengths: Tensor) -> TextInput:
        """The text as every composer receives it: the encoder's feature phi_t (B, D) and the token ids."""
        return TextInput(features=self.text_encoder(tokens, lengths), tokens=tokens, lengths=lengths)

    def compose(self, images: Tensor, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Query features psi (B, D), un-normalised."""
        return self.composer(self.image_encoder(images), self.encode_text(tokens, lengths))

    def forward(self, batch: Batch) -> Outputs:
        # Reference and target go through the encoder separately, as in TIRG (batch-norm statistics per set).
        reference = self.image_encoder(batch.reference)
        # The text encoder runs for every composer: DIM reads phi_t even for image_only and show_and_tell.
        text = self.encode_text(batch.tokens, batch.lengths)
        query = self.composer(reference, text)  # (B, D)
        target = self.image_encoder(batch.target)
        return Outputs(query=query, target=target.vector, reference_features=reference,
                       target_features=target, text=text.features, reference_images=batch.reference)
