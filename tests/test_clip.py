import math

import numpy as np
import pytest

from fastnn import Tensor
from fastnn.nn import Parameter
from fastnn.optim import clip_grad_norm_, clip_grad_value_


def param(data, grad=None):
    p = Parameter(data)
    p.grad = None if grad is None else Tensor(np.array(grad, dtype=p.data.dtype))
    return p

SHAPES = [(4, 3), (7,), (2, 2, 2)]


def make_params(dtype, scale=1.0, seed=0, with_none=True):
    rng = np.random.default_rng(seed)
    params = [param(np.zeros(s, dtype), scale * rng.standard_normal(s)) for s in SHAPES]
    if with_none:
        params.append(param(np.zeros(3, dtype)))  # grad None: skipped
    return params


def torch_clip_norm(torch, params, max_norm, norm_type):
    tparams = []
    for p in params:
        t = torch.nn.Parameter(torch.from_numpy(p.data.copy()))
        if p.grad is not None:
            t.grad = torch.from_numpy(p.grad.data.copy())
        tparams.append(t)
    total = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type=norm_type)
    return float(total), [None if t.grad is None else t.grad.numpy() for t in tparams]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf], ids=["l2", "l1", "l3", "inf"])
@pytest.mark.parametrize("max_norm", [0.5, 1e6], ids=["clipped", "not_clipped"])
def test_clip_grad_norm_matches_torch(dtype, norm_type, max_norm):
    torch = pytest.importorskip("torch")
    params = make_params(dtype)
    want_total, want_grads = torch_clip_norm(torch, params, max_norm, norm_type)
    total = clip_grad_norm_(params, max_norm, norm_type=norm_type)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert isinstance(total, float)
    assert total == pytest.approx(want_total, rel=rtol)
    for i, (p, want) in enumerate(zip(params, want_grads)):
        if want is None:
            assert p.grad is None
            continue
        diff = np.max(np.abs(p.grad.data - want))
        assert np.allclose(p.grad.data, want, rtol=rtol, atol=0), \
            f"parameter {i}: gradients differ by up to {diff:.3g}"
    if max_norm < total:
        got = math.sqrt(sum(float(np.sum(p.grad.data.astype(np.float64) ** 2))
                            for p in params if p.grad is not None))
        if norm_type == 2.0:
            assert got == pytest.approx(max_norm, rel=1e-5)


def test_clip_grad_norm_leaves_small_gradients_untouched():
    params = make_params(np.float32, with_none=False)
    before = [p.grad.data.copy() for p in params]
    total = clip_grad_norm_(params, 1e3)
    for p, b in zip(params, before):
        assert np.array_equal(p.grad.data, b)
    want = math.sqrt(sum(float(np.sum(b.astype(np.float64) ** 2)) for b in before))
    assert total == pytest.approx(want, rel=1e-6)


def test_clip_grad_norm_mixed_dtypes():
    a = make_params(np.float32, seed=1, with_none=False)
    b = make_params(np.float64, seed=2, with_none=False)
    grads = [p.grad.data.astype(np.float64) for p in a + b]
    want = math.sqrt(sum(float(np.sum(g ** 2)) for g in grads))
    total = clip_grad_norm_(a + b, 1.0)
    assert total == pytest.approx(want, rel=1e-6)
    for p, g in zip(a + b, grads):
        np.testing.assert_allclose(p.grad.data, g * (1.0 / (want + 1e-6)), rtol=1e-6)
        assert p.grad.data.dtype == p.data.dtype


def test_clip_non_contiguous_gradients_in_place():
    g = np.arange(12.0).reshape(3, 4)
    p = param(np.zeros((4, 3)))
    p.grad = Tensor(g.T)  # a transposed view
    want = math.sqrt(float(np.sum(g ** 2)))
    assert clip_grad_norm_([p], 1.0) == pytest.approx(want)
    np.testing.assert_allclose(g, np.arange(12.0).reshape(3, 4) / (want + 1e-6))
    clip_grad_value_([p], 0.1)
    assert g.max() == 0.1


