"""End to end, as a user runs it: `python -m study.run --space ga_vs_dim --budget smoke` against a
real two-node Ray cluster (`ray.cluster_utils.Cluster`), then what the user looks at: the Parquet
ranking, recomputed by hand from trials.parquet, and the TensorBoard files, read back with
TensorBoard's own reader."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import metadata as hparams_metadata

from study.space import load_space

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="module")
def smoke_study(cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    command = [
        sys.executable, "-m", "study.run", "--space", "ga_vs_dim", "--budget", "smoke",
        "--address", cluster.address, "--storage", str(root / "studies"), "--cache-dir", str(root / "cache"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    node_ids = {node.node_id for node in cluster.list_all_nodes()}
    return root / "studies" / "ga_vs_dim", done, node_ids


def whm_by_hand(values: list[float], weights: list[float]) -> float:
    if any(v == 0 for v in values):
        return 0.0
    return sum(weights) / sum(w / v for w, v in zip(weights, values))


def test_prints_progress_and_ranking(smoke_study) -> None:
    _, done, _ = smoke_study
    assert "trials done]" in done.stderr  # progress lines while it runs
    assert "whm_mean" in done.stdout or "WHM" in done.stdout


def test_trials_ran_on_both_nodes(smoke_study) -> None:
    study_dir, _, node_ids = smoke_study
    trials = pd.read_parquet(study_dir / "trials.parquet")
    space = load_space("ga_vs_dim")
    assert len(trials) == space.budgets["smoke"].num_samples * len(space.seeds)
    assert (trials["status"] == "TERMINATED").all()
    used = {node for nodes in trials["nodes"] for node in nodes.split(",") if node} | set(trials["driver_node"])
    assert used == node_ids


def test_ranking_equals_recomputation_from_trials(smoke_study) -> None:
    study_dir, _, _ = smoke_study
    table = pq.read_table(study_dir / "trials.parquet")
    weights = json.loads(table.schema.metadata[b"cirstudy.cell_weights"])
    assert set(weights) == {"css/test@1", "css/test@10", "states/test@1", "states/test@10"}
    trials = table.to_pandas()
    for _, row in trials.iterrows():  # each trial's WHM is A.9 over its own recalls
        expected = whm_by_hand([row[f"recall/{c}"] for c in weights], list(weights.values()))
        assert math.isclose(row["whm"], expected, rel_tol=1e-9, abs_tol=1e-12)
    params = [c for c in trials.columns if c.startswith("param/")]
    key = trials[params].apply(lambda row: repr([None if pd.isna(v) else v for v in row]), axis=1)
    expected_means = sorted(trials.groupby(key)["whm"].mean().tolist(), reverse=True)
    ranking = pd.read_parquet(study_dir / "ranking.parquet")
    assert ranking["whm_mean"].tolist() == pytest.approx(expected_means)
    assert ranking["rank"].tolist() == list(range(1, len(ranking) + 1))
    assert (ranking["n_seeds"] == len(load_space("ga_vs_dim").seeds)).all()
    assert (ranking["whm_low"] <= ranking["whm_mean"] + 1e-12).all()


def _hparams_events(path: Path):
    for event in EventFileLoader(str(path)).Load():
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == hparams_metadata.PLUGIN_NAME:
                yield value.tag, value.metadata.plugin_data.content


def test_tensorboard_lists_every_hyperparameter_for_every_trial(smoke_study) -> None:
    study_dir, _, _ = smoke_study
    space = load_space("ga_vs_dim")
    expected = {p.name for p in space.parameters} | {"seed"}
    root_events = list(study_dir.glob("events.out.tfevents.*"))
    assert len(root_events) == 1, "exactly one experiment summary at the study root"
    experiments = [c for tag, c in _hparams_events(root_events[0]) if tag == hparams_metadata.EXPERIMENT_TAG]
    assert len(experiments) == 1
    columns = {h.name for h in hparams_metadata.parse_experiment_plugin_data(experiments[0]).hparam_infos}
    assert columns == expected

    trials = pd.read_parquet(study_dir / "trials.parquet")
    for _, row in trials.iterrows():
        run = study_dir / "tensorboard" / row["trial_id"]
        starts, scalars = [], set()
        for path in run.glob("events.out.tfevents.*"):
            starts += [c for t, c in _hparams_events(path) if t == hparams_metadata.SESSION_START_INFO_TAG]
            for event in EventFileLoader(str(path)).Load():
                scalars |= {v.tag for v in event.summary.value}
        assert starts, f"trial {row['trial_id']} has no HParams session"
        info = hparams_metadata.parse_session_start_info_plugin_data(starts[0])
        active = {c.removeprefix("param/") for c in trials.columns if c.startswith("param/") and pd.notna(row[c])}
        assert set(info.hparams) == active | {"seed"}
        assert info.hparams["seed"].number_value == row["seed"]
        assert "whm" in scalars and "recall/css/test@1" in scalars
