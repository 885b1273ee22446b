"""fastnn._core batch norm, layer norm and dropout2d bindings."""

import numpy as np
import pytest

import fastnn
from fastnn import _core


def rand(shape, dtype, seed=0, offset=0.0):
    return (np.random.default_rng(seed).standard_normal(shape) + offset).astype(dtype)


def tol(dtype):
    return 2e-5 if dtype == np.float32 else 1e-11


def bn_train(x, gamma=None, beta=None, rm=None, rv=None, eps=1e-5, momentum=0.1):
    c = x.shape[1]
    y, mean, invstd = np.empty_like(x), np.empty(c, x.dtype), np.empty(c, x.dtype)
    _core.batch_norm_forward_train(y, mean, invstd, x, gamma, beta, rm, rv, eps=eps,
                                   momentum=momentum)
    return y, mean, invstd


def bn_backward(dy, x, mean, invstd, gamma=None, training=True):
    dx, dg, db = np.empty_like(x), np.empty_like(mean), np.empty_like(mean)
    _core.batch_norm_backward(dy, x, mean, invstd, gamma, dX=dx, dgamma=dg, dbeta=db,
                              training=training, accumulate=False)
    return dx, dg, db


BN_SHAPES = [(8, 3), (5, 4, 7), (4, 3, 5, 6), (64, 2, 13, 13)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", BN_SHAPES, ids=["bn1d_nc", "bn1d_ncl", "bn2d", "bn2d_large"])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_train_matches_torch(shape, dtype, affine):
    torch = pytest.importorskip("torch")
    c = shape[1]
    x = rand(shape, dtype, 0, offset=3.0)
    gamma = rand(c, dtype, 1) if affine else None
    beta = rand(c, dtype, 2) if affine else None
    rm, rv = rand(c, dtype, 3), np.abs(rand(c, dtype, 4)) + 0.5
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    y, mean, invstd = bn_train(x, gamma, beta, rm, rv, eps=1e-4, momentum=0.2)
    tx = torch.tensor(x, requires_grad=True)
    tg = torch.tensor(gamma, requires_grad=True) if affine else None
    tb = torch.tensor(beta, requires_grad=True) if affine else None
    ty = torch.nn.functional.batch_norm(tx, trm, trv, tg, tb, training=True, momentum=0.2,
                                        eps=1e-4)
    t = tol(dtype)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=t * 10)
    np.testing.assert_allclose(rm, trm.numpy(), rtol=t, atol=t)
    np.testing.assert_allclose(rv, trv.numpy(), rtol=t, atol=t)
    dy = rand(shape, dtype, 5)
    ty.backward(torch.tensor(dy))
    dx, dg, db = bn_backward(dy, x, mean, invstd, gamma)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=t * 20)
    if affine:
        scale = np.sqrt(x.size / c)
        np.testing.assert_allclose(dg / scale, tg.grad.numpy() / scale, rtol=0, atol=t * 10)
        np.testing.assert_allclose(db / scale, tb.grad.numpy() / scale, rtol=0, atol=t * 10)


def test_batch_norm_eval_matches_torch():
    torch = pytest.importorskip("torch")
    x = rand((4, 3, 5, 5), np.float64)
    rm, rv, g, b = rand(3, np.float64, 1), np.abs(rand(3, np.float64, 2)) + 0.1, \
        rand(3, np.float64, 3), rand(3, np.float64, 4)
    y = np.empty_like(x)
    _core.batch_norm_forward_eval(y, x, rm, rv, g, b, eps=1e-3)
    tx = torch.tensor(x, requires_grad=True)
    tg, tb = torch.tensor(g, requires_grad=True), torch.tensor(b, requires_grad=True)
    ty = torch.nn.functional.batch_norm(tx, torch.tensor(rm), torch.tensor(rv), tg, tb,
                                        training=False, eps=1e-3)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=1e-12)
    dy = rand(x.shape, np.float64, 5)
    ty.backward(torch.tensor(dy))
    dx, dg, db = bn_backward(dy, x, rm, 1 / np.sqrt(rv + 1e-3), g, training=False)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(dg, tg.grad.numpy(), rtol=0, atol=1e-11)
    np.testing.assert_allclose(db, tb.grad.numpy(), rtol=0, atol=1e-11)
    y_in_place = x.copy()
    _core.batch_norm_forward_eval(y_in_place, y_in_place, rm, rv, g, b, eps=1e-3)
    np.testing.assert_array_equal(y_in_place, y)


