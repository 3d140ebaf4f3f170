"""The study's tables, rewritten atomically each time a configuration's trial ends, so a study
stopped at any moment (Ctrl-C, SIGTERM, SIGKILL, a lost driver node) leaves the tables of everything
that finished: `trials.parquet`, `history.parquet`, `ranks/`, and `ranking.parquet`, `gains.parquet`,
`importance.parquet` (study/results.py) with `optuna.log` for optuna-dashboard (study/optuna_export.py).
A reader never sees half a file (study/parquet_io.py).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
from ray.tune import Callback

from study.space import SearchSpace

__all__ = ["TableWriter", "TablesCallback"]


class TableWriter:
    def __init__(self, study_dir: Path, space: SearchSpace, *, budget_name: str, epochs: int,
                 cell_weights: Mapping[str, float], manifests: Mapping[str, Any]) -> None:
        self.study_dir, self.space, self.budget_name, self.epochs = Path(study_dir), space, budget_name, epochs
        self.cell_weights, self.manifests = dict(cell_weights), dict(manifests)

    def write(self, trials: Iterable | None = None, ended: Mapping[str, str] | None = None, *,
              rank: bool = True) -> pd.DataFrame:
        """Write trials.parquet and history.parquet (from Tune's `trials`, default: the experiment
        state on disk) and, with `rank`, the ranking, gains, importance and optuna.log; return the trials."""
        from study import results
        from study.optuna_export import write_optuna_journal
        from study.trials import trials_frame, write_trials

        frame, history = trials_frame(self.study_dir, self.space, budget_name=self.budget_name, epochs=self.epochs,
                                      trials=trials, ended=ended)
        write_trials(frame, history, self.study_dir, self.cell_weights, self.manifests)
        if rank and len(frame) and (frame["status"] == "TERMINATED").any():  # else there is nothing to rank
            ranking = results.write_tables(self.study_dir)
            write_optuna_journal(self.study_dir, self.space, ranking=ranking, trials=frame)
        return frame


class TablesCallback(Callback):
    """Tune callback: the tables again whenever a trial completes or fails."""

    def __init__(self, writer: TableWriter) -> None:
        self.writer = writer

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._write(trials, {trial.trial_id: "TERMINATED"})

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._write(trials, {trial.trial_id: "ERROR"})

    def _write(self, trials: list, ended: Mapping[str, str]) -> None:
        try:
            self.writer.write(trials, ended)
        except Exception as error:  # noqa: BLE001 - a table that cannot be written now must not stop the study
            print(f"warning: tables not updated after trial {next(iter(ended))} ({type(error).__name__}: {error}); "
                  "they are written again when the next trial ends and when the study ends", file=sys.stderr,
                  flush=True)
