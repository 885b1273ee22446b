"""BatchNorm1d/2d, LayerNorm and Dropout2d: against torch, finite differences, state, errors."""

import numpy as np
import pytest

import fastnn
import fastnn.functional as F
from fastnn import nn
from fastnn.nn import Parameter
from fastnn.utils import gradcheck

TOL = {np.float32: 2e-5, np.float64: 1e-11}


def assert_close(got, want, tol, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want)))) if got.size else 0.0
    assert err <= tol, f"{what}: largest relative difference {err:.3g} > {tol:.3g}"


def torch_dtype(torch, dtype):
    return torch.float64 if dtype == np.float64 else torch.float32


def step_both(torch, layer, twin, x, dy, dtype, what):
    """One forward and backward of both layers on x; compares outputs and all gradients."""
    xt = fastnn.Tensor(x.copy(), requires_grad=True)
    y = layer(xt)
    tx = torch.tensor(x, requires_grad=True)
    ty = twin(tx)
    assert_close(y.data, ty.detach().numpy(), TOL[dtype], f"{what} output")
    y.backward(dy)
    ty.backward(torch.from_numpy(dy))
    assert_close(xt.grad.data, tx.grad.numpy(), TOL[dtype] * 5, f"{what} input gradient")
    for name in ("weight", "bias"):
        ours, theirs = getattr(layer, name), getattr(twin, name)
        if ours is not None:
            scale = np.sqrt(x.size / x.shape[1])
            assert_close(ours.grad.data / scale, theirs.grad.numpy() / scale, TOL[dtype] * 5,
                         f"{what} {name} gradient")


BN_CASES = [
    ("bn1d_features", nn.BatchNorm1d, "BatchNorm1d", (8, 5)),
    ("bn1d_sequence", nn.BatchNorm1d, "BatchNorm1d", (3, 4, 7)),
    ("bn1d_batch_2_single_feature", nn.BatchNorm1d, "BatchNorm1d", (2, 1)),
    ("bn2d", nn.BatchNorm2d, "BatchNorm2d", (4, 3, 5, 6)),
    ("bn2d_batch_1", nn.BatchNorm2d, "BatchNorm2d", (1, 2, 3, 3)),
    ("bn2d_single_channel_odd", nn.BatchNorm2d, "BatchNorm2d", (3, 1, 7, 5)),
]

