"""Learning-rate schedulers, giving PyTorch's numbers step for step.

A scheduler rewrites ``group["lr"]`` of its optimizer's parameter groups. Create it after the
optimizer; it applies the rate of epoch 0 at once. Call ``scheduler.step()`` after
``optimizer.step()``, once per epoch or per batch as the schedule intends. Most schedules
update the rate recursively from the current one (as PyTorch does, so other code may also
change ``group["lr"]``); after a milestone inside SequentialLR they restart from a closed form.
"""

import copy
import math
import numbers
import types
from bisect import bisect_right
from collections import Counter

from .optimizer import Optimizer

__all__ = [
    "LRScheduler", "LambdaLR", "StepLR", "MultiStepLR", "ExponentialLR", "LinearLR",
    "CosineAnnealingLR", "OneCycleLR", "ReduceLROnPlateau", "SequentialLR",
]


def _name(obj):
    return f"fastnn.optim.lr_scheduler.{type(obj).__name__}"


def _check_int(obj, arg, value, minimum):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{_name(obj)}: {arg} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{_name(obj)}: {arg} must be >= {minimum}, got {value}")


def _check_real(obj, arg, value, ok=lambda v: True, rule=""):
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{_name(obj)}: {arg} must be a real number, got "
                        f"{type(value).__name__}")
    if math.isnan(value) or not ok(value):
        raise ValueError(f"{_name(obj)}: {arg} must be {rule}, got {value!r}")


def _check_optimizer(obj, optimizer):
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{_name(obj)}: expected a fastnn.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")


