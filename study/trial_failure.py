"""A trial whose loss stops being finite, or whose configuration its workers cannot build (they
build it from the raw config, study/trainer.py): it ends with status `error` and the reason, and the
study goes on.

Retrying would only reproduce it (training is deterministic from the checkpoint), so the workers do
not raise, which would make Ray Train restart them from the last checkpoint and Tune restart the
trial: rank 0 records the reason in the Train run's folder (`failed.json`, on the study's shared
storage), every rank returns, and the Tune function raises `TrialFailed` with the reason, at once
again on Tune's retry. `study.trials` puts the reason in `trials.parquet`'s `error` column.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

__all__ = ["FAILURE_FILE", "TrialFailed", "nonfinite_loss", "raise_if_failed", "record_failure", "recorded_failure"]

FAILURE_FILE = "failed.json"


class TrialFailed(RuntimeError):
    """A trial that cannot go on (its loss is NaN or infinite); the message is the reason."""


def nonfinite_loss(train_logs: Mapping[str, float], *, epoch: int, world: int) -> str | None:
    """The reason, when any rank logged a NaN or infinite loss term this epoch (the same answer on
    every rank: one small all-reduce per epoch), else None."""
    bad = sorted(name for name, value in train_logs.items() if "/loss/" in name and not math.isfinite(value))
    if world > 1:
        import torch  # here: the trial's Tune process imports this module and never torch (study/trainer.py)
        import torch.distributed as dist

        flag = torch.tensor([float(bool(bad))])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and not bad:
            return f"the loss became NaN or infinite on another worker in epoch {epoch}"
    if not bad:
        return None
    shown = ", ".join(f"{name} = {train_logs[name]}" for name in bad[:3])
    return (f"the loss became NaN or infinite in epoch {epoch} ({shown}); lower the learning rate or the "
            "regulariser's strength")


def record_failure(run_dir: str | Path, reason: str) -> None:
    """Write the reason into the run's folder atomically (a reader never sees half of it)."""
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{FAILURE_FILE}.tmp"
    temporary.write_text(json.dumps({"reason": reason}) + "\n")
    temporary.replace(folder / FAILURE_FILE)


def recorded_failure(run_dir: str | Path) -> str | None:
    path = Path(run_dir) / FAILURE_FILE
    try:
        return str(json.loads(path.read_text())["reason"])
    except (OSError, ValueError, KeyError):
        return None


def raise_if_failed(run_dir: str | Path) -> None:
    reason = recorded_failure(run_dir)
    if reason is not None:
        raise TrialFailed(reason)