def numeric_grad(f, arrays, r, h=1e-6):
    """Central differences of sum(f() * r) with respect to each array in `arrays`."""
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        flat, gflat = a.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            saved = flat[i]
            flat[i] = saved + h
            up = float(np.sum(f() * r))
            flat[i] = saved - h
            down = float(np.sum(f() * r))
            flat[i] = saved
            gflat[i] = (up - down) / (2 * h)
        grads.append(g)
    return grads


def test_batch_norm_gradients_finite_differences():
    x, g, b = rand((3, 2, 2, 3), np.float64, 6), rand(2, np.float64, 7), rand(2, np.float64, 8)
    r = rand(x.shape, np.float64, 9)
    nx, ng, nb = numeric_grad(lambda: bn_train(x, g, b)[0], [x, g, b], r)
    _, mean, invstd = bn_train(x, g, b)
    dx, dg, db = bn_backward(r, x, mean, invstd, g)
    for got, want in ((dx, nx), (dg, ng), (db, nb)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_batch_norm_accumulates_parameter_gradients():
    x, g = rand((4, 2, 3), np.float64), rand(2, np.float64, 1)
    dy = rand(x.shape, np.float64, 2)
    _, mean, invstd = bn_train(x, g)
    _, dg_fresh, db_fresh = bn_backward(dy, x, mean, invstd, g)
    dg, db = np.ones(2), np.ones(2)
    _core.batch_norm_backward(dy, x, mean, invstd, g, dgamma=dg, dbeta=db)
    np.testing.assert_allclose(dg, dg_fresh + 1, rtol=1e-14)
    np.testing.assert_allclose(db, db_fresh + 1, rtol=1e-14)


def test_batch_norm_large_offset_stays_accurate():
    x = rand((32, 2, 8, 8), np.float32, 0) * 0.01 + np.float32(1e4)
    y, mean, invstd = bn_train(x)
    xd = x.astype(np.float64)
    ref_var = xd.var(axis=(0, 2, 3))
    np.testing.assert_allclose(1 / invstd.astype(np.float64) ** 2 - 1e-5, ref_var, rtol=1e-3)


def test_batch_norm_bit_identical_across_thread_counts():
    x, dy = rand((64, 4, 13, 13), np.float32, 1), rand((64, 4, 13, 13), np.float32, 2)
    saved = fastnn.get_num_threads()
    runs = []
    try:
        for threads in (1, 2):
            fastnn.set_num_threads(threads)
            y, mean, invstd = bn_train(x)
            runs.append((y, mean, invstd) + bn_backward(dy, x, mean, invstd))
    finally:
        fastnn.set_num_threads(saved)
    for one, two in zip(*runs):
        assert np.array_equal(one, two)


def ln_forward(x, k=1, g=None, b=None, eps=1e-5):
    lead = x.shape[:x.ndim - k]
    y, mean, rstd = np.empty_like(x), np.empty(lead, x.dtype), np.empty(lead, x.dtype)
    _core.layer_norm_forward(y, mean, rstd, x, k, g, b, eps=eps)
    return y, mean, rstd


def ln_backward(dy, x, mean, rstd, k=1, g=None):
    dx = np.empty_like(x)
    dg = np.empty(x.shape[x.ndim - k:], x.dtype) if g is not None else None
    db = np.empty_like(dg) if g is not None else None
    _core.layer_norm_backward(dy, x, mean, rstd, k, g, dX=dx, dgamma=dg, dbeta=db,
                              accumulate=False)
    return dx, dg, db


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,k", [((6, 10), 1), ((2, 5, 8), 1), ((3, 4, 5), 2), ((7,), 1),
                                     ((300, 33), 1)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_torch(shape, k, affine, dtype):
    torch = pytest.importorskip("torch")
    norm_shape = shape[len(shape) - k:]
    x = rand(shape, dtype, 0, offset=2.0)
    g = rand(norm_shape, dtype, 1) if affine else None
    b = rand(norm_shape, dtype, 2) if affine else None
    y, mean, rstd = ln_forward(x, k, g, b)
    tx = torch.tensor(x, requires_grad=True)
    tg = torch.tensor(g, requires_grad=True) if affine else None
    tb = torch.tensor(b, requires_grad=True) if affine else None
    ty = torch.nn.functional.layer_norm(tx, norm_shape, tg, tb, eps=1e-5)
    t = tol(dtype)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=t * 10)
    dy = rand(shape, dtype, 3)
    ty.backward(torch.tensor(dy))
    dx, dg, db = ln_backward(dy, x, mean, rstd, k, g)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=t * 20)
    if affine:
        np.testing.assert_allclose(dg, tg.grad.numpy(), rtol=t * 10, atol=t * 20)
        np.testing.assert_allclose(db, tb.grad.numpy(), rtol=t * 10, atol=t * 20)


