"""fastnn: a fast CPU neural-network framework with a PyTorch-shaped API.

The core (tensors, autograd, nn, optim, functional) loads with the package. The training loop,
callbacks, data loading, datasets, metrics and file formats load on first use, which keeps
`import fastnn` fast.
"""

import importlib

from . import functional, nn, optim, utils
from ._threads import get_num_threads, set_num_threads
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .random import get_rng_state, manual_seed, set_rng_state
from .tensor import (Tensor, arange, cat, empty, float32, float64, from_numpy, int64, maximum,
                     minimum, ones, ones_like, rand, randn, stack, tensor, where, zeros,
                     zeros_like)

__version__ = "0.1.0"

_LAZY_MODULES = {"callbacks", "checkpoint", "data", "datasets", "metrics", "serialization",
                 "training"}
_LAZY_NAMES = {
    "Trainer": "training", "History": "training",
    "save": "checkpoint", "load": "checkpoint",
    "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint",
}


def __getattr__(name):
    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'fastnn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _LAZY_MODULES | set(_LAZY_NAMES))


__all__ = [
    "Tensor", "tensor", "from_numpy", "zeros", "ones", "empty", "zeros_like", "ones_like",
    "rand", "randn", "arange", "cat", "stack", "where", "maximum", "minimum", "float32",
    "float64", "int64", "no_grad", "enable_grad", "is_grad_enabled", "set_grad_enabled",
    "manual_seed", "get_rng_state", "set_rng_state", "get_num_threads", "set_num_threads",
    "save", "load", "save_checkpoint", "load_checkpoint", "Trainer", "History", "callbacks",
    "data", "datasets", "functional", "metrics", "nn", "optim", "serialization", "utils",
    "__version__",
]
