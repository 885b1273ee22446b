"""Gradient clipping: by total norm (clip_grad_norm_) and by value (clip_grad_value_)."""

import math
import numbers

import numpy as np

from . import _kernels
from .optimizer import _looks_like_param

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads_by_dtype(name, parameters):
    """Gradient arrays of the parameters that have one, as {dtype: [arrays]} in order."""
    if _looks_like_param(parameters):
        parameters = [parameters]
    try:
        parameters = list(parameters)
    except TypeError:
        raise TypeError(f"{name}: parameters must be a parameter or an iterable of parameters, "
                        f"got {type(parameters).__name__}") from None
    groups = {}
    for i, p in enumerate(parameters):
        if not hasattr(p, "grad"):
            raise TypeError(f"{name}: parameter {i} has no .grad (got {type(p).__name__})")
        if p.grad is None:
            continue
        g = p.grad.data
        if not isinstance(g, np.ndarray) or g.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name}: the gradient of parameter {i} must be a float32 or "
                            f"float64 numpy array")
        groups.setdefault(g.dtype, []).append(g)
    return groups


def _in_place(arrays, kernel, fallback):
    """Run the multi-tensor kernel on the C-contiguous arrays, numpy on any others (views)."""
    contiguous = [g for g in arrays if g.flags.c_contiguous]
    if contiguous:
        kernel(contiguous)
    for g in arrays:
        if not g.flags.c_contiguous:
            fallback(g)


def _real(name, arg, value):
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name}: {arg} must be a real number, got {type(value).__name__}")
    return float(value)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale gradients in place so that their total norm is at most max_norm.

    The total norm is that of all gradients concatenated into one vector. When it exceeds
    max_norm, every gradient is multiplied by ``max_norm / (total_norm + 1e-6)`` (PyTorch's
    rule). Parameters whose grad is None are skipped.

    Args:
        parameters: a parameter or an iterable of parameters.
        max_norm: the largest allowed total norm.
        norm_type: p of the p-norm, a positive number or inf (also the string "inf").
        error_if_nonfinite: raise RuntimeError if the total norm is nan or inf (otherwise
            the gradients are scaled by a nan or zero factor, as in PyTorch).

    Returns:
        The total norm before clipping, as a Python float (0.0 when no parameter has a grad).

    Example:
        >>> loss.backward()
        >>> clip_grad_norm_(model.parameters(), max_norm=1.0)
    """
    name = "fastnn.clip_grad_norm_"
    max_norm = _real(name, "max_norm", max_norm)
    if isinstance(norm_type, str):
        if norm_type.lower() not in ("inf", "+inf"):
            raise ValueError(f"{name}: norm_type must be a positive number or 'inf', "
                             f"got {norm_type!r}")
        norm_type = math.inf
    norm_type = _real(name, "norm_type", norm_type)
    if not norm_type > 0:
        raise ValueError(f"{name}: norm_type must be a positive number or inf, got {norm_type}")
    groups = _grads_by_dtype(name, parameters)
    if not groups:
        return 0.0

    # Dtypes in a fixed order so the sum is the same on every run.
    ordered = [groups[d] for d in sorted(groups, key=lambda d: d.itemsize)]
    if norm_type == 2.0:
        total = math.sqrt(sum(_kernels.sum_of_squares([np.ascontiguousarray(g) for g in arrays])
                              for arrays in ordered))
    elif norm_type == math.inf:
        total = max(float(np.max(np.abs(g))) if g.size else 0.0
                    for arrays in ordered for g in arrays)
    else:
        # Accumulate in float64 so float32 gradients do not overflow |g|**p early.
        total = sum(float(np.sum(np.abs(g, dtype=np.float64) ** norm_type))
                    for arrays in ordered for g in arrays) ** (1.0 / norm_type)

    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"{name}: the total norm of order {norm_type} of the gradients is {total}, so "
            f"they cannot be clipped; pass error_if_nonfinite=False to scale them anyway"
        )
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:  # also true when coef is nan: PyTorch then fills the grads with nan
        for arrays in ordered:
            _in_place(arrays, lambda a: _kernels.scale_(a, coef), lambda g: g.__imul__(coef))
    return total


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element in place to [-clip_value, clip_value].

    Args:
        parameters: a parameter or an iterable of parameters (grads that are None skipped).
        clip_value: a non-negative bound.

    Example:
        >>> clip_grad_value_(model.parameters(), 0.5)
    """
    name = "fastnn.clip_grad_value_"
    clip_value = _real(name, "clip_value", clip_value)
    if not clip_value >= 0:
        raise ValueError(f"{name}: clip_value must be >= 0, got {clip_value}")
    for arrays in _grads_by_dtype(name, parameters).values():
        _in_place(arrays, lambda a: _kernels.clamp_(a, -clip_value, clip_value),
                  lambda g: np.clip(g, -clip_value, clip_value, out=g))
