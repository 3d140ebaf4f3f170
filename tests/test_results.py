import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import study.parquet_io as parquet_io
from study.results import (CELL_WEIGHTS_KEY, format_ranking, main, rank_configs, read_trials,
                           regularizer_gains, sign_flip_p_value, trial_whm, write_parquet_atomic,
                           write_ranking)

REPO = Path(__file__).resolve().parents[1]
# train cell at weight 0: present in the table, absent from the score
WEIGHTS = {"css/test@1": 1.0, "css/test@10": 1.0, "states/test@1": 2.0, "css/train@1": 0.0}


def trial(trial_id, seed, params, css1, css10, states1, status="TERMINATED"):
    return {"trial_id": trial_id, "status": status, "seed": seed,
            **{f"param/{k}": v for k, v in params.items()},
            "recall/css/test@1": css1, "recall/css/test@10": css10, "recall/states/test@1": states1,
            "recall/css/train@1": 0.0,  # weight 0: its zero must not zero the WHM
            "whm": -1.0,  # stale on purpose: the ranking recomputes it from the recalls
            "epoch": 3, "wall_time_s": 1.5, "nodes": "node0"}


GA = {"composer": "tirg", "regularizer": "ga", "ga_weight": 0.1, "lr": 0.01}
NONE = {"composer": "tirg", "regularizer": "none", "ga_weight": None, "lr": 0.01}


def two_configs() -> pd.DataFrame:
    """2 configs x 3 seeds; `ga_weight` is conditional (null without GA); one errored trial."""
    return pd.DataFrame([
        # WHM = 4 / (1/css1 + 1/css10 + 2/states1)
        trial("a0", 0, GA, 0.5, 0.5, 0.5),    # 4/8  = 0.5
        trial("a1", 1, GA, 0.25, 0.5, 0.5),   # 4/10 = 0.4
        trial("a2", 2, GA, 0.5, 1.0, 0.25),   # 4/11
        trial("a3", 3, GA, None, None, None, status="ERROR"),
        trial("b0", 0, NONE, 0.2, 0.2, 0.2),
        trial("b1", 1, NONE, 0.2, 0.2, 0.2),
        trial("b2", 2, NONE, 0.2, 0.2, 0.2),
    ])


def test_trial_whm_uses_only_weighted_cells():
    assert trial_whm(two_configs().iloc[1], WEIGHTS) == pytest.approx(0.4)
    with pytest.raises(ValueError, match=r"trial a3: no recall in \['recall/css/test@1'"):
        trial_whm(two_configs().iloc[3], WEIGHTS)
    with pytest.raises(ValueError, match="not '<dataset>/<split>@<k>'"):
        trial_whm(two_configs().iloc[1], {"css@1": 1.0})


def test_rank_configs_against_hand_computed_values():
    ranking = rank_configs(two_configs(), WEIGHTS)
    assert list(ranking.columns[:6]) == ["rank", "whm_mean", "whm_low", "whm_high", "n_seeds",
                                         "tied_with_best"]
    assert ranking["rank"].tolist() == [1, 2]
    best, other = ranking.iloc[0], ranking.iloc[1]
    assert best["param/regularizer"] == "ga" and best["param/ga_weight"] == 0.1
    assert best["whm_mean"] == pytest.approx((0.5 + 0.4 + 4 / 11) / 3)
    assert best["n_seeds"] == 3  # the ERROR trial is not counted
    assert best["score/css"] == pytest.approx((0.5 + 1 / 3 + 2 / 3) / 3)  # 2 / (1/css1 + 1/css10)
    assert best["score/states"] == pytest.approx((0.5 + 0.5 + 0.25) / 3)
    # nulls equal nulls: the three seeds without ga_weight form one configuration
    assert pd.isna(other["param/ga_weight"]) and other["n_seeds"] == 3
    assert other["whm_mean"] == pytest.approx(0.2)
    assert (other["whm_low"], other["whm_high"]) == (other["whm_mean"], other["whm_mean"])  # identical seeds
    assert best["whm_low"] <= best["whm_mean"] <= best["whm_high"]
    assert best["whm_low"] >= 4 / 11 - 1e-12 and best["whm_high"] <= 0.5 + 1e-12
    assert ranking["tied_with_best"].tolist() == [True, False]
    assert "score/css" in ranking and "score/train" not in ranking


