"""Tensor operations and autograd: forward against numpy, backward against finite differences."""

import numpy as np
import pytest

import fastnn
from fastnn import Tensor
from fastnn.utils import GradcheckError, gradcheck


def t64(rng, *shape, positive=False):
    data = rng.standard_normal(shape)
    if positive:
        data = np.abs(data) + 0.5
    return Tensor(data, requires_grad=True)


UNARY_CASES = {
    "neg": lambda a: -a,
    "exp": lambda a: a.exp(),
    "log": lambda a: a.log(),
    "sqrt": lambda a: a.sqrt(),
    "abs": lambda a: (a + 0.3).abs(),
    "pow_scalar": lambda a: a ** 3,
    "pow_fractional": lambda a: a ** 1.5,
    "clamp": lambda a: a.clamp(0.7, 1.2),
    "sum_all": lambda a: a.sum(),
    "sum_dim": lambda a: a.sum(1),
    "sum_dims_keepdim": lambda a: a.sum((0, 2), keepdim=True),
    "mean_dim": lambda a: a.mean(-1),
    "var": lambda a: a.var(1),
    "std": lambda a: a.std(),
    "max_all": lambda a: a.max(),
    "min_all": lambda a: a.min(),
    "mean_all": lambda a: a.mean(),
    "contiguous": lambda a: a.transpose(0, 2).contiguous() * 2,
    "astype_round_trip": lambda a: a.astype(np.float64) * a,
    "max_dim": lambda a: a.max(dim=1).values,
    "min_dim_keepdim": lambda a: a.min(dim=2, keepdim=True).values,
    "reshape": lambda a: a.reshape(6, 4) * 2,
    "flatten": lambda a: a.flatten(1) * 2,
    "permute": lambda a: a.permute(2, 0, 1) * 3,
    "transpose": lambda a: a.transpose(0, 2) * 3,
    "T": lambda a: a.T * 1.5,
    "unsqueeze_squeeze": lambda a: a.unsqueeze(1).squeeze(1) * 2,
    "index_basic": lambda a: a[1, :, 1:3],
    "index_fancy_repeated": lambda a: a[[0, 0, 1]],
    "index_bool": lambda a: a[a.data > 0.8],
    "expand": lambda a: a[:, :1, :].expand(2, 3, 4) * 1.0,
    "clone": lambda a: a.clone() * a,
}


@pytest.mark.parametrize("name", sorted(UNARY_CASES))
def test_unary_gradients_match_finite_differences(name, rng):
    positive = name in ("log", "sqrt", "pow_fractional", "clamp")
    a = t64(rng, 2, 3, 4, positive=positive)
    assert gradcheck(UNARY_CASES[name], [a])


BINARY_CASES = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow_tensor": lambda a, b: a ** b,
    "rsub_scalar": lambda a, b: 2.0 - a * b,
    "rdiv_scalar": lambda a, b: 1.0 / b + a,
    "where": lambda a, b: fastnn.where(a.data > 1.0, a, b),
    "maximum": lambda a, b: fastnn.maximum(a, b),
    "minimum": lambda a, b: fastnn.minimum(a, b),
    "rpow": lambda a, b: 1.5 ** (a * b),
    "cat": lambda a, b: fastnn.cat([a, b], dim=1),
    "stack": lambda a, b: fastnn.stack([a, b], dim=2),
}


@pytest.mark.parametrize("name", sorted(BINARY_CASES))
def test_binary_gradients_match_finite_differences(name, rng):
    a = t64(rng, 3, 4, positive=True)
    b = t64(rng, 3, 4, positive=True)
    assert gradcheck(BINARY_CASES[name], [a, b])


@pytest.mark.parametrize("shape_a, shape_b", [((3, 4), (4,)), ((3, 1), (1, 5)), ((2, 3, 4), (3, 1)),
                                              ((4,), (2, 3, 4))])
def test_broadcasting_gradients_sum_back_to_input_shape(shape_a, shape_b, rng):
    a, b = t64(rng, *shape_a), t64(rng, *shape_b)
    assert gradcheck(lambda x, y: x * y + x, [a, b])
    out = a * b
    out.backward(np.ones(out.shape))
    assert a.grad.shape == shape_a and b.grad.shape == shape_b


