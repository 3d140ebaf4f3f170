"""Reading CSS's pickled `.npy` scene file without executing arbitrary pickles.

TIRG (Vo et al., CVPR 2019, arXiv 1812.07119) loads `css_toy_dataset_novel2_small.dup.npy` with
`np.load(allow_pickle=True)`: a pickle can name any global and so run any code. Here the `.npy`
header is parsed with numpy.lib.format and the pickle that follows is read by an unpickler that
admits only what an object array of dicts, lists, strings and numbers needs.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from study.data.errors import DatasetError
from study.data.reads import note_file

try:  # numpy >= 2 keeps the array internals in numpy._core; pickles from numpy 1 name numpy.core
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]

# (module, name) -> object. Containers, strings and numbers are native pickle opcodes, not globals.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, source: Path) -> None:
        super().__init__(file, encoding="latin1")  # CSS's file is a Python 2 pickle
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise DatasetError(
                f"{self._source}: the pickle inside names the forbidden global {module}.{name}; "
                f"only numpy array reconstruction is allowed. The file is not a CSS scene file "
                f"(or was tampered with): re-download it from the TIRG release or regenerate it "
                f"with `python -m study.data generate css --out DIR`"
            )
        return _ALLOWED[(module, name)]


def read_pickled_npy(path: Path) -> Any:
    """The object stored in a `.npy` written by `np.save(path, obj)`; a 0-d object array is
    unwrapped to the object itself (CSS's dict)."""
    try:
        with open(path, "rb") as fp:
            note_file(path, os.fstat(fp.fileno()))
            try:
                version = npy_format.read_magic(fp)
                read_header = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
                if version not in read_header:
                    raise ValueError(f"unsupported .npy version {version}")
                shape, _fortran, dtype = read_header[version](fp)
            except ValueError as err:
                raise DatasetError(f"{path}: not a readable .npy file ({err}); re-download or regenerate it") from None
            if dtype != np.dtype(object):
                raise DatasetError(
                    f"{path}: expected a pickled object array (dtype object), got dtype {dtype}; "
                    f"this is not a CSS scene file"
                )
            try:
                array = _ArrayOnlyUnpickler(fp, path).load()
            except DatasetError:
                raise
            except Exception as err:  # a truncated or corrupt pickle: any error the pickle machinery raises
                raise DatasetError(f"{path}: corrupt pickle after the .npy header ({err!r}); re-download or regenerate it") from None
    except FileNotFoundError:
        raise DatasetError(
            f"{path}: file is missing; download CSS or generate it with `python -m study.data generate css --out DIR`"
        ) from None
    if isinstance(array, np.ndarray) and array.shape == () and array.dtype == object:
        return array.item()
    if isinstance(array, np.ndarray) and tuple(array.shape) != tuple(shape):
        raise DatasetError(f"{path}: header says shape {shape} but the data has shape {array.shape}; the file is corrupt")
    return array
