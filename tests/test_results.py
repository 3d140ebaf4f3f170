"""study.results end to end on synthetic study directories written here: trials.parquet, history.parquet
and ranks/<config_id>.parquet, with values computed by hand."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from study.parquet_io import CELL_WEIGHTS_KEY, write_parquet_atomic
from study.ranking import compare, matched_gains, rank_configs
from study.results import build_tables, format_ranking, main, read_trials, write_ranking, write_tables
from study.stats.paired import holm
from study.tables import read_study, trial_whm

REPO = Path(__file__).resolve().parents[1]
# train cell at weight 0: present in the table, absent from the score
WEIGHTS = {"css/test@1": 1.0, "css/test@10": 1.0, "states/test@1": 2.0, "css/train@1": 0.0}
KS = {"css": (1, 10), "states": (1,)}


def recalls(ranks: dict[str, list[int]]) -> dict[str, float]:
    out = {f"recall/{d}/test@{k}": float(np.mean(np.asarray(r) < k)) for d, r in ranks.items() for k in KS[d]}
    return {**out, "recall/css/train@1": 0.0}  # weight 0: its zero must not zero the WHM


def config(config_id: str, params: dict, epochs: dict[int, dict[int, dict[str, list[int]]]], *,
           role: str = "searched", baseline_id: str | None = None, max_epochs: int = 3,
           status: str = "TERMINATED") -> dict:
    """epochs: {epoch: {seed: {dataset: ranks of its test queries}}}; scored at the last epoch."""
    return dict(config_id=config_id, params=params, epochs=epochs, role=role, baseline_id=baseline_id,
                max_epochs=max_epochs, status=status)


def write_study(directory: Path, configs: list[dict], *, weights=WEIGHTS, ranks: bool = True,
                skip_ranks: tuple[str, ...] = ()) -> Path:
    trials, history, names = [], [], sorted({p for c in configs for p in c["params"]})
    for c in configs:
        scored = max(c["epochs"])
        base = {"config_id": c["config_id"], "role": c["role"], "baseline_id": c["baseline_id"],
                "status": c["status"], "max_epochs": c["max_epochs"],
                **{f"param/{n}": c["params"].get(n) for n in names}}
        for seed, by_dataset in c["epochs"][scored].items():
            trials.append({**base, "seed": seed, "epoch": scored, "stopped_early": scored < c["max_epochs"],
                           **recalls(by_dataset), "whm": -1.0,  # stale on purpose: recomputed
                           "wall_time_s": 1.5})
        for epoch, seeds in c["epochs"].items():
            history.extend({"config_id": c["config_id"], "seed": s, "epoch": epoch, **recalls(d)}
                           for s, d in seeds.items())
        if ranks and c["config_id"] not in skip_ranks:
            rows = [{"seed": s, "epoch": e, "dataset": d, "split": "test", "query": q, "rank": r}
                    for e, seeds in c["epochs"].items() for s, by_d in seeds.items()
                    for d, values in by_d.items() for q, r in enumerate(values)]
            frame = pd.DataFrame(rows).astype({"seed": "int32", "epoch": "int32", "query": "int32",
                                               "rank": "int32"})
            write_parquet_atomic(frame, directory / "ranks" / f"{c['config_id']}.parquet")
    meta = {CELL_WEIGHTS_KEY: json.dumps(weights).encode()}
    write_parquet_atomic(pd.DataFrame(trials), directory / "trials.parquet", meta)
    write_parquet_atomic(pd.DataFrame(history), directory / "history.parquet", meta)
    return directory


GA = {"composer": "tirg", "regularizer": "ga", "ga_weight": 0.1, "K": "8"}
NONE = {"composer": "tirg", "regularizer": "none", "ga_weight": None, "K": "8"}
# seed -> ranks; WHM = 4 / (1/css@1 + 1/css@10 + 2/states@1)
A = {0: {"css": [0, 0, 5, 20], "states": [0, 0, 3, 3]},   # 0.5, 0.75, 0.5  -> 6/11
     1: {"css": [0, 1, 2, 3], "states": [0, 0, 0, 9]},    # 0.25, 1, 0.75   -> 12/23
     2: {"css": [0, 0, 0, 0], "states": [0, 5, 5, 5]}}    # 1, 1, 0.25      -> 0.4
FLAT = {s: {"css": [0, 50, 50, 50], "states": [0, 9, 9, 9]} for s in range(3)}  # 0.25 everywhere
A_WHM = [6 / 11, 12 / 23, 0.4]
A2 = {s: {"css": [0, 0, 0, 50], "states": [0, 0, 0, 9]} for s in range(3)}  # epoch 2: 0.75 everywhere


def hand_study(tmp_path: Path, **kwargs) -> Path:
    early = {1: {s: {"css": [0, 0, 0, 50], "states": [0, 0, 9, 9]} for s in (0, 1)},
             2: {s: {"css": [0, 0, 50, 50], "states": [0, 0, 0, 9]} for s in (0, 1)}}
    return write_study(tmp_path, [
        config("a", GA, {2: A2, 3: A}, baseline_id="b"),
        config("b", NONE, {3: FLAT}, role="baseline"),
        # two seeds, stopped after epoch 2 of 3; its baseline "b" ran to epoch 3
        config("e", {**GA, "ga_weight": 0.3}, early, baseline_id="b"),
        config("x", {**GA, "ga_weight": 0.9}, {1: A}, status="ERROR"),
    ], **kwargs)


def test_read_trials_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such study directory"):
        read_trials(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"trials\.parquet: not found"):
        read_trials(tmp_path)
    write_parquet_atomic(pd.DataFrame({"seed": [0]}), tmp_path / "trials.parquet")
    with pytest.raises(ValueError, match=r"trials\.parquet: schema metadata lacks 'cirstudy.cell_weights'"):
        read_trials(tmp_path)
    hand_study(tmp_path)
    rows, weights = read_trials(tmp_path)
    assert weights == WEIGHTS and len(rows) == 3 + 3 + 2 + 3


def test_trial_whm_uses_only_weighted_cells():
    row = {"config_id": "a", "seed": 0, **recalls(A[0])}
    assert trial_whm(row, WEIGHTS) == pytest.approx(6 / 11)
    with pytest.raises(ValueError, match=r"a \(seed 0\): no recall in \['recall/states/test@1'\]"):
        trial_whm({k: v for k, v in row.items() if "states" not in k}, WEIGHTS)


def test_ranking_against_hand_computed_values(tmp_path):
    ranking = rank_configs(read_study(hand_study(tmp_path), n_draws=200))
    assert ranking["config_id"].tolist() == ["e", "a", "b"]  # the ERROR configuration is left out
    e, a, b = (ranking.iloc[i] for i in range(3))
    assert a["whm_mean"] == pytest.approx(np.mean(A_WHM)) and b["whm_mean"] == pytest.approx(0.25)
    # e at epoch 2: css 0.5, 0.5; states 0.75 -> 4 / (2 + 2 + 8/3)
    assert e["whm_mean"] == pytest.approx(4 / (2 + 2 + 8 / 3))
    assert a["score/css"] == pytest.approx((0.6 + 0.4 + 1.0) / 3)  # 2 / (1/css@1 + 1/css@10)
    assert a["score/states"] == pytest.approx((0.5 + 0.75 + 0.25) / 3)
    assert (a["n_seeds"], a["epoch"], a["max_epochs"], a["stopped_early"]) == (3, 3, 3, False)
    assert (e["n_seeds"], e["epoch"], e["stopped_early"]) == (2, 2, True)
    assert a["ci_method"] == "seed t + query bootstrap" and a["ci_covers"] == "seeds + test set"
    # two seeds: the interval covers test-set sampling only, and says so
    assert e["ci_method"] == "query bootstrap" and e["ci_covers"] == "test set only (<3 seeds)"
    assert ((ranking["whm_low"] <= ranking["whm_mean"]) & (ranking["whm_mean"] <= ranking["whm_high"])).all()
    assert ranking["whm_low"].ge(0).all() and ranking["whm_high"].le(1).all()
    # identical seeds: all of b's width is the test set's (4 queries), clipped at 0
    assert b["whm_low"] == 0.0 and b["whm_high"] > 0.5
    assert ranking["tied_with_best"].iloc[0] and np.isnan(ranking["p_vs_best"].iloc[0])
    assert pd.isna(ranking.loc[ranking["config_id"] == "x", "rank"]).all()
    assert list(ranking.columns[:13]) == ["rank", "config_id", "whm_mean", "whm_low", "whm_high", "ci_method",
                                          "ci_covers", "n_seeds", "epoch", "max_epochs", "stopped_early",
                                          "p_vs_best", "tied_with_best"]
    assert "score/train" not in ranking and pd.isna(b["param/ga_weight"])
    # reproducible: the bootstrap is seeded
    pd.testing.assert_frame_equal(ranking, rank_configs(read_study(tmp_path, n_draws=200)))


def test_comparisons_use_the_epoch_both_reached(tmp_path):
    study = read_study(hand_study(tmp_path), n_draws=200)
    comparison = compare(study, "e", "a")  # e stopped at 2: a's epoch-2 numbers, from history
    assert comparison.epoch == 2 and comparison.seeds == (0, 1) and comparison.note == ""
    # e at 2: css 0.5, 0.5, states 0.75 -> 4 / (2 + 2 + 8/3) = 0.6; a at 2: 0.75 everywhere
    assert comparison.whm.mean == pytest.approx(0.6 - 0.75)
    assert comparison.datasets["states"].mean == pytest.approx(0.0)
    assert comparison.cells["css/test@10"] == pytest.approx(0.5 - 0.75)
    assert comparison.p_improvement == 0.0
    assert study.evaluation("b", 2) is None  # b stored nothing at epoch 2


def seeds_with_quality(rng: np.random.Generator, quality: list[float], n_queries: int) -> dict:
    """seed -> ranks where a query hits at 1 with the seed's own probability."""
    return {s: {"css": np.where(rng.uniform(size=n_queries) < q, 0, 20).tolist(),
                "states": np.where(rng.uniform(size=n_queries) < q, 0, 20).tolist()}
            for s, q in enumerate(quality)}


