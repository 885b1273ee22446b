"""Trainer.fit / evaluate / predict, History, callbacks, determinism and resume."""

import csv

import numpy as np
import pytest

import fastnn
from fastnn import nn, optim
from fastnn.callbacks import (CSVLogger, EarlyStopping, LearningRateScheduler, ModelCheckpoint,
                              TerminateOnNaN)
from fastnn.training import History, Trainer


def blobs(rng, n=300, classes=3, features=5):
    centers = rng.standard_normal((classes, features)) * 3
    y = rng.integers(0, classes, n)
    x = (centers[y] + rng.standard_normal((n, features))).astype(np.float32)
    return x, y.astype(np.int64)


def make_trainer(features=5, classes=3, lr=0.05, metrics=("accuracy",)):
    model = nn.Sequential(nn.Linear(features, 16), nn.ReLU(), nn.Linear(16, classes))
    return Trainer(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=lr,
                                                           momentum=0.9), metrics=metrics)


def test_fit_learns_separable_data_and_records_history(rng):
    x, y = blobs(rng)
    trainer = make_trainer(metrics=["accuracy", "f1", "roc_auc"])
    history = trainer.fit(x, y, epochs=8, batch_size=32, validation_split=0.2, verbose=0)
    assert isinstance(history, History)
    assert len(history["loss"]) == 8 and len(history["val_accuracy"]) == 8
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_accuracy"][-1] > 0.9
    results = trainer.evaluate(x, y)
    assert set(results) == {"loss", "accuracy", "f1", "roc_auc"}
    assert results["accuracy"] > 0.9
    assert trainer.predict(x).shape == (len(x), 3)


def test_fit_with_validation_data_and_dataloader(rng):
    x, y = blobs(rng)
    loader = fastnn.data.DataLoader(fastnn.data.ArrayDataset(x, y), batch_size=50, shuffle=True)
    trainer = make_trainer()
    history = trainer.fit(loader, epochs=2, validation_data=(x[:50], y[:50]), verbose=0)
    assert "val_loss" in history and len(history.epoch) == 2


def test_progress_bar_output(rng, capsys):
    x, y = blobs(rng, n=64)
    make_trainer().fit(x, y, epochs=1, batch_size=16, validation_split=0.25, verbose=1)
    err = capsys.readouterr()
    text = err.err + err.out
    assert "epoch 1/1" in text and "val_accuracy" in text


def test_silent_fit_prints_nothing(rng, capsys):
    x, y = blobs(rng, n=64)
    make_trainer().fit(x, y, epochs=1, verbose=0)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_early_stopping_restores_best_weights(rng):
    x, y = blobs(rng)
    trainer = make_trainer(lr=0.5)
    stopper = EarlyStopping("val_loss", patience=2)
    snapshots = []

    class Snapshot(fastnn.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append({k: v.copy() for k, v in self.trainer.model.state_dict().items()})

    trainer.fit(x, y, epochs=40, validation_split=0.3, verbose=0,
                callbacks=[Snapshot(), stopper])
    assert stopper.best_epoch is not None
    best = snapshots[stopper.best_epoch]
    for key, value in trainer.model.state_dict().items():
        np.testing.assert_array_equal(value, best[key])


def test_model_checkpoint_csv_logger_and_lr_scheduler(rng, tmp_path):
    x, y = blobs(rng, n=120)
    trainer = make_trainer()
    scheduler = optim.lr_scheduler.StepLR(trainer.optimizer, step_size=1, gamma=0.5)
    checkpoint = ModelCheckpoint(tmp_path / "model-{epoch:02d}.safetensors", save_best_only=False)
    trainer.fit(x, y, epochs=3, validation_split=0.25, verbose=0,
                callbacks=[checkpoint, CSVLogger(tmp_path / "log.csv"),
                           LearningRateScheduler(scheduler)])
    assert [p.split("/")[-1] for p in checkpoint.saved] == [
        "model-01.safetensors", "model-02.safetensors", "model-03.safetensors"]
    restored = make_trainer().model
    restored.load_state_dict(fastnn.load(checkpoint.saved[-1]))
    np.testing.assert_array_equal(restored.state_dict()["2.weight"],
                                  trainer.model.state_dict()["2.weight"])
    with open(tmp_path / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["lr"]) for r in rows] == [0.05, 0.025, 0.0125]
    assert "val_accuracy" in rows[0]


def test_terminate_on_nan_stops_training(rng):
    x, y = blobs(rng, n=64)
    x[5, 0] = np.nan
    trainer = make_trainer()
    stopper = TerminateOnNaN()
    history = trainer.fit(x, y, epochs=5, batch_size=8, shuffle=False, verbose=0,
                          callbacks=[stopper])
    assert stopper.stopped_batch == 0
    assert len(history.epoch) == 1


def test_history_plot_writes_png(rng, tmp_path):
    pytest.importorskip("matplotlib")
    x, y = blobs(rng, n=64)
    history = make_trainer().fit(x, y, epochs=2, validation_split=0.25, verbose=0)
    path = history.plot(tmp_path / "history.png")
    assert (tmp_path / "history.png").stat().st_size > 1000 and path


def test_fit_argument_errors(rng):
    x, y = blobs(rng, n=20)
    trainer = make_trainer()
    with pytest.raises(ValueError, match="epochs"):
        trainer.fit(x, y, epochs=0)
    with pytest.raises(ValueError, match="validation_split"):
        trainer.fit(x, y, validation_split=1.5)
    with pytest.raises(ValueError, match="unknown metric"):
        make_trainer(metrics=["acc"])
    with pytest.raises(ValueError, match="targets"):
        trainer.fit(x)


def train_weights(threads, seed=3, epochs=2):
    fastnn.set_num_threads(threads)
    fastnn.manual_seed(seed)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 64)).astype(np.float32)
    y = rng.integers(0, 10, 256)
    model = nn.Sequential(nn.Linear(64, 300), nn.ReLU(), nn.Dropout(0.2), nn.Linear(300, 10))
    Trainer(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), 1e-3)).fit(
        x, y, epochs=epochs, batch_size=64, verbose=0)
    return {k: v.copy() for k, v in model.state_dict().items()}


def test_same_seed_gives_bit_identical_weights_on_one_and_two_threads():
    one, two = train_weights(1), train_weights(2)
    for key in one:
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)
    different_seed = train_weights(1, seed=4)
    assert not np.array_equal(one["0.weight"], different_seed["0.weight"])


def test_hand_written_loop_equals_trainer(rng):
    x, y = blobs(rng, n=64)
    fastnn.manual_seed(1)
    trainer = make_trainer()
    trainer.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    fastnn.manual_seed(1)
    model = make_trainer().model
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for start in range(0, 64, 16):
        loss = loss_fn(model(x[start:start + 16]), y[start:start + 16])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, trainer.model.state_dict()[key])
