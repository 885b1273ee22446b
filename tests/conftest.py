import numpy as np
import pytest

import fastnn


@pytest.fixture(autouse=True)
def _seed_and_restore_threads():
    """Every test starts from the same seed and leaves the thread count as it found it."""
    fastnn.manual_seed(0)
    threads = fastnn.get_num_threads()
    yield
    fastnn.set_num_threads(threads)


@pytest.fixture
def rng():
    return np.random.default_rng(42)
