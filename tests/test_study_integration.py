"""End to end, as a user runs it, with the faults a study meets (issues 9 and 10): `python -m
study.run` with the synchronous scheduler against a real multi-node Ray cluster
(`ray.cluster_utils.Cluster`), twice over the same small study (tests/spaces/tiny.yaml).

* The first run meets a lost node: once the first rung has finished, replacement nodes join and the
  nodes the study ran on are removed without warning while a trial of the next rung runs there.
  At the same time, on the same machine, a second study (tests/spaces/tiny_grid.yaml, a grid with
  the asynchronous scheduler) runs on its own local Ray: two Ray instances, two studies, both finish.
* The second run is stopped with SIGTERM after its first finished trial (it exits as an interrupted
  study, with the tables of what finished), resumed, killed with SIGKILL after its next finished
  trial, and resumed again to the end.

Equal tables for the two runs show that a lost node, a stopped or killed driver and a resume change
nothing. Then what a user looks at: the Parquet tables (seeds scored at their common epoch, matched
baselines), the ranking recomputed by hand, and the TensorBoard files read back with TensorBoard's
own reader. (A third, uninterrupted run would cost the suite minutes for no check the two make.)"""
from __future__ import annotations

import io
import json
import math
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
import pyarrow.parquet as pq
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import IMAGES as IMAGE_EVENTS
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import metadata as hparams_metadata

from study.report.check import check_report
from study.space import grid_points, load_space
from study.trial_config import CONFIG_ID

pytestmark = pytest.mark.slow

SPACES = Path(__file__).parent / "spaces"
SPACE = SPACES / "tiny.yaml"  # sync scheduler: run twice, with the faults
GRID_SPACE = SPACES / "tiny_grid.yaml"  # a grid with the asynchronous scheduler, on its own local Ray
RUNG_TRIALS = 3  # tiny.yaml's first rung: two sampled configurations and one matched baseline


@dataclass
class Finished:
    study_dir: Path
    stdout: str
    stderr: str
    returncode: int = 0


def _command(space: Path, storage: Path, cache: Path, scheduler: str, address: str | None) -> list[str]:
    command = [sys.executable, "-m", "study.run", "--space", str(space), "--budget", "smoke", "--scheduler",
               scheduler, "--storage", str(storage), "--cache-dir", str(cache)]
    return command + (["--address", address] if address else [])


class _Driver:
    """A study.run process whose output goes to files (a full pipe would stall it)."""

    def __init__(self, command: list[str], logs: Path, study_dir: Path) -> None:
        self.out, self.err, self.study_dir = logs.with_suffix(".out"), logs.with_suffix(".err"), study_dir
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen(command, stdout=out, stderr=err, text=True)

    def wait_for(self, ending: str, count: int = 1) -> None:
        """Until the progress lines (stderr) hold `count` lines ending with `ending`; the driver
        ending first fails the test."""
        while sum(line.rstrip().endswith(ending) for line in self.err.read_text().splitlines()) < count:
            assert self.process.poll() is None, f"study.run ended before {count} x {ending!r}:\n" + \
                self.err.read_text()[-6000:]
            time.sleep(0.5)

    def stop(self, signum: int) -> Finished:
        self.process.send_signal(signum)
        self.process.wait()
        return Finished(self.study_dir, self.out.read_text(), self.err.read_text(), self.process.returncode)

    def finish(self) -> Finished:
        self.process.wait()
        stdout, stderr = self.out.read_text(), self.err.read_text()
        assert self.process.returncode == 0, stdout[-3000:] + stderr[-6000:]
        return Finished(self.study_dir, stdout, stderr)


def _finished_epochs(progress: str) -> dict[str, int]:
    """config id -> the epoch its trial finished at, from study.run's progress lines."""
    reported = dict(re.findall(r"\(trial (\S+)\) epoch (\d+)/", progress))  # trial id -> last epoch reported
    configs = dict((t, c) for c, t in re.findall(r"config (\S+) \(trial (\S+)\)", progress))
    finished = re.findall(r"trial (\S+) finished$", progress, flags=re.MULTILINE)
    return {configs[t]: int(reported[t]) for t in finished}


