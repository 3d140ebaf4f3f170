"""study.table_writer driven with fake Tune trials (no Ray): a trial end writes its configuration's rows
as a part whose size does not depend on how many trials ended before (O(1) per result), the whole
tables are merged at the trial ends the geometric rule names and ranked when the time share allows
(both counted here by hand), readers see every finished configuration after every trial end, and a
killed writer's parts are read and merged by the next session."""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow.feather as feather
import pytest

import study.optuna_export
import study.results
import study.trials
from study.parquet_io import CELL_WEIGHTS_KEY, write_arrow_atomic
from study.space import load_space
from study.table_parts import PARTS_DIR, parts_through, read_with_parts, rows_table, unmerged_parts, write_part
from study.table_writer import GROWTH, SHARE, TableWriter, TablesCallback
from study.tables import read_study, read_trials
from study.trials import table_metadata
from study.trial_config import CONFIG_ID, ROLE, UNTIL

SPACE = load_space(Path(__file__).parent / "spaces" / "tiny.yaml")  # seeds 0 and 1
SEEDS = SPACE.seeds
WEIGHTS = {"css/test@1": 1.0, "css/test@10": 1.0}


def result(config_id: str, epoch: int) -> dict:
    """What a trial reports at `epoch`: recalls per seed that differ by configuration, seed and epoch."""
    number = int(config_id[1:])
    found = {"epoch": epoch, "whm": 0.5, "time/total_s": 1.0}
    for seed in SEEDS:
        at1, at10 = 0.1 + 0.001 * number + 0.01 * seed + 0.02 * epoch, 0.5 + 0.01 * seed + 0.02 * epoch
        found.update({f"seed/{seed}/recall/css/test@1": at1, f"seed/{seed}/recall/css/test@10": at10,
                      f"seed/{seed}/whm": 2 / (1 / at1 + 1 / at10)})
    return found


def trial(number: int, *, status: str = "RUNNING", epoch: int = 1, until: int = 2, trial_id: str | None = None):
    config_id = f"c{number:04d}"
    config = {CONFIG_ID: config_id, UNTIL: until, ROLE: "searched", "composer": ["concat", "tirg"][number % 2],
              "regularizer": "none", "K": 4}
    return SimpleNamespace(trial_id=trial_id or f"t{number}", status=status, path=None, config=config,
                           last_result=result(config_id, epoch))


def stopped() -> float:
    return 0.0


def writer(study_dir: Path, clock=stopped) -> TableWriter:
    """A writer on a stopped clock unless told otherwise: every step takes no time, so none is throttled."""
    return TableWriter(study_dir, SPACE, budget_name="smoke", epochs=2, cell_weights=WEIGHTS, manifests={},
                       clock=clock)


def end(callback: TablesCallback, trials: list, ending) -> None:
    """Tune's order: the callback sees the trial still RUNNING, then it takes its final status."""
    callback.on_trial_complete(0, trials, ending)
    ending.status = "TERMINATED"


def merge_points(n: int) -> list[int]:
    """The trial ends after which trials.parquet and history.parquet are merged, by the rule's own
    words: when the configurations ended since the last merge are at least GROWTH of those it held
    (at least one)."""
    points, held, since = [], 0, 0
    for count in range(1, n + 1):
        since += 1
        if since >= max(1, GROWTH * held):
            points.append(count)
            held, since = count, 0
    return points


@pytest.fixture
def no_ranking(monkeypatch):
    """The statistics are counted, not computed: their cost is not the writing's."""
    calls = []
    monkeypatch.setattr(TableWriter, "rank", lambda self, frame=None: calls.append(1))
    return calls


def run(study_dir: Path, n: int) -> list:
    """n trial ends, each while another trial is still running (no idle boundary), one write each."""
    callback = TablesCallback(writer(study_dir))
    trials, writes = [trial(0)], []  # t0 runs throughout
    for number in range(1, n + 1):
        trials.append(trial(number))
        end(callback, trials, trials[-1])
        writes.append(callback.writer.last)
    return writes


