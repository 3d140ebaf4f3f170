"""Whether a budget's trial fits the nodes there are (study/resources.py), on hand-made node shapes."""
from __future__ import annotations


import pytest

from study.budget import Budget
from study.resources import check_resources
from study.space import SpaceError

TWO_CPU = [{"CPU": 2.0, "GPU": 0.0}]


def budget(**fields) -> Budget:
    return Budget(epochs=1, **fields)


def test_a_trial_that_fits_one_node_passes() -> None:
    check_resources(budget(trial_cpus=0.5, workers_per_trial=2, cpus_per_worker=0.5), TWO_CPU, where="here",
                    budget_name="b")  # 0.5 + 2 x 0.5 = 1.5 <= 2


def test_workers_may_spread_over_nodes() -> None:
    nodes = [{"CPU": 1.25, "GPU": 1.0}, {"CPU": 1.0, "GPU": 1.0}]
    check_resources(budget(trial_cpus=0.25, workers_per_trial=2, cpus_per_worker=1.0, gpus_per_worker=1.0), nodes,
                    where="here", budget_name="b")


def test_a_worker_larger_than_every_node_is_refused() -> None:
    nodes = [{"CPU": 4.0, "GPU": 0.0}, {"CPU": 1.0, "GPU": 1.0}]  # the GPU node has too few CPUs
    with pytest.raises(SpaceError, match=r"needs 2 CPUs and 1 GPUs on one node; here offers "
                                         r"1 x \(1 CPUs, 1 GPUs\), 1 x \(4 CPUs, 0 GPUs\)"):
        check_resources(budget(trial_cpus=0.5, cpus_per_worker=2.0, gpus_per_worker=1.0), nodes, where="here",
                        budget_name="b")


def test_a_trial_larger_than_all_nodes_together_is_refused() -> None:
    with pytest.raises(SpaceError, match=r"one trial needs 2.5 CPUs and 0 GPUs \(2 workers\)"):
        check_resources(budget(trial_cpus=0.5, workers_per_trial=2, cpus_per_worker=1.0), TWO_CPU, where="here",
                        budget_name="b")


def test_the_trial_driver_needs_one_node() -> None:
    with pytest.raises(SpaceError, match="a trial's driver needs 3 CPUs on one node"):
        check_resources(budget(trial_cpus=3.0), TWO_CPU + TWO_CPU, where="here", budget_name="b")
