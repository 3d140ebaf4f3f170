"""A study directory's files, read for the report: the record (`study.json`), the space
(`space.yaml`), the per-seed rows (`trials.parquet`, `history.parquet`) and the tables that
`study.results` computed (`ranking.parquet`, `gains.parquet`, `importance.parquet`); `study.tables`
says what each holds. Nothing here recomputes a statistic: the report shows what the results module
wrote, and seed means of the per-seed recalls.

This module reads with pandas and pyarrow only (not `study.tables`, which imports torch through the
metrics), so a report renders in seconds. Bad input raises `ReportError`, whose message names the
path and the fix.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from study.parquet_io import CELL_WEIGHTS_KEY, read_parquet_table
from study.space import SearchSpace, SpaceError, load_space
from study.table_parts import TABLE_FILES, Table, read_with_parts, unmerged_parts

__all__ = ["DONE", "ReportError", "StudyTables", "column_cells", "read_study_tables"]

DONE = "TERMINATED"  # the status of a finished trial (study.tables.DONE)
MANIFESTS_KEY = b"cirstudy.manifests"  # study.trials' (which imports Ray)
# the columns each section reads; an older table without them is rewritten by study.results
NEEDED = {
    "trials.parquet": ("config_id", "status", "seed"),
    "ranking.parquet": ("rank", "config_id", "whm_mean", "whm_low", "whm_high", "ci_covers", "n_seeds", "epoch",
                        "max_epochs", "stopped_early", "p_vs_best", "tied_with_best", "role", "baseline_id", "note"),
    "gains.parquet": ("config_id", "baseline_id", "epoch", "n_seeds", "gain", "gain_low", "gain_high", "p_value",
                      "p_holm", "p_improvement", "detectable_gain", "seeds_needed", "ci_covers", "note"),
    "importance.parquet": ("composer", "param", "fanova", "ped_anova", "n_configs", "n_active", "note"),
    "history.parquet": ("config_id", "seed", "epoch"),
}
_RECALL = re.compile(r"^recall/(?P<dataset>[^/]+)/(?P<split>[^/@]+)@(?P<k>\d+)$")
_BREAKDOWN = re.compile(r"^breakdown/(?P<dataset>[^/]+)/(?P<split>[^/@]+)/(?P<kind>[^/@]+)@(?P<k>\d+)$")
_GAP = re.compile(r"^gap/(?P<dataset>[^/@]+)@(?P<k>\d+)$")


class ReportError(ValueError):
    """The study directory cannot be reported; the message names the path and the fix."""


@dataclass(frozen=True)
class StudyTables:
    directory: Path
    record: Mapping[str, Any] | None  # study.json: budget, scheduler, seeds, versions
    space: SearchSpace | None
    notes: tuple[str, ...]  # what could not be read, and so is missing from the report
    trials: pd.DataFrame  # every row of trials.parquet, finished or not
    history: pd.DataFrame | None
    ranking: pd.DataFrame
    gains: pd.DataFrame
    importance: pd.DataFrame
    cell_weights: Mapping[str, float]
    manifests: Mapping[str, Any]  # dataset key -> images listed / missing / sha256

    @property
    def done(self) -> pd.DataFrame:
        """The finished rows of the ranked configurations."""
        return self.trials[(self.trials["status"] == DONE) & self.trials["config_id"].isin(self.ranking["config_id"])]

    @property
    def datasets(self) -> list[str]:
        """Dataset keys in the space's order (then any other the recall columns name)."""
        found = list(dict.fromkeys(m["dataset"] for m in column_cells(self.trials, "recall").values()))
        declared = [entry.key for entry in self.space.datasets] if self.space is not None else []
        return [d for d in declared if d in found] + [d for d in found if d not in declared]


def column_cells(frame: pd.DataFrame, family: str) -> dict[str, dict[str, Any]]:
    """`recall/<dataset>/<split>@<k>`, `breakdown/<dataset>/<split>/<kind>@<k>` or `gap/<dataset>@<k>`
    columns of `frame` -> their parts (k as an int), in column order."""
    pattern = {"recall": _RECALL, "breakdown": _BREAKDOWN, "gap": _GAP}[family]
    cells = {}
    for column in frame.columns:
        match = pattern.match(str(column))
        if match:
            cells[column] = {**match.groupdict(), "k": int(match["k"])}
    return cells


def _fix(directory: Path) -> str:
    return f"write the study's tables with `python -m study.results {directory} --write`"