def improved(seeds: dict, share: float, rng: np.random.Generator) -> dict:
    """The same seeds and queries, a `share` of the misses turned into hits."""
    return {s: {d: [0 if r > 0 and rng.uniform() < share else r for r in ranks] for d, ranks in by_d.items()}
            for s, by_d in seeds.items()}


def test_tied_with_best_comes_from_the_paired_comparison(tmp_path):
    rng = np.random.default_rng(0)
    weights = {"css/test@1": 1.0, "states/test@1": 1.0}
    base = seeds_with_quality(rng, [0.3, 0.5, 0.7, 0.4], 400)  # seeds differ a lot
    study_dir = write_study(tmp_path, [
        config("best", GA, {3: improved(base, 0.15, rng)}),  # every seed better on the same queries
        config("base", NONE, {3: base}, role="baseline"),
        config("twin", {**GA, "ga_weight": 0.2}, {3: improved(base, 0.14, rng)}),
    ], weights=weights)
    ranking = rank_configs(read_study(study_dir, n_draws=300)).set_index("config_id")
    # the seeds' spread makes every interval overlap the best's ...
    assert (ranking["whm_high"] >= ranking.loc["best", "whm_low"]).all()
    # ... but paired by seed and query, "base" is clearly worse and "twin" is not told apart
    assert ranking.loc["base", "p_vs_best"] < 0.05 and not ranking.loc["base", "tied_with_best"]
    assert ranking.loc["twin", "p_vs_best"] >= 0.05 and ranking.loc["twin", "tied_with_best"]


