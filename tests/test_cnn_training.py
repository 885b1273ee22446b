"""Convolutional networks end to end: Sequential and custom modules, Trainer.fit, save/load,
agreement with torch over several optimizer steps, thread-count determinism, the MNIST example."""

import gzip
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn
import fastnn.functional as F
from fastnn import nn, optim
from fastnn.training import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bars(count: int, seed: int = 0):
    """8x8 single-channel images of a horizontal (0), vertical (1) or diagonal (2) bar."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    images = rng.normal(0, 0.3, (count, 1, 8, 8)).astype(np.float32)
    for i, (label, at) in enumerate(zip(labels, rng.integers(1, 7, count))):
        if label == 0:
            images[i, 0, at, :] += 1.0
        elif label == 1:
            images[i, 0, :, at] += 1.0
        else:
            images[i, 0][np.eye(8, k=int(at) - 3, dtype=bool)] += 1.0
    return images, labels.astype(np.int64)


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout2d(0.1),
        nn.Conv2d(8, 16, 3, padding="same"), nn.ReLU(),
        nn.GlobalAvgPool2d(),
        nn.Linear(16, 3),
    )


class CustomNet(nn.Module):
    """A user-written module mixing the layers and the functional forms."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding="same")
        self.norm = nn.BatchNorm2d(8)
        self.pool = nn.AvgPool2d(2)
        self.rows = nn.Conv1d(8, 8, 3, padding=1)
        self.head_norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        h = F.relu(self.norm(self.conv(x)))
        h = self.pool(h)                                   # (N, 8, 4, 4)
        h = F.max_pool2d(h, (1, 4)).reshape(h.shape[0], 8, 4)  # (N, 8, 4): max over each row
        h = F.relu(self.rows(h))
        h = self.head_norm(h.mean(dim=2))                  # (N, 8)
        return self.fc(h)


@pytest.mark.parametrize("make", [small_cnn, CustomNet], ids=["sequential", "custom_module"])
def test_fit_learns_and_reloads_identically(make, tmp_path):
    fastnn.manual_seed(0)
    x, y = bars(600)
    x_test, y_test = bars(200, seed=1)
    model = make()
    trainer = Trainer(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-2),
                      metrics=["accuracy"])
    history = trainer.fit(x, y, epochs=6, batch_size=32, validation_split=0.1, verbose=0)
    assert history["loss"][-1] < history["loss"][0]
    results = trainer.evaluate(x_test, y_test)
    assert results["accuracy"] >= 0.9, f"test accuracy {results['accuracy']:.3f}"

    path = tmp_path / "cnn.safetensors"
    fastnn.save(model, path)
    restored = make()
    restored.load_state_dict(fastnn.load(path))
    for name, value in model.state_dict().items():
        assert np.array_equal(restored.state_dict()[name], value), name
    outputs = trainer.predict(x_test)
    assert np.array_equal(Trainer(restored, nn.CrossEntropyLoss(), trainer.optimizer)
                          .predict(x_test), outputs)


def test_training_steps_match_torch():
    """Same weights and batches, float64: losses and parameters after 3 Adam steps agree."""
    torch = pytest.importorskip("torch")
    fastnn.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2),
        nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(6, 3),
    ).double()
    tn = torch.nn
    twin = tn.Sequential(
        tn.Conv2d(1, 4, 3, padding=1), tn.BatchNorm2d(4), tn.ReLU(), tn.MaxPool2d(2),
        tn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), tn.ReLU(), tn.AvgPool2d(2),
        tn.Flatten(), tn.Linear(6, 3),
    ).double()
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    ours = optim.Adam(model.parameters(), lr=1e-2)
    theirs = torch.optim.Adam(twin.parameters(), lr=1e-2)
    x, y = bars(24)
    for step in range(3):
        xb, yb = x[step * 8:(step + 1) * 8].astype(np.float64), y[step * 8:(step + 1) * 8]
        loss = nn.CrossEntropyLoss()(model(xb), yb)
        ours.zero_grad()
        loss.backward()
        ours.step()
        tloss = tn.CrossEntropyLoss()(twin(torch.from_numpy(xb)), torch.from_numpy(yb))
        theirs.zero_grad()
        tloss.backward()
        theirs.step()
        assert abs(loss.item() - tloss.item()) < 1e-10, f"loss at step {step}"
    for name, value in twin.state_dict().items():
        diff = np.max(np.abs(model.state_dict()[name] - value.numpy()))
        assert diff < 1e-9, f"{name} differs from torch by {diff:.3g} after 3 steps"


