"""Dense layers, activations and shape utilities."""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..tensor import Tensor
from . import init
from .module import Module
from .parameter import Parameter

_ACTIVATION_NAMES = ("identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu",
                     "gelu_tanh", "silu", "softplus")


def _activation_name(activation, layer: str) -> str:
    """The fused-activation option of a layer: None means identity; unknown names raise."""
    activation = activation or "identity"
    if activation not in _ACTIVATION_NAMES:
        raise ValueError(f"{layer}: unknown activation {activation!r}; expected one of "
                         f"{_ACTIVATION_NAMES}")
    return activation


class Linear(Module):
    """Fully connected layer: y = act(x @ weight.T + bias), computed by one fused kernel.

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.
        bias: learn an additive bias (default True).
        activation: optional activation fused into the same kernel (a name such as "relu",
            or None). Inside `Sequential`, a Linear followed by an activation module is fused
            automatically.
        dtype: float32 (default) or float64.

    Shape:
        input (*, in_features) -> output (*, out_features).

    Weights start as in PyTorch: U(-1/sqrt(in_features), 1/sqrt(in_features)).

    Example:
        >>> layer = Linear(784, 128, activation="relu")
        >>> layer(np.zeros((32, 784), np.float32)).shape
        (32, 128)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 activation: str | None = None, alpha: float = 0.0, dtype=np.float32):
        super().__init__()
        if not all(isinstance(size, (int, np.integer)) and not isinstance(size, bool)
                   for size in (in_features, out_features)):
            raise TypeError(f"Linear: in_features and out_features must be integers, got "
                            f"({in_features!r}, {out_features!r})")
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"Linear: in_features and out_features must be positive, got "
                             f"({in_features}, {out_features})")
        activation = _activation_name(activation, "Linear")
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.alpha = alpha
        self.weight = Parameter(np.empty((out_features, in_features), dtype=dtype))
        self.bias = Parameter(np.empty(out_features, dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return self.forward_fused(x, self.activation, self.alpha)

    def forward_fused(self, x, activation: str, alpha: float = 0.0):
        """Forward with `activation` applied in the same kernel (used by Sequential)."""
        if not isinstance(x, Tensor):
            x = Tensor(x)
        self.check_input(x.shape)
        return F.linear(x, self.weight, self.bias, activation, alpha)

    def check_input(self, shape: tuple) -> None:
        """Raise a ValueError naming this layer when an input of `shape` does not fit it."""
        if not shape or shape[-1] != self.in_features:
            raise ValueError(f"Linear(in_features={self.in_features}, out_features="
                             f"{self.out_features}): input has shape {shape}, expected "
                             f"(*, {self.in_features})")

    def extra_repr(self) -> str:
        act = "" if self.activation == "identity" else f", activation={self.activation!r}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}{act}")


class _Activation(Module):
    """An elementwise activation; `kernel_name` and `alpha` let Sequential fuse it."""

    kernel_name = "identity"

    def __init__(self, alpha: float = 0.0, inplace: bool = False):
        super().__init__()
        self.alpha = alpha
        # Accepted for PyTorch compatibility; fastnn always returns a new tensor.
        self.inplace = inplace

    @property
    def fusable(self):
        return self.kernel_name, self.alpha

    def forward(self, x):
        return F.activation(x, self.kernel_name, self.alpha)


class ReLU(_Activation):
    """max(0, x), elementwise."""

    kernel_name = "relu"

    def __init__(self, inplace: bool = False):
        super().__init__(0.0, inplace)


class LeakyReLU(_Activation):
    """x if x > 0 else negative_slope * x."""

    kernel_name = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__(negative_slope, inplace)
        self.negative_slope = negative_slope

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class ELU(_Activation):
    """x if x > 0 else alpha * (exp(x) - 1)."""

    kernel_name = "elu"

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        super().__init__(alpha, inplace)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class Sigmoid(_Activation):
    kernel_name = "sigmoid"


class Tanh(_Activation):
    kernel_name = "tanh"


class GELU(_Activation):
    """Gaussian error linear unit; approximate="tanh" uses the tanh formula."""

    def __init__(self, approximate: str = "none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        super().__init__()
        self.approximate = approximate
        self.kernel_name = "gelu" if approximate == "none" else "gelu_tanh"

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class SiLU(_Activation):
    """x * sigmoid(x) (also called swish)."""

    kernel_name = "silu"


class Softplus(_Activation):
    """log(1 + exp(x)), linear above x = 20 (PyTorch's defaults beta=1, threshold=20)."""

    kernel_name = "softplus"

    def __init__(self, beta: float = 1.0, threshold: float = 20.0):
        if beta != 1.0 or threshold != 20.0:
            raise ValueError(f"Softplus: only beta=1 and threshold=20 are supported, got "
                             f"beta={beta}, threshold={threshold}")
        super().__init__()


class Softmax(Module):
    """Softmax along `dim` (default: the last)."""

    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """log(softmax(x)) along `dim`, computed stably."""

    def forward(self, x):
        return F.log_softmax(x, self.dim)


class Dropout(Module):
    """Zero each element with probability p while training, scaling the rest by 1 / (1 - p).

    Masks come from fastnn's seeded generator, so runs repeat under `fastnn.manual_seed`.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class Flatten(Module):
    """Flatten dims start_dim..end_dim into one (default: all but the batch dim)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, x):
        if not isinstance(x, Tensor):
            x = Tensor(x)
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Identity(Module):
    """Returns its input unchanged."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x
