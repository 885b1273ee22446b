"""fastnn: a fast CPU neural-network framework with a PyTorch-shaped API."""

from . import callbacks, data, datasets, functional, metrics, nn, optim, serialization, utils
from ._threads import get_num_threads, set_num_threads
from .checkpoint import load, load_checkpoint, save, save_checkpoint
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .random import get_rng_state, manual_seed, set_rng_state
from .tensor import (Tensor, arange, cat, empty, float32, float64, from_numpy, int64, maximum,
                     minimum, ones, ones_like, rand, randn, stack, tensor, where, zeros,
                     zeros_like)

from .training import History, Trainer

__version__ = "0.1.0"

__all__ = [
    "Tensor", "tensor", "from_numpy", "zeros", "ones", "empty", "zeros_like", "ones_like",
    "rand", "randn", "arange", "cat", "stack", "where", "maximum", "minimum", "float32",
    "float64", "int64", "no_grad", "enable_grad", "is_grad_enabled", "set_grad_enabled",
    "manual_seed", "get_rng_state", "set_rng_state", "get_num_threads", "set_num_threads",
    "save", "load", "save_checkpoint", "load_checkpoint", "Trainer", "callbacks", "data",
    "datasets", "functional", "metrics", "nn", "optim", "serialization", "utils",
    "__version__",
]