def _replace_nodes(cluster, nodes: list) -> list:
    """New nodes join, then `nodes` die without warning (their processes are killed)."""
    fresh = [cluster.add_node(num_cpus=1) for _ in nodes]
    cluster.wait_for_nodes()
    for node in nodes:
        cluster.remove_node(node, allow_graceful=False)
    return fresh


@pytest.fixture(scope="session")
def studies(tmp_path_factory) -> dict:
    """The two runs of tiny.yaml on one cluster, and the grid study beside the first on a local Ray."""
    from ray.cluster_utils import Cluster

    root = tmp_path_factory.mktemp("studies")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # trials run on the other nodes
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        def start(name: str, space: Path, scheduler: str, *extra: str, address: str | None = cluster.address):
            command = _command(space, root / name, root / "cache", scheduler, address) + list(extra)
            return _Driver(command, root / f"{name}{len(extra)}", root / name / space.stem)

        first = start("first", SPACE, "sync")
        grid = start("grid", GRID_SPACE, "asha", address=None)  # its own local Ray, beside the cluster
        first.wait_for(" started", RUNG_TRIALS + 1)  # the first rung is done: a trial of the next one started
        original = {node.node_id for node in nodes}
        nodes = _replace_nodes(cluster, nodes)
        first, grid = first.finish(), grid.finish()

        stopped = start("resumed", SPACE, "sync")
        stopped.wait_for(" finished")
        stopped = stopped.stop(signal.SIGTERM)
        stopped_trials = pd.read_parquet(stopped.study_dir / "trials.parquet")  # read before the resume
        killed = start("resumed", SPACE, "sync", "--resume")
        killed.wait_for(" finished")
        killed.process.send_signal(signal.SIGKILL)
        killed.process.wait()
        killed_finished = _finished_epochs(killed.err.read_text())
        killed_trials = pd.read_parquet(killed.study_dir / "trials.parquet")  # what the killed driver had written
        assert (root / "resumed" / "tiny" / "tuner.pkl").is_file()
        resumed = start("resumed", SPACE, "sync", "--resume", "--name", "tiny")  # a new log file name
        return {"first": first, "grid": grid, "stopped": stopped, "stopped_trials": stopped_trials,
                "killed_finished": killed_finished, "killed_trials": killed_trials,
                "resumed": resumed.finish(), "nodes": original, "replacements": {n.node_id for n in nodes}}
    finally:
        cluster.shutdown()


# what two runs of one study must agree on (trial ids, nodes and seconds differ by nature)
SAME = ["config_id", "role", "baseline_id", "status", "seed", "epoch", "stopped_early"]


@pytest.fixture(scope="module")
def first(studies) -> tuple[Path, Finished]:  # the uninterrupted run
    return studies["first"].study_dir, studies["first"]


@pytest.fixture(scope="module")
def resumed(studies) -> tuple[Path, Finished]:  # killed after its first finished trial, then resumed
    return studies["resumed"].study_dir, studies["resumed"]


def trials(study_dir: Path) -> pd.DataFrame:
    frame = pd.read_parquet(study_dir / "trials.parquet")
    columns = SAME + sorted(c for c in frame.columns if c.startswith(("param/", "recall/", "breakdown/", "gap/"))
                            or c == "whm")
    return frame[columns].sort_values(["config_id", "seed"]).reset_index(drop=True)


def test_prints_progress_and_ranking(first) -> None:
    _, done = first
    assert "trials done, " in done.stderr and "seed-mean whm" in done.stderr  # progress while it runs
    assert re.search(r"best [bc]\d+ whm [\d.]+ \(epoch \d\)", done.stderr)  # the best so far
    assert "rank" in done.stdout


def test_a_lost_node_restarts_its_trial_elsewhere(studies) -> None:
    assert "lost its process (a node died?): restarting it from its last checkpoint" in studies["first"].stderr


def test_sigterm_stops_the_study_with_the_tables_of_what_finished(studies) -> None:
    stopped = studies["stopped"]
    assert stopped.returncode == 130  # interrupted, resumable
    assert "interrupted: continue with the same command plus --resume" in stopped.stderr
    frame = studies["stopped_trials"].drop_duplicates("config_id")
    assert (frame["status"] == "TERMINATED").sum() >= 1  # what had finished is in the tables
    assert (stopped.study_dir / "ranking.parquet").is_file()


