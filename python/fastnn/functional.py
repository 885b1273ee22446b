"""Differentiable operations on tensors, running on fastnn's C++ kernels.

Each function computes its result with a kernel (through `fastnn._ops`) and records a backward
function that calls the matching backward kernel. Shapes follow PyTorch's conventions.
"""

from __future__ import annotations

import math

import numpy as np

from . import _ops
from .autograd import is_grad_enabled, leaf_grad_buffer
from .random import default_generator
from .tensor import Tensor, _as_array, _dim_index, _unbroadcast

_REDUCTIONS = ("mean", "sum", "none")

# Activations whose derivative can be computed from their output alone; the others need the
# pre-activation kept for the backward pass. Mirrors act_derivative_from_output in C++.
_DERIVABLE_FROM_OUTPUT = {"identity", "relu", "sigmoid", "tanh"}
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _needs_preactivation(activation: str, alpha: float) -> bool:
    if activation in _DERIVABLE_FROM_OUTPUT:
        return False
    if activation in ("leaky_relu", "elu"):
        return alpha <= 0
    return True


def _tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def _float_data(t: Tensor, op: str, dtype=None) -> np.ndarray:
    """t's data as a C-contiguous float array (of `dtype` when given), copying only if needed."""
    data = t._data
    if data.dtype.kind != "f" and dtype is None:
        raise TypeError(f"{op}: expected a float tensor, got dtype {data.dtype}")
    target = dtype or (data.dtype if data.dtype in (np.float32, np.float64) else np.float32)
    if data.dtype != target or not data.flags.c_contiguous:
        data = np.ascontiguousarray(data, dtype=target)
    return data


def _param_data(t, dtype):
    """A weight's (or, with the weight's dtype, a bias's) data as a C-contiguous float array."""
    if t is None:
        return None
    data = t._data
    if (dtype is None or data.dtype == dtype) and data.flags.c_contiguous \
            and data.dtype in _FLOAT_DTYPES:
        return data  # parameters always are: no copy, no checks
    return _float_data(t, "linear", dtype or (data.dtype if data.dtype.kind == "f" else None))


def _check_reduction(op: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _grad_target(param: Tensor):
    """Where a kernel should put a parameter's gradient: (array, accumulate, returned)."""
    if param is None or not param.requires_grad:
        return None, False, False
    buffer, accumulate = leaf_grad_buffer(param)
    if buffer is not None:
        return buffer, accumulate, False
    # A non-leaf parameter (e.g. a tied or computed weight): hand the gradient back instead.
    return np.empty_like(param._data), False, True


# --- matrix products ---------------------------------------------------------------------------
def matmul(a, b) -> Tensor:
    """Matrix product with numpy's broadcasting rules; 2-D float products run on fastnn's GEMM."""
    a, b = _tensor(a), _tensor(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both operands need at least 1 dim, got shapes {a.shape} and "
                         f"{b.shape}")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} cannot be multiplied "
                         f"({k_a} != {k_b})")
    same_float = a.dtype == b.dtype and a.dtype in (np.float32, np.float64)
    if not same_float or b.ndim > 2:
        return _matmul_numpy(a, b)
    # (..., k) @ (k, n) or (k,): flatten the leading dims of a into rows of one GEMM.
    a2 = np.ascontiguousarray(a._data).reshape(-1, k_a)
    b2 = np.ascontiguousarray(b._data).reshape(k_b, -1)
    out2 = _ops.matmul2d(a2, b2)
    out_shape = a.shape[:-1] + ((b.shape[-1],) if b.ndim == 2 else ())
    out = out2.reshape(out_shape)

    def backward(g):
        g2 = np.ascontiguousarray(g).reshape(out2.shape)
        ga = _ops.matmul2d(g2, b2, trans_b=True).reshape(a.shape) if a.requires_grad else None
        gb = _ops.matmul2d(a2, g2, trans_a=True).reshape(b.shape) if b.requires_grad else None
        return ga, gb

    return Tensor._from_op(out, (a, b), backward)


def _matmul_numpy(a: Tensor, b: Tensor) -> Tensor:
    """Batched or mixed-dtype products: numpy's matmul with the textbook gradients."""
    x, y = a._data, b._data
    out = np.matmul(x, y)

    def backward(g):
        xa = x[None, :] if x.ndim == 1 else x
        yb = y[:, None] if y.ndim == 1 else y
        gg = g
        if x.ndim == 1:
            gg = np.expand_dims(gg, -2)
        if y.ndim == 1:
            gg = np.expand_dims(gg, -1)
        ga = gb = None
        if a.requires_grad:
            ga = np.matmul(gg, np.swapaxes(yb, -1, -2))
            ga = _unbroadcast(ga.reshape(ga.shape[:-2] + (-1,)) if x.ndim == 1 else ga,
                              a.shape if x.ndim > 1 else ga.shape[:-2] + (x.shape[0],))
            if x.ndim == 1:
                ga = ga.reshape(-1, x.shape[0]).sum(0)
        if b.requires_grad:
            gb = np.matmul(np.swapaxes(xa, -1, -2), gg)
            if y.ndim == 1:
                gb = gb.reshape(-1, y.shape[0]).sum(0)
            else:
                gb = _unbroadcast(gb, b.shape)
        return ga, gb

    return Tensor._from_op(np.asarray(out), (a, b), backward)


def linear(x, weight, bias=None, activation: str = "identity", alpha: float = 0.0) -> Tensor:
    """act(x @ weight.T + bias) in one fused kernel.

    Shapes: x (*, in_features), weight (out_features, in_features), bias (out_features,),
    result (*, out_features). `activation` is one of identity, relu, leaky_relu, elu, sigmoid,
    tanh, gelu, gelu_tanh, silu, softplus; `alpha` is leaky_relu's slope or elu's alpha.
    """
    return linear_chain(x, ((weight, bias, activation, alpha),))


