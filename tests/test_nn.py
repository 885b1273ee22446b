"""nn modules: layers forward and backward against numpy, finite differences and PyTorch."""

import numpy as np
import pytest

import fastnn
from fastnn import Tensor, nn
from fastnn import functional as F
from fastnn.utils import gradcheck

ACTIVATIONS = ["identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu", "gelu_tanh",
               "silu", "softplus"]


def numpy_activation(name, x, alpha):
    from math import erf

    if name == "identity":
        return x
    if name == "relu":
        return np.maximum(x, 0)
    if name == "leaky_relu":
        return np.where(x > 0, x, alpha * x)
    if name == "elu":
        return np.where(x > 0, x, alpha * np.expm1(x))
    if name == "sigmoid":
        return 1 / (1 + np.exp(-x))
    if name == "tanh":
        return np.tanh(x)
    if name == "gelu":
        return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))
    if name == "gelu_tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    if name == "silu":
        return x / (1 + np.exp(-x))
    if name == "softplus":
        return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))
    raise AssertionError(name)


def alpha_for(name):
    return {"leaky_relu": 0.1, "elu": 0.7}.get(name, 0.0)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_linear_forward_matches_numpy(activation, rng):
    layer = nn.Linear(13, 7, activation=activation, alpha=alpha_for(activation))
    x = rng.standard_normal((5, 13)).astype(np.float32)
    expected = numpy_activation(activation, x @ layer.weight.data.T + layer.bias.data,
                                alpha_for(activation))
    np.testing.assert_allclose(layer(x).data, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_linear_gradients_match_finite_differences(activation, rng):
    layer = nn.Linear(6, 4, activation=activation, alpha=alpha_for(activation)).double()
    x = Tensor(rng.standard_normal((3, 6)), requires_grad=True)
    assert gradcheck(lambda inp, w, b: F.linear(inp, w, b, activation, alpha_for(activation)),
                     [x, layer.weight, layer.bias])


def test_linear_handles_leading_dims_and_no_bias(rng):
    layer = nn.Linear(4, 3, bias=False).double()
    x = Tensor(rng.standard_normal((2, 5, 4)), requires_grad=True)
    assert layer(x).shape == (2, 5, 3)
    assert gradcheck(lambda inp, w: F.linear(inp, w), [x, layer.weight])


def test_linear_gradient_accumulates_over_calls(rng):
    layer = nn.Linear(3, 2).double()
    x = rng.standard_normal((4, 3))
    layer(x).sum().backward()
    first = layer.weight.grad.data.copy()
    layer(x).sum().backward()
    np.testing.assert_allclose(layer.weight.grad.data, 2 * first)
    layer.zero_grad()
    assert layer.weight.grad is None


def test_linear_sizes_must_be_positive_integers():
    with pytest.raises(TypeError, match=r"Linear: .*integers, got \(3.5, 2\)"):
        nn.Linear(3.5, 2)
    with pytest.raises(ValueError, match=r"Linear: .*positive, got \(0, 2\)"):
        nn.Linear(0, 2)


def test_linear_bad_input_names_layer_and_shapes():
    with pytest.raises(ValueError, match=r"Linear\(in_features=4, out_features=3\).*\(2, 5\)"):
        nn.Linear(4, 3)(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="unknown activation"):
        nn.Linear(4, 3, activation="swish2")


@pytest.mark.parametrize("module, name", [(nn.ReLU(), "relu"), (nn.LeakyReLU(0.2), "leaky_relu"),
                                          (nn.ELU(0.5), "elu"), (nn.Sigmoid(), "sigmoid"),
                                          (nn.Tanh(), "tanh"), (nn.GELU(), "gelu"),
                                          (nn.GELU("tanh"), "gelu_tanh"), (nn.SiLU(), "silu"),
                                          (nn.Softplus(), "softplus")])
def test_activation_modules_forward_and_backward(module, name, rng):
    x = Tensor(rng.standard_normal((4, 5)) * 2, requires_grad=True)
    np.testing.assert_allclose(module(x).data, numpy_activation(name, x.data, module.alpha),
                               rtol=1e-10, atol=1e-12)
    assert gradcheck(module, [x])


def test_sequential_fuses_linear_and_activation_with_identical_results(rng):
    fused = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3), nn.Tanh())
    x = rng.standard_normal((5, 8)).astype(np.float32)
    step_by_step = x
    for module in fused:
        step_by_step = module(step_by_step)
    # The standalone activation kernels use vectorised exp/tanh; the fused epilogue may round
    # differently in the last bit.
    np.testing.assert_allclose(fused(x).data, step_by_step.data, rtol=1e-6, atol=1e-7)


