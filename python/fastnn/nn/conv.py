"""Convolution layers: Conv1d and Conv2d, with PyTorch's arguments and initialisation."""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..tensor import Tensor
from . import init
from .layers import _activation_name
from .module import Module
from .parameter import Parameter


def _positive_tuple(value, n: int, name: str, layer: str) -> tuple:
    try:
        result = F._int_tuple(value, n, name, layer)
    except TypeError:
        raise TypeError(f"{layer}: {name} must be an int or a tuple of {n} ints, "
                        f"got {value!r}") from None
    if any(v < 1 for v in result):
        raise ValueError(f"{layer}: {name} must be >= 1, got {value!r}")
    return result


class _ConvNd(Module):
    """Shared arguments, checks, initialisation and repr of Conv1d and Conv2d."""

    _dims = 2
    _layout = "(N, C, H, W)"

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 activation: str | None = None, alpha: float = 0.0, dtype=np.float32):
        super().__init__()
        name = type(self).__name__
        for arg, value in (("in_channels", in_channels), ("out_channels", out_channels),
                           ("groups", groups)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: {arg} must be a positive int, got {value!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must both be divisible by groups ({groups})")
        if padding_mode != "zeros":
            raise ValueError(f"{name}: only padding_mode='zeros' is supported, got "
                             f"{padding_mode!r}")
        self.activation = _activation_name(activation, name)
        self.alpha = alpha
        n = self._dims
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _positive_tuple(kernel_size, n, "kernel_size", name)
        self.stride = _positive_tuple(stride, n, "stride", name)
        self.dilation = _positive_tuple(dilation, n, "dilation", name)
        if isinstance(padding, str):
            # Checked here so that a bad string or a strided "same" fails at construction.
            F._conv_padding(padding, self.kernel_size, self.stride, self.dilation, name)
            self.padding = padding
        else:
            self.padding = F._int_tuple(padding, n, "padding", name)
            if any(p < 0 for p in self.padding):
                raise ValueError(f"{name}: padding must be >= 0, got {padding!r}")
        self.groups = int(groups)
        self.padding_mode = padding_mode
        self.weight = Parameter(np.empty((out_channels, in_channels // groups)
                                         + self.kernel_size, dtype=dtype))
        self.bias = Parameter(np.empty(out_channels, dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default: kaiming_uniform(a=sqrt(5)) weights, U(-1/sqrt(fan_in), ..) bias."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * math.prod(self.kernel_size)
            bound = 1.0 / math.sqrt(fan_in)
            init.uniform_(self.bias, -bound, bound)

    def _check_input(self, x: Tensor) -> None:
        n = self._dims
        if x.ndim not in (n + 1, n + 2) or x.shape[-n - 1] != self.in_channels:
            layout = self._layout.replace("C", str(self.in_channels))
            raise ValueError(f"{self!r}: expected input {layout} or "
                             f"{layout.replace('(N, ', '(')}, got {x.shape}")
        if isinstance(self.padding, str):
            pads = F._conv_padding(self.padding, self.kernel_size, self.stride, self.dilation,
                                   type(self).__name__)
            padded = [size + sum(p) for size, p in zip(x.shape[-n:], pads)]
        else:
            padded = [size + 2 * p for size, p in zip(x.shape[-n:], self.padding)]
        reach = [d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation)]
        if any(p < r for p, r in zip(padded, reach)):
            raise ValueError(f"{self!r}: input {x.shape} is too small: its padded size "
                             f"{tuple(padded)} is below the dilated kernel {tuple(reach)}")

    def extra_repr(self) -> str:
        n = self._dims
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0,) * n:
            text += f", padding={self.padding}"
        if self.dilation != (1,) * n:
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.activation != "identity":
            text += f", activation={self.activation!r}"
        return text

    def forward(self, x):
        return self.forward_fused(x, self.activation, self.alpha)

    def forward_fused(self, x, activation: str, alpha: float = 0.0):
        """Forward with `activation` applied in the same kernel (as Linear.forward_fused)."""
        if not isinstance(x, Tensor):
            x = Tensor(x)
        self._check_input(x)
        conv = F.conv2d if self._dims == 2 else F.conv1d
        return conv(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                    self.groups, activation, alpha)


class Conv2d(_ConvNd):
    """2-D convolution (cross-correlation) over NCHW images, as torch.nn.Conv2d.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output (number of filters).
        kernel_size: an int or a pair (KH, KW).
        stride: an int or a pair (default 1).
        padding: an int, a pair, "valid" (none) or "same" (output as large as the input,
            stride 1 only; an even dilated kernel pads one more at the bottom and right).
        dilation: spacing between kernel taps, an int or a pair (default 1).
        groups: split the channels into this many independent groups (default 1;
            groups = in_channels is a depthwise convolution).
        bias: learn an additive bias per output channel (default True).
        padding_mode: only "zeros".
        activation: optional activation fused into the same kernel (a name as for Linear, or
            None); alpha is leaky_relu's slope or elu's alpha.
        dtype: float32 (default) or float64.

    Shape:
        input (N, C_in, H, W) or (C_in, H, W) -> output (N, C_out, H_out, W_out) with
        H_out = floor((H + pad_top + pad_bottom - dilation * (KH - 1) - 1) / stride + 1), and
        likewise W_out.

    Weights start as in PyTorch: kaiming_uniform(a=sqrt(5)), bias U(-1/sqrt(fan_in), ..) with
    fan_in = C_in / groups * KH * KW.

    Example:
        >>> conv = Conv2d(1, 32, kernel_size=3, padding=1)
        >>> conv(np.zeros((8, 1, 28, 28), np.float32)).shape
        (8, 32, 28, 28)
    """

    _dims = 2
    _layout = "(N, C, H, W)"



class Conv1d(_ConvNd):
    """1-D convolution (cross-correlation) over (N, C, L) sequences, as torch.nn.Conv1d.

    Args:
        in_channels, out_channels: channels of the input and the output.
        kernel_size: an int K.
        stride, dilation: ints (default 1).
        padding: an int, "valid" or "same" (see Conv2d).
        groups, bias, padding_mode, activation, alpha, dtype: as for Conv2d.

    Shape:
        input (N, C_in, L) or (C_in, L) -> output (N, C_out, L_out) with
        L_out = floor((L + 2 * padding - dilation * (K - 1) - 1) / stride + 1).

    Example:
        >>> conv = Conv1d(4, 8, kernel_size=5, padding="same")
        >>> conv(np.zeros((2, 4, 100), np.float32)).shape
        (2, 8, 100)
    """

    _dims = 1
    _layout = "(N, C, L)"

