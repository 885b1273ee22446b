"""fastnn._core activation and softmax kernels against numpy, torch and finite differences."""

import math

import numpy as np
import pytest

from fastnn import _core

ACTS = ["identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu", "gelu_tanh", "silu",
        "softplus"]
ALPHA = {"leaky_relu": 0.1, "elu": 1.3}
TOL = {np.float32: dict(rtol=2e-6, atol=2e-6), np.float64: dict(rtol=1e-13, atol=1e-13)}

_erf = np.vectorize(math.erf)


def np_act(name, x, alpha):
    if name == "identity":
        return x.copy()
    if name == "relu":
        return np.maximum(x, 0)
    if name == "leaky_relu":
        return np.where(x > 0, x, alpha * x)
    if name == "elu":
        return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))
    if name == "sigmoid":
        return 0.5 * (1 + np.tanh(0.5 * x))
    if name == "tanh":
        return np.tanh(x)
    if name == "gelu":
        return 0.5 * x * (1 + _erf(x / math.sqrt(2)))
    if name == "gelu_tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    if name == "silu":
        return x * 0.5 * (1 + np.tanh(0.5 * x))
    if name == "softplus":
        return np.where(x > 20, x, np.logaddexp(0, np.minimum(x, 20)))
    raise AssertionError(name)


def torch_act(torch, name, x, alpha):
    F = torch.nn.functional
    return {
        "identity": lambda: x * 1,
        "relu": lambda: F.relu(x),
        "leaky_relu": lambda: F.leaky_relu(x, alpha),
        "elu": lambda: F.elu(x, alpha),
        "sigmoid": lambda: torch.sigmoid(x),
        "tanh": lambda: torch.tanh(x),
        "gelu": lambda: F.gelu(x),
        "gelu_tanh": lambda: F.gelu(x, approximate="tanh"),
        "silu": lambda: F.silu(x),
        "softplus": lambda: F.softplus(x),
    }[name]()


def assert_close(got, want, rtol, atol, what=""):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    diff = np.abs(got - want)
    bad = ~(diff <= atol + rtol * np.abs(want)) & ~(np.isnan(got) & np.isnan(want))
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(np.isnan(diff), np.inf, diff)), diff.shape)
        raise AssertionError(f"{what}: {bad.sum()} of {got.size} differ; largest difference "
                             f"{diff[i]} at {i} (got {got[i]}, want {want[i]})")


def forward(name, x, alpha=0.0):
    y = np.empty_like(x)
    _core.activation_forward(y, x, name, alpha)
    return y


def backward(name, dy, x, alpha=0.0):
    y = forward(name, x, alpha)
    dx = np.empty_like(x)
    _core.activation_backward(dx, dy, x, y, name, alpha)
    return dx


def sample(shape, dtype, seed=0, scale=3.0):
    return (np.random.default_rng(seed).uniform(-scale, scale, shape)).astype(dtype)


# --- activations ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ACTS)
def test_activation_forward_matches_numpy(name, dtype):
    x = sample((3, 5, 7), dtype)
    x.flat[:6] = [0, -1000, 1000, 20.5, -25, 1e-3]
    alpha = ALPHA.get(name, 0.0)
    y = forward(name, x, alpha)
    assert y.dtype == dtype
    assert_close(y, np_act(name, x.astype(np.float64), alpha), **TOL[dtype], what=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ACTS)
def test_activation_matches_torch_forward_and_backward(name, dtype):
    torch = pytest.importorskip("torch")
    x = sample((4, 33), dtype, seed=1, scale=6)
    x.flat[:4] = [-1000, 1000, 21.0, 19.0]
    dy = sample((4, 33), dtype, seed=2, scale=1)
    alpha = ALPHA.get(name, 0.0)
    xt = torch.from_numpy(x).requires_grad_()
    yt = torch_act(torch, name, xt, alpha)
    yt.backward(torch.from_numpy(dy))
    tol = TOL[dtype] if dtype == np.float64 else dict(rtol=5e-6, atol=5e-6)
    assert_close(forward(name, x, alpha), yt.detach().numpy(), **tol, what=name)
    assert_close(backward(name, dy, x, alpha), xt.grad.numpy(), **tol, what=name + " grad")


