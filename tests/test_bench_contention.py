"""bench/contention.py: the share of the machine other processes took, by hand on made-up counters,
and the sampler counting a child's work while it runs and after it has ended."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.contention import CpuSample, CpuSampler, at, others_share  # noqa: E402

# a child that does a fixed amount of work, prints the CPU seconds it used, then waits for stdin to close
BURN = ("import sys, time\n"
        "x = 0\n"
        "for i in range(3_000_000): x += i * i\n"
        "print(time.process_time(), flush=True)\n"
        "sys.stdin.read()\n")


def test_others_share_by_hand() -> None:
    before = CpuSample(time=100.0, machine_s=1000.0, own_s=50.0)
    after = CpuSample(time=110.0, machine_s=1016.0, own_s=60.0)
    # the machine was busy 16 CPU-s in 10 s, 10 of them ours: others used 6 of 2 cores x 10 s = 30%
    assert others_share(before, after, cores=2) == pytest.approx(0.3)
    assert others_share(before, after, cores=4) == pytest.approx(0.15)


def test_others_share_is_never_negative_and_needs_time_to_pass() -> None:
    before = CpuSample(time=0.0, machine_s=10.0, own_s=0.0)
    # counters read a moment apart: ours grew more than the machine's
    assert others_share(before, CpuSample(time=1.0, machine_s=10.9, own_s=1.0), cores=2) == 0.0
    with pytest.raises(ValueError, match="later than the first"):
        others_share(before, CpuSample(time=0.0, machine_s=11.0, own_s=0.0), cores=2)


def test_at_interpolates_between_samples_and_holds_outside() -> None:
    samples = [CpuSample(0.0, 0.0, 0.0), CpuSample(10.0, 20.0, 5.0), CpuSample(20.0, 20.0, 15.0)]
    middle = at(samples, 15.0)
    assert (middle.time, middle.machine_s, middle.own_s) == (15.0, 20.0, 10.0)
    quarter = at(samples, 2.5)
    assert (quarter.machine_s, quarter.own_s) == (5.0, 1.25)
    assert (at(samples, -1.0).machine_s, at(samples, 99.0).own_s) == (0.0, 15.0)
    with pytest.raises(ValueError, match="no samples"):
        at([], 1.0)


def test_sampler_counts_a_childs_work_while_it_runs_and_after_it_ended() -> None:
    sampler = CpuSampler()
    before = sampler.sample()
    child = subprocess.Popen([sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    child_cpu = float(child.stdout.readline())  # its work is done; it is alive, waiting for stdin
    assert child_cpu > 0.05
    # the kernel's per-process counters are in clock ticks and split user/system by sampling, so
    # they differ from the child's own clock_gettime by a tick or two: 80% says it was counted
    alive = sampler.sample()
    assert alive.own_s - before.own_s >= 0.8 * child_cpu
    assert alive.machine_s - before.machine_s >= 0.8 * child_cpu  # the machine saw the work too
    child.communicate("")
    ended = sampler.sample()
    assert ended.own_s - before.own_s >= 0.8 * child_cpu
    assert len(sampler.samples) == 3


# a child that runs BURN as a grandchild, passes on its line, and ends without waiting for it: the
# grandchild's time reaches no one's rusage in this tree (as a Ray worker's when its raylet is killed)
ORPHANING = ("import subprocess, sys\n"
             f"g = subprocess.Popen([sys.executable, '-c', {BURN!r}], stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n"
             "sys.stdout.write(g.stdout.readline().decode()); sys.stdout.flush()\n"
             "sys.stdin.read()\n")


def test_sampler_keeps_the_time_of_a_descendant_whose_parent_never_waited() -> None:
    sampler = CpuSampler()
    before = sampler.sample()
    child = subprocess.Popen([sys.executable, "-c", ORPHANING], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    grandchild_cpu = float(child.stdout.readline())
    assert grandchild_cpu > 0.05
    sampler.sample()  # both alive: the grandchild is a descendant
    child.communicate("")  # the child ends without waiting; its grandchild's stdin closes and it ends
    ended = sampler.sample()
    assert ended.own_s - before.own_s >= 0.8 * grandchild_cpu
