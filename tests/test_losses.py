"""Loss modules against finite differences and PyTorch, and their bad-input errors."""

import re

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
    with pytest.raises(ValueError, match=r"target has shape \(5,\) but input has shape \(6, 4\)"):
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


def assert_close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-12, err_msg=what)


def torch_arguments(torch, kwargs):
    return {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}


def backward_with_torch(torch, ours, theirs, rng):
    """Backpropagates one random upstream gradient through both losses and checks the values."""
    assert_close(ours.data, theirs.detach().numpy(), "loss value")
    upstream = np.asarray(rng.standard_normal(ours.shape))
    ours.backward(upstream)
    theirs.backward(torch.tensor(upstream))


# Losses whose target may require grad: fastnn function, torch.nn.functional name, keyword
# arguments, and how to draw (input, target). Inputs stay off kinks (l1 at 0) and clamps (bce).
def regression_pair(rng, shape):
    return rng.standard_normal(shape), rng.standard_normal(shape)


def probabilities_pair(rng, shape):
    return rng.uniform(0.05, 0.95, shape), rng.uniform(0, 1, shape)


def logits_pair(rng, shape):
    return rng.standard_normal(shape) * 2, rng.uniform(0, 1, shape)


def soft_labels_pair(rng, shape):
    return rng.standard_normal(shape), rng.dirichlet(np.ones(shape[1]), size=shape[0])


TARGET_GRAD = {
    "mse": (F.mse_loss, "mse_loss", {}, regression_pair),
    "l1": (F.l1_loss, "l1_loss", {}, regression_pair),
    "huber": (F.huber_loss, "huber_loss", {"delta": 0.7}, regression_pair),
    "smooth_l1": (F.smooth_l1_loss, "smooth_l1_loss", {"beta": 0.5}, regression_pair),
    "bce": (F.binary_cross_entropy, "binary_cross_entropy", {}, probabilities_pair),
    "bce_with_logits": (F.binary_cross_entropy_with_logits, "binary_cross_entropy_with_logits",
                        {}, logits_pair),
    "bce_with_logits_pos_weight": (F.binary_cross_entropy_with_logits,
                                   "binary_cross_entropy_with_logits",
                                   {"pos_weight": np.array([0.5, 2.0, 3.0])}, logits_pair),
    "cross_entropy_probabilities": (F.cross_entropy, "cross_entropy",
                                    {"weight": np.array([0.5, 1.0, 2.0]), "label_smoothing": 0.1},
                                    soft_labels_pair),
}


@pytest.mark.parametrize("name", sorted(TARGET_GRAD))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_target_gradients(name, reduction, rng):
    fn, _, kwargs, draw = TARGET_GRAD[name]
    x, y = draw(rng, (5, 3))
    target = Tensor(y, requires_grad=True)
    assert gradcheck(lambda p, t: fn(p, t, reduction=reduction, **kwargs),
                     [Tensor(x, requires_grad=True), target])
    # A target alone requiring grad must still put the loss in the graph.
    assert gradcheck(lambda p, t: fn(p, t, reduction=reduction, **kwargs), [Tensor(x), target])


@pytest.mark.parametrize("name", sorted(TARGET_GRAD))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_target_gradients_match_torch(name, reduction, rng):
    torch = pytest.importorskip("torch")
    fn, torch_name, kwargs, draw = TARGET_GRAD[name]
    x, y = draw(rng, (5, 3))
    pred, target = Tensor(x, requires_grad=True), Tensor(y, requires_grad=True)
    tx, ty = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
    theirs = getattr(torch.nn.functional, torch_name)(tx, ty, reduction=reduction,
                                                      **torch_arguments(torch, kwargs))
    backward_with_torch(torch, fn(pred, target, reduction=reduction, **kwargs), theirs, rng)
    assert_close(pred.grad.data, tx.grad.numpy(), "input gradient")
    assert_close(target.grad.data, ty.grad.numpy(), "target gradient")


def test_target_gradient_has_the_target_dtype(rng):
    pred = Tensor(rng.standard_normal(4), requires_grad=True)
    target = Tensor(rng.standard_normal(4).astype(np.float32), requires_grad=True)
    F.mse_loss(pred, target).backward()
    assert target.grad.dtype == np.float32
    np.testing.assert_allclose(target.grad.data, -pred.grad.data, rtol=1e-6)


