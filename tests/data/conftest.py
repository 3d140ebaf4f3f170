"""Small generated datasets shared by the data tests (written once per session, seeded, each with
its generated.json as `python -m study.data generate` writes it, so they are read at 64 px), and a
private image cache for every test (nothing is written under ~/.cache)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from data_layout_writers import CSS_SCALE, FASHION_SCALE, STATES_SCALE

from study.data.cache import generate_into
from study.data.css import SCENE_FILE
from study.data.safe_npy import read_pickled_npy


@pytest.fixture(scope="session")
def css_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("css")
    generate_into("css", root, seed=0, scale=CSS_SCALE)
    return root


@pytest.fixture(scope="session")
def css_raw(css_root: Path) -> dict[str, Any]:
    return read_pickled_npy(css_root / SCENE_FILE)


@pytest.fixture(scope="session")
def states_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("states")
    generate_into("states", root, seed=0, scale=STATES_SCALE)
    return root


def pytest_configure(config: pytest.Config) -> None:
    # study/data/images.py silences torchvision 0.29's per-decode deprecation notice at import; pytest
    # resets warning filters around each test, so say it again here
    config.addinivalue_line("filterwarnings", "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fashion")
    generate_into("fashion", root, seed=0, scale=FASHION_SCALE)
    return root


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cirstudy-cache")


@pytest.fixture(autouse=True)
def private_cache(session_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Image maps opened without a cache_dir go to a per-session folder, not the user's cache."""
    monkeypatch.setenv("CIRSTUDY_CACHE", str(session_cache))
    yield session_cache
