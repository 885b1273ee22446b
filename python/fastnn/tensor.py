"""fastnn.Tensor: a numpy array with reverse-mode automatic differentiation.

A Tensor wraps a numpy array (`.data`, shared, never copied on the way in or out when the dtype
already fits) and, when it requires grad, remembers how it was computed so that `backward()` can
send gradients to the leaves. Generic arithmetic runs on numpy; matrix products, activations,
softmax and losses run on fastnn's C++ kernels (see `fastnn.functional`).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from . import _ops
from .autograd import _set_wrapper as _set_autograd_wrapper
from .autograd import backward as _run_backward
from .autograd import is_grad_enabled

float32 = np.float32
float64 = np.float64
int64 = np.int64

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

MaxResult = namedtuple("MaxResult", ["values", "indices"])
_new_tensor = object.__new__


def _as_array(data, dtype=None) -> np.ndarray:
    """numpy array for `data`; Python floats become float32, numpy arrays keep their dtype."""
    if isinstance(data, Tensor):
        data = data._data
    if isinstance(data, np.ndarray):
        array = data
    else:
        array = np.asarray(data)
        if dtype is None and array.dtype.kind == "f":
            array = array.astype(np.float32)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    return array


def _unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum `grad` down to `shape`, undoing numpy broadcasting."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    squeezed = tuple(i for i, size in enumerate(shape) if size == 1 and grad.shape[i] != 1)
    if squeezed:
        grad = grad.sum(axis=squeezed, keepdims=True)
    return grad.reshape(shape)


def _dim_index(op: str, dim, ndim: int, of: str = "the input") -> int:
    """`dim` as an index in [0, ndim), negative dims counting from the end, as PyTorch does."""
    if not -ndim <= dim < ndim:
        raise IndexError(f"{op}: dim {dim} is out of range for the {ndim} dims of {of} "
                         f"(expected -{ndim} <= dim < {ndim})")
    return dim % ndim


def _normalize_axes(dim, ndim):
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    out = []
    for d in dims:
        if not -ndim <= d < max(ndim, 1):
            raise IndexError(f"dimension {d} is out of range for a tensor with {ndim} dims")
        out.append(d % max(ndim, 1))
    return tuple(out)


class Tensor:
    """An n-dimensional array that can record operations for automatic differentiation.

    Args:
        data: array-like. numpy arrays are wrapped without copying; Python floats become
            float32 (fastnn's default), integers int64.
        requires_grad: record operations on this tensor so `backward()` can reach it.
        dtype: optional numpy dtype to convert to.

    Example:
        >>> x = Tensor([[1.0, 2.0]], requires_grad=True)
        >>> (x * x).sum().backward()
        >>> x.grad.numpy()
        array([[2., 4.]], dtype=float32)
    """

    __slots__ = ("_data", "requires_grad", "grad", "_backward", "_parents", "_freed",
                 "_retains_grad", "__weakref__")
    # Make numpy defer to Tensor's reflected operators (ndarray + Tensor -> Tensor).
    __array_priority__ = 1000

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self._set_leaf(_as_array(data, dtype))
        if requires_grad:
            self.requires_grad_(True)

    def _set_leaf(self, data: np.ndarray) -> None:
        """Every slot of a fresh leaf that does not require grad, holding `data`."""
        self._data = data
        self.grad = None
        self._backward = None
        self._parents = ()
        self._freed = False
        self._retains_grad = False
        self.requires_grad = False

    # --- construction helpers used by operations -----------------------------------------------
    @staticmethod
    def _wrap(data: np.ndarray) -> "Tensor":
        """A tensor around an array that is already what Tensor would make of it (no checks)."""
        out = _new_tensor(Tensor)
        out._set_leaf(data)
        return out

    @staticmethod
    def _from_op(data: np.ndarray, parents: tuple, backward_fn) -> "Tensor":
        """The result of an operation: records the graph when any parent requires grad."""
        out = _new_tensor(Tensor)
        out._set_leaf(data)
        if is_grad_enabled():
            for parent in parents:
                if parent.requires_grad:
                    out.requires_grad = True
                    out._backward = backward_fn
                    out._parents = parents
                    break
        return out

    # --- basic properties ------------------------------------------------------------------------
    @property
    def data(self) -> np.ndarray:
        """The underlying numpy array (shared, not a copy)."""
        return self._data

    @data.setter
    def data(self, value) -> None:
        self._data = _as_array(value)

    @property
    def shape(self) -> tuple:
        return self._data.shape

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def is_leaf(self) -> bool:
        return self._backward is None and not self._freed

    @property
    def T(self) -> "Tensor":
        return self.permute(*reversed(range(self.ndim)))

    def size(self, dim=None):
        return self._data.shape if dim is None else self._data.shape[dim]

    def numel(self) -> int:
        return int(self._data.size)

    def dim(self) -> int:
        return self._data.ndim

    def __len__(self) -> int:
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def numpy(self) -> np.ndarray:
        """The data as a numpy array, without copying."""
        return self._data

    def __array__(self, dtype=None, copy=None):
        if dtype is not None and np.dtype(dtype) != self._data.dtype:
            return self._data.astype(dtype)
        return self._data.copy() if copy else self._data

    def item(self):
        if self._data.size != 1:
            raise ValueError(f"item(): tensor has {self._data.size} elements, expected 1")
        return self._data.reshape(()).item()

    def tolist(self):
        return self._data.tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if self._data.size != 1:
            raise ValueError("the truth value of a tensor with more than one element is ambiguous")
        return bool(self._data.reshape(()))

    def __repr__(self) -> str:
        body = np.array2string(self._data, separator=", ", prefix="tensor(")
        extra = ""
        if self._data.dtype != np.float32 and self._data.dtype.kind == "f":
            extra += f", dtype={self._data.dtype}"
        if self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    # --- autograd --------------------------------------------------------------------------------
    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if requires_grad and self._data.dtype not in _FLOAT_DTYPES:
            raise TypeError(
                f"requires_grad: only float32 and float64 tensors can require gradients, "
                f"got {self._data.dtype}"
            )
        if not self.is_leaf and not requires_grad:
            raise RuntimeError("requires_grad_: cannot turn off gradients of a non-leaf tensor; "
                               "use detach()")
        self.requires_grad = bool(requires_grad)
        return self

    def backward(self, gradient=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into the `.grad` of every leaf that requires grad.

        `gradient` is required unless the tensor has a single element. The graph is freed
        afterwards unless retain_graph=True.
        """
        _run_backward(self, gradient, retain_graph)

    def retain_grad(self) -> None:
        """Keep the gradient of this non-leaf tensor in `.grad` during backward."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad: tensor does not require grad")
        self._retains_grad = True

    def detach(self) -> "Tensor":
        """A tensor sharing this data, cut off from the graph."""
        return Tensor(self._data)

    def zero_(self) -> "Tensor":
        self._data[...] = 0
        return self

    def copy_(self, other) -> "Tensor":
        np.copyto(self._data, _as_array(other), casting="same_kind")
        return self

    def clone(self) -> "Tensor":
        return Tensor._from_op(self._data.copy(), (self,), lambda g: (g,))

    # --- dtype conversion -------------------------------------------------------------------------
    def astype(self, dtype) -> "Tensor":
        dtype = np.dtype(dtype)
        if dtype == self._data.dtype:
            return self
        source = self._data.dtype

        def backward(g):
            return (g.astype(source) if source.kind == "f" else None,)

        return Tensor._from_op(self._data.astype(dtype), (self,), backward)

    to = astype

    def float(self) -> "Tensor":
        return self.astype(np.float32)

    def double(self) -> "Tensor":
        return self.astype(np.float64)

    def long(self) -> "Tensor":
        return Tensor(self._data.astype(np.int64))

    # --- arithmetic ------------------------------------------------------------------------------
    def _binary(self, other, forward, grad_self, grad_other):
        other_t = other if isinstance(other, Tensor) else None
        if other_t is not None:
            other_data = other._data
        elif isinstance(other, (bool, int, float)):
            # A Python scalar keeps the tensor's dtype under numpy's rules; a numpy float64
            # scalar (a subclass of float) would promote float32 to float64, so it goes in as a
            # Python float, as PyTorch treats it.
            other_data = other.item() if isinstance(other, np.generic) else other
        else:
            other_data = _as_array(other)
            if self._data.dtype.kind == "f" and other_data.dtype != self._data.dtype:
                other_data = other_data.astype(self._data.dtype)
        try:
            out = forward(self._data, other_data)
        except ValueError:
            raise ValueError(f"{forward.__name__}: shapes {self.shape} and {np.shape(other_data)} "
                             f"cannot be broadcast together") from None
        if not isinstance(out, np.ndarray):
            out = np.asarray(out)
        parents = (self,) if other_t is None else (self, other_t)
        a, b = self, other_t

        def backward(g):
            ga = _unbroadcast(grad_self(g, a._data, other_data, out), a.shape) \
                if a.requires_grad else None
            if b is None:
                return (ga,)
            gb = _unbroadcast(grad_other(g, a._data, b._data, out), b.shape) \
                if b.requires_grad else None
            return ga, gb

        return Tensor._from_op(out, parents, backward)

    def __add__(self, other):
        return self._binary(other, np.add, lambda g, a, b, o: g, lambda g, a, b, o: g)

    __radd__ = __add__

    def __sub__(self, other):
        return self._binary(other, np.subtract, lambda g, a, b, o: g, lambda g, a, b, o: -g)

    def __rsub__(self, other):
        return (-self) + other

    def __mul__(self, other):
        return self._binary(other, np.multiply, lambda g, a, b, o: g * b, lambda g, a, b, o: g * a)

    __rmul__ = __mul__

    def __truediv__(self, other):
        return self._binary(other, np.divide, lambda g, a, b, o: g / b,
                            lambda g, a, b, o: -g * a / (b * b))

    def __rtruediv__(self, other):
        return Tensor(_as_array(other, self.dtype if self.dtype.kind == "f" else None)) / self

    def __neg__(self):
        return Tensor._from_op(-self._data, (self,), lambda g: (-g,))

    def __pos__(self):
        return self

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            return self._binary(
                exponent, np.power,
                lambda g, a, b, o: g * b * np.power(a, b - 1),
                lambda g, a, b, o: g * o * np.log(np.where(a > 0, a, 1)),
            )
        p = exponent
        out = np.power(self._data, p)
        x = self

        def backward(g):
            return (g * p * np.power(x._data, p - 1),)

        return Tensor._from_op(out, (self,), backward)

    def __rpow__(self, base):
        return Tensor(_as_array(base, self.dtype)) ** self

    def __matmul__(self, other):
        from . import functional as F

        return F.matmul(self, other)

    def __rmatmul__(self, other):
        from . import functional as F

        return F.matmul(Tensor(other), self)

    # Comparisons give plain (non-differentiable) boolean tensors.
    def _compare(self, other, op):
        return Tensor(op(self._data, _as_array(other)))

    def __eq__(self, other):
        return self._compare(other, np.equal)

    def __ne__(self, other):
        return self._compare(other, np.not_equal)

    def __lt__(self, other):
        return self._compare(other, np.less)

    def __le__(self, other):
        return self._compare(other, np.less_equal)

    def __gt__(self, other):
        return self._compare(other, np.greater)

    def __ge__(self, other):
        return self._compare(other, np.greater_equal)

    __hash__ = object.__hash__

    # --- elementwise functions --------------------------------------------------------------
    def exp(self):
        out = np.exp(self._data)
        return Tensor._from_op(out, (self,), lambda g: (g * out,))

    def log(self):
        x = self._data
        return Tensor._from_op(np.log(x), (self,), lambda g: (g / x,))

    def sqrt(self):
        out = np.sqrt(self._data)
        return Tensor._from_op(out, (self,), lambda g: (g / (2 * out),))

    def abs(self):
        x = self._data
        return Tensor._from_op(np.abs(x), (self,), lambda g: (g * np.sign(x),))

    def clamp(self, min=None, max=None):
        x = self._data
        out = np.clip(x, min, max)

        def backward(g):
            inside = np.ones(x.shape, dtype=bool)
            if min is not None:
                inside &= x >= min
            if max is not None:
                inside &= x <= max
            return (g * inside,)

        return Tensor._from_op(out, (self,), backward)

    clip = clamp

    def relu(self):
        from . import functional as F

        return F.relu(self)

    def sigmoid(self):
        from . import functional as F

        return F.sigmoid(self)

    def tanh(self):
        from . import functional as F

        return F.tanh(self)

    def softmax(self, dim=-1):
        from . import functional as F

        return F.softmax(self, dim)

    def log_softmax(self, dim=-1):
        from . import functional as F

        return F.log_softmax(self, dim)

    # --- reductions ------------------------------------------------------------------------------
    def sum(self, dim=None, keepdim: bool = False):
        axes = _normalize_axes(dim, self.ndim)
        out = np.asarray(self._data.sum(axis=axes, keepdims=keepdim))
        shape = self.shape

        def backward(g):
            if axes is not None and not keepdim:
                g = np.expand_dims(g, axes)
            return (np.broadcast_to(g, shape),)

        return Tensor._from_op(out, (self,), backward)

    def mean(self, dim=None, keepdim: bool = False):
        axes = _normalize_axes(dim, self.ndim)
        count = self._data.size if axes is None else int(np.prod([self.shape[a] for a in axes]))
        # An empty mean is 0/0: NaN, as in PyTorch and numpy.
        return self.sum(dim, keepdim) * (1.0 / count if count else float("nan"))

    def var(self, dim=None, keepdim: bool = False, unbiased: bool = True):
        axes = _normalize_axes(dim, self.ndim)
        count = self._data.size if axes is None else int(np.prod([self.shape[a] for a in axes]))
        centered = self - self.mean(dim, keepdim=True)
        return (centered * centered).sum(dim, keepdim) * (1.0 / max(count - int(unbiased), 1))

    def std(self, dim=None, keepdim: bool = False, unbiased: bool = True):
        return self.var(dim, keepdim, unbiased).sqrt()

    def _extreme(self, dim, keepdim, numpy_arg):
        x = self._data
        if x.size == 0:
            raise ValueError(f"{numpy_arg.__name__[3:]}: the tensor of shape {x.shape} is empty")
        if dim is None:
            out = np.asarray(x.reshape(-1)[int(numpy_arg(x))])

            def backward(g):
                # Ties share the gradient evenly, as in PyTorch, so that the result does not
                # depend on which of equal elements comes first.
                ties = np.isnan(x) if np.isnan(out) else x == out
                return (ties * (g / np.count_nonzero(ties)).astype(x.dtype),)

            return Tensor._from_op(out, (self,), backward)
        (axis,) = _normalize_axes(dim, self.ndim)
        kept_indices = np.expand_dims(numpy_arg(x, axis=axis), axis)
        values = np.take_along_axis(x, kept_indices, axis)

        def backward(g):
            grad = np.zeros_like(x)
            np.put_along_axis(grad, kept_indices, g if keepdim else np.expand_dims(g, axis), axis)
            return (grad,)

        indices = kept_indices
        if not keepdim:
            values = np.squeeze(values, axis)
            indices = np.squeeze(kept_indices, axis)
        return MaxResult(Tensor._from_op(values, (self,), backward), Tensor(indices))

    def max(self, dim=None, keepdim: bool = False):
        """Largest element; with `dim`, a (values, indices) pair as in PyTorch."""
        return self._extreme(dim, keepdim, np.argmax)

    def min(self, dim=None, keepdim: bool = False):
        return self._extreme(dim, keepdim, np.argmin)

    def argmax(self, dim=None, keepdim: bool = False):
        if dim is None:
            return Tensor(np.asarray(np.argmax(self._data)))
        return Tensor(np.argmax(self._data, axis=dim, keepdims=keepdim))

    def argmin(self, dim=None, keepdim: bool = False):
        if dim is None:
            return Tensor(np.asarray(np.argmin(self._data)))
        return Tensor(np.argmin(self._data, axis=dim, keepdims=keepdim))

    # --- shape manipulation ------------------------------------------------------------------
    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        source = self.shape
        try:
            out = self._data.reshape(shape)
        except ValueError:
            raise ValueError(
                f"reshape: cannot reshape a tensor of shape {source} ({self._data.size} "
                f"elements) into shape {tuple(shape)}"
            ) from None
        return Tensor._from_op(out, (self,), lambda g: (g.reshape(source),))

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        if self.ndim == 0:
            return self.reshape(1)
        start = _dim_index("flatten", start_dim, self.ndim)
        end = _dim_index("flatten", end_dim, self.ndim)
        if start > end:
            raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} "
                             f"for shape {self.shape}")
        shape = self.shape[:start] + (-1,) + self.shape[end + 1:]
        return self.reshape(shape)

    def permute(self, *dims):
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        dims = _normalize_axes(dims, self.ndim)
        if sorted(dims) != list(range(self.ndim)):
            raise ValueError(f"permute: {dims} is not a permutation of {self.ndim} dims")
        inverse = np.argsort(dims)
        return Tensor._from_op(np.transpose(self._data, dims), (self,),
                               lambda g: (np.transpose(g, inverse),))

    def transpose(self, dim0: int, dim1: int):
        dims = list(range(self.ndim))
        dim0, dim1 = _dim_index("transpose", dim0, self.ndim), _dim_index("transpose", dim1,
                                                                           self.ndim)
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return self.permute(*dims)

    def squeeze(self, dim=None):
        if dim is None:
            return self.reshape(tuple(s for s in self.shape if s != 1))
        (axis,) = _normalize_axes(dim, self.ndim)
        if self.shape[axis] != 1:
            return self
        return self.reshape(self.shape[:axis] + self.shape[axis + 1:])

    def unsqueeze(self, dim: int):
        axis = _dim_index("unsqueeze", dim, self.ndim + 1, "the result")
        return self.reshape(self.shape[:axis] + (1,) + self.shape[axis:])

    def expand(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = tuple(s if s != -1 else self.shape[i - len(shape) + self.ndim]
                      for i, s in enumerate(shape))
        source = self.shape
        try:
            expanded = np.broadcast_to(self._data, shape)
        except ValueError:
            raise ValueError(f"expand: a tensor of shape {source} cannot be expanded to shape "
                             f"{shape} (only dims of size 1 grow)") from None
        return Tensor._from_op(expanded, (self,),
                               lambda g: (_unbroadcast(g, source),))

    def contiguous(self):
        if self._data.flags.c_contiguous:
            return self
        return Tensor._from_op(np.ascontiguousarray(self._data), (self,), lambda g: (g,))

    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = index._data
        elif isinstance(index, tuple):
            index = tuple(i._data if isinstance(i, Tensor) else i for i in index)
        x = self._data
        out = x[index]
        if not isinstance(out, np.ndarray):
            out = np.asarray(out)

        def backward(g):
            grad = np.zeros_like(x)
            # add.at accumulates repeated indices (x[[0, 0]]) correctly.
            np.add.at(grad, index, g)
            return (grad,)

        return Tensor._from_op(out, (self,), backward)

    def __setitem__(self, index, value):
        if self.requires_grad and is_grad_enabled():
            raise RuntimeError("__setitem__: in-place assignment into a tensor that requires grad "
                               "is not supported; wrap it in fastnn.no_grad() or use detach()")
        if isinstance(index, Tensor):
            index = index._data
        self._data[index] = _as_array(value)


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """Create a tensor (copies `data`, like torch.tensor)."""
    array = np.array(_as_array(data, dtype), copy=True)
    return Tensor(array, requires_grad=requires_grad)


def from_numpy(array: np.ndarray) -> Tensor:
    """Wrap a numpy array without copying."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy array, got {type(array).__name__}")
    return Tensor(array)