@pytest.mark.parametrize("shape_a, shape_b", [((3, 4), (4, 5)), ((1, 7), (7, 2)),
                                              ((2, 3, 4), (4, 5)), ((4,), (4, 3)), ((3, 4), (4,)),
                                              ((2, 3, 4), (2, 4, 5))])
def test_matmul_forward_and_gradients(shape_a, shape_b, rng):
    a, b = t64(rng, *shape_a), t64(rng, *shape_b)
    np.testing.assert_allclose((a @ b).data, a.data @ b.data, rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda x, y: x @ y, [a, b])


def test_matmul_float32_uses_the_kernel_and_matches_numpy(rng):
    a = rng.standard_normal((33, 70)).astype(np.float32)
    b = rng.standard_normal((70, 19)).astype(np.float32)
    out = Tensor(a) @ Tensor(b)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.data, a @ b, rtol=1e-4, atol=1e-4)


def test_matmul_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4, 5\)"):
        fastnn.zeros(2, 3) @ fastnn.zeros(4, 5)


def test_gradients_accumulate_across_backward_calls(rng):
    a = t64(rng, 3)
    (a * 2).sum().backward()
    (a * 3).sum().backward()
    np.testing.assert_allclose(a.grad.data, np.full(3, 5.0))


def test_reused_tensor_receives_the_sum_of_its_paths(rng):
    a = t64(rng, 4)
    (a * a + a).sum().backward()
    np.testing.assert_allclose(a.grad.data, 2 * a.data + 1)


def test_graph_is_freed_after_backward_unless_retained(rng):
    a = t64(rng, 3)
    out = (a * a).sum()
    out.backward(retain_graph=True)
    out.backward()
    np.testing.assert_allclose(a.grad.data, 4 * a.data)
    with pytest.raises(RuntimeError, match="second time"):
        out.backward()


def test_reusing_a_freed_intermediate_in_a_new_graph_raises(rng):
    a = t64(rng, 3)
    hidden = a * 2
    (hidden * hidden).sum().backward()
    # hidden's graph was freed: it must not be mistaken for a leaf and silently get a .grad.
    with pytest.raises(RuntimeError, match="second time"):
        (hidden * 3).sum().backward()
    assert hidden.grad is None


def test_leaf_reached_through_several_operations_gets_their_sum(rng):
    a, b = t64(rng, 3), t64(rng, 3)
    a.grad = fastnn.Tensor(np.ones(3))
    left, right = a * b, a * a
    (left + right).sum().backward()
    np.testing.assert_allclose(a.grad.data, 1 + b.data + 2 * a.data)
    np.testing.assert_allclose(b.grad.data, a.data)


def test_no_grad_records_nothing_and_detach_cuts_the_graph(rng):
    a = t64(rng, 3)
    with fastnn.no_grad():
        b = a * 2
    assert not b.requires_grad
    c = (a.detach() * a).sum()
    c.backward()
    np.testing.assert_allclose(a.grad.data, a.data)

    @fastnn.no_grad()
    def doubled(x):
        return x * 2

    assert not doubled(a).requires_grad
    assert fastnn.is_grad_enabled()


def test_retain_grad_keeps_intermediate_gradient(rng):
    a = t64(rng, 3)
    b = a * 2
    b.retain_grad()
    (b * b).sum().backward()
    np.testing.assert_allclose(b.grad.data, 2 * b.data)


def test_backward_errors_are_clear(rng):
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor([1.0]).backward()
    a = t64(rng, 3)
    with pytest.raises(RuntimeError, match="single-element"):
        (a * 2).backward()
    with pytest.raises(ValueError, match=r"gradient has shape \(2,\)"):
        (a * 2).backward(np.ones(2))
    with pytest.raises(TypeError, match="float32 and float64"):
        Tensor(np.arange(3), requires_grad=True)


def test_numpy_conversion_shares_memory():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = fastnn.from_numpy(array)
    assert t.numpy() is array
    assert np.shares_memory(np.asarray(t), array)
    copied = fastnn.tensor(array)
    assert not np.shares_memory(copied.numpy(), array)


