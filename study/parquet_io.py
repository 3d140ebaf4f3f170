"""Atomic table writes: a reader (the CLI, a resumed driver) never sees a half-written file, provided
it opens the file once (`read_parquet_table`).

Parquet for the study's tables; Arrow IPC files (Feather v2, uncompressed) for the small parts a
trial end writes (study/table_parts.py), which are read back once and cost about a tenth of
Parquet's CPU to write and to read.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq

__all__ = ["CELL_WEIGHTS_KEY", "read_parquet_frame", "read_parquet_table", "write_arrow_atomic", "write_parquet_atomic"]

# Parquet schema-metadata key of trials.parquet (and the tables derived from it): JSON
# {"<dataset>/<split>@<k>": weight, ...}; weight-0 cells may be omitted.
CELL_WEIGHTS_KEY = b"cirstudy.cell_weights"


def _with_metadata(table: pa.Table | pd.DataFrame, metadata: dict[bytes, bytes] | None) -> pa.Table:
    """`table` as Arrow with `metadata` merged into its schema's (pandas' own entry is kept, so
    dtypes round-trip)."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    return table


def _write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """`write` into a temporary file in `path`'s directory (created if missing), then `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_parquet_atomic(table: pa.Table | pd.DataFrame, path: str | os.PathLike,
                         metadata: dict[bytes, bytes] | None = None) -> None:
    """Write `table` to `path` as Parquet via a temporary file in the same directory and `os.replace`.

    `metadata` is merged into the schema metadata (pandas' own entry is kept, so dtypes
    round-trip); the directory is created if missing.
    """
    table = _with_metadata(table, metadata)
    _write_atomic(path, lambda f: pq.write_table(table, f))


def write_arrow_atomic(table: pa.Table | pd.DataFrame, path: str | os.PathLike,
                       metadata: dict[bytes, bytes] | None = None) -> None:
    """The same as `write_parquet_atomic`, as an uncompressed Arrow IPC file (`pyarrow.feather.read_table`)."""
    table = _with_metadata(table, metadata)
    _write_atomic(path, lambda f: feather.write_feather(table, f, compression="uncompressed"))


def read_parquet_table(path: str | os.PathLike, columns: list[str] | None = None,
                       filters: list[tuple] | None = None) -> pa.Table:
    """One whole version of a table that a writer may replace while it is read. The file is opened
    once: pyarrow's reader given a path opens it again to scan, and a replace between the two opens
    mixes two versions ("Page was smaller than expected": 27 of 3,226 reads beside a writer here)."""
    with open(path, "rb") as stream:
        return pq.read_table(stream, columns=columns, filters=filters)


def read_parquet_frame(path: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    """`read_parquet_table` as pandas."""
    return read_parquet_table(path, columns).to_pandas()
