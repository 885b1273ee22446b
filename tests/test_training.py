"""Trainer.fit / evaluate / predict, History, callbacks, determinism and resume."""

import csv

import numpy as np
import pytest

import fastnn
from fastnn import functional as F
from fastnn import nn, optim
from fastnn.callbacks import (CSVLogger, EarlyStopping, LearningRateScheduler, ModelCheckpoint,
                              TerminateOnNaN)
from fastnn.training import History, Trainer
from test_checkpoint import make_run  # the resumable run the checkpoint tests use


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


# --- binary classification and regression target shapes ---------------------------------------
def binary_data(rng, n=200):
    x = rng.standard_normal((n, 5)).astype(np.float32)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.float32)


def fit_one_column(loss, x, y, metrics, flatten_output=False):
    fastnn.manual_seed(7)
    layers = [nn.Linear(x.shape[1], 1)] + ([nn.Flatten(0)] if flatten_output else [])
    model = nn.Sequential(*layers)
    trainer = Trainer(model, loss, optim.SGD(model.parameters(), lr=0.2), metrics=metrics)
    history = trainer.fit(x, y, epochs=4, batch_size=32, validation_split=0.2, verbose=0)
    return trainer, history


def test_binary_fit_takes_flat_and_column_targets_with_metrics(rng):
    x, y = binary_data(rng)
    metrics = ["accuracy", "f1", "roc_auc"]
    flat, flat_history = fit_one_column(nn.BCEWithLogitsLoss(), x, y, metrics)
    column, column_history = fit_one_column(nn.BCEWithLogitsLoss(), x, y[:, None], metrics)
    # Same run either way: the (N,) targets were aligned to the (N, 1) logits, not broadcast.
    assert flat_history.history == column_history.history
    assert flat_history["val_accuracy"][-1] > 0.9
    for trainer in (flat, column):
        assert trainer.evaluate(x, y) == trainer.evaluate(x, y[:, None])
    integer_labels, _ = fit_one_column(F.binary_cross_entropy_with_logits, x, y.astype(np.int64),
                                       ["accuracy"])
    assert integer_labels.evaluate(x, y)["accuracy"] > 0.9


def test_regression_fit_aligns_flat_targets_and_flat_outputs(rng):
    x = rng.standard_normal((120, 5)).astype(np.float32)
    y = (x @ np.arange(1, 6, dtype=np.float32)).astype(np.float32)
    metrics = ["mse", "mae", "r2"]
    _, column = fit_one_column(nn.MSELoss(), x, y[:, None], metrics)
    _, flat_targets = fit_one_column(nn.MSELoss(), x, y, metrics)
    _, flat_outputs = fit_one_column(nn.MSELoss(), x, y[:, None], metrics, flatten_output=True)
    assert flat_targets.history == column.history == flat_outputs.history
    assert column["r2"][-1] > 0.9


def test_other_target_shape_mismatches_name_fit_the_loss_and_both_shapes(rng):
    x = rng.standard_normal((40, 5)).astype(np.float32)
    model = nn.Sequential(nn.Linear(5, 3))
    trainer = Trainer(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match=r"fit: MSELoss .*\(16, 3\).*\(16,\)"):
        trainer.fit(x, x[:, 0], epochs=1, batch_size=16, verbose=0)
    with pytest.raises(ValueError, match=r"fit: MSELoss .*\(16, 3\).*\(16, 1\)"):
        trainer.fit(x, x[:, :1], epochs=1, batch_size=16, verbose=0)
    with pytest.raises(ValueError, match=r"evaluate: MSELoss .*\(40, 3\).*\(40, 2\)"):
        trainer.evaluate(x, x[:, :2])
    binary = Trainer(model, nn.BCEWithLogitsLoss(), optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match=r"BCEWithLogitsLoss .*\(16, 3\).*\(16,\)"):
        binary.fit(x, (x[:, 0] > 0).astype(np.float32), epochs=1, batch_size=16, verbose=0)


