"""nn.MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, GlobalAvgPool2d and their functional forms."""

import numpy as np
import pytest

import fastnn
import fastnn.functional as F
from fastnn import nn
from fastnn.utils import gradcheck

TOL = {np.float32: 1e-6, np.float64: 1e-14}


def assert_close(got, want, tol, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want)))) if got.size else 0.0
    assert err <= tol, f"{what}: largest relative difference {err:.3g} > {tol:.3g}"


def run_both(torch, layer, twin, x_shape, dtype, seed=0):
    """Output and input gradient of the fastnn layer and its torch twin on the same data."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    xt = fastnn.Tensor(x.copy(), requires_grad=True)
    y = layer(xt)
    tx = torch.tensor(x, requires_grad=True)
    ty = twin(tx)
    dy = rng.standard_normal(y.shape).astype(dtype)
    y.backward(dy)
    ty.backward(torch.from_numpy(dy))
    return (y.data, xt.grad.data), (ty.detach().numpy(), tx.grad.numpy())


MAX_CASES = [
    ("batch_1_single_channel", dict(kernel_size=2), (1, 1, 4, 4)),
    ("odd_sizes_floor", dict(kernel_size=2), (2, 3, 7, 9)),
    ("odd_sizes_ceil", dict(kernel_size=2, ceil_mode=True), (2, 3, 7, 9)),
    ("stride_1_overlapping", dict(kernel_size=3, stride=1), (2, 2, 6, 5)),
    ("padding", dict(kernel_size=3, stride=2, padding=1), (2, 3, 9, 8)),
    ("dilation", dict(kernel_size=2, stride=1, dilation=2), (1, 2, 7, 6)),
    ("rect_all", dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
     (2, 2, 8, 7)),
    ("ceil_with_padding", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
     (1, 2, 6, 6)),
    ("unbatched", dict(kernel_size=2), (3, 6, 6)),
    ("mnist_pool", dict(kernel_size=2), (4, 32, 26, 26)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,opts,x_shape", MAX_CASES, ids=[c[0] for c in MAX_CASES])
def test_max_pool_matches_torch(name, opts, x_shape, dtype):
    torch = pytest.importorskip("torch")
    ours, theirs = run_both(torch, nn.MaxPool2d(**opts), torch.nn.MaxPool2d(**opts), x_shape,
                            dtype)
    assert_close(ours[0], theirs[0], 0, f"{name} output")
    assert_close(ours[1], theirs[1], TOL[dtype], f"{name} input gradient")


def test_max_pool_return_indices_match_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 8)).astype(np.float32)
    y, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    ty, tidx = torch.nn.functional.max_pool2d(torch.from_numpy(x), 3, 2, 1, return_indices=True)
    assert np.array_equal(y.data, ty.numpy())
    assert idx.dtype == np.int64 and np.array_equal(idx.data, tidx.numpy())
    out, indices = nn.MaxPool2d(3, 2, 1, return_indices=True)(x)
    assert np.array_equal(indices.data, tidx.numpy())


AVG_CASES = [
    ("batch_1_single_channel", dict(kernel_size=2), (1, 1, 4, 4)),
    ("odd_sizes_ceil", dict(kernel_size=3, stride=2, ceil_mode=True), (2, 3, 8, 9)),
    ("padding_included", dict(kernel_size=3, stride=1, padding=1), (2, 2, 5, 6)),
    ("padding_excluded", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
     (2, 2, 7, 6)),
    ("divisor_override", dict(kernel_size=2, divisor_override=3), (1, 3, 6, 6)),
    ("rect", dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1)), (2, 2, 5, 7)),
    ("unbatched", dict(kernel_size=2), (3, 4, 6)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,opts,x_shape", AVG_CASES, ids=[c[0] for c in AVG_CASES])
def test_avg_pool_matches_torch(name, opts, x_shape, dtype):
    torch = pytest.importorskip("torch")
    ours, theirs = run_both(torch, nn.AvgPool2d(**opts), torch.nn.AvgPool2d(**opts), x_shape,
                            dtype)
    assert_close(ours[0], theirs[0], TOL[dtype] * 4, f"{name} output")
    assert_close(ours[1], theirs[1], TOL[dtype] * 4, f"{name} input gradient")


ADAPTIVE_CASES = [
    ("global", 1, (2, 3, 7, 5)),
    ("divides", (2, 3), (2, 2, 8, 9)),
    ("uneven_windows", (3, 4), (1, 2, 7, 10)),
    ("larger_than_input", (5, 6), (1, 1, 3, 4)),
    ("keep_width", (2, None), (2, 2, 6, 5)),
    ("unbatched", 2, (3, 5, 5)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,size,x_shape", ADAPTIVE_CASES, ids=[c[0] for c in ADAPTIVE_CASES])
def test_adaptive_avg_pool_matches_torch(name, size, x_shape, dtype):
    torch = pytest.importorskip("torch")
    ours, theirs = run_both(torch, nn.AdaptiveAvgPool2d(size), torch.nn.AdaptiveAvgPool2d(size),
                            x_shape, dtype)
    assert_close(ours[0], theirs[0], TOL[dtype] * 4, f"{name} output")
    assert_close(ours[1], theirs[1], TOL[dtype] * 4, f"{name} input gradient")


def test_global_avg_pool_is_flat_channel_mean():
    rng = np.random.default_rng(2)
    x = fastnn.Tensor(rng.standard_normal((3, 4, 5, 6)), requires_grad=True)
    y = nn.GlobalAvgPool2d()(x)
    assert y.shape == (3, 4)
    assert_close(y.data, x.data.mean(axis=(2, 3)), 1e-14, "global average")
    y.sum().backward()
    assert_close(x.grad.data, np.full(x.shape, 1.0 / 30), 1e-15, "global average gradient")
    assert nn.GlobalAvgPool2d()(np.ones((4, 5, 6), np.float32)).shape == (4,)


@pytest.mark.parametrize("name,fn", [
    ("max_pool", lambda x: F.max_pool2d(x, 3, 2, 1)),
    ("max_pool_dilated_ceil", lambda x: F.max_pool2d(x, 2, 2, 0, dilation=2, ceil_mode=True)),
    ("avg_pool", lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)),
    ("avg_pool_ceil", lambda x: F.avg_pool2d(x, 2, ceil_mode=True)),
    ("adaptive", lambda x: F.adaptive_avg_pool2d(x, (2, 3))),
])
def test_gradients_match_finite_differences(name, fn):
    # Distinct, well separated values so that no max-pool window has a near tie.
    rng = np.random.default_rng(5)
    values = rng.permutation(2 * 2 * 5 * 7).astype(np.float64).reshape(2, 2, 5, 7) * 0.1
    x = fastnn.Tensor(values, requires_grad=True)
    assert gradcheck(fn, [x], eps=1e-4)


def test_reprs_match_torch():
    torch = pytest.importorskip("torch")
    pairs = [
        (nn.MaxPool2d(2), torch.nn.MaxPool2d(2)),
        (nn.MaxPool2d((2, 3), padding=1, ceil_mode=True),
         torch.nn.MaxPool2d((2, 3), padding=1, ceil_mode=True)),
        (nn.AvgPool2d(3, 1, 1), torch.nn.AvgPool2d(3, 1, 1)),
        (nn.AdaptiveAvgPool2d(1), torch.nn.AdaptiveAvgPool2d(1)),
        (nn.AdaptiveAvgPool2d((2, None)), torch.nn.AdaptiveAvgPool2d((2, None))),
    ]
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)


def test_bit_identical_across_thread_counts():
    x = np.random.default_rng(6).standard_normal((16, 32, 26, 26)).astype(np.float32)
    layers = [nn.MaxPool2d(2), nn.AvgPool2d(3, 2, 1), nn.AdaptiveAvgPool2d((5, 7))]
    for layer in layers:
        results = []
        for threads in (1, 2):
            fastnn.set_num_threads(threads)
            xt = fastnn.Tensor(x, requires_grad=True)
            y = layer(xt)
            (y * y).sum().backward()
            results.append((y.data, xt.grad.data))
        assert np.array_equal(results[0][0], results[1][0]), f"{layer!r} output"
        assert np.array_equal(results[0][1], results[1][1]), f"{layer!r} input gradient"


# --- errors ------------------------------------------------------------------------------------
def test_wrong_rank_names_layer_and_shape():
    with pytest.raises(ValueError, match=r"MaxPool2d\(kernel_size=2.*expected input "
                                         r"\(N, C, H, W\) or \(C, H, W\), got \(4, 5\)"):
        nn.MaxPool2d(2)(np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"AvgPool2d.*got \(1, 1, 1, 4, 4\)"):
        nn.AvgPool2d(2)(np.zeros((1, 1, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"GlobalAvgPool2d\(\): expected input"):
        nn.GlobalAvgPool2d()(np.zeros((4,), np.float32))
    with pytest.raises(ValueError, match=r"max_pool2d: expected input \(N, C, H, W\)"):
        F.max_pool2d(np.zeros((4, 5), np.float32), 2)


def test_window_larger_than_input_refused():
    with pytest.raises(ValueError, match=r"MaxPool2d\(kernel_size=3.*input \(1, 3, 2, 5\).*does "
                                         r"not fit"):
        nn.MaxPool2d(3)(np.zeros((1, 3, 2, 5), np.float32))
    with pytest.raises(ValueError, match=r"avg_pool2d: .*does not fit"):
        F.avg_pool2d(np.zeros((1, 1, 2, 2), np.float32), 3)


def test_padding_more_than_half_the_kernel_refused():
    with pytest.raises(ValueError, match="padding must be at most half the kernel"):
        nn.MaxPool2d(3, padding=2)(np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match="padding must be at most half the kernel"):
        nn.AvgPool2d(2, padding=2)(np.zeros((1, 1, 8, 8), np.float32))


@pytest.mark.parametrize("make,error,match", [
    (lambda: nn.MaxPool2d(2.5), TypeError, "kernel_size must be an int or a tuple of 2"),
    (lambda: nn.MaxPool2d(2, stride=(1, 2, 3)), TypeError, "stride must be"),
    (lambda: nn.AvgPool2d(2, divisor_override=0), ValueError, "divisor_override"),
    (lambda: nn.AdaptiveAvgPool2d(0), ValueError, "output_size must be a positive int"),
    (lambda: nn.AdaptiveAvgPool2d((1, 2, 3)), ValueError, "output_size"),
])
def test_bad_constructor_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_functional_arguments():
    x = np.zeros((1, 1, 6, 6), np.float32)
    with pytest.raises(ValueError, match="max_pool2d: kernel_size values must be >= 1"):
        F.max_pool2d(x, 0)
    with pytest.raises(ValueError, match="adaptive_avg_pool2d: output_size must be >= 1"):
        F.adaptive_avg_pool2d(x, (0, 1))
    with pytest.raises(TypeError, match="max_pool2d: expected a float tensor, got dtype int64"):
        F.max_pool2d(np.zeros((1, 1, 4, 4), np.int64), 2)