def test_training_is_bit_identical_for_1_and_2_threads():
    x, y = bars(128)
    states = []
    for threads in (1, 2):
        fastnn.set_num_threads(threads)
        fastnn.manual_seed(3)
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout2d(0.2),
            nn.Flatten(), nn.Linear(32 * 16, 3),
        )
        optimizer = optim.Adam(model.parameters(), lr=1e-3)
        for step in range(4):
            batch = slice(step * 32, (step + 1) * 32)
            loss = nn.CrossEntropyLoss()(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        states.append({k: np.array(v) for k, v in model.state_dict().items()})
    for name in states[0]:
        assert np.array_equal(states[0][name], states[1][name]), f"{name} differs"


def test_eval_mode_is_deterministic_and_uses_running_stats():
    fastnn.manual_seed(0)
    model = small_cnn()
    x, _ = bars(16)
    model(x)  # one training step of the batch statistics
    model.eval()
    first = model(x).data
    assert np.array_equal(model(x).data, first)
    single = model(x[:1]).data  # batch 1 works in eval mode
    np.testing.assert_allclose(single, first[:1], rtol=1e-5, atol=1e-6)


# --- the MNIST example on a tiny fake IDX directory -------------------------------------------
def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    with open(path, "wb") as f:
        f.write(gzip.compress(data) if compress else data)


def fake_mnist(directory, train: int = 96, test: int = 32) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("t10k", test)):
        labels = rng.integers(0, 10, count)
        images = rng.integers(0, 40, (count, 28, 28))
        for i, label in enumerate(labels):  # a bright square whose place tells the digit
            images[i, 2 * label:2 * label + 6, 4:10] = 255
        write_idx(os.path.join(directory, f"{split}-images-idx3-ubyte.gz"), images, True)
        write_idx(os.path.join(directory, f"{split}-labels-idx1-ubyte"), labels, False)


def run_example(*args):
    # The child imports fastnn exactly as this process does (installed, or PYTHONPATH in a
    # development tree).
    return subprocess.run([sys.executable, os.path.join(REPO, "examples", "mnist_cnn.py"), *args],
                          capture_output=True, text=True, timeout=300)


def test_mnist_example_runs_on_fake_idx_files(tmp_path):
    fake_mnist(str(tmp_path))
    proc = run_example("--data-dir", str(tmp_path), "--epochs", "1", "--verbose", "0",
                       "--save", str(tmp_path / "model.safetensors"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "96 training and 32 test images" in proc.stdout
    assert "test accuracy" in proc.stdout and "test macro F1" in proc.stdout
    assert "identical predictions: True" in proc.stdout


def test_mnist_example_trains_the_mlp_too(tmp_path):
    fake_mnist(str(tmp_path))
    proc = run_example("--data-dir", str(tmp_path), "--model", "mlp", "--epochs", "1",
                       "--verbose", "0", "--save", str(tmp_path / "mlp.safetensors"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "identical predictions: True" in proc.stdout


def test_mnist_example_explains_missing_files(tmp_path):
    proc = run_example("--data-dir", str(tmp_path / "nowhere"))
    assert proc.returncode != 0
    assert "MNIST files not found" in proc.stderr
    assert "download_mnist" in proc.stderr and "nowhere" in proc.stderr
