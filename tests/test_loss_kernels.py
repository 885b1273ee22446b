"""fastnn._core loss kernels against numpy, torch and finite differences."""

import itertools

import numpy as np
import pytest

from fastnn import _core

DTYPES = [np.float32, np.float64]
LOSS_RTOL = {np.float32: 1e-5, np.float64: 1e-12}
GRAD_TOL = {np.float32: dict(rtol=1e-5, atol=1e-7), np.float64: dict(rtol=1e-12, atol=1e-14)}


def assert_close(got, want, rtol, atol, what=""):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    diff = np.abs(got - want)
    bad = ~(diff <= atol + rtol * np.abs(want))
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(np.isnan(diff), np.inf, diff)), diff.shape)
        raise AssertionError(f"{what}: {bad.sum()} of {got.size} differ; largest difference "
                             f"{diff[i]} at {i} (got {got[i]}, want {want[i]})")


def numeric_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


# --- cross-entropy ----------------------------------------------------------------------------

def ce_case(dtype, n=6, c=5, seed=0, ignore_index=-100):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (n, c)).astype(dtype)
    labels = rng.integers(0, c, n).astype(np.int64)
    labels[1] = ignore_index
    weight = rng.uniform(0.2, 2.0, c).astype(dtype)
    return logits, labels, weight


def ce(logits, labels, **kw):
    probs = np.empty_like(logits)
    loss = _core.cross_entropy_forward(probs, logits, labels, **kw)
    return loss, probs


def ce_grad(logits, labels, grad_scale=1.0, **kw):
    _, probs = ce(logits, labels, **kw)
    d = np.empty_like(logits)
    _core.cross_entropy_backward(d, probs, labels, grad_scale=grad_scale, **kw)
    return d


CE_OPTIONS = list(itertools.product([False, True], [0.0, 0.15], ["mean", "sum"], [-100, 2]))


def ce_kwargs(weight, weighted, smoothing, reduction, ignore_index):
    return dict(weight=weight if weighted else None, label_smoothing=smoothing,
                reduction=reduction, ignore_index=ignore_index)


def test_cross_entropy_matches_numpy_unweighted():
    logits, labels, _ = ce_case(np.float64, ignore_index=-100)
    loss, probs = ce(logits, labels)
    m = logits.max(1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(1, keepdims=True))
    keep = labels != -100
    want = -logp[keep, labels[keep]].mean()
    assert isinstance(loss, float)
    assert abs(loss - want) <= 1e-13 * abs(want)
    assert_close(probs, np.exp(logp), rtol=1e-14, atol=1e-15, what="probs")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted,smoothing,reduction,ignore_index", CE_OPTIONS)
def test_cross_entropy_matches_torch(weighted, smoothing, reduction, ignore_index, dtype):
    torch = pytest.importorskip("torch")
    logits, labels, weight = ce_case(dtype, ignore_index=ignore_index)
    kw = ce_kwargs(weight, weighted, smoothing, reduction, ignore_index)
    xt = torch.from_numpy(logits).requires_grad_()
    lt = torch.nn.functional.cross_entropy(
        xt, torch.from_numpy(labels), weight=torch.from_numpy(weight) if weighted else None,
        label_smoothing=smoothing, reduction=reduction, ignore_index=ignore_index)
    lt.backward()
    loss, _ = ce(logits, labels, **kw)
    assert abs(loss - lt.item()) <= LOSS_RTOL[dtype] * abs(lt.item()), (loss, lt.item())
    assert_close(ce_grad(logits, labels, **kw), xt.grad.numpy(), **GRAD_TOL[dtype],
                 what="cross_entropy grad")


@pytest.mark.parametrize("weighted,smoothing,reduction,ignore_index", CE_OPTIONS)
def test_cross_entropy_gradient_matches_finite_differences(weighted, smoothing, reduction,
                                                          ignore_index):
    logits, labels, weight = ce_case(np.float64, n=4, c=4, seed=1, ignore_index=ignore_index)
    kw = ce_kwargs(weight, weighted, smoothing, reduction, ignore_index)
    numeric = numeric_grad(lambda x: ce(x, labels, **kw)[0], logits)
    got = ce_grad(logits, labels, grad_scale=1.0, **kw)
    assert_close(got, numeric, rtol=1e-7, atol=1e-9, what="cross_entropy grad")
    assert_close(ce_grad(logits, labels, grad_scale=-2.5, **kw), -2.5 * got, rtol=1e-14,
                 atol=1e-15, what="grad_scale")


def test_cross_entropy_extreme_logits_and_ignored_rows():
    logits = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 999.0], [5.0, 1.0, 2.0]])
    labels = np.array([1, 2, -100], np.int64)
    loss, probs = ce(logits, labels, reduction="sum")
    assert np.isfinite(loss)
    assert abs(loss - (2000.0 + 1.0 + np.log1p(np.exp(-1.0)))) < 1e-9
    d = ce_grad(logits, labels, reduction="sum")
    np.testing.assert_array_equal(d[2], 0.0)
    assert np.all(np.isfinite(d))