def test_layer_norm_gradients_finite_differences():
    x, g, b = rand((3, 2, 4), np.float64, 4), rand((2, 4), np.float64, 5), rand((2, 4),
                                                                                np.float64, 6)
    r = rand(x.shape, np.float64, 7)
    nx, ng, nb = numeric_grad(lambda: ln_forward(x, 2, g, b)[0], [x, g, b], r)
    _, mean, rstd = ln_forward(x, 2, g, b)
    dx, dg, db = ln_backward(r, x, mean, rstd, 2, g)
    for got, want in ((dx, nx), (dg, ng), (db, nb)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_layer_norm_bit_identical_across_thread_counts():
    x, dy = rand((4096, 64), np.float32, 1), rand((4096, 64), np.float32, 2)
    g = rand(64, np.float32, 3)
    saved = fastnn.get_num_threads()
    runs = []
    try:
        for threads in (1, 2):
            fastnn.set_num_threads(threads)
            y, mean, rstd = ln_forward(x, 1, g, g)
            runs.append((y, mean, rstd) + ln_backward(dy, x, mean, rstd, 1, g))
    finally:
        fastnn.set_num_threads(saved)
    for one, two in zip(*runs):
        assert np.array_equal(one, two)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 4, 4)])
def test_dropout2d_apply_and_backward(shape):
    x = rand(shape, np.float32)
    mask = (np.random.default_rng(1).random(shape[:2]) > 0.5).astype(np.float32)
    expand = mask.reshape(shape[:2] + (1,) * (len(shape) - 2))
    y = np.empty_like(x)
    _core.dropout2d_apply(y, x, mask, 2.0)
    np.testing.assert_array_equal(y, x * expand * np.float32(2.0))
    dx = np.empty_like(x)
    _core.dropout2d_backward(dx, y, mask, 2.0)
    np.testing.assert_array_equal(dx, y * expand * np.float32(2.0))
    in_place = x.copy()
    _core.dropout2d_apply(in_place, in_place, mask, 2.0)
    np.testing.assert_array_equal(in_place, x * expand * np.float32(2.0))


# ---- bad input --------------------------------------------------------------------------------

