"""fastnn._core pooling bindings: against torch, finite differences, bad input."""

import numpy as np
import pytest

from fastnn import _core

MAX_CASES = [
    ("two_by_two", (4, 3, 26, 26), dict(kernel_size=2)),
    ("odd_input_floor", (2, 2, 11, 11), dict(kernel_size=2)),
    ("odd_input_ceil", (2, 2, 11, 11), dict(kernel_size=2, ceil_mode=True)),
    ("k3_s2_p1", (2, 3, 9, 10), dict(kernel_size=3, stride=2, padding=1)),
    ("rect", (2, 2, 9, 12), dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1))),
    ("dilation_2", (2, 2, 9, 9), dict(kernel_size=3, stride=1, padding=1, dilation=2)),
    ("ceil_drops_last_window", (1, 1, 5, 5), dict(kernel_size=2, stride=2, padding=1,
                                                  ceil_mode=True)),
    ("stride_3_ceil", (1, 2, 10, 7), dict(kernel_size=2, stride=3, padding=1, ceil_mode=True)),
]

AVG_CASES = [
    ("two_by_two", (4, 3, 12, 12), dict(kernel_size=2)),
    ("k3_s2_p1_include_pad", (2, 3, 9, 10), dict(kernel_size=3, stride=2, padding=1)),
    ("k3_s2_p1_exclude_pad", (2, 3, 9, 10), dict(kernel_size=3, stride=2, padding=1,
                                                  count_include_pad=False)),
    ("ceil_exclude_pad", (2, 2, 11, 11), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                              count_include_pad=False)),
    ("ceil_include_pad", (2, 2, 11, 11), dict(kernel_size=3, stride=2, padding=1,
                                              ceil_mode=True)),
    ("divisor_override", (2, 2, 7, 7), dict(kernel_size=(3, 2), stride=2, padding=1,
                                            divisor_override=5)),
]


def rand(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def max_pool(x, **opts):
    shape = _core.pool2d_output_shape(x.shape, **{k: v for k, v in opts.items()})
    y = np.empty(shape, x.dtype)
    idx = np.empty(shape, np.int64)
    _core.max_pool2d_forward(y, idx, x, **opts)
    return y, idx


def avg_opts_for_shape(opts):
    return {k: v for k, v in opts.items() if k not in ("count_include_pad", "divisor_override")}


def avg_pool(x, **opts):
    y = np.empty(_core.pool2d_output_shape(x.shape, **avg_opts_for_shape(opts)), x.dtype)
    _core.avg_pool2d_forward(y, x, **opts)
    return y


def avg_pool_backward(dy, x, **opts):
    dx = np.empty_like(x)
    _core.avg_pool2d_backward(dx, dy, **opts)
    return dx


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,shape,opts", MAX_CASES, ids=[c[0] for c in MAX_CASES])
def test_max_pool_matches_torch(name, shape, opts, dtype):
    torch = pytest.importorskip("torch")
    x = rand(shape, dtype)
    y, idx = max_pool(x, **opts)
    tx = torch.tensor(x, requires_grad=True)
    ty, tidx = torch.nn.functional.max_pool2d(tx, return_indices=True, **opts)
    assert np.array_equal(y, ty.detach().numpy()), name
    assert np.array_equal(idx, tidx.numpy()), name
    dy = rand(y.shape, dtype, 1)
    ty.backward(torch.tensor(dy))
    dx = np.full_like(x, np.nan)
    _core.max_pool2d_backward(dx, dy, idx)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=1e-6)


