"""Can this machine or cluster run a trial of the budget at all? Asked before any trial starts:
Ray would otherwise keep a trial that fits on no node pending forever, printing nothing.

A trial needs `trial_cpus` on one node (Tune's function, which starts the TorchTrainer) and
`workers_per_trial` workers of `cpus_per_worker` CPUs and `gpus_per_worker` GPUs, each on one node.
The nodes are this machine for a local study; on a cluster, the nodes that are up plus one node of
every type the autoscaler may start (from the cluster's configuration, where Ray has one).
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

from study.budget import Budget
from study.space import SpaceError

__all__ = ["check_resources", "cluster_node_shapes", "local_node_shapes"]

Shape = Mapping[str, float]  # resource name ("CPU", "GPU") -> amount on one node


def _describe(shapes: Sequence[Shape]) -> str:
    if not shapes:
        return "no nodes"
    counted: dict[tuple[float, float], int] = {}
    for shape in shapes:
        key = (float(shape.get("CPU", 0)), float(shape.get("GPU", 0)))
        counted[key] = counted.get(key, 0) + 1
    return ", ".join(f"{n} x ({cpu:g} CPUs, {gpu:g} GPUs)" for (cpu, gpu), n in sorted(counted.items()))


def check_resources(budget: Budget, shapes: Sequence[Shape], *, where: str, budget_name: str) -> None:
    """Raise SpaceError, naming what the budget asks and what `where` offers, when some part of a
    trial fits on no node, or the whole trial not on all of them together."""
    worker = {"CPU": budget.cpus_per_worker, "GPU": budget.gpus_per_worker}
    offered = f"{where} offers {_describe(shapes)}"
    fixes = ("lower --workers-per-trial or --gpus-per-worker (0 = CPU), pick a smaller --budget, or run on a "
             "cluster that has them (--address)")
    if not any(shape.get("CPU", 0) >= budget.trial_cpus for shape in shapes):
        raise SpaceError(f"budget {budget_name!r}: a trial's driver needs {budget.trial_cpus:g} CPUs on one node; "
                         f"{offered}; lower `trial_cpus`")
    if not any(all(shape.get(name, 0) >= amount for name, amount in worker.items()) for shape in shapes):
        raise SpaceError(f"budget {budget_name!r}: each Ray Train worker needs {budget.cpus_per_worker:g} CPUs and "
                         f"{budget.gpus_per_worker:g} GPUs on one node; {offered}; {fixes}")
    total = {name: sum(float(shape.get(name, 0)) for shape in shapes) for name in worker}
    needed = {"CPU": budget.trial_cpus + budget.workers_per_trial * budget.cpus_per_worker,
              "GPU": budget.workers_per_trial * budget.gpus_per_worker}
    short = [name for name in needed if needed[name] > total[name] + 1e-9]
    if short:
        raise SpaceError(f"budget {budget_name!r}: one trial needs {needed['CPU']:g} CPUs and {needed['GPU']:g} GPUs "
                         f"({budget.workers_per_trial} workers); {offered}; {fixes}")


def local_node_shapes() -> list[Shape]:
    """This machine, as the local Ray started by `study.run` will see it."""
    import torch

    return [{"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}]


def cluster_node_shapes() -> list[Shape]:
    """The connected cluster's live nodes, plus one of each node type its autoscaler may add."""
    import ray

    shapes: list[Shape] = [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]
    try:  # Ray keeps the autoscaler's node types in the GCS (private API; Ray is pinned)
        from ray._private.state import state

        config = state.get_cluster_config()
        for group in (config.node_group_configs if config is not None else ()):
            if group.max_count != 0:
                shapes.append(dict(group.resources))
    except Exception:  # noqa: BLE001 - no autoscaler information: the live nodes are what there is
        pass
    return shapes
