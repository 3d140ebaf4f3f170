"""The study as an Optuna study in a journal file, `<study dir>/optuna.log`, for optuna-dashboard's
plots (issue 11). One study, named after the study directory, direction maximize:

    optuna-dashboard studies/ga_vs_dim/optuna.log

One trial per configuration that ended:
* COMPLETE for each row of the ranking: value = its `whm_mean`, the seed-mean WHM at the epoch the
  ranking scores it; params with the distributions the sampler suggests them from
  (`study.space.define_by_run` run on a `FixedTrial`), a conditional one only where it is active;
  user attrs `config_id`, `role`, `baseline_id`, `epoch`, `max_epochs`, `stopped_early`, `seeds`,
  `n_seeds`, `whm_low`/`whm_high` (the ranking's interval), `ci_method`, `ci_covers`, `score/<dataset>`.
* FAIL for a configuration whose trial errored (a diverged loss, an exception), with its params and
  the reason in `error`: the dashboard then shows where in the space training breaks, and Optuna's
  plots and importances skip FAIL trials. A configuration still training is left out until it ends.

The rank, `p_vs_best` and `tied_with_best` are left out: they change whenever a new best appears,
and a trial that changes must be rewritten (below). Fixed parameters are study user attrs
(`fixed/<name>`, the dashboard's "Study User Attributes" table), not single-value categorical
params: every plot (slice, contour, parallel coordinates, rank) draws one panel or axis per
parameter, so each fixed one would add a constant axis, and Optuna's importances skip it anyway.

Written after each trial end (study/table_writer.py), atomically: the file is built in a temporary
file in the same directory, then `os.replace`d. A running optuna-dashboard reads a journal
incrementally (it keeps the byte offset of each line it replayed, and its caches assume a finished
trial never changes), so while every trial already written is unchanged the new file is the old
one, byte for byte, plus the new trials. Only when a written trial changed or went away (a
configuration continued to a later rung is training again, then rescored) is the file rebuilt,
unchanged trials first with their numbers and times; a dashboard open on it must then be restarted.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FixedTrial, FrozenTrial, TrialState, create_trial

from study.space import Parameter, SearchSpace, define_by_run
from study.tables import DONE, read_trials
from study.parquet_io import read_parquet_frame

__all__ = ["JOURNAL_FILE", "journal_trials", "write_optuna_journal"]

JOURNAL_FILE = "optuna.log"
FAILED = "ERROR"  # a trials.parquet status


def _is_null(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _plain(value: Any) -> Any:
    """numpy scalars -> Python ones (Optuna stores params and attrs as JSON)."""
    return value.item() if isinstance(value, np.generic) else value


def _json(value: Any) -> Any:
    """`value` as it reads back from the journal's JSON (tuples -> lists, dates -> text)."""
    return json.loads(json.dumps(value, default=str))


def _space_value(parameter: Parameter, stored: Any, config_id: str) -> Any:
    """A trials.parquet value -> the space's own: a choice column of mixed types stores "2" for 2,
    and an int one holding nulls (an inactive conditional parameter) reads back as 2.0."""
    stored = _plain(stored)
    if parameter.kind == "int":
        return int(round(float(stored)))
    if parameter.kind != "choice":
        return float(stored)
    numeric = isinstance(stored, (int, float)) and not isinstance(stored, bool)
    for choice in parameter.values:
        if str(choice) == str(stored) or (numeric and isinstance(choice, (int, float))
                                          and not isinstance(choice, bool) and float(choice) == stored):
            return choice
    raise ValueError(f"trials.parquet: configuration {config_id} has {parameter.name}={stored!r}, which is not "
                     f"among the space's values {list(parameter.values)} (line {parameter.line}); the space "
                     "changed since it ran: export with the space it ran with")


