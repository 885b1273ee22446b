import math
import warnings

import numpy as np
import pytest

from fastnn import optim
from fastnn.nn import Parameter
from fastnn.optim import lr_scheduler as sched


def make_sgd(lrs=(0.1, 0.02), momentum=0.9):
    groups = [{"params": [Parameter(np.zeros(3, np.float32))], "lr": lr} for lr in lrs]
    return optim.SGD(groups, lr=lrs[0], momentum=momentum)


def make_torch_sgd(torch, lrs=(0.1, 0.02), momentum=0.9):
    groups = [{"params": [torch.nn.Parameter(torch.zeros(3))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0], momentum=momentum)


# name -> (fastnn builder, torch builder); each builder takes (module, optimizer).
CASES = {
    "step_lr": lambda m, o: m.StepLR(o, step_size=3, gamma=0.5),
    "multi_step_lr_repeated_milestone": lambda m, o: m.MultiStepLR(o, [2, 5, 5, 9], gamma=0.3),
    "exponential_lr": lambda m, o: m.ExponentialLR(o, gamma=0.9),
    "cosine_annealing_lr": lambda m, o: m.CosineAnnealingLR(o, T_max=7, eta_min=1e-3),
    "cosine_annealing_past_t_max": lambda m, o: m.CosineAnnealingLR(o, T_max=4),
    "linear_lr_warmup": lambda m, o: m.LinearLR(o, start_factor=0.1, total_iters=4),
    "linear_lr_decay": lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.2,
                                               total_iters=6),
    "lambda_lr": lambda m, o: m.LambdaLR(o, lambda e: 1.0 / (1 + e)),
    "lambda_lr_per_group": lambda m, o: m.LambdaLR(o, [lambda e: 0.9 ** e, lambda e: e + 1]),
    "one_cycle_cos": lambda m, o: m.OneCycleLR(o, max_lr=[1.0, 0.5], total_steps=20),
    "one_cycle_linear_three_phase": lambda m, o: m.OneCycleLR(
        o, max_lr=0.8, epochs=4, steps_per_epoch=5, anneal_strategy="linear",
        three_phase=True, pct_start=0.25),
    "one_cycle_no_momentum": lambda m, o: m.OneCycleLR(o, max_lr=0.3, total_steps=20,
                                                       cycle_momentum=False),
    "sequential_warmup_then_cosine": lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.1, total_iters=3), m.CosineAnnealingLR(o, T_max=10)],
        milestones=[3]),
    "sequential_three_schedulers": lambda m, o: m.SequentialLR(
        o, [m.ExponentialLR(o, gamma=0.5), m.StepLR(o, step_size=2, gamma=0.1),
            m.LambdaLR(o, lambda e: 0.5 + e)], milestones=[2, 6]),
}


def run_schedule(make_opt, build, module, steps, momentum_key):
    opt = make_opt()
    s = build(module, opt)
    lrs, momenta = [s.get_last_lr()], []
    for _ in range(steps):
        opt.step()
        s.step()
        lrs.append(s.get_last_lr())
        assert lrs[-1] == [g["lr"] for g in opt.param_groups]
        momenta.append([momentum_key(g) for g in opt.param_groups])
    return lrs, momenta


@pytest.mark.parametrize("case", sorted(CASES))
def test_scheduler_matches_torch_step_for_step(case):
    torch = pytest.importorskip("torch")
    steps = 19 if case.startswith("one_cycle") else 14
    ours = run_schedule(make_sgd, CASES[case], sched, steps, lambda g: g["momentum"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = run_schedule(lambda: make_torch_sgd(torch), CASES[case],
                              torch.optim.lr_scheduler, steps, lambda g: g["momentum"])
    assert ours[0] == theirs[0], f"learning rates differ: {ours[0]} vs {theirs[0]}"
    assert ours[1] == theirs[1], f"momenta differ: {ours[1]} vs {theirs[1]}"


def test_one_cycle_cycles_adam_beta1_like_torch():
    torch = pytest.importorskip("torch")
    opt = optim.Adam([Parameter(np.zeros(2))], lr=1e-3, betas=(0.9, 0.99))
    topt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=1e-3, betas=(0.9, 0.99))
    s = sched.OneCycleLR(opt, max_lr=0.01, total_steps=10)
    ts = torch.optim.lr_scheduler.OneCycleLR(topt, max_lr=0.01, total_steps=10)
    for _ in range(9):
        assert opt.param_groups[0]["betas"] == topt.param_groups[0]["betas"]
        assert s.get_last_lr() == ts.get_last_lr()
        opt.step()
        topt.step()
        s.step()
        ts.step()
    assert opt.param_groups[0]["betas"][1] == 0.99


def test_one_cycle_stepping_past_total_steps_raises():
    opt = make_sgd()
    s = sched.OneCycleLR(opt, max_lr=0.1, total_steps=3)
    s.step()
    s.step()
    s.step()
    with pytest.raises(ValueError, match="OneCycleLR: stepped 4 times, more than total_steps 3"):
        s.step()


@pytest.mark.parametrize("mode,threshold_mode", [("min", "rel"), ("min", "abs"),
                                                 ("max", "rel"), ("max", "abs")])
def test_reduce_lr_on_plateau_matches_torch(mode, threshold_mode):
    torch = pytest.importorskip("torch")
    metrics = [1.0, 0.9, 0.95, 0.9, 0.91, 0.92, 0.5, 0.6, 0.7, 0.8, 0.49, 0.9, 1.2, 1.3, 1.3,
               1.29, 1.1, 1.0, 1.0, 1.0, 1.0, 1.0]
    if mode == "max":
        metrics = [-m for m in metrics]
    kwargs = dict(mode=mode, factor=0.5, patience=1, threshold=0.01,
                  threshold_mode=threshold_mode, cooldown=2, min_lr=[0.01, 0.004])
    opt = make_sgd()
    topt = make_torch_sgd(torch)
    s = sched.ReduceLROnPlateau(opt, **kwargs)
    ts = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kwargs)
    for i, m in enumerate(metrics):
        s.step(m)
        ts.step(m)
        assert s.get_last_lr() == ts.get_last_lr(), f"epoch {i}"
        assert (s.best, s.num_bad_epochs, s.cooldown_counter) == \
            (ts.best, ts.num_bad_epochs, ts.cooldown_counter), f"epoch {i}"
    assert s.get_last_lr()[1] == 0.004  # reached min_lr


