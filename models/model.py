"""The CIR model: image encoder + text encoder + composer + normalisation layer (TIRG's layout; Vo et al.,
CVPR 2019, https://arxiv.org/abs/1812.07119). The two encoders are chosen together (models/encoders.py):
small_cnn / resnet18 with TIRG's LSTM, or a CLIP image tower with CLIP's text tower (models/clip.py).

With frozen encoders the model also takes their cached output instead of images and token ids
(study/feature_cache.py): a (B, D) float reference or target is already the image encoder's vector, a
(B, D) float text input the text encoder's feature. Then no encoder runs, and ImageFeatures hold no maps.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor, nn

from models.batch import Batch, Outputs
from models.composers import COMPOSERS, TextInput
from models.encoders import ENCODERS, ImageFeatures, encoder_class
from models.losses import NormalizationLayer
from models.text import Tokenizer

__all__ = ["ModelConfig", "CirModel", "Batch", "Outputs", "TextInput", "CACHED_NO_MAPS", "restore_model"]

ENCODER_PREFIXES = ("image_encoder.", "text_encoder.")  # state-dict keys of the two encoders
CACHED_NO_MAPS = "cached features of frozen encoders hold each image's global vector only"


@dataclass(frozen=True)
class ModelConfig:
    composer: str = "tirg"
    # the encoders (models/encoders.py ENCODERS): "small_cnn" for 64x64 generated datasets on CPU,
    # "resnet18" for real images, "clip_rn50" / "clip_vit_b32" with CLIP's text tower
    image_encoder: str = "small_cnn"
    image_weights: str | None = None  # a local weights file of the image encoder (or CLIP model); nothing is downloaded
    embed_dim: int = 512  # the width of small_cnn / resnet18 / LSTM heads; CLIP encoders have their own width
    vocab_size: int = 1  # len(tokenizer), known only once the training texts are read
    frozen_encoders: bool = False  # encoders in eval mode without gradients (batch-norm statistics fixed)

    def __post_init__(self) -> None:
        COMPOSERS.get(self.composer)  # raises, listing the known names
        ENCODERS.get(self.image_encoder)
        for name in ("embed_dim", "vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")


class CirModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        # Image encoder, text encoder, then composer: the order in which random initial weights are drawn.
        encoders = ENCODERS.build(config.image_encoder, embed_dim=config.embed_dim, weights=config.image_weights,
                                  vocab_size=config.vocab_size)
        self.image_encoder, self.text_encoder = encoders.image, encoders.text
        self.embed_dim = encoders.width  # D of the query, the targets and the text feature
        self.composer = COMPOSERS.build(
            config.composer, embed_dim=self.embed_dim, image_channels=self.image_encoder.last_channels,
            vocab_size=config.vocab_size)
        if self.composer.shares_image_head and self.image_encoder.fc is not None:
            self.composer.share_image_head(self.image_encoder.fc)  # TIRG's last-conv variant re-uses the image fc
        self.norm = NormalizationLayer()
        if config.frozen_encoders:
            for parameter in self.encoder_parameters():
                parameter.requires_grad_(False)
            self.train(self.training)

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.image_encoder.parameters()
        yield from self.text_encoder.parameters()

    def train(self, mode: bool = True) -> CirModel:
        """Frozen encoders stay in eval mode: their batch-norm statistics and dropout are fixed, so they
        compute the same function in training, in evaluation and when their output is cached."""
        super().train(mode)
        if self.config.frozen_encoders:
            self.image_encoder.eval()
            self.text_encoder.eval()
        return self

    def encode_image(self, images: Tensor) -> ImageFeatures:
        """Normalised images (B, 3, H, W) -> the image encoder's features; cached features (B, D) of a
        frozen encoder pass as they are, without maps."""
        if images.dim() == 2:
            self._check_cached("image")
            return ImageFeatures(images, missing=CACHED_NO_MAPS)
        return self.image_encoder(images)

    def embed_images(self, images: Tensor) -> Tensor:
        """Gallery / target features (B, D), un-normalised."""
        return self.encode_image(images).vector

    def encode_text(self, tokens: Tensor, lengths: Tensor) -> TextInput:
        """The text as every composer receives it: the encoder's feature phi_t (B, D) and the token ids.
        Float `tokens` (B, D) are the cached features of a frozen text encoder: no token ids then."""
        if tokens.is_floating_point():
            self._check_cached("text")
            no_ids = torch.zeros(tokens.shape[0], 0, dtype=torch.long, device=tokens.device)  # (B, 0)
            return TextInput(features=tokens, tokens=no_ids, lengths=lengths)
        return TextInput(features=self.text_encoder(tokens, lengths), tokens=tokens, lengths=lengths)

    def _check_cached(self, side: str) -> None:
        if not self.config.frozen_encoders:
            raise ValueError(f"the model got cached {side} features, but its encoders are trained "
                             "(ModelConfig.frozen_encoders is False): only frozen encoders give the same output twice")

    def compose(self, images: Tensor, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Query features psi (B, D), un-normalised."""
        return self.composer(self.encode_image(images), self.encode_text(tokens, lengths))

    def forward(self, batch: Batch) -> Outputs:
        # Reference and target go through the encoder separately, as in TIRG (batch-norm statistics per set).
        reference = self.encode_image(batch.reference)
        # The text encoder runs for every composer: DIM reads phi_t even for image_only and show_and_tell.
        text = self.encode_text(batch.tokens, batch.lengths)
        query = self.composer(reference, text)  # (B, D)
        target = self.encode_image(batch.target)
        return Outputs(query=query, target=target.vector, reference_features=reference,
                       target_features=target, text=text.features, reference_images=batch.reference)

    def encoders_fingerprint(self) -> str:
        """sha256 of both encoders' weights and buffers: which encoders computed a set of features."""
        digest = hashlib.sha256()
        for prefix, module in (("image.", self.image_encoder), ("text.", self.text_encoder)):
            for name, tensor in sorted(module.state_dict().items()):
                data = tensor.detach().cpu().contiguous()
                digest.update(f"{prefix}{name}:{data.dtype}:{tuple(data.shape)}\n".encode())
                digest.update(data.reshape(-1).view(torch.uint8).numpy())
        return digest.hexdigest()

    def trained_state(self) -> dict[str, Tensor]:
        """The state dict a checkpoint needs: without the encoders when they are frozen and come from a
        weights file (the file holds them; `restore_model` reloads and checks them by fingerprint)."""
        state = self.state_dict()
        if self.config.frozen_encoders and self.config.image_weights is not None:
            state = {k: v for k, v in state.items() if not k.startswith(ENCODER_PREFIXES)}
        return state

    def load_trained_state(self, state: Mapping[str, Tensor]) -> None:
        """Load `trained_state()` output: a state without encoder keys keeps the encoders built here."""
        has_encoders = any(k.startswith(ENCODER_PREFIXES) for k in state)
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if has_encoders or not k.startswith(ENCODER_PREFIXES)]
        if missing or unexpected:
            raise RuntimeError(f"state does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def restore_model(saved: Mapping[str, Any]) -> tuple[CirModel, Tokenizer]:
    """The model and tokenizer of one run of a checkpoint (study/worker.py SeedRun.state): rebuilt from
    its ModelConfig (frozen encoders reloaded from their weights file and checked by fingerprint)."""
    config = ModelConfig(**saved["model_config"])
    model = CirModel(config)
    model.load_trained_state(saved["model"])
    expected = saved.get("encoders_fingerprint")
    if expected is not None and model.encoders_fingerprint() != expected:
        raise ValueError(f"the encoders rebuilt from {config.image_weights!r} differ from the ones the model was "
                         "trained with (another file under that name?); point image_weights at the original file")
    return model, encoder_class(config.image_encoder).restore_tokenizer(saved["vocab"])
