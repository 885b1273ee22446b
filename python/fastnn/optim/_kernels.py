"""The one door from fastnn.optim to the compiled kernels (fastnn._core).

Each function updates a list of same-dtype arrays in place with one multi-tensor call; list
element i of every argument belongs to parameter i. Argument checks happen in the kernels.
"""

from .. import _ops as _core


def sgd_step(params, grads, momentum_buffers, **options):
    """options: lr, momentum, dampening, weight_decay, nesterov, maximize, first_step."""
    _core.sgd_step(params, grads, momentum_buffers, **options)


def adam_step(params, grads, exp_avgs, exp_avg_sqs, step, **options):
    """options: lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay,
    max_exp_avg_sqs, maximize. step is the 1-based count after this update."""
    _core.adam_step(params, grads, exp_avgs, exp_avg_sqs, step, **options)


def rmsprop_step(params, grads, square_avgs, **options):
    """options: lr, alpha, eps, weight_decay, momentum, momentum_buffers, centered,
    grad_avgs, maximize."""
    _core.rmsprop_step(params, grads, square_avgs, **options)


def adagrad_step(params, grads, state_sums, step, **options):
    """options: lr, lr_decay, weight_decay, eps, maximize. step as for adam_step."""
    _core.adagrad_step(params, grads, state_sums, step, **options)


def sum_of_squares(arrays):
    """Sum of the squares of every element of every array (deterministic order)."""
    return _core.sum_of_squares(arrays)


def scale_(arrays, factor):
    """Multiply every array in place by factor."""
    _core.scale_(arrays, factor)


def clamp_(arrays, lo, hi):
    """Clamp every array in place to [lo, hi]."""
    _core.clamp_(arrays, lo, hi)
