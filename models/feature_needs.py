"""What a composer and its regularisers need beyond the global features of cached frozen encoders.

Cached features (study/feature_cache.py) hold each image's global vector and each text's feature: no
conv maps, no pixels to differentiate, no token ids. Which of these a composer or regulariser reads is
stated by its own code: `needs_tokens` and `needs_input_grad` are declared, and a read of a conv map
raises MissingFeatures (models/encoders.py). Rather than keep a second list of names that can drift
from the code, `cached_feature_refusals` runs each once on tiny random cached features (B = 4, D = 8,
CPU, milliseconds) and reports what it reached for, so the capability check refuses, before Ray
starts, what would fail in the first step of every trial.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from models.batch import Batch
from models.composers import composer_class
from models.encoders import MissingFeatures
from models.model import CirModel, ModelConfig
from models.objective import Objective, ObjectiveConfig
from models.regularizers import RegularizerConfig

__all__ = ["cached_feature_refusals"]

_B, _D = 4, 8  # tiny: the run only has to reach every read, not compute anything useful


def _tiny_batch() -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(reference=torch.randn(_B, _D, generator=g), tokens=torch.randn(_B, _D, generator=g),
                 lengths=torch.ones(_B, dtype=torch.long), target=torch.randn(_B, _D, generator=g),
                 regions=torch.tensor([[0.0, 0.0, 0.5, 0.5]] * _B))


@lru_cache(maxsize=256)
def cached_feature_refusals(composer: str, regularizers: tuple[RegularizerConfig, ...] = ()) -> tuple[str, ...]:
    """Why `composer` with the enabled `regularizers` cannot train on cached features: one reason per
    part that needs more than the global features; empty when it can."""
    if composer_class(composer).needs_tokens:
        return (f"composer {composer!r} reads token ids (needs_tokens), and cached features hold each text's "
                "feature only",)
    reasons = []
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(0)
        model = CirModel(ModelConfig(composer=composer, embed_dim=_D, vocab_size=4, frozen_encoders=True))
        try:
            model(_tiny_batch())
        except MissingFeatures as error:
            return (f"composer {composer!r} reads {error.part}, and {error.why}",)
        for config in regularizers:
            if not config.enabled:
                continue
            objective = Objective(ObjectiveConfig(k=2, regularizers=(config,)), embed_dim=_D,
                                  mid_channels=model.image_encoder.mid_channels)
            if objective.needs_input_grad:
                reasons.append(f"regularizer {config.name!r} differentiates the loss w.r.t. the reference image's "
                               "pixels through the encoder, and cached features have neither")
                continue
            try:
                objective(model, _tiny_batch())
            except MissingFeatures as error:
                reasons.append(f"regularizer {config.name!r} reads {error.part}, and {error.why}")
    return tuple(reasons)
