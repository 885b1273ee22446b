"""fastnn._core conv2d bindings: against torch, finite differences, determinism, bad input."""

import numpy as np
import pytest

import fastnn
from fastnn import _core

TOL = {np.float32: 2e-5, np.float64: 1e-12}

# (name, input shape, weight shape, options)
CASES = [
    ("batch_1_single_channel", (1, 1, 5, 5), (1, 1, 3, 3), {}),
    ("odd_sizes", (3, 3, 7, 9), (5, 3, 3, 2), {}),
    ("stride_2_pad_1", (2, 4, 9, 8), (6, 4, 3, 3), dict(stride=2, padding=1)),
    ("stride_3_pad_2", (2, 2, 11, 10), (3, 2, 3, 3), dict(stride=3, padding=2)),
    ("rect_stride_pad_dilation", (2, 3, 10, 9), (4, 3, 3, 2),
     dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1))),
    ("dilation_2", (2, 3, 9, 9), (4, 3, 3, 3), dict(dilation=2)),
    ("groups_2", (2, 4, 6, 7), (6, 2, 3, 3), dict(padding=1, groups=2)),
    ("depthwise", (3, 5, 8, 6), (5, 1, 3, 3), dict(padding=1, groups=5)),
    ("pointwise_1x1", (3, 6, 5, 7), (4, 6, 1, 1), {}),
    ("asymmetric_padding", (2, 2, 6, 7), (3, 2, 2, 4), dict(padding=(0, 1, 1, 2))),
    ("conv1d_as_h_1", (4, 3, 1, 17), (5, 3, 1, 3), dict(padding=(0, 0, 1, 1), stride=(1, 2))),
    ("mnist_conv2", (4, 32, 13, 13), (64, 32, 3, 3), {}),
    ("wide_same_padding", (3, 4, 10, 24), (5, 4, 3, 3), dict(padding=1)),
    ("wide_dilated_asymmetric_groups", (2, 4, 9, 40), (6, 2, 3, 4),
     dict(padding=(1, 0, 2, 1), dilation=(1, 2), groups=2)),
    ("conv1d_same", (4, 6, 1, 40), (8, 6, 1, 5), dict(padding=(0, 0, 2, 2))),
]


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def torch_conv(torch, x, w, b, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d with fastnn's padding forms (int, pair or 4 ints)."""
    F = torch.nn.functional
    if not isinstance(padding, int) and len(padding) == 4:
        top, bottom, left, right = padding
        x = F.pad(x, (left, right, top, bottom))
        padding = 0
    return F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)


def forward(x, w, b=None, **opts):
    y = np.empty(_core.conv2d_output_shape(x.shape, w.shape, **opts), dtype=x.dtype)
    _core.conv2d_forward(y, x, w, b, **opts)
    return y


def backward(dy, x, w, accumulate=False, **opts):
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty(w.shape[0], dtype=x.dtype)
    _core.conv2d_backward(dy, x, w, dX=dx, dW=dw, db=db, accumulate=accumulate, **opts)
    return dx, dw, db


def data(xs, ws, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    return x, w, b


def assert_close(got, want, tol, what):
    err = np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))) if got.size else 0.0
    assert err <= tol, f"{what}: largest relative difference {err:.3g} > {tol:.3g}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,xs,ws,opts", CASES, ids=[c[0] for c in CASES])
def test_forward_backward_match_torch(name, xs, ws, opts, dtype):
    torch = pytest.importorskip("torch")
    x, w, b = data(xs, ws, dtype)
    y = forward(x, w, b, **opts)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    ty = torch_conv(torch, tx, tw, tb, **opts)
    scale = np.sqrt(np.prod(ws[1:]))  # outputs grow with the fan-in
    assert_close(y / scale, ty.detach().numpy() / scale, TOL[dtype], f"{name} Y")
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    ty.backward(torch.tensor(dy))
    dx, dw, db = backward(dy, x, w, **opts)
    assert_close(dx / scale, tx.grad.numpy() / scale, TOL[dtype], f"{name} dX")
    big = np.sqrt(dy.size / ws[0])  # weight gradients sum over the batch and positions
    assert_close(dw / big, tw.grad.numpy() / big, TOL[dtype] * 4, f"{name} dW")
    assert_close(db / big, tb.grad.numpy() / big, TOL[dtype] * 4, f"{name} db")


