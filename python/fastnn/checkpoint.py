"""Saving and loading models and whole training states.

`save`/`load` move a state dict (name -> array) through a safetensors file, which PyTorch and
other frameworks read too. `save_checkpoint`/`load_checkpoint` add the optimizer, scheduler,
epoch and fastnn's random state, so that training resumed from a checkpoint reaches exactly
the weights an uninterrupted run would. Writes are atomic and loading never executes code.
"""

from __future__ import annotations

import numpy as np

from . import random as fastnn_random
from . import serialization


def _state_of(obj):
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        return dict(obj.state_dict())
    if isinstance(obj, dict):
        return obj
    raise TypeError(f"save: expected a Module or a dict of name -> array, got "
                    f"{type(obj).__name__}")


def save(obj, path, metadata=None) -> None:
    """Save a module's state dict (or a dict of arrays) to a safetensors file, atomically."""
    serialization.save_file(_state_of(obj), path, metadata)


def load(path) -> dict:
    """Load a safetensors file as a dict of name -> numpy array (for `load_state_dict`)."""
    return serialization.load_file(path)


def save_checkpoint(path, model, optimizer=None, scheduler=None, epoch=None, extra=None) -> None:
    """Save model, optimizer and scheduler state, the epoch and fastnn's random state."""
    serialization.save_checkpoint(
        path,
        model_state={k: np.asarray(v) for k, v in model.state_dict().items()},
        optimizer_state=None if optimizer is None else optimizer.state_dict(),
        scheduler_state=None if scheduler is None else scheduler.state_dict(),
        epoch=epoch,
        rng_state=fastnn_random.get_rng_state(),
        extra=extra,
    )


def load_checkpoint(path, model, optimizer=None, scheduler=None) -> dict:
    """Restore what `save_checkpoint` saved into the given objects.

    Returns {"epoch": ..., "extra": ...}. The random state is restored too, so shuffling and
    dropout continue exactly as they would have.
    """
    state = serialization.load_checkpoint(path)
    model.load_state_dict(state["model_state"])
    if optimizer is not None:
        if state.get("optimizer_state") is None:
            raise ValueError(f"load_checkpoint: {path!r} holds no optimizer state")
        optimizer.load_state_dict(state["optimizer_state"])
    if scheduler is not None:
        if state.get("scheduler_state") is None:
            raise ValueError(f"load_checkpoint: {path!r} holds no scheduler state")
        scheduler.load_state_dict(state["scheduler_state"])
    if state.get("rng_state") is not None:
        fastnn_random.set_rng_state(state["rng_state"])
    return {"epoch": state.get("epoch"), "extra": state.get("extra")}
