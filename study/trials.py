"""Tune's ResultGrid -> `trials.parquet`: one row per trial with every hyperparameter, the seed,
every per-dataset per-split per-K recall, the WHM, status, wall time and the nodes it ran on."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
from ray.tune import ExperimentAnalysis

from study.parquet_io import CELL_WEIGHTS_KEY, write_parquet_atomic
from study.space import SearchSpace
from study.trial_config import TRIAL_INDEX

TRIALS_FILE = "trials.parquet"


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
        if key.startswith("recall/"):
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
    for column in frame.columns:  # a conditional float column that is all-None must still be float
        if column.startswith("param/") and frame[column].isna().all():
            frame[column] = frame[column].astype("float64")
    return frame


def write_trials(frame: pd.DataFrame, study_dir: Path, cell_weights: Mapping[str, float]) -> Path:
    path = Path(study_dir) / TRIALS_FILE
    write_parquet_atomic(frame, path, metadata={CELL_WEIGHTS_KEY: json.dumps(dict(cell_weights)).encode()})
    return path
