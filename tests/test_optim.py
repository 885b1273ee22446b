import copy
import pickle
import weakref

import numpy as np
import pytest

from fastnn import Tensor, optim
from fastnn import manual_seed as fastnn_seed
from fastnn.nn import Parameter
from fastnn.optim import _kernels


def set_grad(p, g):
    p.grad = None if g is None else Tensor(np.array(g, dtype=p.data.dtype))

SHAPES = [(3, 4), (5,), (2, 3, 2), (1,)]
STEPS = 5


def make_problem(dtypes, seed=0):
    """Initial values and, per step, one gradient per parameter (None: no grad that step)."""
    rng = np.random.default_rng(seed)
    inits = [rng.standard_normal(s).astype(d) for s, d in zip(SHAPES, dtypes)]
    grads = []
    for step in range(STEPS):
        row = [rng.standard_normal(s).astype(d) for s, d in zip(SHAPES, dtypes)]
        if step < 2:
            row[1] = None  # parameter 1 first gets a gradient at step 2
        if step == 3:
            row[3] = None  # and parameter 3 skips one step
        grads.append(row)
    return inits, grads


def run_fastnn(cls, kwargs, inits, grads, groups=None):
    params = [Parameter(x.copy()) for x in inits]
    spec = params if groups is None else [
        dict(g, params=[params[i] for i in g["params"]]) for g in groups]
    opt = cls(spec, **kwargs)
    for row in grads:
        for p, g in zip(params, row):
            set_grad(p, g)
        opt.step()
    return [p.data for p in params], opt


def run_torch(torch, cls, kwargs, inits, grads, groups=None):
    params = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in inits]
    spec = params if groups is None else [
        dict(g, params=[params[i] for i in g["params"]]) for g in groups]
    opt = cls(spec, **kwargs)
    for row in grads:
        for p, g in zip(params, row):
            p.grad = None if g is None else torch.from_numpy(g.copy())
        opt.step()
    return [p.detach().numpy() for p in params], opt


def assert_close(got, want, rtol, atol, what):
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == b.dtype, f"{what}: parameter {i} dtype {a.dtype} vs {b.dtype}"
        diff = np.max(np.abs(a.astype(np.float64) - b)) if a.size else 0.0
        assert np.allclose(a, b, rtol=rtol, atol=atol), \
            f"{what}: parameter {i} differs by up to {diff:.3g}"


TOL = {np.float32: (2e-6, 2e-6), np.float64: (1e-12, 1e-13)}

CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, weight_decay=0.1, maximize=True)),
    ("SGD", dict(lr=0.1, momentum=0.5, dampening=0.5, weight_decay=0.02, maximize=True)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, maximize=True, weight_decay=0.05, amsgrad=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.2, amsgrad=True, maximize=True)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.01, alpha=0.9, eps=1e-6)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.9)),
    ("RMSprop", dict(lr=0.01, momentum=0.8, centered=True, weight_decay=0.1, maximize=True)),
    ("Adagrad", dict()),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05)),
    ("Adagrad", dict(lr=0.1, weight_decay=0.1, initial_accumulator_value=0.5)),
    ("Adagrad", dict(lr=0.1, eps=1e-3, maximize=True)),
]


def config_id(config):
    name, kwargs = config
    return name + "-" + ("-".join(f"{k}={v}" for k, v in kwargs.items()) or "defaults")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_matches_torch(config, dtype):
    torch = pytest.importorskip("torch")
    name, kwargs = config
    inits, grads = make_problem([dtype] * len(SHAPES))
    ours, _ = run_fastnn(getattr(optim, name), kwargs, inits, grads)
    theirs, _ = run_torch(torch, getattr(torch.optim, name), kwargs, inits, grads)
    assert_close(ours, theirs, *TOL[dtype], f"{name}({kwargs}) {dtype.__name__}")


@pytest.mark.parametrize("config", [c for c in CONFIGS if len(c[1]) >= 3], ids=config_id)
def test_mixed_float32_float64_in_one_group_matches_torch(config):
    torch = pytest.importorskip("torch")
    name, kwargs = config
    inits, grads = make_problem([np.float32, np.float64, np.float64, np.float32], seed=1)
    ours, _ = run_fastnn(getattr(optim, name), kwargs, inits, grads)
    theirs, _ = run_torch(torch, getattr(torch.optim, name), kwargs, inits, grads)
    assert_close(ours, theirs, *TOL[np.float32], f"{name}({kwargs}) mixed dtypes")