def test_cross_entropy_all_ignored_is_nan_like_torch():
    logits = np.zeros((2, 3))
    labels = np.full(2, -100, np.int64)
    loss, _ = ce(logits, labels)
    assert np.isnan(loss)
    np.testing.assert_array_equal(ce_grad(logits, labels), 0.0)


def test_cross_entropy_backward_in_place_over_probs():
    logits, labels, weight = ce_case(np.float32)
    want = ce_grad(logits, labels, weight=weight, label_smoothing=0.1)
    _, probs = ce(logits, labels, weight=weight, label_smoothing=0.1)
    _core.cross_entropy_backward(probs, probs, labels, weight=weight, label_smoothing=0.1)
    np.testing.assert_array_equal(probs, want)


# --- MSE --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_matches_numpy_and_torch(reduction, dtype):
    rng = np.random.default_rng(2)
    pred = rng.normal(size=(3, 4, 5)).astype(dtype)
    target = rng.normal(size=pred.shape).astype(dtype)
    diff = pred.astype(np.float64) - target
    want = (diff**2).mean() if reduction == "mean" else (diff**2).sum()
    loss = _core.mse_forward(pred, target, reduction)
    assert abs(loss - want) <= 1e-13 * want
    d = np.empty_like(pred)
    _core.mse_backward(d, pred, target, reduction, 1.0)
    want_grad = 2 * diff / (pred.size if reduction == "mean" else 1)
    assert_close(d, want_grad, **GRAD_TOL[dtype], what="mse grad")
    torch = pytest.importorskip("torch")
    pt = torch.from_numpy(pred).requires_grad_()
    lt = torch.nn.functional.mse_loss(pt, torch.from_numpy(target), reduction=reduction)
    lt.backward()
    assert abs(loss - lt.item()) <= LOSS_RTOL[dtype] * lt.item()
    assert_close(d, pt.grad.numpy(), **GRAD_TOL[dtype], what="mse grad vs torch")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_gradient_matches_finite_differences(reduction):
    rng = np.random.default_rng(3)
    pred = rng.normal(size=(4, 3))
    target = rng.normal(size=pred.shape)
    numeric = numeric_grad(lambda p: _core.mse_forward(p, target, reduction), pred)
    d = np.empty_like(pred)
    _core.mse_backward(d, pred, target, reduction, grad_scale=3.0)
    assert_close(d, 3.0 * numeric, rtol=1e-7, atol=1e-9, what="mse grad")


def test_mse_zero_sized_mean_is_nan_and_sum_is_zero():
    e = np.empty((0, 3), np.float32)
    assert np.isnan(_core.mse_forward(e, e))
    assert _core.mse_forward(e, e, "sum") == 0.0


# --- BCE with logits --------------------------------------------------------------------------

def bce_case(dtype, shape=(4, 3), seed=4):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, shape).astype(dtype)
    target = rng.uniform(0, 1, shape).astype(dtype)
    target.flat[::3] = np.round(target.flat[::3])
    pos_weight = rng.uniform(0.5, 3, shape[-1]).astype(dtype)
    return logits, target, pos_weight


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted,reduction", itertools.product([False, True], ["mean", "sum"]))
def test_bce_with_logits_matches_torch(weighted, reduction, dtype):
    torch = pytest.importorskip("torch")
    logits, target, pos_weight = bce_case(dtype, shape=(2, 3, 5))
    logits.flat[:2] = [1000, -1000]
    pw = pos_weight if weighted else None
    xt = torch.from_numpy(logits).requires_grad_()
    lt = torch.nn.functional.binary_cross_entropy_with_logits(
        xt, torch.from_numpy(target), pos_weight=torch.from_numpy(pw) if weighted else None,
        reduction=reduction)
    lt.backward()
    loss = _core.bce_with_logits_forward(logits, target, pw, reduction)
    assert abs(loss - lt.item()) <= LOSS_RTOL[dtype] * abs(lt.item()), (loss, lt.item())
    d = np.empty_like(logits)
    _core.bce_with_logits_backward(d, logits, target, pw, reduction, 1.0)
    assert_close(d, xt.grad.numpy(), **GRAD_TOL[dtype], what="bce grad")


@pytest.mark.parametrize("weighted,reduction", itertools.product([False, True], ["mean", "sum"]))
def test_bce_with_logits_gradient_matches_finite_differences(weighted, reduction):
    logits, target, pos_weight = bce_case(np.float64)
    pw = pos_weight if weighted else None
    numeric = numeric_grad(
        lambda x: _core.bce_with_logits_forward(x, target, pw, reduction), logits)
    d = np.empty_like(logits)
    _core.bce_with_logits_backward(d, logits, target, pw, reduction, grad_scale=0.5)
    assert_close(d, 0.5 * numeric, rtol=1e-7, atol=1e-9, what="bce grad")


