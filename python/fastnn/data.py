"""Datasets, batching and splitting on numpy arrays.

A dataset is anything with `__len__` and `__getitem__(i) -> tuple`, like PyTorch's. `ArrayDataset`
wraps in-memory arrays and also accepts an index array, so `DataLoader` fetches a whole batch
with one fancy-index per array instead of one Python call per sample; any other dataset is read
item by item and its fields are stacked.

Randomness (shuffling, splits) comes from fastnn's seeded generator (`fastnn.random`) unless a
generator or seed is given, so `fastnn.manual_seed(s)` makes the order repeatable.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterator, Protocol, Sequence, Tuple, Union, runtime_checkable

import numpy as np

from .random import default_generator

__all__ = [
    "Dataset",
    "ArrayDataset",
    "Subset",
    "DataLoader",
    "random_split",
    "train_val_split",
]

GeneratorLike = Union[np.random.Generator, int, None]


@runtime_checkable
class Dataset(Protocol):
    """What `DataLoader` needs: a length and integer indexing that returns a tuple of fields.

    Subclass it or just provide the two methods; every item must have the same number of fields
    and each field the same shape across items, so a batch can be stacked.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Tuple[Any, ...]: ...


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _resolve_generator(generator: GeneratorLike, where: str) -> np.random.Generator:
    """A numpy Generator from a Generator, an int seed, or None (fastnn's default generator)."""
    if generator is None:
        return default_generator()
    if isinstance(generator, np.random.Generator):
        return generator
    if _is_int(generator):
        return np.random.default_rng(int(generator))
    raise TypeError(
        f"{where}: generator must be a numpy Generator, an int seed or None, "
        f"got {type(generator).__name__}"
    )


def _as_arrays(arrays: Sequence[Any], where: str) -> Tuple[np.ndarray, ...]:
    """Arrays with at least one dimension and a common first dimension (no copies)."""
    if not arrays:
        raise ValueError(f"{where}: needs at least one array")
    out = tuple(np.asarray(a) for a in arrays)
    for i, a in enumerate(out):
        if a.ndim == 0:
            raise ValueError(f"{where}: array {i} is a scalar; every array needs a first dimension")
    lengths = [a.shape[0] for a in out]
    if any(n != lengths[0] for n in lengths):
        shapes = ", ".join(str(a.shape) for a in out)
        raise ValueError(f"{where}: arrays must have the same first dimension, got shapes {shapes}")
    return out


class ArrayDataset:
    """A dataset over in-memory arrays that share their first dimension.

    Args:
        *arrays: one or more array-likes, e.g. `ArrayDataset(images, labels)`. They are kept as
            numpy arrays without copying when already arrays.

    `ds[i]` returns `(arrays[0][i], arrays[1][i], ...)`; `ds[index_array]` and `ds[slice]`
    return the same tuple of whole batches.

    Example:
        >>> ds = ArrayDataset(np.zeros((5, 3)), np.arange(5))
        >>> x, y = ds[np.array([0, 2])]
        >>> x.shape, y.tolist()
        ((2, 3), [0, 2])
    """

    def __init__(self, *arrays: Any) -> None:
        self.arrays = _as_arrays(arrays, "ArrayDataset")

    def __len__(self) -> int:
        return int(self.arrays[0].shape[0])

    def __getitem__(self, index: Any) -> Tuple[Any, ...]:
        return tuple(a[index] for a in self.arrays)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{a.dtype}{list(a.shape)}" for a in self.arrays)
        return f"ArrayDataset({shapes})"


class Subset:
    """The items of `dataset` at `indices`, in that order (what `random_split` returns)."""

    def __init__(self, dataset: Dataset, indices: Any) -> None:
        indices = np.asarray(indices)
        if indices.ndim != 1 or (indices.size and indices.dtype.kind not in "iu"):
            raise TypeError(
                f"Subset: indices must be a 1-D array of integers, got {indices.dtype} "
                f"with shape {indices.shape}"
            )
        n = len(dataset)
        if indices.size and (indices.min() < -n or indices.max() >= n):
            raise IndexError(f"Subset: indices out of range for a dataset of length {n}")
        self.dataset = dataset
        self.indices = indices.astype(np.intp) % max(n, 1)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, index: Any) -> Tuple[Any, ...]:
        picked = self.indices[index]
        if isinstance(picked, np.ndarray):
            return _fetch_batch(self.dataset, picked)
        return self.dataset[int(picked)]

    def __repr__(self) -> str:
        return f"Subset({len(self)} of {self.dataset!r})"


