"""Small generated datasets shared by the data tests (written once per session, seeded)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from study.data.css import SCENE_FILE
from study.data.css_generate import generate_css
from study.data.safe_npy import read_pickled_npy
from study.data.states import generate_states

CSS_SCALE = 0.03  # 30 base scenes and ~540 pairs per split: seconds, yet every mod kind many times
STATES_SCALE = 0.03  # 2 images per label


@pytest.fixture(scope="session")
def css_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("css")
    generate_css(root, seed=0, scale=CSS_SCALE)
    return root


@pytest.fixture(scope="session")
def css_raw(css_root: Path) -> dict[str, Any]:
    return read_pickled_npy(css_root / SCENE_FILE)


@pytest.fixture(scope="session")
def states_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("states")
    generate_states(root, seed=0, scale=STATES_SCALE)
    return root


FASHION_SCALE = 0.01  # 2 train + 1 test image per caption: 960 images, a few seconds


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from study.data.fashion import generate_fashion

    root = tmp_path_factory.mktemp("fashion")
    generate_fashion(root, seed=0, scale=FASHION_SCALE)
    return root