def test_a_trial_end_writes_the_same_whatever_the_studys_size(tmp_path, no_ranking) -> None:
    assert merge_points(30) == [1, 2, 3, 4, 5, 7, 9, 12, 15, 19, 24, 30]  # the rule, by hand
    writes = run(tmp_path / "study", 100)
    one_config = len(SEEDS) + len(SEEDS) * 1  # a row per seed, and a row per seed and epoch (1 epoch)
    assert {w.part_rows for w in writes} == {one_config}  # trial 100 writes what trial 1 wrote
    assert max(w.part_bytes for w in writes[90:]) <= 1.05 * max(w.part_bytes for w in writes[:10])
    merged = [count for count, w in enumerate(writes, 1) if w.merged_rows]
    assert merged == merge_points(100)
    assert len(no_ranking) == len(merged)
    for count in merged:  # a merge rewrites what has ended: a row per seed, and one per seed and epoch
        assert writes[count - 1].merged_rows == 2 * len(SEEDS) * count
    for n in (10, 100):  # rows written per trial end, over the study: bounded by 1 + 1/GROWTH configurations
        per_end = sum(w.part_rows + w.merged_rows for w in writes[:n]) / n
        assert per_end <= one_config * (1 + 1 + 1 / GROWTH)
    assert sum(w.merged_rows for w in writes) / 100 > 2 * one_config  # the bound is not idle


def test_readers_see_every_finished_configuration_after_every_trial_end(tmp_path, no_ranking) -> None:
    study_dir = tmp_path / "study"
    callback = TablesCallback(writer(study_dir))
    trials = [trial(0)]
    for number in range(1, 15):
        trials.append(trial(number))
        end(callback, trials, trials[-1])
        rows, weights = read_trials(study_dir)
        assert weights == WEIGHTS
        assert sorted(rows["config_id"].unique()) == [f"c{i:04d}" for i in range(1, number + 1)]
        assert len(rows) == number * len(SEEDS) and (rows["status"] == "TERMINATED").all()
        expected = result(f"c{number:04d}", 1)["seed/1/recall/css/test@1"]
        assert rows.set_index(["config_id", "seed"]).loc[(f"c{number:04d}", 1), "recall/css/test@1"] == expected
    assert unmerged_parts(study_dir)  # 14 ends: the last merge was after 12
    merged = read_study(study_dir, n_draws=2)
    assert len(merged.history) == 14 * len(SEEDS) and set(merged.configurations) == {f"c{i:04d}" for i in range(1, 15)}


def test_the_end_writes_the_tables_whole_and_drops_the_parts(tmp_path, no_ranking) -> None:
    study_dir = tmp_path / "study"
    callback = TablesCallback(writer(study_dir))
    trials = [trial(0)]
    for number in range(1, 7):
        trials.append(trial(number))
        end(callback, trials, trials[-1])
    seen = read_trials(study_dir)[0]
    assert unmerged_parts(study_dir)
    trials[0].status = "TERMINATED"
    whole = callback.writer.write(trials)
    assert not unmerged_parts(study_dir) and not list((study_dir / PARTS_DIR).iterdir())
    assert len(whole) == 7 * len(SEEDS)
    key = ["config_id", "seed"]
    columns = sorted(seen.columns)
    pd.testing.assert_frame_equal(seen[columns].sort_values(key).reset_index(drop=True),
                                  whole[whole["config_id"] != "c0000"][columns].sort_values(key).reset_index(drop=True))
    pd.testing.assert_frame_equal(read_trials(study_dir)[0], pd.read_parquet(study_dir / "trials.parquet"))