def test_batch_norm_argument_errors():
    x = np.zeros((4, 3, 5), np.float32)
    y, m, s = np.zeros_like(x), np.zeros(3, np.float32), np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"batch_norm_forward_train: expected more than 1 value "
                       r"per channel when training, got X of shape \(1, 3\)"):
        _core.batch_norm_forward_train(np.zeros((1, 3), np.float32), m, s,
                                       np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"X must be \(N, C, \*\), got shape \(3,\)"):
        _core.batch_norm_forward_train(y, m, s, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"save_mean has shape \(4,\), expected \(3,\)"):
        _core.batch_norm_forward_train(y, np.zeros(4, np.float32), s, x)
    with pytest.raises(ValueError, match=r"gamma has shape \(2,\), expected \(3,\)"):
        _core.batch_norm_forward_train(y, m, s, x, np.zeros(2, np.float32))
    with pytest.raises(TypeError, match="running_var has dtype float64 but X has dtype float32"):
        _core.batch_norm_forward_train(y, m, s, x, running_var=np.zeros(3))
    with pytest.raises(ValueError, match="save_mean overlaps running_mean"):
        _core.batch_norm_forward_train(y, m, s, x, running_mean=m)
    with pytest.raises(ValueError, match="eps must be finite and >= 0"):
        _core.batch_norm_forward_train(y, m, s, x, eps=-1.0)
    with pytest.raises(ValueError, match="batch_norm_forward_eval: Y has shape"):
        _core.batch_norm_forward_eval(y[:2].copy(), x, m, s)
    with pytest.raises(ValueError, match=r"batch_norm_backward: dY has shape \(4, 3\) but X has "
                       r"shape \(4, 3, 5\)"):
        _core.batch_norm_backward(np.zeros((4, 3), np.float32), x, m, s)
    with pytest.raises(ValueError, match="batch_norm_backward: dX overlaps dY"):
        _core.batch_norm_backward(y, x, m, s, dX=y)
    ro = np.zeros(3, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="batch_norm_backward: dgamma is read-only"):
        _core.batch_norm_backward(y, x, m, s, dgamma=ro)


def test_layer_norm_argument_errors():
    x = np.zeros((4, 6), np.float64)
    y, m, r = np.zeros_like(x), np.zeros(4), np.zeros(4)
    with pytest.raises(ValueError, match=r"normalized_ndim must be in \[1, X.ndim\], got 3"):
        _core.layer_norm_forward(y, m, r, x, 3)
    with pytest.raises(ValueError, match=r"layer_norm_forward: mean has shape \(6,\), expected "
                       r"\(4,\)"):
        _core.layer_norm_forward(y, np.zeros(6), r, x)
    with pytest.raises(ValueError, match=r"gamma has shape \(4,\), expected \(6,\)"):
        _core.layer_norm_forward(y, m, r, x, 1, np.zeros(4))
    with pytest.raises(TypeError, match="layer_norm_forward: X must be float32 or float64"):
        _core.layer_norm_forward(y, m, r, x.astype(np.float16))
    with pytest.raises(ValueError, match="layer_norm_forward: Y overlaps X"):
        _core.layer_norm_forward(x, m, r, x)
    with pytest.raises(ValueError, match=r"layer_norm_backward: rstd has shape \(\), expected "
                       r"\(4,\)"):
        _core.layer_norm_backward(y, x, m, np.zeros(()), 1)
    with pytest.raises(ValueError, match="layer_norm_backward: dgamma overlaps dbeta"):
        gb = np.zeros(6)
        _core.layer_norm_backward(y, x, m, r, 1, dgamma=gb, dbeta=gb)


def test_dropout2d_argument_errors():
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"dropout2d_apply: mask has shape \(2, 4\), expected "
                       r"\(2, 3\)"):
        _core.dropout2d_apply(np.empty_like(x), x, np.zeros((2, 4), np.float32), 1.0)
    with pytest.raises(TypeError, match="dropout2d_apply: mask must be float32 or float64, "
                       "got bool"):
        _core.dropout2d_apply(np.empty_like(x), x, np.zeros((2, 3), bool), 1.0)
    with pytest.raises(ValueError, match="dropout2d_backward: dX has shape"):
        _core.dropout2d_backward(np.zeros((2, 3, 5), np.float32), x,
                                 np.zeros((2, 3), np.float32), 1.0)
    buf = np.zeros(25, np.float32)
    with pytest.raises(ValueError, match="dropout2d_apply: Y overlaps X"):
        _core.dropout2d_apply(buf[1:].reshape(2, 3, 4), buf[:24].reshape(2, 3, 4),
                              np.zeros((2, 3), np.float32), 1.0)
