import pytest

import fastnn


def test_set_and_get_num_threads():
    saved = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(1)
        assert fastnn.get_num_threads() == 1
        fastnn.set_num_threads(2)
        assert fastnn.get_num_threads() in (1, 2)  # 1 when built without OpenMP
    finally:
        fastnn.set_num_threads(saved)


@pytest.mark.parametrize("bad", [0, -3])
def test_set_num_threads_rejects_non_positive(bad):
    with pytest.raises(ValueError, match="set_num_threads"):
        fastnn.set_num_threads(bad)


def test_set_num_threads_rejects_non_int():
    with pytest.raises(TypeError, match="set_num_threads"):
        fastnn.set_num_threads(1.5)