def linear_chain(x, layers) -> Tensor:
    """Several `linear` calls in a row, recorded as one graph node.

    `layers` is a sequence of (weight, bias, activation, alpha), applied in order; the result
    equals chaining `linear` bit for bit. Sequential runs its Linear layers through this, so a
    whole MLP costs one node and one backward function per step instead of one per layer.
    """
    x = _tensor(x)
    data = x._data
    if data.ndim == 0:
        raise ValueError(f"linear: input must have at least 1 dim, got shape {data.shape}")
    lead_shape = data.shape[:-1]
    rows = math.prod(lead_shape)
    recording = is_grad_enabled()
    needs_grad = recording and x.requires_grad
    parents = [x]
    plan = []  # per layer: (weight, bias, activation, alpha, parent index of the weight)
    wanted_below = []  # per layer: does its input lead back to anything that wants a gradient?
    for weight, bias, activation, alpha in layers:
        wanted_below.append(needs_grad)
        needs_grad = needs_grad or (recording and (
            weight.requires_grad or (bias is not None and bias.requires_grad)))
        plan.append((_param_data(weight, None), _param_data(bias, weight.dtype), activation,
                     alpha, len(parents)))
        parents.append(weight)
        if bias is not None:
            parents.append(bias)

    inputs, outputs, preacts = [], [], []
    current = data
    for w, b, activation, alpha, _ in plan:
        if w.ndim != 2 or current.shape[-1] != w.shape[1]:
            raise ValueError(f"linear: input of shape {lead_shape + current.shape[-1:]} does not "
                             f"fit weight of shape {w.shape} (expected input (*, "
                             f"{w.shape[-1]}))")
        x2 = current
        if x2.dtype != w.dtype or not x2.flags.c_contiguous:
            x2 = np.ascontiguousarray(x2, dtype=w.dtype)
        if x2.ndim != 2:  # only the chain's input can be other than (rows, in)
            x2 = x2.reshape(rows, w.shape[1])
        y2 = np.empty((rows, w.shape[0]), dtype=w.dtype)
        z2 = (np.empty_like(y2) if needs_grad and _needs_preactivation(activation, alpha)
              else None)
        _ops.dense_forward(y2, x2, w, b, activation, alpha, z2)
        inputs.append(x2)
        outputs.append(y2)
        preacts.append(z2)
        current = y2

    out = current.reshape(lead_shape + (current.shape[1],))
    if not needs_grad:
        return Tensor(out)

    def backward(g):
        grads = [None] * len(parents)
        for layer in range(len(plan) - 1, -1, -1):
            w, b, activation, alpha, at = plan[layer]
            g2 = g
            if g2.dtype != w.dtype or not g2.flags.c_contiguous or g2.ndim != 2:
                g2 = np.ascontiguousarray(g2, dtype=w.dtype).reshape(rows, w.shape[0])
            # Frozen layers at the bottom (fine-tuning) get no input gradient computed.
            dx = np.empty_like(inputs[layer]) if wanted_below[layer] else None
            dw, acc_w, return_w = _grad_target(parents[at])
            db, acc_b, return_b = _grad_target(parents[at + 1] if b is not None else None)
            if dw is not None and db is not None and acc_w != acc_b:
                # One accumulate flag serves both: start the fresh buffer from zero instead.
                (dw if not acc_w else db)[...] = 0
                acc_w = acc_b = True
            accumulate = acc_w if dw is not None else acc_b
            _ops.dense_backward(g2, inputs[layer], w, outputs[layer], preacts[layer], activation,
                                alpha, dx, dw, db, accumulate)
            if return_w:
                grads[at] = dw
            if return_b:
                grads[at + 1] = db
            if dx is None:
                break  # nothing below this layer wants a gradient
            g = dx
        else:
            if x.requires_grad:
                grads[0] = g.reshape(x.shape)
        return tuple(grads)

    return Tensor._from_op(out, tuple(parents), backward)


# --- activations -------------------------------------------------------------------------------
def activation(x, name: str, alpha: float = 0.0) -> Tensor:
    """Apply an activation by name (see `linear` for the names) with its C++ kernel."""
    x = _tensor(x)
    data = _float_data(x, name)
    out = np.empty_like(data)
    _ops.activation_forward(out, data, name, alpha)

    def backward(g):
        dx = np.empty_like(data)
        _ops.activation_backward(dx, np.ascontiguousarray(g, dtype=data.dtype), data, out, name,
                                 alpha)
        return (dx,)

    return Tensor._from_op(out, (x,), backward)


def relu(x):
    return activation(x, "relu")


def leaky_relu(x, negative_slope: float = 0.01):
    return activation(x, "leaky_relu", negative_slope)


def elu(x, alpha: float = 1.0):
    return activation(x, "elu", alpha)


def sigmoid(x):
    return activation(x, "sigmoid")


def tanh(x):
    return activation(x, "tanh")


def gelu(x, approximate: str = "none"):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return activation(x, "gelu" if approximate == "none" else "gelu_tanh")


def silu(x):
    return activation(x, "silu")


def softplus(x):
    return activation(x, "softplus")


def _last_axis_op(x, dim, forward_kernel, backward_kernel, op):
    x = _tensor(x)
    if x.ndim == 0:
        raise ValueError(f"{op}: expected at least 1 dim, got a 0-d tensor")
    axis = _dim_index(op, dim, x.ndim)
    moved = axis != x.ndim - 1
    data = x._data if not moved else np.moveaxis(x._data, axis, -1)
    data = _float_data(Tensor(data), op)
    out = np.empty_like(data)
    forward_kernel(out, data)

    def backward(g):
        g = np.moveaxis(g, axis, -1) if moved else g
        dx = np.empty_like(data)
        backward_kernel(dx, np.ascontiguousarray(g, dtype=data.dtype), out)
        return (np.moveaxis(dx, -1, axis) if moved else dx,)

    return Tensor._from_op(np.moveaxis(out, -1, axis) if moved else out, (x,), backward)


