"""Utilities: numerical gradient checking."""

from __future__ import annotations

import numpy as np

from .autograd import no_grad
from .tensor import Tensor


class GradcheckError(AssertionError):
    """Raised by `gradcheck` when analytical and numerical gradients disagree."""


def numerical_gradients(fn, inputs, eps: float = 1e-6):
    """Central finite differences of sum(fn(*inputs) * seed) for each input requiring grad.

    A fixed random seed projects a non-scalar output to a scalar, so every output element is
    checked at once.
    """
    with no_grad():
        reference = fn(*inputs)
    seed = np.random.default_rng(1234).standard_normal(reference.shape)
    grads = []
    for tensor in inputs:
        if not (isinstance(tensor, Tensor) and tensor.requires_grad):
            grads.append(None)
            continue
        flat = tensor.data.reshape(-1)
        grad = np.zeros(flat.shape, dtype=np.float64)
        for i in range(flat.size):
            original = flat[i]
            with no_grad():
                flat[i] = original + eps
                plus = float(np.sum(fn(*inputs).data * seed))
                flat[i] = original - eps
                minus = float(np.sum(fn(*inputs).data * seed))
            flat[i] = original
            grad[i] = (plus - minus) / (2 * eps)
        grads.append(grad.reshape(tensor.shape))
    return grads, seed


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              raise_exception: bool = True) -> bool:
    """Compare autograd's gradients of `fn` with central finite differences.

    `inputs` is a sequence of tensors; those with requires_grad=True are checked and must be
    float64 (float32 finite differences are too coarse to mean anything). Returns True when
    every gradient matches within atol + rtol * |numerical|; otherwise raises GradcheckError
    naming the input and the largest difference (or returns False with raise_exception=False).
    """
    inputs = list(inputs)
    for index, tensor in enumerate(inputs):
        if isinstance(tensor, Tensor) and tensor.requires_grad and tensor.dtype != np.float64:
            raise TypeError(f"gradcheck: input {index} is {tensor.dtype}; use float64 tensors")
    numerical, seed = numerical_gradients(fn, inputs, eps)
    for tensor in inputs:
        if isinstance(tensor, Tensor):
            tensor.grad = None
    output = fn(*inputs)
    output.backward(Tensor(seed.astype(output.dtype)))
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
