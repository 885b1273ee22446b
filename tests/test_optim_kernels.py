"""fastnn._core optimizer steps against torch.optim, and the gradient-list utilities."""

import math

import numpy as np
import pytest

from fastnn import _core

SHAPES = [(3, 4), (5,), (1,), (2, 3, 2), (0,)]
STEPS = 4
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype(dtype) for s in SHAPES]


def make_grads(dtype, step):
    rng = np.random.default_rng(100 + step)
    return [rng.normal(size=s).astype(dtype) for s in SHAPES]


def zeros_like(arrays):
    return [np.zeros_like(a) for a in arrays]


def assert_lists_close(got, want, rtol, atol, what):
    for i, (g, w) in enumerate(zip(got, want)):
        w = np.asarray(w, dtype=np.float64)
        diff = np.abs(np.asarray(g, dtype=np.float64) - w)
        if diff.size and not np.all(diff <= atol + rtol * np.abs(w)):
            j = np.unravel_index(np.argmax(diff), diff.shape)
            raise AssertionError(f"{what}[{i}]: largest difference {diff[j]} at {j} "
                                 f"(got {g[j]}, want {w[j]})")


def run_torch(torch, make_opt, params, dtype):
    tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    opt = make_opt(tparams)
    for step in range(STEPS):
        for tp, g in zip(tparams, make_grads(dtype, step)):
            tp.grad = torch.from_numpy(g)
        opt.step()
    return [tp.detach().numpy() for tp in tparams], opt


def state_of(opt, tparams_opt, key):
    return [opt.state[p][key].numpy() for p in tparams_opt]


# --- SGD --------------------------------------------------------------------------------------