def test_reduce_lr_on_plateau_skips_changes_below_eps():
    opt = make_sgd(lrs=(1e-9, 0.1))
    s = sched.ReduceLROnPlateau(opt, patience=0)
    s.step(1.0)
    s.step(2.0)
    assert s.get_last_lr() == [1e-9, pytest.approx(0.01)]


def continue_after_reload(build, steps_before, steps_after):
    opt = make_sgd()
    s = build(sched, opt)
    for _ in range(steps_before):
        s.step()
    opt_state, s_state = opt.state_dict(), s.state_dict()
    opt2 = make_sgd()
    s2 = build(sched, opt2)
    opt2.load_state_dict(opt_state)
    s2.load_state_dict(s_state)
    a, b = [], []
    for _ in range(steps_after):
        s.step()
        s2.step()
        a.append(s.get_last_lr())
        b.append(s2.get_last_lr())
    return a, b


@pytest.mark.parametrize("case", ["step_lr", "cosine_annealing_lr", "linear_lr_warmup",
                                  "one_cycle_cos", "sequential_warmup_then_cosine",
                                  "lambda_lr"])
def test_state_dict_round_trip_continues_identically(case):
    a, b = continue_after_reload(CASES[case], 5, 8)
    assert a == b


def test_lambda_lr_state_dict_saves_callable_objects_not_functions():
    class Decay:
        def __init__(self):
            self.rate = 0.5

        def __call__(self, epoch):
            return self.rate ** epoch

    opt = make_sgd()
    decay = Decay()
    s = sched.LambdaLR(opt, [decay, lambda e: 1.0])
    decay.rate = 0.25
    state = s.state_dict()
    assert state["lr_lambdas"] == [{"rate": 0.25}, None]
    other = Decay()
    s2 = sched.LambdaLR(make_sgd(), [other, lambda e: 1.0])
    s2.load_state_dict(state)
    assert other.rate == 0.25


def test_reduce_lr_on_plateau_state_dict_round_trip():
    opt = make_sgd()
    s = sched.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    for m in (1.0, 1.0, 1.0):
        s.step(m)
    s2 = sched.ReduceLROnPlateau(make_sgd(), patience=0, factor=0.5)
    s2.load_state_dict(s.state_dict())
    assert (s2.best, s2.num_bad_epochs, s2.last_epoch) == (1.0, 0, 3)


def test_resume_with_last_epoch_uses_initial_lr():
    torch = pytest.importorskip("torch")
    opt = make_sgd()
    for group in opt.param_groups:
        group["initial_lr"] = group["lr"]
    s = sched.CosineAnnealingLR(opt, T_max=10, last_epoch=3)
    topt = make_torch_sgd(torch)
    for group in topt.param_groups:
        group["initial_lr"] = group["lr"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=10, last_epoch=3)
        for _ in range(5):
            assert s.get_last_lr() == ts.get_last_lr()
            s.step()
            ts.step()


def test_base_lrs_and_initial_lr():
    opt = make_sgd()
    s = sched.ExponentialLR(opt, gamma=0.5)
    assert s.base_lrs == [0.1, 0.02]
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.02]
    s.step()
    assert s.get_last_lr() == [0.05, 0.01]
    assert s.last_epoch == 1


