"""Loss modules against finite differences and PyTorch, and their bad-input errors."""

import numpy as np
import pytest

from fastnn import Tensor, nn
from fastnn import functional as F
from fastnn.utils import gradcheck

REDUCTIONS = ["mean", "sum", "none"]


def logits_and_labels(rng, rows=6, classes=4):
    logits = Tensor(rng.standard_normal((rows, classes)), requires_grad=True)
    labels = rng.integers(0, classes, rows)
    return logits, labels


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_gradients(reduction, smoothing, weighted, rng):
    logits, labels = logits_and_labels(rng)
    labels[2] = -100  # ignored row
    weight = rng.uniform(0.5, 2.0, 4) if weighted else None
    loss = nn.CrossEntropyLoss(weight=weight, reduction=reduction, label_smoothing=smoothing)
    assert gradcheck(lambda z: loss(z, labels), [logits])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_matches_torch(reduction, smoothing, weighted, rng):
    torch = pytest.importorskip("torch")
    logits, labels = logits_and_labels(rng, rows=9, classes=5)
    labels[0] = 3
    labels[4] = -100
    weight = rng.uniform(0.5, 2.0, 5) if weighted else None
    ours = nn.CrossEntropyLoss(weight=weight, reduction=reduction, label_smoothing=smoothing)
    theirs = torch.nn.CrossEntropyLoss(weight=None if weight is None else torch.tensor(weight),
                                       reduction=reduction, label_smoothing=smoothing)
    tl = torch.tensor(logits.data, requires_grad=True)
    out, expected = ours(logits, labels), theirs(tl, torch.tensor(labels))
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    upstream = np.ones(out.shape)
    out.backward(upstream)
    expected.backward(torch.tensor(upstream))
    np.testing.assert_allclose(logits.grad.data, tl.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_cross_entropy_float32_matches_float64(rng):
    logits, labels = logits_and_labels(rng, rows=50, classes=10)
    loss64 = F.cross_entropy(logits, labels).item()
    loss32 = F.cross_entropy(Tensor(logits.data.astype(np.float32)), labels).item()
    assert abs(loss32 - loss64) < 1e-5


def test_cross_entropy_spatial_and_probability_targets(rng):
    torch = pytest.importorskip("torch")
    logits = rng.standard_normal((2, 3, 4, 5))
    labels = rng.integers(0, 3, (2, 4, 5))
    ours = F.cross_entropy(Tensor(logits), labels).item()
    theirs = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels)).item()
    assert abs(ours - theirs) < 1e-10
    probs = rng.dirichlet(np.ones(3), size=4)
    flat = rng.standard_normal((4, 3))
    ours = F.cross_entropy(Tensor(flat), probs, label_smoothing=0.1).item()
    theirs = torch.nn.functional.cross_entropy(torch.tensor(flat), torch.tensor(probs),
                                               label_smoothing=0.1).item()
    assert abs(ours - theirs) < 1e-10


def test_cross_entropy_errors(rng):
    logits, labels = logits_and_labels(rng)
    with pytest.raises(ValueError, match="out of range"):
        F.cross_entropy(logits, np.array([0, 1, 2, 3, 4, 1]))
    with pytest.raises(ValueError, match="6 rows but target has 5"):
        F.cross_entropy(logits, labels[:5])
    with pytest.raises(ValueError, match=r"integer class indices.*shape \(6, 1\)"):
        F.cross_entropy(logits, labels.astype(np.float32).reshape(-1, 1))
    with pytest.raises(TypeError, match="integers"):
        F.nll_loss(logits, labels.astype(np.complex64))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(logits, labels, reduction="avg")
    with pytest.raises(ValueError, match=r"weight has shape \(3,\)"):
        F.cross_entropy(logits, labels, weight=np.ones(3))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_matches_torch_and_gradcheck(reduction, rng):
    torch = pytest.importorskip("torch")
    logits, labels = logits_and_labels(rng)
    weight = rng.uniform(0.5, 2.0, 4)
    logp = F.log_softmax(logits, 1)
    out = F.nll_loss(logp, labels, weight=weight, reduction=reduction)
    expected = torch.nn.functional.nll_loss(torch.log_softmax(torch.tensor(logits.data), 1),
                                            torch.tensor(labels), weight=torch.tensor(weight),
                                            reduction=reduction)
    np.testing.assert_allclose(out.data, expected.numpy(), rtol=1e-10)
    assert gradcheck(lambda z: F.nll_loss(F.log_softmax(z, 1), labels, weight=weight,
                                          reduction=reduction), [logits])


REGRESSION = {
    "mse": (nn.MSELoss, "MSELoss", {}),
    "l1": (nn.L1Loss, "L1Loss", {}),
    "huber": (nn.HuberLoss, "HuberLoss", {"delta": 0.7}),
    "smooth_l1": (nn.SmoothL1Loss, "SmoothL1Loss", {"beta": 0.5}),
}


@pytest.mark.parametrize("name", sorted(REGRESSION))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_regression_losses(name, reduction, rng):
    ours_cls, torch_name, kwargs = REGRESSION[name]
    pred = Tensor(rng.standard_normal((5, 3)), requires_grad=True)
    target = rng.standard_normal((5, 3))
    loss = ours_cls(reduction=reduction, **kwargs)
    assert gradcheck(lambda p: loss(p, target), [pred])
    torch = pytest.importorskip("torch")
    theirs = getattr(torch.nn, torch_name)(reduction=reduction, **kwargs)
    np.testing.assert_allclose(loss(pred, target).data,
                               theirs(torch.tensor(pred.data), torch.tensor(target)).numpy(),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("with_pos_weight", [False, True])
def test_bce_with_logits(reduction, with_pos_weight, rng):
    logits = Tensor(rng.standard_normal((6, 3)) * 3, requires_grad=True)
    target = rng.integers(0, 2, (6, 3)).astype(np.float64)
    pos_weight = rng.uniform(0.5, 3, 3) if with_pos_weight else None
    loss = nn.BCEWithLogitsLoss(reduction=reduction, pos_weight=pos_weight)
    assert gradcheck(lambda z: loss(z, target), [logits])
    torch = pytest.importorskip("torch")
    theirs = torch.nn.BCEWithLogitsLoss(
        reduction=reduction, pos_weight=None if pos_weight is None else torch.tensor(pos_weight))
    np.testing.assert_allclose(loss(logits, target).data,
                               theirs(torch.tensor(logits.data), torch.tensor(target)).numpy(),
                               rtol=1e-10, atol=1e-12)


def test_bce_with_logits_is_stable_for_huge_logits():
    logits = Tensor(np.array([1000.0, -1000.0]), requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(logits, np.array([0.0, 1.0]))
    assert np.isfinite(loss.item()) and abs(loss.item() - 1000.0) < 1e-9
    loss.backward()
    assert np.all(np.isfinite(logits.grad.data))


def test_bce_on_probabilities(rng):
    probs = Tensor(rng.uniform(0.05, 0.95, (4, 2)), requires_grad=True)
    target = rng.integers(0, 2, (4, 2)).astype(np.float64)
    assert gradcheck(lambda p: nn.BCELoss()(p, target), [probs])
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        nn.BCELoss()(Tensor(np.array([1.5])), np.array([1.0]))


def test_regression_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"mse_loss: input has shape \(3, 1\) but target has "
                                         r"shape \(3,\)"):
        nn.MSELoss()(Tensor(np.zeros((3, 1))), np.zeros(3))
