"""nn.Parameter: a tensor that a Module registers as one of its learnable weights."""

from __future__ import annotations

import numpy as np

from ..tensor import Tensor, _as_array


class Parameter(Tensor):
    """A leaf tensor that requires grad and is registered by the Module it is assigned to.

    Its data is always a C-contiguous float array, because optimizers and kernels update it in
    place.
    """

    # _spare_grad: a released gradient array that the next backward may reuse (see
    # fastnn.autograd.release_grad).
    __slots__ = ("_spare_grad",)

    def __init__(self, data, requires_grad: bool = True):
        array = _as_array(data)
        if array.dtype.kind != "f":
            array = array.astype(np.float32)
        super().__init__(np.ascontiguousarray(array), requires_grad=requires_grad)
        self._spare_grad = None

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()
