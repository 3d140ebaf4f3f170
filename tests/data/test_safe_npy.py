"""The restricted reader of CSS's pickled .npy: arrays load, any other global is refused."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.lib import format as npy_format

from study.data.errors import DatasetError
from study.data.safe_npy import read_pickled_npy


def write_npy_with_pickle(path: Path, payload: bytes) -> None:
    """A .npy whose header says 'object array' and whose body is `payload`."""
    with open(path, "wb") as fp:
        npy_format.write_array_header_1_0(fp, {"descr": "|O", "fortran_order": False, "shape": ()})
        fp.write(payload)


def test_pickle_naming_os_system_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # protocol-0 pickle: os.system("touch <marker>")
    payload = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    path = tmp_path / "evil.npy"
    write_npy_with_pickle(path, payload)
    with pytest.raises(DatasetError) as info:
        read_pickled_npy(path)
    assert str(path) in str(info.value) and "os.system" in str(info.value)
    assert not marker.exists()


def test_reduce_based_exploit_is_refused(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self) -> Any:
            return (eval, ("1 + 1",))

    path = tmp_path / "evil2.npy"
    write_npy_with_pickle(path, pickle.dumps({"train": Exploit()}, protocol=2))
    with pytest.raises(DatasetError, match=r"forbidden global (__builtin__|builtins)\.eval"):
        read_pickled_npy(path)


def test_np_save_of_generated_dict_loads(tmp_path: Path, css_raw: dict[str, Any]) -> None:
    path = tmp_path / "copy.npy"
    np.save(path, np.array(css_raw, dtype=object), allow_pickle=True)
    assert read_pickled_npy(path) == css_raw


def test_numpy_values_inside_load(tmp_path: Path) -> None:
    data = {"labels": [np.int64(3), np.float64(0.5)], "pos": np.array([0.25, 0.75])}
    path = tmp_path / "scalars.npy"
    np.save(path, np.array(data, dtype=object), allow_pickle=True)
    out = read_pickled_npy(path)
    assert out["labels"] == [3, 0.5] and np.array_equal(out["pos"], data["pos"])


def test_python2_style_bytes_strings_decode_as_latin1(tmp_path: Path) -> None:
    # a protocol-2 pickle of {'to_str': <py2 str 'caf\xe9'>}: SHORT_BINSTRING is what Python 2 wrote
    payload = b"\x80\x02}q\x00U\x06to_strq\x01U\x04caf\xe9q\x02s."
    path = tmp_path / "py2.npy"
    write_npy_with_pickle(path, payload)
    assert read_pickled_npy(path) == {"to_str": "caf\xe9"}


@pytest.mark.parametrize("content", [b"not a numpy file", b"\x93NUMPY\x01\x00"])
def test_garbage_is_a_dataset_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.npy"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=str(path)):
        read_pickled_npy(path)


def test_truncated_pickle_and_wrong_dtype(tmp_path: Path, css_raw: dict[str, Any]) -> None:
    full = tmp_path / "full.npy"
    np.save(full, np.array(css_raw, dtype=object), allow_pickle=True)
    cut = tmp_path / "cut.npy"
    cut.write_bytes(full.read_bytes()[:5000])
    with pytest.raises(DatasetError, match="corrupt"):
        read_pickled_npy(cut)
    floats = tmp_path / "floats.npy"
    np.save(floats, np.zeros(3))
    with pytest.raises(DatasetError, match="dtype"):
        read_pickled_npy(floats)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="missing") as info:
        read_pickled_npy(tmp_path / "nope.npy")
    assert str(tmp_path / "nope.npy") in str(info.value)