def _fetch_batch(dataset: Dataset, indices: np.ndarray) -> Tuple[np.ndarray, ...]:
    """The items at `indices` as a tuple of batch arrays."""
    if isinstance(dataset, ArrayDataset):
        return dataset[indices]
    if isinstance(dataset, Subset):
        return _fetch_batch(dataset.dataset, dataset.indices[indices])
    return _stack_items([dataset[int(i)] for i in indices], indices)


def _stack_items(items: Sequence[Any], indices: np.ndarray) -> Tuple[np.ndarray, ...]:
    for item, i in zip(items, indices):
        if not isinstance(item, tuple):
            raise TypeError(
                f"DataLoader: dataset[{int(i)}] returned {type(item).__name__}; "
                f"items must be tuples of fields, e.g. (x, y)"
            )
        if len(item) != len(items[0]):
            raise ValueError(
                f"DataLoader: dataset[{int(i)}] has {len(item)} fields but "
                f"dataset[{int(indices[0])}] has {len(items[0])}"
            )
    fields = []
    for f in range(len(items[0]) if items else 0):
        values = [np.asarray(item[f]) for item in items]
        shapes = {v.shape for v in values}
        if len(shapes) > 1:
            raise ValueError(
                f"DataLoader: field {f} has different shapes across items in a batch "
                f"({sorted(shapes)}); cannot stack them"
            )
        fields.append(np.stack(values))
    return tuple(fields)


def _replay_generator(state: Any) -> np.random.Generator:
    """A new Generator set to a saved bit-generator state, leaving the live one untouched."""
    name = state.get("bit_generator") if isinstance(state, dict) else None
    bit_generator = getattr(np.random, name, None) if isinstance(name, str) else None
    if bit_generator is None:
        raise ValueError(f"DataLoader: unknown bit generator {name!r} in the saved state")
    generator = np.random.Generator(bit_generator())
    try:
        generator.bit_generator.state = state
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"DataLoader: invalid generator state in the saved state ({e})") from None
    return generator


