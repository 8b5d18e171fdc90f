"""Reading pickles that may hold only numpy arrays and plain containers: any other global is refused, so no code runs.

Lists, dicts, tuples, bytes, str and numbers need no global; numpy arrays need the
reconstruction function, ``numpy.ndarray`` and ``numpy.dtype`` (object dtypes
refused) and, at protocol 5, numpy's buffer function; pickles written by Python 3 at protocol 2 spell bytes as
``_codecs.encode(text, "latin1")``. Nothing else is ever looked up.
"""

from __future__ import annotations

import codecs
import pickle
from typing import IO, Any

import numpy as np

_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's array reconstruction function, whatever module holds it
_SCALAR = np.int64(0).__reduce__()[0]  # numpy's scalar reconstruction function
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]  # how protocol 5 rebuilds an array from its buffer


class RefusedPickle(pickle.UnpicklingError):
    """The pickle names a global outside the allowed set, or an array of Python objects."""


def _dtype(spec: Any, *args: Any) -> np.dtype:
    dtype = np.dtype(spec, *args)
    if dtype.hasobject:
        raise RefusedPickle(f"refused an array of Python objects (dtype {dtype})")
    return dtype


def _reconstruct(subtype: Any, *args: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise RefusedPickle(f"refused an array of type {subtype!r}")
    return _RECONSTRUCT(subtype, *args)


def _scalar(dtype: Any, *args: Any) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise RefusedPickle(f"refused a numpy scalar of dtype {dtype!r}")
    return _SCALAR(dtype, *args)


def _frombuffer(buffer: Any, dtype: Any, *args: Any) -> np.ndarray:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise RefusedPickle(f"refused an array buffer of dtype {dtype!r}")
    return _FROMBUFFER(buffer, dtype, *args)


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    if codecs.lookup(encoding).name != "iso8859-1" or not isinstance(text, str):
        raise RefusedPickle(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    **{(module, "_reconstruct"): _reconstruct for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _scalar for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "_frombuffer"): _frombuffer for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _latin1,
}


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals numpy arrays need and refuses every other."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise RefusedPickle(f"refused global {module}.{name}: only numpy arrays and plain containers are allowed")
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPickle("refused a persistent reference")


def load_array_pickle(file: IO[bytes], encoding: str = "bytes") -> Any:
    """The object in ``file``; ``encoding`` decodes Python 2 strings (``bytes`` keeps them as bytes)."""
    return ArrayUnpickler(file, encoding=encoding).load()