def test_accumulate_adds_and_overwrite_replaces():
    x, w, b = data((2, 3, 6, 6), (4, 3, 3, 3), np.float64)
    dy = np.random.default_rng(2).standard_normal((2, 4, 4, 4))
    _, dw_fresh, db_fresh = backward(dy, x, w)
    dw = np.full_like(w, 0.5)
    db = np.full(4, -1.0)
    _core.conv2d_backward(dy, x, w, dW=dw, db=db)  # accumulate=True by default
    assert_close(dw, dw_fresh + 0.5, 1e-12, "accumulated dW")
    assert_close(db, db_fresh - 1.0, 1e-12, "accumulated db")
    dw[:] = np.nan
    _core.conv2d_backward(dy, x, w, dW=dw, accumulate=False)
    assert_close(dw, dw_fresh, 1e-12, "overwritten dW")


def test_no_bias_and_skipped_gradients():
    x, w, _ = data((2, 2, 5, 5), (3, 2, 3, 3), np.float64)
    y = forward(x, w, None, padding=1)
    y_ref = forward(x, w, np.zeros(3), padding=1)
    assert np.array_equal(y, y_ref)
    dy = np.ones_like(y)
    dx = np.empty_like(x)
    _core.conv2d_backward(dy, x, w, dX=dx, padding=1)
    dx_all, _, _ = backward(dy, x, w, padding=1)
    assert np.array_equal(dx, dx_all)


@pytest.mark.parametrize("opts", [dict(stride=2, padding=1), dict(dilation=2, padding=(1, 0, 2, 1)),
                                  dict(groups=2, padding=1)])
