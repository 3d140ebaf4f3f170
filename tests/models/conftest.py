"""Tiny models and synthetic batches for the models tests (small images, small D: CPU-fast)."""
from __future__ import annotations

import pytest
import torch

from models.batch import Batch
from models.model import CirModel, ModelConfig
from models.text import Vocabulary

TEXTS = ["add red circle to top-left", "remove blue square", "make small gray object large", "add cube"]
EMBED_DIM = 32


@pytest.fixture
def vocab() -> Vocabulary:
    return Vocabulary.build(TEXTS)


def make_batch(vocab: Vocabulary, b: int = 4, size: int = 32, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    tokens, lengths = vocab.encode([TEXTS[i % len(TEXTS)] for i in range(b)])
    return Batch(reference=torch.randn(b, 3, size, size, generator=g), tokens=tokens, lengths=lengths,
                 target=torch.randn(b, 3, size, size, generator=g))


def make_model(vocab: Vocabulary, composer: str = "tirg", image_encoder: str = "small_cnn",
               seed: int = 0) -> CirModel:
    torch.manual_seed(seed)
    return CirModel(ModelConfig(composer=composer, image_encoder=image_encoder, embed_dim=EMBED_DIM,
                                vocab_size=len(vocab)))


def grads_of(module: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {name: None if p.grad is None else p.grad.clone() for name, p in module.named_parameters()}


def reached(module: torch.nn.Module) -> bool:
    """Some parameter of `module` got a non-zero gradient."""
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
