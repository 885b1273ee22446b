"""save/load of weights and resuming training from a full checkpoint."""

import numpy as np
import pytest

import fastnn
from fastnn import nn, optim
from fastnn.training import Trainer


def make_run(seed=11):
    fastnn.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 20), nn.ReLU(), nn.Dropout(0.3), nn.Linear(20, 3))
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    return model, optimizer, scheduler


def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((96, 6)).astype(np.float32), rng.integers(0, 3, 96)


def train_epochs(model, optimizer, scheduler, first, last):
    x, y = data()
    trainer = Trainer(model, nn.CrossEntropyLoss(), optimizer)
    for epoch in range(first, last):
        trainer.fit(x, y, epochs=epoch + 1, initial_epoch=epoch, batch_size=16, verbose=0)
        scheduler.step()


def test_resume_from_checkpoint_equals_uninterrupted_training_bit_for_bit(tmp_path):
    model, optimizer, scheduler = make_run()
    train_epochs(model, optimizer, scheduler, 0, 4)
    uninterrupted = {k: v.copy() for k, v in model.state_dict().items()}

    model, optimizer, scheduler = make_run()
    train_epochs(model, optimizer, scheduler, 0, 2)
    path = tmp_path / "run.ckpt.safetensors"
    fastnn.save_checkpoint(path, model, optimizer, scheduler, epoch=2, extra={"note": "half"})
    fastnn.manual_seed(999)  # whatever happens between runs must not matter

    model, optimizer, scheduler = make_run(seed=5)  # different initial weights
    info = fastnn.load_checkpoint(path, model, optimizer, scheduler)
    assert info == {"epoch": 2, "extra": {"note": "half"}}
    train_epochs(model, optimizer, scheduler, info["epoch"], 4)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, uninterrupted[key], err_msg=key)


def test_save_and_load_weights_round_trip(tmp_path):
    model, _, _ = make_run()
    path = tmp_path / "weights.safetensors"
    fastnn.save(model, path)
    other, _, _ = make_run(seed=3)
    other.load_state_dict(fastnn.load(path))
    x, _ = data()
    model.eval()
    other.eval()
    np.testing.assert_array_equal(model(x).data, other(x).data)


def test_weights_file_is_readable_by_torch(tmp_path):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    model, _, _ = make_run()
    path = tmp_path / "weights.safetensors"
    fastnn.save(model, path)
    reference = torch.nn.Sequential(torch.nn.Linear(6, 20), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                    torch.nn.Linear(20, 3))
    reference.load_state_dict(safetensors_torch.load_file(str(path)))
    x, _ = data()
    model.eval()
    reference.eval()
    np.testing.assert_allclose(model(x).data, reference(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-6)


def test_loading_a_mismatched_file_lists_the_differences(tmp_path):
    model, _, _ = make_run()
    path = tmp_path / "weights.safetensors"
    fastnn.save({"0.weight": np.zeros((5, 6), np.float32), "surprise": np.zeros(2)}, path)
    with pytest.raises(ValueError) as error:
        model.load_state_dict(fastnn.load(path))
    message = str(error.value)
    assert "0.weight" in message and "surprise" in message and "3.bias" in message


def test_failed_save_keeps_the_old_file(tmp_path):
    model, _, _ = make_run()
    path = tmp_path / "weights.safetensors"
    fastnn.save(model, path)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        fastnn.save({"ok": np.zeros(2), "bad": object()}, path)
    assert path.read_bytes() == before


def test_load_checkpoint_errors(tmp_path):
    model, optimizer, _ = make_run()
    path = tmp_path / "weights-only.safetensors"
    fastnn.save(model, path)
    with pytest.raises(ValueError):
        fastnn.load_checkpoint(path, model, optimizer)
    fastnn.save_checkpoint(tmp_path / "no-opt.safetensors", model)
    with pytest.raises(ValueError, match="no optimizer state"):
        fastnn.load_checkpoint(tmp_path / "no-opt.safetensors", model, optimizer)
