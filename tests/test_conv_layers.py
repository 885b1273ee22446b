"""nn.Conv2d, nn.Conv1d and F.conv2d / F.conv1d: against torch, finite differences, errors."""

import math

import numpy as np
import pytest

import fastnn
import fastnn.functional as F
from fastnn import nn
from fastnn.nn import Parameter
from fastnn.utils import gradcheck

# torch notes that it copies the input for "same" padding with an even kernel; not our concern.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

TOL = {np.float32: 3e-5, np.float64: 1e-11}


def assert_close(got, want, tol, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want)))) if got.size else 0.0
    assert err <= tol, f"{what}: largest relative difference {err:.3g} > {tol:.3g}"


# (name, in_channels, out_channels, kernel_size, options, input shape)
CONV2D_CASES = [
    ("batch_1_single_channel", 1, 1, 3, {}, (1, 1, 5, 5)),
    ("odd_sizes", 3, 5, (3, 2), {}, (3, 3, 7, 9)),
    ("stride_2_pad_1", 4, 6, 3, dict(stride=2, padding=1), (2, 4, 9, 8)),
    ("rect_stride_pad_dilation", 3, 4, (3, 2),
     dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1)), (2, 3, 10, 9)),
    ("same_odd_kernel", 2, 3, 3, dict(padding="same"), (2, 2, 6, 7)),
    ("same_even_kernel", 2, 3, (2, 4), dict(padding="same"), (2, 2, 6, 7)),
    ("same_even_kernel_dilation_3", 2, 3, 2, dict(padding="same", dilation=3), (1, 2, 7, 8)),
    ("same_dilation_2", 3, 2, 3, dict(padding="same", dilation=2), (2, 3, 9, 6)),
    ("valid", 3, 4, 3, dict(padding="valid"), (2, 3, 6, 6)),
    ("groups_2", 4, 6, 3, dict(padding=1, groups=2), (2, 4, 6, 7)),
    ("depthwise", 5, 5, 3, dict(padding=1, groups=5), (3, 5, 8, 6)),
    ("pointwise_no_bias", 6, 4, 1, dict(bias=False), (3, 6, 5, 7)),
    ("unbatched", 3, 4, 3, dict(padding=1), (3, 5, 6)),
    ("mnist_conv2", 32, 64, 3, {}, (4, 32, 13, 13)),
]

CONV1D_CASES = [
    ("batch_1_single_channel", 1, 1, 3, {}, (1, 1, 9)),
    ("stride_2_pad_2", 3, 5, 4, dict(stride=2, padding=2), (2, 3, 17)),
    ("same_even_kernel", 2, 3, 4, dict(padding="same"), (2, 2, 11)),
    ("same_dilation_2", 2, 3, 3, dict(padding="same", dilation=2), (2, 2, 10)),
    ("valid_groups", 4, 6, 3, dict(padding="valid", groups=2), (3, 4, 8)),
    ("unbatched_no_bias", 3, 2, 5, dict(bias=False), (3, 12)),
]


def torch_twin(torch, layer, cls):
    """A torch layer with the same configuration and weights as fastnn `layer`."""
    options = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                   groups=layer.groups, bias=layer.bias is not None,
                   dtype=getattr(torch, str(layer.weight.dtype)))
    twin = cls(layer.in_channels, layer.out_channels, layer.kernel_size, **options)
    with torch.no_grad():
        twin.weight.copy_(torch.from_numpy(layer.weight.data))
        if layer.bias is not None:
            twin.bias.copy_(torch.from_numpy(layer.bias.data))
    return twin


def compare_with_torch(layer, twin, torch, x_shape, dtype, name):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape).astype(dtype)
    xt = fastnn.Tensor(x.copy(), requires_grad=True)
    y = layer(xt)
    tx = torch.tensor(x, requires_grad=True)
    ty = twin(tx)
    fan_in = math.sqrt(layer.weight[0].numel())
    assert_close(y.data / fan_in, ty.detach().numpy() / fan_in, TOL[dtype], f"{name} output")
    dy = rng.standard_normal(y.shape).astype(dtype)
    y.backward(dy)
    ty.backward(torch.from_numpy(dy))
    scale = math.sqrt(np.prod(y.shape) / y.shape[1])  # weight gradients sum over N * OH * OW
    assert_close(xt.grad.data, tx.grad.numpy(), TOL[dtype] * 4, f"{name} input gradient")
    assert_close(layer.weight.grad.data / scale, twin.weight.grad.numpy() / scale,
                 TOL[dtype] * 4, f"{name} weight gradient")
    if layer.bias is not None:
        assert_close(layer.bias.grad.data / scale, twin.bias.grad.numpy() / scale,
                     TOL[dtype] * 4, f"{name} bias gradient")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,cin,cout,k,opts,x_shape", CONV2D_CASES,
                         ids=[c[0] for c in CONV2D_CASES])