def _suggested(space: SearchSpace, stored: Mapping[str, Any], config_id: str) -> tuple[dict, dict]:
    """(params, distributions) as the sampler would have suggested `stored`: only the active ones."""
    by_name = {p.name: p for p in space.parameters}
    values = {name: _space_value(by_name[name], value, config_id)
              for name, value in stored.items() if name in by_name and not _is_null(value)}
    trial = FixedTrial(values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # out of range: create_trial refuses it below, with the config id
        try:
            define_by_run(space)(trial)
        except ValueError as error:
            raise ValueError(f"trials.parquet: configuration {config_id} does not fit the search space "
                             f"{space.path} ({error}); export with the space it ran with") from None
    return dict(trial.params), dict(trial.distributions)


def _number(value: Any) -> Any:
    value = _plain(value)
    return None if _is_null(value) else value


def journal_trials(ranking: pd.DataFrame, trials: pd.DataFrame, space: SearchSpace) -> list[tuple[str, FrozenTrial]]:
    """(config id, trial) per configuration that ended, in trials.parquet's order; see the module
    docstring for what each holds."""
    if "config_id" not in trials:
        raise ValueError("trials.parquet has no config_id column (written before configurations were "
                         "scheduled whole): there are no configurations to export")
    ranked = {str(row["config_id"]): row for row in ranking.to_dict("records")}
    params = [c for c in trials.columns if c.startswith("param/")]
    by_config: dict[str, list[dict[str, Any]]] = {}
    for record in trials.to_dict("records"):  # plain dicts: pandas' per-row access costs ms per configuration
        by_config.setdefault(str(record["config_id"]), []).append(record)
    found = []
    for config_id, rows in by_config.items():
        first = rows[0]
        status = first.get("status", DONE)
        if status not in (DONE, FAILED):
            continue  # still training
        attrs = {"config_id": config_id, "role": str(first.get("role", "searched"))}
        if not _is_null(first.get("baseline_id")):
            attrs["baseline_id"] = str(first["baseline_id"])
        attrs["seeds"] = sorted(int(row["seed"]) for row in rows)
        stored = {c.removeprefix("param/"): first[c] for c in params}
        values, distributions = _suggested(space, stored, config_id)
        row = ranked.get(config_id)
        value = None if row is None else float(row["whm_mean"])
        if status == DONE and value is not None and math.isfinite(value):
            attrs.update({"epoch": _number(row["epoch"]), "max_epochs": _number(row["max_epochs"]),
                          "stopped_early": bool(row["stopped_early"]), "n_seeds": int(row["n_seeds"]),
                          "whm_low": _number(row["whm_low"]), "whm_high": _number(row["whm_high"]),
                          "ci_method": row["ci_method"], "ci_covers": row["ci_covers"],
                          **{c: _number(row[c]) for c in ranking.columns if c.startswith("score/")}})
            state = TrialState.COMPLETE
        elif status == DONE:
            continue  # not ranked, or no finite WHM: the ranking decides what is finished
        else:
            error = first.get("error")
            attrs.update({"epoch": _number(first.get("epoch")),
                          "error": "failed (no reason recorded)" if _is_null(error) else str(error)})
            state, value = TrialState.FAIL, None
        attrs = {k: v for k, v in attrs.items() if v is not None}  # a null interval: no bound to show
        try:
            trial = create_trial(state=state, value=value, params=values, distributions=distributions,
                                 user_attrs=attrs)
        except ValueError as error:
            raise ValueError(f"trials.parquet: configuration {config_id} does not fit the search space "
                             f"{space.path} ({error}); export with the space it ran with") from None
        found.append((config_id, trial))
    return found


def _study_attrs(space: SearchSpace) -> dict[str, Any]:
    return {"space": space.name,
            "value": "seed-mean WHM at the epoch the ranking scores (ranking.parquet whm_mean)",
            **{f"fixed/{name}": _json(value) for name, value in space.fixed.items()}}


def _same(old: FrozenTrial, new: FrozenTrial) -> bool:
    return ((old.state, old.value, old.params, old.distributions, old.user_attrs)
            == (new.state, new.value, new.params, new.distributions, new.user_attrs))


def _written(path: Path, name: str) -> tuple[dict[str, Any], list[FrozenTrial]] | None:
    """(study user attrs, trials) of the journal at `path`; None when it is absent or unreadable."""
    if not path.is_file():
        return None
    try:
        study = optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(path))))
        return study.user_attrs, study.get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001 - whatever is wrong with an old file, it is rebuilt
        return None


def write_optuna_journal(study_dir: str | Path, space: SearchSpace, *, ranking: pd.DataFrame | None = None,
                         trials: pd.DataFrame | None = None, study_name: str | None = None) -> Path:
    """Write `<study_dir>/optuna.log` from the ranking and the trials table (default: the study's
    ranking.parquet and trials.parquet); return its path. The study is named `study_name`, default
    the directory's name.

    Example:
        write_optuna_journal("studies/tiny", load_space("studies/tiny/space.yaml"))
        optuna.load_study(study_name="tiny", storage=JournalStorage(JournalFileBackend("studies/tiny/optuna.log")))
    """
    study_dir = Path(study_dir)
    name = study_name or study_dir.name
    if trials is None:
        trials = read_trials(study_dir)[0]
    if ranking is None:
        ranking = read_parquet_frame(study_dir / "ranking.parquet")
    wanted = journal_trials(ranking, trials, space)
    fresh = dict(wanted)
    attrs = _study_attrs(space)
    path = study_dir / JOURNAL_FILE
    written = _written(path, name)
    old = written[1] if written else []
    kept: dict[str, FrozenTrial] = {}  # config id -> its written trial, unchanged
    for trial in old:
        config_id = trial.user_attrs.get("config_id")
        if config_id in fresh and config_id not in kept and _same(trial, fresh[config_id]):
            kept[config_id] = trial
    append = written is not None and written[0] == attrs and len(kept) == len(old)
    added = [trial for config_id, trial in wanted if config_id not in kept]
    if append and not added:
        return path
    fd, temporary = tempfile.mkstemp(dir=study_dir, prefix=f".{JOURNAL_FILE}.", suffix=".tmp")
    os.close(fd)
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)  # "A new study created ..." on every trial end
    try:
        if append:
            shutil.copyfile(path, temporary)
        study = optuna.create_study(storage=JournalStorage(JournalFileBackend(temporary)), study_name=name,
                                    direction="maximize", load_if_exists=append)
        if not append:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(["whm"])  # the dashboard's axis label
            for key, value in attrs.items():
                study.set_user_attr(key, value)
            study.add_trials(list(kept.values()))
        study.add_trials(added)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    finally:
        optuna.logging.set_verbosity(level)
    return path