@pytest.mark.parametrize("name,defaults,group_options", [
    ("SGD", dict(lr=0.1, momentum=0.9), dict(lr=0.01, nesterov=True)),
    ("Adam", dict(lr=0.01), dict(lr=0.001, betas=(0.5, 0.9), amsgrad=True)),
    ("RMSprop", dict(lr=0.01), dict(lr=0.05, centered=True)),
    ("Adagrad", dict(lr=0.1), dict(lr=0.3, lr_decay=0.1)),
])
def test_parameter_groups_with_their_own_options_match_torch(name, defaults, group_options):
    torch = pytest.importorskip("torch")
    inits, grads = make_problem([np.float64] * len(SHAPES), seed=2)
    groups = [{"params": [0, 2]}, dict(group_options, params=[1, 3])]
    ours, opt = run_fastnn(getattr(optim, name), defaults, inits, grads, groups)
    theirs, _ = run_torch(torch, getattr(torch.optim, name), defaults, inits, grads, groups)
    assert_close(ours, theirs, *TOL[np.float64], f"{name} groups")
    assert opt.param_groups[1]["lr"] == group_options["lr"]
    assert opt.param_groups[0]["lr"] == defaults["lr"]


def test_parameter_without_grad_is_left_alone():
    p, q = Parameter(np.ones(3, np.float32)), Parameter(np.ones(3, np.float32))
    opt = optim.Adam([p, q], lr=0.1)
    set_grad(p, np.ones(3))
    opt.step()
    assert np.array_equal(q.data, np.ones(3, np.float32))
    assert q not in opt.state and opt.state[p]["step"] == 1
    assert not np.array_equal(p.data, np.ones(3, np.float32))


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad"])
def test_non_contiguous_gradient_gives_the_same_update(name):
    kwargs = {"lr": 0.1, "momentum": 0.9} if name == "SGD" else {"lr": 0.1}
    rng = np.random.default_rng(4)
    g = rng.standard_normal((3, 5))
    p, q = Parameter(np.ones((5, 3))), Parameter(np.ones((5, 3)))
    p.grad = Tensor(np.ascontiguousarray(g.T))
    q.grad = Tensor(g.T)  # a transposed view, as autograd may produce
    for param in (p, q):
        getattr(optim, name)([param], **kwargs).step()
    assert np.array_equal(p.data, q.data)


def test_updates_in_place_without_rebinding():
    p = Parameter(np.ones((2, 2)))
    view = p.data[0]
    opt = optim.SGD([p], lr=0.5, momentum=0.9)
    set_grad(p, np.ones((2, 2)))
    data = p.data
    opt.step()
    assert p.data is data
    assert np.array_equal(view, [0.5, 0.5])


@pytest.mark.parametrize("name,kernel", [("SGD", "sgd_step"), ("Adam", "adam_step"),
                                         ("RMSprop", "rmsprop_step"),
                                         ("Adagrad", "adagrad_step")])
def test_one_kernel_call_per_group_and_dtype(monkeypatch, name, kernel):
    calls = []
    real = getattr(_kernels, kernel)
    monkeypatch.setattr(_kernels, kernel,
                        lambda params, *a, **k: (calls.append(len(params)), real(params, *a, **k)))
    kwargs = {"momentum": 0.9} if name == "SGD" else {}
    ps = [Parameter(np.zeros(4, d)) for d in (np.float32, np.float32, np.float64, np.float32)]
    extra = [Parameter(np.zeros(2, np.float32)) for _ in range(3)]
    opt = getattr(optim, name)([{"params": ps}, {"params": extra, "lr": 0.5}], **kwargs)
    for p in ps + extra:
        set_grad(p, np.ones_like(p.data))
    opt.step()
    assert sorted(calls) == [1, 3, 3]  # group 0: float32 x3, float64 x1; group 1: x3
    calls.clear()
    opt.step()
    assert sorted(calls) == [1, 3, 3]


# --- state_dict -------------------------------------------------------------------------------