def test_conv2d_matches_torch(name, cin, cout, k, opts, x_shape, dtype):
    torch = pytest.importorskip("torch")
    layer = nn.Conv2d(cin, cout, k, dtype=dtype, **opts)
    compare_with_torch(layer, torch_twin(torch, layer, torch.nn.Conv2d), torch, x_shape, dtype,
                       name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,cin,cout,k,opts,x_shape", CONV1D_CASES,
                         ids=[c[0] for c in CONV1D_CASES])
def test_conv1d_matches_torch(name, cin, cout, k, opts, x_shape, dtype):
    torch = pytest.importorskip("torch")
    layer = nn.Conv1d(cin, cout, k, dtype=dtype, **opts)
    compare_with_torch(layer, torch_twin(torch, layer, torch.nn.Conv1d), torch, x_shape, dtype,
                       name)


GRADCHECK_CASES = [
    ("plain", (2, 2, 4, 5), (3, 2, 2, 3), {}),
    ("stride_pad_dilation", (1, 2, 6, 5), (2, 2, 2, 2), dict(stride=2, padding=1, dilation=2)),
    ("same_even_kernel", (1, 2, 4, 4), (2, 2, 2, 2), dict(padding="same")),
    ("groups", (2, 4, 4, 4), (4, 2, 3, 3), dict(padding=1, groups=2)),
]


@pytest.mark.parametrize("name,x_shape,w_shape,opts", GRADCHECK_CASES,
                         ids=[c[0] for c in GRADCHECK_CASES])
def test_conv2d_gradients_match_finite_differences(name, x_shape, w_shape, opts):
    rng = np.random.default_rng(0)
    x = fastnn.Tensor(rng.standard_normal(x_shape), requires_grad=True)
    w = Parameter(rng.standard_normal(w_shape))
    b = Parameter(rng.standard_normal(w_shape[0]))
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, **opts), [x, w, b])


def test_conv1d_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    x = fastnn.Tensor(rng.standard_normal((2, 3, 7)), requires_grad=True)
    w = Parameter(rng.standard_normal((4, 3, 2)))
    b = Parameter(rng.standard_normal(4))
    assert gradcheck(lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1), [x, w, b])
    assert gradcheck(lambda x, w, b: F.conv1d(x, w, b, padding="same", dilation=2), [x, w, b])


def test_gradients_accumulate_over_backward_calls_and_shared_weights():
    rng = np.random.default_rng(1)
    layer = nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64)
    x = rng.standard_normal((2, 2, 5, 5))
    layer(x).sum().backward()
    once_w, once_b = layer.weight.grad.data.copy(), layer.bias.grad.data.copy()
    layer(x).sum().backward()
    assert_close(layer.weight.grad.data, 2 * once_w, 1e-12, "weight gradient after 2 calls")
    assert_close(layer.bias.grad.data, 2 * once_b, 1e-12, "bias gradient after 2 calls")
    # The same weights used twice in one graph: the second backward call accumulates.
    x2 = fastnn.Tensor(rng.standard_normal((1, 3, 4, 4)))
    w = Parameter(rng.standard_normal((3, 3, 3, 3)))
    b = Parameter(rng.standard_normal(3))

    def twice(w, b):
        return F.conv2d(F.conv2d(x2, w, b, padding=1), w, b, padding=1)

    assert gradcheck(twice, [w, b])
    # A fresh weight gradient next to an existing bias gradient share one kernel call.
    w.grad, b.grad = None, fastnn.Tensor(np.ones(3))
    twice(w, b).backward(np.ones((1, 3, 4, 4)))
    reference_w, reference_b = Parameter(w.data.copy()), Parameter(b.data.copy())
    twice(reference_w, reference_b).backward(np.ones((1, 3, 4, 4)))
    assert_close(w.grad.data, reference_w.grad.data, 1e-12, "fresh weight gradient")
    assert_close(b.grad.data, reference_b.grad.data + 1, 1e-12, "accumulated bias gradient")


def test_frozen_weight_and_input_without_grad():
    rng = np.random.default_rng(2)
    x = fastnn.Tensor(rng.standard_normal((2, 2, 5, 5)), requires_grad=True)
    w = Parameter(rng.standard_normal((3, 2, 3, 3)), requires_grad=False)
    F.conv2d(x, w).sum().backward()
    assert w.grad is None and x.grad is not None
    w.requires_grad_(True)
    x2 = fastnn.Tensor(x.data)
    F.conv2d(x2, w).sum().backward()
    assert x2.grad is None and w.grad is not None


