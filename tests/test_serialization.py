import json
import os
import stat

import numpy as np
import pytest

import fastnn.random
from fastnn import serialization
from fastnn.data import ArrayDataset, DataLoader
from fastnn.serialization import (
    check_state_dict,
    load_checkpoint,
    load_file,
    load_metadata,
    save_checkpoint,
    save_file,
)

ALL_DTYPES = ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
              "float16", "float32", "float64", "complex64"]


def assert_same_array(a, b):
    assert isinstance(b, np.ndarray)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, a.shape, b.dtype, b.shape)
    assert a.tobytes() == b.tobytes()


def random_array(rng, dtype, shape):
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype == "complex64":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def test_save_load_round_trip_all_dtypes(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {f"t.{d}": random_array(rng, d, (3, 4)) for d in ALL_DTYPES}
    tensors["scalar"] = np.array(2.5, dtype=np.float32)
    tensors["empty"] = np.zeros((0, 5), dtype=np.float64)
    path = tmp_path / "w.safetensors"
    save_file(tensors, path, metadata={"note": "hello"})
    loaded = load_file(path)
    assert set(loaded) == set(tensors)
    for name, a in tensors.items():
        assert_same_array(a, loaded[name])
        assert loaded[name].flags.writeable
    assert load_metadata(path) == {"note": "hello"}
    assert load_metadata(tmp_path / "w.safetensors") == load_metadata(str(path))


def test_special_float_bits_survive(tmp_path):
    a = np.array([np.nan, -0.0, np.inf, -np.inf, 5e-324, np.finfo(np.float64).max])
    save_file({"a": a}, tmp_path / "f.safetensors")
    assert_same_array(a, load_file(tmp_path / "f.safetensors")["a"])


def test_non_contiguous_and_big_endian_arrays(tmp_path):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    big = np.arange(5, dtype=">i4")
    save_file({"t": base.T, "s": base[:, ::2], "big": big}, tmp_path / "a.safetensors")
    loaded = load_file(tmp_path / "a.safetensors")
    np.testing.assert_array_equal(loaded["t"], base.T)
    np.testing.assert_array_equal(loaded["s"], base[:, ::2])
    np.testing.assert_array_equal(loaded["big"], big)
    assert loaded["big"].dtype == np.int32


def test_torch_reads_our_files(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file as torch_load

    w = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)
    save_file({"fc.weight": w}, tmp_path / "m.safetensors")
    t = torch_load(str(tmp_path / "m.safetensors"))["fc.weight"]
    assert t.dtype == torch.float32
    np.testing.assert_array_equal(t.numpy(), w)


def test_save_file_rejects_bad_values(tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(TypeError, match="tensor 'a' must be a numpy array, got list"):
        save_file({"a": [1, 2]}, path)
    with pytest.raises(TypeError, match="tensor 'c' has dtype complex128"):
        save_file({"c": np.zeros(2, dtype=np.complex128)}, path)
    with pytest.raises(TypeError, match="tensor 'o' has dtype object"):
        save_file({"o": np.array([None])}, path)
    with pytest.raises(TypeError, match="tensor names must be str"):
        save_file({1: np.zeros(2)}, path)
    with pytest.raises(TypeError, match="metadata must be a dict of str -> str"):
        save_file({"a": np.zeros(2)}, path, metadata={"epoch": 3})
    assert not path.exists()


def test_failed_save_keeps_old_file(tmp_path):
    path = tmp_path / "w.safetensors"
    old = {"a": np.arange(4.0)}
    save_file(old, path)
    with pytest.raises(TypeError):
        save_file({"a": np.ones(4), "b": "not an array"}, path)
    assert_same_array(old["a"], load_file(path)["a"])
    assert os.listdir(tmp_path) == ["w.safetensors"]


def test_failure_mid_write_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    old = {"a": np.arange(4.0)}
    save_file(old, path)

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(serialization.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_file({"a": np.zeros(1000)}, path)
    monkeypatch.undo()
    assert_same_array(old["a"], load_file(path)["a"])
    assert os.listdir(tmp_path) == ["w.safetensors"]


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_file(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    with pytest.raises(ValueError, match="is not a valid safetensors file"):
        load_file(bad)
    save_file({"a": np.arange(10.0)}, tmp_path / "ok.safetensors")
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-8])
    with pytest.raises(ValueError, match="cut.safetensors"):
        load_file(tmp_path / "cut.safetensors")


def test_loading_never_unpickles(tmp_path):
    # A pickle-bearing file is just not a safetensors file.
    import pickle

    (tmp_path / "p.safetensors").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_file(tmp_path / "p.safetensors")


def test_check_state_dict_ok_and_report():
    expected = {"w": (3, 4), "b": (4,), "s": ()}
    loaded = {"w": np.zeros((3, 4)), "b": np.zeros(4), "s": np.array(1.0)}
    assert check_state_dict(expected, loaded) == ([], [], [])
    assert check_state_dict({"w": np.zeros((3, 4))}, {"w": np.ones((3, 4))}).missing_keys == []


def test_check_state_dict_lists_every_problem():
    expected = {"fc1.weight": (4, 3), "fc1.bias": (4,), "fc2.weight": (2, 4), "fc2.bias": (2,)}
    loaded = {"fc1.weight": np.zeros((3, 4)), "fc2.weight": np.zeros((2, 4)),
              "fc3.weight": np.zeros(1), "extra": np.zeros(1)}
    with pytest.raises(ValueError) as info:
        check_state_dict(expected, loaded)
    msg = str(info.value)
    assert "missing (2): fc1.bias, fc2.bias" in msg
    assert "unexpected (2): fc3.weight, extra" in msg
    assert "shape mismatch for fc1.weight: model (4, 3), loaded (3, 4)" in msg


def test_check_state_dict_non_strict():
    expected = {"a": (2,), "b": (3,)}
    result = check_state_dict(expected, {"a": np.zeros(2), "c": np.zeros(1)}, strict=False)
    assert result.missing_keys == ["b"] and result.unexpected_keys == ["c"]
    with pytest.raises(ValueError, match=r"shape mismatch for a: model \(2,\), loaded \(5,\)"):
        check_state_dict(expected, {"a": np.zeros(5)}, strict=False)


def adam_like_state(rng):
    return {
        "state": {
            0: {"step": 3, "exp_avg": rng.standard_normal((4, 3)).astype(np.float32),
                "exp_avg_sq": rng.random((4, 3)).astype(np.float32)},
            2: {"step": 3, "exp_avg": rng.standard_normal(4).astype(np.float32),
                "exp_avg_sq": rng.random(4).astype(np.float32)},
        },
        "param_groups": [
            {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
             "amsgrad": False, "name": "body", "params": [0, 1]},
            {"lr": 0.1 / 3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-4,
             "amsgrad": False, "name": None, "params": [2]},
        ],
    }


def assert_same_tree(a, b, path="root"):
    assert type(a) is type(b), (path, type(a), type(b))
    if isinstance(a, np.ndarray):
        assert_same_array(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_same_tree(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), path
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), path
    else:
        assert a == b, path


def test_checkpoint_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    model = {"fc1.weight": rng.standard_normal((4, 3)).astype(np.float32),
             "fc1.bias": np.zeros(4, np.float32),
             "bn.running_mean": rng.standard_normal(4),
             "bn.num_batches_tracked": np.array(7, dtype=np.int64)}
    generator = np.random.default_rng(2**70 + 5)
    generator.random(3)
    mt = np.random.Generator(np.random.MT19937(4))
    loader = DataLoader(ArrayDataset(np.arange(10)), batch_size=3, shuffle=True, generator=1)
    next(iter(loader))
    values = dict(
        model_state=model,
        optimizer_state=adam_like_state(rng),
        scheduler_state={"last_epoch": 4, "base_lrs": [0.1, 0.01], "gamma": 0.5},
        epoch=4,
        rng_state={"fastnn": fastnn.random.get_rng_state(),
                   "pcg": generator.bit_generator.state, "mt": mt.bit_generator.state,
                   "loader": loader.state_dict()},
        extra={"best": float("nan"), "worst": float("-inf"), "history": [0.5, 0.25],
               "flag": True, "count": np.int32(7), "lr": np.float64(0.1), 5: "int key",
               "__fastnn__": "a user key that looks like a tag", "big": -(2**100)},
    )
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, **values)
    loaded = load_checkpoint(path)
    assert list(loaded) == ["model_state", "optimizer_state", "scheduler_state", "epoch",
                            "rng_state", "extra"]
    for key, value in values.items():
        assert_same_tree(value, loaded[key], key)
    # The restored generator state reproduces the same draws.
    g2 = np.random.Generator(np.random.PCG64())
    g2.bit_generator.state = loaded["rng_state"]["pcg"]
    m2 = np.random.Generator(np.random.MT19937())
    m2.bit_generator.state = loaded["rng_state"]["mt"]
    np.testing.assert_array_equal(g2.random(5), generator.random(5))
    np.testing.assert_array_equal(m2.random(5), mt.random(5))


def test_checkpoint_tensor_names_and_torch_view(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, model_state={"fc.weight": np.ones((2, 2), np.float32)},
                    optimizer_state=adam_like_state(rng))
    names = set(load_file(path))
    assert {"model.fc.weight", "optimizer.state.0.exp_avg", "optimizer.state.0.exp_avg_sq",
            "optimizer.state.2.exp_avg"} <= names
    meta = load_metadata(path)
    assert meta["fastnn.format"] == "fastnn.checkpoint"
    json.loads(meta["fastnn.checkpoint"])  # standard JSON: no NaN literals


def test_checkpoint_defaults_are_none(tmp_path):
    save_checkpoint(tmp_path / "c.safetensors", model_state={})
    loaded = load_checkpoint(tmp_path / "c.safetensors")
    assert loaded == {"model_state": {}, "optimizer_state": None, "scheduler_state": None,
                      "epoch": None, "rng_state": None, "extra": None}


def test_checkpoint_bad_values(tmp_path):
    path = tmp_path / "c.safetensors"
    with pytest.raises(TypeError, match=r"extra\['s'\]: cannot store a set"):
        save_checkpoint(path, model_state={}, extra={"s": {1, 2}})
    with pytest.raises(TypeError, match="dict keys must be str or int"):
        save_checkpoint(path, model_state={}, extra={(1, 2): 3})
    with pytest.raises(TypeError, match="model_state must map str names to numpy arrays"):
        save_checkpoint(path, model_state={"w": [1.0]})
    with pytest.raises(TypeError, match="epoch must be an int or None"):
        save_checkpoint(path, model_state={}, epoch=1.5)
    with pytest.raises(TypeError, match="has dtype complex128"):
        save_checkpoint(path, model_state={}, extra=[np.zeros(1, np.complex128)])
    assert not path.exists()


def test_load_checkpoint_rejects_other_files(tmp_path):
    plain = tmp_path / "weights.safetensors"
    save_file({"w": np.zeros(2)}, plain)
    with pytest.raises(ValueError, match="not a fastnn checkpoint.*use .*load_file"):
        load_checkpoint(plain)
    newer = tmp_path / "newer.safetensors"
    save_file({}, newer, {"fastnn.format": "fastnn.checkpoint", "fastnn.format_version": "99",
                          "fastnn.checkpoint": "{}"})
    with pytest.raises(ValueError, match="version '99' is not supported"):
        load_checkpoint(newer)
    broken = tmp_path / "broken.safetensors"
    tree = {k: None for k, _ in serialization.CHECKPOINT_SECTIONS}
    tree["model_state"] = {"w": {"__fastnn__": "tensor", "name": "model.w"}}
    save_file({}, broken, {"fastnn.format": "fastnn.checkpoint", "fastnn.format_version": "1",
                           "fastnn.checkpoint": json.dumps(tree)})
    with pytest.raises(ValueError, match="refers to a tensor 'model.w' it does not hold"):
        load_checkpoint(broken)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_checkpoint(tmp_path / "junk.safetensors")


def test_loader_resumes_exactly_through_a_checkpoint(tmp_path):
    ds = ArrayDataset(np.arange(29))
    fastnn.random.manual_seed(11)
    reference = DataLoader(ds, batch_size=4, shuffle=True)
    expected = [b[0] for b in reference] + [b[0] for b in reference]

    fastnn.random.manual_seed(11)
    loader = DataLoader(ds, batch_size=4, shuffle=True)
    got = []
    for (xb,) in loader:
        got.append(xb)
        if len(got) == 3:
            save_checkpoint(tmp_path / "c.safetensors", model_state={}, epoch=0,
                            rng_state=fastnn.random.get_rng_state(),
                            extra={"loader": loader.state_dict()})
            break

    fastnn.random.manual_seed(0)
    ckpt = load_checkpoint(tmp_path / "c.safetensors")
    fastnn.random.set_rng_state(ckpt["rng_state"])
    resumed = DataLoader(ds, batch_size=4, shuffle=True)
    resumed.load_state_dict(ckpt["extra"]["loader"])
    got += [b[0] for b in resumed] + [b[0] for b in resumed]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def test_saved_files_get_ordinary_permissions(tmp_path):
    # The atomic write goes through a private temporary file; the result must not stay private.
    path = tmp_path / "weights.safetensors"
    previous = os.umask(0o022)
    try:
        save_file({"w": np.ones(2, np.float32)}, path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        os.chmod(path, 0o640)  # an existing file keeps the mode its owner gave it
        save_checkpoint(path, model_state={"w": np.zeros(2, np.float32)})
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    finally:
        os.umask(previous)