def state_dict_case(name):
    return {
        "SGD": dict(lr=0.1, momentum=0.9, nesterov=True),
        "Adam": dict(lr=0.01, amsgrad=True),
        "AdamW": dict(lr=0.01),
        "RMSprop": dict(lr=0.01, momentum=0.5, centered=True),
        "Adagrad": dict(lr=0.1, lr_decay=0.01),
    }[name]


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_state_dict_round_trip_then_continue_is_bit_identical(name):
    cls, kwargs = getattr(optim, name), state_dict_case(name)
    inits, grads = make_problem([np.float32, np.float64, np.float32, np.float32], seed=3)
    groups = [{"params": [0, 1]}, {"params": [2, 3], "lr": 0.02}]
    uninterrupted, _ = run_fastnn(cls, kwargs, inits, grads, groups)

    first, opt = run_fastnn(cls, kwargs, inits, grads[:3], groups)
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    params = [Parameter(x.copy()) for x in first]
    opt2 = cls([{"params": params[:2]}, {"params": params[2:], "lr": 0.5}], **kwargs)
    opt2.load_state_dict(saved)
    assert opt2.param_groups[1]["lr"] == 0.02
    for row in grads[3:]:
        for p, g in zip(params, row):
            set_grad(p, g)
        opt2.step()
    for i, (a, b) in enumerate(zip(uninterrupted, [p.data for p in params])):
        assert np.array_equal(a, b), f"{name}: parameter {i} differs after reload"


def test_state_dict_layout_matches_torch():
    torch = pytest.importorskip("torch")
    inits, grads = make_problem([np.float32] * len(SHAPES))
    groups = [{"params": [0, 1]}, {"params": [2, 3], "lr": 0.02}]
    _, opt = run_fastnn(optim.Adam, dict(amsgrad=True), inits, grads[:1], groups)
    _, topt = run_torch(torch, torch.optim.Adam, dict(amsgrad=True), inits, grads[:1], groups)
    ours, theirs = opt.state_dict(), topt.state_dict()
    assert ours["state"].keys() == theirs["state"].keys() == {0, 2, 3}  # 1 had no grad
    for index, st in ours["state"].items():
        assert st.keys() == theirs["state"][index].keys()
        assert type(st["step"]) is int and st["step"] == 1
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert isinstance(st[key], np.ndarray) and st[key].dtype == np.float32
            np.testing.assert_allclose(st[key], theirs["state"][index][key].numpy(),
                                       rtol=1e-6, atol=1e-7)
    for g, tg in zip(ours["param_groups"], theirs["param_groups"]):
        assert g["params"] == tg["params"]
        for key in ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"):
            assert g[key] == tg[key]


def test_adagrad_state_exists_before_the_first_step_like_torch():
    opt = optim.Adagrad([Parameter(np.zeros(2)), Parameter(np.zeros(3))],
                        initial_accumulator_value=0.1)
    state = opt.state_dict()["state"]
    assert sorted(state) == [0, 1]
    assert state[1]["step"] == 0 and np.array_equal(state[1]["sum"], np.full(3, 0.1))


def test_state_dict_is_a_copy():
    p = Parameter(np.zeros(3))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    set_grad(p, np.ones(3))
    opt.step()
    saved = opt.state_dict()
    opt.step()
    assert np.array_equal(saved["state"][0]["momentum_buffer"], np.ones(3))


def test_load_state_dict_casts_to_the_parameter_dtype():
    p = Parameter(np.zeros(3))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    set_grad(p, np.ones(3))
    opt.step()
    q = Parameter(np.zeros(3, np.float32))
    opt2 = optim.SGD([q], lr=0.1, momentum=0.9)
    opt2.load_state_dict(opt.state_dict())
    buf = opt2.state[q]["momentum_buffer"]
    assert buf.dtype == np.float32 and buf.flags.c_contiguous


def test_load_state_dict_errors():
    opt = optim.Adam([Parameter(np.zeros(3)), Parameter(np.zeros(2))])
    for p in opt.param_groups[0]["params"]:
        set_grad(p, np.ones_like(p.data))
    opt.step()
    saved = opt.state_dict()
    with pytest.raises(ValueError, match="Adam: the saved state has 1 parameter groups, this "
                                         "optimizer has 2"):
        optim.Adam([{"params": [Parameter(np.zeros(3))]},
                    {"params": [Parameter(np.zeros(2))]}]).load_state_dict(saved)
    with pytest.raises(ValueError, match="saved parameter group 0 has 2 parameters, this "
                                         "optimizer's has 1"):
        optim.Adam([Parameter(np.zeros(3))]).load_state_dict(saved)
    with pytest.raises(ValueError, match=r"saved state 'exp_avg' of parameter 0 has shape "
                                         r"\(3,\), the parameter has shape \(4,\)"):
        optim.Adam([Parameter(np.zeros(4)), Parameter(np.zeros(2))]).load_state_dict(saved)
    with pytest.raises(ValueError, match="load_state_dict expects a dict with 'state'"):
        opt.load_state_dict({"state": {}})