def test_tables_are_written_as_each_trial_ends_so_sigkill_loses_nothing(studies) -> None:
    frame = studies["killed_trials"].set_index(["config_id", "seed"])
    assert studies["killed_finished"]
    for config_id, epoch in studies["killed_finished"].items():  # trained in the killed run, written before the kill
        rows = frame.loc[config_id]
        assert (rows["epoch"] >= epoch).all() and rows["whm"].notna().all()


def test_configurations_ran_on_the_clusters_nodes(studies) -> None:
    used = set()
    for name in ("first", "resumed"):
        frame = pd.read_parquet(studies[name].study_dir / "trials.parquet")
        used |= {node for nodes in frame["nodes"] for node in nodes.split(",") if node} | set(frame["driver_node"])
    assert used <= studies["nodes"] | studies["replacements"]
    assert used & studies["nodes"] and used & studies["replacements"]  # before and after the nodes were lost


def test_every_seed_of_a_configuration_is_scored_at_one_epoch(first) -> None:
    study_dir, _ = first
    frame = pd.read_parquet(study_dir / "trials.parquet")
    space = load_space(SPACE)
    assert (frame["status"] == "TERMINATED").all()
    assert (frame.groupby("config_id")["seed"].apply(sorted) == pd.Series({c: list(space.seeds) for c in
                                                                           frame["config_id"].unique()})).all()
    assert (frame.groupby("config_id")["epoch"].nunique() == 1).all()
    history = pd.read_parquet(study_dir / "history.parquet")
    for (config, seed), epochs in history.groupby(["config_id", "seed"])["epoch"]:
        last = int(frame[(frame["config_id"] == config) & (frame["seed"] == seed)]["epoch"].iloc[0])
        assert sorted(epochs) == list(range(1, last + 1))  # no epoch lost
    # the halving: 2 configurations reached rung 1, one went on to epoch 2
    searched = frame[frame["role"] == "searched"].drop_duplicates("config_id")
    assert sorted(searched["epoch"]) == [1, 2]
    assert searched.set_index("epoch").loc[1, "stopped_early"]


def test_regularised_configurations_have_their_matched_baseline(first) -> None:
    study_dir, _ = first
    frame = pd.read_parquet(study_dir / "trials.parquet").drop_duplicates("config_id").set_index("config_id")
    regularised = frame[(frame["role"] == "searched") & (frame["param/regularizer"] != "none")]
    assert len(regularised)
    for config_id, row in regularised.iterrows():
        baseline = frame.loc[row["baseline_id"]]
        assert baseline["param/regularizer"] == "none" and baseline["role"] == "baseline"
        assert (baseline["param/composer"], baseline["param/K"]) == (row["param/composer"], row["param/K"])
        assert baseline["epoch"] >= row["epoch"]  # the baseline got as far as its configuration


