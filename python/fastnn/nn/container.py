"""Containers: Sequential, ModuleList, ModuleDict."""

from __future__ import annotations

from collections import OrderedDict

from .. import functional as F
from ..tensor import Tensor
from .conv import Conv1d, Conv2d
from .layers import Linear, _Activation
from .module import Module

# Layers whose kernels can apply a following activation while writing their output.
_FUSABLE = (Linear, Conv1d, Conv2d)


def _fused_activation(module):
    """(kernel name, alpha) of an activation that may run inside the layer before it, or None.

    An activation subclass with a forward of its own is run as written, never replaced by the
    kernel its base class would fuse.
    """
    if isinstance(module, _Activation) and type(module).forward is _Activation.forward:
        return module.fusable
    return None


class Sequential(Module):
    """Modules applied one after another.

    A `Linear`, `Conv1d` or `Conv2d` (without its own activation) directly followed by an
    activation module runs as one fused kernel; the result equals running them separately up
    to float rounding.

    Example:
        >>> model = Sequential(Linear(784, 128), ReLU(), Linear(128, 10))
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for index, module in enumerate(modules):
                self.add_module(str(index), module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        modules = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*modules[index])
        return modules[index]

    def append(self, module) -> "Sequential":
        self.add_module(str(len(self._modules)), module)
        return self

    def forward(self, x):
        modules = list(self._modules.values())
        count = len(modules)
        i = 0
        while i < count:
            module = modules[i]
            kind = type(module)
            if kind is Linear:
                # A run of Linear layers, each with the activation that follows it, runs as one
                # chain: one graph node for the whole run.
                layers = []
                while i < count and type(modules[i]) is Linear:
                    linear = modules[i]
                    activation, alpha = linear.activation, linear.alpha
                    fused = _fused_activation(modules[i + 1]) if i + 1 < count else None
                    i += 1
                    if activation == "identity" and fused is not None:
                        activation, alpha = fused
                        i += 1
                    layers.append((linear, activation, alpha))
                x = _linear_run(x, layers)
            elif (kind in _FUSABLE and module.activation == "identity" and i + 1 < count
                    and (fused := _fused_activation(modules[i + 1])) is not None):
                x = module.forward_fused(x, *fused)
                i += 2
            else:
                x = module(x)
                i += 1
        return x


def _linear_run(x, layers):
    """Linear layers (with their fused activations) applied in order as one chain."""
    first = layers[0][0]
    if not isinstance(x, Tensor):
        x = Tensor(x)
    first.check_input(x.shape)
    for (previous, _, _), (linear, _, _) in zip(layers, layers[1:]):
        if linear.in_features != previous.out_features:
            linear.check_input(x.shape[:-1] + (previous.out_features,))
    return F.linear_chain(x, [(_registered(linear, "weight"), _registered(linear, "bias"),
                               activation, alpha) for linear, activation, alpha in layers])


def _registered(module, name):
    """module.<name>, read from the parameter registry when it is there: Module.__getattr__
    costs about a microsecond a call, which adds up on a training step at batch 1."""
    params = module._parameters
    return params[name] if name in params else getattr(module, name)


class ModuleList(Module):
    """A list of modules whose parameters are registered."""

    def __init__(self, modules=None):
        super().__init__()
        for module in modules or []:
            self.append(module)

    def append(self, module) -> "ModuleList":
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules) -> "ModuleList":
        for module in modules:
            self.append(module)
        return self

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        modules = list(self._modules.values())
        if isinstance(index, slice):
            return ModuleList(modules[index])
        return modules[index]


class ModuleDict(Module):
    """A dict of modules whose parameters are registered."""

    def __init__(self, modules=None):
        super().__init__()
        for name, module in (modules or {}).items():
            self.add_module(name, module)

    def __getitem__(self, name):
        return self._modules[name]

    def __setitem__(self, name, module):
        self.add_module(name, module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, name):
        return name in self._modules

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()
