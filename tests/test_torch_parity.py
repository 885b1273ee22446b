"""The same MLP, same initial weights and data, trained in fastnn and in PyTorch: every
optimizer with every loss reaches the same weights within float32 tolerance."""

import numpy as np
import pytest

import fastnn
from fastnn import nn, optim

torch = pytest.importorskip("torch")

OPTIMIZERS = {
    "sgd": (lambda p: optim.SGD(p, lr=0.05), lambda p: torch.optim.SGD(p, lr=0.05)),
    "sgd_nesterov_wd": (
        lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    "adam": (lambda p: optim.Adam(p, lr=1e-2), lambda p: torch.optim.Adam(p, lr=1e-2)),
    "adamw_amsgrad": (lambda p: optim.AdamW(p, lr=1e-2, amsgrad=True),
                      lambda p: torch.optim.AdamW(p, lr=1e-2, amsgrad=True)),
    "rmsprop_centered": (
        lambda p: optim.RMSprop(p, lr=1e-3, momentum=0.5, centered=True),
        lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5, centered=True)),
    "adagrad": (lambda p: optim.Adagrad(p, lr=0.05), lambda p: torch.optim.Adagrad(p, lr=0.05)),
    "sgd_momentum_dampening": (
        lambda p: optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.1),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.1)),
    "rmsprop": (lambda p: optim.RMSprop(p, lr=1e-3), lambda p: torch.optim.RMSprop(p, lr=1e-3)),
    "adam_param_groups": (lambda p: optim.Adam(_two_groups(p), lr=1e-2),
                          lambda p: torch.optim.Adam(_two_groups(p), lr=1e-2)),
}


def _two_groups(params):
    """The first layer with its own learning rate and weight decay, the rest on the defaults."""
    params = list(params)
    return [{"params": params[:2], "lr": 3e-2, "weight_decay": 1e-2}, {"params": params[2:]}]

# name -> (fastnn loss, torch loss, output width, target maker)
LOSSES = {
    "cross_entropy": (lambda: nn.CrossEntropyLoss(label_smoothing=0.1),
                      lambda: torch.nn.CrossEntropyLoss(label_smoothing=0.1), 4,
                      lambda rng, n: rng.integers(0, 4, n)),
    "nll": (lambda: _LogSoftmaxNLL(), lambda: _TorchLogSoftmaxNLL(), 4,
            lambda rng, n: rng.integers(0, 4, n)),
    "mse": (nn.MSELoss, torch.nn.MSELoss, 2,
            lambda rng, n: rng.standard_normal((n, 2)).astype(np.float32)),
    "l1": (nn.L1Loss, torch.nn.L1Loss, 2,
           lambda rng, n: rng.standard_normal((n, 2)).astype(np.float32)),
    "huber": (nn.HuberLoss, torch.nn.HuberLoss, 2,
              lambda rng, n: rng.standard_normal((n, 2)).astype(np.float32)),
    "bce_with_logits": (nn.BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss, 3,
                        lambda rng, n: rng.integers(0, 2, (n, 3)).astype(np.float32)),
}


class _LogSoftmaxNLL(nn.Module):
    def forward(self, out, target):
        return fastnn.functional.nll_loss(fastnn.functional.log_softmax(out, 1), target)


class _TorchLogSoftmaxNLL(torch.nn.Module):
    def forward(self, out, target):
        return torch.nn.functional.nll_loss(torch.log_softmax(out, 1), target)


def build_pair(out_features):
    fastnn.manual_seed(0)
    ours = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 12), nn.ReLU(),
                         nn.Linear(12, out_features))
    theirs = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh(),
                                 torch.nn.Linear(16, 12), torch.nn.ReLU(),
                                 torch.nn.Linear(12, out_features))
    with torch.no_grad():
        for name, value in ours.state_dict().items():
            dict(theirs.named_parameters())[name].copy_(torch.from_numpy(value))
    return ours, theirs


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
@pytest.mark.parametrize("optimizer_name", sorted(OPTIMIZERS))
def test_training_steps_match_torch(optimizer_name, loss_name):
    make_ours, make_theirs, width, make_target = LOSSES[loss_name]
    ours, theirs = build_pair(width)
    opt_ours = OPTIMIZERS[optimizer_name][0](ours.parameters())
    opt_theirs = OPTIMIZERS[optimizer_name][1](theirs.parameters())
    loss_ours, loss_theirs = make_ours(), make_theirs()
    rng = np.random.default_rng(5)
    for _ in range(5):
        x = rng.standard_normal((8, 10)).astype(np.float32)
        y = make_target(rng, 8)
        value = loss_ours(ours(x), y)
        opt_ours.zero_grad()
        value.backward()
        opt_ours.step()
        expected = loss_theirs(theirs(torch.from_numpy(x)), torch.from_numpy(y))
        opt_theirs.zero_grad()
        expected.backward()
        opt_theirs.step()
        assert abs(value.item() - expected.item()) < 1e-4 * max(1.0, abs(expected.item()))
    torch_state = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    for name, value in ours.state_dict().items():
        np.testing.assert_allclose(value, torch_state[name], rtol=1e-4, atol=2e-5,
                                   err_msg=f"{optimizer_name} + {loss_name}: {name}")