def test_killed_and_resumed_run_gives_the_uninterrupted_runs_tables(first, resumed) -> None:
    pd.testing.assert_frame_equal(trials(first[0]), trials(resumed[0]))
    pd.testing.assert_frame_equal(pd.read_parquet(first[0] / "history.parquet"),
                                  pd.read_parquet(resumed[0] / "history.parquet"))
    for table in ("ranking.parquet", "gains.parquet", "importance.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(first[0] / table), pd.read_parquet(resumed[0] / table))
    names = sorted(p.name for p in (first[0] / "ranks").glob("*.parquet"))
    assert names and names == sorted(p.name for p in (resumed[0] / "ranks").glob("*.parquet"))
    for name in names:
        pd.testing.assert_frame_equal(pd.read_parquet(first[0] / "ranks" / name),
                                      pd.read_parquet(resumed[0] / "ranks" / name))


def whm_by_hand(values: list[float], weights: list[float]) -> float:
    if any(v == 0 for v in values):
        return 0.0
    return sum(weights) / sum(w / v for w, v in zip(weights, values))


def test_ranking_equals_recomputation_from_trials(first) -> None:
    study_dir, _ = first
    table = pq.read_table(study_dir / "trials.parquet")
    weights = json.loads(table.schema.metadata[b"cirstudy.cell_weights"])
    assert set(weights) == {f"css/test@{k}" for k in (1, 5, 10, 50)}  # every K the dataset reports, weight 1
    frame = table.to_pandas()
    for _, row in frame.iterrows():  # each seed's WHM is A.9 over its own recalls
        expected = whm_by_hand([row[f"recall/{c}"] for c in weights], list(weights.values()))
        assert math.isclose(row["whm"], expected, rel_tol=1e-9, abs_tol=1e-12)
    means = frame.groupby("config_id")["whm"].mean()
    ranking = pd.read_parquet(study_dir / "ranking.parquet")
    assert ranking["whm_mean"].tolist() == pytest.approx(sorted(means, reverse=True))
    assert ranking["rank"].tolist() == list(range(1, len(ranking) + 1))


def _hparams_events(path: Path):
    for event in EventFileLoader(str(path)).Load():
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == hparams_metadata.PLUGIN_NAME:
                yield value.tag, value.metadata.plugin_data.content


def test_tensorboard_lists_every_hyperparameter_for_every_configuration(first) -> None:
    study_dir, _ = first
    space = load_space(SPACE)
    root_events = list(study_dir.glob("events.out.tfevents.*"))
    assert len(root_events) == 1, "exactly one experiment summary at the study root"
    experiments = [c for tag, c in _hparams_events(root_events[0]) if tag == hparams_metadata.EXPERIMENT_TAG]
    assert len(experiments) == 1
    columns = {h.name for h in hparams_metadata.parse_experiment_plugin_data(experiments[0]).hparam_infos}
    assert columns == {p.name for p in space.parameters}

    frame = pd.read_parquet(study_dir / "trials.parquet").drop_duplicates("config_id")
    for _, row in frame.iterrows():
        run = study_dir / "tensorboard" / row["config_id"]
        starts, scalars = [], set()
        for path in run.glob("events.out.tfevents.*"):
            starts += [c for t, c in _hparams_events(path) if t == hparams_metadata.SESSION_START_INFO_TAG]
            for event in EventFileLoader(str(path)).Load():
                scalars |= {v.tag for v in event.summary.value}
        assert len(starts) == 1, f"configuration {row['config_id']} needs one HParams session"
        info = hparams_metadata.parse_session_start_info_plugin_data(starts[0])
        active = {c.removeprefix("param/") for c in frame.columns if c.startswith("param/") and pd.notna(row[c])}
        assert set(info.hparams) == active
        assert {"whm", "recall/css/test@1", "seed/0/whm", "seed/1/whm"} <= scalars


def test_tensorboard_shows_each_evaluations_probe_pictures(first) -> None:
    study_dir, _ = first
    history = pd.read_parquet(study_dir / "history.parquet")
    for config_id, epochs in history.groupby("config_id")["epoch"]:
        events = EventAccumulator(str(study_dir / "tensorboard" / config_id), size_guidance={IMAGE_EVENTS: 0})
        events.Reload()
        probes = {"probes/css/retrievals", "probes/css/attention"}  # both take an image
        # study.run's end adds the best configuration's composed features as images (study/reconstruct.py)
        assert set(events.Tags()["images"]) - {"reconstruction/css"} == probes
        for tag in probes:
            assert {image.step for image in events.Images(tag)} == set(epochs), (config_id, tag)
            assert all(Image.open(io.BytesIO(image.encoded_image_string)).format == "PNG" for image in events.Images(tag))


def test_the_best_configuration_shows_its_composed_features_as_images(first) -> None:
    study_dir, _ = first
    best = pd.read_parquet(study_dir / "ranking.parquet")["config_id"].iloc[0]
    assert (study_dir / "reconstruction" / "css.png").is_file()
    events = EventAccumulator(str(study_dir / "tensorboard" / best), size_guidance={IMAGE_EVENTS: 0})
    events.Reload()
    assert "reconstruction/css" in events.Tags()["images"]


def test_optuna_dashboards_storage_holds_the_ranking(first) -> None:
    study_dir, _ = first
    storage = JournalStorage(JournalFileBackend(str(study_dir / "optuna.log")))
    study = optuna.load_study(study_name=study_dir.name, storage=storage)
    values = {t.user_attrs["config_id"]: t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    ranking = pd.read_parquet(study_dir / "ranking.parquet")
    assert values == dict(zip(ranking["config_id"], ranking["whm_mean"]))


def test_the_report_renders_every_section_of_the_study(first) -> None:
    study_dir, _ = first
    done = subprocess.run([sys.executable, "-m", "study.report", str(study_dir)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert check_report(study_dir, study_dir / "report.html") == []


def _trial_folders(study_dir: Path, config_id: str) -> list[Path]:
    """The Tune trial folders of one configuration, by the epoch they reached (a rung each)."""
    folders = [p.parent for p in study_dir.glob("run_trial_*/record.json")
               if json.loads(p.read_text())["config"][CONFIG_ID] == config_id]
    return sorted(folders, key=lambda folder: json.loads((folder / "result.json").read_text().splitlines()[-1])["epoch"])


def test_a_trial_run_again_from_its_record_reproduces_its_recalls(first, tmp_path: Path) -> None:
    study_dir, _ = first
    best = pd.read_parquet(study_dir / "ranking.parquet")["config_id"].iloc[0]
    folder = _trial_folders(study_dir, best)[-1]  # its last rung: trained again from scratch to that epoch
    done = subprocess.run([sys.executable, "-m", "study.train", "--from-trial", str(folder), "--storage",
                           str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    recorded = json.loads((folder / "result.json").read_text().splitlines()[-1])
    history = json.loads(next(tmp_path.glob("rerun-*/checkpoint_*/history.json")).read_text())
    again = history[-1]  # the re-run's own record of its last epoch
    recalls = [k for k in recorded if k.startswith("recall/") or (k.startswith("seed/") and "/recall/" in k) or k == "whm"]
    assert again["epoch"] == recorded["epoch"] and len(recalls) > 8
    assert {k: again[k] for k in recalls} == {k: recorded[k] for k in recalls}  # to the last bit


# A `sampler: grid` space with the asynchronous scheduler (tests/spaces/tiny_grid.yaml): every cell of
# the factorial runs exactly once with every seed, GA and MMGrad train inside a real study, and each
# regulariser's gain is reported against its matched baseline (the `none` cell, run once and shared).
def test_grid_covers_the_factorial_with_matched_baselines(studies) -> None:
    study_dir = studies["grid"].study_dir
    trials = pd.read_parquet(study_dir / "trials.parquet")
    space = load_space(GRID_SPACE)
    assert (trials["status"] == "TERMINATED").all()
    assert set(trials["seed"]) == set(space.seeds)

    def cell(row) -> tuple:
        return tuple(sorted((c.removeprefix("param/"), row[c]) for c in trials.columns
                            if c.startswith("param/") and pd.notna(row[c])))

    expected = sorted(tuple(sorted(point.items())) for point in grid_points(space))
    assert sorted(cell(row) for _, row in trials.iterrows()) == expected  # each cell exactly once
    baseline = trials[trials["param/regularizer"] == "none"]
    assert len(baseline) == 1 and baseline["role"].item() == "baseline"
    regularised = trials[trials["param/regularizer"] != "none"]
    assert (regularised["baseline_id"] == baseline["config_id"].item()).all()
    gains = pd.read_parquet(study_dir / "gains.parquet")
    assert set(gains["config_id"]) == set(regularised["config_id"])


def test_a_trial_runs_in_the_process_a_finished_trial_leaves(studies) -> None:
    """One rung (tiny_grid), so trials end by themselves and Tune runs the third of three trials, two at
    a time, in a finished trial's process instead of starting one (study.trainable.trials_end_by_themselves).
    Tune's result.json records the pid of the process that ran the trial."""
    study_dir = studies["grid"].study_dir
    pids = [json.loads(path.read_text().splitlines()[-1])["pid"] for path in study_dir.glob("*/result.json")]
    assert len(pids) == 3
    assert len(set(pids)) == 2
