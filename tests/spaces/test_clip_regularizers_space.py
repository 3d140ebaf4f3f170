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


def test_the_paper_budget_refuses_a_weights_file_that_is_absent(tmp_path: Path) -> None:
    space = load_space("clip_regularizers")
    budget = space.budgets["paper"]
    assert budget.image_encoder == "clip_rn50" and budget.encoder_lr_factor == 0
    validate_space(space, budget)  # random weights: what a fresh machine can run
    with pytest.raises(SpaceError, match="RN50.pt.*does not exist"):
        validate_space(space, replace(budget, image_weights=str(tmp_path / "RN50.pt")))


def test_gas_adversarial_term_is_refused_on_cached_features() -> None:
    space = load_space("clip_regularizers")
    adversarial = Parameter("ga_strength", "choice", values=(1e-2,), when=(("regularizer", "ga"),), line=99)
    with pytest.raises(SpaceError, match="ga"):
        validate_space(replace(space, parameters=space.parameters + (adversarial,)), space.budgets["smoke"])
