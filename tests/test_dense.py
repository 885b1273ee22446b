"""fastnn._core dense_forward / dense_backward / bias_add / bias_grad against numpy, finite
differences and PyTorch, and their argument checks."""

import math

import numpy as np
import pytest

from fastnn import _core

ACTIVATIONS = ["identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu", "gelu_tanh",
               "silu", "softplus"]
# alpha per activation: the negative slope of leaky_relu, the alpha of elu.
ALPHA = {"leaky_relu": 0.1, "elu": 0.8}
# Activations whose gradient needs the pre-activation Z (the rest work from Y).
NEEDS_Z = {"gelu", "gelu_tanh", "silu", "softplus"}
DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-5, np.float64: 1e-12}

_erf = np.vectorize(math.erf)


def act_numpy(name, z, alpha=0.0):
    z = z.astype(np.float64)
    if name == "identity":
        return z
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, z, alpha * z)
    if name == "elu":
        return np.where(z > 0, z, alpha * np.expm1(z))
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "gelu":
        return 0.5 * z * (1.0 + _erf(z / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * z * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z ** 3)))
    if name == "silu":
        return z / (1.0 + np.exp(-z))
    if name == "softplus":
        return np.where(z > 20, z, np.log1p(np.exp(np.minimum(z, 20))))
    raise AssertionError(name)