def softmax(x, dim: int = -1) -> Tensor:
    return _last_axis_op(x, dim, _ops.softmax_forward, _ops.softmax_backward, "softmax")


def log_softmax(x, dim: int = -1) -> Tensor:
    return _last_axis_op(x, dim, _ops.log_softmax_forward, _ops.log_softmax_backward,
                         "log_softmax")


def dropout(x, p: float = 0.5, training: bool = True, generator=None) -> Tensor:
    """Zero each element with probability p and scale the rest by 1 / (1 - p) while training."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    x = _tensor(x)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        mask = np.zeros(x.shape, dtype=x.dtype)
    else:
        rng = generator or default_generator()
        keep = rng.random(x.shape, dtype=np.float32) >= p
        mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
    return Tensor._from_op(x._data * mask, (x,), lambda g: (g * mask,))


# --- losses ------------------------------------------------------------------------------------
def _scalar_loss(value: float, dtype, parents, backward) -> Tensor:
    return Tensor._from_op(np.asarray(value, dtype=dtype), parents, backward)


def _learned_target(target):
    """target if its gradient is wanted, else None.

    A target that requires grad (a computed or learned one, which is rare) becomes a second
    parent of the loss; a constant target, the case of every training step, costs this check.
    """
    if isinstance(target, Tensor) and target.requires_grad and is_grad_enabled():
        return target
    return None


def _labels(target: np.ndarray, op: str, input_shape: tuple) -> np.ndarray:
    """Class-index targets checked against logits of `input_shape`, as a flat int64 array."""
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: class-index targets must be integers, got dtype {target.dtype}")
    expected = () if len(input_shape) == 1 else (input_shape[0],) + input_shape[2:]
    if target.shape != expected:
        raise ValueError(f"{op}: target has shape {target.shape} but input has shape "
                         f"{input_shape}; expected a class-index target of shape {expected}")
    if target.dtype != np.int64 or target.ndim != 1 or not target.flags.c_contiguous:
        target = np.ascontiguousarray(target, dtype=np.int64).reshape(-1)
    return target


def _class_weight(weight, op: str, classes: int, dtype):
    """The per-class weight as a C-contiguous (classes,) array of `dtype`, or None."""
    if weight is None:
        return None
    data = _float_data(_tensor(weight), op, dtype)
    if data.shape != (classes,):
        raise ValueError(f"{op}: weight has shape {data.shape} but the input has {classes} "
                         f"classes; expected shape ({classes},)")
    return data


def _unchanged(value):
    return value


def _classes_last(input: Tensor, op: str):
    """(N, C), (C,) or (N, C, d1, ...) logits as (rows, C), and how to shape per-row results."""
    if input.ndim == 2:
        return input, _unchanged
    if input.ndim == 1:
        return input.reshape(1, -1), (lambda t: t.reshape(()))
    if input.ndim > 2:
        spatial = input.shape[2:]
        moved = input.permute(0, *range(2, input.ndim), 1).reshape(-1, input.shape[1])
        return moved, (lambda t: t.reshape((input.shape[0],) + spatial))
    raise ValueError(f"{op}: input must have at least 1 dim, got a 0-d tensor")


def cross_entropy(input, target, weight=None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross-entropy between logits (N, C) and integer class targets (N,).

    Also accepts unbatched (C,) input with a 0-d target and (N, C, d1, ...) input with
    (N, d1, ...) targets, and class-probability targets of the input's shape (which receive a
    gradient when they require one), as torch.nn.functional.cross_entropy does.
    """
    op = "cross_entropy"
    _check_reduction(op, reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    input = _tensor(input)
    target_array = _as_array(target)
    if target_array.dtype.kind == "f":
        return _cross_entropy_soft(input, target, target_array, weight, reduction,
                                   label_smoothing)
    logits_t, restore = _classes_last(input, op)
    weight_data = _class_weight(weight, op, logits_t.shape[1], logits_t.dtype)
    labels = _labels(target_array, op, input.shape)
    if reduction == "none":
        return restore(_cross_entropy_per_row(logits_t, labels, weight_data, ignore_index,
                                              label_smoothing))
    logits = _float_data(logits_t, op)
    probs = np.empty_like(logits)
    value = _ops.cross_entropy_forward(probs, logits, labels, weight_data, label_smoothing,
                                       reduction, ignore_index)

    def backward(g):
        dlogits = np.empty_like(logits)
        _ops.cross_entropy_backward(dlogits, probs, labels, weight_data, label_smoothing,
                                    reduction, ignore_index, float(g))
        return (dlogits,)

    return _scalar_loss(value, logits.dtype, (logits_t,), backward)


def _cross_entropy_per_row(logits: Tensor, labels, weight, ignore_index, smoothing) -> Tensor:
    """Unreduced cross-entropy built from differentiable pieces (the rarely used path)."""
    rows, classes = logits.shape
    logp = log_softmax(logits, dim=1)
    valid = labels != ignore_index
    if np.any(valid & ((labels < 0) | (labels >= classes))):
        bad = int(np.flatnonzero(valid & ((labels < 0) | (labels >= classes)))[0])
        raise ValueError(f"cross_entropy: target {labels[bad]} in row {bad} is out of range for "
                         f"{classes} classes")
    safe = np.where(valid, labels, 0)
    w = np.ones(classes, dtype=logits.dtype) if weight is None else weight
    picked = logp[np.arange(rows), safe] * Tensor((w[safe] * valid).astype(logits.dtype))
    loss = -picked * (1.0 - smoothing)
    if smoothing:
        spread = (logp * Tensor(w.astype(logits.dtype))).sum(1) * Tensor(valid.astype(
            logits.dtype))
        loss = loss - spread * (smoothing / classes)
    return loss


def _cross_entropy_soft(input: Tensor, target, target_data, weight, reduction,
                        smoothing) -> Tensor:
    if input.ndim == 0 or target_data.shape != input.shape:
        raise ValueError(f"cross_entropy: target must hold integer class indices, or class "
                         f"probabilities of the input's shape; got a {target_data.dtype} target "
                         f"of shape {target_data.shape} for input of shape {input.shape}")
    class_axis = 1 if input.ndim > 1 else 0
    classes = input.shape[class_axis]
    weight_data = _class_weight(weight, "cross_entropy", classes, input.dtype)
    # The same arithmetic serves a numpy target and, when it wants a gradient, a tensor one.
    learned = _learned_target(target)
    probs = target_data.astype(input.dtype) if learned is None else learned.astype(input.dtype)
    if smoothing:
        probs = probs * (1.0 - smoothing) + smoothing / classes
    if weight_data is not None:
        shape = [1] * input.ndim
        shape[class_axis] = classes
        probs = probs * weight_data.reshape(shape)
    loss = -(log_softmax(input, dim=class_axis) * probs).sum(class_axis)
    if reduction == "mean":
        return loss.sum() * (1.0 / max(loss.numel() if input.ndim > 1 else 1, 1))
    return loss.sum() if reduction == "sum" else loss


def nll_loss(input, target, weight=None, ignore_index: int = -100,
             reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of log-probabilities (N, C) at integer targets (N,).

    Takes the same shapes as cross_entropy with class-index targets.
    """
    op = "nll_loss"
    _check_reduction(op, reduction)
    input = _tensor(input)
    logp, restore = _classes_last(input, op)
    rows, classes = logp.shape
    w = _class_weight(weight, op, classes, input.dtype)
    labels = _labels(_as_array(target), op, input.shape)
    valid = labels != ignore_index
    out_of_range = valid & ((labels < 0) | (labels >= classes))
    if np.any(out_of_range):
        bad = int(np.flatnonzero(out_of_range)[0])
        raise ValueError(f"{op}: target {labels[bad]} in row {bad} is out of range for "
                         f"{classes} classes")
    safe = np.where(valid, labels, 0)
    if w is None:
        w = np.ones(classes, dtype=input.dtype)
    row_weight = (w[safe] * valid).astype(input.dtype)
    per_row = -logp[np.arange(rows), safe] * Tensor(row_weight)
    if reduction == "none":
        return restore(per_row)
    total = per_row.sum()
    if reduction == "sum":
        return total
    return total * (1.0 / row_weight.sum()) if row_weight.sum() else total * np.nan


def _regression_pair(input, target, op: str):
    input = _tensor(input)
    target_data = _as_array(target)
    if target_data.shape != input.shape:
        raise ValueError(f"{op}: input has shape {input.shape} but target has shape "
                         f"{target_data.shape}; they must match")
    pred = _float_data(input, op)
    # np.asarray, not np.ascontiguousarray, which would make a 0-d target (1,).
    return input, pred, np.asarray(target_data, dtype=pred.dtype, order="C")


def mse_loss(input, target, reduction: str = "mean") -> Tensor:
    """Mean squared error between input and target of the same shape."""
    op = "mse_loss"
    _check_reduction(op, reduction)
    input, pred, tgt = _regression_pair(input, target, op)
    learned = _learned_target(target)
    if reduction == "none":
        diff = input - (Tensor(tgt) if learned is None else learned.astype(pred.dtype))
        return diff * diff
    value = _ops.mse_forward(pred, tgt, reduction)

    def backward(g):
        dpred = np.empty_like(pred)
        _ops.mse_backward(dpred, pred, tgt, reduction, float(g))
        return (dpred,) if learned is None else (dpred, -dpred)

    parents = (input,) if learned is None else (input, learned)
    return _scalar_loss(value, pred.dtype, parents, backward)


def _elementwise_loss(input, target, values, derivative, reduction, target_derivative=None):
    """A loss of per-element values with known derivatives, as one graph node.

    `target` is the target tensor when its gradient is wanted, else None. Its derivative
    defaults to -derivative, which holds for every loss of (input - target).
    """
    if reduction == "none":
        result = np.asarray(values)  # numpy makes a scalar of arithmetic on 0-d arrays
        weigh = _unchanged
    else:
        scale = 1.0 / max(values.size, 1) if reduction == "mean" else 1.0
        result = np.asarray(values.sum(dtype=np.float64) * scale, dtype=values.dtype)
        dtype = values.dtype

        def weigh(g):
            return dtype.type(float(g) * scale)

    if target is None:
        return Tensor._from_op(result, (input,), lambda g: (derivative * weigh(g),))
    if target_derivative is None:
        target_derivative = -derivative
    return Tensor._from_op(result, (input, target), lambda g: (derivative * weigh(g),
                                                               target_derivative * weigh(g)))


def l1_loss(input, target, reduction: str = "mean") -> Tensor:
    op = "l1_loss"
    _check_reduction(op, reduction)
    input, pred, tgt = _regression_pair(input, target, op)
    diff = pred - tgt
    return _elementwise_loss(input, _learned_target(target), np.abs(diff), np.sign(diff),
                             reduction)


def huber_loss(input, target, reduction: str = "mean", delta: float = 1.0) -> Tensor:
    """0.5 d^2 where |d| <= delta, delta (|d| - 0.5 delta) elsewhere (d = input - target)."""
    op = "huber_loss"
    _check_reduction(op, reduction)
    if delta <= 0:
        raise ValueError(f"{op}: delta must be positive, got {delta}")
    input, pred, tgt = _regression_pair(input, target, op)
    diff = pred - tgt
    small = np.abs(diff) <= delta
    values = np.where(small, 0.5 * diff * diff, delta * (np.abs(diff) - 0.5 * delta))
    derivative = np.where(small, diff, delta * np.sign(diff)).astype(pred.dtype)
    return _elementwise_loss(input, _learned_target(target), values.astype(pred.dtype),
                             derivative, reduction)


def smooth_l1_loss(input, target, reduction: str = "mean", beta: float = 1.0) -> Tensor:
    """Huber loss divided by beta (PyTorch's SmoothL1Loss)."""
    if beta <= 0:
        raise ValueError(f"smooth_l1_loss: beta must be positive, got {beta}")
    return huber_loss(input, target, reduction, beta) * (1.0 / beta)


def _pos_weight(pos_weight, shape: tuple, dtype, op: str) -> np.ndarray:
    """pos_weight broadcast against a target of `shape`, as PyTorch does.

    Returns a (C,) array for the last axis when pos_weight varies along that axis only (the
    layout the kernel takes), else pos_weight broadcast to the whole target's shape.
    """
    weight = _as_array(pos_weight, dtype)
    if shape and weight.shape == shape[-1:]:
        return np.asarray(weight, order="C")
    try:
        fits = np.broadcast_shapes(weight.shape, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{op}: pos_weight of shape {weight.shape} cannot be broadcast to the "
                         f"target's shape {shape}")
    if shape and all(size == 1 for size in weight.shape[:-1]):
        return np.asarray(np.broadcast_to(weight.reshape(-1), shape[-1:]), order="C")
    return np.asarray(np.broadcast_to(weight, shape), order="C")


def _bce_target_derivative(logits: np.ndarray, pw) -> np.ndarray:
    """d loss / d target of binary cross-entropy on logits, per element."""
    # loss = (1 - t) x + (1 + (pw - 1) t) softplus(-x) is linear in the target t.
    if pw is None:
        return -logits
    return ((pw - 1) * np.logaddexp(0, -logits) - logits).astype(logits.dtype, copy=False)


def binary_cross_entropy_with_logits(input, target, reduction: str = "mean",
                                     pos_weight=None) -> Tensor:
    """Sigmoid and binary cross-entropy in one numerically stable kernel.

    pos_weight scales the loss of positive targets and broadcasts against the target, as in
    PyTorch: usually (C,) for C classes along the last axis, or a single value.
    """
    op = "binary_cross_entropy_with_logits"
    _check_reduction(op, reduction)
    input, logits, tgt = _regression_pair(input, target, op)
    learned = _learned_target(target)
    pw = None if pos_weight is None else _pos_weight(pos_weight, tgt.shape, logits.dtype, op)
    # The kernel takes pos_weight along the last axis only; any other broadcast goes this way.
    if reduction == "none" or (pw is not None and pw.ndim != 1):
        log_weight = 1.0 if pw is None else 1.0 + (pw - 1.0) * tgt
        softplus_neg = np.logaddexp(0, -logits)
        values = (1.0 - tgt) * logits + log_weight * softplus_neg
        sig = np.exp(-softplus_neg)  # sigmoid(x), without overflow for very negative x
        derivative = (log_weight * (sig - 1.0) + (1.0 - tgt)).astype(logits.dtype)
        d_target = None if learned is None else _bce_target_derivative(logits, pw)
        return _elementwise_loss(input, learned, np.asarray(values, dtype=logits.dtype),
                                 derivative, reduction, d_target)
    value = _ops.bce_with_logits_forward(logits, tgt, pw, reduction)

    def backward(g):
        dlogits = np.empty_like(logits)
        _ops.bce_with_logits_backward(dlogits, logits, tgt, pw, reduction, float(g))
        if learned is None:
            return (dlogits,)
        scale = float(g) / max(logits.size, 1) if reduction == "mean" else float(g)
        return dlogits, _bce_target_derivative(logits, pw) * logits.dtype.type(scale)

    parents = (input,) if learned is None else (input, learned)
    return _scalar_loss(value, logits.dtype, parents, backward)


def binary_cross_entropy(input, target, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy of probabilities in [0, 1] (logs clamped at -100, as PyTorch)."""
    op = "binary_cross_entropy"
    _check_reduction(op, reduction)
    input, prob, tgt = _regression_pair(input, target, op)
    if np.any((prob < 0) | (prob > 1)):
        raise ValueError(f"{op}: input must hold probabilities in [0, 1]")
    log_p = np.maximum(np.log(prob), -100)
    log_q = np.maximum(np.log1p(-prob), -100)
    values = -(tgt * log_p + (1 - tgt) * log_q)
    eps = np.finfo(prob.dtype).tiny
    derivative = ((prob - tgt) / np.maximum(prob * (1 - prob), eps)).astype(prob.dtype)
    learned = _learned_target(target)
    # From the clamped logs, so that it is the derivative of the value returned; PyTorch's
    # -logit(p) differs only where a log is clamped, and is infinite at p = 0 or 1.
    d_target = None if learned is None else np.asarray(log_q - log_p, dtype=prob.dtype)
    return _elementwise_loss(input, learned, np.asarray(values, dtype=prob.dtype), derivative,
                             reduction, d_target)


def one_hot(labels, num_classes: int = -1) -> Tensor:
    labels = _as_array(labels).astype(np.int64)
    if num_classes < 0:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"one_hot: labels must be in [0, {num_classes}), got range "
                         f"[{labels.min()}, {labels.max()}]")
    return Tensor(np.eye(num_classes, dtype=np.int64)[labels])


# --- convolution, pooling, normalization -------------------------------------------------------
# Layouts are NCHW (NCL for 1-D ops). An unbatched input, (C, H, W) or (C, L), runs as a batch of
# one. The input is converted to the parameters' dtype (each kernel takes one dtype); parameter
# gradients are written straight into the leaves' .grad buffers by the backward kernels.
def _int_tuple(value, n: int, name: str, op: str) -> tuple:
    """An int or a sequence of n ints, as a tuple of n ints."""
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if is_int(value):
        return (int(value),) * n
    if isinstance(value, (tuple, list)) and len(value) == n and all(is_int(v) for v in value):
        return tuple(int(v) for v in value)
    raise TypeError(f"{op}: {name} must be an int or a tuple of {n} ints, got {value!r}")


def _renamed(error: Exception, op: str) -> Exception:
    """The same error under the public op's name instead of the binding's."""
    head, sep, rest = str(error).partition(": ")
    message = rest if sep and head.startswith("fastnn.") else str(error)
    return type(error)(f"{op}: {message}")


def _grad_targets(*params):
    """Gradient buffers of parameters that one kernel call fills under one accumulate flag.

    Returns ([(array or None, returned), ...], accumulate). When some parameters already hold
    a gradient and others do not, the fresh buffers are zeroed so that all can accumulate.
    """
    targets = [_grad_target(p) for p in params]
    flags = {acc for buffer, acc, _ in targets if buffer is not None}
    if len(flags) == 2:
        for buffer, acc, _ in targets:
            if buffer is not None and not acc:
                buffer[...] = 0
    return [(buffer, returned) for buffer, _, returned in targets], True in flags


def _with_param_grads(dx, weight, dg, return_g, bias, db, return_b) -> tuple:
    """Gradients for the parents (input, weight, bias), skipping absent parameters."""
    grads = [dx]
    if weight is not None:
        grads.append(dg if return_g else None)
    if bias is not None:
        grads.append(db if return_b else None)
    return tuple(grads)


def _add_batch_axis(input: Tensor, op: str, dims: int, layout: str) -> bool:
    """Checks input is `dims`-D (batched) or one less (unbatched); True when unbatched."""
    if input.ndim == dims:
        return False
    if input.ndim == dims - 1:
        return True
    raise ValueError(f"{op}: expected input {layout} or unbatched {layout.replace('N, ', '')}, "
                     f"got shape {input.shape}")


def _conv_padding(padding, kernel: tuple, stride: tuple, dilation: tuple, op: str) -> tuple:
    """(before, after) pairs per spatial axis for an int, a tuple, "valid" or "same".

    "same" splits the total d * (k - 1) as PyTorch does, the odd one after (bottom / right).
    """
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * len(kernel)
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"{op}: padding='same' needs stride 1, got stride {stride}")
            return tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
                         for k, d in zip(kernel, dilation))
        raise ValueError(f"{op}: padding must be 'same', 'valid', an int or a tuple of ints, "
                         f"got {padding!r}")
    pads = _int_tuple(padding, len(kernel), "padding", op)
    if any(p < 0 for p in pads):
        raise ValueError(f"{op}: padding must be >= 0, got {padding!r}")
    return tuple((p, p) for p in pads)


def _conv(op: str, input, weight, bias, stride, padding, dilation, groups, dims: int,
          activation: str = "identity", alpha: float = 0.0) -> Tensor:
    """conv1d and conv2d, both on the conv2d kernel (1-D as planes of height 1), with an
    optional activation fused into the kernel's output pass and its gradient into the backward."""
    input = _tensor(input)
    layout = "(N, C, L)" if dims == 1 else "(N, C, H, W)"
    unbatched = _add_batch_axis(input, op, dims + 2, layout)
    if weight.ndim != dims + 2:
        raise ValueError(f"{op}: weight must be {dims + 2}-D (out_channels, in_channels / groups, "
                         f"*kernel_size), got shape {weight.shape}")
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    stride = _int_tuple(stride, dims, "stride", op)
    dilation = _int_tuple(dilation, dims, "dilation", op)
    pads = _conv_padding(padding, tuple(weight.shape[2:]), stride, dilation, op)
    dtype = weight.dtype
    x = _float_data(input, op, dtype)
    w = _float_data(weight, op, dtype)
    b = None if bias is None else _float_data(bias, op, dtype)
    if unbatched:
        x = x[None]
    if dims == 1:
        x = x.reshape(x.shape[0], x.shape[1], 1, x.shape[2])
        w = w.reshape(w.shape[0], w.shape[1], 1, w.shape[2])
        options = dict(stride=(1, stride[0]), padding=(0, 0) + pads[0],
                       dilation=(1, dilation[0]), groups=int(groups))
    else:
        options = dict(stride=stride, padding=pads[0] + pads[1], dilation=dilation,
                       groups=int(groups))
    fused = activation != "identity"
    needs_grad = any(t is not None and t.requires_grad for t in (input, weight, bias))
    try:
        y = np.empty(_ops.conv2d_output_shape(x.shape, w.shape, **options), dtype=dtype)
        z = np.empty_like(y) if fused and needs_grad and is_grad_enabled() \
            and _needs_preactivation(activation, alpha) else None
        _ops.conv2d_forward(y, x, w, b, activation=activation, alpha=float(alpha), Z=z,
                            **options)
    except (ValueError, TypeError) as error:
        raise _renamed(error, op) from None
    out_shape = y.shape if dims == 2 else y.shape[:2] + y.shape[3:]
    out = y.reshape(out_shape[1:] if unbatched else out_shape)

    def backward(g):
        gy = np.ascontiguousarray(g, dtype=dtype).reshape(y.shape)
        dx = np.empty_like(x) if input.requires_grad else None
        ((dw, return_w), (db, return_b)), accumulate = _grad_targets(weight, bias)
        _ops.conv2d_backward(gy, x, w, Y=y if fused else None, Z=z, activation=activation,
                             alpha=float(alpha), dX=dx,
                             dW=None if dw is None else dw.reshape(w.shape), db=db,
                             accumulate=accumulate, **options)
        return _with_param_grads(None if dx is None else dx.reshape(input.shape), weight, dw,
                                 return_w, bias, db, return_b)

    parents = (input, weight) if bias is None else (input, weight, bias)
    return Tensor._from_op(out, parents, backward)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           activation: str = "identity", alpha: float = 0.0) -> Tensor:
    """2-D cross-correlation, as torch.nn.functional.conv2d, optionally followed by a fused
    activation.

    Shapes: input (N, C, H, W) or (C, H, W), weight (OC, C / groups, KH, KW), bias (OC,) or
    None; result (N, OC, OH, OW). stride and dilation: an int or a pair. padding: an int, a
    pair, "valid" (none) or "same" (output as large as the input; stride 1 only; an even
    dilated kernel pads one more at the bottom and right, as PyTorch does). activation and
    alpha: as for `linear` (fastnn's extension; the default is none).
    """
    return _conv("conv2d", input, weight, bias, stride, padding, dilation, groups, 2,
                 activation, alpha)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           activation: str = "identity", alpha: float = 0.0) -> Tensor:
    """1-D cross-correlation, as torch.nn.functional.conv1d (activation: see `conv2d`).

    Shapes: input (N, C, L) or (C, L), weight (OC, C / groups, K), bias (OC,) or None; result
    (N, OC, OL). padding: an int, "valid" or "same" (see `conv2d`).
    """
    return _conv("conv1d", input, weight, bias, stride, padding, dilation, groups, 1,
                 activation, alpha)


def _pool_input(input, op: str):
    """(tensor, its float data as (N, C, H, W), whether a batch axis was added)."""
    input = _tensor(input)
    unbatched = _add_batch_axis(input, op, 4, "(N, C, H, W)")
    x = _float_data(input, op)
    return input, (x[None] if unbatched else x), unbatched


def _pool_output(y: np.ndarray, unbatched: bool) -> np.ndarray:
    return y[0] if unbatched else y


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False):
    """Maximum over each window, as torch.nn.functional.max_pool2d.

    Shapes: input (N, C, H, W) or (C, H, W) -> (N, C, OH, OW). stride defaults to kernel_size;
    padding (at most half the kernel) never wins the maximum. With return_indices, also returns
    the int64 flat positions (h * W + w) of the maxima within their planes.
    """
    op = "max_pool2d"
    input, x, unbatched = _pool_input(input, op)
    options = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=bool(ceil_mode))
    try:
        shape = _ops.pool2d_output_shape(x.shape, kernel_size, **options)
        y = np.empty(shape, dtype=x.dtype)
        indices = np.empty(shape, dtype=np.int64)
        _ops.max_pool2d_forward(y, indices, x, kernel_size, **options)
    except (ValueError, TypeError) as error:
        raise _renamed(error, op) from None

    def backward(g):
        dx = np.empty_like(x)
        _ops.max_pool2d_backward(dx, np.ascontiguousarray(g, dtype=x.dtype).reshape(y.shape),
                                 indices)
        return (dx.reshape(input.shape),)

    out = Tensor._from_op(_pool_output(y, unbatched), (input,), backward)
    if return_indices:
        return out, Tensor(_pool_output(indices, unbatched))
    return out


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override=None) -> Tensor:
    """Mean over each window, as torch.nn.functional.avg_pool2d.

    Shapes: input (N, C, H, W) or (C, H, W) -> (N, C, OH, OW). stride defaults to kernel_size.
    count_include_pad counts padded zeros in the divisor; divisor_override replaces it.
    """
    op = "avg_pool2d"
    input, x, unbatched = _pool_input(input, op)
    options = dict(stride=stride, padding=padding, ceil_mode=bool(ceil_mode),
                   count_include_pad=bool(count_include_pad), divisor_override=divisor_override)
    try:
        shape = _ops.pool2d_output_shape(x.shape, kernel_size, stride, padding, 1,
                                         bool(ceil_mode))
        y = np.empty(shape, dtype=x.dtype)
        _ops.avg_pool2d_forward(y, x, kernel_size, **options)
    except (ValueError, TypeError) as error:
        raise _renamed(error, op) from None

    def backward(g):
        dx = np.empty_like(x)
        _ops.avg_pool2d_backward(dx, np.ascontiguousarray(g, dtype=x.dtype).reshape(y.shape),
                                 kernel_size, **options)
        return (dx.reshape(input.shape),)

    return Tensor._from_op(_pool_output(y, unbatched), (input,), backward)


