"""A long study under faults (issue 10): at least 50 smoke-size configurations (bench/soak.yaml) on
a 3-node local Ray cluster (`ray.cluster_utils.Cluster`), two worker nodes killed without warning
and replaced while trials run on them, the driver stopped with SIGTERM (timed: how long it takes to
exit) and resumed, then killed with SIGKILL and resumed. It ends by counting what the tables hold:
every configuration exactly once, finished. Prints that count, the faults and the wall time.

    python bench/soak.py                      # about 20-30 minutes on a 2-core machine
    python bench/soak.py --num-samples 8      # a quick look
"""
from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

SPACE = Path(__file__).with_name("soak.yaml")


class Driver:
    def __init__(self, command: list[str], log: Path) -> None:
        self.log = log
        with open(log, "w") as err:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, text=True)

    def finished_trials(self) -> int:
        return sum(line.rstrip().endswith(" finished") for line in self.log.read_text().splitlines())

    def wait_for_finished(self, count: int) -> None:
        while self.finished_trials() < count:
            if self.process.poll() is not None:
                raise SystemExit(f"study.run ended early (exit {self.process.returncode}): see {self.log}")
            time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-samples", type=int, default=50)
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder, removed afterwards")
    args = parser.parse_args()
    from ray.cluster_utils import Cluster

    began = time.time()
    with tempfile.TemporaryDirectory(prefix="cirstudy-soak-") as scratch:
        work = args.workdir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        command = [sys.executable, "-m", "study.run", "--space", str(SPACE), "--budget", "smoke",
                   "--num-samples", str(args.num_samples), "--address", cluster.address,
                   "--storage", str(work / "studies"), "--cache-dir", str(work / "cache")]
        faults = []
        try:
            driver = Driver(command, work / "run0.err")
            for when in (0.2, 0.4):  # kill a worker node (its trials with it) and add a fresh one
                driver.wait_for_finished(int(args.num_samples * when))
                lost = workers.pop(0)
                workers.append(cluster.add_node(num_cpus=1))
                cluster.remove_node(lost, allow_graceful=False)
                faults.append(f"node {lost.node_id[:8]} killed after {driver.finished_trials()} finished trials")
            driver.wait_for_finished(int(args.num_samples * 0.6))
            signalled = time.time()
            driver.process.send_signal(signal.SIGTERM)
            code = driver.process.wait()
            faults.append(f"driver stopped with SIGTERM after {driver.finished_trials()} finished trials: exit {code} "
                          f"{time.time() - signalled:.1f} s later, then resumed")
            driver = Driver(command + ["--resume"], work / "run1.err")
            driver.wait_for_finished(int(args.num_samples * 0.2))  # this run's count
            driver.process.send_signal(signal.SIGKILL)
            driver.process.wait()
            faults.append(f"driver killed with SIGKILL after {driver.finished_trials()} more finished trials, then resumed")
            resumed = Driver(command + ["--resume"], work / "run2.err")
            if resumed.process.wait() != 0:
                raise SystemExit(f"the resumed study failed (exit {resumed.process.returncode}): see {resumed.log}")
        finally:
            cluster.shutdown()
        trials = pd.read_parquet(work / "studies" / "soak" / "trials.parquet")
    configs = trials.drop_duplicates("config_id")
    once = trials.groupby("config_id").size().eq(1).all()  # one seed: one row per configuration
    searched = int((configs["role"] == "searched").sum())
    print("\n".join(faults))
    print(f"configurations in trials.parquet: {len(configs)} ({searched} sampled + "
          f"{len(configs) - searched} matched baselines); each exactly once: {once}; "
          f"finished: {int((configs['status'] == 'TERMINATED').sum())}; wall time {time.time() - began:.0f} s")
    accounted = once and searched == args.num_samples and (configs["status"] == "TERMINATED").all()
    return 0 if accounted else 1


if __name__ == "__main__":
    raise SystemExit(main())