def data(n, i, o, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, i)).astype(dtype)
    w = (rng.standard_normal((o, i)) / np.sqrt(i)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    return x, w, b


def forward(x, w, b, act, alpha=0.0, want_z=False):
    y = np.empty((x.shape[0], w.shape[0]), x.dtype)
    z = np.empty_like(y) if want_z else None
    _core.dense_forward(y, x, w, b, activation=act, alpha=alpha, Z=z)
    return y, z


def assert_close(actual, want, tol, what):
    err = np.abs(np.asarray(actual, np.float64) - want).max(initial=0.0)
    bound = tol * (1.0 + np.abs(want).max(initial=0.0))
    assert err <= bound, f"{what}: largest difference {err:.3g} exceeds {bound:.3g}"


# ----- forward -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("n", [1, 5, 40])
def test_forward_matches_numpy(dtype, act, n):
    x, w, b = data(n, 30, 21, dtype)
    alpha = ALPHA.get(act, 0.0)
    y, z = forward(x, w, b, act, alpha, want_z=True)
    z_want = x.astype(np.float64) @ w.T.astype(np.float64) + b
    assert_close(z, z_want, TOL[dtype] * 10, "Z")
    assert_close(y, act_numpy(act, z_want, alpha), TOL[dtype] * 10, "Y")


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_without_bias(dtype):
    x, w, _ = data(7, 13, 9, dtype)
    y, _ = forward(x, w, None, "relu")
    assert_close(y, np.maximum(x.astype(np.float64) @ w.T, 0), TOL[dtype] * 10, "Y")


def test_forward_large_batch_packed_path():
    x, w, b = data(130, 300, 517, np.float32)
    y, z = forward(x, w, b, "gelu", want_z=True)
    z_want = x.astype(np.float64) @ w.T.astype(np.float64) + b
    assert_close(z, z_want, 1e-5, "Z")
    assert_close(y, act_numpy("gelu", z_want), 1e-5, "Y")


# ----- backward ----------------------------------------------------------------------------------

def backward(x, w, b, dy, act, alpha, accumulate=False, pass_z=True):
    y, z = forward(x, w, b, act, alpha, want_z=True)
    dx = np.empty_like(x)
    dw = np.zeros_like(w)
    db = np.zeros_like(b)
    _core.dense_backward(dy, x, w, y, Z=z if pass_z else None, activation=act, alpha=alpha,
                         dX=dx, dW=dw, db=db, accumulate=accumulate)
    return dx, dw, db


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_backward_matches_finite_differences(act):
    n, i, o = 3, 4, 5
    x, w, b = data(n, i, o, np.float64, seed=1)
    alpha = ALPHA.get(act, 0.0)
    r = np.random.default_rng(2).standard_normal((n, o))  # loss = sum(Y * r), so dY = r
    dx, dw, db = backward(x, w, b, r, act, alpha)

    def loss(xx, ww, bb):
        return float(np.sum(forward(xx, ww, bb, act, alpha)[0] * r))

    h = 1e-6
    for name, arr, grad in (("X", x, dx), ("W", w, dw), ("b", b, db)):
        numeric = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            saved = arr[idx]
            arr[idx] = saved + h
            plus = loss(x, w, b)
            arr[idx] = saved - h
            minus = loss(x, w, b)
            arr[idx] = saved
            numeric[idx] = (plus - minus) / (2 * h)
        assert_close(grad, numeric, 1e-6, f"d{name} for {act}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["relu", "tanh", "gelu"])
@pytest.mark.parametrize("n", [1, 33])
def test_backward_matches_numpy_and_accumulates(dtype, act, n):
    x, w, b = data(n, 20, 17, dtype, seed=3)
    dy = np.random.default_rng(4).standard_normal((n, 17)).astype(dtype)
    y, z = forward(x, w, b, act, want_z=True)
    zz = x.astype(np.float64) @ w.T.astype(np.float64) + b
    eps = 1e-7
    deriv = (act_numpy(act, zz + eps) - act_numpy(act, zz - eps)) / (2 * eps)
    dz = dy * deriv
    dw0 = np.random.default_rng(5).standard_normal(w.shape).astype(dtype)
    db0 = np.random.default_rng(6).standard_normal(b.shape).astype(dtype)
    dx, dw, db = np.empty_like(x), dw0.copy(), db0.copy()
    _core.dense_backward(dy, x, w, y, Z=z, activation=act, dX=dx, dW=dw, db=db)
    tol = 1e-5 if dtype == np.float32 else 1e-7  # deriv above is itself a difference quotient
    assert_close(dx, dz @ w.astype(np.float64), tol, "dX")
    assert_close(dw, dw0 + dz.T @ x.astype(np.float64), tol, "dW (accumulated)")
    assert_close(db, db0 + dz.sum(0), tol, "db (accumulated)")
    _core.dense_backward(dy, x, w, y, Z=z, activation=act, dW=dw, db=db, accumulate=False)
    assert_close(dw, dz.T @ x.astype(np.float64), tol, "dW (overwritten)")
    assert_close(db, dz.sum(0), tol, "db (overwritten)")


@pytest.mark.parametrize("act", sorted(set(ACTIVATIONS) - NEEDS_Z))
def test_backward_from_output_only(act):
    x, w, b = data(6, 8, 5, np.float64, seed=7)
    dy = np.random.default_rng(8).standard_normal((6, 5))
    alpha = ALPHA.get(act, 0.0)
    with_z = backward(x, w, b, dy, act, alpha, pass_z=True)
    without_z = backward(x, w, b, dy, act, alpha, pass_z=False)
    for g1, g2 in zip(with_z, without_z):
        assert_close(g2, g1, 1e-12, act)


def test_backward_outputs_may_be_none():
    x, w, b = data(4, 6, 3, np.float64)
    y, _ = forward(x, w, b, "relu")
    dy = np.ones_like(y)
    db = np.zeros(3)
    _core.dense_backward(dy, x, w, y, activation="relu", db=db, accumulate=False)
    np.testing.assert_allclose(db, (y > 0).sum(0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu",
                                 "gelu_tanh", "silu", "softplus"])
def test_linear_layer_matches_torch(dtype, act):
    torch = pytest.importorskip("torch")
    f = torch.nn.functional
    alpha = ALPHA.get(act, 0.0)
    torch_act = {
        "relu": f.relu, "leaky_relu": lambda t: f.leaky_relu(t, alpha),
        "elu": lambda t: f.elu(t, alpha), "sigmoid": torch.sigmoid, "tanh": torch.tanh,
        "gelu": f.gelu, "gelu_tanh": lambda t: f.gelu(t, approximate="tanh"), "silu": f.silu,
        "softplus": f.softplus,
    }[act]
    x, w, b = data(16, 24, 10, dtype, seed=9)
    dy = np.random.default_rng(10).standard_normal((16, 10)).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    lin = torch.nn.Linear(24, 10, dtype=tx.dtype)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
        lin.bias.copy_(torch.from_numpy(b))
    ty = torch_act(lin(tx))
    ty.backward(torch.from_numpy(dy))

    y, z = forward(x, w, b, act, alpha, want_z=True)
    dx, dw, db = np.empty_like(x), np.zeros_like(w), np.zeros_like(b)
    _core.dense_backward(dy, x, w, y, Z=z, activation=act, alpha=alpha, dX=dx, dW=dw, db=db)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert_close(y, ty.detach().numpy().astype(np.float64), tol, "Y")
    assert_close(dx, tx.grad.numpy().astype(np.float64), tol, "dX")
    assert_close(dw, lin.weight.grad.numpy().astype(np.float64), tol, "dW")
    assert_close(db, lin.bias.grad.numpy().astype(np.float64), tol, "db")


# ----- bias helpers ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5,), (4, 5), (2, 3, 5), (0, 5), (3, 2, 2, 5)])
def test_bias_add(dtype, shape):
    rng = np.random.default_rng(11)
    y = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape[-1]).astype(dtype)
    want = y + b
    _core.bias_add(y, b)
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5,), (4, 5), (2, 3, 5), (0, 5), (700, 3, 7)])
def test_bias_grad(dtype, shape):
    rng = np.random.default_rng(12)
    dy = rng.standard_normal(shape).astype(dtype)
    db0 = rng.standard_normal(shape[-1]).astype(dtype)
    want = dy.astype(np.float64).reshape(-1, shape[-1]).sum(0)
    db = db0.copy()
    _core.bias_grad(db, dy)
    assert_close(db, db0.astype(np.float64) + want, TOL[dtype], "db (accumulated)")
    _core.bias_grad(db, dy, accumulate=False)
    assert_close(db, want, TOL[dtype], "db (overwritten)")