def _grads(params):
    return [None if p.grad is None else p.grad.data.copy() for p in params]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sequential_chain_equals_layer_by_layer_bit_for_bit(dtype, rng):
    # Sequential runs its Linear layers as one graph node (F.linear_chain); the same layers
    # called one by one through F.linear must give identical outputs and gradients.
    model = nn.Sequential(nn.Linear(7, 9), nn.LeakyReLU(0.1), nn.Linear(9, 5, activation="elu"),
                          nn.Linear(5, 4), nn.GELU(), nn.Linear(4, 3))
    if dtype == np.float64:
        model.double()
    x_data = rng.standard_normal((6, 7)).astype(dtype)
    seed = rng.standard_normal((6, 3)).astype(dtype)
    x = Tensor(x_data, requires_grad=True)
    out = model(x)
    out.backward(seed)
    chained = _grads(model.parameters()) + [x.grad.data.copy()]

    model.zero_grad()
    layers = list(model)
    x2 = Tensor(x_data, requires_grad=True)
    h = F.linear(x2, layers[0].weight, layers[0].bias, "leaky_relu", 0.1)
    h = F.linear(h, layers[2].weight, layers[2].bias, "elu", layers[2].alpha)
    h = F.linear(h, layers[3].weight, layers[3].bias, "gelu")
    h = F.linear(h, layers[5].weight, layers[5].bias)
    h.backward(seed)
    np.testing.assert_array_equal(h.data, out.data)
    separate = _grads(model.parameters()) + [x2.grad.data.copy()]
    for got, expected in zip(chained, separate):
        np.testing.assert_array_equal(got, expected)


def test_linear_chain_gradients_match_separate_layers_and_finite_differences(rng):
    w1 = Tensor(rng.standard_normal((5, 4)), requires_grad=True)
    b1 = Tensor(rng.standard_normal(5), requires_grad=True)
    w2 = Tensor(rng.standard_normal((3, 5)), requires_grad=True)
    x = Tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)  # leading dims too

    def chain(inp, a, c, d):
        return F.linear_chain(inp, [(a, c, "tanh", 0.0), (d, None, "sigmoid", 0.0)])

    assert gradcheck(chain, [x, w1, b1, w2])
    for t in (x, w1, b1, w2):
        t.grad = None
    g = rng.standard_normal((2, 3, 3))
    chain(x, w1, b1, w2).backward(g)
    chained = [t.grad.data.copy() for t in (x, w1, b1, w2)]
    for t in (x, w1, b1, w2):
        t.grad = None
    F.linear(F.linear(x, w1, b1, "tanh"), w2, None, "sigmoid").backward(g)
    for got, t in zip(chained, (x, w1, b1, w2)):
        np.testing.assert_array_equal(got, t.grad.data)


def test_linear_chain_with_a_shared_weight_and_a_frozen_layer(rng):
    shared = nn.Linear(4, 4).double()
    frozen = nn.Linear(4, 2).double()
    frozen.weight.requires_grad_(False)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Tanh(), frozen)
    x = rng.standard_normal((3, 4))
    model(x).sum().backward()
    assert frozen.weight.grad is None and frozen.bias.grad is not None

    def manual(w, b):
        h = F.linear(F.linear(Tensor(x), w, b, "relu"), w, b, "tanh")
        return F.linear(h, Tensor(frozen.weight.data), frozen.bias)

    w = Tensor(shared.weight.data.copy(), requires_grad=True)
    b = Tensor(shared.bias.data.copy(), requires_grad=True)
    manual(w, b).sum().backward()
    np.testing.assert_allclose(shared.weight.grad.data, w.grad.data, rtol=1e-12)
    np.testing.assert_allclose(shared.bias.grad.data, b.grad.data, rtol=1e-12)
    assert gradcheck(manual, [w, b])


def test_sequential_chain_with_frozen_bottom_layers(rng):
    bottom, top = nn.Linear(5, 4).double(), nn.Linear(4, 3).double()
    for p in bottom.parameters():
        p.requires_grad_(False)
    model = nn.Sequential(bottom, nn.ReLU(), top)
    x = rng.standard_normal((6, 5))
    model(x).sum().backward()
    assert bottom.weight.grad is None and bottom.bias.grad is None
    hidden = F.linear(Tensor(x), Tensor(bottom.weight.data), Tensor(bottom.bias.data), "relu")
    w = Tensor(top.weight.data.copy(), requires_grad=True)
    F.linear(hidden, w, top.bias.detach()).sum().backward()
    np.testing.assert_array_equal(top.weight.grad.data, w.grad.data)