def test_max_pool_ties_and_nan_follow_torch():
    torch = pytest.importorskip("torch")
    x = np.array([[[[1, 1, 2, 2], [1, 1, 2, np.nan], [0, 0, 5, 5], [0, 0, 5, 5]]]], np.float32)
    y, idx = max_pool(x, kernel_size=2)
    ty, tidx = torch.nn.functional.max_pool2d(torch.tensor(x), 2, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())  # NaN compares equal here
    np.testing.assert_array_equal(idx, tidx.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,shape,opts", AVG_CASES, ids=[c[0] for c in AVG_CASES])
def test_avg_pool_matches_torch(name, shape, opts, dtype):
    torch = pytest.importorskip("torch")
    x = rand(shape, dtype)
    y = avg_pool(x, **opts)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.avg_pool2d(tx, **opts)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=tol, err_msg=name)
    dy = rand(y.shape, dtype, 1)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(avg_pool_backward(dy, x, **opts), tx.grad.numpy(), rtol=0,
                               atol=tol, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("in_hw,out_hw", [((7, 7), (1, 1)), ((10, 7), (3, 4)), ((5, 5), (5, 5)),
                                          ((4, 6), (6, 9)), ((13, 1), (5, 1))])
def test_adaptive_avg_pool_matches_torch(in_hw, out_hw, dtype):
    torch = pytest.importorskip("torch")
    x = rand((2, 3) + in_hw, dtype)
    y = np.empty((2, 3) + out_hw, dtype)
    _core.adaptive_avg_pool2d_forward(y, x)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.adaptive_avg_pool2d(tx, out_hw)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=tol)
    dy = rand(y.shape, dtype, 1)
    ty.backward(torch.tensor(dy))
    dx = np.empty_like(x)
    _core.adaptive_avg_pool2d_backward(dx, dy)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=tol)


def numeric_grad(f, x, r, h=1e-6):
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + h
        up = float(np.sum(f(x) * r))
        flat[i] = saved - h
        down = float(np.sum(f(x) * r))
        flat[i] = saved
        gflat[i] = (up - down) / (2 * h)
    return g


@pytest.mark.parametrize("opts", [dict(kernel_size=3, stride=2, padding=1, count_include_pad=False,
                                       ceil_mode=True),
                                  dict(kernel_size=2, stride=1)])
def test_avg_pool_gradient_finite_differences(opts):
    x = rand((1, 2, 5, 6), np.float64, 2)
    r = rand(avg_pool(x, **opts).shape, np.float64, 3)
    num = numeric_grad(lambda v: avg_pool(v, **opts), x, r)
    np.testing.assert_allclose(avg_pool_backward(r, x, **opts), num, rtol=1e-7, atol=1e-8)


def test_max_pool_gradient_finite_differences():
    # Distinct values, so a small step never changes which element is the maximum.
    x = np.random.default_rng(4).permutation(60).astype(np.float64).reshape(1, 2, 5, 6) / 7
    opts = dict(kernel_size=3, stride=2, padding=1)
    y, idx = max_pool(x, **opts)
    r = rand(y.shape, np.float64, 5)
    num = numeric_grad(lambda v: max_pool(v, **opts)[0], x, r)
    dx = np.empty_like(x)
    _core.max_pool2d_backward(dx, r, idx)
    np.testing.assert_allclose(dx, num, rtol=1e-7, atol=1e-8)


def test_adaptive_gradient_finite_differences():
    x = rand((1, 1, 5, 7), np.float64, 6)
    r = rand((1, 1, 3, 2), np.float64, 7)

    def f(v):
        y = np.empty((1, 1, 3, 2))
        _core.adaptive_avg_pool2d_forward(y, v)
        return y

    dx = np.empty_like(x)
    _core.adaptive_avg_pool2d_backward(dx, r)
    np.testing.assert_allclose(dx, numeric_grad(f, x, r), rtol=1e-7, atol=1e-8)


def test_output_shape_helper():
    assert _core.pool2d_output_shape((64, 32, 26, 26), 2) == (64, 32, 13, 13)
    assert _core.pool2d_output_shape((1, 1, 11, 11), 2, ceil_mode=True) == (1, 1, 6, 6)
    assert _core.pool2d_output_shape((1, 1, 5, 5), 2, stride=2, padding=1,
                                     ceil_mode=True) == (1, 1, 3, 3)
    assert _core.pool2d_output_shape((2, 3, 9, 9), 3, stride=1, padding=1,
                                     dilation=2) == (2, 3, 7, 7)


# ---- bad input --------------------------------------------------------------------------------

def test_padding_more_than_half_kernel_refused():
    with pytest.raises(ValueError, match=r"pool2d_output_shape: padding must be at most half "
                       r"the kernel size \(kernel 2x2, padding 2x2\)"):
        _core.pool2d_output_shape((1, 1, 8, 8), 2, padding=2)