def test_computed_weight_gets_its_gradient_back():
    """A non-leaf weight (here a scaled parameter) receives its gradient through the graph."""
    rng = np.random.default_rng(3)
    base = Parameter(rng.standard_normal((2, 1, 2, 2)))
    x = fastnn.Tensor(rng.standard_normal((1, 1, 4, 4)))
    F.conv2d(x, base * 2.0).sum().backward()
    expected = Parameter(base.data * 2.0)
    F.conv2d(x, expected).sum().backward()
    assert_close(base.grad.data, 2.0 * expected.grad.data, 1e-12, "gradient through 2 * weight")


def test_initialisation_matches_pytorch_bounds():
    fastnn.manual_seed(0)
    layer = nn.Conv2d(16, 32, 3, groups=2)
    fan_in = 16 // 2 * 9
    bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform with a = sqrt(5)
    w = layer.weight.data
    assert w.shape == (32, 8, 3, 3) and w.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound
    assert np.abs(layer.bias.data).max() <= bound
    assert nn.Conv1d(4, 8, 5).weight.shape == (8, 4, 5)


def test_initialisation_is_seeded():
    fastnn.manual_seed(7)
    a = nn.Conv2d(3, 4, 3).weight.data.copy()
    fastnn.manual_seed(7)
    b = nn.Conv2d(3, 4, 3).weight.data
    assert np.array_equal(a, b)


@pytest.mark.parametrize("args,kwargs", [
    ((3, 8, 3), {}),
    ((3, 8, (3, 5)), dict(stride=2, padding=1)),
    ((3, 8, 3), dict(padding="same", dilation=2)),
    ((4, 8, 3), dict(groups=2, bias=False)),
    ((4, 8, 2), dict(padding="valid", dilation=(1, 2), stride=(2, 1))),
])
def test_conv2d_repr_matches_torch(args, kwargs):
    torch = pytest.importorskip("torch")
    assert repr(nn.Conv2d(*args, **kwargs)) == repr(torch.nn.Conv2d(*args, **kwargs))


@pytest.mark.parametrize("args,kwargs", [((3, 8, 3), {}), ((2, 4, 5), dict(padding=2, stride=2)),
                                         ((3, 6, 4), dict(padding="same", groups=3))])
def test_conv1d_repr_matches_torch(args, kwargs):
    torch = pytest.importorskip("torch")
    assert repr(nn.Conv1d(*args, **kwargs)) == repr(torch.nn.Conv1d(*args, **kwargs))


def test_bit_identical_across_thread_counts():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((8, 16, 20, 20)).astype(np.float32)
    results = []
    for threads in (1, 2):
        fastnn.set_num_threads(threads)
        fastnn.manual_seed(0)
        layer = nn.Conv2d(16, 32, 3, padding=1)
        xt = fastnn.Tensor(x.copy(), requires_grad=True)
        y = layer(xt)
        (y * y).sum().backward()
        results.append((y.data, xt.grad.data, layer.weight.grad.data, layer.bias.grad.data))
    for name, one, two in zip(("output", "input grad", "weight grad", "bias grad"), *results):
        assert np.array_equal(one, two), f"{name} differs between 1 and 2 threads"


def test_float64_input_to_float32_layer_is_converted():
    layer = nn.Conv2d(1, 2, 3)
    y = layer(np.ones((1, 1, 4, 4)))
    assert y.dtype == np.float32 and y.shape == (1, 2, 2, 2)