def test_gains_against_the_matched_baseline(tmp_path):
    study = read_study(hand_study(tmp_path), n_draws=200)
    gains = matched_gains(study).set_index("config_id")
    assert list(gains.index) == ["a", "e"]  # baselines and errored configurations get no row
    a, e = gains.loc["a"], gains.loc["e"]
    assert (a["baseline_id"], a["epoch"], a["n_seeds"]) == ("b", 3, 3)
    assert a["gain"] == pytest.approx(np.mean(A_WHM) - 0.25)
    assert a["gain/css"] == pytest.approx((0.6 + 0.4 + 1.0) / 3 - 0.25)
    assert a["gain/css/test@10"] == pytest.approx((0.75 + 1 + 1) / 3 - 0.25)
    assert a["p_improvement"] == 1.0  # every seed of a beats every seed of b
    assert a["gain_low"] <= a["gain"] <= a["gain_high"] and a["ci_method"] == "seed t + query bootstrap"
    assert np.isfinite(a["detectable_gain"]) and a["detectable_gain"] > 0
    # e stopped at epoch 2: compared there with b's epoch-2 numbers... which b never stored
    assert (e["epoch"], e["n_seeds"]) == (2, 0) and "no recalls of ['b'] at epoch 2" in e["note"]
    assert np.isnan(e["gain"])
    assert gains["p_holm"].to_numpy() == pytest.approx(holm(gains["p_value"].to_numpy()), nan_ok=True)
    assert gains["param/regularizer"].tolist() == ["ga", "ga"]


