"""Which Ray a command talks to: its own local instance, or the cluster `--address` names, and only
that one.

Ray Train starts processes of its own (the run's controller, its placement-group cleaner) that look
the cluster up by themselves; with a second Ray on the machine (another study, a test run) they fail
with "Found multiple active Ray instances" and finished trials never give their CPUs back
(../shared/reference/platform-notes.md). So every process of the session is told the address: the
job's runtime environment sets `RAY_ADDRESS`, which every task and actor inherits (Ray merges it
into the `env_vars` Tune and Train give their own actors). A local instance is started on a GCS
port chosen here, so its address is known before it starts.

    with ray_session(args.address, record=study_dir / ".ray-session") as address:
        ...  # Tune, Train

A local instance outlives a driver killed with SIGKILL (its dashboard and runtime-env agents keep
running); `record` names a file that holds the session's folder while it runs, so the next start
(`--resume`) stops what a killed predecessor left behind, and nothing else.
"""
from __future__ import annotations

import json
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["RayAddressError", "check_reachable", "ray_session", "stop_leftovers"]

_CONNECT_TIMEOUT_S = 5.0
_ADDRESS_HELP = ("start the cluster first (`ray start --head`, or `ray up cluster.yaml`), pass the head's "
                 "host:port (6379 by default), or leave --address out to run on a local Ray")


# Every session's processes: Train's controller polls its workers every 0.5 s, not Ray's 2 s. Workers'
# reports and their end reach the controller only through these polls, so a finished run held its
# trial slot longer: a slot stood empty between two trials for a median 2.6 s at 2 s, 1.0 s at 0.5 s
# (bench/scheduling_efficiency.py). A poll is one small actor task per worker.
_SESSION_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
# What a local instance (one node, no autoscaler) does without. Train V2 starts a PreemptionWatcher
# actor per run, a process of 0.11 GiB polling for cloud nodes about to be preempted; a local node
# has none to watch.
_LOCAL_ONLY = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


class RayAddressError(ValueError):
    """`--address` names no Ray cluster that answers, or the local Ray could not start."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def check_reachable(address: str) -> None:
    """Fail at once, with the fix, when nothing listens at a host:port `--address` (Ray itself
    retries for minutes without saying why)."""
    if address == "auto" or "://" in address:
        return  # Ray resolves these itself, and says so quickly when it cannot
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise RayAddressError(f"--address {address!r}: expected host:port (e.g. 10.0.0.1:6379), auto, or "
                              f"ray://host:10001; {_ADDRESS_HELP}")
    try:
        with socket.create_connection((host, int(port)), timeout=_CONNECT_TIMEOUT_S):
            pass
    except OSError as error:
        raise RayAddressError(f"--address {address}: no Ray cluster answers there ({error.strerror or error}); "
                              f"{_ADDRESS_HELP}") from None


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _resolve_auto(init_kwargs: dict) -> str:
    import ray

    ray.init(address="auto", **init_kwargs)
    try:
        return ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _session_processes(session_dir: str, address: str) -> list:
    """The processes of one local Ray session: started for its folder (GCS, raylet, dashboard,
    agents: the folder in their command line) or told its address (every worker: RAY_ADDRESS)."""
    import psutil

    def belongs(part: str) -> bool:  # the folder itself, or a path inside it (logs, sockets)
        return bool(session_dir) and (part == session_dir or part.endswith("=" + session_dir)
                                      or f"{session_dir}/" in part)

    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if process.pid == os.getpid():
            continue
        try:
            if any(belongs(part) for part in process.info["cmdline"] or ()) or (
                    address and process.environ().get("RAY_ADDRESS") == address):
                found.append(process)
        except psutil.Error:  # gone meanwhile, or another user's
            pass
    return found


def _kill(processes: list) -> int:
    import psutil

    killed = 0
    for process in processes:
        try:
            process.kill()
            killed += 1
        except psutil.Error:
            pass
    return killed


def stop_leftovers(record: Path) -> int:
    """Kill what is left of the local Ray session `record` describes (a driver killed with SIGKILL
    leaves agents and workers running); remove the record; return how many processes were killed."""
    try:
        session = json.loads(record.read_text())
    except (OSError, ValueError):
        return 0
    killed = _kill(_session_processes(str(session.get("session_dir", "")), str(session.get("address", ""))))
    record.unlink(missing_ok=True)
    return killed


@contextmanager
def ray_session(address: str | None, *, record: Path | None = None, **init_kwargs) -> Iterator[str]:
    """Start a local Ray (address None) or join `address`; yield the GCS address every process of
    the session uses; shut down (a local instance stops) on leaving."""
    import ray

    init_kwargs = {"log_to_driver": False, "configure_logging": False, **init_kwargs}
    if address is None:
        if record is not None and stop_leftovers(record):
            print(f"stopped the Ray processes a killed run of this study left behind ({record})", file=sys.stderr)
        port = _free_port()
        gcs = f"127.0.0.1:{port}"
        with _environment(RAY_GCS_SERVER_PORT=str(port)):  # read by the local node as it starts
            try:
                env = {"RAY_ADDRESS": gcs, **_SESSION_ENV, **_LOCAL_ONLY}
                ray.init(address="local", runtime_env={"env_vars": env}, **init_kwargs)
            except Exception as error:  # noqa: BLE001 - Ray raises a bare Exception when its node start times out
                ray.shutdown()
                raise RayAddressError(
                    f"the local Ray did not start ({type(error).__name__}: {error}); the machine may be short of "
                    f"memory or CPU: retry when it is quieter, or start Ray yourself (`ray start --head`) and "
                    f"pass its address with --address") from None
        session_dir = ray._private.worker._global_node.get_session_dir_path()  # private API; Ray is pinned
        if record is not None:
            record.write_text(json.dumps({"session_dir": session_dir, "address": gcs}) + "\n")
    else:
        check_reachable(address)
        try:
            gcs = _resolve_auto(init_kwargs) if address == "auto" else address
            # Ray Client: the cluster's own processes already know their cluster
            job = {} if "://" in gcs else {"runtime_env": {"env_vars": {"RAY_ADDRESS": gcs, **_SESSION_ENV}}}
            ray.init(address=gcs, **job, **init_kwargs)
        except ConnectionError as error:
            raise RayAddressError(f"--address {address}: {error}; {_ADDRESS_HELP}") from None
    driver = {} if "://" in gcs else {"RAY_ADDRESS": gcs}
    try:
        with _environment(**driver):  # the driver's own lookups (Tune, Train's state API)
            yield gcs
    finally:
        ray.shutdown()
        if address is None:  # a Train controller whose trial Tune stopped can outlive the shutdown
            _kill(_session_processes(session_dir, gcs))
            if record is not None:
                record.unlink(missing_ok=True)