def test_ranking_is_seeded_and_bootstrap_contains_the_mean():
    rng = np.random.default_rng(5)
    rows = [trial(f"t{c}-{s}", s, {**GA, "lr": float(c)}, *rng.uniform(0.05, 1.0, 3))
            for c in range(6) for s in range(int(rng.integers(2, 6)))]
    trials = pd.DataFrame(rows)
    ranking = rank_configs(trials, WEIGHTS, n_bootstrap=500, seed=3)
    assert ((ranking["whm_low"] <= ranking["whm_mean"]) & (ranking["whm_mean"] <= ranking["whm_high"])).all()
    assert ranking["whm_mean"].is_monotonic_decreasing
    pd.testing.assert_frame_equal(ranking, rank_configs(trials, WEIGHTS, n_bootstrap=500, seed=3))


def test_tied_with_best_means_overlapping_intervals():
    weights = {"d/test@1": 1.0}
    rows = []
    for lr, recalls in {1: [0.5, 0.6], 2: [0.45, 0.55], 3: [0.1, 0.1], 4: [0.3, 0.52]}.items():
        for seed, r in enumerate(recalls):
            rows.append({"trial_id": f"{lr}-{seed}", "status": "TERMINATED", "seed": seed,
                         "param/lr": lr, "recall/d/test@1": r})
    ranking = rank_configs(pd.DataFrame(rows), weights).set_index("param/lr")
    # with two seeds the interval is [min, max]: best [0.5, 0.6]
    assert ranking.loc[1, ["whm_low", "whm_high"]].tolist() == pytest.approx([0.5, 0.6])
    assert ranking["tied_with_best"].to_dict() == {1: True, 2: True, 4: True, 3: False}
    assert ranking.loc[[1, 2, 4, 3], "rank"].tolist() == [1, 2, 3, 4]


def gains_trials() -> pd.DataFrame:
    rows = []
    def add(composer, regularizer, seed, recall, lr=0.01):
        rows.append({"trial_id": f"{composer}-{regularizer}-{seed}-{lr}", "status": "TERMINATED",
                     "seed": seed, "param/composer": composer, "param/regularizer": regularizer,
                     "param/lr": lr, "recall/d/test@1": recall})
    for seed, r in enumerate([0.2, 0.3, 0.4]):
        add("tirg", "none", seed, r)
    add("tirg", "ga", 0, 0.3)
    add("tirg", "ga", 0, 0.5, lr=0.1)  # same seed, other lr: averaged to 0.4 first
    add("tirg", "ga", 1, 0.35)
    add("tirg", "ga", 2, 0.5)
    add("tirg", "dim", 0, 0.1)
    add("tirg", "dim", 1, 0.4)
    add("tirg", "dim", 7, 0.9)  # no baseline for seed 7: unpaired
    add("concat", "ga", 0, 0.9)  # concat has no baseline at all
    return pd.DataFrame(rows)


def test_regularizer_gains_against_hand_computation():
    gains = regularizer_gains(gains_trials(), {"d/test@1": 1.0}).set_index("param/regularizer")
    assert list(gains.index) == ["dim", "ga"] and set(gains["param/composer"]) == {"tirg"}
    # ga: per-seed diffs [0.4-0.2, 0.35-0.3, 0.5-0.4], all positive: 2 of 8 sign patterns as extreme
    assert gains.loc["ga", "gain_mean"] == pytest.approx((0.2 + 0.05 + 0.1) / 3)
    assert gains.loc["ga", "n_pairs"] == 3
    assert gains.loc["ga", "p_value"] == pytest.approx(0.25)
    # dim: diffs [-0.1, 0.1]: every sign pattern has |sum| >= 0
    assert gains.loc["dim", "gain_mean"] == pytest.approx(0.0)
    assert (gains.loc["dim", "n_pairs"], gains.loc["dim", "p_value"]) == (2, 1.0)


def test_sign_flip_p_value_exact_and_monte_carlo():
    assert sign_flip_p_value([1, 1, 1, 1, -1]) == pytest.approx(12 / 32)  # |sum| >= 3: 0,1,4,5 flips
    assert sign_flip_p_value([0.1] * 16) == pytest.approx(2 / 2 ** 16)
    many = [0.1] * 20
    p = sign_flip_p_value(many, seed=1)
    assert p == sign_flip_p_value(many, seed=1) and 0 < p < 0.01