def test_window_larger_than_input_refused():
    with pytest.raises(ValueError, match=r"does not fit the input \(1, 1, 2, 2\)"):
        _core.pool2d_output_shape((1, 1, 2, 2), 3)


@pytest.mark.parametrize("kw,err,match", [
    (dict(kernel_size=0), ValueError, "kernel_size values must be >= 1"),
    (dict(kernel_size=2, stride=0), ValueError, "stride values must be >= 1"),
    (dict(kernel_size=(2, 2, 2)), ValueError, "kernel_size must have 2 values"),
    (dict(kernel_size=2.0), TypeError, "kernel_size must be an int or a pair"),
    (dict(kernel_size=2, padding=-1), ValueError, "padding values must be >= 0"),
])
def test_bad_options(kw, err, match):
    with pytest.raises(err, match=match):
        _core.pool2d_output_shape((1, 1, 8, 8), **kw)


def test_max_pool_argument_errors():
    x = np.zeros((2, 3, 8, 8), np.float32)
    y = np.zeros((2, 3, 4, 4), np.float32)
    idx = np.zeros((2, 3, 4, 4), np.int64)
    with pytest.raises(TypeError, match="max_pool2d_forward: indices must be int64, got int32"):
        _core.max_pool2d_forward(y, idx.astype(np.int32), x, 2)
    with pytest.raises(ValueError, match=r"indices has shape \(2, 3, 4\), expected"):
        _core.max_pool2d_forward(y, idx[..., 0].copy(), x, 2)
    with pytest.raises(ValueError, match=r"Y has shape \(2, 3, 4, 4\), expected \(2, 3, 7, 7\)"):
        _core.max_pool2d_forward(y, idx, x, 2, stride=1)
    with pytest.raises(TypeError, match="max_pool2d_forward: Y has dtype float64"):
        _core.max_pool2d_forward(y.astype(np.float64), idx, x, 2)
    with pytest.raises(ValueError, match=r"input must be 4-D"):
        _core.max_pool2d_forward(y, idx, x[0], 2)
    bad = idx.copy()
    bad[1, 2, 3, 3] = 64
    with pytest.raises(ValueError, match=r"max_pool2d_backward: indices holds 64 at flat "
                       r"position 95, outside the input plane of 64 elements"):
        _core.max_pool2d_backward(np.zeros_like(x), y, bad)
    with pytest.raises(ValueError, match="must have the same batch and channel sizes"):
        _core.max_pool2d_backward(np.zeros((2, 4, 8, 8), np.float32), y, idx)
    ro = np.zeros_like(x)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="max_pool2d_backward: dX is read-only"):
        _core.max_pool2d_backward(ro, y, idx)


def test_avg_and_adaptive_argument_errors():
    x = np.zeros((2, 3, 8, 8), np.float64)
    y = np.zeros((2, 3, 4, 4), np.float64)
    with pytest.raises(ValueError, match="divisor_override must be >= 1, got 0"):
        _core.avg_pool2d_forward(y, x, 2, divisor_override=0)
    with pytest.raises(ValueError, match="avg_pool2d_forward: X with shape .* C-contiguous"):
        _core.avg_pool2d_forward(y, x.transpose(0, 1, 3, 2), 2)
    with pytest.raises(ValueError, match=r"avg_pool2d_backward: dY has shape \(2, 3, 4, 4\), "
                       r"expected \(2, 3, 2, 2\)"):
        _core.avg_pool2d_backward(np.zeros_like(x), y, 4)
    with pytest.raises(ValueError, match="adaptive_avg_pool2d_forward: input and output planes "
                       "must be non-empty"):
        _core.adaptive_avg_pool2d_forward(np.zeros((2, 3, 0, 1)), x)
    with pytest.raises(ValueError, match="adaptive_avg_pool2d_forward: Y overlaps X"):
        _core.adaptive_avg_pool2d_forward(x, x)
    with pytest.raises(TypeError, match="adaptive_avg_pool2d_backward: dY has dtype float32"):
        _core.adaptive_avg_pool2d_backward(np.zeros_like(x), y.astype(np.float32))