def test_gradients_match_finite_differences(opts):
    x, w, b = data((2, 4, 5, 6), (4, 4 // opts.get("groups", 1), 3, 3), np.float64, seed=3)
    r = np.random.default_rng(4).standard_normal(forward(x, w, b, **opts).shape)

    def loss():
        return float(np.sum(forward(x, w, b, **opts) * r))

    dx, dw, db = backward(r, x, w, **opts)
    for arr, grad, what in ((x, dx, "dX"), (w, dw, "dW"), (b, db, "db")):
        flat, gflat = arr.reshape(-1), grad.reshape(-1)
        for i in range(0, flat.size, max(1, flat.size // 23)):
            saved = flat[i]
            flat[i] = saved + 1e-6
            up = loss()
            flat[i] = saved - 1e-6
            down = loss()
            flat[i] = saved
            numeric = (up - down) / 2e-6
            assert abs(numeric - gflat[i]) <= 1e-6 * max(1.0, abs(numeric)), (
                f"{what}[{i}]: finite difference {numeric} vs gradient {gflat[i]}")


def test_bit_identical_across_thread_counts():
    x, w, b = data((16, 8, 14, 14), (16, 8, 3, 3), np.float32, seed=5)
    dy = np.random.default_rng(6).standard_normal((16, 16, 12, 12)).astype(np.float32)
    saved = fastnn.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            fastnn.set_num_threads(threads)
            results.append((forward(x, w, b),) + backward(dy, x, w))
    finally:
        fastnn.set_num_threads(saved)
    for one, two in zip(*results):
        assert np.array_equal(one, two)


@pytest.mark.parametrize("activation,alpha,keep_z", [("relu", 0.0, False), ("tanh", 0.0, False),
                                                    ("leaky_relu", 0.2, False),
                                                    ("gelu", 0.0, True), ("silu", 0.0, True)])
@pytest.mark.parametrize("xs,ws,opts", [((3, 2, 7, 8), (4, 2, 3, 3), dict(padding=1)),
                                        ((2, 4, 9, 20), (6, 2, 3, 3), dict(groups=2)),
                                        ((2, 3, 8, 8), (5, 3, 2, 2), dict(stride=2))])
def test_fused_activation_matches_torch(activation, alpha, keep_z, xs, ws, opts):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    acts = {"relu": F.relu, "tanh": torch.tanh, "leaky_relu": lambda v: F.leaky_relu(v, alpha),
            "gelu": F.gelu, "silu": F.silu}
    x, w, b = data(xs, ws, np.float64, seed=8)
    shape = _core.conv2d_output_shape(xs, ws, **opts)
    y, z = np.empty(shape), (np.empty(shape) if keep_z else None)
    _core.conv2d_forward(y, x, w, b, activation=activation, alpha=alpha, Z=z, **opts)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    tz = torch_conv(torch, tx, tw, tb, **opts)
    ty = acts[activation](tz)
    assert_close(y, ty.detach().numpy(), 1e-12, f"{activation} Y")
    if keep_z:
        assert_close(z, tz.detach().numpy(), 1e-12, f"{activation} Z")
    dy = np.random.default_rng(9).standard_normal(shape)
    ty.backward(torch.tensor(dy))
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    _core.conv2d_backward(dy, x, w, Y=None if keep_z else y, Z=z, activation=activation,
                          alpha=alpha, dX=dx, dW=dw, db=db, accumulate=False, **opts)
    for got, t, what in ((dx, tx, "dX"), (dw, tw, "dW"), (db, tb, "db")):
        assert_close(got, t.grad.numpy(), 1e-11, f"{activation} {what}")


def test_fused_activation_errors():
    x, w, y = arrays()
    dy = np.zeros_like(y)
    with pytest.raises(ValueError, match="conv2d_forward: unknown activation 'swish'"):
        _core.conv2d_forward(y, x, w, activation="swish")
    with pytest.raises(ValueError, match="conv2d_backward: activation 'relu' needs the forward's "
                       "output Y or its pre-activation Z"):
        _core.conv2d_backward(dy, x, w, activation="relu", dW=np.zeros_like(w))
    with pytest.raises(ValueError, match=r"conv2d_backward: activation 'gelu' needs the "
                       r"pre-activation Z \(pass Z to conv2d_forward\)"):
        _core.conv2d_backward(dy, x, w, Y=y, activation="gelu", dW=np.zeros_like(w))
    with pytest.raises(ValueError, match=r"conv2d_forward: Z has shape \(2, 4, 5, 5\), expected"):
        _core.conv2d_forward(y, x, w, Z=np.zeros((2, 4, 5, 5), np.float32))
    with pytest.raises(ValueError, match="conv2d_forward: Z overlaps Y"):
        _core.conv2d_forward(y, x, w, Z=y)
    with pytest.raises(TypeError, match="conv2d_backward: Y has dtype float64"):
        _core.conv2d_backward(dy, x, w, Y=y.astype(np.float64), activation="relu")


def test_output_shape_helper():
    assert _core.conv2d_output_shape((64, 1, 28, 28), (32, 1, 3, 3)) == (64, 32, 26, 26)
    assert _core.conv2d_output_shape((2, 4, 9, 8), (6, 2, 3, 3), stride=2, padding=1,
                                     groups=2) == (2, 6, 5, 4)
    assert _core.conv2d_output_shape((1, 1, 1, 10), (1, 1, 1, 4),
                                     padding=(0, 0, 1, 2)) == (1, 1, 1, 10)  # "same", even k
    assert _core.conv2d_output_shape((1, 1, 10, 10), (1, 1, 3, 3), dilation=(2, 3)) == (1, 1, 6, 4)


# ---- bad input --------------------------------------------------------------------------------

def arrays(dtype=np.float32):
    x = np.zeros((2, 3, 8, 8), dtype)
    w = np.zeros((4, 3, 3, 3), dtype)
    y = np.zeros((2, 4, 6, 6), dtype)
    return x, w, y


def test_channel_mismatch_names_both_shapes():
    x, _, y = arrays()
    w = np.zeros((8, 4, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"conv2d_forward: input has 3 channels but weight "
                       r"expects 4 \(groups=1\): input \(2, 3, 8, 8\), weight \(8, 4, 3, 3\)"):
        _core.conv2d_forward(y, x, w)


@pytest.mark.parametrize("ws,groups,match", [
    ((4, 1, 3, 3), 2, "input channels 3 are not divisible by groups"),
    ((3, 1, 3, 3), 3, None),
    ((4, 1, 3, 3), 3, "output channels 4 are not divisible by groups"),
    ((4, 3, 3, 3), 0, "groups must be >= 1"),
])
def test_groups_checks(ws, groups, match):
    if match is None:
        assert _core.conv2d_output_shape((2, 3, 8, 8), ws, groups=groups) == (2, 3, 6, 6)
        return
    with pytest.raises(ValueError, match=match):
        _core.conv2d_output_shape((2, 3, 8, 8), ws, groups=groups)


def test_kernel_larger_than_padded_input_refused():
    with pytest.raises(ValueError, match=r"kernel 5x5 with dilation 1x1 is larger than the "
                       r"padded input 4x4"):
        _core.conv2d_output_shape((1, 1, 2, 2), (1, 1, 5, 5), padding=1)
    with pytest.raises(ValueError, match="larger than the padded input"):
        _core.conv2d_output_shape((1, 1, 4, 4), (1, 1, 3, 3), dilation=2)


@pytest.mark.parametrize("kw,match", [
    (dict(stride=0), "stride values must be >= 1"),
    (dict(padding=-1), "padding values must be >= 0"),
    (dict(padding=(1, 2, 3)), "padding must have 2 or 4 values"),
    (dict(dilation=(1, 1, 1)), "dilation must have 2 values"),
])
def test_bad_option_values(kw, match):
    with pytest.raises(ValueError, match=match):
        _core.conv2d_output_shape((1, 1, 8, 8), (1, 1, 3, 3), **kw)


@pytest.mark.parametrize("kw", [dict(stride=1.5), dict(padding="same"), dict(dilation=True)])
def test_bad_option_types(kw):
    with pytest.raises(TypeError, match="conv2d_output_shape"):
        _core.conv2d_output_shape((1, 1, 8, 8), (1, 1, 3, 3), **kw)


def test_wrong_ndim_refused():
    with pytest.raises(ValueError, match=r"input must be 4-D .* input \(3, 8, 8\)"):
        _core.conv2d_output_shape((3, 8, 8), (4, 3, 3, 3))
    with pytest.raises(ValueError, match=r"weight must be 4-D"):
        _core.conv2d_output_shape((1, 3, 8, 8), (4, 3, 3))


def test_dtype_errors():
    x, w, y = arrays()
    with pytest.raises(TypeError, match="conv2d_forward: X must be float32 or float64, got int64"):
        _core.conv2d_forward(y, x.astype(np.int64), w)
    with pytest.raises(TypeError, match="conv2d_forward: W has dtype float64 but X has dtype"):
        _core.conv2d_forward(y, x, w.astype(np.float64))
    with pytest.raises(TypeError, match="conv2d_backward: dY has dtype float64"):
        _core.conv2d_backward(y.astype(np.float64), x, w, dX=np.zeros_like(x))
    with pytest.raises(TypeError):  # lists are not converted silently
        _core.conv2d_forward(y, x.tolist(), w)


def test_layout_and_shape_errors():
    x, w, y = arrays()
    with pytest.raises(ValueError, match="X with shape .* must be C-contiguous"):
        _core.conv2d_forward(y, np.asfortranarray(x), w)
    with pytest.raises(ValueError, match=r"Y has shape \(2, 4, 7, 7\), expected \(2, 4, 6, 6\)"):
        _core.conv2d_forward(np.zeros((2, 4, 7, 7), np.float32), x, w)
    with pytest.raises(ValueError, match=r"b has shape \(3,\), expected \(4,\)"):
        _core.conv2d_forward(y, x, w, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"dY has shape \(2, 4, 5, 5\), expected \(2, 4, 6, 6\)"):
        _core.conv2d_backward(np.zeros((2, 4, 5, 5), np.float32), x, w)
    with pytest.raises(ValueError, match=r"dW has shape \(4, 3, 3\), expected \(4, 3, 3, 3\)"):
        _core.conv2d_backward(y, x, w, dW=np.zeros((4, 3, 3), np.float32))


def test_read_only_and_overlapping_outputs():
    x, w, y = arrays()
    y.flags.writeable = False
    with pytest.raises(ValueError, match="conv2d_forward: Y is read-only"):
        _core.conv2d_forward(y, x, w)
    dy = np.zeros((2, 4, 6, 6), np.float32)
    with pytest.raises(ValueError, match="conv2d_backward: dX overlaps X"):
        _core.conv2d_backward(dy, x, w, dX=x)
    dw = np.zeros_like(w)
    with pytest.raises(ValueError, match="conv2d_backward: db overlaps dW"):
        _core.conv2d_backward(dy, x, w, dW=dw, db=dw.reshape(-1)[:4])
