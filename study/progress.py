"""One line per trial result while a study runs: which configuration, which epoch, its seed-mean
WHM, and how many trials are done, so a long study shows where it is without Tune's status table."""
from __future__ import annotations

import sys
import time

from ray.tune import Callback

from study.trial_config import CONFIG_ID


def _name(trial) -> str:
    return str((trial.config or {}).get(CONFIG_ID, trial.trial_id))


class ProgressCallback(Callback):
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.done: set[str] = set()
        self.started = time.time()

    def _line(self, text: str) -> None:
        elapsed = time.time() - self.started
        print(f"[{elapsed:6.0f}s {len(self.done)} trials done] {text}", file=sys.stderr, flush=True)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        recalls = "  ".join(
            f"{key.removeprefix('recall/')} {value:.3f}" for key, value in sorted(result.items())
            if key.startswith("recall/") and "/test@" in key and key.endswith(("@1", "@10"))
        )
        whm = result.get("whm", float("nan"))
        self._line(f"config {_name(trial)} (trial {trial.trial_id}) epoch {result.get('epoch')}/{self.epochs}: "
                   f"seed-mean whm {whm:.4f}  {recalls}")

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self.done.add(trial.trial_id)
        self._line(f"trial {trial.trial_id} finished")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self.done.add(trial.trial_id)
        self._line(f"trial {trial.trial_id} FAILED: see {trial.path}/error.txt")

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self._line(f"config {_name(trial)} (trial {trial.trial_id}) started")

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        self._line(f"trial {trial.trial_id} lost its process (a node died?): restarting it from its last checkpoint")
