"""Adagrad: per-element learning rates from the accumulated squared gradients."""

import numpy as np

from . import _kernels
from .optimizer import Optimizer, _grad_array

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    """Adagrad, with PyTorch's formulas and defaults.

    Per parameter, with g its gradient (negated when maximize) and t its step count:
    ``g += weight_decay * p``; ``s += g * g``;
    ``p -= lr / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps)``.

    Args:
        params: parameters or parameter-group dicts.
        lr: learning rate (default 1e-2).
        lr_decay: learning-rate decay per step (default 0).
        weight_decay: L2 penalty (default 0).
        initial_accumulator_value: starting value of s (default 0).
        eps: added to the denominator (default 1e-10).
        maximize: ascend the objective instead of descending it.

    State per parameter, created with the group as PyTorch does: "step" (int), "sum".

    Example:
        >>> opt = Adagrad(model.parameters(), lr=0.05)
    """

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0,
                 initial_accumulator_value=0, eps=1e-10, *, maximize=False):
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, eps=eps,
                        maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, group):
        self._check_real(group, "lr", lambda v: v >= 0, ">= 0")
        self._check_real(group, "lr_decay", lambda v: v >= 0, ">= 0")
        self._check_real(group, "weight_decay", lambda v: v >= 0, ">= 0")
        self._check_real(group, "initial_accumulator_value", lambda v: v >= 0, ">= 0")
        self._check_real(group, "eps", lambda v: v > 0, "> 0")
        self._check_bool(group, "maximize")

    def _init_group_state(self, group):
        for p in group["params"]:
            st = self.state[p]
            if not st:
                st["step"] = 0
                st["sum"] = np.full(p.data.shape, group["initial_accumulator_value"],
                                    p.data.dtype)

    def step(self, closure=None):
        """Update every parameter that has a gradient; returns closure() if one is given."""
        loss = self._call_closure(closure)
        state = self.state
        for group in self.param_groups:
            buckets = {}  # (dtype, step) -> (params, grads, state_sums)
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = state[p]
                if not st:  # e.g. loaded from a state_dict that had no entry for p
                    st["step"] = 0
                    st["sum"] = np.full(p.data.shape, group["initial_accumulator_value"],
                                        p.data.dtype)
                st["step"] += 1
                key = (p.data.dtype, st["step"])
                bucket = buckets.get(key)
                if bucket is None:
                    bucket = buckets[key] = ([], [], [])
                bucket[0].append(p.data)
                bucket[1].append(_grad_array(p))
                bucket[2].append(st["sum"])
            for (_, step), (params, grads, state_sums) in buckets.items():
                _kernels.adagrad_step(
                    params, grads, state_sums, step,
                    lr=group["lr"], lr_decay=group["lr_decay"],
                    weight_decay=group["weight_decay"], eps=group["eps"],
                    maximize=bool(group["maximize"]))
        return loss