# --- validation_split ----------------------------------------------------------------------------
class RecordingTrainer(Trainer):
    """Records the targets of every training batch and of every validation pass."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.trained_on, self.validated_on = [], []

    def train_step(self, inputs, targets):
        self.trained_on.append(np.asarray(targets).copy())
        return super().train_step(inputs, targets)

    def evaluate(self, x, y=None, batch_size=256):
        self.validated_on.append(np.asarray(y).copy())
        return super().evaluate(x, y, batch_size)


def test_validation_split_holds_out_the_same_last_rows_on_every_fit(rng):
    x = rng.standard_normal((96, 5)).astype(np.float32)
    row = np.arange(96, dtype=np.float32)[:, None]  # each target names its row
    model = nn.Sequential(nn.Linear(5, 1))
    trainer = RecordingTrainer(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=1e-4))
    for _ in range(2):
        trainer.fit(x, row, epochs=2, batch_size=16, validation_split=0.25, verbose=0)
    assert len(trainer.validated_on) == 4
    for validated in trainer.validated_on:
        np.testing.assert_array_equal(validated.reshape(-1), np.arange(72, 96))
    trained = np.concatenate(trainer.trained_on).reshape(-1)
    assert sorted(set(trained.tolist())) == list(range(72))


def fit_with_split(model, optimizer, scheduler, first, last):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((96, 6)).astype(np.float32), rng.integers(0, 3, 96)
    trainer = Trainer(model, nn.CrossEntropyLoss(), optimizer, metrics=["accuracy"])
    return trainer.fit(x, y, epochs=last, initial_epoch=first, batch_size=16,
                       validation_split=0.25, verbose=0,
                       callbacks=[LearningRateScheduler(scheduler)])


def test_resume_through_fit_with_validation_split_is_bit_exact(tmp_path):
    model, optimizer, scheduler = make_run()
    uninterrupted_history = fit_with_split(model, optimizer, scheduler, 0, 4)
    uninterrupted = {k: v.copy() for k, v in model.state_dict().items()}

    model, optimizer, scheduler = make_run()
    first_half = fit_with_split(model, optimizer, scheduler, 0, 2)
    path = tmp_path / "run.ckpt.safetensors"
    fastnn.save_checkpoint(path, model, optimizer, scheduler, epoch=2)
    fastnn.manual_seed(999)  # whatever happens between runs must not matter

    model, optimizer, scheduler = make_run(seed=5)
    info = fastnn.load_checkpoint(path, model, optimizer, scheduler)
    second_half = fit_with_split(model, optimizer, scheduler, info["epoch"], 4)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, uninterrupted[key], err_msg=key)
    for key in ("loss", "val_loss", "val_accuracy"):
        assert first_half[key] + second_half[key] == uninterrupted_history[key], key


# --- callbacks when a monitored figure is missing ------------------------------------------------
class Snapshot(fastnn.callbacks.Callback):
    def __init__(self):
        self.states = []

    def on_epoch_end(self, epoch, logs=None):
        self.states.append({k: v.copy() for k, v in self.trainer.model.state_dict().items()})


class PoisonWeights(fastnn.callbacks.Callback):
    """Sets every weight to NaN at the start of one epoch, as a diverging run would."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            model = self.trainer.model
            model.load_state_dict({k: np.full_like(v, np.nan)
                                   for k, v in model.state_dict().items()})


def assert_weights_equal(model, state):
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)


def test_nan_stop_skips_monitoring_callbacks_and_restores_the_best_weights(rng, tmp_path, caplog):
    x, y = blobs(rng, n=120)
    trainer = make_trainer()
    snapshot, stopper = Snapshot(), EarlyStopping("val_loss", patience=5)
    checkpoint = ModelCheckpoint(tmp_path / "best-{val_loss:.4f}.safetensors",
                                 save_best_only=True)
    plateau = optim.lr_scheduler.ReduceLROnPlateau(trainer.optimizer, patience=0)
    with caplog.at_level("WARNING", logger="fastnn"):
        history = trainer.fit(x, y, epochs=6, batch_size=16, validation_split=0.25, verbose=0,
                              callbacks=[snapshot, PoisonWeights(2), TerminateOnNaN(), stopper,
                                         checkpoint, LearningRateScheduler(plateau)])
    assert len(history.epoch) == 3 and len(history["val_loss"]) == 2  # no validation after NaN
    assert stopper.best_epoch in (0, 1)
    assert_weights_equal(trainer.model, snapshot.states[stopper.best_epoch])
    assert 1 <= len(checkpoint.saved) <= 2
    for owner in ("EarlyStopping", "ModelCheckpoint", "LearningRateScheduler"):
        assert any(owner in r.getMessage() and "'val_loss'" in r.getMessage()
                   for r in caplog.records), owner


