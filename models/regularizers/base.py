"""What every regulariser shares: a frozen Config whose field names are the study's flat hyperparameter
names (validated on construction), the `Terms` it returns, what it requires of the composer and the
dataset, and the hook run after gradient sync."""
from __future__ import annotations

import math
import numbers
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, ClassVar, Literal

from torch import Tensor, nn

from models.batch import Batch, Outputs

if TYPE_CHECKING:
    from models.model import CirModel

__all__ = ["REQUIREMENTS", "RegularizerConfig", "Regularizer", "Terms"]

# What a regulariser may need from the rest of the trial; checked against composers and datasets elsewhere.
REQUIREMENTS = frozenset({
    "regions",  # the dataset's queries carry the box of the region the text changes (Batch.regions)
    "image_in_query",  # the composer uses the reference image (else d psi / d x is zero)
    "text_in_query",  # the composer uses the text
})


@dataclass(frozen=True)
class RegularizerConfig:
    """Base of every regulariser's nested `Config`. Float fields are weights / strengths: finite, >= 0."""

    name: ClassVar[str] = ""  # the regulariser's registry name

    @property
    def enabled(self) -> bool:
        raise NotImplementedError(f"{type(self).__qualname__} must say when it is enabled")

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value, kind = getattr(self, f.name), hints[f.name]
            if typing.get_origin(kind) is Literal:
                if value not in typing.get_args(kind):
                    raise ValueError(f"{f.name} must be one of {list(typing.get_args(kind))}, got {value!r}")
            elif kind is float:
                if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
                        or value < 0:
                    raise ValueError(f"{f.name} must be a finite number >= 0, got {value!r}")
                object.__setattr__(self, f.name, float(value))  # numpy / int -> float, so configs compare equal
            elif kind is int:
                if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                    raise ValueError(f"{f.name} must be an int, got {value!r}")
                object.__setattr__(self, f.name, int(value))


@dataclass
class Terms:
    losses: dict[str, Tensor] = field(default_factory=dict)  # named loss terms, already weighted ("loss/ga_adv")
    # Scalars for TensorBoard ("ga/input_grad_l1"): floats or detached 0-dim tensors. The Objective converts
    # the tensors of all regularisers together, in one device sync; a float() per log stalls a GPU each time.
    logs: dict[str, float | Tensor] = field(default_factory=dict)


# Runs the model, the normalisation layer and the matching loss on another batch -> per-query loss (B,).
Rematch = Callable[[Batch], Tensor]


class Regularizer(nn.Module):
    """Subclasses define a nested `Config(RegularizerConfig)` and `forward`; they are registered as builders
    `(config, *, embed_dim, mid_channels) -> Regularizer` and built only when `config.enabled`."""

    Config: ClassVar[type[RegularizerConfig]]
    requires: ClassVar[frozenset[str]] = frozenset()  # a subset of REQUIREMENTS
    needs_input_grad: bool = False  # set when forward differentiates w.r.t. the reference image

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        unknown = set(cls.requires) - REQUIREMENTS
        if unknown:  # a typo here would silently skip a check elsewhere: fail at import instead
            raise ValueError(f"{cls.__name__}.requires has unknown requirement(s) {sorted(unknown)}; "
                             f"known: {sorted(REQUIREMENTS)} (models/regularizers/base.py)")

    @classmethod
    def required_by(cls, config: RegularizerConfig) -> frozenset[str]:
        """What this configuration needs; `requires` unless a switched-off term needs less (GA)."""
        return cls.requires

    def __init__(self, config: RegularizerConfig, *, embed_dim: int, mid_channels: int) -> None:
        super().__init__()
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} needs a {self.Config.__qualname__}, got {type(config).__name__}")
        self.config = config

    def forward(self, outputs: Outputs, match_loss: Tensor, *, model: CirModel, batch: Batch,
                rematch: Rematch) -> Terms:
        """match_loss: (B,) per-query matching loss l_i, with its graph."""
        raise NotImplementedError

    def after_gradient_sync(self, parameters: list[nn.Parameter], *, step: int, seed: int) -> dict[str, float]:
        """Edit gradients after the all-reduce, before the optimiser step; returns logs. Default: nothing."""
        return {}