def _per_group(obj, arg, optimizer, value):
    """A per-group list from a scalar or a list with one value per group."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(optimizer.param_groups):
            raise ValueError(f"{_name(obj)}: expected {len(optimizer.param_groups)} values "
                             f"for {arg} (one per parameter group), got {len(value)}")
        return list(value)
    return [value] * len(optimizer.param_groups)


class LRScheduler:
    """Base class of the schedulers.

    Args:
        optimizer: the fastnn.optim.Optimizer whose learning rates are scheduled.
        last_epoch: index of the last epoch done; -1 (default) starts a new schedule. Other
            values resume one and need ``group["initial_lr"]`` in every group.

    Attributes: ``base_lrs`` (each group's initial_lr), ``last_epoch``.
    Subclasses implement ``get_lr()``: the rates for epoch ``last_epoch``.
    """

    def __init__(self, optimizer, last_epoch=-1):
        _check_optimizer(self, optimizer)
        _check_int(self, "last_epoch", last_epoch, -1)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise ValueError(
                        f"{_name(self)}: resuming with last_epoch={last_epoch} needs "
                        f"'initial_lr' in param_groups[{i}]; load the optimizer's state_dict "
                        f"first"
                    )
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self):
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self):
        """The learning rates of epoch ``last_epoch``, one per parameter group."""
        raise NotImplementedError(f"{_name(self)} does not implement get_lr()")

    def get_last_lr(self):
        """The learning rates most recently set by this scheduler, one per group."""
        return list(self._last_lr)

    def step(self):
        """Advance one epoch and set the new learning rates."""
        self._step_count += 1
        self._update_lr()

    def _update_lr(self, epoch=None):
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = epoch
            closed_form = getattr(self, "_closed_form_lr", None)
            values = closed_form() if closed_form is not None else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _current_lrs(self):
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self):
        """Everything but the optimizer, as a dict (copies)."""
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        """Restore what state_dict() returned."""
        self.__dict__.update(copy.deepcopy(state_dict))

    def __repr__(self):
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, last_lr={self._last_lr})"


class LambdaLR(LRScheduler):
    """lr = base_lr * lr_lambda(epoch).

    Args:
        optimizer: the optimizer.
        lr_lambda: a function of the epoch, or a list of them (one per parameter group).
        last_epoch: see LRScheduler.

    state_dict saves the attributes of callable objects, not plain functions or lambdas.

    Example:
        >>> sched = LambdaLR(opt, lambda epoch: 0.95 ** epoch)
    """

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        _check_optimizer(self, optimizer)
        lambdas = _per_group(self, "lr_lambda", optimizer, lr_lambda)
        for i, fn in enumerate(lambdas):
            if not callable(fn):
                raise TypeError(f"{_name(self)}: lr_lambda {i} must be callable, got "
                                f"{type(fn).__name__}")
        self.lr_lambdas = lambdas
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base_lr * fn(self.last_epoch) for fn, base_lr in zip(self.lr_lambdas,
                                                                     self.base_lrs)]

    def state_dict(self):
        state = {k: copy.deepcopy(v) for k, v in self.__dict__.items()
                 if k not in ("optimizer", "lr_lambdas")}
        state["lr_lambdas"] = [None if isinstance(fn, types.FunctionType)
                               else copy.deepcopy(fn.__dict__) for fn in self.lr_lambdas]
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        saved_lambdas = state.pop("lr_lambdas")
        self.__dict__.update(copy.deepcopy(state))
        for fn, saved in zip(self.lr_lambdas, saved_lambdas):
            if saved is not None:
                fn.__dict__.update(copy.deepcopy(saved))


class StepLR(LRScheduler):
    """Multiply the learning rate by gamma every step_size epochs.

    Example:
        >>> sched = StepLR(opt, step_size=30, gamma=0.1)  # lr 0.1, then 0.01 at epoch 30
    """

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        _check_int(self, "step_size", step_size, 1)
        _check_real(self, "gamma", gamma)
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]

    def _closed_form_lr(self):
        return [base_lr * self.gamma ** (self.last_epoch // self.step_size)
                for base_lr in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiply the learning rate by gamma at each milestone epoch (repeats count twice).

    Example:
        >>> sched = MultiStepLR(opt, milestones=[30, 80], gamma=0.1)
    """

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        try:
            milestones = list(milestones)
        except TypeError:
            raise TypeError(f"{_name(self)}: milestones must be an iterable of ints, got "
                            f"{type(milestones).__name__}") from None
        for m in milestones:
            _check_int(self, "every milestone", m, 0)
        _check_real(self, "gamma", gamma)
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch not in self.milestones:
            return self._current_lrs()
        factor = self.gamma ** self.milestones[self.last_epoch]
        return [lr * factor for lr in self._current_lrs()]

    def _closed_form_lr(self):
        milestones = sorted(self.milestones.elements())
        return [base_lr * self.gamma ** bisect_right(milestones, self.last_epoch)
                for base_lr in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Multiply the learning rate by gamma every epoch.

    Example:
        >>> sched = ExponentialLR(opt, gamma=0.95)
    """

    def __init__(self, optimizer, gamma, last_epoch=-1):
        _check_real(self, "gamma", gamma)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]

    def _closed_form_lr(self):
        return [base_lr * self.gamma ** self.last_epoch for base_lr in self.base_lrs]


class LinearLR(LRScheduler):
    """Scale the learning rate linearly from start_factor to end_factor over total_iters epochs.

    The usual warm-up: ``LinearLR(opt, start_factor=0.1, total_iters=5)`` takes the rate from
    base_lr / 10 to base_lr over 5 epochs, then leaves it.

    Args:
        start_factor: factor of epoch 0, in (0, 1] (default 1/3).
        end_factor: factor from epoch total_iters on, in [0, 1] (default 1).
        total_iters: epochs the change takes (default 5).
    """

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5,
                 last_epoch=-1):
        _check_real(self, "start_factor", start_factor, lambda v: 0 < v <= 1, "in (0, 1]")
        _check_real(self, "end_factor", end_factor, lambda v: 0 <= v <= 1, "in [0, 1]")
        _check_int(self, "total_iters", total_iters, 1)
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0:
            return [lr * self.start_factor for lr in self._current_lrs()]
        if self._is_initial or self.last_epoch > self.total_iters:
            return self._current_lrs()
        change = self.end_factor - self.start_factor
        ratio = 1.0 + change / (self.total_iters * self.start_factor
                                + (self.last_epoch - 1) * change)
        return [lr * ratio for lr in self._current_lrs()]

    def _closed_form_lr(self):
        done = min(self.total_iters, self.last_epoch) / self.total_iters
        factor = self.start_factor + (self.end_factor - self.start_factor) * done
        return [base_lr * factor for base_lr in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Anneal the learning rate from base_lr to eta_min along half a cosine over T_max epochs.

    lr(t) = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2; past T_max the
    cosine continues (the rate rises again), as in PyTorch.

    Example:
        >>> sched = CosineAnnealingLR(opt, T_max=100, eta_min=1e-5)
    """

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        _check_int(self, "T_max", T_max, 1)
        _check_real(self, "eta_min", eta_min, lambda v: v >= 0, ">= 0")
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t, T, eta_min = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._current_lrs()
        if self._step_count == 1 and t > 0:  # resumed with last_epoch: start from closed form
            return self._closed_form_lr()
        if (t - 1 - T) % (2 * T) == 0:  # the trough, where the recursive ratio would be 0/0
            return [lr + (base_lr - eta_min) * (1 - math.cos(math.pi / T)) / 2
                    for lr, base_lr in zip(self._current_lrs(), self.base_lrs)]
        ratio = (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
        return [ratio * (lr - eta_min) + eta_min for lr in self._current_lrs()]

    def _closed_form_lr(self):
        cos_term = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
        return [self.eta_min + (base_lr - self.eta_min) * cos_term for base_lr in self.base_lrs]


class OneCycleLR(LRScheduler):
    """The one-cycle policy: warm up to max_lr, then anneal to a tiny rate; step per batch.

    The rate starts at max_lr / div_factor, reaches max_lr after pct_start of total_steps and
    ends at max_lr / (div_factor * final_div_factor). With three_phase the rate comes back to
    the start value before the final annealing. With cycle_momentum, SGD's momentum (or Adam's
    beta1) moves the opposite way, between max_momentum and base_momentum.

    Args:
        optimizer: the optimizer (with momentum or betas when cycle_momentum).
        max_lr: peak rate, a number or one per group.
        total_steps: number of steps, or give epochs and steps_per_epoch.
        pct_start: fraction of the steps spent rising (default 0.3).
        anneal_strategy: "cos" (default) or "linear".
        cycle_momentum, base_momentum (0.85), max_momentum (0.95): see above.
        div_factor (25), final_div_factor (1e4), three_phase (False): see above.

    Stepping more than total_steps times raises ValueError.

    Example:
        >>> sched = OneCycleLR(opt, max_lr=0.1, epochs=10, steps_per_epoch=len(loader))
    """

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None,
                 pct_start=0.3, anneal_strategy="cos", cycle_momentum=True,
                 base_momentum=0.85, max_momentum=0.95, div_factor=25.0,
                 final_div_factor=1e4, three_phase=False, last_epoch=-1):
        _check_optimizer(self, optimizer)
        if total_steps is not None:
            _check_int(self, "total_steps", total_steps, 1)
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            _check_int(self, "epochs", epochs, 1)
            _check_int(self, "steps_per_epoch", steps_per_epoch, 1)
            self.total_steps = epochs * steps_per_epoch
        else:
            raise ValueError(f"{_name(self)}: give total_steps, or epochs and steps_per_epoch")
        _check_real(self, "pct_start", pct_start, lambda v: 0 <= v <= 1, "in [0, 1]")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"{_name(self)}: anneal_strategy must be 'cos' or 'linear', got "
                             f"{anneal_strategy!r}")
        _check_real(self, "div_factor", div_factor, lambda v: v > 0, "> 0")
        _check_real(self, "final_div_factor", final_div_factor, lambda v: v > 0, "> 0")
        self.anneal_strategy = anneal_strategy
        self.three_phase = bool(three_phase)

        rise_end = float(pct_start * self.total_steps) - 1
        last = self.total_steps - 1
        # Each phase: (end step, start lr key, end lr key, start momentum key, end momentum key)
        if self.three_phase:
            self._phases = [
                (rise_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (float(2 * pct_start * self.total_steps) - 2, "max_lr", "initial_lr",
                 "base_momentum", "max_momentum"),
                (last, "initial_lr", "min_lr", "max_momentum", "max_momentum"),
            ]
        else:
            self._phases = [
                (rise_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (last, "max_lr", "min_lr", "base_momentum", "max_momentum"),
            ]

        max_lrs = _per_group(self, "max_lr", optimizer, max_lr)
        if last_epoch == -1:
            for group, peak in zip(optimizer.param_groups, max_lrs):
                group["initial_lr"] = peak / div_factor
                group["max_lr"] = peak
                group["min_lr"] = group["initial_lr"] / final_div_factor

        self.cycle_momentum = bool(cycle_momentum)
        if self.cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError(f"{_name(self)}: cycle_momentum needs an optimizer with "
                                 f"momentum or betas, got {type(optimizer).__name__}")
            self.use_beta1 = "betas" in optimizer.defaults
            max_momenta = _per_group(self, "max_momentum", optimizer, max_momentum)
            base_momenta = _per_group(self, "base_momentum", optimizer, base_momentum)
            if last_epoch == -1:
                for group, top, bottom in zip(optimizer.param_groups, max_momenta,
                                              base_momenta):
                    self._set_momentum(group, top)
                    group["max_momentum"] = top
                    group["base_momentum"] = bottom
        super().__init__(optimizer, last_epoch)

    def _set_momentum(self, group, value):
        if self.use_beta1:
            group["betas"] = (value, *group["betas"][1:])
        else:
            group["momentum"] = value

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self):
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"{_name(self)}: stepped {step} times, more than total_steps "
                             f"{self.total_steps}")
        lrs = []
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, (end_step, lr0, lr1, m0, m1) in enumerate(self._phases):
                if step <= end_step or i == len(self._phases) - 1:
                    pct = (step - start_step) / (end_step - start_step)
                    lrs.append(self._anneal(group[lr0], group[lr1], pct))
                    if self.cycle_momentum:
                        self._set_momentum(group, self._anneal(group[m0], group[m1], pct))
                    break
                start_step = end_step
        return lrs


class ReduceLROnPlateau(LRScheduler):
    """Multiply the learning rate by factor when a metric has stopped improving.

    Call ``step(metric)`` after each validation. After more than patience epochs without
    improvement the rate of every group drops to max(lr * factor, min_lr) (changes smaller
    than eps are skipped), then cooldown epochs pass before bad epochs count again.

    Args:
        optimizer: the optimizer.
        mode: "min" (the metric should fall, default) or "max".
        factor: multiplier in [0, 1) (default 0.1).
        patience: bad epochs tolerated (default 10).
        threshold: least change that counts as improvement (default 1e-4).
        threshold_mode: "rel" (relative to the best, default) or "abs".
        cooldown: epochs to wait after a reduction (default 0).
        min_lr: lower bound, a number or one per group (default 0).
        eps: smallest change of lr applied (default 1e-8).

    Example:
        >>> sched = ReduceLROnPlateau(opt, patience=3)
        >>> sched.step(val_loss)
    """

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0, eps=1e-8):
        _check_optimizer(self, optimizer)
        _check_real(self, "factor", factor, lambda v: 0 <= v < 1, "in [0, 1)")
        _check_int(self, "patience", patience, 0)
        _check_real(self, "threshold", threshold, lambda v: v >= 0, ">= 0")
        _check_int(self, "cooldown", cooldown, 0)
        _check_real(self, "eps", eps, lambda v: v >= 0, ">= 0")
        self._check_modes(mode, threshold_mode)
        self.optimizer = optimizer
        self.factor = factor
        if isinstance(min_lr, (list, tuple)):
            self.default_min_lr = None
            self.min_lrs = _per_group(self, "min_lr", optimizer, min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * len(optimizer.param_groups)
        for value in self.min_lrs:
            _check_real(self, "min_lr", value, lambda v: v >= 0, ">= 0")
        self.mode = mode
        self.patience = patience
        self.threshold = threshold
        self.threshold_mode = threshold_mode
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = self._current_lrs()
        self.best = math.inf if mode == "min" else -math.inf
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def _check_modes(self, mode, threshold_mode):
        if mode not in ("min", "max"):
            raise ValueError(f"{_name(self)}: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"{_name(self)}: threshold_mode must be 'rel' or 'abs', got "
                             f"{threshold_mode!r}")

    def _is_better(self, value):
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return value < self.best * (1.0 - self.threshold)
            return value < self.best - self.threshold
        if self.threshold_mode == "rel":
            return value > self.best * (1.0 + self.threshold)
        return value > self.best + self.threshold

    def step(self, metrics):
        """Record one epoch's metric and reduce the rates if it has stopped improving."""
        current = float(metrics)
        self.last_epoch += 1
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs during cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = self._current_lrs()

    def _reduce_lr(self):
        groups = self.optimizer.param_groups
        if len(self.min_lrs) != len(groups):
            if self.default_min_lr is None:
                raise ValueError(f"{_name(self)}: the optimizer now has {len(groups)} groups "
                                 f"but min_lr gave {len(self.min_lrs)} values; set min_lrs")
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, min_lr in zip(groups, self.min_lrs):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, min_lr)
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._check_modes(self.mode, self.threshold_mode)