def test_a_later_trial_of_a_configuration_replaces_its_rows(tmp_path, no_ranking) -> None:
    study_dir = tmp_path / "study"
    callback = TablesCallback(writer(study_dir))
    first = trial(1, until=1)
    trials = [trial(0), first, trial(2), trial(3), trial(4), trial(5)]
    for ending in trials[1:]:
        end(callback, trials, ending)  # merged after each of these five
    checkpoint = study_dir / "train" / "train-c0001" / "checkpoint_000001"  # Train's, as the worker writes it
    checkpoint.mkdir(parents=True)
    (checkpoint / "history.json").write_text(json.dumps([result("c0001", 1), result("c0001", 2)]))
    later = trial(1, epoch=2, until=2, trial_id="t1b")  # the sync scheduler's next rung of c0001
    trials.append(later)
    end(callback, trials, later)
    assert unmerged_parts(study_dir)  # six ends: not merged after the sixth (held 5, since 1)
    rows = read_trials(study_dir)[0].set_index(["config_id", "seed"])
    assert len(rows) == 5 * len(SEEDS)
    assert (rows.loc["c0001", "epoch"] == 2).all() and (rows.loc["c0001", "trial_id"] == "t1b").all()
    assert rows.loc[("c0001", 0), "recall/css/test@1"] == result("c0001", 2)["seed/0/recall/css/test@1"]
    history = read_study(study_dir, n_draws=2).history
    assert sorted(history[history["config_id"] == "c0001"]["epoch"]) == [1, 1, 2, 2]


def test_a_new_session_reads_and_merges_what_a_killed_one_left(tmp_path, no_ranking) -> None:
    study_dir = tmp_path / "study"
    trials = [trial(0)] + [trial(n) for n in range(1, 7)]
    callback = TablesCallback(writer(study_dir))
    for ending in trials[1:]:
        end(callback, trials, ending)
    left = unmerged_parts(study_dir)  # the merge after 5 holds c0001..c0005; c0006 is a part
    assert [p.config_id for p in left] == ["c0006"]
    stale = feather.read_table(left[0].path("trials")).to_pandas().assign(config_id="c0002")  # a merged part a kill left
    write_arrow_atomic(stale, study_dir / PARTS_DIR / "000002-c0002.trials.arrow",
                       metadata=feather.read_table(left[0].path("trials")).schema.metadata)
    (study_dir / PARTS_DIR / "000009-c0009.history.arrow").write_bytes(b"half a part")  # killed mid-part
    rows = read_trials(study_dir)[0].set_index(["config_id", "seed"])
    assert sorted(rows.index.unique("config_id")) == [f"c{i:04d}" for i in range(1, 7)]
    assert rows.loc[("c0002", 0), "recall/css/test@1"] == result("c0002", 1)["seed/0/recall/css/test@1"]

    resumed = pickle.loads(pickle.dumps(callback))  # what Tuner.restore brings back
    more = trials + [trial(7)]
    end(resumed, more, more[-1])
    assert resumed.writer.last.merged_rows  # c0006 and c0007 ended since: at least a quarter of 5
    assert not list((study_dir / PARTS_DIR).iterdir())  # merged, the stale part and the half one gone
    rows = pd.read_parquet(study_dir / "trials.parquet").set_index(["config_id", "seed"])
    assert sorted(rows.index.unique("config_id")) == [f"c{i:04d}" for i in range(1, 8)]
    assert rows.loc[("c0002", 0), "recall/css/test@1"] == result("c0002", 1)["seed/0/recall/css/test@1"]
    assert parts_through(study_dir / "trials.parquet") == 10  # c0007 was part 10: numbering went on past 9