@pytest.mark.parametrize("name", ACTS)
def test_activation_gradient_matches_finite_differences(name):
    rng = np.random.default_rng(3)
    x = rng.uniform(-3, 3, (5, 6))
    x = np.where(np.abs(x) < 0.05, 0.5, x)  # keep away from the kinks of relu and friends
    dy = rng.uniform(-1, 1, x.shape)
    alpha = ALPHA.get(name, 0.0)
    h = 1e-6
    numeric = (forward(name, x + h, alpha) - forward(name, x - h, alpha)) / (2 * h) * dy
    assert_close(backward(name, dy, x, alpha), numeric, rtol=1e-7, atol=1e-8, what=name)


@pytest.mark.parametrize("name,alpha", [("leaky_relu", -0.2), ("elu", 0.0), ("leaky_relu", 0.0)])
def test_activation_alpha_not_positive_uses_the_input(name, alpha):
    x = np.array([-2.0, -0.5, 0.5, 2.0])
    dy = np.ones(4)
    h = 1e-6
    numeric = (forward(name, x + h, alpha) - forward(name, x - h, alpha)) / (2 * h)
    assert_close(backward(name, dy, x, alpha), numeric, rtol=1e-7, atol=1e-8, what=name)


def test_activation_in_place_and_zero_sized():
    x = sample((10,), np.float32)
    want = forward("tanh", x)
    _core.activation_forward(x, x, "tanh")
    np.testing.assert_array_equal(x, want)
    empty = np.empty((0, 3), np.float64)
    _core.activation_forward(empty, empty, "gelu")
    _core.activation_backward(empty, empty, empty, empty, "gelu")


def test_activation_backward_in_place_over_dy():
    x = sample((50,), np.float64)
    dy = sample((50,), np.float64, seed=4)
    want = backward("silu", dy, x)
    _core.activation_backward(dy, dy, x, forward("silu", x), "silu")
    np.testing.assert_array_equal(dy, want)


# --- softmax ----------------------------------------------------------------------------------

def np_log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


SHAPES = [(1,), (7,), (3, 1), (4, 9), (2, 3, 10), (2, 1000)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_and_log_softmax_match_numpy(shape, dtype):
    x = sample(shape, dtype, scale=10)
    x.flat[0] = 1000
    if x.size > 1:
        x.flat[1] = -1000
    y = np.empty_like(x)
    _core.softmax_forward(y, x)
    ly = np.empty_like(x)
    _core.log_softmax_forward(ly, x)
    want = np_log_softmax(x)
    tol = TOL[dtype] if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    assert_close(y, np.exp(want), **tol, what="softmax")
    assert_close(ly, want, **tol, what="log_softmax")
    assert np.all(np.isfinite(ly))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    x = sample((3, 4, 17), dtype, seed=5, scale=8)
    dy = sample(x.shape, dtype, seed=6, scale=1)
    tol = TOL[dtype] if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    for fwd, bwd, tfn in [
        (_core.softmax_forward, _core.softmax_backward, torch.softmax),
        (_core.log_softmax_forward, _core.log_softmax_backward, torch.log_softmax),
    ]:
        xt = torch.from_numpy(x).requires_grad_()
        yt = tfn(xt, -1)
        yt.backward(torch.from_numpy(dy))
        y = np.empty_like(x)
        fwd(y, x)
        dx = np.empty_like(x)
        bwd(dx, dy, y)
        assert_close(y, yt.detach().numpy(), **tol, what=tfn.__name__)
        assert_close(dx, xt.grad.numpy(), **tol, what=tfn.__name__ + " grad")


@pytest.mark.parametrize("log", [False, True])
def test_softmax_gradient_matches_finite_differences(log):
    fwd = _core.log_softmax_forward if log else _core.softmax_forward
    bwd = _core.log_softmax_backward if log else _core.softmax_backward
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 5))
    dy = rng.normal(size=x.shape)

    def loss(v):
        y = np.empty_like(v)
        fwd(y, v)
        return float((y * dy).sum())

    y = np.empty_like(x)
    fwd(y, x)
    dx = np.empty_like(x)
    bwd(dx, dy, y)
    h = 1e-6
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        numeric[i] = (loss(x + e) - loss(x - e)) / (2 * h)
    assert_close(dx, numeric, rtol=1e-6, atol=1e-8, what="log_softmax" if log else "softmax")