class SequentialLR(LRScheduler):
    """Run schedulers one after another, switching at the milestone epochs.

    Args:
        optimizer: the optimizer all the schedulers drive.
        schedulers: the schedulers, in order (not ReduceLROnPlateau).
        milestones: epochs at which the next scheduler takes over (one fewer than schedulers).
            The scheduler taking over restarts its schedule from its epoch 0.

    Example (5 epochs of warm-up, then cosine annealing):
        >>> warmup = LinearLR(opt, start_factor=0.1, total_iters=5)
        >>> cosine = CosineAnnealingLR(opt, T_max=95)
        >>> sched = SequentialLR(opt, [warmup, cosine], milestones=[5])
    """

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        _check_optimizer(self, optimizer)
        schedulers = list(schedulers)
        milestones = list(milestones)
        if not schedulers:
            raise ValueError(f"{_name(self)}: expects at least one scheduler")
        for i, scheduler in enumerate(schedulers):
            if isinstance(scheduler, ReduceLROnPlateau):
                raise ValueError(f"{_name(self)}: scheduler {i} is a ReduceLROnPlateau, whose "
                                 f"step needs a metric; it cannot be sequenced")
            if not isinstance(scheduler, LRScheduler):
                raise TypeError(f"{_name(self)}: scheduler {i} is not an LRScheduler, got "
                                f"{type(scheduler).__name__}")
            if scheduler.optimizer is not optimizer:
                raise ValueError(f"{_name(self)}: scheduler {i} ({type(scheduler).__name__}) "
                                 f"drives a different optimizer")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"{_name(self)}: expects one milestone fewer than schedulers, got "
                             f"{len(schedulers)} schedulers and {len(milestones)} milestones")
        for m in milestones:
            _check_int(self, "every milestone", m, 1)
        if milestones != sorted(milestones):
            raise ValueError(f"{_name(self)}: milestones must be increasing, got {milestones}")
        _check_int(self, "last_epoch", last_epoch, -1)
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        # Each scheduler applied its epoch 0 when it was made: undo that, then start the first.
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        self._undo_initial_steps(self)
        first = self._schedulers[bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    @staticmethod
    def _undo_initial_steps(scheduler):
        if isinstance(scheduler, SequentialLR) and hasattr(scheduler, "_schedulers"):
            for child in scheduler._schedulers:
                SequentialLR._undo_initial_steps(child)
        elif hasattr(scheduler, "last_epoch"):
            scheduler.last_epoch -= 1

    def step(self):
        """Advance one epoch with the scheduler in charge of it."""
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self):
        state = {k: copy.deepcopy(v) for k, v in self.__dict__.items()
                 if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        saved = state.pop("_schedulers")
        self.__dict__.update(copy.deepcopy(state))
        for scheduler, s in zip(self._schedulers, saved):
            scheduler.load_state_dict(s)