def test_sequential_chain_names_the_layer_that_does_not_fit():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(ValueError, match=r"Linear\(in_features=5, out_features=2\).*\(3, 8\)"):
        model(np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"Linear\(in_features=4, out_features=8\).*\(3, 5\)"):
        model(np.zeros((3, 5), np.float32))


def test_sequential_chain_uses_a_weight_replaced_by_a_plain_tensor(rng):
    first, second = nn.Linear(3, 4).double(), nn.Linear(4, 2).double()
    model = nn.Sequential(first, nn.Tanh(), second)
    # Assigning a plain tensor unregisters the parameter; the chain must still read the new one.
    tied = Tensor(rng.standard_normal((4, 3)), requires_grad=True)
    first.weight = tied
    x = rng.standard_normal((5, 3))
    model(x).sum().backward()
    expected = F.linear(F.linear(Tensor(x), tied, first.bias, "tanh"), second.weight, second.bias)
    np.testing.assert_array_equal(model(x).data, expected.data)
    assert tied.grad is not None and tied.grad.shape == (4, 3)
    assert "weight" not in dict(first.named_parameters())


def test_sequential_chain_under_no_grad_records_nothing(rng):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with fastnn.no_grad():
        out = model(rng.standard_normal((2, 3)).astype(np.float32))
    assert not out.requires_grad and out.is_leaf


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_and_log_softmax(dim, rng):
    x = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    expected = np.exp(x.data) / np.exp(x.data).sum(axis=dim, keepdims=True)
    np.testing.assert_allclose(nn.Softmax(dim)(x).data, expected, rtol=1e-12)
    np.testing.assert_allclose(nn.LogSoftmax(dim)(x).data, np.log(expected), rtol=1e-12)
    assert gradcheck(nn.Softmax(dim), [x])
    assert gradcheck(nn.LogSoftmax(dim), [x])


def test_dropout_scales_kept_units_and_is_identity_in_eval(rng):
    layer = nn.Dropout(0.25)
    x = np.ones((200, 50), np.float32)
    out = layer(x).data
    kept = out != 0
    assert 0.7 < kept.mean() < 0.8
    np.testing.assert_allclose(out[kept], 1 / 0.75)
    layer.eval()
    np.testing.assert_array_equal(layer(x).data, x)
    with pytest.raises(ValueError, match="Dropout"):
        nn.Dropout(1.5)


def test_dropout_gradient_uses_the_same_mask(rng):
    x = Tensor(rng.standard_normal((6, 7)), requires_grad=True)
    out = F.dropout(x, 0.5)
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.data != 0, out.data != 0)


def test_dropout_repeats_under_the_same_seed():
    fastnn.manual_seed(7)
    a = nn.Dropout(0.5)(np.ones((10, 10), np.float32)).data
    fastnn.manual_seed(7)
    b = nn.Dropout(0.5)(np.ones((10, 10), np.float32)).data
    np.testing.assert_array_equal(a, b)


def test_flatten_and_identity():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert nn.Flatten()(x).shape == (2, 12)
    assert nn.Flatten(0, 1)(x).shape == (6, 4)
    assert nn.Identity()(Tensor(x)).shape == (2, 3, 4)


class DoubledReLU(nn.ReLU):
    """An activation subclass with a forward of its own: Sequential must not fuse it away."""

    def forward(self, x):
        return super().forward(x) * 2.0


@pytest.mark.parametrize("layer", [lambda: nn.Linear(3, 4), lambda: nn.Conv1d(3, 4, 1)])
def test_sequential_runs_an_activation_subclass_own_forward(layer, rng):
    first, activation = layer(), DoubledReLU()
    x = rng.standard_normal((2, 3, 5) if isinstance(first, nn.Conv1d) else (5, 3))
    x = Tensor(x.astype(np.float32))
    expected = activation(first(x)).data
    np.testing.assert_array_equal(nn.Sequential(first, activation)(x).data, expected)
    assert np.abs(expected).max() > 0


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.head = nn.Linear(8, 2)
        self.scale = nn.Parameter(np.ones(1, np.float32))
        self.register_buffer("calls", np.zeros(1, np.float32))

    def forward(self, x):
        return self.head(self.encoder(x)) * self.scale