def test_early_stopping_never_takes_non_finite_weights_as_best(rng):
    x, y = blobs(rng, n=120)
    calls = iter(range(100))

    def rising(y_true, outputs):  # looks better every epoch, even one that diverged
        return next(calls)

    trainer = make_trainer(metrics=[rising])
    snapshot, stopper = Snapshot(), EarlyStopping("rising", mode="max", patience=5)
    trainer.fit(x, y, epochs=6, batch_size=16, verbose=0,
                callbacks=[snapshot, PoisonWeights(2), TerminateOnNaN(), stopper])
    assert len(snapshot.states) == 3 and stopper.best_epoch == 1
    assert_weights_equal(trainer.model, snapshot.states[1])


def test_early_stopping_without_validation_warns_instead_of_raising(rng, caplog):
    x, y = blobs(rng, n=64)
    with caplog.at_level("WARNING", logger="fastnn"):
        history = make_trainer().fit(x, y, epochs=2, verbose=0, callbacks=[EarlyStopping()])
    assert len(history.epoch) == 2
    assert sum("EarlyStopping" in r.getMessage() for r in caplog.records) == 2


# --- per-batch learning-rate schedules -----------------------------------------------------------
class RecordLR(fastnn.callbacks.Callback):
    """The learning rate each optimiser step used (read before any scheduler steps)."""

    def __init__(self):
        self.used = []

    def on_batch_end(self, batch, logs=None):
        self.used.append(self.trainer.optimizer.param_groups[0]["lr"])


def test_one_cycle_lr_stepped_per_batch_from_fit_equals_stepping_by_hand(rng):
    x, y = blobs(rng, n=96)
    epochs, batch_size, batches = 3, 16, 6
    fastnn.manual_seed(1)
    trainer = make_trainer()
    scheduler = optim.lr_scheduler.OneCycleLR(trainer.optimizer, max_lr=0.2, epochs=epochs,
                                              steps_per_epoch=batches)
    recorder = RecordLR()
    history = trainer.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=False, verbose=0,
                          callbacks=[recorder, LearningRateScheduler(scheduler,
                                                                     interval="batch")])

    fastnn.manual_seed(1)
    model = make_trainer().model
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    by_hand = optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.2, epochs=epochs,
                                            steps_per_epoch=batches)
    loss_fn, used, epoch_end = nn.CrossEntropyLoss(), [], []
    for _ in range(epochs):
        for start in range(0, len(x), batch_size):
            used.append(optimizer.param_groups[0]["lr"])
            loss = loss_fn(model(x[start:start + batch_size]), y[start:start + batch_size])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            by_hand.step()
        epoch_end.append(optimizer.param_groups[0]["lr"])
    assert recorder.used == used and len(used) == epochs * batches
    assert history["lr"] == epoch_end
    assert used[0] == pytest.approx(0.2 / 25) and max(used) > 0.19 and used[-1] < 1e-3
    assert_weights_equal(trainer.model, model.state_dict())


def test_learning_rate_scheduler_interval_errors():
    optimizer = make_trainer().optimizer
    with pytest.raises(ValueError, match="interval"):
        LearningRateScheduler(optim.lr_scheduler.StepLR(optimizer, 1), interval="step")
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        LearningRateScheduler(optim.lr_scheduler.ReduceLROnPlateau(optimizer), interval="batch")
    with pytest.raises(ValueError, match="interval='batch'"):
        LearningRateScheduler(lambda epoch, lr: lr, interval="batch")
