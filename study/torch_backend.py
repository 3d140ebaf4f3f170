"""Ray Train's backend for a run's workers, importing torch only where torch runs.

Ray's `TorchConfig` lives in a module that imports torch, and Train's controller unpickles the
backend config, so with it every trial's controller imports torch before it starts the first
worker, and holds 0.42 GiB instead of 0.12 (bench/trial_overhead.py), for a process that computes
nothing. A run of one worker needs no process group (every collective of ours is skipped
when the world is 1), so this config's backend does nothing for it; a run of several workers gets
Ray's own torch backend, imported then, in the controller, as before.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ray.train.backend import Backend, BackendConfig
from ray.train.v2._internal.util import TrainingFramework


class _CudaDevice:
    """Train's context around the train function, on the worker: the worker's GPU becomes torch's
    current CUDA device (what Ray's TorchConfig does), a no-op on CPU."""

    def __enter__(self) -> None:
        import torch

        import ray.train.torch

        if torch.cuda.is_available():
            device = ray.train.torch.get_device()
            if device.type == "cuda":
                torch.cuda.set_device(device)

    def __exit__(self, *exc: Any) -> bool:
        return False


class _StudyTorchBackend(Backend):
    share_cuda_visible_devices: bool = True  # as Ray's torch backend: a node's workers see each other's GPUs

    def _ray_torch(self, hook: str, worker_group: Any, config: "StudyTorchConfig") -> None:
        """Ray's torch backend's `hook` for several workers (imported only then); nothing for one."""
        if len(worker_group) > 1:
            from ray.train.torch.config import TorchConfig, _TorchBackend

            torch_config = TorchConfig(backend=config.backend, timeout_s=config.timeout_s)
            getattr(_TorchBackend(), hook)(worker_group, torch_config)

    def on_start(self, worker_group: Any, backend_config: "StudyTorchConfig") -> None:
        self._ray_torch("on_start", worker_group, backend_config)

    def on_training_start(self, worker_group: Any, backend_config: "StudyTorchConfig") -> None:
        self._ray_torch("on_training_start", worker_group, backend_config)

    def on_shutdown(self, worker_group: Any, backend_config: "StudyTorchConfig") -> None:
        self._ray_torch("on_shutdown", worker_group, backend_config)


@dataclass
class StudyTorchConfig(BackendConfig):
    """`backend`: torch.distributed's ("gloo" on CPU, "nccl" on GPU), used with several workers."""

    backend: str = "gloo"
    timeout_s: int = 1800

    @property
    def backend_cls(self) -> type[Backend]:
        return _StudyTorchBackend

    @property
    def train_func_context(self) -> type[_CudaDevice]:
        return _CudaDevice

    @property
    def framework(self) -> TrainingFramework:
        return TrainingFramework.TORCH

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "timeout_s": self.timeout_s}
