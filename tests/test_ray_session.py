"""Which Ray a command talks to (study/ray_session.py): `--address` checked before anything waits
on it, and what a killed driver's local Ray left behind stopped by the next start. That two
studies on one machine each keep to their own Ray is checked end to end in
test_study_integration.py (a study on a local Ray beside one on a multi-node cluster)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from study.ray_session import RayAddressError, check_reachable, stop_leftovers


def test_an_address_where_nothing_listens_is_named_with_the_fix() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(RayAddressError, match=rf"--address 127.0.0.1:{port}: no Ray cluster answers there .*"
                                              r"ray start --head"):
        check_reachable(f"127.0.0.1:{port}")


def test_an_address_that_answers_passes() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_reachable(f"127.0.0.1:{server.getsockname()[1]}")


@pytest.mark.parametrize("address", ["auto", "ray://head:10001"])
def test_addresses_ray_resolves_itself_are_left_to_it(address: str) -> None:
    check_reachable(address)


def test_leftovers_of_a_recorded_session_are_stopped_and_nothing_else(tmp_path) -> None:
    session, address = str(tmp_path / "session_2026-12-01_00-00-00_000000_1"), "127.0.0.1:1"
    command = [sys.executable, "-c", "import time; time.sleep(600)"]
    agent = subprocess.Popen([*command, f"--session-dir={session}"])  # started for the session's folder
    worker = subprocess.Popen(command, env={**os.environ, "RAY_ADDRESS": address})  # told its address
    others = [subprocess.Popen([*command, f"--session-dir={session}-2"]),  # another session's
              subprocess.Popen(command, env={**os.environ, "RAY_ADDRESS": "127.0.0.1:2"})]
    record = tmp_path / ".ray-session"
    try:
        record.write_text(json.dumps({"session_dir": session + "-none", "address": "127.0.0.1:3"}))
        assert stop_leftovers(record) == 0 and not record.exists()
        record.write_text(json.dumps({"session_dir": session, "address": address}))
        assert stop_leftovers(record) == 2
        assert agent.wait() == worker.wait() == -signal.SIGKILL
        assert [other.poll() for other in others] == [None, None]
        record.write_text(json.dumps({}))  # an empty record matches nothing
        assert stop_leftovers(record) == 0
        assert [other.poll() for other in others] == [None, None]
    finally:
        for process in (agent, worker, *others):
            process.kill()
            process.wait()


def test_a_local_ray_that_does_not_start_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from study.ray_session import ray_session

    def timed_out(*args, **kwargs):
        raise Exception("The current node timed out during startup. This could happen because ...")  # as Ray's node.py

    shut = []
    monkeypatch.setattr(ray, "init", timed_out)
    monkeypatch.setattr(ray, "shutdown", lambda: shut.append(True))
    with pytest.raises(RayAddressError) as error:
        with ray_session(None):
            raise AssertionError("the session must not be entered")
    assert str(error.value).startswith("the local Ray did not start (Exception: The current node timed out during")
    assert "`ray start --head`" in str(error.value) and "--address" in str(error.value)
    assert shut  # whatever had started is stopped


def test_a_local_rays_actors_get_the_sessions_train_settings() -> None:
    """Every actor of the session (Train's controller reads them) is told to poll its workers every
    0.5 s, and, a local node having no cloud nodes that could be preempted, not to start Train's
    PreemptionWatcher, a 0.11 GiB process per run."""
    import ray

    from study.ray_session import ray_session

    names = ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER")
    with ray_session(None):
        @ray.remote(num_cpus=0)
        def environment() -> list[str | None]:
            return [os.environ.get(name) for name in names]

        assert ray.get(environment.remote()) == ["0.5", "0"]
    assert not any(name in os.environ for name in names)  # the driver's own environment is left alone