def test_module_registration_state_dict_and_repr():
    model = Custom()
    names = [name for name, _ in model.named_parameters()]
    assert names == ["scale", "encoder.0.weight", "encoder.0.bias", "head.weight", "head.bias"]
    # As in PyTorch: each module's parameters, then its buffers, then its children.
    assert list(model.state_dict()) == ["scale", "calls"] + names[1:]
    assert model.num_parameters() == 1 + 4 * 8 + 8 + 8 * 2 + 2
    assert "Linear(in_features=4, out_features=8, bias=True)" in repr(model)
    model.eval()
    assert not model.encoder[0].training
    model.train()
    assert model.head.training


def test_user_module_trains_through_autograd(rng):
    model = Custom()
    x = rng.standard_normal((5, 4)).astype(np.float32)
    loss = model(x).sum()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_load_state_dict_round_trip_and_errors():
    source, target = Custom(), Custom()
    state = {k: v.copy() for k, v in source.state_dict().items()}
    target.load_state_dict(state)
    for key, value in target.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
    bad = dict(state)
    bad["head.weight"] = np.zeros((3, 3), np.float32)
    del bad["scale"]
    bad["extra"] = np.zeros(1)
    with pytest.raises(ValueError) as error:
        target.load_state_dict(bad)
    message = str(error.value)
    assert "shape mismatch for head.weight: model (2, 8), loaded (3, 3)" in message
    assert "missing (1): scale" in message and "unexpected (1): extra" in message
    # Nothing was changed by the failed load.
    np.testing.assert_array_equal(target.state_dict()["head.bias"], state["head.bias"])
    result = target.load_state_dict({k: v for k, v in state.items() if k != "scale"},
                                    strict=False)
    assert result.missing_keys == ["scale"]


def test_module_to_double_converts_parameters():
    model = Custom().double()
    assert all(p.dtype == np.float64 for p in model.parameters())


@pytest.mark.parametrize("initializer, kwargs, expected_std", [
    (nn.init.xavier_uniform_, {}, np.sqrt(2 / (300 + 200))),
    (nn.init.xavier_normal_, {}, np.sqrt(2 / (300 + 200))),
    (nn.init.kaiming_uniform_, {"nonlinearity": "relu"}, np.sqrt(2 / 300)),
    (nn.init.kaiming_normal_, {"nonlinearity": "relu"}, np.sqrt(2 / 300)),
    (nn.init.lecun_uniform_, {}, np.sqrt(1 / 300)),
    (nn.init.lecun_normal_, {}, np.sqrt(1 / 300)),
    (nn.init.normal_, {"std": 0.3}, 0.3),
])
def test_initialisers_have_the_right_spread(initializer, kwargs, expected_std):
    weight = nn.Parameter(np.empty((200, 300), np.float32))
    initializer(weight, **kwargs)
    assert abs(weight.data.std() / expected_std - 1) < 0.03
    assert abs(weight.data.mean()) < 0.01


def test_constant_initialisers():
    weight = nn.Parameter(np.empty((3, 4), np.float32))
    assert np.all(nn.init.zeros_(weight).data == 0)
    assert np.all(nn.init.ones_(weight).data == 1)
    assert np.all(nn.init.constant_(weight, 2.5).data == 2.5)
    with pytest.raises(ValueError, match="at least 2 dims"):
        nn.init.xavier_uniform_(nn.Parameter(np.empty(3, np.float32)))


def test_linear_matches_torch(rng):
    torch = pytest.importorskip("torch")
    layer = nn.Linear(10, 5, activation="gelu")
    reference = torch.nn.Linear(10, 5)
    with torch.no_grad():
        reference.weight.copy_(torch.from_numpy(layer.weight.data))
        reference.bias.copy_(torch.from_numpy(layer.bias.data))
    x = rng.standard_normal((7, 10)).astype(np.float32)
    tx = torch.from_numpy(x).requires_grad_()
    ours_x = Tensor(x, requires_grad=True)
    out = layer(ours_x)
    expected = torch.nn.functional.gelu(reference(tx))
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    upstream = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(upstream)
    expected.backward(torch.from_numpy(upstream))
    np.testing.assert_allclose(layer.weight.grad.data, reference.weight.grad.numpy(),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.bias.grad.data, reference.bias.grad.numpy(),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours_x.grad.data, tx.grad.numpy(), rtol=1e-4, atol=1e-5)
