"""Normalization and channel dropout: BatchNorm1d, BatchNorm2d, LayerNorm, Dropout2d."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..tensor import Tensor
from .module import Module
from .parameter import Parameter


def _positive_int(value, what: str, layer: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{layer}: {what} must be a positive int, got {value!r}")
    return int(value)


def _reset_affine(module) -> None:
    """The learnable scale to one and shift to zero, where the layer has them."""
    if module.weight is not None:
        module.weight.data[...] = 1
    if module.bias is not None:
        module.bias.data[...] = 0


class _BatchNorm(Module):
    """Shared state and behaviour of BatchNorm1d and BatchNorm2d."""

    _ndims = (4,)
    _layout = "(N, {c}, H, W)"

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *, bias: bool = True,
                 dtype=np.float32):
        super().__init__()
        name = type(self).__name__
        self.num_features = _positive_int(num_features, "num_features", name)
        if not eps >= 0:
            raise ValueError(f"{name}: eps must be >= 0, got {eps}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{name}: momentum must be in [0, 1] or None, got {momentum}")
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        channels = self.num_features
        if affine:
            self.weight = Parameter(np.ones(channels, dtype=dtype))
            self.bias = Parameter(np.zeros(channels, dtype=dtype)) if bias else None
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(channels, dtype=dtype))
            self.register_buffer("running_var", np.ones(channels, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            for buffer in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(buffer, None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        _reset_affine(self)

    def forward(self, x):
        if not isinstance(x, Tensor):
            x = Tensor(x)
        if x.ndim not in self._ndims or x.shape[1] != self.num_features:
            layouts = " or ".join(layout.format(c=self.num_features)
                                  for layout in self._layout.split("|"))
            raise ValueError(f"{self!r}: expected input {layouts}, got {x.shape}")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.data += 1
            if self.momentum is None:  # a cumulative average over all batches seen
                factor = 1.0 / float(self.num_batches_tracked.data)
        # Batch statistics while training, or always when no running statistics are kept.
        use_batch_stats = self.training or self.running_mean is None
        keep_running = not self.training or self.track_running_stats
        try:
            return F.batch_norm(x, self.running_mean if keep_running else None,
                                self.running_var if keep_running else None, self.weight,
                                self.bias, use_batch_stats, factor, self.eps)
        except ValueError as error:
            raise ValueError(f"{self!r}: {str(error).split(': ', 1)[-1]}") from None

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalization of each feature (channel) over the batch, as torch.nn.BatchNorm1d.

    While training, normalizes with the batch mean and (biased) variance and updates the
    running estimates: r = (1 - momentum) * r + momentum * batch statistic (unbiased variance;
    momentum=None gives a cumulative average). In eval mode it normalizes with the running
    estimates. running_mean, running_var and num_batches_tracked are buffers, saved in the
    state dict.

    Args:
        num_features: C, the number of features or channels.
        eps: added to the variance for stability (default 1e-5).
        momentum: weight of the newest batch in the running estimates (default 0.1), or None.
        affine: learn a per-channel scale (weight, starts at 1) and shift (bias, at 0).
        track_running_stats: keep running estimates; if False, eval mode also uses batch
            statistics.
        bias: with affine, learn the shift (default True).
        dtype: float32 (default) or float64.

    Shape:
        input (N, C) or (N, C, L) -> output of the same shape.

    Example:
        >>> bn = BatchNorm1d(64)
        >>> bn(np.random.rand(32, 64).astype(np.float32)).shape
        (32, 64)
    """

    _ndims = (2, 3)
    _layout = "(N, {c})|(N, {c}, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization of each channel of NCHW images, as torch.nn.BatchNorm2d.

    Statistics of channel c are taken over the batch and the whole plane (N * H * W values).
    Training and eval behaviour, arguments and buffers are those of BatchNorm1d.

    Args:
        num_features: C, the number of channels.
        eps, momentum, affine, track_running_stats, bias, dtype: see BatchNorm1d.

    Shape:
        input (N, C, H, W) -> output of the same shape.

    Example:
        >>> bn = BatchNorm2d(32)
        >>> bn(np.random.rand(8, 32, 14, 14).astype(np.float32)).shape
        (8, 32, 14, 14)
    """

    _ndims = (4,)
    _layout = "(N, {c}, H, W)"


class LayerNorm(Module):
    """Normalizes each sample over its trailing dims, as torch.nn.LayerNorm.

    y = (x - mean) / sqrt(var + eps) * weight + bias, with mean and (biased) variance taken
    over the last len(normalized_shape) dims of each sample; the same in training and eval.

    Args:
        normalized_shape: the trailing shape to normalize over (an int for the last dim).
        eps: added to the variance for stability (default 1e-5).
        elementwise_affine: learn weight (starts at 1) and bias (at 0) of normalized_shape.
        bias: with elementwise_affine, learn the bias (default True).
        dtype: float32 (default) or float64.

    Shape:
        input (*, *normalized_shape) -> output of the same shape.

    Example:
        >>> ln = LayerNorm(128)
        >>> ln(np.random.rand(4, 10, 128).astype(np.float32)).shape
        (4, 10, 128)
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, dtype=np.float32):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) \
            else tuple(normalized_shape)
        if not shape:
            raise ValueError("LayerNorm: normalized_shape must not be empty")
        self.normalized_shape = tuple(_positive_int(s, "normalized_shape", "LayerNorm")
                                      for s in shape)
        if not eps >= 0:
            raise ValueError(f"LayerNorm: eps must be >= 0, got {eps}")
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape, dtype=dtype))
            self.bias = Parameter(np.zeros(self.normalized_shape, dtype=dtype)) if bias else None
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        _reset_affine(self)

    def forward(self, x):
        if not isinstance(x, Tensor):
            x = Tensor(x)
        dims = len(self.normalized_shape)
        if x.ndim < dims or x.shape[x.ndim - dims:] != self.normalized_shape:
            trailing = ", ".join(str(s) for s in self.normalized_shape)
            raise ValueError(f"{self!r}: expected input (*, {trailing}), got {x.shape}")
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


class Dropout2d(Module):
    """Zeroes whole channels at random while training, as torch.nn.Dropout2d.

    Each (sample, channel) plane is kept with probability 1 - p and scaled by 1 / (1 - p), or
    zeroed; in eval mode the input passes unchanged. Draws come from fastnn's seeded generator,
    so runs repeat under fastnn.manual_seed.

    Args:
        p: probability of zeroing a channel (default 0.5).
        inplace: accepted for PyTorch compatibility; fastnn always returns a new tensor.

    Shape:
        input (N, C, H, W) or (N, C, L) -> output of the same shape.

    Example:
        >>> drop = Dropout2d(0.2)
        >>> drop(np.ones((8, 16, 5, 5), np.float32)).shape
        (8, 16, 5, 5)
    """

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout2d: p must be in [0, 1], got {p}")
        self.p = p
        self.inplace = inplace

    def forward(self, x):
        if not isinstance(x, Tensor):
            x = Tensor(x)
        if x.ndim not in (3, 4):
            raise ValueError(f"{self!r}: expected input (N, C, H, W) or (N, C, L), got {x.shape}")
        return F.dropout2d(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"
