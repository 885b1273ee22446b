"""The example scripts run end to end (they are what a new user starts from)."""

import os
import re
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def run_example(name, *args, timeout=300):
    pytest.importorskip("sklearn")
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args],
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_digits_example_reaches_95_percent_and_reloads_identically(tmp_path):
    out = run_example("digits.py", "--verbose", "0", "--save", str(tmp_path / "m.safetensors"))
    accuracy = float(re.search(r"test accuracy : ([0-9.]+)", out).group(1))
    assert accuracy >= 0.95, out
    assert "test ROC-AUC" in out and "confusion matrix" in out
    assert "identical predictions: True" in out


def test_regression_example_beats_the_mean():
    out = run_example("regression.py", "--epochs", "60")
    r2 = float(re.search(r"fastnn MLP\s+[0-9.]+\s+[0-9.]+\s+(-?[0-9.]+)", out).group(1))
    assert r2 > 0.2, out


def test_binary_classification_example():
    out = run_example("binary_classification.py", "--verbose", "0")
    assert float(re.search(r"test accuracy: ([0-9.]+)", out).group(1)) > 0.9, out
