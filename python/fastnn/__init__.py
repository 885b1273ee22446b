"""fastnn: a fast CPU neural-network framework with a PyTorch-shaped API."""

from ._threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = ["get_num_threads", "set_num_threads", "__version__"]
