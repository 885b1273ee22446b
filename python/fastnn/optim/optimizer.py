"""The Optimizer base class: parameter groups, per-parameter state, state_dict.

A parameter is any object with ``.data`` (a C-contiguous float32/float64 numpy array that the
optimizer updates in place, never rebinds), ``.grad`` (None, or an object whose ``.data`` is an
array of the parameter's shape and dtype) and ``.requires_grad``. Subclasses gather each group's
parameters that have gradients and update them with one multi-tensor kernel call per dtype.
"""

import copy
import math
import numbers
from collections.abc import Iterable, MutableMapping

import numpy as np

from ..autograd import enable_grad, release_grad

__all__ = ["Optimizer"]


class _ParamState(MutableMapping):
    """Per-parameter state dicts keyed by parameter identity.

    Keys are the parameter objects themselves, compared by identity, so parameters need not be
    hashable. Like PyTorch's ``optimizer.state``, reading a missing parameter gives (and stores)
    an empty dict.
    """

    def __init__(self):
        self._items = {}  # id(param) -> (param, state dict); holding param keeps its id valid

    def __getitem__(self, param):
        item = self._items.get(id(param))
        if item is None:
            item = self._items[id(param)] = (param, {})
        return item[1]

    def get(self, param, default=None):
        # Mapping.get would go through __getitem__, which stores an empty dict for a new param.
        item = self._items.get(id(param))
        return default if item is None else item[1]

    def __setitem__(self, param, value):
        self._items[id(param)] = (param, value)

    def __delitem__(self, param):
        del self._items[id(param)]

    def __contains__(self, param):
        return id(param) in self._items

    def __iter__(self):
        return (param for param, _ in list(self._items.values()))

    def __len__(self):
        return len(self._items)

    def __repr__(self):
        return f"<optimizer state for {len(self._items)} parameters>"

    # Ids are not stable across pickling; store the pairs and rebuild the index on load.
    def __getstate__(self):
        return list(self._items.values())

    def __setstate__(self, pairs):
        self._items = {id(param): (param, state) for param, state in pairs}


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class Optimizer:
    """Base class of fastnn's optimizers.

    Args:
        params: an iterable of parameters, or of dicts defining parameter groups. A group dict
            holds ``"params"`` (a parameter or an ordered iterable of them) and any options that
            override ``defaults`` for that group.
        defaults: option name -> default value, used for options a group does not set.

    Subclasses implement ``step`` and may override ``_check_group`` (validate a group's
    options, raising ValueError/TypeError) and ``_init_group_state`` (eager state).
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = _ParamState()
        self.param_groups = []
        if _looks_like_param(params) or isinstance(params, dict):
            raise TypeError(
                f"{self._name}: params must be an iterable of parameters or of dicts, "
                f"got a single {type(params).__name__}"
            )
        if not isinstance(params, Iterable):
            raise TypeError(
                f"{self._name}: params must be an iterable of parameters or of dicts, "
                f"got {type(params).__name__}"
            )
        if isinstance(params, (set, frozenset)):
            raise TypeError(f"{self._name}: params must be an ordered collection, not a set "
                            f"(a set's order changes between runs)")
        groups = list(params)
        if not groups:
            raise ValueError(f"{self._name}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    @property
    def _name(self):
        return f"fastnn.optim.{type(self).__name__}"

    # --- parameter groups ---------------------------------------------------------------------

    def add_param_group(self, param_group):
        """Add a parameter group (a dict with "params" and optional per-group options)."""
        if not isinstance(param_group, dict):
            raise TypeError(
                f"{self._name}: a parameter group must be a dict, got "
                f"{type(param_group).__name__} (do not mix parameters and dicts in params)"
            )
        if "params" not in param_group:
            raise ValueError(f"{self._name}: a parameter group must have a 'params' entry")
        group = dict(param_group)
        params = group["params"]
        if _looks_like_param(params):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(f"{self._name}: a group's params must be an ordered collection, "
                            f"not a set (a set's order changes between runs)")
        elif isinstance(params, Iterable) and not isinstance(params, (dict, str)):
            params = list(params)
        else:
            raise TypeError(f"{self._name}: a group's params must be a parameter or an "
                            f"iterable of parameters, got {type(params).__name__}")
        index = len(self.param_groups)
        seen = set()
        for i, p in enumerate(params):
            _check_param(self._name, p, f"parameter {i} of group {index}")
            if id(p) in seen:
                raise ValueError(f"{self._name}: parameter {i} of group {index} appears more "
                                 f"than once in the group")
            seen.add(id(p))
        for other in self.param_groups:
            if any(id(p) in seen for p in other["params"]):
                raise ValueError(f"{self._name}: some parameters of group {index} appear in "
                                 f"more than one parameter group")
        group["params"] = params
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        self._check_group(group)
        self.param_groups.append(group)
        self._init_group_state(group)

    def _check_group(self, group):
        """Validate a group's options; subclasses raise ValueError/TypeError naming the option."""

    def _init_group_state(self, group):
        """Create state eagerly for a new group (most optimizers create it on first step)."""

    # --- stepping -----------------------------------------------------------------------------

    def zero_grad(self, set_to_none=True):
        """Reset the gradients of all parameters: to None (default) or to zeros in place.

        With set_to_none, a parameter's next backward writes into its old array while nothing
        else refers to that array (see fastnn.autograd.release_grad), instead of allocating.
        """
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    release_grad(p)
                else:
                    p.grad.data[...] = 0

    def step(self, closure=None):
        """Update every parameter that has a gradient; returns closure() if one is given."""
        raise NotImplementedError(f"{self._name} does not implement step()")

    # --- saving and loading -------------------------------------------------------------------

    def state_dict(self):
        """Return the optimizer's state as a dict shaped like PyTorch's.

        ``{"state": {index: {name: value}}, "param_groups": [{option: value, "params":
        [index, ...]}]}``: parameters are numbered in group order; state arrays are numpy
        copies (later steps do not change a saved dict) and "step" is an int.
        """
        state = {}
        groups = []
        index = 0
        for group in self.param_groups:
            saved = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            indices = []
            for p in group["params"]:
                if p in self.state and self.state[p]:
                    state[index] = {k: _copy_value(v) for k, v in self.state[p].items()}
                indices.append(index)
                index += 1
            saved["params"] = indices
            groups.append(saved)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load state saved by ``state_dict`` (this optimizer's class, same group sizes).

        Arrays are copied and cast to each parameter's dtype; group options (learning rates
        included) are taken from the saved groups. A torch.optim state_dict of the matching
        optimizer loads too (CPU tensors convert through numpy; "step" becomes an int).
        """
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= state_dict.keys():
            raise ValueError(f"{self._name}: load_state_dict expects a dict with 'state' and "
                             f"'param_groups', as returned by state_dict()")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{self._name}: the saved state has {len(saved_groups)} parameter groups, "
                f"this optimizer has {len(self.param_groups)}"
            )
        index_to_param = {}
        for g, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"{self._name}: saved parameter group {g} has {len(saved['params'])} "
                    f"parameters, this optimizer's has {len(group['params'])}"
                )
            for index, p in zip(saved["params"], group["params"]):
                index_to_param[index] = p

        new_state = {}
        for index, values in state_dict["state"].items():
            if index not in index_to_param:
                raise ValueError(f"{self._name}: saved state refers to parameter {index}, "
                                 f"which no saved group contains")
            p = index_to_param[index]
            new_state[id(p)] = (p, {k: self._load_value(k, v, p, index)
                                    for k, v in values.items()})

        new_groups = []
        for group, saved in zip(self.param_groups, saved_groups):
            new_group = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            new_group["params"] = group["params"]
            new_groups.append(new_group)
        for group in new_groups:
            self._check_group(group)
        self.param_groups = new_groups
        self.state._items = new_state

    def _load_value(self, key, value, p, index):
        if key == "step":
            return int(value)
        if value is None:
            return None
        if isinstance(value, np.ndarray) or hasattr(value, "__array__"):
            saved = np.asarray(value)
            if saved.shape != p.data.shape:
                raise ValueError(
                    f"{self._name}: saved state '{key}' of parameter {index} has shape "
                    f"{saved.shape}, the parameter has shape {p.data.shape}"
                )
            # A fresh array of the canonical dtype object: unpickled arrays carry equal but
            # distinct dtype objects, and np.array(copy=True) would keep them.
            arr = np.empty(p.data.shape, np.dtype(p.data.dtype.str))
            np.copyto(arr, saved, casting="same_kind")
            return arr
        return copy.deepcopy(value)

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            if i:
                lines.append("")
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key != "params":
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)

    # --- helpers for subclasses ---------------------------------------------------------------

    def _check_real(self, group, name, ok, rule):
        """Check that group[name] is a finite real number for which ok(value) holds."""
        value = group[name]
        if not _is_real(value):
            raise TypeError(f"{self._name}: {name} must be a real number, got "
                            f"{type(value).__name__}")
        if not math.isfinite(value):
            raise ValueError(f"{self._name}: invalid {name} {value!r} (must be finite)")
        if not ok(value):
            raise ValueError(f"{self._name}: invalid {name} {value!r} (must be {rule})")

    def _check_bool(self, group, name):
        value = group[name]
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{self._name}: {name} must be a bool, got {type(value).__name__}")

    def _call_closure(self, closure):
        if closure is None:
            return None
        if not callable(closure):
            raise TypeError(f"{self._name}: closure must be callable, got "
                            f"{type(closure).__name__}")
        with enable_grad():  # the closure runs a backward pass even under no_grad
            return closure()


def _looks_like_param(obj):
    return isinstance(getattr(obj, "data", None), np.ndarray) and hasattr(obj, "grad")


def _check_param(name, p, where):
    if not _looks_like_param(p):
        raise TypeError(f"{name}: {where} must be a parameter (an object with a numpy array "
                        f".data and a .grad), got {type(p).__name__}")
    data = p.data
    if data.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name}: {where} has dtype {data.dtype}; optimizers update float32 "
                        f"or float64 parameters")
    if not data.flags.c_contiguous or not data.flags.writeable:
        raise ValueError(f"{name}: {where} must be a C-contiguous, writable array")


def _grad_array(p):
    """p's gradient as a C-contiguous array (copied only when it is not one already)."""
    g = p.grad.data
    return g if g.flags.c_contiguous else np.ascontiguousarray(g)


def _copy_value(value):
    if isinstance(value, np.ndarray):
        return value.copy()
    return copy.deepcopy(value)
