"""Thread control for fastnn's kernels."""

from . import _ops as _core


def set_num_threads(n: int) -> None:
    """Set how many threads fastnn's kernels may use (n >= 1).

    Results are bit-identical for every thread count; small operations run on one thread
    whatever the setting.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"fastnn.set_num_threads: n must be an int, got {type(n).__name__}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """Return how many threads fastnn's kernels may use."""
    return _core.get_num_threads()
