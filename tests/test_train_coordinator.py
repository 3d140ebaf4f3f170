"""A study creates Ray Train's AutoscalingCoordinator as it starts (study/trainer.py
`start_train_coordinator`), so its first Train run does not wait for that actor's process: it must
be the very actor Train's controller looks up at each run's start."""
from __future__ import annotations

import ray
from ray.train import ScalingConfig
from ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client import (
    TrainAutoscalingCoordinatorClient,
)

from study.ray_session import ray_session
from study.trainer import start_train_coordinator


def test_the_studys_coordinator_is_the_one_trains_controller_finds() -> None:
    with ray_session(None):
        start_train_coordinator()
        created = ray.get_actor("AutoscalingCoordinator", namespace="AutoscalingCoordinator")
        client = TrainAutoscalingCoordinatorClient("train-test")  # what each run's controller holds
        assert client._autoscaling_coordinator._actor_id == created._actor_id
        client.send_resource_request(ScalingConfig(num_workers=1), 1)  # it answers
        assert client._latest_autoscaling_request_time > float("-inf")
