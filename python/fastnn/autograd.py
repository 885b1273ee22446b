"""Reverse-mode automatic differentiation, built as the program runs.

Every operation on tensors that require gradients records, on its output, the tensors it read
(`_parents`) and a function (`_backward`) that maps the gradient of the output to the gradients
of those parents. `Tensor.backward` walks this graph once in reverse topological order. Gradients
travel as numpy arrays; only leaves (tensors created by the user, such as parameters) receive a
`.grad` Tensor, which accumulates across backward calls as in PyTorch.

A backward function may also write a leaf's gradient itself (the fused dense kernels accumulate
dW straight into the parameter's `.grad` buffer) and return None for that parent; see
`leaf_grad_buffer`.
"""

from __future__ import annotations

import functools
import sys
import threading

import numpy as np

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "enabled", True)


def set_grad_enabled(mode: bool) -> None:
    _state.enabled = bool(mode)


class _GradMode:
    """Base of `no_grad` and `enable_grad`: a context manager that is also a decorator."""

    _mode = True

    def __new__(cls, fn=None):
        # `@no_grad` without parentheses hands the function straight to the class.
        mode = super().__new__(cls)
        return mode if fn is None else mode(fn)

    def __enter__(self):
        self._previous = is_grad_enabled()
        set_grad_enabled(self._mode)
        return self

    def __exit__(self, *exc):
        set_grad_enabled(self._previous)
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.__class__():
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_GradMode):
    """Context manager (or decorator) under which operations record no graph."""

    _mode = False


class enable_grad(_GradMode):
    """Context manager (or decorator) that turns graph recording back on."""

    _mode = True


def leaf_grad_buffer(tensor):
    """For a leaf that requires grad, the array a kernel should write its gradient into.

    Returns (array, accumulate): when the leaf has no gradient yet, a fresh uninitialised
    array is attached as its `.grad` and accumulate is False (the kernel overwrites it);
    otherwise the existing gradient's array and True (the kernel adds into it). Returns
    (None, False) for tensors that are not leaves requiring grad.
    """
    if not tensor.requires_grad or tensor._backward is not None or tensor._freed:
        return None, False
    grad = tensor.grad
    if grad is None:
        buffer = _take_spare_grad(tensor)
        if buffer is None:
            buffer = np.empty_like(tensor._data)
        tensor.grad = _wrap(buffer)
        return buffer, False
    return grad._data, True


def release_grad(tensor) -> None:
    """`tensor.grad = None`, as `zero_grad(set_to_none=True)` does it.

    A Parameter keeps the released array as a spare for its next backward to write into, which
    saves allocating every gradient again on every step (about 4% of a training step of the MLP
    benchmark at batch 32). The reuse cannot be observed: a spare that anything else still refers
    to (the old gradient tensor, the array, a view of it) is never reused.
    """
    grad = tensor.grad
    tensor.grad = None
    if grad is not None and hasattr(type(tensor), "_spare_grad"):
        tensor._spare_grad = grad._data


def _take_spare_grad(tensor):
    """The tensor's spare gradient array if it can be reused as a fresh one, else None."""
    spare = getattr(tensor, "_spare_grad", None)
    if spare is None:
        return None
    tensor._spare_grad = None
    # Two references: `spare` and getrefcount's argument. One more means someone holds it.
    if sys.getrefcount(spare) != 2:
        return None
    data, flags = tensor._data, spare.flags
    if (flags.owndata and flags.writeable and flags.c_contiguous and spare.shape == data.shape
            and spare.dtype == data.dtype):
        return spare
    return None


# Set by fastnn.tensor once Tensor exists (the Tensor class itself builds on this module): wraps
# a numpy array as a Tensor without copying or checking it.
_wrap = None


def _set_wrapper(wrap) -> None:
    global _wrap
    _wrap = wrap


def _is_leaf(node) -> bool:
    return node._backward is None and not node._freed


def _operation_order(root):
    """The operation results reachable from root (leaves left out), each before its inputs.

    Leaves have no inputs, so their gradients are complete once every operation has run; they
    are accumulated after the walk. A freed result counts as an operation, so that reaching it
    raises instead of treating it as a leaf.
    """
    order, visited = [], {id(root)}
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        stack.append((node, True))
        for parent in node._parents:
            if parent.requires_grad and not _is_leaf(parent) and id(parent) not in visited:
                visited.add(id(parent))
                stack.append((parent, False))
    order.reverse()
    return order


def _accumulate_leaf(leaf, grad):
    if grad.shape != leaf._data.shape:
        raise RuntimeError(
            f"autograd: gradient of shape {grad.shape} does not match its tensor's shape "
            f"{leaf._data.shape}"
        )
    if leaf.grad is None:
        # Copy: a backward function may hand out a view shared with another gradient.
        leaf.grad = _wrap(np.array(grad, dtype=leaf._data.dtype, copy=True, order="C"))
    else:
        leaf.grad._data += grad


def backward(root, gradient=None, retain_graph=False):
    """Backpropagate from `root`; see `Tensor.backward`."""
    if not root.requires_grad:
        raise RuntimeError(
            "backward: this tensor does not require grad and has no grad_fn "
            "(did you create it under no_grad, or from tensors without requires_grad=True?)"
        )
    if gradient is None:
        if root._data.size != 1:
            raise RuntimeError(
                f"backward: gradient can be implicit only for a single-element tensor, "
                f"got shape {root._data.shape}; pass gradient="
            )
        seed = np.ones(root._data.shape, root._data.dtype)  # np.ones_like costs 1 us more
    else:
        seed = np.asarray(getattr(gradient, "_data", gradient), dtype=root._data.dtype)
        if seed.shape != root._data.shape:
            raise ValueError(
                f"backward: gradient has shape {seed.shape} but the tensor has shape "
                f"{root._data.shape}"
            )

    if _is_leaf(root):
        _accumulate_leaf(root, seed)
        return
    grads = {id(root): seed}
    leaf_grads = {}  # id -> [leaf, summed gradient]
    recording = is_grad_enabled()
    set_grad_enabled(False)  # as no_grad() does, without building a context manager per call
    try:
        for node in _operation_order(root):
            grad = grads.pop(id(node), None)
            if grad is None:
                continue
            if node._freed:
                raise RuntimeError(
                    "backward: trying to backpropagate through a graph a second time; its "
                    "intermediate results were freed (use backward(retain_graph=True))"
                )
            if node._retains_grad:
                _accumulate_leaf(node, grad)
            parent_grads = node._backward(grad)
            for parent, parent_grad in zip(node._parents, parent_grads):
                if parent_grad is None or not parent.requires_grad:
                    continue
                key = id(parent)
                if _is_leaf(parent):
                    entry = leaf_grads.get(key)
                    if entry is None:
                        leaf_grads[key] = [parent, parent_grad]
                    else:
                        entry[1] = entry[1] + parent_grad
                elif key in grads:
                    grads[key] = grads[key] + parent_grad
                else:
                    grads[key] = parent_grad
            if not retain_graph:
                node._backward = None
                node._parents = ()
                node._freed = True
        for leaf, grad in leaf_grads.values():
            _accumulate_leaf(leaf, grad)
    finally:
        set_grad_enabled(recording)
