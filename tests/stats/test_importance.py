"""Importance on a synthetic study whose WHM is driven by one hyperparameter (lr) only."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import study.stats.importance as importance
from study.space import load_space
from study.stats.importance import importance_table

SPACE = """\
# importance test space
name: importance
datasets:
  css: {weight: 1.0}
seeds: 3
parameters:
  composer: {type: choice, values: [tirg, concat]}
  lr: {type: loguniform, low: 1.0e-4, high: 1.0e-1}
  dropout: {type: uniform, low: 0.0, high: 0.5}
  K: {type: choice, values: [2, 8, batch]}
  regularizer: {type: choice, values: [none, ga]}
  ga_strength: {type: loguniform, low: 1.0e-4, high: 1.0e-1, when: {regularizer: ga}}
budgets:
  smoke: {num_samples: 2, epochs: 1, scale: 0.01, embed_dim: 16, batch_size: 8}
"""


def configurations(n: int, composer: str, rng: np.random.Generator) -> pd.DataFrame:
    lr = 10 ** rng.uniform(-4, -1, n)
    regularizer = rng.choice(["none", "ga"], n)
    return pd.DataFrame({
        "param/composer": composer,
        "param/lr": lr,
        "param/dropout": rng.uniform(0, 0.5, n),
        "param/K": rng.choice(["2", "8", "batch"], n),  # a mixed column is stored as strings
        "param/regularizer": regularizer,
        "param/ga_strength": np.where(regularizer == "ga", 10 ** rng.uniform(-4, -1, n), np.nan),
        # WHM peaks at lr = 10^-2.5 and ignores everything else (but a whisper of noise)
        "whm_mean": 0.6 - 0.1 * (np.log10(lr) + 2.5) ** 2 + rng.normal(0, 1e-3, n),
    })


def test_the_parameter_that_drives_whm_ranks_first(tmp_path: Path):
    (tmp_path / "space.yaml").write_text(SPACE)
    rng = np.random.default_rng(0)
    configs = pd.concat([configurations(40, "tirg", rng), configurations(4, "concat", rng)], ignore_index=True)
    table = importance_table(configs, load_space(tmp_path / "space.yaml"))
    tirg = table[table["composer"] == "tirg"].set_index("param")
    assert tirg.index[0] == "lr"
    assert tirg["fanova"].idxmax() == "lr" and tirg.loc["lr", "fanova"] > 0.5
    assert tirg["ped_anova"].idxmax() == "lr" and tirg.loc["lr", "ped_anova"] > 0.5
    assert np.isclose(tirg["fanova"].sum(), 1.0) and np.isclose(tirg["ped_anova"].sum(), 1.0)
    # the conditional parameter exists in only some configurations: PED-ANOVA only
    assert np.isnan(tirg.loc["ga_strength", "fanova"]) and "conditional" in tirg.loc["ga_strength", "note"]
    assert tirg.loc["ga_strength", "n_active"] == (configs["param/composer"].eq("tirg")
                                                    & configs["param/regularizer"].eq("ga")).sum()
    assert (tirg["n_configs"] == 40).all() and "composer" not in tirg.index
    concat = table[table["composer"] == "concat"]
    assert concat["note"].str.startswith("too few configurations (4 < 8)").all()
    assert concat["fanova"].isna().all()
    # reproducible: fANOVA's forest is seeded
    pd.testing.assert_frame_equal(table, importance_table(configs, load_space(tmp_path / "space.yaml")))


def test_without_a_space_the_observed_ranges_are_used():
    configs = configurations(30, "tirg", np.random.default_rng(1)).drop(columns=["param/composer"])
    table = importance_table(configs, None)
    assert set(table["composer"]) == {"(all)"}
    assert table.iloc[0]["param"] == "lr"


def test_without_scikit_learn_fanova_is_left_out_and_said(monkeypatch):
    monkeypatch.setattr(importance, "fanova_available", lambda: False)
    table = importance_table(configurations(30, "tirg", np.random.default_rng(2)), None)
    assert table["fanova"].isna().all() and table["note"].str.contains("needs scikit-learn").all()
    assert table.iloc[0]["param"] == "lr"  # PED-ANOVA still ranks
