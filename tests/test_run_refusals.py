"""What `study.run` refuses before Ray starts and before any data is prepared, with one message and
exit code 2 (issue 10): impossible resources for this machine, overrides that are not numbers,
storage that cannot be written, an `--address` where no Ray answers. `main` runs in this process."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray

from study.run import main


def run(tmp_path: Path, capsys: pytest.CaptureFixture, *extra: str, storage: Path | None = None) -> tuple[int, str]:
    code = main(["--space", "ga_vs_dim", "--budget", "smoke", "--storage", str(storage or tmp_path / "studies"),
                 "--cache-dir", str(tmp_path / "cache"), *extra])
    assert not ray.is_initialized()
    assert not (tmp_path / "cache").exists()  # refused before any data was prepared
    return code, capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_gpus_per_worker_must_be_a_positive_number(tmp_path: Path, capsys: pytest.CaptureFixture, value: str) -> None:
    code, err = run(tmp_path, capsys, "--gpus-per-worker", value)
    assert code == 2
    assert f"--gpus-per-worker must be a positive number, got {float(value)}" in err


def test_more_gpus_than_this_machine_has_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = run(tmp_path, capsys, "--gpus-per-worker", "1000")
    assert code == 2
    assert "each Ray Train worker needs" in err and "1000 GPUs on one node" in err
    assert "this machine offers 1 x (" in err  # what there is
    assert "--gpus-per-worker (0 = CPU)" in err  # and the fix


def test_the_paper_budget_on_a_machine_without_gpus_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has GPUs")
    code = main(["--space", "ga_vs_dim", "--budget", "paper", "--storage", str(tmp_path / "studies"),
                 "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and not ray.is_initialized() and not (tmp_path / "cache").exists()
    assert "budget 'paper': each Ray Train worker needs" in err and "1 GPUs on one node; this machine offers" in err


def test_more_workers_than_this_machine_has_cpus_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if (os.cpu_count() or 1) >= 17:  # 32 workers of 0.5 CPUs plus the trial's 0.5 fit there
        pytest.skip("this machine has the 16.5 CPUs the trial asks for")
    code, err = run(tmp_path, capsys, "--workers-per-trial", "32")  # the smoke batch (32) splits over 32
    assert code == 2
    assert "one trial needs 16.5 CPUs and 0 GPUs (32 workers); this machine offers" in err


def test_storage_under_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, err = run(tmp_path, capsys, storage=blocker)
    assert code == 2
    assert f"--storage: cannot write the study folder {blocker / 'ga_vs_dim'}" in err
    assert "pass --storage a writable folder" in err


def test_storage_without_room_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=300 * 2**20))  # a nearly full disk
    code, err = run(tmp_path, capsys)
    assert code == 2
    assert f"--storage: {tmp_path / 'studies' / 'ga_vs_dim'} has 300 MiB free; a study needs at least 1 GiB" in err


def test_address_where_nothing_listens_is_refused_at_once(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = run(tmp_path, capsys, "--address", "127.0.0.1:1")
    assert code == 2
    assert "--address 127.0.0.1:1: no Ray cluster answers there" in err
    assert "ray start --head" in err


def test_address_that_is_not_host_port_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = run(tmp_path, capsys, "--address", "headnode")
    assert code == 2
    assert "expected host:port" in err
