"""nn.Module: the base class of layers and networks."""

from __future__ import annotations

from collections import OrderedDict, namedtuple

import numpy as np

from ..autograd import release_grad
from ..tensor import Tensor, _as_array
from .parameter import Parameter

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module:
    """Base class for layers and networks.

    Subclasses set parameters (`Parameter`), buffers (`register_buffer`) and child modules as
    attributes in `__init__` and compute their output in `forward`. Calling a module calls
    `forward`; numpy arrays passed in are wrapped as tensors.

    Example:
        >>> class TwoLayer(Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.hidden = Linear(4, 8)
        ...         self.out = Linear(8, 2)
        ...     def forward(self, x):
        ...         return self.out(self.hidden(x).relu())
    """

    def __init__(self):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())

    # --- attribute registration ------------------------------------------------------------------
    def _require_init(self, name):
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() has run; call "
                f"super().__init__() first in {type(self).__name__}.__init__"
            )

    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            self._require_init(name)
            self._forget(name)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._require_init(name)
            self._forget(name)
            self._modules[name] = value
        elif "_buffers" in self.__dict__ and name in self._buffers:
            self._buffers[name] = None if value is None else (
                value if isinstance(value, Tensor) else Tensor(value))
        elif "_parameters" in self.__dict__ and name in self._parameters and value is None:
            self._parameters[name] = None
        else:
            if "_parameters" in self.__dict__:
                self._forget(name)
            object.__setattr__(self, name, value)

    def _forget(self, name):
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        self.__dict__.pop(name, None)

    def __getattr__(self, name):
        # Only called when normal lookup fails: look in the registries.
        for table in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(table)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for table in (self._parameters, self._buffers, self._modules):
            if name in table:
                del table[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param) -> None:
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: {name!r} must be a Parameter or None, got "
                            f"{type(param).__name__}")
        self._require_init(name)
        self._forget(name)
        self._parameters[name] = param

    def register_buffer(self, name: str, value, persistent: bool = True) -> None:
        """Register state that is saved with the module but not trained (e.g. running means)."""
        self._require_init(name)
        self._forget(name)
        self._buffers[name] = None if value is None else (
            value if isinstance(value, Tensor) else Tensor(_as_array(value)))
        if not persistent:
            self._non_persistent.add(name)

    def add_module(self, name: str, module) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {name!r} must be a Module, got {type(module).__name__}")
        self._require_init(name)
        self._forget(name)
        self._modules[name] = module

    # --- traversal -------------------------------------------------------------------------------
    def named_modules(self, prefix: str = "", memo=None):
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        for name, child in self._modules.items():
            if child is not None:
                yield name, child

    def children(self):
        for _, child in self.named_children():
            yield child

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, param in module._parameters.items():
                if param is None or id(param) in seen:
                    continue
                seen.add(id(param))
                yield (f"{module_prefix}.{name}" if module_prefix else name), param

    def parameters(self, recurse: bool = True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "", recurse: bool = True):
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    yield (f"{module_prefix}.{name}" if module_prefix else name), buffer

    def buffers(self, recurse: bool = True):
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters()
                   if p.requires_grad or not trainable_only)

    # --- modes and gradients -------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.parameters():
            if param.grad is None:
                continue
            if set_to_none:
                release_grad(param)
            else:
                param.grad.data[...] = 0

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def apply(self, fn) -> "Module":
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def to(self, dtype) -> "Module":
        """Convert every float parameter and buffer to `dtype` (float32 or float64)."""
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"Module.to: dtype must be float32 or float64, got {dtype}")
        for module in self.modules():
            for table in (module._parameters, module._buffers):
                for tensor in table.values():
                    if tensor is not None and tensor.dtype.kind == "f" and tensor.dtype != dtype:
                        tensor.data = np.ascontiguousarray(tensor.data, dtype=dtype)
                        tensor.grad = None
        return self

    def float(self) -> "Module":
        return self.to(np.float32)

    def double(self) -> "Module":
        return self.to(np.float64)

    # --- state -----------------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Parameters and persistent buffers by dotted name, as numpy arrays.

        The arrays are the module's own (not copies), as in PyTorch: copy them to keep a
        snapshot that later training must not change.
        """
        state = OrderedDict()
        for module_prefix, module in self.named_modules():
            for name, param in module._parameters.items():
                if param is not None:
                    state[f"{module_prefix}.{name}" if module_prefix else name] = param.data
            for name, buffer in module._buffers.items():
                if buffer is not None and name not in module._non_persistent:
                    state[f"{module_prefix}.{name}" if module_prefix else name] = buffer.data
        return state

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy arrays from `state_dict` into this module's parameters and buffers.

        With strict=True, any missing or unexpected name or shape mismatch raises a ValueError
        listing every difference, and nothing is changed. Shape mismatches always raise.
        """
        from ..serialization import check_state_dict

        own = self.state_dict()
        loaded = {name: _as_array(value) for name, value in state_dict.items()}
        try:
            result = check_state_dict(own, loaded, strict=strict)
        except ValueError as error:
            raise ValueError(f"load_state_dict for {type(self).__name__}: {error}") from None
        missing, unexpected = result.missing_keys, result.unexpected_keys
        for name, target in own.items():
            if name in loaded:
                np.copyto(target, loaded[name], casting="same_kind")
        return IncompatibleKeys(missing, unexpected)

    # --- calling ---------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def __call__(self, *args, **kwargs):
        if len(args) == 1:  # the common case, without building a new tuple
            (x,) = args
            return self.forward(Tensor(x) if isinstance(x, np.ndarray) else x, **kwargs)
        args = tuple(Tensor(a) if isinstance(a, np.ndarray) else a for a in args)
        return self.forward(*args, **kwargs)

    # --- printing --------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"({name}): {child_repr}")
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        body = "\n  ".join(([extra] if extra else []) + lines)
        return f"{type(self).__name__}(\n  {body}\n)"
