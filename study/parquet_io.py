"""Atomic Parquet writes: a reader (the CLI, a resumed driver) never sees a half-written file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["CELL_WEIGHTS_KEY", "write_parquet_atomic"]

# Parquet schema-metadata key of trials.parquet (and the tables derived from it): JSON
# {"<dataset>/<split>@<k>": weight, ...}; weight-0 cells may be omitted.
CELL_WEIGHTS_KEY = b"cirstudy.cell_weights"


def write_parquet_atomic(table: pa.Table | pd.DataFrame, path: str | os.PathLike,
                         metadata: dict[bytes, bytes] | None = None) -> None:
    """Write `table` to `path` via a temporary file in the same directory and `os.replace`.

    `metadata` is merged into the schema metadata (pandas' own entry is kept, so dtypes
    round-trip); the directory is created if missing.
    """
    path = Path(path)
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