@pytest.mark.parametrize("name", ["mse", "l1", "huber", "bce", "bce_with_logits"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_zero_dim_input_and_target(name, reduction, rng):
    fn, _, kwargs, draw = TARGET_GRAD[name]
    x, y = (np.asarray(v) for v in draw(rng, ()))
    pred, target = Tensor(x, requires_grad=True), Tensor(y, requires_grad=True)
    assert fn(pred, target, reduction=reduction, **kwargs).shape == ()
    assert gradcheck(lambda p, t: fn(p, t, reduction=reduction, **kwargs), [pred, target])


@pytest.mark.parametrize("input_shape, target_shape", [
    ((2, 4, 3), (3, 2)),  # the right number of labels in the wrong layout
    ((6, 4), (6, 1)),
    ((6, 4), (5,)),
    ((6, 4), ()),
    ((4,), (2,)),
    ((4,), (1,)),  # PyTorch's forward takes it, but its backward fails
    ((4,), (1, 1)),
    ((2, 3, 4, 5), (2, 20)),
    ((2, 3, 4, 5), (2, 5, 4)),
])
@pytest.mark.parametrize("loss", [F.cross_entropy, F.nll_loss])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_class_index_target_shape_is_checked(input_shape, target_shape, loss, reduction):
    message = (f"{loss.__name__}: target has shape {target_shape} but input has shape "
               f"{input_shape}")
    with pytest.raises(ValueError, match=re.escape(message)):
        loss(Tensor(np.zeros(input_shape)), np.zeros(target_shape, np.int64), reduction=reduction)


def test_zero_dim_logits_are_rejected():
    with pytest.raises(ValueError, match="cross_entropy: input must have at least 1 dim"):
        F.cross_entropy(Tensor(np.zeros(())), np.zeros((), np.int64))
    with pytest.raises(ValueError, match=r"cross_entropy: .* shape \(\) for input of shape \(\)"):
        F.cross_entropy(Tensor(np.zeros(())), np.zeros(()))


@pytest.mark.parametrize("input_shape, target_shape", [
    ((4,), ()),
    ((2, 3, 4), (2, 4)),
    ((2, 3, 4, 5), (2, 4, 5)),
])
@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_class_index_target_shapes_match_torch(input_shape, target_shape, loss, reduction, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(input_shape)
    labels = rng.integers(0, input_shape[1 if len(input_shape) > 1 else 0], target_shape)
    logits, tx = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    theirs = getattr(torch.nn.functional, loss)(tx, torch.tensor(labels), reduction=reduction)
    backward_with_torch(torch, getattr(F, loss)(logits, labels, reduction=reduction), theirs, rng)
    assert_close(logits.grad.data, tx.grad.numpy(), "input gradient")


WEIGHTED = {
    "nll_loss": lambda x, w, r: F.nll_loss(x, np.array([0, 2]), weight=w, reduction=r),
    "cross_entropy": lambda x, w, r: F.cross_entropy(x, np.array([0, 2]), weight=w, reduction=r),
    "cross_entropy_probabilities": lambda x, w, r: F.cross_entropy(x, np.full((2, 3), 1 / 3),
                                                                   weight=w, reduction=r),
}


@pytest.mark.parametrize("name", sorted(WEIGHTED))
@pytest.mark.parametrize("length", [2, 7])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_class_weight_length_is_checked(name, length, reduction):
    op = name.replace("_probabilities", "")
    with pytest.raises(ValueError, match=rf"{op}: weight has shape \({length},\) but the input "
                                         rf"has 3 classes"):
        WEIGHTED[name](Tensor(np.zeros((2, 3))), np.ones(length), reduction)


@pytest.mark.parametrize("input_shape, labels_shape", [((2, 3), (2,)), ((3,), ()),
                                                       ((2, 3, 2), (2, 2))])
@pytest.mark.parametrize("label", [3, -2])
@pytest.mark.parametrize("loss", [F.cross_entropy, F.nll_loss])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_out_of_range_label_is_a_clear_error(input_shape, labels_shape, label, loss, reduction):
    labels = np.zeros(labels_shape, np.int64)
    labels.reshape(-1)[-1] = label
    with pytest.raises(ValueError, match=rf"{loss.__name__}.*{label} in row \d+ is out of range "
                                         rf"for 3 classes"):
        loss(Tensor(np.zeros(input_shape)), labels, reduction=reduction)


POS_WEIGHT_SHAPES = [
    ((5,), (1,)), ((5,), ()), ((5,), (5,)),
    ((4, 3), (3,)), ((4, 3), (1,)), ((4, 3), ()), ((4, 3), (1, 3)), ((4, 3), (4, 1)),
    ((4, 3), (4, 3)),
    ((2, 4, 3), (3,)), ((2, 4, 3), (4, 3)), ((2, 4, 3), (4, 1)), ((2, 4, 3), (2, 1, 1)),
    ((), ()),
]


@pytest.mark.parametrize("shape, pos_weight_shape", POS_WEIGHT_SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_pos_weight_broadcasts_like_torch(shape, pos_weight_shape, reduction,
                                                          rng):
    x, y = logits_pair(rng, shape)
    x, y = np.asarray(x), np.asarray(y)
    pos_weight = np.asarray(rng.uniform(0.5, 3.0, pos_weight_shape))
    loss = nn.BCEWithLogitsLoss(reduction=reduction, pos_weight=pos_weight)
    logits, target = Tensor(x, requires_grad=True), Tensor(y, requires_grad=True)
    assert gradcheck(loss, [logits, target])
    torch = pytest.importorskip("torch")
    tx, ty = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
    theirs = torch.nn.BCEWithLogitsLoss(reduction=reduction, pos_weight=torch.tensor(pos_weight))
    logits.grad = target.grad = None
    backward_with_torch(torch, loss(logits, target), theirs(tx, ty), rng)
    assert_close(logits.grad.data, tx.grad.numpy(), "input gradient")
    assert_close(target.grad.data, ty.grad.numpy(), "target gradient")


def test_bce_with_logits_single_pos_weight_on_float32():
    loss = nn.BCEWithLogitsLoss(pos_weight=[2.0])(np.zeros(3, np.float32), np.ones(3, np.float32))
    assert abs(loss.item() - 2.0 * np.log(2.0)) < 1e-6


@pytest.mark.parametrize("shape, pos_weight_shape", [((3,), (2,)), ((3,), (2, 3)), ((4, 3), (4,)),
                                                     ((), (1,))])
def test_bce_with_logits_pos_weight_that_cannot_broadcast(shape, pos_weight_shape):
    message = (f"binary_cross_entropy_with_logits: pos_weight of shape {pos_weight_shape} cannot "
               f"be broadcast to the target's shape {shape}")
    with pytest.raises(ValueError, match=re.escape(message)):
        F.binary_cross_entropy_with_logits(Tensor(np.zeros(shape)), np.ones(shape),
                                           pos_weight=np.ones(pos_weight_shape))
