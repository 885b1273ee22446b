"""Adam and AdamW (Adam with decoupled weight decay)."""

import numpy as np

from . import _kernels
from .optimizer import Optimizer, _grad_array, _is_real

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """Adam, with PyTorch's formulas and defaults.

    Per parameter, with g its gradient (negated when maximize) and t its step count:
    weight decay ``g += weight_decay * p`` (or, decoupled, ``p *= 1 - lr * weight_decay``);
    ``m = beta1 * m + (1 - beta1) * g``; ``v = beta2 * v + (1 - beta2) * g * g``;
    ``p -= lr / (1 - beta1**t) * m / (sqrt(v') / sqrt(1 - beta2**t) + eps)`` where v' is v,
    or with amsgrad the running maximum of v.

    Args:
        params: parameters or parameter-group dicts.
        lr: learning rate (default 1e-3).
        betas: (beta1, beta2), decay rates of the two moment averages (default (0.9, 0.999)).
        eps: added to the denominator (default 1e-8).
        weight_decay: weight decay factor (default 0).
        amsgrad: use the running maximum of the second moment (default False).
        maximize: ascend the objective instead of descending it.
        decoupled_weight_decay: decay the weights directly, as AdamW does (default False).

    State per parameter: "step" (int), "exp_avg", "exp_avg_sq", and "max_exp_avg_sq" with
    amsgrad.

    Example:
        >>> opt = Adam(model.parameters(), lr=1e-3)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, maximize=False, decoupled_weight_decay=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _check_group(self, group):
        self._check_real(group, "lr", lambda v: v >= 0, ">= 0")
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"{self._name}: betas must be a pair (beta1, beta2), got {betas!r}")
        for i, beta in enumerate(betas):
            if not _is_real(beta):
                raise TypeError(f"{self._name}: betas[{i}] must be a real number, got "
                                f"{type(beta).__name__}")
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{self._name}: invalid betas[{i}] {beta!r} "
                                 f"(must be in [0, 1))")
        self._check_real(group, "eps", lambda v: v > 0, "> 0")
        self._check_real(group, "weight_decay", lambda v: v >= 0, ">= 0")
        for name in ("amsgrad", "maximize", "decoupled_weight_decay"):
            self._check_bool(group, name)

    def step(self, closure=None):
        """Update every parameter that has a gradient; returns closure() if one is given."""
        loss = self._call_closure(closure)
        state = self.state
        for group in self.param_groups:
            amsgrad = bool(group["amsgrad"])
            # Bias correction uses each parameter's own step count: split calls by it.
            buckets = {}  # (dtype, step) -> (params, grads, exp_avgs, exp_avg_sqs, max_sqs)
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = state[p]
                if not st:
                    st["step"] = 0
                    st["exp_avg"] = np.zeros(p.data.shape, p.data.dtype)
                    st["exp_avg_sq"] = np.zeros(p.data.shape, p.data.dtype)
                if amsgrad and st.get("max_exp_avg_sq") is None:
                    st["max_exp_avg_sq"] = np.zeros(p.data.shape, p.data.dtype)
                st["step"] += 1
                key = (p.data.dtype, st["step"])
                bucket = buckets.get(key)
                if bucket is None:
                    bucket = buckets[key] = ([], [], [], [], [])
                bucket[0].append(p.data)
                bucket[1].append(_grad_array(p))
                bucket[2].append(st["exp_avg"])
                bucket[3].append(st["exp_avg_sq"])
                if amsgrad:
                    bucket[4].append(st["max_exp_avg_sq"])
            beta1, beta2 = group["betas"]
            for (_, step), (params, grads, exp_avgs, exp_avg_sqs, max_sqs) in buckets.items():
                _kernels.adam_step(
                    params, grads, exp_avgs, exp_avg_sqs, step,
                    lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                    weight_decay=group["weight_decay"],
                    decoupled_weight_decay=bool(group["decoupled_weight_decay"]),
                    max_exp_avg_sqs=max_sqs if amsgrad else None,
                    maximize=bool(group["maximize"]))
        return loss


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay (``p *= 1 - lr * weight_decay`` each step).

    Same arguments and state as Adam, except that weight_decay defaults to 0.01 and weight
    decay is always decoupled.

    Example:
        >>> opt = AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, decoupled_weight_decay=True)