def test_clip_grad_norm_single_parameter_and_generator():
    p = param(np.zeros(2), [3.0, 4.0])
    assert clip_grad_norm_(p, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(p.grad.data, [0.6, 0.8], rtol=1e-6)
    q = param(np.zeros(2), [3.0, 4.0])
    assert clip_grad_norm_((x for x in [q]), 10.0, norm_type="inf") == 4.0


def test_clip_grad_norm_no_gradients_returns_zero():
    assert clip_grad_norm_([param(np.zeros(2))], 1.0) == 0.0
    assert clip_grad_norm_([], 1.0) == 0.0


def test_clip_grad_norm_zero_sized_gradient():
    params = [param(np.zeros((0, 3)), np.zeros((0, 3))), param(np.zeros(2), [3.0, 4.0])]
    for norm_type, want in ((2.0, 5.0), (1.0, 7.0), (math.inf, 4.0)):
        assert clip_grad_norm_(params, 100.0, norm_type=norm_type) == pytest.approx(want)


def test_clip_grad_norm_nonfinite():
    p = param(np.zeros(2), [np.inf, 1.0])
    with pytest.raises(RuntimeError, match="clip_grad_norm_: the total norm of order 2.0 of "
                                           "the gradients is inf"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert np.array_equal(p.grad.data, [np.inf, 1.0])  # untouched when raising
    q = param(np.zeros(2), [np.nan, 1.0])
    assert math.isnan(clip_grad_norm_([q], 1.0))
    assert np.isnan(q.grad.data).all()  # as in PyTorch: scaled by a nan factor


@pytest.mark.parametrize("call,exc,match", [
    (lambda p: clip_grad_norm_(p, "1"), TypeError, "clip_grad_norm_: max_norm must be a real"),
    (lambda p: clip_grad_norm_(p, 1.0, norm_type=0), ValueError,
     "norm_type must be a positive number or inf, got 0"),
    (lambda p: clip_grad_norm_(p, 1.0, norm_type="fro"), ValueError,
     "norm_type must be a positive number or 'inf'"),
    (lambda p: clip_grad_norm_(3, 1.0), TypeError, "parameters must be a parameter or an "
                                                   "iterable of parameters, got int"),
    (lambda p: clip_grad_norm_([np.zeros(2)], 1.0), TypeError, "parameter 0 has no .grad"),
    (lambda p: clip_grad_value_(p, -1.0), ValueError, "clip_grad_value_: clip_value must be >= 0"),
    (lambda p: clip_grad_value_(p, None), TypeError, "clip_value must be a real number"),
])
def test_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call(make_params(np.float32))


def test_integer_gradient_is_rejected():
    p = param(np.zeros(2))
    p.grad = Tensor(np.ones(2, np.int64))
    with pytest.raises(TypeError, match="gradient of parameter 0 must be a float32 or float64"):
        clip_grad_norm_([p], 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_clip_grad_value_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    params = make_params(dtype, scale=2.0)
    want = [None if p.grad is None else torch.from_numpy(p.grad.data.copy()) for p in params]
    tparams = []
    for p, g in zip(params, want):
        t = torch.nn.Parameter(torch.from_numpy(p.data.copy()))
        t.grad = g
        tparams.append(t)
    torch.nn.utils.clip_grad_value_(tparams, 0.7)
    clip_grad_value_(params, 0.7)
    for p, t in zip(params, tparams):
        if t.grad is None:
            assert p.grad is None
        else:
            assert np.array_equal(p.grad.data, t.grad.numpy())


def test_clip_grad_value_zero_clamps_everything_to_zero():
    p = param(np.zeros(3), [-1.0, 0.5, 2.0])
    clip_grad_value_(p, 0)
    assert np.array_equal(p.grad.data, np.zeros(3))