def test_pickle_keeps_the_state():
    p = Parameter(np.zeros(3))
    opt = optim.Adam([p], lr=0.1)
    set_grad(p, np.ones(3))
    opt.step()
    clone = pickle.loads(pickle.dumps(opt))
    cp = clone.param_groups[0]["params"][0]
    assert cp is not p and clone.state[cp]["step"] == 1
    set_grad(cp, np.ones(3))
    clone.step()
    assert clone.state[cp]["step"] == 2


def test_deepcopy_keeps_the_state():
    p = Parameter(np.zeros(3))
    opt = optim.Adam([p], lr=0.1)
    set_grad(p, np.ones(3))
    opt.step()
    clone = copy.deepcopy(opt)
    cp = clone.param_groups[0]["params"][0]
    assert cp is not p and clone.state[cp]["step"] == 1
    set_grad(cp, np.ones(3))
    clone.step()
    assert clone.state[cp]["step"] == 2
    assert opt.state[p]["step"] == 1


# --- zero_grad, step, repr --------------------------------------------------------------------

def test_zero_grad_sets_to_none_by_default():
    p = Parameter(np.zeros(3))
    set_grad(p, np.ones(3))
    optim.SGD([p]).zero_grad()
    assert p.grad is None


def test_zero_grad_without_set_to_none_zeros_in_place():
    p, q = Parameter(np.zeros(3)), Parameter(np.zeros(2))
    set_grad(p, np.ones(3))
    g = p.grad.data
    optim.SGD([p, q]).zero_grad(set_to_none=False)
    assert p.grad.data is g and np.array_equal(g, np.zeros(3))
    assert q.grad is None


def _linear_and_input():
    from fastnn import nn
    layer = nn.Linear(3, 2)
    return layer, np.arange(12, dtype=np.float32).reshape(4, 3)


@pytest.mark.parametrize("reset", ["optimizer", "module"])
def test_zero_grad_lets_the_next_backward_reuse_an_unreferenced_gradient(reset):
    layer, x = _linear_and_input()
    opt = optim.SGD(layer.parameters(), lr=0.1)
    zero_grad = opt.zero_grad if reset == "optimizer" else layer.zero_grad
    layer(x).sum().backward()
    before = weakref.ref(layer.weight.grad.data)  # holds no reference to the array
    zero_grad()
    assert layer.weight.grad is None
    layer(x).sum().backward()
    assert layer.weight.grad.data is before()
    assert np.array_equal(layer.weight.grad.data, np.tile(x.sum(0), (2, 1)))


@pytest.mark.parametrize("hold", ["tensor", "array", "view"])
def test_zero_grad_never_reuses_a_gradient_that_is_still_held(hold):
    layer, x = _linear_and_input()
    opt = optim.SGD(layer.parameters(), lr=0.1)
    layer(x).sum().backward()
    grad = layer.weight.grad
    held = {"tensor": grad, "array": grad.data, "view": grad.data[:, 1:]}[hold]
    expected = np.array(held.data if hold == "tensor" else held)
    del grad
    opt.zero_grad()
    (2 * layer(x)).sum().backward()  # a different gradient: overwriting would show
    assert np.array_equal(held.data if hold == "tensor" else held, expected)
    assert np.array_equal(layer.weight.grad.data, 2 * np.tile(x.sum(0), (2, 1)))


def test_zero_grad_does_not_reuse_a_gradient_of_another_dtype():
    layer, x = _linear_and_input()
    opt = optim.SGD(layer.parameters(), lr=0.1)
    layer(x).sum().backward()
    opt.zero_grad()
    for p in layer.parameters():  # a new dtype: the float32 spares do not fit
        p.data = p.data.astype(np.float64)
    layer(x.astype(np.float64)).sum().backward()
    assert layer.weight.grad.data.dtype == np.float64
    assert np.array_equal(layer.weight.grad.data, np.tile(x.sum(0), (2, 1)))


