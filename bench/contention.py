"""How much of the machine other processes took while a benchmark measured (issue 12: the
machines are shared, and on 2 cores a second job halves a figure).

Others' CPU = the machine's busy CPU time (psutil's /proc/stat: user, nice, system, irq, softirq,
and steal, the time the hypervisor gave these cores to another machine) minus this benchmark's own:
this process and every descendant it started (a Ray cluster, its raylets and workers; the study a
benchmark runs). A thread samples both every `interval` seconds. Descendants are followed one by
one, each keeping the last CPU time seen of it after it ends: the kernel's per-process accounting of
waited-for children is lost whenever a parent ends before waiting (Ray's raylets are killed, their
workers' time goes nowhere), which made a study's own CPU look like others'. A process that lives
less than one interval is missed, so the figure errs towards "contended", never towards "clean".
bench/recall_eval.py measures the same way for its single child, with /proc/stat and getrusage.

    with CpuSampler() as sampler:
        began = time.time()
        ...  # the measurement
        share = sampler.share(began, time.time())  # 0.0: nothing else ran; 0.5: one core of 2 went elsewhere
"""
from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass
from typing import Sequence

import psutil

__all__ = ["CpuSample", "CpuSampler", "at", "machine_busy_s", "others_share"]


def machine_busy_s() -> float:
    """CPU seconds the whole machine was busy since boot, all cores (guest time is inside user)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


@dataclass(frozen=True)
class CpuSample:
    time: float  # time.time()
    machine_s: float  # machine_busy_s()
    own_s: float  # this process and its descendants, CPU seconds


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
    """Samples the machine's busy CPU and this process tree's every `interval` seconds on a thread
    (and once more on leaving). Its own CPU is this process's, so it never counts as another's."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.samples: list[CpuSample] = []
        self._seen: dict[tuple[int, float], float] = {}  # (pid, start time) -> last CPU seconds seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)

    def __enter__(self) -> "CpuSampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> CpuSample:
        """Reads the counters now and keeps the sample."""
        for process in psutil.Process().children(recursive=True):
            try:
                with process.oneshot():
                    key, t = (process.pid, process.create_time()), process.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue  # ended between the listing and the read: its last seen time stays
            self._seen[key] = t.user + t.system
        own = resource.getrusage(resource.RUSAGE_SELF)
        taken = CpuSample(time.time(), machine_busy_s(), own.ru_utime + own.ru_stime + sum(self._seen.values()))
        self.samples.append(taken)
        return taken

    def share(self, began: float, ended: float, cores: int | None = None) -> float:
        """others_share over [began, ended], from the samples around those times."""
        return others_share(at(self.samples, began), at(self.samples, ended), cores)
