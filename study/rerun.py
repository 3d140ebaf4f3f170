"""`python -m study.train --from-trial studies/<name>/<trial folder>`: train one trial of a study
again from its record (study/trial_record.py), to the epoch it reached, and compare every recall
and the WHM with what the study recorded. On CPU, with the recorded versions and threads, they are
equal to the last bit; GPU kernels and other versions may differ, and the comparison says so."""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

from study.train import open_study_data, package_versions
from study.trainer import RunSpec, build_trainer
from study.trial_config import TrialConfig
from study.trial_record import RECORD_FILE, TrialRecord, TrialRecordError, git_state, last_result

COMPARED = ("recall/", "whm", "breakdown/", "gap/", "seed/")  # what a re-run must reproduce


def compared(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The result's numbers that describe the model (not its timing or setup)."""
    return {k: float(v) for k, v in metrics.items()
            if k.startswith(COMPARED) and isinstance(v, (int, float)) and not isinstance(v, bool)}


def differences(recorded: Mapping[str, Any], again: Mapping[str, Any]) -> list[str]:
    """One line per compared number that is missing on either side or not exactly equal."""
    first, second = compared(recorded), compared(again)
    lines = []
    for key in sorted(set(first) | set(second)):
        a, b = first.get(key), second.get(key)
        if not (a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))):
            lines.append(f"  {key}: trial {a}, re-run {b}")
    return lines


def _warnings(record: TrialRecord, data: Mapping[str, Any]) -> list[str]:
    """What differs between the trial's run and this one, and may change the numbers."""
    notes = []
    now = json.loads(package_versions())
    for name, version in sorted(record.versions.items()):
        if now.get(name) != version:
            notes.append(f"{name} {now.get(name)} here, {version} in the trial")
    git = git_state()
    if record.git.get("commit") and git.get("commit") != record.git["commit"]:
        notes.append(f"code at commit {git.get('commit')}, the trial ran {record.git['commit']}")
    if record.git.get("dirty"):
        notes.append("the trial ran with uncommitted changes (its record says the tree was dirty)")
    for key, manifest in record.manifests.items():
        here = data[key].manifest
        if manifest is not None and (here is None or asdict(here) != manifest):
            notes.append(f"dataset {key}: its images differ from the trial's (manifest {manifest} vs "
                         f"{asdict(here) if here else None})")
    return notes


def rerun(trial_dir: Path, *, storage: Path, address: str | None) -> int:
    """Exit code: 0 reproduced, 1 trained but different, 2 not a trial folder / bad record."""
    from study.ray_session import ray_session

    record = TrialRecord.read(trial_dir)  # TrialRecordError: the caller prints it, exit 2
    recorded = last_result(trial_dir)
    where = str(trial_dir / RECORD_FILE)
    try:
        trial = TrialConfig.from_params(record.config, seeds=record.seeds, where=where)
        until = int(recorded["epoch"])
        budget = record.budget
        print(f"re-running config {trial.config_id} (trial {record.trial_id}): {trial.composer}, seeds "
              f"{list(record.seeds)}, {until} epoch(s)", flush=True)
        data = {entry.key: open_study_data(entry, budget=budget, data_seed=record.data_seed,
                                           cache_dir=record.cache_dir, allow_missing_images=record.allow_missing_images)
                for entry in record.datasets}
    except (ValueError, KeyError) as error:  # DatasetError included: the data the record names cannot be opened
        raise TrialRecordError(f"{where}: cannot re-run this trial: {error}") from None
    for note in _warnings(record, data):
        print(f"warning: {note}: the numbers may differ", file=sys.stderr)
    storage = storage.resolve()
    run_name = f"rerun-{trial.config_id}-{record.trial_id}-{int(time.time())}"
    spec = RunSpec(params=record.config, seeds=record.seeds, budget=budget, datasets=record.datasets,
                   cell_weights=record.cell_weights, until=until, data_seed=record.data_seed,
                   cache_dir=record.cache_dir, allow_missing_images=record.allow_missing_images,
                   run_dir=f"{storage}/{run_name}")
    with ray_session(address, log_to_driver=True):
        result = build_trainer(spec, run_name=run_name, storage_path=str(storage)).fit()
    lines = differences(recorded, result.metrics)
    count = len(compared(recorded))
    if lines:
        print(f"not reproduced: {len(lines)} of {count} numbers differ from the trial's at epoch {until}:", file=sys.stderr)
        print("\n".join(lines), file=sys.stderr)
        return 1
    print(f"reproduced: all {count} recalls, breakdowns and the WHM equal the trial's at epoch {until} "
          f"(whm {recorded.get('whm')})")
    print(f"checkpoint: {result.checkpoint.path if result.checkpoint else None}")
    return 0
