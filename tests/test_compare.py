"""bench/compare.py and bench/run_all.py end to end on tiny configurations (no timing checks)."""

import gzip
import importlib.util
import json
import os
import struct
import sys

import numpy as np
import pytest

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "bench")

pytest.importorskip("sklearn")  # the tasks' data comes from scikit-learn


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(BENCH,
                                                                               f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def compare():
    return _load("compare")


def _report(out):
    with open(os.path.join(out, "compare.json")) as f:
        return json.load(f)


def _check_entry(entry, kind):
    metric_keys = {"mse", "r2"} if kind == "regression" else {"accuracy", "macro_f1", "roc_auc"}
    assert set(entry["metrics"]) == metric_keys
    for key in ("train_seconds", "latency_seconds", "peak_mb", "train_ratio", "latency_ratio",
                "memory_ratio"):
        assert entry[key] > 0, key
    curves = entry["curves"]
    assert set(curves) == {"train_loss", "val_loss", "val_metric"}
    assert len({len(v) for v in curves.values()}) == 1 and len(curves["train_loss"]) >= 1
    assert all(np.isfinite(v).all() for v in curves.values())
    assert entry["repeatable"] is True


def test_fastnn_only_every_task_and_plots(compare, tmp_path, capsys):
    tasks = "digits_mlp,digits_cnn,breast_cancer,regression"
    assert compare.main(["--quick", "--threads", "1", "--frameworks", "fastnn",
                         "--tasks", tasks, "--out", str(tmp_path)]) == 0
    report = _report(tmp_path)
    assert report["frameworks"] == ["fastnn"]
    assert [t["task"] for t in report["tasks"]] == tasks.split(",")
    for task in report["tasks"]:
        assert list(task["frameworks"]) == ["fastnn"]
        _check_entry(task["frameworks"]["fastnn"], task["kind"])
        assert task["frameworks"]["fastnn"]["train_ratio"] == 1.0
        assert task["sizes"]["epochs"] == 2
    assert report["checks"] == []  # nothing to compare with
    # Curves per task; no speed chart, as there is no peer to compare with.
    assert report["images"] == [f"compare_{t}.png" for t in tasks.split(",")]
    for name in report["images"]:
        with open(tmp_path / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    markdown = (tmp_path / "compare.md").read_text()
    assert "| digits_cnn | fastnn |" in markdown
    assert "| digits_cnn | fastnn |" in capsys.readouterr().out


def test_with_peers_same_start_same_result(compare, tmp_path):
    pytest.importorskip("torch")
    assert compare.main(["--quick", "--threads", "1", "--tasks", "digits_mlp",
                         "--out", str(tmp_path), "--no-plots"]) == 0
    report = _report(tmp_path)
    frameworks = report["tasks"][0]["frameworks"]
    assert list(frameworks) == ["fastnn", "torch", "sklearn"]
    for entry in frameworks.values():
        _check_entry(entry, "multiclass")
    assert frameworks["torch"]["same_initial_weights"] is True
    assert frameworks["sklearn"]["same_initial_weights"] is False
    # Same weights, data order and settings: PyTorch predicts as fastnn does.
    assert frameworks["torch"]["agreement_with_fastnn"] >= 0.99
    (check,) = report["checks"]
    assert check["task"] == "digits_mlp" and check["ok"], check
    assert any("cannot start from fastnn's initial weights" in n for n in report["notes"])


def test_missing_peers_are_skipped_with_a_note(compare, monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name in ("torch", "sklearn") else real_find_spec(name, *args)

    monkeypatch.setattr(compare.importlib.util, "find_spec", find_spec)
    run, notes = compare.available_frameworks(["fastnn", "torch", "sklearn"])
    assert run == ["fastnn"]
    assert notes == ["torch is not installed: its rows are skipped",
                     "sklearn is not installed: its rows are skipped"]
    with pytest.raises(ValueError, match="unknown framework 'jax'"):
        compare.available_frameworks(["fastnn", "jax"])
    with pytest.raises(ValueError, match="fastnn must be among"):
        compare.available_frameworks(["sklearn"])


def test_missing_matplotlib_gives_a_note(compare, monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(compare.importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else
                        real_find_spec(name, *a))
    assert compare.plot_results([], str(tmp_path)) == (
        [], "matplotlib is not installed: no pictures")


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I",
                                                                    *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist_from_idx_files(compare, tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "mnist"
    data.mkdir()
    for split, n in (("train", 240), ("t10k", 60)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 40, (n, 28, 28))
        images[np.arange(n), labels, :] = 255  # a learnable pattern: the label's row is lit
        _write_idx(data / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(data / f"{split}-labels-idx1-ubyte.gz", labels)
    out = tmp_path / "out"
    assert compare.main(["--quick", "--threads", "1", "--frameworks", "fastnn",
                         "--mnist-dir", str(data), "--tasks", "mnist_mlp", "--out", str(out),
                         "--no-plots"]) == 0
    (task,) = _report(out)["tasks"]
    assert task["sizes"] == {"train": 220, "val": 20, "test": 60, "epochs": 1}
    _check_entry(task["frameworks"]["fastnn"], "multiclass")


def test_unknown_task_and_mnist_without_directory(compare, tmp_path):
    with pytest.raises(SystemExit):
        compare.main(["--tasks", "nope", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        compare.main(["--tasks", "mnist_mlp", "--out", str(tmp_path)])


def test_run_all_parses_tables_and_writes_results(tmp_path):
    run_all = _load("run_all")
    text = "- CPU: x\n\n| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n\nnote\n| c |\n|---|\n"
    assert run_all.parse_tables(text) == [{"header": ["a", "b"], "rows": [["1", "2"],
                                                                          ["3", "4"]]},
                                          {"header": ["c"], "rows": []}]
    assert run_all.machine_lines(text) == ["CPU: x"]
    assert run_all.main(["--quick", "--threads", "1", "--only", "compare",
                         "--out", str(tmp_path), "--compare-args",
                         "--frameworks fastnn --tasks breast_cancer --no-plots"]) == 0
    with open(tmp_path / "benchmarks.json") as f:
        report = json.load(f)
    result = report["benchmarks"]["compare"]
    assert result["exit_code"] == 0 and report["failed"] == []
    assert result["tables"][0]["header"][:2] == ["task", "framework"]
    assert result["tables"][0]["rows"][0][:2] == ["breast_cancer", "fastnn"]
    assert result["compare"]["tasks"][0]["task"] == "breast_cancer"
    assert "## compare" in (tmp_path / "benchmarks.md").read_text()