def test_bias_grad_identical_across_thread_counts():
    dy = np.random.default_rng(13).standard_normal((5000, 37)).astype(np.float32)
    results = []
    saved = _core.get_num_threads()
    try:
        for threads in (1, 2):
            _core.set_num_threads(threads)
            db = np.zeros(37, np.float32)
            _core.bias_grad(db, dy)
            results.append(db)
    finally:
        _core.set_num_threads(saved)
    assert results[0].tobytes() == results[1].tobytes()


# ----- bad input ---------------------------------------------------------------------------------

def f32(*shape):
    return np.zeros(shape, np.float32)


def test_forward_wrong_dtype():
    with pytest.raises(TypeError, match=r"fastnn\.dense_forward: X must be float32 or float64"):
        _core.dense_forward(f32(2, 3), np.zeros((2, 4), np.int64), f32(3, 4))


def test_forward_mixed_dtypes():
    with pytest.raises(TypeError, match=r"fastnn\.dense_forward: b has dtype float64"):
        _core.dense_forward(f32(2, 3), f32(2, 4), f32(3, 4), np.zeros(3))


def test_forward_mismatched_weight():
    with pytest.raises(ValueError, match=r"fastnn\.dense_forward: X has shape \(2, 4\) but W "
                                         r"has shape \(3, 5\)"):
        _core.dense_forward(f32(2, 3), f32(2, 4), f32(3, 5))


def test_forward_wrong_output_shape():
    with pytest.raises(ValueError, match=r"fastnn\.dense_forward: Y has shape \(2, 4\), "
                                         r"expected \(2, 3\)"):
        _core.dense_forward(f32(2, 4), f32(2, 4), f32(3, 4))


def test_forward_wrong_bias_shape():
    with pytest.raises(ValueError, match=r"fastnn\.dense_forward: b has shape \(4,\), "
                                         r"expected \(3,\)"):
        _core.dense_forward(f32(2, 3), f32(2, 4), f32(3, 4), f32(4))


def test_forward_non_contiguous():
    with pytest.raises(ValueError, match=r"fastnn\.dense_forward: W with shape \(3, 4\) must be "
                                         r"C-contiguous"):
        _core.dense_forward(f32(2, 3), f32(2, 4), f32(4, 3).T)


def test_forward_read_only_output():
    y = f32(2, 3)
    y.setflags(write=False)
    with pytest.raises(ValueError, match=r"fastnn\.dense_forward: Y is read-only"):
        _core.dense_forward(y, f32(2, 4), f32(3, 4))


def test_forward_unknown_activation():
    with pytest.raises(ValueError, match=r"fastnn\.dense_forward: unknown activation 'swish'"):
        _core.dense_forward(f32(2, 3), f32(2, 4), f32(3, 4), activation="swish")


