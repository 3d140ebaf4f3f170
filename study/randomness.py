"""Random state per seed, so a seed trains the same alone or beside other seeds, and a resumed
study continues exactly where the interrupted one was.

Dropout draws from the global generators (torch's CPU and CUDA ones; numpy's and Python's are kept
too, for any code that uses them). A trial trains several seeds in one process, one after the other,
so each seed owns a `RandomState`: `with state.active():` swaps its generators in, and saves them
back on exit. Data order, negative groups, augmentation and GA's noise use their own generators,
seeded from (seed, epoch, step), so they need no saving. Each rank has its own stream (the ranks see
different data, so their dropout masks differ too), and the checkpoint keeps every rank's.
"""
from __future__ import annotations

import io
import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch

__all__ = ["RandomState", "stream_seed"]


def stream_seed(*parts: int | str) -> int:
    """A 63-bit seed from (seed, rank, ...): deterministic in every process (no `hash()`)."""
    mixed = 0x9E3779B97F4A7C15
    for part in parts:
        for byte in str(part).encode():
            mixed = ((mixed ^ byte) * 0x100000001B3) % (2**64)
        mixed = ((mixed ^ 0xFF) * 0x100000001B3) % (2**64)
    return mixed % (2**63)


def _capture() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RandomState:
    """The global generators of one (seed, rank) stream, swapped in while that seed trains."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state

    @classmethod
    def fresh(cls, *parts: int | str) -> "RandomState":
        outer = _capture()
        try:
            seed = stream_seed(*parts)
            torch.manual_seed(seed)
            np.random.seed(seed % (2**32))
            random.seed(seed)
            return cls(_capture())
        finally:
            _restore(outer)

    @contextmanager
    def active(self) -> Iterator[None]:
        outer = _capture()
        _restore(self._state)
        try:
            yield
        finally:
            self._state = _capture()
            _restore(outer)

    def to_bytes(self) -> bytes:
        """A checkpointable form (tensors and plain lists only, so `torch.load(weights_only=True)` reads it)."""
        state = dict(self._state)
        kind, keys, position, has_gauss, gauss = state["numpy"]
        state["numpy"] = [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(position), int(has_gauss),
                          float(gauss)]
        version, internal, gauss_next = state["python"]
        state["python"] = [version, list(internal), gauss_next]
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "RandomState":
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        kind, keys, position, has_gauss, gauss = state["numpy"]
        state["numpy"] = (kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss)
        version, internal, gauss_next = state["python"]
        state["python"] = (version, tuple(internal), gauss_next)
        return cls(state)