def adaptive_avg_pool2d(input, output_size) -> Tensor:
    """Average pooling to a fixed output size, as torch.nn.functional.adaptive_avg_pool2d.

    Shapes: input (N, C, H, W) or (C, H, W) -> (N, C, OH, OW) with (OH, OW) = output_size (an
    int, or a pair in which None keeps that input size). output_size 1 is global average pooling.
    """
    op = "adaptive_avg_pool2d"
    input, x, unbatched = _pool_input(input, op)
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        output_size = tuple(x.shape[2 + i] if s is None else s for i, s in enumerate(output_size))
    oh, ow = _int_tuple(output_size, 2, "output_size", op)
    if oh < 1 or ow < 1:
        raise ValueError(f"{op}: output_size must be >= 1, got {output_size!r}")
    y = np.empty(x.shape[:2] + (oh, ow), dtype=x.dtype)
    try:
        _ops.adaptive_avg_pool2d_forward(y, x)
    except (ValueError, TypeError) as error:
        raise _renamed(error, op) from None

    def backward(g):
        dx = np.empty_like(x)
        _ops.adaptive_avg_pool2d_backward(
            dx, np.ascontiguousarray(g, dtype=x.dtype).reshape(y.shape))
        return (dx.reshape(input.shape),)

    return Tensor._from_op(_pool_output(y, unbatched), (input,), backward)