class Clock:
    """A clock the test moves; `slow` makes merging or ranking take `seconds` on it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def slow(self, monkeypatch, target, name: str, seconds: float) -> None:
        real = getattr(target, name)
        def slowed(*args, **kwargs):
            self.now += seconds
            return real(*args, **kwargs)
        monkeypatch.setattr(target, name, slowed)


def idle_end(tmp_path, monkeypatch, *, gap: float, running: bool = False) -> bool:
    """Five trial ends (merged after each; a merge takes 0.1 s), `gap` seconds, then a sixth end
    that the geometric rule does not call for, with nothing else running unless `running`."""
    clock = Clock()
    clock.slow(monkeypatch, study.trials, "write_trials", 0.1)
    callback = TablesCallback(writer(tmp_path / f"study-{gap}-{running}", clock))
    trials = [trial(n) for n in range(1, 7)] + ([trial(7)] if running else [])
    for ending in trials[:5]:
        end(callback, trials, ending)
        assert callback.writer.last.merged_rows
    clock.now += gap
    end(callback, trials, trials[5])
    return bool(callback.writer.last.merged_rows)


def test_an_idle_study_merges_unless_that_would_take_over_a_hundredth_of_the_time(tmp_path, monkeypatch,
                                                                                  no_ranking) -> None:
    assert SHARE == 0.01
    assert not idle_end(tmp_path, monkeypatch, gap=5.0)  # 0.1 s of merging in 5 s: too much
    assert idle_end(tmp_path, monkeypatch, gap=20.0)  # 0.1 s in 20 s: a boundary worth a merge
    assert not idle_end(tmp_path, monkeypatch, gap=20.0, running=True)  # not a boundary: the rule waits


@pytest.mark.parametrize("gap, ranked", [(1.0, [1, 12, 24, 38]), (20.0, merge_points(40))])
def test_the_statistics_take_at_most_a_hundredth_of_the_drivers_time(tmp_path, monkeypatch, gap, ranked) -> None:
    """Ranking takes 0.1 s here; trials end `gap` s apart. With 1 s, counted by hand: ranked at the
    first merge (t 0 -> 0.1), then at the first merge 10 s after that one ended (end 12 at t 11.1,
    done at 11.2), then end 24 (t 23.2), end 38 (t 37.3); with 20 s, after every merge."""
    clock = Clock()
    def write_tables(study_dir):
        clock.now += 0.1
        return pd.DataFrame()
    monkeypatch.setattr(study.results, "write_tables", write_tables)
    monkeypatch.setattr(study.optuna_export, "write_optuna_journal", lambda *args, **kwargs: None)
    callback = TablesCallback(writer(tmp_path / "study", clock))
    trials, seen = [trial(0)], []
    for number in range(1, 41):
        trials.append(trial(number))
        end(callback, trials, trials[-1])
        if callback.writer.last.ranked:
            seen.append(number)
        clock.now += gap
    assert seen == ranked


def test_a_real_merge_ranks_and_exports(tmp_path) -> None:
    study_dir = tmp_path / "study"
    callback = TablesCallback(writer(study_dir))
    trials = [trial(n) for n in range(1, 4)]
    for ending in trials:
        end(callback, trials, ending)
    ranking = pd.read_parquet(study_dir / "ranking.parquet")
    assert sorted(ranking["config_id"]) == ["c0001", "c0002", "c0003"]
    assert ranking.iloc[0]["config_id"] == "c0003"  # recall@1 grows with the configuration's number
    assert (study_dir / "optuna.log").is_file()


def test_a_choice_that_mixes_types_is_stored_as_text_when_parts_merge(tmp_path, no_ranking) -> None:
    study_dir = tmp_path / "study"
    callback = TablesCallback(writer(study_dir))
    trials = [trial(n) for n in range(1, 4)]
    trials[1].config["K"] = "batch"  # K: [4, batch] as a space may choose; each part holds one type
    for ending in trials:
        end(callback, trials, ending)
    stored = pd.read_parquet(study_dir / "trials.parquet").drop_duplicates("config_id")
    assert list(stored["param/K"]) == ["4", "batch", "4"]
    assert list(read_trials(study_dir)[0].drop_duplicates("config_id")["param/K"]) == ["4", "batch", "4"]


def test_parts_read_together_the_latest_of_a_configuration_winning(tmp_path) -> None:
    metadata = table_metadata(WEIGHTS)
    for number, config_id, k in ((1, "c0001", 2), (2, "c0002", "batch"), (3, "c0001", 8)):
        row = {"config_id": config_id, "seed": 0, "status": "TERMINATED", "param/K": k}
        write_part(tmp_path, number, config_id, rows_table([row]), rows_table([]), metadata)
    stored, rows = read_with_parts(tmp_path, "trials")
    assert rows[["config_id", "param/K"]].values.tolist() == [["c0001", "8"], ["c0002", "batch"]]
    assert json.loads(stored.schema.metadata[CELL_WEIGHTS_KEY]) == WEIGHTS  # no whole table yet: a part's