def test_training_with_reused_gradients_matches_fresh_ones_bit_for_bit():
    from fastnn import nn
    runs = []
    for reuse in (True, False):
        fastnn_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        rng = np.random.default_rng(1)
        for _ in range(5):
            x = rng.standard_normal((6, 5)).astype(np.float32)
            if reuse:
                opt.zero_grad()
            else:
                for p in model.parameters():
                    p.grad = None  # plain assignment keeps no spare
            (model(x) ** 2).mean().backward()
            opt.step()
        runs.append([p.data.copy() for p in model.parameters()])
    for a, b in zip(*runs):
        assert np.array_equal(a, b)


def test_step_returns_the_closure_loss():
    p = Parameter(np.zeros(3))

    def closure():
        set_grad(p, np.ones(3))
        return 1.5

    assert optim.SGD([p], lr=1.0).step(closure) == 1.5
    assert np.array_equal(p.data, -np.ones(3))
    with pytest.raises(TypeError, match="SGD: closure must be callable"):
        optim.SGD([p]).step(3)


def test_add_param_group_takes_defaults():
    opt = optim.SGD([Parameter(np.zeros(1))], lr=0.1, momentum=0.9)
    opt.add_param_group({"params": Parameter(np.zeros(2)), "lr": 0.5})
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[1]["momentum"] == 0.9
    assert len(opt.param_groups[1]["params"]) == 1


def test_repr_lists_each_group_like_torch():
    opt = optim.SGD([{"params": [Parameter(np.zeros(1))]},
                     {"params": [Parameter(np.zeros(1))], "lr": 0.5}], lr=0.1, momentum=0.9)
    assert repr(opt) == (
        "SGD (\nParameter Group 0\n    dampening: 0\n    lr: 0.1\n    maximize: False\n"
        "    momentum: 0.9\n    nesterov: False\n    weight_decay: 0\n\nParameter Group 1\n"
        "    dampening: 0\n    lr: 0.5\n    maximize: False\n    momentum: 0.9\n"
        "    nesterov: False\n    weight_decay: 0\n)")


def test_defaults_match_torch():
    torch = pytest.importorskip("torch")
    for name in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad"):
        ours = getattr(optim, name)([Parameter(np.zeros(1))]).defaults
        theirs = getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(1))]).defaults
        for key, value in ours.items():
            assert theirs[key] == value, f"{name} default {key}: {value} vs {theirs[key]}"


# --- bad arguments ----------------------------------------------------------------------------

def one_param():
    return [Parameter(np.zeros(2))]


@pytest.mark.parametrize("build,exc,match", [
    (lambda: optim.SGD(one_param(), lr=-0.1), ValueError,
     r"fastnn.optim.SGD: invalid lr -0.1 \(must be >= 0\)"),
    (lambda: optim.SGD(one_param(), lr="0.1"), TypeError, "SGD: lr must be a real number"),
    (lambda: optim.SGD(one_param(), lr=True), TypeError, "SGD: lr must be a real number"),
    (lambda: optim.SGD(one_param(), momentum=-1), ValueError, "SGD: invalid momentum -1"),
    (lambda: optim.SGD(one_param(), weight_decay=-1), ValueError, "invalid weight_decay -1"),
    (lambda: optim.SGD(one_param(), nesterov=True), ValueError,
     "SGD: nesterov momentum needs momentum > 0 and dampening 0"),
    (lambda: optim.SGD(one_param(), momentum=0.9, dampening=0.1, nesterov=True), ValueError,
     "nesterov momentum needs"),
    (lambda: optim.SGD(one_param(), maximize=1), TypeError, "SGD: maximize must be a bool"),
    (lambda: optim.Adam(one_param(), betas=(1.0, 0.999)), ValueError,
     r"Adam: invalid betas\[0\] 1.0 \(must be in \[0, 1\)\)"),
    (lambda: optim.Adam(one_param(), betas=(0.9, -0.1)), ValueError, r"invalid betas\[1\]"),
    (lambda: optim.Adam(one_param(), betas=0.9), TypeError, "Adam: betas must be a pair"),
    (lambda: optim.Adam(one_param(), eps=-1e-8), ValueError, "Adam: invalid eps"),
    (lambda: optim.Adam(one_param(), eps=0.0), ValueError, r"Adam: invalid eps 0.0 \(must be > 0"),
    (lambda: optim.SGD(one_param(), lr=float("inf")), ValueError,
     r"SGD: invalid lr inf \(must be finite\)"),
    (lambda: optim.SGD(one_param(), dampening=float("-inf")), ValueError, "invalid dampening"),
    (lambda: optim.RMSprop(one_param(), alpha=1.0), ValueError,
     r"RMSprop: invalid alpha 1.0 \(must be in \[0, 1\)\)"),
    (lambda: optim.Adagrad(one_param(), eps=0), ValueError, "Adagrad: invalid eps 0"),
    (lambda: optim.Adam(one_param(), lr=float("nan")), ValueError,
     r"Adam: invalid lr nan \(must be finite\)"),
    (lambda: optim.AdamW(one_param(), weight_decay=-0.01), ValueError,
     "AdamW: invalid weight_decay"),
    (lambda: optim.Adam(one_param(), amsgrad="yes"), TypeError, "amsgrad must be a bool"),
    (lambda: optim.RMSprop(one_param(), alpha=-0.5), ValueError, "RMSprop: invalid alpha"),
    (lambda: optim.RMSprop(one_param(), momentum=-0.5), ValueError, "RMSprop: invalid momentum"),
    (lambda: optim.RMSprop(one_param(), centered=None), TypeError, "centered must be a bool"),
    (lambda: optim.Adagrad(one_param(), lr_decay=-1), ValueError, "Adagrad: invalid lr_decay"),
    (lambda: optim.Adagrad(one_param(), initial_accumulator_value=-1), ValueError,
     "Adagrad: invalid initial_accumulator_value"),
    (lambda: optim.Adam([{"params": one_param(), "lr": -1}]), ValueError,
     "Adam: invalid lr -1"),
])
def test_bad_hyper_parameters(build, exc, match):
    with pytest.raises(exc, match=match):
        build()


