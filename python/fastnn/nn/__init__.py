"""fastnn.nn: modules, layers, losses and initialisers."""

from . import init
from .container import ModuleDict, ModuleList, Sequential
from .layers import (ELU, GELU, Dropout, Flatten, Identity, LeakyReLU, Linear, LogSoftmax, ReLU,
                     SiLU, Sigmoid, Softmax, Softplus, Tanh)
from .loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss, MSELoss,
                   NLLLoss, SmoothL1Loss)
from .module import Module
from .parameter import Parameter

__all__ = [
    "Module", "Parameter", "Sequential", "ModuleList", "ModuleDict", "Linear", "ReLU",
    "LeakyReLU", "ELU", "Sigmoid", "Tanh", "GELU", "SiLU", "Softplus", "Softmax", "LogSoftmax",
    "Dropout", "Flatten", "Identity", "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss",
    "HuberLoss", "SmoothL1Loss", "BCEWithLogitsLoss", "BCELoss", "init",
]
