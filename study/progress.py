"""Where a running study is: one line per trial event (started, each epoch's seed-mean WHM and
recalls, finished, failed, restarted), and the study's state: trials done / running / stopped early,
the best configuration so far, the time spent and an estimate of what is left.

On a terminal the state is one live tqdm bar under the event lines; when stderr is a file or a pipe
(a cluster job's log, a CI run) every event line starts with the state instead, so a log read later
says the same."""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

from ray.tune import Callback

from study.trial_config import CONFIG_ID, UNTIL


def _name(trial) -> str:
    return str((trial.config or {}).get(CONFIG_ID, trial.trial_id))


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


@dataclass
class StudyState:
    """What the progress display shows; updated from Tune's callbacks."""

    total: int | None = None  # Tune's num_samples: exact for a grid with ASHA, else an upper bound
    done_before: int | None = None  # trials a resumed study had finished before this session
    ended: int = 0  # trials that ended in this session
    running: int = 0
    stopped_early: int = 0  # trials a scheduler stopped before the epoch they were started for
    best: tuple[float, str, int] | None = None  # (seed-mean whm, config id, epoch)

    @property
    def done(self) -> int:
        return (self.done_before or 0) + self.ended

    def remaining_s(self, elapsed: float) -> float | None:
        """At most this long, if the trials still to come take as long as this session's did."""
        if not self.total or not self.ended:
            return None
        return elapsed / self.ended * max(self.total - self.done, 0)

    def summary(self, elapsed: float) -> str:
        best = f"best {self.best[1]} whm {self.best[0]:.4f} (epoch {self.best[2]})" if self.best else "best -"
        left = self.remaining_s(elapsed)
        estimate = f", at most {_duration(left)} left" if left is not None else ""
        return f"{self.running} running, {self.stopped_early} stopped early, {best}{estimate}"


class ProgressCallback(Callback):
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.state = StudyState()
        self.last_epoch: dict[str, int] = {}  # trial id -> the last epoch it reported
        self.started = time.time()
        self._bar = None

    def __getstate__(self) -> dict:  # Tune pickles its callbacks for Tuner.restore; a bar cannot be
        return {**self.__dict__, "_bar": None}

    def setup(self, total_num_samples: int | None = None, **info) -> None:
        self.state.total = total_num_samples if total_num_samples and total_num_samples > 0 else None
        self.started = time.time()  # a resumed study: this session's time and rate
        self.state.done_before, self.state.ended, self.state.running = None, 0, 0
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self.state.total, unit="trial", file=sys.stderr, dynamic_ncols=True,
                             bar_format="{n_fmt}/{total_fmt} trials done |{bar:20}| {elapsed}{postfix}")

    def _count_done_before(self, trials: list, trial) -> None:
        if self.state.done_before is None:  # the first event of this session
            self.state.done_before = sum(t.status in ("TERMINATED", "ERROR") for t in trials if t is not trial)

    def _show(self, text: str) -> None:
        elapsed = time.time() - self.started
        if self._bar is not None:
            self._bar.set_postfix_str(self.state.summary(elapsed), refresh=False)
            self._bar.n = self.state.done
            self._bar.write(text, file=sys.stderr)
            self._bar.refresh()
            return
        total = f"/{self.state.total}" if self.state.total else ""
        print(f"[{_duration(elapsed)} {self.state.done}{total} trials done, {self.state.summary(elapsed)}] {text}",
              file=sys.stderr, flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self._count_done_before(trials, trial)
        self.state.running += 1
        self._show(f"config {_name(trial)} (trial {trial.trial_id}) started")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        self._count_done_before(trials, trial)
        epoch = int(result.get("epoch", 0))
        self.last_epoch[trial.trial_id] = epoch
        whm = float(result.get("whm", math.nan))
        if not math.isnan(whm) and (self.state.best is None or whm > self.state.best[0]):
            self.state.best = (whm, _name(trial), epoch)
        recalls = "  ".join(
            f"{key.removeprefix('recall/')} {value:.3f}" for key, value in sorted(result.items())
            if key.startswith("recall/") and "/test@" in key and key.endswith(("@1", "@10"))
        )
        self._show(f"config {_name(trial)} (trial {trial.trial_id}) epoch {epoch}/{self.epochs}: "
                   f"seed-mean whm {whm:.4f}  {recalls}")

    def _ended(self) -> None:
        self.state.ended += 1
        self.state.running = max(self.state.running - 1, 0)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._count_done_before(trials, trial)
        self._ended()
        target = int((trial.config or {}).get(UNTIL) or self.epochs)
        stopped = self.last_epoch.get(trial.trial_id, target) < target
        self.state.stopped_early += stopped
        self._show(f"trial {trial.trial_id} " + ("stopped early, finished" if stopped else "finished"))

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._count_done_before(trials, trial)
        self._ended()
        self._show(f"trial {trial.trial_id} FAILED: see {trial.path}/error.txt")

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        self._count_done_before(trials, trial)
        self._show(f"trial {trial.trial_id} lost its process (a node died?): restarting it from its last checkpoint")

    def on_experiment_end(self, trials: list, **info) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