def test_bce_with_logits_matches_numpy_formula():
    logits, target, pos_weight = bce_case(np.float64, shape=(6, 4))
    p = 1 / (1 + np.exp(-logits))
    want = -(pos_weight * target * np.log(p) + (1 - target) * np.log(1 - p)).mean()
    got = _core.bce_with_logits_forward(logits, target, pos_weight=pos_weight)
    assert abs(got - want) <= 1e-12 * abs(want)


# --- bad input --------------------------------------------------------------------------------

def test_cross_entropy_errors():
    logits, labels, weight = ce_case(np.float32)
    probs = np.empty_like(logits)
    with pytest.raises(ValueError, match=r"fastnn.cross_entropy_forward: label 5 in row 3 is "
                                         r"out of range for 5 classes"):
        bad = labels.copy()
        bad[3] = 5
        _core.cross_entropy_forward(probs, logits, bad)
    with pytest.raises(ValueError, match=r"fastnn.cross_entropy_backward: label -1 in row 0"):
        bad = labels.copy()
        bad[0] = -1
        _core.cross_entropy_backward(probs, probs, bad)
    with pytest.raises(TypeError, match="fastnn.cross_entropy_forward: labels must be int64, "
                                        "got int32"):
        _core.cross_entropy_forward(probs, logits, labels.astype(np.int32))
    with pytest.raises(ValueError, match=r"labels has shape \(5,\), expected \(6,\)"):
        _core.cross_entropy_forward(probs, logits, labels[:5])
    with pytest.raises(ValueError, match="unknown reduction 'none'"):
        _core.cross_entropy_forward(probs, logits, labels, reduction="none")
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\], got 1.5"):
        _core.cross_entropy_forward(probs, logits, labels, label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"weight has shape \(4,\), expected \(5,\)"):
        _core.cross_entropy_forward(probs, logits, labels, weight=weight[:4])
    with pytest.raises(TypeError, match="weight has dtype float64 but logits has dtype float32"):
        _core.cross_entropy_forward(probs, logits, labels, weight=weight.astype(np.float64))
    with pytest.raises(ValueError, match="logits must be 2-D"):
        _core.cross_entropy_forward(probs.ravel(), logits.ravel(), labels)
    with pytest.raises(ValueError, match="logits .* must be C-contiguous"):
        _core.cross_entropy_forward(probs.T.copy(), logits.T, labels)
    with pytest.raises(ValueError, match="probs overlaps logits"):
        _core.cross_entropy_forward(logits, logits, labels)
    ro = np.empty_like(logits)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="probs is read-only"):
        _core.cross_entropy_forward(ro, logits, labels)
    with pytest.raises(ValueError, match="dlogits is read-only"):
        _core.cross_entropy_backward(ro, probs, labels)


def test_mse_and_bce_errors():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"fastnn.mse_forward: target has shape \(4, 3\) but "
                                         r"pred has shape \(3, 4\)"):
        _core.mse_forward(x, np.zeros((4, 3), np.float32))
    with pytest.raises(TypeError, match="fastnn.mse_forward: target has dtype float64"):
        _core.mse_forward(x, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="fastnn.mse_backward: unknown reduction 'avg'"):
        _core.mse_backward(x.copy(), x, x, "avg")
    with pytest.raises(ValueError, match="fastnn.mse_backward: dpred is read-only"):
        ro = x.copy()
        ro.flags.writeable = False
        _core.mse_backward(ro, x, x)
    with pytest.raises(ValueError, match=r"fastnn.bce_with_logits_forward: pos_weight has shape "
                                         r"\(3,\), expected \(4,\)"):
        _core.bce_with_logits_forward(x, x, np.ones(3, np.float32))
    with pytest.raises(ValueError, match="fastnn.bce_with_logits_backward: logits .* must be "
                                         "C-contiguous"):
        _core.bce_with_logits_backward(x.T.copy(), x.T, x.T.copy())
    with pytest.raises(TypeError, match="fastnn.bce_with_logits_forward: logits must be float32"):
        _core.bce_with_logits_forward(x.astype(np.int32), x.astype(np.int32))
    with pytest.raises(ValueError, match="fastnn.bce_with_logits_forward: pos_weight needs"):
        _core.bce_with_logits_forward(np.zeros(()), np.zeros(()), np.ones(1))


def test_losses_identical_for_one_and_two_threads():
    saved = _core.get_num_threads()
    rng = np.random.default_rng(11)
    logits = rng.normal(0, 3, (5000, 37)).astype(np.float32)
    labels = rng.integers(0, 37, 5000).astype(np.int64)
    target = rng.uniform(0, 1, logits.shape).astype(np.float32)
    results = []
    try:
        for threads in (1, 2):
            _core.set_num_threads(threads)
            loss, probs = ce(logits, labels, label_smoothing=0.1)
            d = ce_grad(logits, labels, label_smoothing=0.1)
            bce = _core.bce_with_logits_forward(logits, target)
            mse = _core.mse_forward(logits, target, "sum")
            results.append((loss, probs, d, bce, mse))
    finally:
        _core.set_num_threads(saved)
    (l1, p1, d1, b1, m1), (l2, p2, d2, b2, m2) = results
    assert (l1, b1, m1) == (l2, b2, m2)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(d1, d2)
