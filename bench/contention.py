"""How much of the machine other processes took while a benchmark measured (issue 12: the
machines are shared, and on 2 cores a second job halves a figure).

The machine's busy CPU time (psutil's /proc/stat: user, nice, system, irq, softirq, and steal, the
time the hypervisor gave these cores to another machine) minus this benchmark's own: this process,
the children it has waited for (RUSAGE_CHILDREN, which holds every descendant they waited for in
turn), and each live descendant with the children it has waited for (a Ray cluster started here:
its raylets, their workers, the study a benchmark runs). A process the benchmark started that was
orphaned (its parent ended without waiting for it) leaves the tree and counts as another's; the
figure errs towards "contended", never towards "clean". bench/recall_eval.py measures the same way.

    before = sample()
    ...  # the measurement
    share = others_share(before, sample())  # 0.0: nothing else ran; 0.5: one core of 2 went elsewhere
"""
from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass
from typing import Sequence

import psutil

__all__ = ["CpuSample", "CpuSampler", "at", "machine_busy_s", "others_share", "own_tree_cpu_s", "sample"]


def machine_busy_s() -> float:
    """CPU seconds the whole machine was busy since boot, all cores (guest time is inside user)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


def own_tree_cpu_s() -> float:
    """CPU seconds of this process and every descendant, live or waited for."""
    own, waited = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + waited.ru_utime + waited.ru_stime
    for process in psutil.Process().children(recursive=True):
        try:
            t = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # ended between the listing and the read: its parent's wait will count it
        total += t.user + t.system + t.children_user + t.children_system
    return total


@dataclass(frozen=True)
class CpuSample:
    time: float  # time.time()
    machine_s: float  # machine_busy_s()
    own_s: float  # own_tree_cpu_s()


def sample() -> CpuSample:
    return CpuSample(time.time(), machine_busy_s(), own_tree_cpu_s())


def others_share(before: CpuSample, after: CpuSample, cores: int | None = None) -> float:
    """The share of the machine's cores (0..1) that processes outside this benchmark used between
    two samples. Counters read at slightly different moments can make the difference a little
    negative: that is 0."""
    cores = cores or os.cpu_count() or 1
    wall = after.time - before.time
    if wall <= 0:
        raise ValueError(f"the second sample must be later than the first, got {before.time} and {after.time}")
    others = (after.machine_s - before.machine_s) - (after.own_s - before.own_s)
    return max(0.0, others) / (wall * cores)


def at(samples: Sequence[CpuSample], t: float) -> CpuSample:
    """The counters at time t, interpolated linearly between the two samples around it (the
    nearest sample's outside them)."""
    if not samples:
        raise ValueError("no samples")
    if t <= samples[0].time:
        return CpuSample(t, samples[0].machine_s, samples[0].own_s)
    for a, b in zip(samples, samples[1:]):
        if t <= b.time:
            f = (t - a.time) / (b.time - a.time) if b.time > a.time else 1.0
            return CpuSample(t, a.machine_s + f * (b.machine_s - a.machine_s), a.own_s + f * (b.own_s - a.own_s))
    return CpuSample(t, samples[-1].machine_s, samples[-1].own_s)


class CpuSampler:
    """`sample()` every `interval` seconds on a thread, for measurements whose start and end are
    known only afterwards (a Ray worker reports when its epoch ran). Its own CPU is this process's,
    so it never counts as another's."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.samples: list[CpuSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)

    def __enter__(self) -> "CpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(sample())

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(sample())
            self._stop.wait(self.interval)

    def share(self, began: float, ended: float, cores: int | None = None) -> float:
        """others_share over [began, ended], from the samples around those times."""
        return others_share(at(self.samples, began), at(self.samples, ended), cores)