def test_default_dtypes():
    assert fastnn.tensor([1.0, 2.0]).dtype == np.float32
    assert fastnn.tensor([1, 2]).dtype == np.int64
    assert Tensor(np.zeros(2)).dtype == np.float64  # numpy arrays keep their dtype
    f32 = fastnn.ones(3)
    assert (f32 * 2.5).dtype == np.float32
    assert (f32 + np.ones(3)).dtype == np.float32  # array operands follow the tensor


def test_max_with_dim_returns_values_and_indices():
    t = fastnn.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]])
    values, indices = t.max(dim=1)
    np.testing.assert_array_equal(values.data, [5.0, 7.0])
    np.testing.assert_array_equal(indices.data, [1, 0])
    assert t.argmax(1).tolist() == [1, 0]


def test_reshape_error_names_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 2\)"):
        fastnn.zeros(2, 3).reshape(4, 2)


def test_gradcheck_detects_a_wrong_gradient(rng):
    a = t64(rng, 3)

    def wrong(x):
        return Tensor._from_op(x.data ** 2, (x,), lambda g: (g * x.data,))  # should be 2x

    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(wrong, [a])
    assert gradcheck(wrong, [a], raise_exception=False) is False


def test_gradcheck_requires_float64():
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda x: x * 2, [fastnn.ones(2, requires_grad=True)])