def test_gains_at_the_smaller_epoch_with_fewer_than_three_seeds(tmp_path):
    later = {2: {s: {"css": [0, 50, 50, 50], "states": [0, 9, 9, 9]} for s in (0, 1)},
             3: {s: {"css": [0, 0, 0, 0], "states": [0, 0, 0, 0]} for s in (0, 1)}}
    early = {2: {s: {"css": [0, 0, 50, 50], "states": [0, 0, 9, 9]} for s in (0, 1)}}
    study = read_study(write_study(tmp_path, [
        config("r", GA, early, baseline_id="n"), config("n", NONE, later, role="baseline")]), n_draws=200)
    row = matched_gains(study).iloc[0]
    assert row["epoch"] == 2  # r stopped at 2; n's epoch-2 ranks (0.25 everywhere), not its 1.0 at 3
    assert row["gain"] == pytest.approx(0.5 - 0.25)
    assert row["ci_covers"] == "test set only (<3 seeds)"
    assert np.isnan(row["detectable_gain"]) and np.isnan(row["seeds_needed"])


def test_missing_ranks_fall_back_to_seeds_and_say_so(tmp_path):
    study = read_study(hand_study(tmp_path, skip_ranks=("a",)), n_draws=200)
    ranking = rank_configs(study).set_index("config_id")
    assert ranking.loc["a", "ci_method"] == "seed t"
    assert ranking.loc["a", "ci_covers"] == "seeds only (no per-query ranks)"
    assert "no ranks/a.parquet" in ranking.loc["a", "note"]
    mean, sd = np.mean(A_WHM), np.std(A_WHM, ddof=1)
    half = 4.302652729911275 * sd / np.sqrt(3)  # t(0.975, 2 df)
    assert (ranking.loc["a", "whm_low"], ranking.loc["a", "whm_high"]) == pytest.approx((mean - half, mean + half))
    gain = matched_gains(study).set_index("config_id").loc["a"]
    assert gain["ci_method"] == "seed t" and "no ranks/a.parquet" in gain["note"]


def test_trials_without_config_id_are_grouped_by_params(tmp_path):
    rows = [{"trial_id": f"t{s}", "status": "TERMINATED", "seed": s, "param/lr": lr, **recalls(A[s])}
            for lr in (0.1, 0.2) for s in range(3)]
    write_parquet_atomic(pd.DataFrame(rows), tmp_path / "trials.parquet",
                         {CELL_WEIGHTS_KEY: json.dumps(WEIGHTS).encode()})
    study = read_study(tmp_path, n_draws=50)
    assert any("no config_id column" in n for n in study.notes)
    ranking = rank_configs(study)
    assert ranking["n_seeds"].tolist() == [3, 3] and ranking["ci_method"].tolist() == ["seed t", "seed t"]
    assert matched_gains(study).empty


