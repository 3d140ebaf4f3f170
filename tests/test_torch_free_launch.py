"""A trial's Tune process and Ray Train's controller never import torch (issue 12: seconds of each
trial's start-up and 0.3 GiB per process): the trainable's modules, and everything the controller
unpickles (the run context with the RunSpec, the backend config and its backend for one worker),
load in a fresh interpreter without it. Workers import torch, and several workers still get torch's
process group (tests/test_data_parallel.py, slow)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ray import cloudpickle

from study.budget import Budget, DatasetEntry
from study.trainer import RunSpec, build_trainer

ROOT = Path(__file__).resolve().parent.parent


def fresh_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_the_trainable_and_its_modules_import_without_torch() -> None:
    loaded = fresh_python("import sys, study.trainable; print(sorted(m for m in ('torch', 'models', 'torchvision') "
                          "if m in sys.modules))")
    assert loaded == "[]"


def test_what_trains_controller_unpickles_needs_no_torch(tmp_path: Path) -> None:
    spec = RunSpec(params={"composer": "tirg", "K": 8, "regularizer": "ga", "ga_strength": 0.01, "__config__": "c0007"},
                   seeds=(0, 1), budget=Budget(epochs=2, workers_per_trial=1), datasets=(DatasetEntry("css"),),
                   cell_weights={"css/test@1": 1.0}, until=2, run_dir=str(tmp_path / "train-c0007"))
    trainer = build_trainer(spec, run_name="train-c0007", storage_path=str(tmp_path))
    path = tmp_path / "controller.pkl"
    path.write_bytes(cloudpickle.dumps((trainer.train_run_context, trainer.backend_config)))
    loaded = fresh_python(
        "import pickle, sys\n"
        f"context, config = pickle.loads(open({str(path)!r}, 'rb').read())\n"
        "backend = config.backend_cls()\n"
        "one_worker = ['worker']\n"  # what the backend reads of a worker group: its size
        "backend.on_start(one_worker, config); backend.on_training_start(one_worker, config)\n"
        "backend.on_shutdown(one_worker, config)\n"
        "spec = context.train_loop_config['spec']\n"
        "print(spec.params['__config__'], spec.seeds, 'torch' in sys.modules)"
    )
    assert loaded == "c0007 (0, 1) False"


def test_the_workers_read_the_configuration_from_the_spec() -> None:
    spec = RunSpec(params={"composer": "concat", "K": 4, "regularizer": "dim", "dim_weight": 0.1, "__config__": "c0003",
                           "__until__": 2}, seeds=(3,), budget=Budget(epochs=2), datasets=(DatasetEntry("css"),),
                   cell_weights={}, until=2)
    trial = spec.trial()
    assert (trial.composer, trial.k, trial.seeds, trial.config_id, trial.until) == ("concat", 4, (3,), "c0003", 2)
    assert [c.name for c in trial.regularizers] == ["dim"]
