"""The rows of `trials.parquet` and `history.parquet` as they arrive: one small part per trial end,
and the whole tables merged from them now and then (study/table_writer.py says when).

A trial end writes the rows of its configuration (every seed; every epoch for history) as

    <study>/parts/<n>-<config id>.history.arrow     written first
    <study>/parts/<n>-<config id>.trials.arrow      written last: its presence makes the part whole

each atomically as an Arrow IPC file (study/parquet_io.py: a tenth of Parquet's CPU to write and
read back, and a part is read once), where `n` counts the trial ends of the study. So a trial end
costs the same whatever the study's size, and a study killed at any moment has the rows of every
configuration that finished, on disk. The whole tables record in their schema metadata
(`cirstudy.parts_through`) the last part merged into them; a reader takes the whole table and lays
the later parts over it, a configuration's rows in a later part replacing its earlier ones (the sync
scheduler trains one configuration over several trials). Parts already merged are deleted after the
merge; one left behind (a driver killed between the two) is skipped by its number.

Pandas and pyarrow only (no Ray, no torch): `study.tables` (`study.results`' reader) imports this,
and so can a reader that must stay light, such as study/report/inputs.py.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq

from study.parquet_io import read_parquet_table, write_arrow_atomic

__all__ = ["PARTS_DIR", "THROUGH_KEY", "Part", "drop_merged_parts", "last_part_number", "merge_parts",
           "parts_through", "read_parts", "read_with_parts", "rows_table", "uniform_params", "unmerged_parts",
           "write_part"]

PARTS_DIR = "parts"
THROUGH_KEY = b"cirstudy.parts_through"  # the number of the last part merged into a whole table
PART_COLUMN = "__part__"  # the part a row came from, while parts are merged
TABLE_FILES = {"trials": "trials.parquet", "history": "history.parquet"}
Table = Literal["trials", "history"]
_PART = re.compile(r"^(\d+)-(.+)\.trials\.arrow$")
_ANY_PART = re.compile(r"^(\d+)-.+\.(trials|history)\.arrow$")


@dataclass(frozen=True)
class Part:
    """One trial end's rows: its number (the order trial ends came in) and configuration."""

    number: int
    config_id: str
    directory: Path

    def path(self, table: Table) -> Path:
        return self.directory / f"{self.number:06d}-{self.config_id}.{table}.arrow"


def write_part(study_dir: Path, number: int, config_id: str, trials: pa.Table, history: pa.Table,
               metadata: Mapping[bytes, bytes]) -> Part:
    """Write one trial end's rows as part `number` (history first, trials last: see the docstring)."""
    part = Part(number, config_id, Path(study_dir) / PARTS_DIR)
    write_arrow_atomic(history, part.path("history"), metadata=dict(metadata))
    write_arrow_atomic(trials, part.path("trials"), metadata=dict(metadata))
    return part


def parts_through(path: Path) -> int:
    """The last part merged into the whole table at `path` (0: none, or no table yet)."""
    if not path.is_file():
        return 0
    try:
        raw = (pq.read_schema(path).metadata or {}).get(THROUGH_KEY)
    except (pa.ArrowException, OSError):
        return 0  # an unreadable table is reported by whoever reads it
    return int(raw) if raw is not None and raw.isdigit() else 0


def unmerged_parts(study_dir: Path) -> list[Part]:
    """The whole parts that `trials.parquet` does not hold yet, in the order their trials ended."""
    directory = Path(study_dir) / PARTS_DIR
    if not directory.is_dir():
        return []
    through = parts_through(Path(study_dir) / TABLE_FILES["trials"])
    found = []
    for path in directory.iterdir():
        match = _PART.match(path.name)
        if match and int(match.group(1)) > through:
            found.append(Part(int(match.group(1)), match.group(2), directory))
    return sorted(found, key=lambda part: part.number)


def last_part_number(study_dir: Path) -> int:
    """The highest part number used so far, merged, whole or half written (0: none): the next
    trial end's part takes the number after it, so it can never be mistaken for a merged one."""
    directory = Path(study_dir) / PARTS_DIR
    numbers = [parts_through(Path(study_dir) / TABLE_FILES["trials"])]
    if directory.is_dir():
        numbers += [int(m.group(1)) for m in map(_ANY_PART.match, (p.name for p in directory.iterdir())) if m]
    return max(numbers)