def _read_parquet(path: Path, fix: str) -> tuple[pd.DataFrame, dict[bytes, bytes]]:
    name = path.name
    if not path.is_file():
        raise ReportError(f"{path}: not found; {fix}")
    try:
        table = read_parquet_table(path)
    except (pa.ArrowException, OSError) as error:
        raise ReportError(f"{path}: not a readable Parquet file ({error}); {fix}") from None
    frame = table.to_pandas()
    missing = [c for c in NEEDED[name] if c not in frame.columns]
    if missing:
        raise ReportError(f"{path}: lacks columns {missing} (written by an older cirstudy?); {fix}")
    return frame, dict(table.schema.metadata or {})


def _read_with_parts(directory: Path, table: Table, fix: str) -> tuple[pd.DataFrame, dict[bytes, bytes]] | None:
    """A per-seed table with the parts of the trials that ended since it was last rebuilt laid over it
    (study/table_parts.py), so a report made while a study runs shows every trial that has ended;
    None when neither the table nor a part holds any of it."""
    path = directory / TABLE_FILES[table]
    try:
        stored, frame = read_with_parts(directory, table)
    except (pa.ArrowException, OSError) as error:
        raise ReportError(f"{path} (or a part of it under {directory / 'parts'}): not readable ({error}); "
                          f"{fix}") from None
    if stored is None or frame is None or not len(frame.columns):
        return None
    missing = [c for c in NEEDED.get(path.name, ()) if c not in frame.columns]
    if missing:
        raise ReportError(f"{path}: lacks columns {missing} (written by an older cirstudy?); {fix}")
    return frame, dict(stored.schema.metadata or {})


def _json_metadata(metadata: Mapping[bytes, bytes], key: bytes, path: Path, fix: str) -> Any:
    try:
        return json.loads(metadata[key]) if key in metadata else None
    except json.JSONDecodeError as error:
        raise ReportError(f"{path}: schema metadata {key.decode()!r} is not JSON ({error}); {fix}") from None


def read_study_tables(study_dir: str | Path) -> StudyTables:
    """Read everything the report shows from `study_dir`; `ReportError` when it is not a study
    folder or its tables are missing or unreadable."""
    directory = Path(study_dir)
    if not directory.is_dir():
        what = "not a directory" if directory.exists() else "no such directory"
        raise ReportError(f"{directory}: {what}; give a study folder written by `python -m study.run`, "
                          "e.g. studies/<name>")
    record_path, trials_path = directory / "study.json", directory / "trials.parquet"
    if not record_path.is_file() and not trials_path.is_file():
        raise ReportError(f"{directory}: not a study directory (no study.json, no trials.parquet); give a "
                          "folder written by `python -m study.run`, e.g. studies/<name>")
    if not trials_path.is_file() and not unmerged_parts(directory):
        raise ReportError(f"{trials_path}: not found: no trial of this study has finished yet; the study "
                          "driver (`python -m study.run`) writes it as trials end")
    notes = []
    record = None
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ReportError(f"{record_path}: not JSON ({error}); `python -m study.run` writes it when a "
                              "study starts") from None
    else:
        notes.append(f"no {record_path.name}: the budget the study ran with is unknown")
    space = None
    if (directory / "space.yaml").is_file():
        try:
            space = load_space(directory / "space.yaml")
        except (SpaceError, OSError) as error:
            notes.append(f"space.yaml not read ({error}): the question and the datasets' settings are missing")
    else:
        notes.append("no space.yaml: the question and the datasets' settings are missing")
    fix = _fix(directory)
    trials, metadata = _read_with_parts(directory, "trials", "the study driver (`python -m study.run`) writes it") \
        or _read_parquet(trials_path, "the study driver (`python -m study.run`) writes it")  # its message
    ranking, ranking_metadata = _read_parquet(directory / "ranking.parquet", fix)
    gains, _ = _read_parquet(directory / "gains.parquet", fix)
    importance, _ = _read_parquet(directory / "importance.parquet", fix)
    found = _read_with_parts(directory, "history", "the study driver writes it with trials.parquet")
    history = found[0] if found else None
    if history is None:
        notes.append("no history.parquet: no learning curves")
    weights = (_json_metadata(metadata, CELL_WEIGHTS_KEY, trials_path, fix)
               or _json_metadata(ranking_metadata, CELL_WEIGHTS_KEY, directory / "ranking.parquet", fix) or {})
    manifests = _json_metadata(metadata, MANIFESTS_KEY, trials_path, fix) or {}
    return StudyTables(directory=directory, record=record, space=space, notes=tuple(notes), trials=trials,
                       history=history, ranking=ranking, gains=gains, importance=importance,
                       cell_weights={str(c): float(w) for c, w in dict(weights).items()},
                       manifests=manifests if isinstance(manifests, dict) else {})
