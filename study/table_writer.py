"""The study's tables, written as trials end, at a cost per trial end that does not grow with the study.

When a trial ends, the rows of its configuration go to disk at once as a part (study/table_parts.py):
its seeds' rows for `trials.parquet`, its epochs for `history.parquet`, its query ranks into `ranks/`.
That is all a trial end must do, so a study stopped at any moment (Ctrl-C, SIGTERM, SIGKILL, a lost
driver node) leaves the rows of everything that finished, and `study.tables` (so `python -m
study.results` and the Optuna export) reads them with the parts.

The whole-study tables are rebuilt after a trial end only when it is worth it:

* `trials.parquet` and `history.parquet` are merged from the parts when the trial ends since the
  last merge add at least GROWTH (a quarter) of the rows they held: they grow geometrically, so
  over a study each row is written about 1 + 1 / GROWTH = 5 times whatever the study's size (O(1)
  per result, amortised), and a small study is merged after every trial end. Also when nothing
  else is running or waiting (a rung or generation boundary of the sync scheduler, the study's last
  trial), unless merging took more than SHARE of the time since the last merge.
* The statistics (`ranking.parquet`, `gains.parquet`, `importance.parquet` from study/results.py,
  `optuna.log` from study/optuna_export.py) follow a merge unless computing them took more than SHARE
  (1%) of the driver's time since they were last computed. Their cost grows with the study (every
  configuration is ranked: about 20 s for 1,000 configurations on a busy 2-core machine), so this
  keeps them to a fixed share of the driver's time however fast trials end: with trials of minutes
  they follow nearly every merge, with no-op trials they are computed a few times a study.
* Everything, always, at the end of the study (`write`, from Tune's own record of every trial, by
  study/run.py), which also makes a resumed study's tables those of the uninterrupted one.

Every file is replaced atomically: a reader never sees half of one (study/parquet_io.py).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd
import pyarrow.parquet as pq
from ray.tune import Callback

from study.space import SearchSpace
from study.table_parts import (drop_merged_parts, last_part_number, parts_through, read_with_parts, rows_table,
                               unmerged_parts, write_part)
from study.trial_config import CONFIG_ID

__all__ = ["GROWTH", "SHARE", "TableWriter", "TablesCallback", "TrialEndWrite"]

GROWTH = 0.25
SHARE = 0.01
UNFINISHED = ("PENDING", "RUNNING", "PAUSED")


@dataclass(frozen=True)
class TrialEndWrite:
    """What one trial end wrote: its part and, when due, the merge and the statistics."""

    part_rows: int  # trials rows + history rows of the part
    part_bytes: int
    part_s: float
    merged_rows: int = 0  # trials rows + history rows of the whole tables rewritten; 0: no merge
    merge_s: float = 0.0
    ranked: bool = False  # the statistics were computed
    rank_s: float = 0.0


class TableWriter:
    """Writes a study's tables; see the module docstring for when. Holds no rows: what it knows of
    the tables on disk is a few numbers (`_state`), read again from the files when a session starts."""

    def __init__(self, study_dir: Path, space: SearchSpace, *, budget_name: str, epochs: int,
                 cell_weights: Mapping[str, float], manifests: Mapping[str, Any],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.study_dir, self.space, self.budget_name, self.epochs = Path(study_dir), space, budget_name, epochs
        self.cell_weights, self.manifests, self.clock = dict(cell_weights), dict(manifests), clock
        self._session: dict[str, float] | None = None
        self._by_config: dict[str, list] | None = None  # config id -> its Tune trials, this session
        self.last: TrialEndWrite | None = None  # what the latest trial end wrote (bench/driver_cost.py reads it)

    def __getstate__(self) -> dict:  # Tune pickles its callbacks for Tuner.restore: a resumed session reads the disk
        return {**self.__dict__, "_session": None, "_by_config": None}

    def _state(self) -> dict[str, float]:
        """The next part's number; the rows the merged tables hold and the rows ended since; when the
        last merge and the last statistics ended and how long each took."""
        if self._session is None:
            trials = self.study_dir / "trials.parquet"
            now = self.clock()
            self._session = {
                "next": last_part_number(self.study_dir) + 1,
                "held": pq.read_metadata(trials).num_rows if trials.is_file() else 0,
                "since": len(unmerged_parts(self.study_dir)) * len(self.space.seeds),
                "merged_at": now, "merge_took": 0.0, "ranked_at": now, "rank_took": 0.0}
        return self._session

    def record(self, trials: list, trial, status: str) -> TrialEndWrite:
        """After `trial` ended with `status` (Tune's `trials`: every trial of the study): write its
        configuration's rows as a part, then merge and rank if that is due."""
        from study.trials import configuration_rows, configurations, table_metadata

        began = self.clock()
        config_id = _config_id(trial)
        [config] = configurations(self._trials_of(trials, trial, config_id), {trial.trial_id: status})
        rows, history = configuration_rows(self.study_dir, self.space, config, budget_name=self.budget_name,
                                           epochs=self.epochs)
        state = self._state()
        part = write_part(self.study_dir, int(state["next"]), config_id, rows_table(rows), rows_table(history),
                          table_metadata(self.cell_weights, self.manifests))
        state["next"] += 1
        state["since"] += len(rows)
        sizes = part.path("trials").stat().st_size + part.path("history").stat().st_size
        written = TrialEndWrite(len(rows) + len(history), sizes, self.clock() - began)
        idle = not any(t.status in UNFINISHED for t in reversed(trials) if t is not trial)  # newest first: stops early
        if self._merge_due(idle):
            merged = self.merge()
            ranked = self._share_left("ranked_at", "rank_took")
            if ranked:
                self.rank()
            written = TrialEndWrite(written.part_rows, sizes, written.part_s, merged, state["merge_took"],
                                    ranked, state["rank_took"] if ranked else 0.0)
        self.last = written
        return written

    def _trials_of(self, trials: list, trial, config_id: str) -> list:
        """Every Tune trial of `config_id` (the sync scheduler trains a configuration over several),
        from an index by config id made from `trials` once per session and added to as trials end:
        no pass over all the study's trials per trial end."""
        if self._by_config is None:
            self._by_config = {}
            for known in trials:
                self._by_config.setdefault(_config_id(known), []).append(known)
        same = self._by_config.setdefault(config_id, [])
        if not any(known is trial for known in same):
            same.append(trial)
        return same

    def _share_left(self, at: str, took: str) -> bool:
        """Whether the last run of a step (merge or statistics) took at most SHARE of the time since."""
        state = self._state()
        return state[took] <= SHARE * (self.clock() - state[at])

    def _merge_due(self, idle: bool) -> bool:
        state = self._state()
        if state["since"] >= max(1.0, GROWTH * state["held"]):
            return True
        return idle and state["since"] > 0 and self._share_left("merged_at", "merge_took")

    def merge(self) -> int:
        """Merge the parts into trials.parquet and history.parquet; return the rows written."""
        from study.trials import write_trials

        began = self.clock()
        parts = unmerged_parts(self.study_dir)
        if not parts:
            return 0
        _, frame = read_with_parts(self.study_dir, "trials")
        _, history = read_with_parts(self.study_dir, "history")
        if history is None:
            history = pd.DataFrame(columns=["config_id", "seed", "epoch"])
        write_trials(frame, history, self.study_dir, self.cell_weights, self.manifests,
                     parts_through=parts[-1].number)
        drop_merged_parts(self.study_dir, parts[-1].number)
        self._state().update(held=len(frame), since=0, merged_at=self.clock(), merge_took=self.clock() - began)
        return len(frame) + len(history)

    def rank(self, frame: pd.DataFrame | None = None) -> None:
        """ranking.parquet, gains.parquet, importance.parquet and optuna.log from the study's tables
        (`frame`: its trials, when the caller has them); nothing while no configuration finished."""
        from study import results
        from study.optuna_export import write_optuna_journal
        from study.tables import read_trials

        began = self.clock()
        frame = read_trials(self.study_dir)[0] if frame is None else frame
        if len(frame) and (frame["status"] == "TERMINATED").any():
            ranking = results.write_tables(self.study_dir)
            write_optuna_journal(self.study_dir, self.space, ranking=ranking, trials=frame)
        if self._session is not None:
            self._session.update(ranked_at=self.clock(), rank_took=self.clock() - began)

    def write(self, trials: Iterable | None = None, ended: Mapping[str, str] | None = None, *,
              rank: bool = True) -> pd.DataFrame:
        """Write trials.parquet and history.parquet whole from Tune's `trials` (default: the
        experiment state on disk) and, with `rank`, the statistics; the parts they supersede are
        deleted. The study's end; returns the trials."""
        from study import trials as trial_tables

        parts = unmerged_parts(self.study_dir)
        frame, history = trial_tables.trials_frame(self.study_dir, self.space, budget_name=self.budget_name,
                                                   epochs=self.epochs, trials=trials, ended=ended)
        through = max([p.number for p in parts] + [parts_through(self.study_dir / trial_tables.TRIALS_FILE)])
        trial_tables.write_trials(frame, history, self.study_dir, self.cell_weights, self.manifests,
                                  parts_through=through)
        drop_merged_parts(self.study_dir, through)
        self._session = None
        if rank:
            self.rank(frame)
        return frame


def _config_id(trial) -> str:
    return str((trial.config or {}).get(CONFIG_ID, trial.trial_id))


class TablesCallback(Callback):
    """Tune callback: a configuration's rows as its trial completes or fails (`TableWriter.record`)."""

    def __init__(self, writer: TableWriter) -> None:
        self.writer = writer

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._write(trials, trial, "TERMINATED")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._write(trials, trial, "ERROR")

    def _write(self, trials: list, trial, status: str) -> None:
        try:
            self.writer.record(trials, trial, status)
        except Exception as error:  # noqa: BLE001 - a table that cannot be written now must not stop the study
            print(f"warning: the rows of trial {trial.trial_id} not written ({type(error).__name__}: {error}); "
                  "the tables are written whole from Tune's record when the study ends", file=sys.stderr, flush=True)