class DataLoader:
    """Iterates over a dataset in batches, each a tuple of numpy arrays.

    Args:
        dataset: an `ArrayDataset` (fast path: one fancy-index per array and batch), a `Subset`
            of one, or any object with `__len__` and `__getitem__(i) -> tuple`.
        batch_size: samples per batch (>= 1).
        shuffle: draw a new order at the start of every epoch.
        drop_last: skip the final batch when it is smaller than `batch_size`.
        generator: numpy Generator or int seed for the shuffling; None uses fastnn's default
            generator at the start of each epoch (so `fastnn.manual_seed` applies).

    `len(loader)` is the number of batches per epoch. Every `iter(loader)` starts a new epoch,
    except the first one after `load_state_dict`, which resumes the saved epoch at the batch
    after the last one handed out. Only one epoch is tracked at a time.

    Example:
        >>> loader = DataLoader(ArrayDataset(x, y), batch_size=32, shuffle=True)
        >>> for xb, yb in loader:
        ...     train_step(xb, yb)
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int = 1,
        shuffle: bool = False,
        drop_last: bool = False,
        generator: GeneratorLike = None,
    ) -> None:
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(
                f"DataLoader: dataset must have __len__ and __getitem__, "
                f"got {type(dataset).__name__}"
            )
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        for name, flag in (("shuffle", shuffle), ("drop_last", drop_last)):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"DataLoader: {name} must be a bool, got {type(flag).__name__}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        # Resolve a seed now so every epoch draws from one stream; None stays None so the
        # default generator is looked up per epoch and follows fastnn.manual_seed.
        self.generator = None if generator is None else _resolve_generator(generator, "DataLoader")
        # Progress of the current epoch: the generator state its order was drawn from (None
        # when not shuffled) and how many batches have been handed out.
        self._epoch_order_state: dict | None = None
        self._batches_done = 0
        self._in_epoch = False
        self._resume_pending = False

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self, order_state: dict | None) -> np.ndarray:
        """The order of a saved epoch: drawn again from the generator state it came from."""
        if order_state is None:
            return np.arange(len(self.dataset), dtype=np.intp)
        return _replay_generator(order_state).permutation(len(self.dataset)).astype(np.intp)

    def __iter__(self) -> Iterator[Tuple[np.ndarray, ...]]:
        if self._resume_pending:
            self._resume_pending = False
            return self._batches(self._order(self._epoch_order_state), self._batches_done)
        n = len(self.dataset)
        self._epoch_order_state = None
        order = np.arange(n, dtype=np.intp)
        if self.shuffle:
            gen = self.generator if self.generator is not None else default_generator()
            self._epoch_order_state = gen.bit_generator.state
            order = gen.permutation(n).astype(np.intp)
        self._batches_done = 0
        self._in_epoch = True
        return self._batches(order, 0)

    def _batches(self, order: np.ndarray, start: int) -> Iterator[Tuple[np.ndarray, ...]]:
        n_batches = len(self)
        for b in range(start, n_batches):
            indices = order[b * self.batch_size:(b + 1) * self.batch_size]
            batch = _fetch_batch(self.dataset, indices)
            self._batches_done = b + 1
            # The epoch counts as finished once its last batch is handed out, so a state saved
            # while that batch is processed resumes with a fresh epoch.
            self._in_epoch = b + 1 < n_batches
            yield batch
        self._in_epoch = False

    def state_dict(self) -> dict:
        """Where the loader is, as plain data: enough to resume the current epoch exactly.

        Keys: "in_epoch" (bool), "batches_done" (int), "epoch_order_state" (the generator state
        the epoch's order was drawn from, or None), "generator_state" (the state of the loader's
        own generator, or None when it uses fastnn's default generator, whose state the caller
        saves with `fastnn.random.get_rng_state`).
        """
        return {
            "in_epoch": self._in_epoch,
            "batches_done": self._batches_done if self._in_epoch else 0,
            "epoch_order_state": self._epoch_order_state if self._in_epoch else None,
            "generator_state": (
                None if self.generator is None else self.generator.bit_generator.state
            ),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()` output; the next `iter()` resumes the saved epoch."""
        expected = {"in_epoch", "batches_done", "epoch_order_state", "generator_state"}
        if not isinstance(state, dict) or set(state) != expected:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"DataLoader.load_state_dict: expected keys {sorted(expected)}, got {got}"
            )
        if state["generator_state"] is not None:
            if self.generator is None:
                raise ValueError(
                    "DataLoader.load_state_dict: the state has a generator state but this loader "
                    "uses fastnn's default generator"
                )
            self.generator.bit_generator.state = state["generator_state"]
        if state["epoch_order_state"] is not None and not self.shuffle:
            raise ValueError(
                "DataLoader.load_state_dict: shuffled state given to an unshuffled loader"
            )
        if state["in_epoch"] and state["epoch_order_state"] is None and self.shuffle:
            raise ValueError(
                "DataLoader.load_state_dict: unshuffled state given to a shuffled loader"
            )
        batches_done = state["batches_done"]
        if not _is_int(batches_done) or not 0 <= batches_done <= len(self):
            raise ValueError(
                f"DataLoader.load_state_dict: batches_done={batches_done!r} is outside "
                f"0..{len(self)} batches"
            )
        if state["epoch_order_state"] is not None:
            _replay_generator(state["epoch_order_state"])
        self._in_epoch = bool(state["in_epoch"])
        self._resume_pending = self._in_epoch
        self._batches_done = int(batches_done)
        self._epoch_order_state = state["epoch_order_state"]

    def __repr__(self) -> str:
        return (
            f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, "
            f"batch_size={self.batch_size}, shuffle={self.shuffle}, drop_last={self.drop_last})"
        )


