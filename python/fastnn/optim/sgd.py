"""Stochastic gradient descent with optional momentum, Nesterov momentum and weight decay."""

import numpy as np

from . import _kernels
from .optimizer import Optimizer, _grad_array

__all__ = ["SGD"]


class SGD(Optimizer):
    """Stochastic gradient descent, with PyTorch's formulas and defaults.

    Per parameter, with g its gradient (negated when maximize):
    ``g += weight_decay * p``; with momentum, ``buf = momentum * buf + (1 - dampening) * g``
    (``buf = g`` on its first step) and ``g = g + momentum * buf`` (nesterov) or ``g = buf``;
    then ``p -= lr * g``.

    Args:
        params: parameters or parameter-group dicts.
        lr: learning rate (default 1e-3).
        momentum: momentum factor (default 0).
        dampening: dampening of the momentum (default 0).
        weight_decay: L2 penalty (default 0).
        nesterov: use Nesterov momentum (needs momentum > 0 and dampening 0).
        maximize: ascend the objective instead of descending it.

    State per parameter: "momentum_buffer" (only when momentum != 0).

    Example:
        >>> opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> opt.zero_grad(); loss.backward(); opt.step()
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, group):
        self._check_real(group, "lr", lambda v: v >= 0, ">= 0")
        self._check_real(group, "momentum", lambda v: v >= 0, ">= 0")
        self._check_real(group, "dampening", lambda v: True, "finite")
        self._check_real(group, "weight_decay", lambda v: v >= 0, ">= 0")
        self._check_bool(group, "nesterov")
        self._check_bool(group, "maximize")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"{self._name}: nesterov momentum needs momentum > 0 and "
                             f"dampening 0, got momentum {group['momentum']!r} and dampening "
                             f"{group['dampening']!r}")

    def step(self, closure=None):
        """Update every parameter that has a gradient; returns closure() if one is given."""
        loss = self._call_closure(closure)
        state = self.state
        for group in self.param_groups:
            use_momentum = group["momentum"] != 0
            # Parameters whose buffer is new take the first-step rule: split them off.
            buckets = {}  # (dtype, first_step) -> (params, grads, buffers)
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                data = p.data
                first = False
                buf = None
                if use_momentum:
                    st = state.get(p)
                    buf = st.get("momentum_buffer") if st is not None else None
                    if buf is None:
                        buf = state[p]["momentum_buffer"] = np.zeros(data.shape, data.dtype)
                        first = True
                key = (data.dtype, first)
                bucket = buckets.get(key)
                if bucket is None:
                    bucket = buckets[key] = ([], [], [])
                bucket[0].append(data)
                bucket[1].append(_grad_array(p))
                bucket[2].append(buf)
            for (_, first), (params, grads, bufs) in buckets.items():
                _kernels.sgd_step(
                    params, grads, bufs if use_momentum else None,
                    lr=group["lr"], momentum=group["momentum"], dampening=group["dampening"],
                    weight_decay=group["weight_decay"], nesterov=bool(group["nesterov"]),
                    maximize=bool(group["maximize"]), first_step=first)
        return loss