BN_OPTIONS = [
    ("default", {}),
    ("momentum_none", dict(momentum=None)),
    ("momentum_0.3_eps_1e-3", dict(momentum=0.3, eps=1e-3)),
    ("no_affine", dict(affine=False)),
    ("no_running_stats", dict(track_running_stats=False)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opt_name,opts", BN_OPTIONS, ids=[o[0] for o in BN_OPTIONS])
@pytest.mark.parametrize("name,cls,torch_name,shape", BN_CASES, ids=[c[0] for c in BN_CASES])
def test_batch_norm_train_then_eval_matches_torch(name, cls, torch_name, shape, opt_name, opts,
                                                  dtype):
    torch = pytest.importorskip("torch")
    channels = shape[1]
    layer = cls(channels, dtype=dtype, **opts)
    twin = getattr(torch.nn, torch_name)(channels, dtype=torch_dtype(torch, dtype), **opts)
    rng = np.random.default_rng(0)
    if layer.weight is not None:  # start from non-trivial affine parameters
        gamma, beta = rng.uniform(0.5, 1.5, channels), rng.standard_normal(channels)
        layer.weight.data[...] = gamma
        layer.bias.data[...] = beta
        with torch.no_grad():
            twin.weight.copy_(torch.from_numpy(layer.weight.data))
            twin.bias.copy_(torch.from_numpy(layer.bias.data))
    for step in range(4):
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        step_both(torch, layer, twin, x, dy, dtype, f"{name} {opt_name} training step {step}")
        if layer.track_running_stats:
            assert_close(layer.running_mean.data, twin.running_mean.numpy(), TOL[dtype],
                         f"running_mean after step {step}")
            assert_close(layer.running_var.data, twin.running_var.numpy(), TOL[dtype],
                         f"running_var after step {step}")
            assert int(layer.num_batches_tracked.data) == int(twin.num_batches_tracked) == step + 1
    layer.eval()
    twin.eval()
    for what in ("eval", "eval again"):
        x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        if layer.weight is not None:
            layer.weight.grad = layer.bias.grad = None
            twin.weight.grad = twin.bias.grad = None
        step_both(torch, layer, twin, x, dy, dtype, f"{name} {opt_name} {what}")
    if layer.track_running_stats:
        assert int(layer.num_batches_tracked.data) == 4, "eval mode changed the step count"


def test_batch_norm_train_uses_batch_statistics():
    x = np.random.default_rng(1).standard_normal((16, 3, 4, 4)) * 3 + 2
    y = nn.BatchNorm2d(3, dtype=np.float64)(x).data
    assert_close(y.mean(axis=(0, 2, 3)), np.zeros(3), 1e-12, "normalized means")
    assert_close(y.var(axis=(0, 2, 3)), np.full(3, 1.0), 1e-4, "normalized variances")


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradients_match_finite_differences(training):
    rng = np.random.default_rng(2)
    x = fastnn.Tensor(rng.standard_normal((3, 2, 2, 3)), requires_grad=True)
    gamma = Parameter(rng.uniform(0.5, 1.5, 2))
    beta = Parameter(rng.standard_normal(2))
    mean0, var0 = rng.standard_normal(2), rng.uniform(0.5, 2, 2)

    def fn(x, gamma, beta):
        # Fresh copies: a training call updates the running statistics it is given.
        return F.batch_norm(x, mean0.copy(), var0.copy(), gamma, beta, training=training)

    assert gradcheck(fn, [x, gamma, beta])


def test_batch_norm_without_affine_gradient_matches_finite_differences():
    x = fastnn.Tensor(np.random.default_rng(3).standard_normal((4, 3)), requires_grad=True)
    assert gradcheck(lambda x: F.batch_norm(x, None, None, training=True), [x])


def test_batch_norm_buffers_are_saved_and_restored(tmp_path):
    fastnn.manual_seed(0)
    layer = nn.BatchNorm2d(3)
    rng = np.random.default_rng(4)
    for _ in range(3):
        layer(rng.standard_normal((4, 3, 5, 5)).astype(np.float32) * 2 + 1)
    state = layer.state_dict()
    assert list(state) == ["weight", "bias", "running_mean", "running_var",
                           "num_batches_tracked"]
    assert state["num_batches_tracked"].dtype == np.int64 and state["num_batches_tracked"] == 3
    path = tmp_path / "bn.safetensors"
    fastnn.save(layer, path)
    restored = nn.BatchNorm2d(3)
    restored.load_state_dict(fastnn.load(path))
    assert int(restored.num_batches_tracked.data) == 3
    layer.eval()
    restored.eval()
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    assert np.array_equal(layer(x).data, restored(x).data)
    assert "running_mean" not in nn.BatchNorm1d(3, track_running_stats=False).state_dict()


def test_batch_norm_to_float64_converts_buffers():
    layer = nn.BatchNorm1d(4).double()
    assert layer.running_mean.dtype == np.float64 and layer.weight.dtype == np.float64
    y = layer(np.random.default_rng(5).standard_normal((6, 4)))
    assert y.dtype == np.float64
    assert layer.num_batches_tracked.dtype == np.int64


def test_batch_norm_reset_running_stats():
    layer = nn.BatchNorm1d(2)
    layer(np.random.default_rng(6).standard_normal((5, 2)).astype(np.float32) + 3)
    layer.reset_running_stats()
    assert np.array_equal(layer.running_mean.data, np.zeros(2, np.float32))
    assert np.array_equal(layer.running_var.data, np.ones(2, np.float32))
    assert int(layer.num_batches_tracked.data) == 0


LN_CASES = [
    ("last_dim", (4, 10), 10, {}),
    ("two_trailing_dims", (2, 3, 4, 5), (4, 5), {}),
    ("single_row", (1, 7), (7,), {}),
    ("no_affine", (3, 6), 6, dict(elementwise_affine=False)),
    ("no_bias", (2, 5, 8), 8, dict(bias=False)),
    ("eps_1e-3", (3, 4), 4, dict(eps=1e-3)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,shape,normalized,opts", LN_CASES, ids=[c[0] for c in LN_CASES])
def test_layer_norm_matches_torch(name, shape, normalized, opts, dtype):
    torch = pytest.importorskip("torch")
    layer = nn.LayerNorm(normalized, dtype=dtype, **opts)
    twin = torch.nn.LayerNorm(normalized, dtype=torch_dtype(torch, dtype), **opts)
    rng = np.random.default_rng(7)
    if layer.weight is not None:
        layer.weight.data[...] = rng.uniform(0.5, 1.5, layer.weight.shape)
        with torch.no_grad():
            twin.weight.copy_(torch.from_numpy(layer.weight.data))
    if layer.bias is not None:
        layer.bias.data[...] = rng.standard_normal(layer.bias.shape)
        with torch.no_grad():
            twin.bias.copy_(torch.from_numpy(layer.bias.data))
    x = (rng.standard_normal(shape) * 3 + 5).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    step_both(torch, layer, twin, x, dy, dtype, name)
    assert repr(layer) == repr(twin)


def test_layer_norm_gradients_match_finite_differences():
    rng = np.random.default_rng(8)
    x = fastnn.Tensor(rng.standard_normal((3, 2, 4)), requires_grad=True)
    gamma = Parameter(rng.uniform(0.5, 1.5, (2, 4)))
    beta = Parameter(rng.standard_normal((2, 4)))
    assert gradcheck(lambda x, g, b: F.layer_norm(x, (2, 4), g, b), [x, gamma, beta])
    assert gradcheck(lambda x: F.layer_norm(x, 4), [x])


def test_batch_and_layer_norm_bit_identical_across_thread_counts():
    x = np.random.default_rng(9).standard_normal((32, 16, 12, 12)).astype(np.float32)
    for make in (lambda: nn.BatchNorm2d(16), lambda: nn.LayerNorm((12, 12))):
        results = []
        for threads in (1, 2):
            fastnn.set_num_threads(threads)
            layer = make()
            xt = fastnn.Tensor(x, requires_grad=True)
            y = layer(xt)
            (y * y).sum().backward()
            results.append([y.data, xt.grad.data, layer.weight.grad.data, layer.bias.grad.data]
                           + [b.data for b in layer.buffers()])
        for one, two in zip(*results):
            assert np.array_equal(one, two), f"{make()!r} differs between 1 and 2 threads"


def test_reprs_match_torch():
    torch = pytest.importorskip("torch")
    pairs = [(nn.BatchNorm2d(16), torch.nn.BatchNorm2d(16)),
             (nn.BatchNorm1d(8, eps=1e-3, momentum=None, affine=False),
              torch.nn.BatchNorm1d(8, eps=1e-3, momentum=None, affine=False)),
             (nn.BatchNorm1d(4, track_running_stats=False),
              torch.nn.BatchNorm1d(4, track_running_stats=False)),
             (nn.LayerNorm(10), torch.nn.LayerNorm(10)),
             (nn.Dropout2d(0.2), torch.nn.Dropout2d(0.2))]
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)


# --- Dropout2d --------------------------------------------------------------------------------
def test_dropout2d_zeroes_whole_channels_and_scales_the_rest():
    x = np.random.default_rng(10).uniform(1, 2, (16, 32, 3, 4)).astype(np.float32)
    xt = fastnn.Tensor(x, requires_grad=True)
    y = nn.Dropout2d(0.25)(xt)
    kept = y.data[:, :, :1, :1] != 0
    expected = np.where(kept, x / np.float32(0.75), 0)
    assert_close(y.data, expected, 1e-6, "channel dropout output")
    assert 0.15 < 1 - np.mean(kept) < 0.35
    y.backward(np.ones_like(x))
    assert_close(xt.grad.data, np.where(kept, np.float32(1 / 0.75), 0) * np.ones_like(x), 1e-6,
                 "channel dropout gradient")


def test_dropout2d_is_seeded_and_eval_is_identity():
    x = np.ones((4, 8, 2, 2), np.float32)
    fastnn.manual_seed(3)
    a = F.dropout2d(x, 0.5).data
    fastnn.manual_seed(3)
    b = F.dropout2d(x, 0.5).data
    assert np.array_equal(a, b)
    layer = nn.Dropout2d(0.5).eval()
    xt = fastnn.Tensor(x)
    assert layer(xt) is xt
    assert np.array_equal(nn.Dropout2d(0.0)(x).data, x)
    assert not np.any(nn.Dropout2d(1.0)(x).data)


def test_dropout2d_on_sequences():
    x = np.ones((3, 5, 7), np.float64)
    y = nn.Dropout2d(0.5)(x).data
    assert np.all((y == 0).all(axis=2) | (y == 2.0).all(axis=2))


# --- errors ------------------------------------------------------------------------------------
def test_batch_norm_shape_errors_name_layer_and_shapes():
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3, .*expected input \(N, 3, H, W\), "
                                         r"got \(2, 4, 8, 8\)"):
        nn.BatchNorm2d(3)(np.zeros((2, 4, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3, .*got \(3, 8, 8\)"):
        nn.BatchNorm2d(3)(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(5, .*expected input \(N, 5\) or "
                                         r"\(N, 5, L\), got \(2, 4\)"):
        nn.BatchNorm1d(5)(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3, .*more than 1 value per channel"):
        nn.BatchNorm1d(3)(np.zeros((1, 3), np.float32))


def test_batch_norm_functional_errors():
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="batch_norm: running_mean and running_var are needed"):
        F.batch_norm(x, None, None, training=False)
    with pytest.raises(ValueError, match=r"batch_norm: running_mean must be a contiguous "
                                         r"float32 array of shape \(3,\)"):
        F.batch_norm(x, np.zeros(4, np.float32), np.ones(3, np.float32), training=True)
    with pytest.raises(ValueError, match=r"batch_norm: expected input \(N, C, \*\)"):
        F.batch_norm(np.zeros(3, np.float32), None, None, training=True)


@pytest.mark.parametrize("make,match", [
    (lambda: nn.BatchNorm2d(0), "num_features must be a positive int"),
    (lambda: nn.BatchNorm1d(3, momentum=1.5), "momentum must be in"),
    (lambda: nn.BatchNorm1d(3, eps=-1), "eps must be >= 0"),
    (lambda: nn.LayerNorm(()), "normalized_shape must not be empty"),
    (lambda: nn.LayerNorm((3, 0)), "normalized_shape must be a positive int"),
    (lambda: nn.Dropout2d(1.5), r"p must be in \[0, 1\]"),
])
def test_bad_constructor_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_layer_norm_and_dropout2d_shape_errors():
    with pytest.raises(ValueError, match=r"LayerNorm\(\(4, 5\), .*expected input \(\*, 4, 5\), "
                                         r"got \(2, 5, 4\)"):
        nn.LayerNorm((4, 5))(np.zeros((2, 5, 4), np.float32))
    with pytest.raises(ValueError, match=r"layer_norm: input of shape \(3,\) does not end with "
                                         r"normalized_shape \(2, 3\)"):
        F.layer_norm(np.zeros(3, np.float32), (2, 3))
    with pytest.raises(ValueError, match=r"Dropout2d\(p=0.5.*expected input \(N, C, H, W\) or "
                                         r"\(N, C, L\), got \(4, 5\)"):
        nn.Dropout2d()(np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"dropout2d: p must be in \[0, 1\], got -0.1"):
        F.dropout2d(np.zeros((1, 1, 2, 2), np.float32), -0.1)