def _split_lengths(n: int, lengths: Sequence[Any]) -> list:
    """Counts from `lengths` given as counts summing to n or fractions summing to 1."""
    if isinstance(lengths, (str, bytes)) or not isinstance(lengths, Sequence) or not lengths:
        raise ValueError(f"random_split: lengths must be a non-empty sequence, got {lengths!r}")
    if all(_is_int(v) for v in lengths):
        counts = [int(v) for v in lengths]
        if any(c < 0 for c in counts):
            raise ValueError(f"random_split: lengths must be non-negative, got {counts}")
        if sum(counts) != n:
            raise ValueError(
                f"random_split: lengths {counts} sum to {sum(counts)}, "
                f"not to the dataset length {n}"
            )
        return counts
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in lengths):
        raise TypeError(f"random_split: lengths must be ints or floats, got {lengths!r}")
    fractions = [float(v) for v in lengths]
    if any(not 0.0 <= f <= 1.0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise ValueError(
            f"random_split: fractions must lie in [0, 1] and sum to 1, got {fractions} "
            f"(sum {sum(fractions)})"
        )
    counts = [int(math.floor(n * f)) for f in fractions]
    # Hand the items lost to flooring out one each, from the first split on (as PyTorch does).
    for i in range(n - sum(counts)):
        counts[i % len(counts)] += 1
    return counts


def random_split(
    dataset: Dataset, lengths: Sequence[Union[int, float]], generator: GeneratorLike = None
) -> list:
    """Split `dataset` into non-overlapping random `Subset`s.

    Args:
        dataset: the dataset to split.
        lengths: counts summing to `len(dataset)`, or fractions summing to 1; fractions are
            floored and the left-over items go one each to the first subsets, as in PyTorch.
        generator: numpy Generator, int seed, or None for fastnn's default generator.

    Example:
        >>> train, val = random_split(ds, [0.8, 0.2], generator=0)
    """
    counts = _split_lengths(len(dataset), lengths)
    gen = _resolve_generator(generator, "random_split")
    order = gen.permutation(len(dataset))
    bounds = np.cumsum([0] + counts)
    return [Subset(dataset, order[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]


def _stratified_val(labels: np.ndarray, n_val: int, gen: np.random.Generator) -> np.ndarray:
    """Indices of a validation set of n_val samples whose class mix follows `labels`."""
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    n = labels.shape[0]
    ideal = counts * n_val / n
    per_class = np.floor(ideal).astype(np.int64)
    # Largest remainders get the samples lost to flooring; ties go to the smaller class index.
    short = n_val - int(per_class.sum())
    by_remainder = np.argsort(-(ideal - per_class), kind="stable")
    per_class[by_remainder[:short]] += 1
    picked = []
    for c in range(classes.shape[0]):
        members = np.flatnonzero(inverse.reshape(-1) == c)
        picked.append(gen.permutation(members)[:per_class[c]])
    return np.concatenate(picked)


def train_val_split(
    *arrays: Any,
    val_fraction: float,
    shuffle: bool = True,
    seed: GeneratorLike = None,
    stratify: Any = None,
) -> Tuple[Tuple[np.ndarray, ...], Tuple[np.ndarray, ...]]:
    """Split arrays that share their first dimension into a training and a validation part.

    Args:
        *arrays: e.g. `x, y`.
        val_fraction: share of samples for validation, in (0, 1); the validation part has
            `ceil(val_fraction * n)` samples (as scikit-learn's train_test_split) and neither
            part may end up empty.
        shuffle: pick samples at random; if False the validation part is the last samples.
        seed: int seed or numpy Generator; None uses fastnn's default generator.
        stratify: labels (length n) whose class proportions both parts should keep; needs
            shuffle=True.

    Returns:
        `(train_arrays, val_arrays)`, two tuples with one array per input array.

    Example:
        >>> (x_train, y_train), (x_val, y_val) = train_val_split(x, y, val_fraction=0.1, seed=0)
    """
    data = _as_arrays(arrays, "train_val_split")
    n = data[0].shape[0]
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real):
        raise TypeError(
            f"train_val_split: val_fraction must be a float in (0, 1), "
            f"got {type(val_fraction).__name__}"
        )
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"train_val_split: val_fraction must be in (0, 1), got {val_fraction}")
    n_val = int(math.ceil(val_fraction * n))
    if n_val == 0 or n_val >= n:
        raise ValueError(
            f"train_val_split: val_fraction={val_fraction} of {n} samples leaves "
            f"{n - n_val} for training and {n_val} for validation; both need at least one"
        )
    if stratify is not None:
        if not shuffle:
            raise ValueError("train_val_split: stratify needs shuffle=True")
        labels = np.asarray(stratify)
        if labels.ndim != 1 or labels.shape[0] != n:
            raise ValueError(
                f"train_val_split: stratify must have shape ({n},) like the arrays' first "
                f"dimension, got {labels.shape}"
            )
    if not shuffle:
        train_idx, val_idx = np.arange(n - n_val), np.arange(n - n_val, n)
    else:
        gen = _resolve_generator(seed, "train_val_split")
        if stratify is None:
            order = gen.permutation(n)
            val_idx, train_idx = order[:n_val], order[n_val:]
        else:
            val_idx = _stratified_val(np.asarray(stratify), n_val, gen)
            in_val = np.zeros(n, dtype=bool)
            in_val[val_idx] = True
            val_idx = gen.permutation(val_idx)
            train_idx = gen.permutation(np.flatnonzero(~in_val))
    train = tuple(a[train_idx] for a in data)
    val = tuple(a[val_idx] for a in data)
    return train, val