def test_forward_output_overlaps_input():
    x = f32(3, 3)
    with pytest.raises(ValueError, match=r"fastnn\.dense_forward: Y overlaps X"):
        _core.dense_forward(x, x, f32(3, 3))


def test_backward_missing_z():
    with pytest.raises(ValueError, match=r"fastnn\.dense_backward: the gradient of gelu needs "
                                         r"the pre-activation Z"):
        _core.dense_backward(f32(2, 3), f32(2, 4), f32(3, 4), f32(2, 3), activation="gelu",
                             dX=f32(2, 4))


def test_backward_wrong_dtype():
    with pytest.raises(TypeError, match=r"fastnn\.dense_backward: dW has dtype float64"):
        _core.dense_backward(f32(2, 3), f32(2, 4), f32(3, 4), f32(2, 3), dW=np.zeros((3, 4)))


def test_backward_mismatched_shapes():
    with pytest.raises(ValueError, match=r"fastnn\.dense_backward: dY has shape \(2, 5\), "
                                         r"expected \(2, 3\)"):
        _core.dense_backward(f32(2, 5), f32(2, 4), f32(3, 4), f32(2, 3))
    with pytest.raises(ValueError, match=r"fastnn\.dense_backward: dX has shape \(4, 2\), "
                                         r"expected \(2, 4\)"):
        _core.dense_backward(f32(2, 3), f32(2, 4), f32(3, 4), f32(2, 3), dX=f32(4, 2))


def test_backward_non_contiguous():
    with pytest.raises(ValueError, match=r"fastnn\.dense_backward: dY with shape \(2, 3\) must be "
                                         r"C-contiguous"):
        _core.dense_backward(f32(3, 2).T, f32(2, 4), f32(3, 4), f32(2, 3))


def test_backward_read_only_output():
    dw = f32(3, 4)
    dw.setflags(write=False)
    with pytest.raises(ValueError, match=r"fastnn\.dense_backward: dW is read-only"):
        _core.dense_backward(f32(2, 3), f32(2, 4), f32(3, 4), f32(2, 3), dW=dw)


def test_backward_unknown_activation():
    with pytest.raises(ValueError, match=r"fastnn\.dense_backward: unknown activation 'RELU'"):
        _core.dense_backward(f32(2, 3), f32(2, 4), f32(3, 4), f32(2, 3), activation="RELU")


def test_backward_output_overlaps_input():
    dy = f32(2, 3)
    with pytest.raises(ValueError, match=r"fastnn\.dense_backward: db overlaps dY"):
        _core.dense_backward(dy, f32(2, 4), f32(3, 4), f32(2, 3), db=dy[0])


def test_bias_add_errors():
    with pytest.raises(TypeError, match=r"fastnn\.bias_add: b has dtype float64"):
        _core.bias_add(f32(2, 3), np.zeros(3))
    with pytest.raises(ValueError, match=r"fastnn\.bias_add: Y has shape \(2, 3\) but b has "
                                         r"shape \(4,\)"):
        _core.bias_add(f32(2, 3), f32(4))
    with pytest.raises(ValueError, match=r"fastnn\.bias_add: Y with shape \(3, 2\) must be "
                                         r"C-contiguous"):
        _core.bias_add(f32(2, 3).T, f32(2))
    y = f32(2, 3)
    y.setflags(write=False)
    with pytest.raises(ValueError, match=r"fastnn\.bias_add: Y is read-only"):
        _core.bias_add(y, f32(3))


def test_bias_grad_errors():
    with pytest.raises(TypeError, match=r"fastnn\.bias_grad: dY must be float32 or float64"):
        _core.bias_grad(f32(3), np.zeros((2, 3), np.int32))
    with pytest.raises(ValueError, match=r"fastnn\.bias_grad: dY has shape \(2, 3\) but db has "
                                         r"shape \(4,\)"):
        _core.bias_grad(f32(4), f32(2, 3))
    with pytest.raises(ValueError, match=r"fastnn\.bias_grad: db must be 1-D"):
        _core.bias_grad(f32(1, 3), f32(2, 3))
    db = f32(3)
    db.setflags(write=False)
    with pytest.raises(ValueError, match=r"fastnn\.bias_grad: db is read-only"):
        _core.bias_grad(db, f32(2, 3))