SGD_CASES = [
    dict(),
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.2, weight_decay=0.01),
    dict(momentum=0.8, nesterov=True, weight_decay=0.001),
    dict(momentum=0.5, maximize=True),
    dict(weight_decay=0.1, maximize=True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opts", SGD_CASES, ids=lambda o: ",".join(o) or "plain")
def test_sgd_matches_torch(opts, dtype):
    torch = pytest.importorskip("torch")
    lr = 0.05
    params = make_params(dtype)
    want, opt = run_torch(torch, lambda ps: torch.optim.SGD(ps, lr=lr, **opts), params, dtype)
    ours = [p.copy() for p in params]
    bufs = zeros_like(ours) if opts.get("momentum", 0) else None
    for step in range(STEPS):
        _core.sgd_step(ours, make_grads(dtype, step), bufs, lr=lr, first_step=step == 0, **opts)
    assert_lists_close(ours, want, **TOL[dtype], what="params")
    if bufs is not None:
        group = opt.param_groups[0]["params"]
        assert_lists_close(bufs, state_of(opt, group, "momentum_buffer"), **TOL[dtype],
                           what="momentum_buffer")


def test_sgd_plain_matches_numpy():
    params = make_params(np.float64)
    grads = make_grads(np.float64, 0)
    want = [p - 0.1 * g for p, g in zip(params, grads)]
    _core.sgd_step(params, grads, lr=0.1)
    assert_lists_close(params, want, rtol=0, atol=0, what="params")


# --- Adam / AdamW -----------------------------------------------------------------------------

ADAM_CASES = [
    dict(),
    dict(weight_decay=0.01),
    dict(amsgrad=True),
    dict(amsgrad=True, weight_decay=0.05, maximize=True),
    dict(adamw=True, weight_decay=0.05),
    dict(adamw=True, weight_decay=0.05, amsgrad=True, maximize=True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opts", ADAM_CASES, ids=lambda o: ",".join(o) or "plain")
def test_adam_matches_torch(opts, dtype):
    torch = pytest.importorskip("torch")
    opts = dict(opts)
    adamw = opts.pop("adamw", False)
    amsgrad = opts.pop("amsgrad", False)
    lr, betas, eps = 0.01, (0.8, 0.95), 1e-7
    cls = torch.optim.AdamW if adamw else torch.optim.Adam
    params = make_params(dtype)
    want, opt = run_torch(
        torch,
        lambda ps: cls(ps, lr=lr, betas=betas, eps=eps, amsgrad=amsgrad,
                       weight_decay=opts.get("weight_decay", 0.0),
                       maximize=opts.get("maximize", False)),
        params, dtype)
    ours = [p.copy() for p in params]
    m, v = zeros_like(ours), zeros_like(ours)
    vmax = zeros_like(ours) if amsgrad else None
    for step in range(STEPS):
        _core.adam_step(ours, make_grads(dtype, step), m, v, step + 1, lr=lr, beta1=betas[0],
                        beta2=betas[1], eps=eps, decoupled_weight_decay=adamw,
                        max_exp_avg_sqs=vmax, **opts)
    group = opt.param_groups[0]["params"]
    assert_lists_close(ours, want, **TOL[dtype], what="params")
    assert_lists_close(m, state_of(opt, group, "exp_avg"), **TOL[dtype], what="exp_avg")
    assert_lists_close(v, state_of(opt, group, "exp_avg_sq"), **TOL[dtype], what="exp_avg_sq")
    if amsgrad:
        assert_lists_close(vmax, state_of(opt, group, "max_exp_avg_sq"), **TOL[dtype],
                           what="max_exp_avg_sq")


def test_adam_first_step_matches_hand_formula():
    p = np.array([1.0, -2.0])
    g = np.array([0.5, -0.25])
    m, v = np.zeros(2), np.zeros(2)
    _core.adam_step([p], [g], [m], [v], 1, lr=0.1)
    # After one step m_hat = g and v_hat = g^2, so the update is lr * g / (|g| + eps).
    want = np.array([1.0, -2.0]) - 0.1 * g / (np.abs(g) / 1.0 + 1e-8 / math.sqrt(1 - 0.999))
    np.testing.assert_allclose(p, want, rtol=1e-6)


# --- RMSprop ----------------------------------------------------------------------------------

RMSPROP_CASES = [
    dict(),
    dict(momentum=0.9),
    dict(centered=True),
    dict(centered=True, momentum=0.5, weight_decay=0.01),
    dict(weight_decay=0.01, maximize=True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opts", RMSPROP_CASES, ids=lambda o: ",".join(o) or "plain")
def test_rmsprop_matches_torch(opts, dtype):
    torch = pytest.importorskip("torch")
    lr, alpha, eps = 0.01, 0.9, 1e-6
    params = make_params(dtype)
    want, opt = run_torch(
        torch, lambda ps: torch.optim.RMSprop(ps, lr=lr, alpha=alpha, eps=eps, **opts),
        params, dtype)
    ours = [p.copy() for p in params]
    sq = zeros_like(ours)
    bufs = zeros_like(ours) if opts.get("momentum", 0) > 0 else None
    gavg = zeros_like(ours) if opts.get("centered") else None
    for step in range(STEPS):
        _core.rmsprop_step(ours, make_grads(dtype, step), sq, lr=lr, alpha=alpha, eps=eps,
                           momentum_buffers=bufs, grad_avgs=gavg, **opts)
    group = opt.param_groups[0]["params"]
    assert_lists_close(ours, want, **TOL[dtype], what="params")
    assert_lists_close(sq, state_of(opt, group, "square_avg"), **TOL[dtype], what="square_avg")
    if gavg is not None:
        assert_lists_close(gavg, state_of(opt, group, "grad_avg"), **TOL[dtype],
                           what="grad_avg")
    if bufs is not None:
        assert_lists_close(bufs, state_of(opt, group, "momentum_buffer"), **TOL[dtype],
                           what="momentum_buffer")


# --- Adagrad ----------------------------------------------------------------------------------

ADAGRAD_CASES = [
    dict(),
    dict(lr_decay=0.1),
    dict(lr_decay=0.05, weight_decay=0.01, maximize=True),
    dict(initial_accumulator_value=0.5, eps=1e-6),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opts", ADAGRAD_CASES, ids=lambda o: ",".join(o) or "plain")
def test_adagrad_matches_torch(opts, dtype):
    torch = pytest.importorskip("torch")
    lr = 0.1
    params = make_params(dtype)
    want, opt = run_torch(torch, lambda ps: torch.optim.Adagrad(ps, lr=lr, **opts), params,
                          dtype)
    opts = dict(opts)
    init = opts.pop("initial_accumulator_value", 0.0)
    ours = [p.copy() for p in params]
    sums = [np.full_like(p, init) for p in ours]
    for step in range(STEPS):
        _core.adagrad_step(ours, make_grads(dtype, step), sums, step + 1, lr=lr, **opts)
    group = opt.param_groups[0]["params"]
    assert_lists_close(ours, want, **TOL[dtype], what="params")
    assert_lists_close(sums, state_of(opt, group, "sum"), **TOL[dtype], what="sum")


# --- list utilities ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_of_squares_scale_and_clamp(dtype):
    arrays = make_params(dtype, seed=3)
    arrays.append(np.random.default_rng(4).normal(size=100003).astype(dtype))
    want = sum(float((a.astype(np.float64) ** 2).sum()) for a in arrays)
    got = _core.sum_of_squares(arrays)
    assert isinstance(got, float)
    assert abs(got - want) <= 1e-12 * want
    assert _core.sum_of_squares([]) == 0.0
    copies = [a.copy() for a in arrays]
    _core.scale_(arrays, 0.5)
    assert_lists_close(arrays, [c * dtype(0.5) for c in copies], rtol=0, atol=0, what="scale_")
    arrays[0].flat[0] = np.nan
    _core.clamp_(arrays, -0.25, 0.5)
    assert np.isnan(arrays[0].flat[0])
    arrays[0].flat[0] = 0
    expect = [np.clip(c * dtype(0.5), dtype(-0.25), dtype(0.5)) for c in copies]
    expect[0].flat[0] = 0
    assert_lists_close(arrays, expect, rtol=0, atol=0, what="clamp_")


def test_sum_of_squares_matches_torch_clip_grad_norm():
    torch = pytest.importorskip("torch")
    grads = make_grads(np.float32, 0)
    total = math.sqrt(_core.sum_of_squares(grads))
    want = torch.nn.utils.get_total_norm([torch.from_numpy(g) for g in grads]).item()
    assert abs(total - want) <= 1e-6 * want


def test_sum_of_squares_accepts_read_only_arrays():
    a = np.ones(10, np.float32)
    a.flags.writeable = False
    assert _core.sum_of_squares((a, a)) == 20.0


# --- bad input --------------------------------------------------------------------------------

def adam_args(dtype=np.float32):
    params = make_params(dtype)
    return params, make_grads(dtype, 0), zeros_like(params), zeros_like(params)


@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=-1.0), r"fastnn.adam_step: lr must be >= 0, got -1"),
    (dict(lr=math.nan), r"fastnn.adam_step: lr must be finite, got nan"),
    (dict(lr=math.inf), r"fastnn.adam_step: lr must be finite, got inf"),
    (dict(beta1=1.0), r"fastnn.adam_step: beta1 must be in \[0, 1\), got 1"),
    (dict(beta2=-0.1), r"fastnn.adam_step: beta2 must be in \[0, 1\), got -0.1"),
    (dict(eps=0.0), r"fastnn.adam_step: eps must be > 0, got 0"),
    (dict(weight_decay=-1e-3), r"fastnn.adam_step: weight_decay must be >= 0, got -0.001"),
    (dict(step=0), r"fastnn.adam_step: step must be >= 1"),
])
def test_adam_bad_hyper_parameters(kwargs, match):
    params, grads, m, v = adam_args()
    args = dict(step=1, lr=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        _core.adam_step(params, grads, m, v, **args)


@pytest.mark.parametrize("kwargs,match", [
    (dict(momentum=-0.5), r"fastnn.sgd_step: momentum must be >= 0, got -0.5"),
    (dict(nesterov=True), r"fastnn.sgd_step: nesterov needs momentum > 0 and dampening == 0"),
    (dict(nesterov=True, momentum=0.9, dampening=0.1), r"nesterov needs momentum > 0"),
    (dict(momentum=0.9), r"fastnn.sgd_step: momentum_buffers is required when momentum"),
    (dict(lr=-0.1), r"fastnn.sgd_step: lr must be >= 0, got -0.1"),
])
def test_sgd_bad_hyper_parameters(kwargs, match):
    params = make_params(np.float64)
    args = dict(lr=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        _core.sgd_step(params, make_grads(np.float64, 0), **args)


def test_rmsprop_and_adagrad_bad_hyper_parameters():
    params = make_params(np.float32)
    grads = make_grads(np.float32, 0)
    with pytest.raises(ValueError, match=r"fastnn.rmsprop_step: alpha must be in \[0, 1\)"):
        _core.rmsprop_step(params, grads, zeros_like(params), lr=0.1, alpha=1.5)
    with pytest.raises(ValueError, match="fastnn.rmsprop_step: eps must be > 0, got -1"):
        _core.rmsprop_step(params, grads, zeros_like(params), lr=0.1, eps=-1.0)
    with pytest.raises(ValueError, match="fastnn.rmsprop_step: grad_avgs is required"):
        _core.rmsprop_step(params, grads, zeros_like(params), lr=0.1, centered=True)
    with pytest.raises(ValueError, match="fastnn.rmsprop_step: momentum_buffers is required"):
        _core.rmsprop_step(params, grads, zeros_like(params), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="fastnn.adagrad_step: lr_decay must be >= 0, got -1"):
        _core.adagrad_step(params, grads, zeros_like(params), 1, lr=0.1, lr_decay=-1.0)
    with pytest.raises(ValueError, match="fastnn.adagrad_step: lr must be finite, got inf"):
        _core.adagrad_step(params, grads, zeros_like(params), 1, lr=math.inf)


def test_optimizer_bad_arrays():
    params, grads, m, v = adam_args()
    with pytest.raises(ValueError, match="fastnn.adam_step: grads has 4 arrays but params has "
                                         "5; the lists must have equal lengths"):
        _core.adam_step(params, grads[:4], m, v, 1, lr=0.1)
    bad = list(grads)
    bad[1] = np.zeros(6, np.float32)
    with pytest.raises(ValueError, match=r"fastnn.adam_step: grads\[1\] has shape \(6,\) but "
                                         r"params\[1\] has shape \(5,\)"):
        _core.adam_step(params, bad, m, v, 1, lr=0.1)
    bad = list(m)
    bad[0] = bad[0].astype(np.float64)
    with pytest.raises(TypeError, match=r"fastnn.adam_step: exp_avgs\[0\] has dtype float64 "
                                        r"but params\[0\] has dtype float32"):
        _core.adam_step(params, grads, bad, v, 1, lr=0.1)
    mixed = list(params)
    mixed[2] = mixed[2].astype(np.float64)
    with pytest.raises(TypeError, match=r"params\[2\] has dtype float64 but params\[0\]"):
        _core.adam_step(mixed, grads, m, v, 1, lr=0.1)
    with pytest.raises(TypeError, match=r"fastnn.sgd_step: params\[0\] must be float32 or "
                                        r"float64, got int64"):
        _core.sgd_step([np.zeros(3, np.int64)], [np.zeros(3, np.int64)], lr=0.1)
    strided = list(params)
    strided[0] = np.zeros((3, 8), np.float32)[:, ::2]
    with pytest.raises(ValueError, match=r"params\[0\] with shape \(3, 4\) must be C-contig"):
        _core.adam_step(strided, grads, m, v, 1, lr=0.1)
    ro = list(v)
    ro[3] = ro[3].copy()
    ro[3].flags.writeable = False
    with pytest.raises(ValueError, match=r"fastnn.adam_step: exp_avg_sqs\[3\] is read-only"):
        _core.adam_step(params, grads, m, ro, 1, lr=0.1)
    ro_params = [p.copy() for p in params]
    ro_params[0].flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[0\] is read-only"):
        _core.sgd_step(ro_params, grads, lr=0.1)
    with pytest.raises(ValueError, match=r"fastnn.adam_step: exp_avg(_sq)?s\[\d\] overlaps "
                                         r"exp_avg(_sq)?s\[\d\] in memory"):
        _core.adam_step(params, grads, m, m, 1, lr=0.1)
    with pytest.raises(ValueError, match=r"overlaps params\[0\]|params\[0\] overlaps"):
        _core.sgd_step([params[0], params[0]], [grads[0], grads[0]], lr=0.1)
    with pytest.raises(TypeError, match=r"fastnn.adam_step: grads\[2\] must be a numpy array, "
                                        r"got list"):
        _core.adam_step(params, grads[:2] + [[1.0]] + grads[3:], m, v, 1, lr=0.1)
    with pytest.raises(TypeError, match="fastnn.sgd_step: params must be a list of numpy "
                                        "arrays, got ndarray"):
        _core.sgd_step(params[0], grads[0], lr=0.1)


def test_list_utility_errors():
    a = np.zeros(3, np.float32)
    with pytest.raises(TypeError, match=r"fastnn.sum_of_squares: arrays\[1\] has dtype float64"):
        _core.sum_of_squares([a, np.zeros(3)])
    with pytest.raises(ValueError, match="fastnn.clamp_: needs lo <= hi"):
        _core.clamp_([a], 1.0, -1.0)
    ro = a.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"fastnn.scale_: arrays\[0\] is read-only"):
        _core.scale_([ro], 2.0)
    with pytest.raises(ValueError, match=r"fastnn.scale_: arrays\[1\] overlaps arrays\[0\]"):
        _core.scale_([a, a], 2.0)


def test_steps_identical_for_one_and_two_threads():
    saved = _core.get_num_threads()
    shapes = [(700, 300), (300,), (5,)]
    finals = []
    try:
        for threads in (1, 2):
            _core.set_num_threads(threads)
            rng = np.random.default_rng(12)  # the same data for both runs
            params = [rng.normal(size=s).astype(np.float32) for s in shapes]
            grads = [rng.normal(size=s).astype(np.float32) for s in shapes]
            m, v, vmax = zeros_like(params), zeros_like(params), zeros_like(params)
            for step in range(1, 4):
                _core.adam_step(params, grads, m, v, step, lr=1e-2, weight_decay=0.01,
                                max_exp_avg_sqs=vmax)
            finals.append((params, _core.sum_of_squares(params)))
    finally:
        _core.set_num_threads(saved)
    assert finals[0][1] == finals[1][1]
    for a, b in zip(finals[0][0], finals[1][0]):
        np.testing.assert_array_equal(a, b)
