"""`python -m study.train` refuses bad input with one message and exit code 2, before Ray starts
and, where the input alone tells, before any data is prepared. Its `main` runs in this process;
Ray is never started here (`ray_session` is replaced by a stand-in that records what it was given)."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

import study.train
from study.data import known_datasets
from study.ray_session import RayAddressError
from study.train import main


@pytest.fixture(scope="module")
def css_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")  # the generated css at scale 0.01, shared by this file's tests


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch, css_cache: Path) -> list[str | None]:
    """Every test: a stand-in for Ray's session and trainer, recording the addresses it was asked to join."""
    monkeypatch.setenv("CIRSTUDY_CACHE", str(css_cache))
    joined: list[str | None] = []

    @contextmanager
    def session(address, **kwargs):
        joined.append(address)
        yield address or "127.0.0.1:0"

    def trainer(spec, *, run_name, storage_path, callbacks=None):
        return SimpleNamespace(fit=lambda: SimpleNamespace(metrics={"epoch": spec.until}, checkpoint=None))

    monkeypatch.setattr(study.train, "ray_session", session)
    monkeypatch.setattr(study.train, "build_trainer", trainer)
    return joined


@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("study.train prepared data before refusing")
    monkeypatch.setattr(study.train, "open_study_data", refuse)


@pytest.mark.parametrize("args, said", [
    (["--dataset", "nosuch"], "argument --dataset: invalid choice: 'nosuch' (choose from "),
    (["--epochs", "0"], "argument --epochs: must be a positive integer, got 0"),
    (["--scale", "2"], "argument --scale: must be in (0, 1] (a fraction of the real dataset's size), got 2"),
    (["--scale", "0"], "argument --scale: must be in (0, 1]"),
    (["--workers", "0"], "argument --workers: must be a positive integer, got 0"),
    (["--batch-size", "-4"], "argument --batch-size: must be a positive integer, got -4"),
])
def test_bad_options_end_in_argparse_with_exit_2(args: list[str], said: str, no_data, no_ray,
                                                 capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err
    if "nosuch" in args:
        assert all(repr(name) in err for name in known_datasets())
    assert no_ray == []


@pytest.mark.parametrize("args, said", [
    (["--dataset", "shoes"], "error: --dataset shoes reads a downloaded layout: pass --root DIR"),
    (["--dataset", "states", "--root", "/data/x"], "error: --root /data/x: none of --dataset ['states'] reads a downloaded layout"),
    (["--dataset", "css", "--dataset", "shoes", "--root", "/data/x"],
     "error: --root /data/x would be read by each of ['css', 'shoes']: pass one of them per run"),
])
def test_a_root_missing_or_for_no_one_is_refused_before_data(args: list[str], said: str, no_data, no_ray,
                                                              capsys: pytest.CaptureFixture) -> None:
    assert main(args) == 2
    assert capsys.readouterr().err.startswith(said)
    assert no_ray == []


def test_a_root_that_is_not_the_layout_is_the_loaders_message(tmp_path: Path, no_ray,
                                                              capsys: pytest.CaptureFixture) -> None:
    assert main(["--dataset", "shoes", "--root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and f"{tmp_path / 'nowhere'}" in err and "Traceback" not in err
    assert no_ray == []


def test_an_address_where_no_cluster_answers_is_refused_before_data(no_data, no_ray,
                                                                    capsys: pytest.CaptureFixture) -> None:
    assert main(["--address", "127.0.0.1:1"]) == 2  # port 1: nothing listens, refused at once
    err = capsys.readouterr().err
    assert err.startswith("error: --address 127.0.0.1:1: no Ray cluster answers there") and "ray start --head" in err
    assert no_ray == []


def test_a_composer_the_dataset_cannot_serve_is_refused_before_ray(no_ray, capsys: pytest.CaptureFixture) -> None:
    assert main(["--composer", "attribute_operator", "--dataset", "css", "--scale", "0.01"]) == 2
    err = capsys.readouterr().err
    assert ("error: command line: composer 'attribute_operator' needs ['single_word_text'], which dataset 'css' "
            "with composer 'attribute_operator' cannot provide; pass another --composer") in err
    assert no_ray == []


def test_valid_input_trains_in_a_ray_session_of_its_address(no_ray, capsys: pytest.CaptureFixture) -> None:
    assert main(["--dataset", "css", "--scale", "0.01", "--epochs", "1"]) == 0
    assert no_ray == [None]  # a local Ray of its own
    assert "epoch" in capsys.readouterr().out


def test_a_cluster_that_refuses_once_joined_is_exit_2(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    @contextmanager
    def refused(address, **kwargs):
        raise RayAddressError(f"--address {address}: refused by the stand-in")
        yield

    monkeypatch.setattr(study.train, "check_reachable", lambda address: None)
    monkeypatch.setattr(study.train, "ray_session", refused)
    assert main(["--dataset", "css", "--scale", "0.01", "--address", "10.0.0.1:6379"]) == 2
    assert capsys.readouterr().err == "error: --address 10.0.0.1:6379: refused by the stand-in\n"


@pytest.mark.parametrize("args, said", [
    (["--dataset", "css", "--dataset", "states", "--option", "split=compositions"],
     "error: --option goes to one dataset; got --dataset ['css', 'states']"),
    (["--dataset", "states", "--option", "split"], "error: --option 'split': expected NAME=VALUE"),
])
def test_a_loader_option_for_no_single_dataset_is_refused_before_data(args: list[str], said: str, no_data, no_ray,
                                                                      capsys: pytest.CaptureFixture) -> None:
    assert main(args) == 2
    assert capsys.readouterr().err.startswith(said)
    assert no_ray == []


def test_a_loader_option_reaches_the_dataset_the_workers_open(monkeypatch: pytest.MonkeyPatch, no_ray,
                                                             capsys: pytest.CaptureFixture) -> None:
    specs = []

    def trainer(spec, *, run_name, storage_path, callbacks=None):
        specs.append(spec)
        return SimpleNamespace(fit=lambda: SimpleNamespace(metrics={"epoch": spec.until}, checkpoint=None))

    monkeypatch.setattr(study.train, "build_trainer", trainer)
    assert main(["--dataset", "states", "--scale", "0.01", "--epochs", "1", "--option", "split=compositions"]) == 0
    [entry] = specs[0].datasets
    assert entry.name == "states" and entry.options == (("split", "compositions"),)
    assert main(["--dataset", "states", "--scale", "0.01", "--option", "split=nope"]) == 2
    assert "split" in capsys.readouterr().err.splitlines()[-1]
