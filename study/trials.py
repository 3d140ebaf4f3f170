"""Tune's ResultGrid -> `trials.parquet`: one row per trial with every hyperparameter, the seed,
every per-dataset per-split per-K recall, the WHM, status, wall time and the nodes it ran on."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
from ray.tune import ExperimentAnalysis

from study.parquet_io import CELL_WEIGHTS_KEY, write_parquet_atomic
from study.space import SearchSpace
from study.trial_config import TRIAL_INDEX

TRIALS_FILE = "trials.parquet"
MANIFESTS_KEY = b"cirstudy.manifests"  # dataset key -> ImageManifest: which images a study really used


def trial_row(trial_id: str, status: str, config: Mapping[str, Any], metrics: Mapping[str, Any], *,
              space: SearchSpace) -> dict:
    row: dict[str, Any] = {
        "trial_id": trial_id,
        "status": status,  # Tune's: TERMINATED (finished or stopped by ASHA), ERROR, PENDING, RUNNING, PAUSED
        "seed": space.seeds[int(config.get(TRIAL_INDEX, 0))],
    }
    for name in space.parameter_names():
        row[f"param/{name}"] = config.get(name)  # None where a conditional parameter was inactive
    for key, value in metrics.items():
        if key.startswith(("recall/", "breakdown/", "gap/")):
            row[key] = float(value)
    row["whm"] = float(metrics["whm"]) if "whm" in metrics else float("nan")
    row["epoch"] = int(metrics.get("epoch", 0))
    row["wall_time_s"] = float(metrics.get("time_total_s", 0.0))
    row["nodes"] = str(metrics.get("nodes", ""))  # the Train workers' nodes
    row["driver_node"] = str(metrics.get("driver_node", ""))
    return row


def trials_frame(study_dir: Path, space: SearchSpace) -> pd.DataFrame:
    """Every trial Tune knows of in `study_dir`, finished or not (an interrupted study included)."""
    analysis = ExperimentAnalysis(str(study_dir))
    rows = [
        trial_row(trial.trial_id, trial.status, trial.config or {}, trial.last_result or {}, space=space)
        for trial in analysis.trials
    ]
    frame = pd.DataFrame(rows)
    for column in [c for c in frame.columns if c.startswith("param/")]:
        values = frame[column].dropna()
        if values.empty:  # a conditional parameter no trial sampled: a float column of nulls
            frame[column] = frame[column].astype("float64")
        elif len({type(v) for v in values}) > 1:  # K: [2, 8, batch] -> Parquet needs one type
            frame[column] = frame[column].map(lambda v: None if v is None else str(v))
    return frame


def write_trials(frame: pd.DataFrame, study_dir: Path, cell_weights: Mapping[str, float],
                 manifests: Mapping[str, Any] | None = None) -> Path:
    """trials.parquet, with the WHM cell weights and each dataset's image manifest (counts of
    listed and missing images and a hash of the image list) in its metadata."""
    path = Path(study_dir) / TRIALS_FILE
    metadata = {CELL_WEIGHTS_KEY: json.dumps(dict(cell_weights)).encode(),
                MANIFESTS_KEY: json.dumps({k: asdict(m) if m else None for k, m in (manifests or {}).items()}).encode()}
    write_parquet_atomic(frame, path, metadata=metadata)
    return path
