"""A record per trial, enough to run it again: `<trial folder>/record.json` holds the resolved
configuration, its seeds and the epoch it trains to, the budget, the datasets with their manifests
and weights, the git commit (and whether the tree had uncommitted changes) and the versions of
Python and the packages that decide the numbers. Written by the Tune driver when a trial starts
(`TrialRecordCallback`), through the study storage's filesystem, so it lands beside Tune's own
`result.json` whatever node the trial runs on.

    python -m study.train --from-trial studies/ga_vs_dim/run_trial_7a54840a_4_...
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import pyarrow.fs
from ray.tune import Callback

from study.budget import Budget, DatasetEntry

RECORD_FILE = "record.json"
RESULT_FILE = "result.json"  # Tune's: one JSON line per reported result
REPO = Path(__file__).resolve().parent.parent


class TrialRecordError(ValueError):
    """A folder that holds no usable trial record; the message names the file and the fix."""


def git_state(repo: Path = REPO) -> dict[str, Any]:
    """The commit the code came from and whether the tree differed from it; None where unknown
    (an installed copy outside a git checkout, or no git)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            return None
        return done.stdout

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain") if commit else None
    return {"commit": commit.strip() if commit else None, "dirty": bool(status.strip()) if status is not None else None}


@dataclass(frozen=True)
class TrialRecord:
    """What `study.train --from-trial` needs to train a trial again, and what it was trained with."""

    trial_id: str
    config: dict[str, Any]  # as Tune gave it: parameters plus the control keys (config id, role, until)
    seeds: tuple[int, ...]
    budget: Budget
    datasets: tuple[DatasetEntry, ...]
    cell_weights: dict[str, float]
    data_seed: int
    cache_dir: str | None
    manifests: dict[str, Any]  # dataset key -> ImageManifest as a dict (None for generated data)
    git: dict[str, Any]
    versions: dict[str, str]
    allow_missing_images: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True, default=str) + "\n"

    @classmethod
    def read(cls, trial_dir: Path) -> "TrialRecord":
        path = trial_dir / RECORD_FILE
        if not path.is_file():
            raise TrialRecordError(f"{path}: no trial record; pass the folder of one trial of a study "
                                   f"(studies/<name>/run_trial_...), written by study.run since trials record themselves")
        try:
            raw = json.loads(path.read_text())
            return cls(
                trial_id=raw["trial_id"], config=dict(raw["config"]), seeds=tuple(raw["seeds"]),
                budget=Budget(**raw["budget"]),
                datasets=tuple(DatasetEntry(**{**d, "options": tuple(tuple(o) for o in d["options"])})
                               for d in raw["datasets"]),
                cell_weights=dict(raw["cell_weights"]), data_seed=int(raw["data_seed"]), cache_dir=raw["cache_dir"],
                manifests=dict(raw["manifests"]), git=dict(raw["git"]), versions=dict(raw["versions"]),
                allow_missing_images=bool(raw.get("allow_missing_images", False)),
            )
        except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError is a ValueError
            raise TrialRecordError(f"{path}: not a trial record this version can read ({error!r}); "
                                   "re-run the study with this version of cirstudy") from None


def last_result(trial_dir: Path) -> dict[str, Any]:
    """The last result Tune recorded for the trial (its final epoch's metrics)."""
    path = trial_dir / RESULT_FILE
    lines = path.read_text().splitlines() if path.is_file() else []
    if not any(line.strip() for line in lines):
        raise TrialRecordError(f"{path}: the trial reported no result; pick a trial that finished an epoch")
    return json.loads([line for line in lines if line.strip()][-1])


def _write(filesystem: pyarrow.fs.FileSystem, folder: str, name: str, text: str) -> None:
    """Write `folder/name` whole or not at all: a temporary file, then a move."""
    filesystem.create_dir(folder, recursive=True)
    temporary = f"{folder}/.{name}.tmp"
    with filesystem.open_output_stream(temporary) as stream:
        stream.write(text.encode())
    filesystem.move(temporary, f"{folder}/{name}")


class TrialRecordCallback(Callback):
    """Writes `record.json` into each trial's folder as the trial starts (again on a restart: the
    same content, the record of the run that produced the trial's last result)."""

    def __init__(self, *, seeds: tuple[int, ...], budget: Budget, datasets: tuple[DatasetEntry, ...],
                 cell_weights: Mapping[str, float], data_seed: int, cache_dir: str | None,
                 manifests: Mapping[str, Any], versions: Mapping[str, str], allow_missing_images: bool = False) -> None:
        self._fields = dict(
            seeds=tuple(seeds), budget=budget, datasets=tuple(datasets), cell_weights=dict(cell_weights),
            data_seed=data_seed, cache_dir=cache_dir, manifests={k: asdict(m) if m is not None else None
                                                                 for k, m in manifests.items()},
            versions=dict(versions), allow_missing_images=allow_missing_images,
        )
        self._git: dict[str, Any] = {}

    def setup(self, **info) -> None:
        self._git = git_state()  # at each start: a resumed study may run other code than it began with

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        record = TrialRecord(trial_id=trial.trial_id, config=dict(trial.config), git=self._git, **self._fields)
        _write(trial.storage.storage_filesystem, trial.path, RECORD_FILE, record.to_json())