def test_softmax_in_place_and_zero_sized():
    x = sample((4, 6), np.float32)
    want = np.empty_like(x)
    _core.softmax_forward(want, x)
    _core.softmax_forward(x, x)
    np.testing.assert_array_equal(x, want)
    for shape in [(0, 4), (4, 0), (0,)]:
        e = np.empty(shape, np.float64)
        _core.softmax_forward(e, e)
        _core.log_softmax_backward(e, e, e)


# --- bad input --------------------------------------------------------------------------------

def test_activation_errors():
    x = np.zeros((2, 3), np.float32)
    y = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="fastnn.activation_forward: unknown activation 'swish'"):
        _core.activation_forward(y, x, "swish")
    with pytest.raises(TypeError, match="X must be float32 or float64, got int64"):
        _core.activation_forward(y, np.zeros((2, 3), np.int64), "relu")
    with pytest.raises(TypeError, match="Y has dtype float64 but X has dtype float32"):
        _core.activation_forward(np.zeros((2, 3)), x, "relu")
    with pytest.raises(ValueError, match=r"Y has shape \(3, 2\) but X has shape \(2, 3\)"):
        _core.activation_forward(np.zeros((3, 2), np.float32), x, "relu")
    with pytest.raises(ValueError, match="must be C-contiguous"):
        _core.activation_forward(y[:, ::2], x[:, ::2], "relu")
    ro = np.zeros((2, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="Y is read-only"):
        _core.activation_forward(ro, x, "relu")
    buf = np.zeros(7, np.float32)
    with pytest.raises(ValueError, match="Y overlaps X"):
        _core.activation_forward(buf[1:], buf[:-1], "relu")
    with pytest.raises(ValueError, match="fastnn.activation_backward: unknown activation"):
        _core.activation_backward(y, x, x, x, "Relu")
    with pytest.raises(ValueError, match=r"fastnn.activation_backward: Y has shape \(3,\)"):
        _core.activation_backward(y, x, x, np.zeros(3, np.float32), "relu")
    with pytest.raises(TypeError, match="fastnn.activation_backward: dX has dtype float64"):
        _core.activation_backward(np.zeros((2, 3)), x, x, x, "relu")


def test_softmax_errors():
    x = np.zeros((2, 3), np.float64)
    with pytest.raises(ValueError, match="fastnn.softmax_forward: X must have at least one axis"):
        _core.softmax_forward(np.zeros(()), np.zeros(()))
    with pytest.raises(TypeError, match="fastnn.log_softmax_forward: X must be float32"):
        _core.log_softmax_forward(x.astype(np.float16), x.astype(np.float16))
    with pytest.raises(ValueError, match=r"fastnn.softmax_backward: dX has shape \(2, 4\)"):
        _core.softmax_backward(np.zeros((2, 4)), x, x)
    with pytest.raises(ValueError, match="fastnn.log_softmax_backward: Y .* must be C-contig"):
        _core.log_softmax_backward(x, x, np.zeros((3, 2)).T)
    ro = np.zeros((2, 3))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="fastnn.softmax_forward: Y is read-only"):
        _core.softmax_forward(ro, x)


def test_results_identical_for_one_and_two_threads():
    saved = _core.get_num_threads()
    x = sample((300, 1001), np.float32, seed=9, scale=8)
    dy = sample(x.shape, np.float32, seed=10, scale=1)
    outs = []
    try:
        for threads in (1, 2):
            _core.set_num_threads(threads)
            run = []
            for name in ("gelu", "silu", "tanh"):
                run.append(backward(name, dy, x))
            y = np.empty_like(x)
            _core.log_softmax_forward(y, x)
            dx = np.empty_like(x)
            _core.log_softmax_backward(dx, dy, y)
            outs.append(run + [y, dx])
    finally:
        _core.set_num_threads(saved)
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
