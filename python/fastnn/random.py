"""fastnn's one seeded random generator.

Every random choice fastnn makes (weight initialisation, dropout masks, data shuffling) draws
from this generator unless a generator is passed explicitly, so `manual_seed(s)` makes a whole
run repeatable. Draws happen in Python, never inside multi-threaded kernels, which keeps results
independent of the thread count.
"""

from __future__ import annotations

import numpy as np

_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed fastnn's generator and return it."""
    global _generator
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"fastnn.manual_seed: seed must be an int, got {type(seed).__name__}")
    _generator = np.random.default_rng(int(seed))
    return _generator


def default_generator() -> np.random.Generator:
    """The generator fastnn draws from when none is given."""
    return _generator


def get_rng_state() -> dict:
    """A snapshot of the generator's state (plain Python data, safe to serialise)."""
    return _generator.bit_generator.state


def set_rng_state(state: dict) -> None:
    """Restore a snapshot taken by `get_rng_state`."""
    _generator.bit_generator.state = state