def _state_array(t, op: str, name: str, dtype, channels: int) -> np.ndarray:
    """A running statistic's own array (updated in place), checked for dtype and shape."""
    data = t._data if isinstance(t, Tensor) else t
    if not isinstance(data, np.ndarray) or data.dtype != dtype or data.shape != (channels,) \
            or not data.flags.c_contiguous:
        raise ValueError(f"{op}: {name} must be a contiguous {np.dtype(dtype)} array of shape "
                         f"({channels},), got {getattr(data, 'dtype', type(data).__name__)} "
                         f"{getattr(data, 'shape', '')}")
    return data


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Batch normalization, as torch.nn.functional.batch_norm.

    Shapes: input (N, C, *) (BatchNorm1d: (N, C) or (N, C, L); BatchNorm2d: (N, C, H, W));
    running_mean, running_var, weight, bias (C,). training=True normalizes with the batch
    statistics and, when running_mean / running_var are given, updates them in place
    (r = (1 - momentum) r + momentum * batch statistic, the variance unbiased); training=False
    normalizes with the running statistics.
    """
    op = "batch_norm"
    input = _tensor(input)
    if input.ndim < 2:
        raise ValueError(f"{op}: expected input (N, C, *), got shape {input.shape}")
    channels = input.shape[1]
    dtype = next((t.dtype for t in (weight, bias, running_mean) if t is not None),
                 _float_data(input, op).dtype)
    x = _float_data(input, op, dtype)
    gamma = None if weight is None else _float_data(weight, op, dtype)
    beta = None if bias is None else _float_data(bias, op, dtype)
    rm = None if running_mean is None else _state_array(running_mean, op, "running_mean", dtype,
                                                        channels)
    rv = None if running_var is None else _state_array(running_var, op, "running_var", dtype,
                                                       channels)
    y = np.empty_like(x)
    try:
        if training:
            mean = np.empty(channels, dtype=dtype)
            invstd = np.empty(channels, dtype=dtype)
            _ops.batch_norm_forward_train(y, mean, invstd, x, gamma, beta, rm, rv, float(eps),
                                          float(momentum))
        else:
            if rm is None or rv is None:
                raise ValueError(f"{op}: running_mean and running_var are needed when not "
                                 f"training")
            _ops.batch_norm_forward_eval(y, x, rm, rv, gamma, beta, float(eps))
            # The backward of evaluation mode is a per-channel affine map of these.
            mean = rm.copy()
            invstd = (1.0 / np.sqrt(rv.astype(np.float64) + eps)).astype(dtype)
    except (ValueError, TypeError) as error:
        raise _renamed(error, op) from None

    def backward(g):
        dx = np.empty_like(x) if input.requires_grad else None
        ((dg, return_g), (db, return_b)), accumulate = _grad_targets(weight, bias)
        _ops.batch_norm_backward(np.ascontiguousarray(g, dtype=dtype), x, mean, invstd, gamma,
                                 dx, dg, db, training=bool(training), accumulate=accumulate)
        return _with_param_grads(dx, weight, dg, return_g, bias, db, return_b)

    parents = tuple(t for t in (input, weight, bias) if t is not None)
    return Tensor._from_op(y, parents, backward)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps: float = 1e-5) -> Tensor:
    """Layer normalization over the trailing dims, as torch.nn.functional.layer_norm.

    Shapes: input (*, *normalized_shape); weight and bias normalized_shape or None; the result
    has the input's shape.
    """
    op = "layer_norm"
    input = _tensor(input)
    if isinstance(normalized_shape, (int, np.integer)):
        normalized_shape = (int(normalized_shape),)
    normalized_shape = tuple(normalized_shape)
    dims = len(normalized_shape)
    if dims == 0 or input.ndim < dims or input.shape[input.ndim - dims:] != normalized_shape:
        raise ValueError(f"{op}: input of shape {input.shape} does not end with "
                         f"normalized_shape {normalized_shape}")
    dtype = weight.dtype if weight is not None else _float_data(input, op).dtype
    x = _float_data(input, op, dtype)
    gamma = None if weight is None else _float_data(weight, op, dtype)
    beta = None if bias is None else _float_data(bias, op, dtype)
    lead = x.shape[:x.ndim - dims]
    y = np.empty_like(x)
    mean = np.empty(lead, dtype=dtype)
    rstd = np.empty(lead, dtype=dtype)
    try:
        _ops.layer_norm_forward(y, mean, rstd, x, dims, gamma, beta, float(eps))
    except (ValueError, TypeError) as error:
        raise _renamed(error, op) from None

    def backward(g):
        dx = np.empty_like(x) if input.requires_grad else None
        ((dg, return_g), (db, return_b)), accumulate = _grad_targets(weight, bias)
        _ops.layer_norm_backward(np.ascontiguousarray(g, dtype=dtype), x, mean, rstd, dims,
                                 gamma, dx, dg, db, accumulate=accumulate)
        return _with_param_grads(dx, weight, dg, return_g, bias, db, return_b)

    parents = tuple(t for t in (input, weight, bias) if t is not None)
    return Tensor._from_op(y, parents, backward)


def dropout2d(input, p: float = 0.5, training: bool = True, inplace: bool = False,
              generator=None) -> Tensor:
    """Zero whole channels with probability p while training, scaling the rest by 1 / (1 - p).

    Shapes: input (N, C, H, W) or (N, C, L); one keep / drop draw per (sample, channel), from
    fastnn's seeded generator (or `generator`). `inplace` is accepted for PyTorch compatibility;
    fastnn always returns a new tensor.
    """
    op = "dropout2d"
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: p must be in [0, 1], got {p}")
    input = _tensor(input)
    if input.ndim not in (3, 4):
        raise ValueError(f"{op}: expected input (N, C, H, W) or (N, C, L), got shape "
                         f"{input.shape}")
    if not training or p == 0.0:
        return input
    x = _float_data(input, op)
    rng = generator or default_generator()
    mask = (rng.random(x.shape[:2], dtype=np.float32) >= p).astype(x.dtype)
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
    y = np.empty_like(x)
    _ops.dropout2d_apply(y, x, mask, scale)

    def backward(g):
        dx = np.empty_like(x)
        _ops.dropout2d_backward(dx, np.ascontiguousarray(g, dtype=x.dtype), mask, scale)
        return (dx,)

    return Tensor._from_op(y, (input,), backward)