def _factory(fill):
    def make(*shape, dtype=np.float32, requires_grad=False):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return Tensor(fill(shape, dtype), requires_grad=requires_grad)

    return make


zeros = _factory(lambda shape, dtype: np.zeros(shape, dtype))
ones = _factory(lambda shape, dtype: np.ones(shape, dtype))
empty = _factory(lambda shape, dtype: np.empty(shape, dtype))


def zeros_like(t, dtype=None, requires_grad=False):
    return Tensor(np.zeros_like(_as_array(t), dtype=dtype), requires_grad=requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    return Tensor(np.ones_like(_as_array(t), dtype=dtype), requires_grad=requires_grad)


def randn(*shape, dtype=np.float32, requires_grad=False, generator=None):
    from .random import default_generator

    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    rng = generator or default_generator()
    return Tensor(rng.standard_normal(shape, dtype=np.float64).astype(dtype),
                  requires_grad=requires_grad)


def rand(*shape, dtype=np.float32, requires_grad=False, generator=None):
    from .random import default_generator

    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    rng = generator or default_generator()
    return Tensor(rng.random(shape).astype(dtype), requires_grad=requires_grad)


def arange(*args, dtype=None):
    return Tensor(np.arange(*args, dtype=dtype))


def cat(tensors, dim: int = 0) -> Tensor:
    """Concatenate along an existing dimension."""
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("cat: expected a non-empty list of tensors")
    first = tensors[0].shape
    if not first:
        raise ValueError("cat: zero-dimensional tensors cannot be concatenated")
    axis = _dim_index("cat", dim, len(first))
    for t in tensors[1:]:
        if t.ndim != len(first) or any(a != b for i, (a, b) in enumerate(zip(t.shape, first))
                                       if i != axis):
            raise ValueError(f"cat: shapes {[t.shape for t in tensors]} differ outside dim {dim}")
    out = np.concatenate([t._data for t in tensors], axis=axis)
    bounds = np.cumsum([t.shape[axis] for t in tensors])[:-1]

    def backward(g):
        return tuple(np.split(g, bounds, axis=axis))

    return Tensor._from_op(out, tuple(tensors), backward)


def stack(tensors, dim: int = 0) -> Tensor:
    """Stack along a new dimension."""
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("stack: expected a non-empty list of tensors")
    if any(t.shape != tensors[0].shape for t in tensors):
        raise ValueError(f"stack: expected tensors of one shape, got {[t.shape for t in tensors]}")
    axis = _dim_index("stack", dim, tensors[0].ndim + 1, "the result")
    out = np.stack([t._data for t in tensors], axis=axis)

    def backward(g):
        return tuple(np.take(g, i, axis=axis) for i in range(len(tensors)))

    return Tensor._from_op(out, tuple(tensors), backward)


def where(condition, a, b) -> Tensor:
    cond = _as_array(condition).astype(bool)
    a = a if isinstance(a, Tensor) else Tensor(_as_array(a))
    b = b if isinstance(b, Tensor) else Tensor(_as_array(b))
    try:
        out = np.where(cond, a._data, b._data)
    except ValueError:
        raise ValueError(f"where: shapes {cond.shape} (condition), {a.shape} and {b.shape} "
                         f"cannot be broadcast together") from None

    def backward(g):
        return (_unbroadcast(np.where(cond, g, 0), a.shape),
                _unbroadcast(np.where(cond, 0, g), b.shape))

    return Tensor._from_op(out, (a, b), backward)


def _pick(op: str, a, b, keep_a) -> Tensor:
    """Elementwise a where keep_a(a, b) holds, else b; the gradient goes to the one picked."""
    a = a if isinstance(a, Tensor) else Tensor(_as_array(a))
    b = b if isinstance(b, Tensor) else Tensor(_as_array(b))
    try:
        condition = keep_a(a._data, b._data)
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} cannot be broadcast "
                         f"together") from None
    return where(condition, a, b)


def maximum(a, b) -> Tensor:
    return _pick("maximum", a, b, np.greater_equal)


def minimum(a, b) -> Tensor:
    return _pick("minimum", a, b, np.less_equal)


_set_autograd_wrapper(Tensor._wrap)

# `_ops` is imported for its side effect of loading the compiled module early, so that a broken
# build fails at `import fastnn` with a clear message rather than at the first matmul.
_ops.ensure_loaded()
