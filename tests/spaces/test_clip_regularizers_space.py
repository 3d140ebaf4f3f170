"""search_spaces/clip_regularizers.yaml: frozen CLIP features over FashionIQ's three categories and
CIRR; what it searches passes the checks study.run makes before Ray starts, and a regulariser term that
needs the encoder's graph is refused there."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from study.space import Parameter, SpaceError, load_space
from study.trial_config import validate_space


def test_every_budget_but_paper_validates_on_generated_data() -> None:
    space = load_space("clip_regularizers")
    assert [e.key for e in space.datasets] == ["fashioniq-dress", "fashioniq-shirt", "fashioniq-toptee", "cirr"]
    assert all(e.root is None for e in space.datasets)  # generated: runs on a fresh machine
    for name in ("smoke", "default"):
        budget = space.budgets[name]
        assert budget.encoder_lr_factor == 0 and budget.cached_features
        validate_space(space, budget)


def test_the_paper_budget_names_a_weights_file_it_refuses_when_absent() -> None:
    space = load_space("clip_regularizers")
    budget = space.budgets["paper"]
    assert budget.image_encoder == "clip_rn50" and budget.image_weights
    if Path(budget.image_weights).exists():
        pytest.skip(f"{budget.image_weights} exists on this machine; the refusal needs it absent")
    with pytest.raises(SpaceError, match="weights"):
        validate_space(space, budget)


def test_gas_adversarial_term_is_refused_on_cached_features() -> None:
    space = load_space("clip_regularizers")
    adversarial = Parameter("ga_strength", "choice", values=(1e-2,), when=(("regularizer", "ga"),), line=99)
    with pytest.raises(SpaceError, match="ga"):
        validate_space(replace(space, parameters=space.parameters + (adversarial,)), space.budgets["smoke"])
