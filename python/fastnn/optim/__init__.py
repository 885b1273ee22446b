"""Optimizers, learning-rate schedulers and gradient clipping (PyTorch's names and numbers)."""

from . import lr_scheduler
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .clip import clip_grad_norm_, clip_grad_value_
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = [
    "Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad",
    "lr_scheduler", "clip_grad_norm_", "clip_grad_value_",
]
