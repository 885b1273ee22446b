"""The one door from fastnn.optim to the compiled kernels (fastnn._core).

Each function updates a list of same-dtype arrays in place with one multi-tensor call; list
element i of every argument belongs to parameter i. Argument checks happen in the kernels.
"""

from .. import _ops as _core


# The keyword arguments of these wrappers go on to the kernels by position: pybind11 matches
# keywords by name, which cost about 2.5 us a call on a 6-parameter model (a training step at
# batch 1 takes about 200 us in all).
def sgd_step(params, grads, momentum_buffers, *, lr, momentum, dampening, weight_decay, nesterov,
             maximize, first_step):
    _core.sgd_step(params, grads, momentum_buffers, lr, momentum, dampening, weight_decay,
                   nesterov, maximize, first_step)


def adam_step(params, grads, exp_avgs, exp_avg_sqs, step, *, lr, beta1, beta2, eps, weight_decay,
              decoupled_weight_decay, max_exp_avg_sqs, maximize):
    """step is the 1-based count after this update."""
    _core.adam_step(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps,
                    weight_decay, decoupled_weight_decay, max_exp_avg_sqs, maximize)


def rmsprop_step(params, grads, square_avgs, *, lr, alpha, eps, weight_decay, momentum,
                 momentum_buffers, centered, grad_avgs, maximize):
    _core.rmsprop_step(params, grads, square_avgs, lr, alpha, eps, weight_decay, momentum,
                       momentum_buffers, centered, grad_avgs, maximize)


def adagrad_step(params, grads, state_sums, step, *, lr, lr_decay, weight_decay, eps, maximize):
    """step as for adam_step."""
    _core.adagrad_step(params, grads, state_sums, step, lr, lr_decay, weight_decay, eps, maximize)


def sum_of_squares(arrays):
    """Sum of the squares of every element of every array (deterministic order)."""
    return _core.sum_of_squares(arrays)


def scale_(arrays, factor):
    """Multiply every array in place by factor."""
    _core.scale_(arrays, factor)


def clamp_(arrays, lo, hi):
    """Clamp every array in place to [lo, hi]."""
    _core.clamp_(arrays, lo, hi)
