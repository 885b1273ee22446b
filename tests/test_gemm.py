"""fastnn._core.gemm against numpy, and its argument checks."""

import numpy as np
import pytest

from fastnn import _core

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-5, np.float64: 1e-12}


def operands(m, k, n, trans_a, trans_b, dtype, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return a, b


def expected(a, b, trans_a, trans_b, alpha=1.0, beta=0.0, c=None):
    op_a = (a.T if trans_a else a).astype(np.float64)
    op_b = (b.T if trans_b else b).astype(np.float64)
    out = alpha * (op_a @ op_b)
    if beta != 0.0:
        out += beta * c.astype(np.float64)
    return out


def assert_close(actual, want, dtype, k):
    scale = TOL[dtype] * np.sqrt(max(k, 1)) * (1 + np.abs(want).max(initial=0.0))
    err = np.abs(actual - want).max(initial=0.0)
    assert err <= scale, f"largest difference {err:.3g} exceeds {scale:.3g}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (False, True), (True, False),
                                             (True, True)])
@pytest.mark.parametrize("m,k,n", [
    (1, 784, 512),   # m_eq_1: a Linear layer at batch 1
    (7, 19, 5),      # n_below_tile
    (13, 23, 35),    # k_not_multiple_of_unroll, n_above_tile
    (16, 70, 100),   # small m: dot / direct-B paths
    (130, 300, 517),  # packed path with edges in every dimension
    (512, 1, 784),   # small k: a weight gradient at batch 1 (an outer product)
    (7, 5, 300),     # small k, few rows, n not a multiple of the vector width
])
def test_matches_numpy(dtype, trans_a, trans_b, m, k, n):
    a, b = operands(m, k, n, trans_a, trans_b, dtype)
    c = np.full((m, n), np.nan, dtype)  # beta == 0: C must not be read
    _core.gemm(c, a, b, trans_a=trans_a, trans_b=trans_b)
    assert_close(c, expected(a, b, trans_a, trans_b), dtype, k)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k,n", [(4, 37, 41), (31, 41, 37)])
def test_alpha_beta(dtype, m, k, n):
    a, b = operands(m, k, n, False, True, dtype, seed=1)
    c0 = np.random.default_rng(2).standard_normal((m, n)).astype(dtype)
    c = c0.copy()
    _core.gemm(c, a, b, trans_b=True, alpha=2.0, beta=0.5)
    assert_close(c, expected(a, b, False, True, 2.0, 0.5, c0), dtype, k)


@pytest.mark.parametrize("m,k,n", [(0, 3, 4), (3, 0, 4), (3, 4, 0)])
def test_zero_sized(m, k, n):
    a, b = operands(m, k, n, False, False, np.float32)
    c = np.full((m, n), 7.0, np.float32)
    _core.gemm(c, a, b, beta=0.5)
    np.testing.assert_array_equal(c, np.full((m, n), 3.5 if k == 0 else 7.0, np.float32))


@pytest.mark.parametrize("m,k,n,trans_a,trans_b", [
    (300, 259, 517, False, True),  # packed
    (512, 2, 784, True, False),    # small k, rows split among threads
    (1, 784, 512, False, True),    # dot path at m == 1, split because it streams 1.6 MB
    (1, 512, 784, False, False),   # row path, likewise
])
def test_thread_counts_give_identical_bits(m, k, n, trans_a, trans_b):
    a, b = operands(m, k, n, trans_a, trans_b, np.float32, seed=3)
    c0 = np.random.default_rng(4).standard_normal((m, n)).astype(np.float32)
    results = []
    saved = _core.get_num_threads()
    try:
        for threads in (1, 2):
            _core.set_num_threads(threads)
            c = c0.copy()
            _core.gemm(c, a, b, trans_a=trans_a, trans_b=trans_b, alpha=0.5, beta=1.0)
            results.append(c)
    finally:
        _core.set_num_threads(saved)
    assert results[0].tobytes() == results[1].tobytes()


def test_wrong_dtype():
    a = np.ones((2, 3), np.int32)
    b = np.ones((3, 2), np.float32)
    with pytest.raises(TypeError, match=r"fastnn\.gemm: A must be float32 or float64, got int32"):
        _core.gemm(np.empty((2, 2), np.float32), a, b)


def test_mixed_dtypes():
    a = np.ones((2, 3), np.float32)
    b = np.ones((3, 2), np.float64)
    with pytest.raises(TypeError, match=r"fastnn\.gemm: B has dtype float64 but A has dtype"):
        _core.gemm(np.empty((2, 2), np.float32), a, b)


def test_mismatched_inner_dimension():
    a = np.ones((2, 3), np.float32)
    b = np.ones((4, 2), np.float32)
    with pytest.raises(ValueError,
                       match=r"fastnn\.gemm: cannot multiply op\(A\) of shape \(2, 3\)"):
        _core.gemm(np.empty((2, 2), np.float32), a, b)


def test_wrong_output_shape():
    a = np.ones((2, 3), np.float32)
    b = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"fastnn\.gemm: C has shape \(2, 3\), expected \(2, 4\)"):
        _core.gemm(np.empty((2, 3), np.float32), a, b)


def test_not_two_dimensional():
    with pytest.raises(ValueError, match=r"A must be 2-D, got shape \(6,\)"):
        _core.gemm(np.empty((2, 2), np.float32), np.ones(6, np.float32),
                   np.ones((3, 2), np.float32))


def test_non_contiguous():
    a = np.ones((3, 2), np.float32).T  # a transposed view: (2, 3), not C-contiguous
    b = np.ones((3, 2), np.float32)
    with pytest.raises(ValueError,
                       match=r"fastnn\.gemm: A with shape \(2, 3\) must be C-contiguous"):
        _core.gemm(np.empty((2, 2), np.float32), a, b)


def test_read_only_output():
    c = np.empty((2, 2), np.float32)
    c.setflags(write=False)
    with pytest.raises(ValueError, match=r"fastnn\.gemm: C is read-only"):
        _core.gemm(c, np.ones((2, 3), np.float32), np.ones((3, 2), np.float32))


def test_output_overlapping_input():
    buf = np.ones((2, 2), np.float32)
    with pytest.raises(ValueError, match=r"fastnn\.gemm: C overlaps A"):
        _core.gemm(buf, buf, np.ones((2, 2), np.float32))