def drop_merged_parts(study_dir: Path, through: int) -> None:
    """Delete every part file numbered `through` or less: merged into the whole tables, or left half
    written by a killed driver (a history part without its trials part)."""
    directory = Path(study_dir) / PARTS_DIR
    if not directory.is_dir():
        return
    for path in sorted(directory.iterdir(), key=lambda p: not p.name.endswith(".trials.arrow")):
        match = _ANY_PART.match(path.name)  # trials parts first: a part without one is not read
        if match and int(match.group(1)) <= through:
            path.unlink(missing_ok=True)


def uniform_params(frame: pd.DataFrame) -> pd.DataFrame:
    """One Parquet type per `param/*` column: a conditional parameter no row has is a float column of
    nulls; a choice that mixes types (K: [2, 8, batch]) is stored as text."""
    for column in [c for c in frame.columns if c.startswith("param/")]:
        values = frame[column].dropna()
        if values.empty:
            frame[column] = frame[column].astype("float64")
        elif len({type(v) for v in values}) > 1:
            frame[column] = frame[column].map(lambda v: None if v is None or v != v else str(v))
    return frame


def rows_table(rows: list[dict[str, Any]], empty: tuple[str, ...] = ("config_id", "seed", "epoch")) -> pa.Table:
    """Row dicts -> an Arrow table, a column per key any row has (straight to Arrow: a part is
    written at every trial end). A column whose values mix types goes through `uniform_params`."""
    if not rows:
        return pa.table({name: pa.array([], pa.string() if name == "config_id" else pa.int64()) for name in empty})
    columns = dict.fromkeys(key for row in rows for key in row)
    try:
        return pa.table({name: [row.get(name) for row in rows] for name in columns})
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # K: [2, 8, batch] in one column
        return pa.Table.from_pandas(uniform_params(pd.DataFrame(rows)), preserve_index=False)


def read_parts(parts: list[Part], table: Table) -> pd.DataFrame | None:
    """The `table` rows of `parts`, with each one's part number in `PART_COLUMN`; None without any."""
    tables = []
    for part in parts:
        path = part.path(table)
        if path.is_file():
            found = feather.read_table(path, memory_map=False)
            tables.append(found.append_column(PART_COLUMN, pa.array(np.full(found.num_rows, part.number))))
    if not tables:
        return None
    try:  # one conversion to pandas for all the parts; a null column takes the type the others have
        return pa.concat_tables(tables, promote_options="permissive").to_pandas()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):  # a column typed differently
        return pd.concat([t.to_pandas() for t in tables], ignore_index=True)


def merge_parts(whole: pd.DataFrame | None, parts: pd.DataFrame | None, latest: Mapping[str, int]) -> pd.DataFrame:
    """`whole` with the parts laid over it: a configuration's rows become those of its latest part
    (`latest`: config id -> part number; a latest part without rows in this table leaves it none);
    configurations in config-id order, each one's rows in the order written."""
    frames = []
    if whole is not None and not whole.empty:
        frames.append(whole[~whole["config_id"].astype(str).isin(set(latest))])
    if parts is not None and not parts.empty:
        newest = parts["config_id"].astype(str).map(latest)
        frames.append(parts[parts[PART_COLUMN] == newest].drop(columns=PART_COLUMN))
    frames = [f for f in frames if not f.empty]
    if not frames:
        return whole if whole is not None else pd.DataFrame()
    merged = pd.concat(frames, ignore_index=True, sort=False)
    merged = merged.sort_values("config_id", kind="stable", key=lambda ids: ids.astype(str))
    return uniform_params(merged.reset_index(drop=True))


def read_with_parts(study_dir: Path, table: Table) -> tuple[pa.Table | None, pd.DataFrame | None]:
    """(the whole table as stored, with its metadata; the rows a reader sees: it and its unmerged parts
    merged), either None when there is nothing. Raises `pa.ArrowException` or `OSError` for a file
    that cannot be read; the caller names it."""
    study_dir = Path(study_dir)
    path = study_dir / TABLE_FILES[table]
    stored = read_parquet_table(path) if path.is_file() else None
    parts = unmerged_parts(study_dir)
    if not parts:
        return stored, None if stored is None else stored.to_pandas()
    if stored is None:  # no whole table yet: the newest part's metadata (cell weights) stands for it
        stored = feather.read_table(parts[-1].path("trials"), memory_map=False).slice(0, 0)
    whole = stored.to_pandas() if stored.num_rows else None
    return stored, merge_parts(whole, read_parts(parts, table), {p.config_id: p.number for p in parts})