def test_operations_match_torch(rng):
    torch = pytest.importorskip("torch")
    a_np = rng.standard_normal((3, 4))
    b_np = rng.standard_normal((4, 2))
    a, b = Tensor(a_np, requires_grad=True), Tensor(b_np, requires_grad=True)
    ta = torch.tensor(a_np, requires_grad=True)
    tb = torch.tensor(b_np, requires_grad=True)
    out = ((a @ b).exp() * 2 - a.sum(1, keepdim=True)).mean()
    tout = ((ta @ tb).exp() * 2 - ta.sum(1, keepdim=True)).mean()
    out.backward()
    tout.backward()
    np.testing.assert_allclose(out.item(), tout.item(), rtol=1e-12)
    np.testing.assert_allclose(a.grad.data, ta.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(b.grad.data, tb.grad.numpy(), rtol=1e-10)


OUT_OF_RANGE_DIMS = {
    "softmax": lambda t: t.softmax(2),
    "log_softmax": lambda t: fastnn.functional.log_softmax(t, dim=-3),
    "flatten": lambda t: t.flatten(2),
    "transpose": lambda t: t.transpose(0, 2),
    "unsqueeze": lambda t: t.unsqueeze(3),
    "cat": lambda t: fastnn.cat([t, t], dim=2),
    "stack": lambda t: fastnn.stack([t, t], dim=-4),
    "sum": lambda t: t.sum(2),
}


@pytest.mark.parametrize("op", sorted(OUT_OF_RANGE_DIMS))
def test_out_of_range_dim_raises_instead_of_wrapping(op):
    # A dim that wrapped around would silently work on another axis (softmax over the batch).
    with pytest.raises(IndexError, match=r"out of range"):
        OUT_OF_RANGE_DIMS[op](fastnn.ones(4, 3))


def test_negative_dims_count_from_the_end():
    t = fastnn.ones(4, 3)
    assert t.unsqueeze(-1).shape == (4, 3, 1)
    assert t.unsqueeze(-3).shape == (1, 4, 3)
    assert fastnn.stack([t, t], dim=-1).shape == (4, 3, 2)
    assert fastnn.cat([t, t], dim=-1).shape == (4, 6)
    assert t.transpose(-1, -2).shape == (3, 4)


def test_cat_and_stack_name_the_mismatched_shapes():
    with pytest.raises(ValueError, match=r"cat: shapes \[\(4, 3\), \(4, 2\)\]"):
        fastnn.cat([fastnn.ones(4, 3), fastnn.ones(4, 2)], dim=0)
    with pytest.raises(ValueError, match=r"stack: .*\(4, 3\), \(3, 4\)"):
        fastnn.stack([fastnn.ones(4, 3), fastnn.ones(3, 4)])
    with pytest.raises(ValueError, match=r"flatten: start_dim 1 comes after end_dim 0"):
        fastnn.ones(2, 3, 4).flatten(1, 0)


def test_full_max_and_min_share_the_gradient_among_ties():
    torch = pytest.importorskip("torch")
    values = np.array([[1.0, 3.0, 3.0], [2.0, 3.0, -1.0]])
    for reduce in ("max", "min"):
        ours = Tensor(values * (1 if reduce == "max" else -1), requires_grad=True)
        theirs = torch.tensor(ours.data, requires_grad=True)
        getattr(ours, reduce)().backward()
        getattr(theirs, reduce)().backward()
        np.testing.assert_array_equal(ours.grad.data, theirs.grad.numpy())
    np.testing.assert_array_equal(ours.grad.data, [[0, 1 / 3, 1 / 3], [0, 1 / 3, 0]])


def test_reductions_of_empty_tensors():
    assert np.isnan(fastnn.zeros(0).mean().item())  # 0 / 0, as in PyTorch
    assert fastnn.zeros(0).sum().item() == 0
    with pytest.raises(ValueError, match=r"max: the tensor of shape \(0,\) is empty"):
        fastnn.zeros(0).max()


def test_numpy_scalars_keep_a_float32_tensor_float32():
    t = fastnn.ones(3)
    for scalar in (np.float64(2.0), np.float32(2.0), np.int64(2), 2.0, 2):
        assert (t * scalar).dtype == np.float32, type(scalar)
        assert (scalar * t).dtype == np.float32, type(scalar)
        assert (t + scalar).dtype == np.float32, type(scalar)
    assert (fastnn.ones(3, dtype=np.float64) * np.float32(2)).dtype == np.float64


def test_no_grad_works_as_a_bare_decorator_and_with_parentheses():
    @fastnn.no_grad
    def bare(x):
        return x * 2

    @fastnn.no_grad()
    def called(x):
        return x * 2

    x = fastnn.ones(2, requires_grad=True)
    assert not bare(x).requires_grad and not called(x).requires_grad
    assert (x * 2).requires_grad  # the mode is restored on return


def test_gradcheck_nudges_views_in_place(rng):
    # The transpose is a view: a reshaped copy would leave the function's input unchanged and
    # make every numerical gradient zero.
    a = Tensor(rng.standard_normal((4, 3)).T, requires_grad=True)
    assert not a.data.flags.c_contiguous
    assert gradcheck(lambda t: (t * t).sum(), [a])
    b = Tensor(rng.standard_normal((6, 4))[::2, 1:], requires_grad=True)
    assert gradcheck(lambda t: (t.exp() * t).sum(1), [b])


def test_gradcheck_checks_every_output_of_a_tuple(rng):
    a = t64(rng, 3, 2)
    assert gradcheck(lambda t: (t * 2, t.exp(), t.sum()), [a])

    def second_output_wrong(x):
        wrong = Tensor._from_op(x.data ** 2, (x,), lambda g: (g * x.data,))  # should be 2x
        return x * 3, wrong

    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(second_output_wrong, [a])
    with pytest.raises(TypeError, match="gradcheck: .*output 1 is ndarray"):
        gradcheck(lambda t: (t * 2, t.data), [a])


BROADCAST_ERRORS = {
    "add": lambda a, b: a + b,
    "multiply": lambda a, b: a * b.data,
    "maximum": lambda a, b: fastnn.maximum(a, b),
    "where": lambda a, b: fastnn.where(a.data > 0, a, b),
}


@pytest.mark.parametrize("op", sorted(BROADCAST_ERRORS))
def test_broadcast_errors_name_the_operation_and_shapes(op):
    with pytest.raises(ValueError, match=rf"{op}: .*\(4, 3\).*\(2,\)"):
        BROADCAST_ERRORS[op](fastnn.ones(4, 3), fastnn.ones(2))
    with pytest.raises(ValueError, match=r"expand: .*\(4, 3\).*\(5, 4\)"):
        fastnn.ones(4, 3).expand(5, 4)