def test_regularizer_gains_skips_without_columns():
    trials = two_configs().drop(columns=["param/composer"])
    gains = regularizer_gains(trials, WEIGHTS)
    assert gains.empty and list(gains.columns) == ["param/composer", "param/regularizer",
                                                   "gain_mean", "n_pairs", "p_value"]


def test_atomic_write_round_trips_metadata_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "t.parquet"
    meta = {CELL_WEIGHTS_KEY: json.dumps(WEIGHTS).encode()}
    write_parquet_atomic(two_configs(), path, meta)
    write_parquet_atomic(two_configs().head(2), path, meta)  # replace an existing file
    assert [p.name for p in path.parent.iterdir()] == ["t.parquet"]
    table = pq.read_table(path)
    assert json.loads(table.schema.metadata[CELL_WEIGHTS_KEY]) == WEIGHTS
    assert table.to_pandas()["trial_id"].tolist() == ["a0", "a1"]

    def fail(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(parquet_io.pq, "write_table", fail)
    with pytest.raises(OSError, match="disk full"):
        write_parquet_atomic(two_configs(), path, meta)
    assert [p.name for p in path.parent.iterdir()] == ["t.parquet"]  # old file intact, no temp
    assert pq.read_table(path).num_rows == 2


def write_study(directory: Path, trials: pd.DataFrame, weights=WEIGHTS) -> Path:
    write_parquet_atomic(trials, directory / "trials.parquet",
                         {CELL_WEIGHTS_KEY: json.dumps(weights).encode()})
    return directory


def test_read_trials_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such study directory"):
        read_trials(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"trials\.parquet: not found"):
        read_trials(tmp_path)
    write_parquet_atomic(two_configs(), tmp_path / "trials.parquet")
    with pytest.raises(ValueError, match=r"trials\.parquet: schema metadata lacks 'cirstudy.cell_weights'"):
        read_trials(tmp_path)
    write_study(tmp_path, two_configs())
    trials, weights = read_trials(tmp_path)
    assert weights == WEIGHTS and len(trials) == 7


def test_write_ranking_writes_both_tables(tmp_path):
    trials = pd.concat([two_configs(), gains_trials().assign(**{
        "recall/css/test@1": 0.5, "recall/css/test@10": 0.5, "recall/states/test@1": 0.5})])
    ranking = write_ranking(write_study(tmp_path, trials))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gains.parquet", "ranking.parquet",
                                                         "trials.parquet"]
    stored = pq.read_table(tmp_path / "ranking.parquet")
    assert json.loads(stored.schema.metadata[CELL_WEIGHTS_KEY]) == WEIGHTS
    pd.testing.assert_frame_equal(stored.to_pandas(), ranking)
    assert not pq.read_table(tmp_path / "gains.parquet").to_pandas().empty


def test_format_ranking_shows_varying_params_and_truncates():
    text = format_ranking(rank_configs(two_configs(), WEIGHTS), top=1)
    header, first = text.splitlines()[:2]
    assert header.split() == ["rank", "whm", "[95%", "CI]", "seeds", "tied", "regularizer",
                              "ga_weight", "css", "states"]  # composer and lr do not vary
    assert first.split()[0] == "1" and "*" in first and "ga" in first
    assert "(top 1 of 2 configurations)" in text


def test_cli_prints_ranking_and_gains(tmp_path):
    study = write_study(tmp_path / "demo", gains_trials(), weights={"d/test@1": 1.0})
    done = subprocess.run([sys.executable, "-m", "study.results", str(study)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "rank" in done.stdout and "whm [95% CI]" in done.stdout
    assert "regulariser gain" in done.stdout and "+0.1167" in done.stdout
    assert not (study / "ranking.parquet").exists()  # printing does not write without --write


def test_cli_missing_directory_is_one_line_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "study.results", str(tmp_path / "missing")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {tmp_path / 'missing'}: no such study directory"
    assert "Traceback" not in done.stderr


def test_main_write_flag_and_missing_trials(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "trials.parquet: not found" in capsys.readouterr().err
    write_study(tmp_path, two_configs())
    assert main([str(tmp_path), "--write", "--top", "0"]) == 0
    assert (tmp_path / "ranking.parquet").exists() and (tmp_path / "gains.parquet").exists()
    assert "7 trials, 6 finished, 2 configurations" in capsys.readouterr().out
