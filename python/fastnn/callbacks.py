"""Callbacks for `Trainer.fit`: early stopping, checkpoints, LR scheduling, CSV logs, NaN stop.

A callback receives the trainer in `set_trainer` and then hook calls with a `logs` dict of the
epoch's figures ("loss", "accuracy", "val_loss", "val_accuracy", "lr", ...). It can stop
training by setting `trainer.stop_training = True`.
"""

from __future__ import annotations

import csv
import logging
import math
import os

import numpy as np

logger = logging.getLogger("fastnn")


class Callback:
    """Base class: override the hooks you need."""

    trainer = None

    def set_trainer(self, trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_batch_end(self, batch, logs=None):
        pass


def _better(mode: str, min_delta: float):
    if mode == "min":
        return lambda current, best: current < best - min_delta
    return lambda current, best: current > best + min_delta


def _resolve_mode(mode: str, monitor: str, owner: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    minimised = ("loss", "mse", "mae", "error")
    return "min" if any(word in monitor for word in minimised) else "max"


def _monitored(logs, monitor, owner):
    if monitor not in logs:
        raise KeyError(f"{owner}: monitored quantity {monitor!r} is not in the logs (available: "
                       f"{sorted(logs)}); pass validation data for 'val_' quantities")
    return float(logs[monitor])


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved for `patience` epochs.

    With restore_best_weights=True (the default) the model ends with the weights of its best
    epoch, not its last.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = True):
        if patience < 0:
            raise ValueError(f"EarlyStopping: patience must be >= 0, got {patience}")
        self.monitor = monitor
        self.patience = patience
        self.min_delta = abs(min_delta)
        self.mode = _resolve_mode(mode, monitor, "EarlyStopping")
        self.restore_best_weights = restore_best_weights
        self.best = None
        self.best_epoch = None
        self.stopped_epoch = None
        self._best_state = None
        self._wait = 0

    def on_train_begin(self, logs=None):
        self.best, self.best_epoch, self.stopped_epoch = None, None, None
        self._best_state, self._wait = None, 0

    def on_epoch_end(self, epoch, logs=None):
        current = _monitored(logs or {}, self.monitor, "EarlyStopping")
        if math.isnan(current):
            return
        if self.best is None or _better(self.mode, self.min_delta)(current, self.best):
            self.best, self.best_epoch, self._wait = current, epoch, 0
            if self.restore_best_weights:
                self._best_state = {k: v.copy() for k, v in self.trainer.model.state_dict().items()}
            return
        self._wait += 1
        if self._wait >= self.patience:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self._best_state is not None:
            self.trainer.model.load_state_dict(self._best_state)
            logger.info("EarlyStopping: restored the weights of epoch %d (%s = %.6g)",
                        self.best_epoch + 1, self.monitor, self.best)


class ModelCheckpoint(Callback):
    """Save the model's weights (safetensors) after each epoch, or only when it improves.

    `filepath` may contain format fields filled from the epoch number and logs, e.g.
    "model-{epoch:02d}-{val_loss:.3f}.safetensors". Writes are atomic.
    """

    def __init__(self, filepath: str, monitor: str = "val_loss", save_best_only: bool = False,
                 mode: str = "auto"):
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.save_best_only = save_best_only
        self.mode = _resolve_mode(mode, monitor, "ModelCheckpoint")
        self.best = None
        self.saved = []

    def on_epoch_end(self, epoch, logs=None):
        from .serialization import save_file

        logs = logs or {}
        if self.save_best_only:
            current = _monitored(logs, self.monitor, "ModelCheckpoint")
            if math.isnan(current) or (self.best is not None
                                       and not _better(self.mode, 0.0)(current, self.best)):
                return
            self.best = current
        path = self.filepath.format(epoch=epoch + 1, **logs)
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        save_file(dict(self.trainer.model.state_dict()), path)
        self.saved.append(path)


class LearningRateScheduler(Callback):
    """Step a fastnn.optim scheduler once per epoch, or set the LR from schedule(epoch, lr).

    A ReduceLROnPlateau scheduler is stepped with the monitored quantity.
    """

    def __init__(self, schedule, monitor: str = "val_loss"):
        self.schedule = schedule
        self.monitor = monitor

    def on_epoch_begin(self, epoch, logs=None):
        if callable(self.schedule) and not hasattr(self.schedule, "step"):
            optimizer = self.trainer.optimizer
            new_lr = float(self.schedule(epoch, optimizer.param_groups[0]["lr"]))
            for group in optimizer.param_groups:
                group["lr"] = new_lr

    def on_epoch_end(self, epoch, logs=None):
        if not hasattr(self.schedule, "step"):
            return
        if type(self.schedule).__name__ == "ReduceLROnPlateau":
            self.schedule.step(_monitored(logs or {}, self.monitor, "LearningRateScheduler"))
        else:
            self.schedule.step()


class CSVLogger(Callback):
    """Append one row of epoch figures per epoch to a CSV file."""

    def __init__(self, filename: str, separator: str = ",", append: bool = False):
        self.filename = os.fspath(filename)
        self.separator = separator
        self.append = append
        self._keys = None

    def on_train_begin(self, logs=None):
        self._keys = None
        if not self.append and os.path.exists(self.filename):
            os.remove(self.filename)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {"epoch": epoch + 1, **{k: logs[k] for k in sorted(logs)}}
        new_file = not os.path.exists(self.filename) or os.path.getsize(self.filename) == 0
        if self._keys is None:
            self._keys = list(row)
        with open(self.filename, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self._keys, delimiter=self.separator,
                                    extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)


class TerminateOnNaN(Callback):
    """Stop as soon as the training loss of a batch is NaN or infinite."""

    def __init__(self):
        self.stopped_batch = None

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            self.stopped_batch = batch
            self.trainer.stop_training = True
            logger.warning("TerminateOnNaN: loss became %s at batch %d; stopping", loss, batch)
