"""The one place the Python package reaches the compiled kernels (fastnn._core).

Functions of `_core` are available here under their own names (see the binding files in
csrc/bindings/ for their contracts); this module adds the few conveniences that allocate outputs,
so that callers never build argument lists for the raw kernels themselves.
"""

from __future__ import annotations

import numpy as np


try:
    from . import _core
except ImportError as error:  # pragma: no cover - only on a broken install
    raise ImportError(
        "fastnn: the compiled extension fastnn._core could not be loaded. Install fastnn with "
        "`pip install .` from the source tree, or for development build it in place with "
        "`cmake -S . -B build-dev && cmake --build build-dev` and put python/ on PYTHONPATH."
    ) from error


def ensure_loaded() -> None:
    """Importing this module has already loaded the extension; kept explicit for readers."""


# Every kernel under its own name, bound once here so that a call costs one attribute lookup.
globals().update({name: getattr(_core, name) for name in dir(_core) if not name.startswith("_")})


def float_dtype_of(*arrays) -> np.dtype:
    """The common float dtype of arrays: float64 if any is float64, else float32."""
    for array in arrays:
        if array is not None and array.dtype == np.float64:
            return np.dtype(np.float64)
    return np.dtype(np.float32)


def matmul2d(a: np.ndarray, b: np.ndarray, trans_a=False, trans_b=False) -> np.ndarray:
    """op(a) @ op(b) for 2-D float arrays of one dtype, on fastnn's GEMM."""
    m = a.shape[1] if trans_a else a.shape[0]
    n = b.shape[0] if trans_b else b.shape[1]
    out = np.empty((m, n), dtype=a.dtype)
    _core.gemm(out, a, b, trans_a, trans_b)
    return out
