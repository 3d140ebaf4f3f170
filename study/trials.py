"""Tune's trials + each configuration's Train checkpoint -> the study's tables.

* `trials.parquet`: one row per (configuration, seed) at the configuration's scored epoch: the last
  epoch Tune saw it report, which all its seeds reached together (they train in one trial). Every
  hyperparameter (`param/*`), the seed, every per-dataset per-split per-K recall, the WHM, status,
  whether the scheduler stopped it early (or, for a failed one, why: `error`), time and compute (accumulated over resumes), where it ran,
  and how it computed (budget, image sizes, precision, workers, threads, package versions).
* `history.parquet`: one row per (configuration, seed, epoch) up to the scored epoch, read from the
  checkpoint's history, so a resumed trial loses no epoch.
* `ranks/<config_id>.parquet`: every evaluated query's first-hit rank, every epoch (the statistics
  resample queries, methods.md A.9), copied from the checkpoint.

`configuration_rows` gives one configuration's rows (a trial end writes them as a part,
study/table_writer.py); `trials_frame` every configuration's, for the tables written whole.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
from ray.tune import ExperimentAnalysis

from study.parquet_io import CELL_WEIGHTS_KEY, write_parquet_atomic
from study.space import SearchSpace
from study.table_parts import THROUGH_KEY, uniform_params
from study.trainable import train_run_name
from study.trial_failure import recorded_failure
from study.trial_config import BASELINE_OF, CONFIG_ID, CONTROL_KEYS, ROLE, UNTIL
from study.train import HISTORY_FILE, RANKS_FILE
from study.trial_run import seed_prefix

TRIALS_FILE = "trials.parquet"
HISTORY_TABLE = "history.parquet"
RANKS_DIR = "ranks"
MANIFESTS_KEY = b"cirstudy.manifests"  # dataset key -> ImageManifest: which images a study really used
METRIC_PREFIXES = ("recall/", "breakdown/", "gap/", "train/")
UNFINISHED = ("PENDING", "RUNNING", "PAUSED")
ERROR_FILE = "error.txt"  # Tune's, in a failed trial's folder
STATUS_ORDER = {"TERMINATED": 0, "ERROR": 1, "PAUSED": 2, "PENDING": 3, "RUNNING": 4}


@dataclass
class Configuration:
    """What the study knows of one configuration, over the Tune trials that trained it."""

    config_id: str
    params: dict[str, Any]
    role: str
    baseline_id: str | None
    trial_id: str = ""
    status: str = "PENDING"
    until: int = 0
    seen_epoch: int = 0  # the last epoch Tune saw reported
    last_result: dict[str, Any] = field(default_factory=dict)
    error_file: str | None = None  # Tune's error file of its latest trial, when that one failed


def configurations(trials: Iterable, ended: Mapping[str, str] | None = None) -> list[Configuration]:
    """Every configuration of Tune's `trials` (ExperimentAnalysis's, or the running controller's),
    in config-id order; the latest trial (highest rung) decides its status. `ended`: trial id ->
    status, for a trial that Tune is ending right now (its status changes after the callbacks)."""
    found: dict[str, Configuration] = {}
    for trial in trials:
        status = (ended or {}).get(trial.trial_id, trial.status)
        config = dict(trial.config or {})
        config_id = str(config.get(CONFIG_ID, trial.trial_id))
        entry = found.setdefault(config_id, Configuration(
            config_id, {k: v for k, v in config.items() if k not in CONTROL_KEYS},
            str(config.get(ROLE, "searched")), config.get(BASELINE_OF)))
        result = trial.last_result or {}
        until = int(config.get(UNTIL) or 0)
        later = (until, -STATUS_ORDER.get(status, 5)) >= (entry.until, -STATUS_ORDER.get(entry.status, 5))
        if later:
            entry.trial_id, entry.status, entry.until = trial.trial_id, status, until
            entry.error_file = f"{trial.path}/{ERROR_FILE}" if status == "ERROR" and trial.path else None
        if int(result.get("epoch", 0)) >= entry.seen_epoch and "epoch" in result:
            entry.seen_epoch, entry.last_result = int(result["epoch"]), dict(result)
    return [found[key] for key in sorted(found)]


def error_reason(study_dir: Path, config: Configuration) -> str | None:
    """Why a failed configuration failed: the reason its workers recorded (a diverged loss), else the
    last line of Tune's error file (the exception)."""
    if config.status != "ERROR":
        return None
    reason = recorded_failure(study_dir / "train" / train_run_name(config.config_id))
    if reason is None and config.error_file:
        try:
            lines = [line for line in Path(config.error_file).read_text(errors="replace").splitlines() if line.strip()]
            reason = lines[-1].strip()[:500] if lines else None
        except OSError:
            reason = None
    return reason or "failed (no reason recorded)"


def latest_checkpoint(train_dir: Path) -> Path | None:
    """The newest complete checkpoint folder of a Train run (num_to_keep=1 leaves one; two while the
    next is being written)."""
    complete = [p for p in sorted(train_dir.glob("checkpoint_*")) if (p / HISTORY_FILE).is_file()]
    return complete[-1] if complete else None


def read_history(study_dir: Path, config_id: str) -> tuple[list[dict[str, Any]], Path | None]:
    checkpoint = latest_checkpoint(study_dir / "train" / train_run_name(config_id))
    if checkpoint is None:
        return [], None
    return json.loads((checkpoint / HISTORY_FILE).read_text()), checkpoint