def test_cosine_annealing_closed_form_at_quarter_points():
    opt = make_sgd(lrs=(1.0, 0.5))
    s = sched.CosineAnnealingLR(opt, T_max=4, eta_min=0.0)
    got = []
    for _ in range(4):
        s.step()
        got.append(s.get_last_lr()[0])
    want = [(1 + math.cos(math.pi * t / 4)) / 2 for t in range(1, 5)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


# --- bad arguments ----------------------------------------------------------------------------

def test_not_an_optimizer():
    with pytest.raises(TypeError, match="StepLR: expected a fastnn.optim.Optimizer, got list"):
        sched.StepLR([], step_size=1)


@pytest.mark.parametrize("build,exc,match", [
    (lambda o: sched.StepLR(o, step_size=0), ValueError, "StepLR: step_size must be >= 1"),
    (lambda o: sched.StepLR(o, step_size=1.5), TypeError, "StepLR: step_size must be an int"),
    (lambda o: sched.StepLR(o, 2, gamma="x"), TypeError, "StepLR: gamma must be a real"),
    (lambda o: sched.MultiStepLR(o, 3), TypeError, "MultiStepLR: milestones must be an iter"),
    (lambda o: sched.MultiStepLR(o, [-1]), ValueError, "every milestone must be >= 0"),
    (lambda o: sched.ExponentialLR(o, gamma=float("nan")), ValueError, "gamma must be"),
    (lambda o: sched.LinearLR(o, start_factor=0.0), ValueError, r"start_factor must be in \(0"),
    (lambda o: sched.LinearLR(o, end_factor=1.5), ValueError, r"end_factor must be in \[0, 1\]"),
    (lambda o: sched.LinearLR(o, total_iters=0), ValueError, "total_iters must be >= 1"),
    (lambda o: sched.CosineAnnealingLR(o, T_max=0), ValueError, "T_max must be >= 1"),
    (lambda o: sched.CosineAnnealingLR(o, 5, eta_min=-1), ValueError, "eta_min must be >= 0"),
    (lambda o: sched.LambdaLR(o, 0.5), TypeError, "LambdaLR: lr_lambda 0 must be callable"),
    (lambda o: sched.LambdaLR(o, [abs]), ValueError, "expected 2 values for lr_lambda"),
    (lambda o: sched.OneCycleLR(o, 0.1), ValueError, "give total_steps, or epochs and steps"),
    (lambda o: sched.OneCycleLR(o, 0.1, total_steps=0), ValueError, "total_steps must be >= 1"),
    (lambda o: sched.OneCycleLR(o, 0.1, 5, pct_start=1.5), ValueError, r"pct_start must be in"),
    (lambda o: sched.OneCycleLR(o, 0.1, 5, anneal_strategy="exp"), ValueError,
     "anneal_strategy must be 'cos' or 'linear'"),
    (lambda o: sched.OneCycleLR(o, [0.1], 5), ValueError, "expected 2 values for max_lr"),
    (lambda o: sched.ReduceLROnPlateau(o, mode="up"), ValueError, "mode must be 'min' or 'max'"),
    (lambda o: sched.ReduceLROnPlateau(o, threshold_mode="x"), ValueError,
     "threshold_mode must be 'rel' or 'abs'"),
    (lambda o: sched.ReduceLROnPlateau(o, factor=1.0), ValueError, r"factor must be in \[0, 1\)"),
    (lambda o: sched.ReduceLROnPlateau(o, patience=-1), ValueError, "patience must be >= 0"),
    (lambda o: sched.ReduceLROnPlateau(o, min_lr=[0.1]), ValueError, "2 values for min_lr"),
    (lambda o: sched.SequentialLR(o, [], []), ValueError, "at least one scheduler"),
    (lambda o: sched.SequentialLR(o, [sched.StepLR(o, 2)], [3]), ValueError,
     "one milestone fewer than schedulers"),
    (lambda o: sched.SequentialLR(o, [sched.ReduceLROnPlateau(o)], []), ValueError,
     "scheduler 0 is a ReduceLROnPlateau"),
    (lambda o: sched.SequentialLR(o, [sched.StepLR(make_sgd(), 2)], []), ValueError,
     "scheduler 0 \\(StepLR\\) drives a different optimizer"),
    (lambda o: sched.StepLR(o, 2, last_epoch=4), ValueError,
     r"needs 'initial_lr' in param_groups\[0\]"),
])
def test_bad_arguments(build, exc, match):
    with pytest.raises(exc, match=match):
        build(make_sgd())


def test_one_cycle_momentum_needs_momentum_or_betas():
    opt = optim.Adagrad([Parameter(np.zeros(2))])
    with pytest.raises(ValueError, match="cycle_momentum needs an optimizer with momentum"):
        sched.OneCycleLR(opt, max_lr=0.1, total_steps=5)