def test_write_tables_writes_three_tables_with_the_weights(tmp_path):
    ranking = write_tables(hand_study(tmp_path), n_bootstrap=100)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".parquet") == [
        "gains.parquet", "history.parquet", "importance.parquet", "ranking.parquet", "trials.parquet"]
    stored = pq.read_table(tmp_path / "ranking.parquet")
    assert json.loads(stored.schema.metadata[CELL_WEIGHTS_KEY]) == WEIGHTS
    pd.testing.assert_frame_equal(stored.to_pandas(), ranking)
    assert pd.read_parquet(tmp_path / "gains.parquet")["config_id"].tolist() == ["a", "e"]
    importance = pd.read_parquet(tmp_path / "importance.parquet")
    assert importance["note"].str.startswith("too few configurations").all()
    assert write_ranking is write_tables  # the name study/run.py calls


def test_format_ranking_shows_method_epoch_and_tied(tmp_path):
    tables = build_tables(hand_study(tmp_path), n_bootstrap=100)
    text = format_ranking(tables.ranking, top=2)
    lines = text.splitlines()
    assert lines[0].split() == ["rank", "whm", "[95%", "CI]", "covers", "seeds", "epoch", "early", "tied",
                                "ga_weight", "regularizer", "css", "states"]  # composer and K do not vary
    assert lines[1].split()[:7] == ["1", f"{tables.ranking['whm_mean'][0]:.4f}", *lines[1].split()[2:4],
                                    "test", "only", "2"]
    assert "2/3" in lines[1] and "early" in lines[1] and "best" in lines[1]
    assert "seed variation is NOT estimable" in text and "Student t over seeds" in text
    assert "(top 2 of 3 configurations)" in text


def test_cli_prints_ranking_gains_and_importance(tmp_path):
    study = hand_study(tmp_path / "demo")
    done = subprocess.run([sys.executable, "-m", "study.results", str(study), "--bootstrap", "100"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "11 rows (configuration x seed), 8 finished, 3 configurations" in out
    assert "whm [95% CI]" in out and "seeds+test" in out and "test only" in out
    assert "gains against matched baselines:" in out
    assert all(h in out for h in ("gain [95% CI]", "p_holm", "P(X>Y)", "detectable", "seeds needed"))
    assert f"{np.mean(A_WHM) - 0.25:+.4f}" in out
    assert "hyperparameter importance per composer:" in out and "too few configurations" in out
    assert not (study / "ranking.parquet").exists()  # printing does not write without --write


def test_cli_missing_directory_is_one_line_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"error: {tmp_path / 'missing'}: no such study directory"
    assert captured.out == ""


def test_main_write_flag_and_broken_files(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "trials.parquet: not found" in capsys.readouterr().err
    hand_study(tmp_path)
    assert main([str(tmp_path), "--write", "--top", "0", "--bootstrap", "50"]) == 0
    assert all((tmp_path / f"{t}.parquet").exists() for t in ("ranking", "gains", "importance"))
    write_parquet_atomic(pd.DataFrame({"seed": [0]}), tmp_path / "ranks" / "a.parquet")
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "ranks/a.parquet: lacks columns ['epoch', 'dataset', 'split', 'query', 'rank']" in err


@pytest.mark.parametrize("option, value, said", [
    ("--top", "-1", "argument --top: must be an integer >= 0 (rows to print; 0 prints all), got -1"),
    ("--bootstrap", "0", "argument --bootstrap: must be an integer >= 2 (query-bootstrap draws), got 0"),
    ("--bootstrap", "-5", "argument --bootstrap: must be an integer >= 2 (query-bootstrap draws), got -5"),
])
def test_cli_refuses_a_bad_count_before_reading_the_study(tmp_path, capsys, option, value, said):
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "missing"), option, value])  # refused before it looks for the folder
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert said in err and "no such study directory" not in err
