"""Every TensorBoard detail of a study: training curves, recalls, probe pictures, the reconstruction
grid of the best configuration (study/reconstruct.py) and the HParams dashboard.

Written from the Tune driver (a `ray.tune.Callback`), so event files land in the study directory
whatever node a trial ran on. Following platform-notes.md: ONE `hparams_config` summary at the
study root lists the union of all hyperparameters (conditional ones included) with their domains;
each trial's run directory gets only its session-start summary (`hparams_pb`) and scalars. Ray's
own TBX logger is switched off by `study.run` (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1), otherwise
several experiment summaries compete and conditional columns vanish.

    tensorboard --logdir studies/ga_vs_dim
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow.fs
from PIL import Image
from ray.tune import Callback
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY
from tensorboard.plugins.hparams import summary_v2 as hp
from torch.utils.tensorboard import SummaryWriter

from study.probes import PROBES_DIR, probe_tag
from study.space import SearchSpace
from study.trial_config import CONFIG_ID, CONTROL_KEYS

TRIALS_SUBDIR = "tensorboard"  # one run per configuration: tensorboard/<config id>
SCALAR_PREFIXES = ("recall/", "breakdown/", "train/", "gap/", "time/", "check/", "whm", "seed/")


def _mixed(values) -> bool:
    """A choice such as K: [2, 8, batch] mixes types; TensorBoard's Discrete domain cannot."""
    return len({type(v) for v in values}) > 1


def trial_hparams(config: Mapping[str, Any], space: SearchSpace) -> dict[str, Any]:
    """The hyperparameters of one configuration as TensorBoard shows them (its seeds train together:
    the metrics are seed means, per-seed curves are under `seed/<seed>/`)."""
    as_text = {p.name for p in space.parameters if p.kind == "choice" and _mixed(p.values)}
    return {k: str(v) if k in as_text else v for k, v in config.items() if k not in CONTROL_KEYS}


def run_name(trial) -> str:
    return str((trial.config or {}).get(CONFIG_ID, trial.trial_id))


def _domain(parameter) -> hp.Domain:
    if parameter.kind == "choice":
        values = list(parameter.values)
        return hp.Discrete([str(v) for v in values] if _mixed(values) else values)
    if parameter.kind == "int":
        return hp.IntInterval(int(parameter.low), int(parameter.high))
    return hp.RealInterval(float(parameter.low), float(parameter.high))


def write_hparams_config(study_dir: Path, space: SearchSpace, metric_tags: list[str]) -> None:
    """The one experiment summary at the study root; skipped when a resumed study already has it."""
    if any(study_dir.glob("events.out.tfevents.*")):
        return
    hparams = [hp.HParam(p.name, _domain(p)) for p in space.parameters]
    hparams += [hp.HParam(name, hp.Discrete([value])) for name, value in space.fixed.items()]
    metrics = [hp.Metric(tag) for tag in metric_tags]
    with SummaryWriter(log_dir=str(study_dir)) as writer:
        writer.file_writer.add_summary(hp.hparams_config_pb(hparams, metrics=metrics))


def probe_pictures_of(result: Mapping[str, Any], filesystem: pyarrow.fs.FileSystem) -> dict[str, np.ndarray]:
    """The probe pictures (study/probes.py) in the checkpoint a result was reported with, by tag;
    {} when it has none, or when Train already replaced it (it keeps one checkpoint per run)."""
    path = result.get(CHECKPOINT_PATH_KEY)
    if not path:
        return {}
    pictures = {}
    try:
        for info in filesystem.get_file_info(pyarrow.fs.FileSelector(f"{path}/{PROBES_DIR}")):
            if info.is_file and info.base_name.endswith(".png"):
                with filesystem.open_input_file(info.path) as stream:
                    with Image.open(io.BytesIO(stream.read())) as image:
                        pictures[probe_tag(info.base_name)] = np.asarray(image.convert("RGB"))
    except OSError:  # FileNotFoundError included: a result without pictures, or a checkpoint gone
        return {}
    return pictures


def log_picture(run_dir: Path, tag: str, png: Path, *, step: int = 0) -> None:
    """A PNG file as image `tag` in the TensorBoard run `run_dir` (a new event file, written after the
    study's: TensorBoard reads a run's files in order, so it shows with the run's curves)."""
    with Image.open(png) as image:
        picture = np.asarray(image.convert("RGB"))
    with SummaryWriter(log_dir=str(run_dir)) as writer:
        writer.add_image(tag, picture, global_step=step, dataformats="HWC")


class TensorBoardCallback(Callback):
    """A run per configuration under `<study>/tensorboard/<config id>`: session start, then every
    scalar and the probe pictures of each evaluation (the sync scheduler trains a configuration over
    several trials: one run still). The driver is the run's only writer: TensorBoard follows only
    the newest event file of a run unless started with --reload_multifile."""

    def __init__(self, study_dir: Path, space: SearchSpace) -> None:
        self.study_dir, self.space = Path(study_dir), space
        self._writers: dict[str, SummaryWriter] = {}

    def __getstate__(self) -> dict:  # Tune pickles its callbacks for Tuner.restore; writers cannot be
        return {"study_dir": self.study_dir, "space": self.space, "_writers": {}}

    def _writer(self, trial) -> SummaryWriter:
        name = run_name(trial)
        if name not in self._writers:
            directory = self.study_dir / TRIALS_SUBDIR / name
            started = any(directory.glob("events.out.tfevents.*"))  # a later rung or a resumed study
            writer = SummaryWriter(log_dir=str(directory))
            if not started:
                params = trial_hparams(trial.config, self.space)
                writer.file_writer.add_summary(hp.hparams_pb(params, trial_id=name))
            self._writers[name] = writer
        return self._writers[name]

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self._writer(trial)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        writer = self._writer(trial)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        for key, value in result.items():
            if key.startswith(SCALAR_PREFIXES) and isinstance(value, (int, float)) and math.isfinite(value):
                writer.add_scalar(key, value, global_step=step)
        for tag, picture in probe_pictures_of(result, trial.storage.storage_filesystem).items():
            writer.add_image(tag, picture, global_step=step, dataformats="HWC")
        writer.flush()

    def _close(self, trial) -> None:
        writer = self._writers.pop(run_name(trial), None)
        if writer is not None:
            writer.close()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._close(trial)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._close(trial)