def test_bad_params():
    p = Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="SGD: got an empty parameter list"):
        optim.SGD([])
    with pytest.raises(TypeError, match="SGD: params must be an iterable of parameters or of "
                                        "dicts, got a single Parameter"):
        optim.SGD(p)
    with pytest.raises(TypeError, match="SGD: params must be an iterable .* got int"):
        optim.SGD(3)
    with pytest.raises(TypeError, match="Adam: params must be an ordered collection, not a set"):
        optim.Adam({p})
    with pytest.raises(ValueError, match="SGD: parameter 1 of group 0 appears more than once"):
        optim.SGD([p, p])
    with pytest.raises(ValueError, match="some parameters of group 1 appear in more than one"):
        optim.SGD([{"params": [p]}, {"params": [p]}])
    with pytest.raises(TypeError, match="SGD: parameter 0 of group 0 must be a parameter .* "
                                        "got ndarray"):
        optim.SGD([np.zeros(2)])
    with pytest.raises(TypeError, match="SGD: parameter 0 of group 0 has dtype int64"):
        optim.SGD([Tensor(np.zeros(2, np.int64))])
    q = Tensor(np.zeros((2, 4))[:, 0])
    with pytest.raises(ValueError, match="SGD: parameter 0 of group 0 must be a C-contiguous"):
        optim.SGD([q])
    with pytest.raises(TypeError, match="SGD: a parameter group must be a dict, got Parameter"):
        optim.SGD([{"params": [p]}, Parameter(np.zeros(1))])
    with pytest.raises(ValueError, match="SGD: a parameter group must have a 'params' entry"):
        optim.SGD([{"lr": 0.1}])
    with pytest.raises(TypeError, match="a group's params must be an ordered collection"):
        optim.SGD([{"params": {p}}])
    opt = optim.SGD([p])
    with pytest.raises(ValueError, match="appear in more than one parameter group"):
        opt.add_param_group({"params": [p]})


def test_grad_of_the_wrong_dtype_is_rejected_by_the_kernel():
    p = Parameter(np.zeros(2, np.float32))
    p.grad = Tensor(np.ones(2, np.float64))
    with pytest.raises(TypeError, match="sgd_step"):
        optim.SGD([p], lr=0.1).step()


def test_grad_of_the_wrong_shape_is_rejected_by_the_kernel():
    p = Parameter(np.zeros(2, np.float32))
    p.grad = Tensor(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="adam_step"):
        optim.Adam([p]).step()


def test_closure_records_a_graph_even_under_no_grad():
    import fastnn

    p = Parameter(np.ones(3, np.float32))

    def closure():
        loss = (p * p).sum()
        loss.backward()
        return loss

    opt = optim.SGD([p], lr=0.25)
    with fastnn.no_grad():
        opt.step(closure)
    assert np.array_equal(p.data, np.full(3, 0.5, np.float32))


