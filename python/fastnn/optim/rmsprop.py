"""RMSprop, optionally centered and with momentum."""

import numpy as np

from . import _kernels
from .optimizer import Optimizer, _grad_array

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    """RMSprop, with PyTorch's formulas and defaults.

    Per parameter, with g its gradient (negated when maximize): ``g += weight_decay * p``;
    ``v = alpha * v + (1 - alpha) * g * g``; centered: ``a = alpha * a + (1 - alpha) * g`` and
    ``d = sqrt(v - a * a) + eps``, else ``d = sqrt(v) + eps``; with momentum
    ``buf = momentum * buf + g / d`` and ``p -= lr * buf``, else ``p -= lr * g / d``.

    Args:
        params: parameters or parameter-group dicts.
        lr: learning rate (default 1e-2).
        alpha: smoothing constant of the squared-gradient average (default 0.99).
        eps: added to the denominator (default 1e-8).
        weight_decay: L2 penalty (default 0).
        momentum: momentum factor (default 0).
        centered: normalise by an estimate of the gradient's variance (default False).
        maximize: ascend the objective instead of descending it.

    State per parameter: "step" (int), "square_avg", "momentum_buffer" (momentum > 0),
    "grad_avg" (centered).

    Example:
        >>> opt = RMSprop(model.parameters(), lr=1e-3, momentum=0.9)
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, *, maximize=False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, group):
        self._check_real(group, "lr", lambda v: v >= 0, ">= 0")
        self._check_real(group, "alpha", lambda v: 0 <= v < 1, "in [0, 1)")
        self._check_real(group, "eps", lambda v: v > 0, "> 0")
        self._check_real(group, "weight_decay", lambda v: v >= 0, ">= 0")
        self._check_real(group, "momentum", lambda v: v >= 0, ">= 0")
        self._check_bool(group, "centered")
        self._check_bool(group, "maximize")

    def step(self, closure=None):
        """Update every parameter that has a gradient; returns closure() if one is given."""
        loss = self._call_closure(closure)
        state = self.state
        for group in self.param_groups:
            use_momentum = group["momentum"] > 0
            centered = bool(group["centered"])
            buckets = {}  # dtype -> (params, grads, square_avgs, momentum_buffers, grad_avgs)
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = state[p]
                if not st:
                    st["step"] = 0
                    st["square_avg"] = np.zeros(p.data.shape, p.data.dtype)
                if use_momentum and st.get("momentum_buffer") is None:
                    st["momentum_buffer"] = np.zeros(p.data.shape, p.data.dtype)
                if centered and st.get("grad_avg") is None:
                    st["grad_avg"] = np.zeros(p.data.shape, p.data.dtype)
                st["step"] += 1
                bucket = buckets.get(p.data.dtype)
                if bucket is None:
                    bucket = buckets[p.data.dtype] = ([], [], [], [], [])
                bucket[0].append(p.data)
                bucket[1].append(_grad_array(p))
                bucket[2].append(st["square_avg"])
                if use_momentum:
                    bucket[3].append(st["momentum_buffer"])
                if centered:
                    bucket[4].append(st["grad_avg"])
            for params, grads, square_avgs, momentum_buffers, grad_avgs in buckets.values():
                _kernels.rmsprop_step(
                    params, grads, square_avgs,
                    lr=group["lr"], alpha=group["alpha"], eps=group["eps"],
                    weight_decay=group["weight_decay"], momentum=group["momentum"],
                    momentum_buffers=momentum_buffers if use_momentum else None,
                    centered=centered, grad_avgs=grad_avgs if centered else None,
                    maximize=bool(group["maximize"]))
        return loss
