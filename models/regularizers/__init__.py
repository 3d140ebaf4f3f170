"""Regularisers added to the matching loss: one per file (ga.py, dim.py, cmap.py, mmgrad.py), methods
reference A.4-A.7.

To add one: a new file with a `Regularizer` subclass holding a nested `Config`, decorated with
`@REGULARIZERS.register("name")`, and an import line below. Its Config's field names are the study's flat
hyperparameter names, so the study finds them through `regularizer_param_names()`. Its `requires`
(a subset of REQUIREMENTS) says what it needs of the composer and the dataset; see `requirements()`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from models.registry import Registry

REGULARIZERS = Registry(
    "regularizer",
    "models/regularizers",
    "Regularizer classes: `(config, *, embed_dim: int, mid_channels: int) -> Regularizer`; each has a "
    "nested frozen `Config` (field names = flat hyperparameter names) and returns `Terms` from forward.",
)

from models.regularizers.base import REQUIREMENTS, Regularizer, RegularizerConfig, Terms  # noqa: E402
from models.regularizers import cmap, dim, ga, mmgrad  # noqa: E402,F401  (each registers itself)

__all__ = ["REGULARIZERS", "REQUIREMENTS", "Regularizer", "RegularizerConfig", "Terms", "regularizer_param_names",
           "regularizer_configs", "requirements"]


def regularizer_param_names() -> dict[str, str]:
    """Flat hyperparameter name -> regulariser name, e.g. {"ga_strength": "ga", "dim_weight": "dim", ...}."""
    from dataclasses import fields

    return {f.name: name for name in REGULARIZERS.names() for f in fields(REGULARIZERS.get(name).Config)}


def regularizer_configs(params: Mapping[str, Any]) -> tuple[RegularizerConfig, ...]:
    """The Config of every regulariser with a field in `params` (other keys are ignored), in name order.

    A bad value raises ValueError naming the field and the value. A Config may be disabled (weight 0);
    the Objective skips those.
    """
    owners = regularizer_param_names()
    chosen: dict[str, dict[str, Any]] = {}
    for key, value in params.items():
        if key in owners:
            chosen.setdefault(owners[key], {})[key] = value
    return tuple(REGULARIZERS.get(name).Config(**kwargs) for name, kwargs in sorted(chosen.items()))


def requirements(configs: Iterable[RegularizerConfig]) -> dict[str, frozenset[str]]:
    """Enabled regulariser name -> what it requires (a subset of REQUIREMENTS: "regions", "image_in_query",
    "text_in_query"), e.g. {"mmgrad": frozenset({"regions", "image_in_query"})}. Disabled configs are left out;
    GA requires "image_in_query" only when its adversarial term is on."""
    return {config.name: REGULARIZERS.get(config.name).required_by(config) for config in configs if config.enabled}
