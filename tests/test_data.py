import numpy as np
import pytest

import fastnn.random
from fastnn.data import (
    ArrayDataset,
    DataLoader,
    Dataset,
    Subset,
    random_split,
    train_val_split,
)


class ListDataset:
    """A generic dataset (not an ArrayDataset): items are built one at a time."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return np.full((2, 3), i, dtype=np.float32), i


def collect(loader):
    return [tuple(np.array(f) for f in batch) for batch in loader]


def test_array_dataset_indexing():
    x = np.arange(20).reshape(10, 2)
    y = np.arange(10) * 10
    ds = ArrayDataset(x, y)
    assert len(ds) == 10
    xi, yi = ds[3]
    assert xi.tolist() == [6, 7] and yi == 30
    xb, yb = ds[np.array([4, 0, 9])]
    assert xb.shape == (3, 2) and yb.tolist() == [40, 0, 90]
    xs, ys = ds[2:4]
    assert ys.tolist() == [20, 30]
    assert isinstance(ds, Dataset)
    assert "ArrayDataset" in repr(ds)


def test_array_dataset_does_not_copy():
    x = np.zeros((4, 2))
    assert ArrayDataset(x).arrays[0] is x


def test_array_dataset_errors():
    with pytest.raises(ValueError, match=r"same first dimension.*\(3, 2\), \(4,\)"):
        ArrayDataset(np.zeros((3, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="at least one array"):
        ArrayDataset()
    with pytest.raises(ValueError, match="scalar"):
        ArrayDataset(np.float32(1.0))


@pytest.mark.parametrize("n, batch_size, drop_last, expected", [
    (10, 3, False, 4), (10, 3, True, 3), (9, 3, False, 3), (9, 3, True, 3),
    (2, 5, False, 1), (2, 5, True, 0), (0, 4, False, 0),
])
def test_loader_len_matches_batches(n, batch_size, drop_last, expected):
    loader = DataLoader(ArrayDataset(np.arange(n)), batch_size=batch_size, drop_last=drop_last)
    batches = collect(loader)
    assert len(loader) == expected == len(batches)
    sizes = [b[0].shape[0] for b in batches]
    assert sum(sizes) == (n // batch_size * batch_size if drop_last else n)


def test_loader_in_order_without_shuffle():
    x = np.arange(7) * 2.0
    loader = DataLoader(ArrayDataset(x, np.arange(7)), batch_size=3)
    batches = collect(loader)
    assert [b[1].tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    assert all(isinstance(b, tuple) and len(b) == 2 for b in batches)


def test_loader_gathers_array_batches_with_one_index_per_array(monkeypatch):
    calls = []
    original = ArrayDataset.__getitem__

    def counting(self, index):
        calls.append(np.shape(index))
        return original(self, index)

    monkeypatch.setattr(ArrayDataset, "__getitem__", counting)
    loader = DataLoader(ArrayDataset(np.arange(100), np.arange(100)), batch_size=25,
                        shuffle=True, generator=0)
    assert len(collect(loader)) == 4
    assert calls == [(25,)] * 4


def test_loader_stacks_generic_dataset_items():
    loader = DataLoader(ListDataset(5), batch_size=2)
    batches = collect(loader)
    assert [b[0].shape for b in batches] == [(2, 2, 3), (2, 2, 3), (1, 2, 3)]
    assert batches[0][0].dtype == np.float32
    assert batches[1][1].tolist() == [2, 3]


def test_loader_generic_dataset_bad_items():
    class NotTuples(ListDataset):
        def __getitem__(self, i):
            return np.zeros(3)

    with pytest.raises(TypeError, match=r"dataset\[0\] returned ndarray; items must be tuples"):
        collect(DataLoader(NotTuples(3), batch_size=2))

    class Ragged(ListDataset):
        def __getitem__(self, i):
            return (np.zeros(i + 1),)

    with pytest.raises(ValueError, match="field 0 has different shapes"):
        collect(DataLoader(Ragged(3), batch_size=2))


def test_shuffle_is_seeded_and_repeatable():
    ds = ArrayDataset(np.arange(50))
    a = collect(DataLoader(ds, batch_size=8, shuffle=True, generator=123))
    b = collect(DataLoader(ds, batch_size=8, shuffle=True, generator=123))
    assert all((p[0] == q[0]).all() for p, q in zip(a, b))
    order = np.concatenate([p[0] for p in a])
    assert sorted(order.tolist()) == list(range(50)) and order.tolist() != list(range(50))


def test_shuffle_differs_between_epochs():
    loader = DataLoader(ArrayDataset(np.arange(50)), batch_size=50, shuffle=True, generator=1)
    first, second = collect(loader)[0][0], collect(loader)[0][0]
    assert first.tolist() != second.tolist()


def test_shuffle_uses_default_generator_and_manual_seed():
    ds = ArrayDataset(np.arange(40))
    fastnn.random.manual_seed(7)
    a = collect(DataLoader(ds, batch_size=40, shuffle=True))[0][0]
    fastnn.random.manual_seed(7)
    b = collect(DataLoader(ds, batch_size=40, shuffle=True))[0][0]
    np.testing.assert_array_equal(a, b)


def test_resume_mid_epoch_with_own_generator():
    ds = ArrayDataset(np.arange(23))
    reference = DataLoader(ds, batch_size=4, shuffle=True, generator=5)
    expected = collect(reference) + collect(reference)

    loader = DataLoader(ds, batch_size=4, shuffle=True, generator=5)
    got = []
    for batch in loader:
        got.append(batch)
        if len(got) == 2:
            state = loader.state_dict()
            break
    resumed = DataLoader(ds, batch_size=4, shuffle=True, generator=999)
    resumed.load_state_dict(state)
    got += collect(resumed) + collect(resumed)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g[0], e[0])


def test_resume_mid_epoch_with_default_generator():
    ds = ArrayDataset(np.arange(17))
    fastnn.random.manual_seed(3)
    reference = DataLoader(ds, batch_size=5, shuffle=True)
    expected = collect(reference) + collect(reference)

    fastnn.random.manual_seed(3)
    loader = DataLoader(ds, batch_size=5, shuffle=True)
    it = iter(loader)
    got = [next(it)]
    state, rng = loader.state_dict(), fastnn.random.get_rng_state()
    assert state["generator_state"] is None and state["batches_done"] == 1

    fastnn.random.manual_seed(12345)  # a fresh process would start elsewhere
    resumed = DataLoader(ds, batch_size=5, shuffle=True)
    fastnn.random.set_rng_state(rng)
    resumed.load_state_dict(state)
    got += collect(resumed) + collect(resumed)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g[0], e[0])
    assert len(got) == len(expected)


def test_state_after_last_batch_resumes_with_new_epoch():
    ds = ArrayDataset(np.arange(6))
    loader = DataLoader(ds, batch_size=3, shuffle=True, generator=0)
    for _ in loader:
        state = loader.state_dict()
    assert state["in_epoch"] is False
    expected = collect(loader)
    fresh = DataLoader(ds, batch_size=3, shuffle=True, generator=0)
    collect(fresh)
    fresh.load_state_dict(state)
    for g, e in zip(collect(fresh), expected):
        np.testing.assert_array_equal(g[0], e[0])


def test_new_iter_without_resume_starts_a_new_epoch():
    loader = DataLoader(ArrayDataset(np.arange(6)), batch_size=2)
    next(iter(loader))  # peeking must not make the next loop start half-way
    assert len(collect(loader)) == 3


def test_loader_state_is_plain_data_without_shuffle():
    loader = DataLoader(ArrayDataset(np.arange(6)), batch_size=2)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    assert state == {"in_epoch": True, "batches_done": 1, "epoch_order_state": None,
                     "generator_state": None}
    other = DataLoader(ArrayDataset(np.arange(6)), batch_size=2)
    other.load_state_dict(state)
    assert [b[0].tolist() for b in collect(other)] == [[2, 3], [4, 5]]


def test_loader_bad_arguments():
    ds = ArrayDataset(np.arange(4))
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        DataLoader(ds, batch_size=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        DataLoader(ds, batch_size=2.0)
    with pytest.raises(TypeError, match="shuffle must be a bool"):
        DataLoader(ds, shuffle="yes")
    with pytest.raises(TypeError, match="generator must be a numpy Generator"):
        DataLoader(ds, generator="seed")
    with pytest.raises(TypeError, match="dataset must have __len__ and __getitem__"):
        DataLoader(42)


def test_loader_bad_state():
    loader = DataLoader(ArrayDataset(np.arange(4)), batch_size=2, shuffle=True)
    with pytest.raises(ValueError, match="expected keys"):
        loader.load_state_dict({"batches_done": 1})
    own = DataLoader(ArrayDataset(np.arange(4)), batch_size=2, shuffle=True, generator=0)
    with pytest.raises(ValueError, match="uses fastnn's default generator"):
        loader.load_state_dict(own.state_dict())
    it = iter(own)
    next(it)
    bad = dict(own.state_dict(), generator_state=None)
    bad["epoch_order_state"] = {"bit_generator": "NoSuchBitGen"}
    with pytest.raises(ValueError, match="unknown bit generator 'NoSuchBitGen'"):
        loader.load_state_dict(bad)
    state = loader.state_dict()
    state["batches_done"] = 9
    with pytest.raises(ValueError, match="batches_done=9 is outside 0..2"):
        loader.load_state_dict(state)


@pytest.mark.parametrize("lengths, expected", [
    ([7, 3], [7, 3]), ([0.7, 0.3], [7, 3]), ([0.5, 0.25, 0.25], [6, 2, 2]),
    ([1 / 3] * 3, [4, 3, 3]), ([1.0, 0.0], [10, 0]),
])
def test_random_split_lengths(lengths, expected):
    parts = random_split(ArrayDataset(np.arange(10)), lengths, generator=0)
    assert [len(p) for p in parts] == expected
    items = np.concatenate([p[np.arange(len(p))][0] for p in parts])
    assert sorted(items.tolist()) == list(range(10))


def test_random_split_matches_torch_counts():
    torch = pytest.importorskip("torch")
    for n, fracs in [(10, [0.33, 0.33, 0.34]), (7, [0.5, 0.5]), (101, [0.1, 0.2, 0.7])]:
        ours = [len(p) for p in random_split(ArrayDataset(np.arange(n)), fracs, generator=0)]
        theirs = [len(p) for p in torch.utils.data.random_split(range(n), fracs)]
        assert ours == theirs, (n, fracs)


def test_random_split_subsets_load_in_batches():
    x = np.arange(30).reshape(15, 2)
    train, val = random_split(ArrayDataset(x, np.arange(15)), [10, 5], generator=3)
    assert isinstance(train, Subset)
    xb, yb = next(iter(DataLoader(val, batch_size=5)))
    np.testing.assert_array_equal(xb, x[yb])
    xi, yi = val[0]
    np.testing.assert_array_equal(xi, x[yi])
    seen = np.concatenate([b[1] for b in DataLoader(train, batch_size=4)])
    assert len(set(seen.tolist()) | set(yb.tolist())) == 15


def test_random_split_of_generic_dataset():
    a, b = random_split(ListDataset(6), [4, 2], generator=0)
    xb, yb = next(iter(DataLoader(a, batch_size=4)))
    assert xb.shape == (4, 2, 3) and (xb[:, 0, 0] == yb).all()


def test_random_split_errors():
    ds = ArrayDataset(np.arange(10))
    with pytest.raises(ValueError, match=r"sum to 9, not to the dataset length 10"):
        random_split(ds, [5, 4])
    with pytest.raises(ValueError, match="fractions must lie in"):
        random_split(ds, [0.5, 0.6])
    with pytest.raises(ValueError, match="non-negative"):
        random_split(ds, [11, -1])
    with pytest.raises(ValueError, match="non-empty sequence"):
        random_split(ds, [])


def test_train_val_split_shapes_and_disjoint():
    x = np.arange(40).reshape(20, 2)
    y = np.arange(20)
    (xt, yt), (xv, yv) = train_val_split(x, y, val_fraction=0.25, seed=0)
    assert xt.shape == (15, 2) and xv.shape == (5, 2)
    np.testing.assert_array_equal(xt[:, 0] // 2, yt)
    np.testing.assert_array_equal(xv[:, 0] // 2, yv)
    assert sorted(yt.tolist() + yv.tolist()) == list(range(20))
    (_, yt2), (_, yv2) = train_val_split(x, y, val_fraction=0.25, seed=0)
    np.testing.assert_array_equal(yv, yv2)


def test_train_val_split_rounds_val_up_like_sklearn():
    (t,), (v,) = train_val_split(np.arange(10), val_fraction=0.15, seed=0)
    assert (len(t), len(v)) == (8, 2)


def test_train_val_split_without_shuffle_takes_the_tail():
    (t,), (v,) = train_val_split(np.arange(10), val_fraction=0.3, shuffle=False)
    assert t.tolist() == list(range(7)) and v.tolist() == [7, 8, 9]


def test_train_val_split_stratified_keeps_proportions():
    y = np.array([0] * 60 + [1] * 30 + [2] * 10)
    x = np.arange(100)
    (xt, yt), (xv, yv) = train_val_split(x, y, val_fraction=0.2, seed=1, stratify=y)
    assert np.bincount(yv).tolist() == [12, 6, 2]
    assert np.bincount(yt).tolist() == [48, 24, 8]
    np.testing.assert_array_equal(y[xv], yv)
    assert len(set(xt.tolist()) & set(xv.tolist())) == 0


def test_train_val_split_stratified_rounding_hits_exact_size():
    y = np.array([0] * 7 + [1] * 7 + [2] * 7)
    (_, _), (_, yv) = train_val_split(np.arange(21), y, val_fraction=0.5, seed=0, stratify=y)
    assert len(yv) == 11 and sorted(np.bincount(yv).tolist()) == [3, 4, 4]


def test_train_val_split_errors():
    x = np.arange(10)
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\), got 1.5"):
        train_val_split(x, val_fraction=1.5)
    with pytest.raises(TypeError, match="val_fraction must be a float"):
        train_val_split(x, val_fraction="0.2")
    with pytest.raises(ValueError, match="leaves 0 for training"):
        train_val_split(np.arange(2), val_fraction=0.9)
    with pytest.raises(ValueError, match="same first dimension"):
        train_val_split(x, np.arange(9), val_fraction=0.2)
    with pytest.raises(ValueError, match="stratify needs shuffle=True"):
        train_val_split(x, val_fraction=0.2, shuffle=False, stratify=x % 2)
    with pytest.raises(ValueError, match=r"stratify must have shape \(10,\)"):
        train_val_split(x, val_fraction=0.2, stratify=np.zeros(3))


def test_dataset_protocol_can_be_subclassed():
    class Squares(Dataset):
        def __init__(self, n):
            self.n = n

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            return (np.float64(i * i),)

    (batch,) = next(iter(DataLoader(Squares(4), batch_size=4)))
    assert batch.tolist() == [0.0, 1.0, 4.0, 9.0]
    assert not isinstance(42, Dataset)


def test_numpy_only_modules_do_not_load_the_extension():
    import os
    import subprocess
    import sys

    import fastnn.data

    package_dir = os.path.dirname(fastnn.data.__file__)
    # Register the package without running its __init__ (which loads fastnn._core).
    code = (
        "import sys, types\n"
        f"pkg = types.ModuleType('fastnn'); pkg.__path__ = [{package_dir!r}]\n"
        "sys.modules['fastnn'] = pkg\n"
        "import fastnn.data, fastnn.datasets, fastnn.metrics, fastnn.serialization\n"
        "assert 'fastnn._core' not in sys.modules, 'fastnn._core was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