# --- errors ------------------------------------------------------------------------------------
def test_wrong_channel_count_names_layer_and_shapes():
    with pytest.raises(ValueError, match=r"Conv2d\(3, 8, kernel_size=\(3, 3\).*expected input "
                                         r"\(N, 3, H, W\).*got \(2, 4, 8, 8\)"):
        nn.Conv2d(3, 8, 3)(np.zeros((2, 4, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"Conv1d\(2, 4.*expected input \(N, 2, L\).*\(2, 3, 8\)"):
        nn.Conv1d(2, 4, 3)(np.zeros((2, 3, 8), np.float32))


def test_wrong_rank_refused():
    with pytest.raises(ValueError, match=r"expected input \(N, 3, H, W\).*got \(3, 8\)"):
        nn.Conv2d(3, 8, 3)(np.zeros((3, 8), np.float32))
    with pytest.raises(ValueError, match=r"conv2d: expected input \(N, C, H, W\)"):
        F.conv2d(np.zeros((1, 1, 1, 4, 4), np.float32), Parameter(np.zeros((1, 1, 3, 3))))
    with pytest.raises(ValueError, match=r"conv2d: weight must be 4-D"):
        F.conv2d(np.zeros((1, 1, 4, 4), np.float32), Parameter(np.zeros((1, 3, 3))))


def test_input_smaller_than_kernel_refused():
    with pytest.raises(ValueError, match=r"input \(1, 1, 2, 8\) is too small.*\(3, 3\)"):
        nn.Conv2d(1, 1, 3)(np.zeros((1, 1, 2, 8), np.float32))
    with pytest.raises(ValueError, match=r"conv2d: kernel 3x3 with dilation 2x2 is larger"):
        F.conv2d(np.zeros((1, 1, 4, 4), np.float32), Parameter(np.zeros((1, 1, 3, 3),
                                                                        np.float32)), dilation=2)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(groups=2), ValueError, r"divisible by groups \(2\)"),
    (dict(groups=0), ValueError, "groups must be a positive int"),
    (dict(padding="same", stride=2), ValueError, "padding='same' needs stride 1"),
    (dict(padding="full"), ValueError, "padding must be 'same', 'valid'"),
    (dict(padding=-1), ValueError, "padding must be >= 0"),
    (dict(stride=0), ValueError, "stride must be >= 1"),
    (dict(kernel_size=(3, 3, 3)), TypeError, "kernel_size must be an int or a tuple of 2"),
    (dict(padding_mode="reflect"), ValueError, "only padding_mode='zeros'"),
])
def test_bad_constructor_arguments(kwargs, error, match):
    arguments = dict(in_channels=3, out_channels=4, kernel_size=3)
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        nn.Conv2d(**arguments)


def test_functional_argument_errors():
    x = np.zeros((1, 4, 5, 5), np.float32)
    w = Parameter(np.zeros((4, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"conv2d: input has 4 channels but weight expects 2"):
        F.conv2d(x, w)
    with pytest.raises(ValueError, match=r"conv2d: input channels 4 are not divisible by groups"):
        F.conv2d(x, w, groups=3)
    with pytest.raises(TypeError, match="conv2d: stride must be an int or a tuple of 2 ints"):
        F.conv2d(x, w, stride=1.5, groups=2)
    with pytest.raises(ValueError, match="conv2d: padding='same' needs stride 1"):
        F.conv2d(x, w, padding="same", stride=2, groups=2)
    with pytest.raises(ValueError, match=r"conv2d: b has shape \(3,\), expected \(4,\)"):
        F.conv2d(x, w, Parameter(np.zeros(3, np.float32)), groups=2)


@pytest.mark.parametrize("activation,alpha", [("relu", 0.0), ("leaky_relu", 0.1), ("tanh", 0.0),
                                              ("gelu", 0.0), ("elu", 1.0)])
def test_fused_activation_matches_separate_activation(activation, alpha):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 6, 5))
    fused = nn.Conv2d(3, 4, 3, padding=1, activation=activation, alpha=alpha, dtype=np.float64)
    plain = nn.Conv2d(3, 4, 3, padding=1, dtype=np.float64)
    plain.load_state_dict(fused.state_dict())
    xf, xp = fastnn.Tensor(x.copy(), requires_grad=True), fastnn.Tensor(x.copy(),
                                                                        requires_grad=True)
    yf = fused(xf)
    yp = F.activation(plain(xp), activation, alpha)
    assert_close(yf.data, yp.data, 1e-12, f"{activation} output")
    dy = rng.standard_normal(yf.shape)
    yf.backward(dy)
    yp.backward(dy)
    for what, a, b in (("input", xf, xp), ("weight", fused.weight, plain.weight),
                       ("bias", fused.bias, plain.bias)):
        assert_close(a.grad.data, b.grad.data, 1e-11, f"{activation} {what} gradient")
    assert f"activation={activation!r}" in repr(fused)
    w = Parameter(rng.standard_normal((2, 3, 2, 2)))
    assert gradcheck(lambda x: F.conv2d(x, w, activation=activation, alpha=alpha),
                     [fastnn.Tensor(x[:1], requires_grad=True)])


def test_fused_conv1d_and_unknown_activation():
    layer = nn.Conv1d(2, 3, 3, activation="relu")
    assert np.all(layer(np.random.default_rng(0).standard_normal((2, 2, 9))).data >= 0)
    with pytest.raises(ValueError, match="Conv2d: unknown activation 'swish'"):
        nn.Conv2d(1, 1, 3, activation="swish")