def _seed_metrics(metrics: Mapping[str, Any], seed: int) -> dict[str, Any]:
    prefix = seed_prefix(seed)
    return {k.removeprefix(prefix): float(v) for k, v in metrics.items()
            if k.startswith(prefix) and isinstance(v, (int, float))}


def configuration_rows(study_dir: Path, space: SearchSpace, config: Configuration, *, budget_name: str,
                       epochs: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(trials rows, history rows) of one configuration: a row per seed at its scored epoch, and a
    row per seed and epoch up to it; copies its ranks file into `<study>/ranks/`. Reads only this
    configuration's checkpoint: the cost of one trial end does not grow with the study."""
    rows, history_rows = [], []
    history, checkpoint = read_history(study_dir, config.config_id)
    if not history and config.last_result:  # no checkpoint yet: what Tune saw is all there is
        history = [config.last_result]
    scored = config.seen_epoch or (int(history[-1]["epoch"]) if history else 0)
    history = [h for h in history if int(h["epoch"]) <= scored]
    if checkpoint is not None and (checkpoint / RANKS_FILE).is_file():
        _copy_atomic(checkpoint / RANKS_FILE, study_dir / RANKS_DIR / f"{config.config_id}.parquet")
    last = history[-1] if history else {}
    base = {
        "config_id": config.config_id, "trial_id": config.trial_id, "role": config.role,
        "baseline_id": config.baseline_id, "status": config.status, "epoch": int(last.get("epoch", 0)),
        "max_epochs": epochs,
        "stopped_early": config.status == "TERMINATED" and int(last.get("epoch", 0)) < epochs,
        "error": error_reason(study_dir, config),
    }
    for name in space.parameter_names():
        base[f"param/{name}"] = config.params.get(name)  # None where a conditional parameter was inactive
    for seed in space.seeds:
        per_seed = _seed_metrics(last, seed)
        row = {**base, "seed": seed}
        row.update({k: v for k, v in per_seed.items() if k.startswith(METRIC_PREFIXES)})
        row["whm"] = per_seed.get("whm", float("nan"))
        row["wall_time_s"] = float(last.get("time/total_s", 0.0))
        row["cpu_s"] = float(last.get("time/cpu_s", 0.0))
        row["gpu_s"] = float(last.get("time/gpu_s", 0.0))
        row["nodes"] = str(last.get("nodes", ""))  # the Train workers' nodes
        row["driver_node"] = str(last.get("driver_node", ""))
        row["budget"] = budget_name
        row.update({k: v for k, v in last.items() if k.startswith("setup/")})
        rows.append(row)
        for entry in history:
            values = _seed_metrics(entry, seed)
            history_rows.append({"config_id": config.config_id, "seed": seed, "epoch": int(entry["epoch"]),
                                 **{k: v for k, v in values.items() if k.startswith((*METRIC_PREFIXES, "whm"))}})
    return rows, history_rows


def trials_frame(study_dir: Path, space: SearchSpace, *, budget_name: str, epochs: int,
                 trials: Iterable | None = None, ended: Mapping[str, str] | None = None,
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, history) of every configuration Tune knows of, finished or not; copies each
    configuration's ranks file into `<study>/ranks/`. `trials` and `ended`: Tune's trials while the
    study runs (default: read the study's experiment state from disk); see `configurations`."""
    rows, history_rows = [], []
    if trials is None:
        trials = ExperimentAnalysis(str(study_dir)).trials
    for config in configurations(trials, ended):
        found, history = configuration_rows(study_dir, space, config, budget_name=budget_name, epochs=epochs)
        rows += found
        history_rows += history
    history = pd.DataFrame(history_rows, columns=None if history_rows else ["config_id", "seed", "epoch"])
    return uniform_params(pd.DataFrame(rows)), history


def _copy_atomic(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.tmp")
    shutil.copyfile(source, temporary)
    temporary.replace(destination)


def table_metadata(cell_weights: Mapping[str, float], manifests: Mapping[str, Any] | None = None) -> dict[bytes, bytes]:
    """The schema metadata of trials.parquet, history.parquet and their parts: the WHM cell weights
    and each dataset's image manifest (counts of listed and missing images and a hash of the list)."""
    return {CELL_WEIGHTS_KEY: json.dumps(dict(cell_weights)).encode(),
            MANIFESTS_KEY: json.dumps({k: asdict(m) if m else None for k, m in (manifests or {}).items()}).encode()}


def write_trials(frame: pd.DataFrame, history: pd.DataFrame, study_dir: Path, cell_weights: Mapping[str, float],
                 manifests: Mapping[str, Any] | None = None, *, parts_through: int = 0) -> Path:
    """trials.parquet and history.parquet (history first: a reader that finds trials.parquet finds
    its history), with `table_metadata` and the number of the last part they hold."""
    path = Path(study_dir) / TRIALS_FILE
    metadata = {**table_metadata(cell_weights, manifests), THROUGH_KEY: str(parts_through).encode()}
    write_parquet_atomic(history, Path(study_dir) / HISTORY_TABLE, metadata=metadata)
    write_parquet_atomic(frame, path, metadata=metadata)
    return path
