"""Pooling layers: MaxPool2d, AvgPool2d, AdaptiveAvgPool2d and GlobalAvgPool2d."""

from __future__ import annotations

from .. import functional as F
from ..tensor import Tensor
from .module import Module


def _check_planes(layer: Module, x: Tensor) -> None:
    if x.ndim not in (3, 4):
        raise ValueError(f"{layer!r}: expected input (N, C, H, W) or (C, H, W), got {x.shape}")


class MaxPool2d(Module):
    """Maximum over sliding windows of each channel, as torch.nn.MaxPool2d.

    Args:
        kernel_size: window size, an int or a pair (KH, KW).
        stride: window step, an int or a pair (default: kernel_size).
        padding: implicit padding on both sides, at most half the kernel (padding never wins).
        dilation: spacing between window taps (default 1).
        return_indices: also return the flat positions (h * W + w) of the maxima.
        ceil_mode: round the output size up, keeping a last partial window.

    Shape:
        input (N, C, H, W) or (C, H, W) -> output (N, C, H_out, W_out) with
        H_out = floor((H + 2 * padding - dilation * (KH - 1) - 1) / stride + 1) (ceil in
        ceil_mode), and likewise W_out.

    Example:
        >>> pool = MaxPool2d(2)
        >>> pool(np.zeros((8, 32, 28, 28), np.float32)).shape
        (8, 32, 14, 14)
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1,
                 return_indices: bool = False, ceil_mode: bool = False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode
        # Fail at construction on bad sizes rather than at the first batch.
        F._int_tuple(kernel_size, 2, "kernel_size", "MaxPool2d")
        F._int_tuple(self.stride, 2, "stride", "MaxPool2d")
        F._int_tuple(padding, 2, "padding", "MaxPool2d")
        F._int_tuple(dilation, 2, "dilation", "MaxPool2d")

    def forward(self, x):
        if not isinstance(x, Tensor):
            x = Tensor(x)
        _check_planes(self, x)
        try:
            return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                                self.ceil_mode, self.return_indices)
        except ValueError as error:
            raise ValueError(f"{self!r}: input {x.shape}: {str(error).split(': ', 1)[-1]}") \
                from None

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """Mean over sliding windows of each channel, as torch.nn.AvgPool2d.

    Args:
        kernel_size: window size, an int or a pair (KH, KW).
        stride: window step, an int or a pair (default: kernel_size).
        padding: implicit zero padding on both sides, at most half the kernel.
        ceil_mode: round the output size up, keeping a last partial window.
        count_include_pad: count padded zeros in the divisor (default True).
        divisor_override: divide every window sum by this instead.

    Shape:
        input (N, C, H, W) or (C, H, W) -> output (N, C, H_out, W_out) with
        H_out = floor((H + 2 * padding - KH) / stride + 1) (ceil in ceil_mode).

    Example:
        >>> AvgPool2d(2)(np.zeros((8, 3, 32, 32), np.float32)).shape
        (8, 3, 16, 16)
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override
        F._int_tuple(kernel_size, 2, "kernel_size", "AvgPool2d")
        F._int_tuple(self.stride, 2, "stride", "AvgPool2d")
        F._int_tuple(padding, 2, "padding", "AvgPool2d")
        if divisor_override is not None and not (isinstance(divisor_override, int)
                                                 and divisor_override >= 1):
            raise ValueError(f"AvgPool2d: divisor_override must be a positive int or None, got "
                             f"{divisor_override!r}")

    def forward(self, x):
        if not isinstance(x, Tensor):
            x = Tensor(x)
        _check_planes(self, x)
        try:
            return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                self.count_include_pad, self.divisor_override)
        except ValueError as error:
            raise ValueError(f"{self!r}: input {x.shape}: {str(error).split(': ', 1)[-1]}") \
                from None

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size, whatever the input size, as PyTorch's.

    Args:
        output_size: (OH, OW), or an int for a square output; None in the pair keeps that
            input size.

    Shape:
        input (N, C, H, W) or (C, H, W) -> output (N, C, OH, OW). Output cell (i, j) averages
        input rows floor(i * H / OH) to ceil((i + 1) * H / OH) - 1, and likewise columns.

    Example:
        >>> AdaptiveAvgPool2d((1, 1))(np.zeros((8, 64, 7, 7), np.float32)).shape
        (8, 64, 1, 1)
    """

    def __init__(self, output_size):
        super().__init__()
        sizes = (output_size, output_size) if not isinstance(output_size, (tuple, list)) \
            else tuple(output_size)
        if len(sizes) != 2 or not all(s is None or (isinstance(s, int) and s >= 1)
                                      for s in sizes):
            raise ValueError(f"AdaptiveAvgPool2d: output_size must be a positive int or a pair "
                             f"of positive ints (or None), got {output_size!r}")
        self.output_size = output_size

    def forward(self, x):
        if not isinstance(x, Tensor):
            x = Tensor(x)
        _check_planes(self, x)
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class GlobalAvgPool2d(Module):
    """Mean of each channel over the whole plane, returned flat: (N, C, H, W) -> (N, C).

    The usual head of a convolutional classifier before its final Linear; equivalent to
    AdaptiveAvgPool2d(1) followed by Flatten().

    Shape:
        input (N, C, H, W) -> output (N, C); unbatched (C, H, W) -> (C,).

    Example:
        >>> GlobalAvgPool2d()(np.zeros((8, 64, 7, 7), np.float32)).shape
        (8, 64)
    """

    def forward(self, x):
        if not isinstance(x, Tensor):
            x = Tensor(x)
        _check_planes(self, x)
        pooled = F.adaptive_avg_pool2d(x, 1)
        return pooled.reshape(pooled.shape[:-2])
