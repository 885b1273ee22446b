"""Utilities: numerical gradient checking."""

from __future__ import annotations

import numpy as np

from .autograd import no_grad
from .tensor import Tensor


class GradcheckError(AssertionError):
    """Raised by `gradcheck` when analytical and numerical gradients disagree."""


def _outputs(result):
    """fn's result as a tuple of tensors: one tensor, or a tuple or list of them."""
    outputs = tuple(result) if isinstance(result, (tuple, list)) else (result,)
    for index, output in enumerate(outputs):
        if not isinstance(output, Tensor):
            raise TypeError(f"gradcheck: the function must return a Tensor or a tuple of "
                            f"Tensors; output {index} is {type(output).__name__}")
    return outputs


def _projection(outputs, seeds) -> float:
    return float(sum(np.sum(output.data * seed) for output, seed in zip(outputs, seeds)))


def numerical_gradients(fn, inputs, eps: float = 1e-6):
    """Central finite differences of sum(output * seed) for each input requiring grad.

    Fixed random seeds (one per output) project the outputs to a scalar, so every output element
    is checked at once. Returns (gradients, seeds), a gradient of None for inputs not checked.
    """
    with no_grad():
        reference = _outputs(fn(*inputs))
    rng = np.random.default_rng(1234)
    seeds = [rng.standard_normal(output.shape) for output in reference]
    grads = []
    for tensor in inputs:
        if not (isinstance(tensor, Tensor) and tensor.requires_grad):
            grads.append(None)
            continue
        # Nudged through a multi-index, so views (a transpose, a slice) are changed in place
        # rather than through a reshaped copy the function never sees.
        data = tensor.data
        grad = np.zeros(data.shape, dtype=np.float64)
        for index in np.ndindex(data.shape):
            original = data[index]
            with no_grad():
                data[index] = original + eps
                plus = _projection(_outputs(fn(*inputs)), seeds)
                data[index] = original - eps
                minus = _projection(_outputs(fn(*inputs)), seeds)
            data[index] = original
            grad[index] = (plus - minus) / (2 * eps)
        grads.append(grad)
    return grads, seeds


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              raise_exception: bool = True) -> bool:
    """Compare autograd's gradients of `fn` with central finite differences.

    `fn` returns a tensor or a tuple of tensors. `inputs` is a sequence of tensors; those with
    requires_grad=True are checked and must be float64 (float32 finite differences are too coarse
    to mean anything). Returns True when every gradient matches within atol + rtol * |numerical|;
    otherwise raises GradcheckError naming the input and the largest difference (or returns False
    with raise_exception=False).
    """
    inputs = list(inputs)
    for index, tensor in enumerate(inputs):
        if isinstance(tensor, Tensor) and tensor.requires_grad and tensor.dtype != np.float64:
            raise TypeError(f"gradcheck: input {index} is {tensor.dtype}; use float64 tensors")
    numerical, seeds = numerical_gradients(fn, inputs, eps)
    for tensor in inputs:
        if isinstance(tensor, Tensor):
            tensor.grad = None
    # Outputs that do not require grad contribute nothing to autograd's side; the finite
    # differences then have to come out zero for the check to pass.
    pairs = [(output, seed) for output, seed in zip(_outputs(fn(*inputs)), seeds)
             if output.requires_grad]
    if pairs:
        projected = sum((output * Tensor(seed.astype(output.dtype))).sum()
                        for output, seed in pairs)
        projected.backward()
    for index, (tensor, expected) in enumerate(zip(inputs, numerical)):
        if expected is None:
            continue
        actual = np.zeros_like(expected) if tensor.grad is None else tensor.grad.data
        difference = np.abs(actual - expected)
        bad = difference > atol + rtol * np.abs(expected)
        if np.any(bad):
            worst = np.unravel_index(np.argmax(difference), difference.shape)
            message = (f"gradcheck: gradient of input {index} (shape {tensor.shape}) differs from "
                       f"finite differences at {worst}: autograd {actual[worst]:.8g}, numerical "
                       f"{expected[worst]:.8g} (max abs difference {difference.max():.3g})")
            if raise_exception:
                raise GradcheckError(message)
            return False
    return True
