"""A reader never sees half a file, even when the writer is killed mid-write (issue 10): the study's
Parquet tables (study/parquet_io.py) and the node's image maps (study/data/cache.py's
build_atomically). Each writer runs in its own process and is killed with SIGKILL while its
temporary file exists, which is exactly "mid-write"."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from study.data import open_dataset
from study.parquet_io import read_parquet_frame
from study.data.image_cache import SUFFIX, image_cache_dir, open_image_map

ROWS = 200_000  # about 3 MB per version: a write takes long enough to be caught in the middle

PARQUET_WRITER = textwrap.dedent(f"""
    import sys
    import numpy as np, pandas as pd
    from study.parquet_io import write_parquet_atomic
    for version in range(1, 10_000):
        frame = pd.DataFrame({{"version": np.full({ROWS}, version), "value": np.arange({ROWS}) * version}})
        write_parquet_atomic(frame, sys.argv[1])
""")


def _kill_when(process: subprocess.Popen, appears) -> None:
    """SIGKILL `process` as soon as `appears()` is true (it must become true before the process ends)."""
    while not appears():
        assert process.poll() is None, "the writer ended before it was caught mid-write"
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_a_parquet_table_killed_mid_write_is_the_last_complete_one(tmp_path: Path) -> None:
    """Read with study.parquet_io's reader, which opens the file once: pyarrow given a path opens it
    twice, and about 1 read in 100 beside this writer then mixed two versions (an OSError), so 300
    reads catch that with a probability of about 0.95."""
    path = tmp_path / "trials.parquet"
    writer = subprocess.Popen([sys.executable, "-c", PARQUET_WRITER, str(path)])
    seen, reads = [], 0
    try:
        while len(seen) < 3 or reads < 300:  # read while it writes: every read is a whole version
            if path.exists():
                frame = read_parquet_frame(path)
                reads += 1
                assert len(frame) == ROWS and frame["version"].nunique() == 1
                version = int(frame["version"].iloc[0])
                assert (frame["value"] == np.arange(ROWS) * version).all()
                if version not in seen:
                    seen.append(version)
        _kill_when(writer, lambda: any(tmp_path.glob(".trials.parquet.*.tmp")))
    finally:
        writer.kill()
        writer.wait()
    frame = pd.read_parquet(path)  # the table under its name is the last complete version
    version = int(frame["version"].iloc[0])
    assert version >= seen[-1] and len(frame) == ROWS and (frame["value"] == np.arange(ROWS) * version).all()


MAP_BUILDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from study.data import open_dataset
    from study.data.image_cache import open_image_map
    cache = Path(sys.argv[1])
    open_image_map(open_dataset("css", scale=0.02, cache_dir=cache).train, cache_dir=cache)
""")


def test_an_image_map_killed_mid_build_is_rebuilt_whole(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    split = open_dataset("css", scale=0.02, cache_dir=cache).train  # generated here, outside the kill
    maps = image_cache_dir(cache)
    builder = subprocess.Popen([sys.executable, "-c", MAP_BUILDER, str(cache)])
    try:
        _kill_when(builder, lambda: maps.is_dir() and any(maps.glob(".*.tmp-*")))
    finally:
        builder.kill()
        builder.wait()
    assert not list(maps.glob(f"*{SUFFIX}"))  # nothing under a map's final name: the build never finished
    image_map = open_image_map(split, cache_dir=cache)  # the killed build's temporary is not read
    reference = open_image_map(split, cache_dir=tmp_path / "reference")
    indices = list(range(len(split.image_paths)))
    assert torch.equal(image_map.gather(indices), reference.gather(indices))
    assert not any(maps.glob(".*.tmp-*"))  # and the temporary is gone