def test_fitting_a_linear_model_with_autograd_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x, t = rng.standard_normal((16, 4)), rng.standard_normal((16, 2))
    w0, b0 = rng.standard_normal((2, 4)), rng.standard_normal(2)
    w, b = Parameter(w0.copy()), Parameter(b0.copy())
    tw, tb = torch.nn.Parameter(torch.from_numpy(w0.copy())), \
        torch.nn.Parameter(torch.from_numpy(b0.copy()))
    opt = optim.AdamW([w, b], lr=0.01)
    topt = torch.optim.AdamW([tw, tb], lr=0.01)
    for _ in range(4):
        opt.zero_grad()
        ((Tensor(x) @ w.T + b - Tensor(t)) ** 2).mean().backward()
        opt.step()
        topt.zero_grad()
        ((torch.from_numpy(x) @ tw.T + tb - torch.from_numpy(t)) ** 2).mean().backward()
        topt.step()
    np.testing.assert_allclose(w.data, tw.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.data, tb.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad"])
def test_bit_identical_for_one_and_two_threads(name):
    import fastnn

    kwargs = {"momentum": 0.9, "lr": 0.1} if name == "SGD" else {"lr": 0.01}
    rng = np.random.default_rng(6)
    init = rng.standard_normal((300, 257)).astype(np.float32)
    grads = [rng.standard_normal(init.shape).astype(np.float32) for _ in range(3)]
    results = []
    for threads in (1, 2):
        fastnn.set_num_threads(threads)
        p = Parameter(init.copy())
        opt = getattr(optim, name)([p], **kwargs)
        for g in grads:
            set_grad(p, g)
            opt.step()
        results.append(p.data)
    assert np.array_equal(results[0], results[1])


@pytest.mark.parametrize("name,kwargs", [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
                                         ("Adam", dict(lr=0.01, amsgrad=True))])
def test_one_cycle_schedule_drives_training_like_torch(name, kwargs):
    torch = pytest.importorskip("torch")
    inits, grads = make_problem([np.float64] * len(SHAPES), seed=7)
    params = [Parameter(x.copy()) for x in inits]
    tparams = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in inits]
    opt = getattr(optim, name)(params, **kwargs)
    topt = getattr(torch.optim, name)(tparams, **kwargs)
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=STEPS)
    tsched = torch.optim.lr_scheduler.OneCycleLR(topt, max_lr=0.05, total_steps=STEPS)
    for row in grads:
        for p, tp, g in zip(params, tparams, row):
            set_grad(p, g)
            tp.grad = None if g is None else torch.from_numpy(g.copy())
        opt.step()
        topt.step()
        sched.step()
        tsched.step()
    assert_close([p.data for p in params], [tp.detach().numpy() for tp in tparams],
                 *TOL[np.float64], f"{name} with OneCycleLR")


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad"])
def test_zero_sized_parameter(name):
    p, q = Parameter(np.zeros((0, 3), np.float32)), Parameter(np.ones(2, np.float32))
    opt = getattr(optim, name)([p, q], lr=0.1)
    set_grad(p, np.zeros((0, 3)))
    set_grad(q, np.ones(2))
    opt.step()
    assert p.data.shape == (0, 3) and np.all(q.data < 1)


def test_loads_a_torch_optimizer_state_dict_and_continues_like_torch():
    torch = pytest.importorskip("torch")
    inits, grads = make_problem([np.float32] * len(SHAPES), seed=8)
    kwargs = dict(lr=0.01, amsgrad=True)
    theirs_before, topt = run_torch(torch, torch.optim.Adam, kwargs, inits, grads[:3])
    params = [Parameter(x.copy()) for x in theirs_before]
    opt = optim.Adam(params, **kwargs)
    opt.load_state_dict(topt.state_dict())
    assert opt.state[params[0]]["step"] == 3 and opt.state[params[1]]["step"] == 1
    tparams = topt.param_groups[0]["params"]
    for row in grads[3:]:
        for p, tp, g in zip(params, tparams, row):
            set_grad(p, g)
            tp.grad = None if g is None else torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    assert_close([p.data for p in params], [tp.detach().numpy() for tp in tparams],
                 *TOL[np.float32], "Adam loaded from torch")
