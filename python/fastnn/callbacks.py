"""Callbacks for `Trainer.fit`: early stopping, checkpoints, LR scheduling, CSV logs, NaN stop.

A callback receives the trainer in `set_trainer` and then hook calls with a `logs` dict of the
epoch's figures ("loss", "accuracy", "val_loss", "val_accuracy", "lr", ...). It can stop
training by setting `trainer.stop_training = True`.

A figure can be missing from an epoch's logs: an epoch cut short by TerminateOnNaN is not
validated. Callbacks that monitor a figure then log a warning and skip that epoch, as Keras does.
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
    """The monitored figure of this epoch, or None (with a warning) when the logs lack it."""
    if monitor not in logs:
        logger.warning("%s: monitored quantity %r is not in this epoch's logs (available: %s); "
                       "skipping the epoch. 'val_' quantities need validation data, which an "
                       "epoch stopped early is not given", owner, monitor, sorted(logs))
        return None
    return float(logs[monitor])


def _all_finite(state) -> bool:
    return all(np.all(np.isfinite(value)) for value in state.values())


def _is_plateau_scheduler(schedule) -> bool:
    return type(schedule).__name__ == "ReduceLROnPlateau"


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved for `patience` epochs.

    With restore_best_weights=True (the default) the model ends with the weights of its best
    epoch, not its last, whatever stopped training (this callback, TerminateOnNaN, the last
    epoch). An epoch whose weights are not all finite never counts as the best, so a run that
    diverged ends with the last good weights. Epochs without the monitored figure are skipped.
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
        if current is None or math.isnan(current):
            return
        if self.best is None or _better(self.mode, self.min_delta)(current, self.best):
            state = self.trainer.model.state_dict()
            # A figure from a diverging epoch (e.g. accuracy over the batches before a NaN
            # stop) can look best; weights with NaN or inf are never worth restoring.
            if not _all_finite(state):
                logger.warning("EarlyStopping: epoch %d has %s = %.6g but weights that are not "
                               "all finite; not taking it as the best", epoch + 1, self.monitor,
                               current)
                return
            self.best, self.best_epoch, self._wait = current, epoch, 0
            if self.restore_best_weights:
                self._best_state = {k: v.copy() for k, v in state.items()}
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
    "model-{epoch:02d}-{val_loss:.3f}.safetensors". Writes are atomic. An epoch whose logs lack
    the monitored figure (with save_best_only) or a field of `filepath` is skipped with a warning.
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
        current = None
        if self.save_best_only:
            current = _monitored(logs, self.monitor, "ModelCheckpoint")
            if current is None or math.isnan(current) or (
                    self.best is not None and not _better(self.mode, 0.0)(current, self.best)):
                return
        try:
            path = self.filepath.format(epoch=epoch + 1, **logs)
        except KeyError as missing:
            logger.warning("ModelCheckpoint: filepath %r names %s, which is not in this epoch's "
                           "logs (available: %s); not saving epoch %d", self.filepath, missing,
                           sorted(logs), epoch + 1)
            return
        if self.save_best_only:
            self.best = current
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        save_file(dict(self.trainer.model.state_dict()), path)
        self.saved.append(path)


class LearningRateScheduler(Callback):
    """Step a fastnn.optim scheduler from fit(), or set the LR from schedule(epoch, lr).

    Args:
        schedule: a scheduler (stepped after each epoch, or after each batch), or a function
            schedule(epoch, lr) -> new lr applied at the start of each epoch.
        monitor: the figure a ReduceLROnPlateau scheduler is stepped with, once per epoch; an
            epoch without it (no validation, or cut short) is skipped with a warning.
        interval: "epoch" (default) or "batch": step the scheduler after every optimiser step,
            as per-batch schedules such as OneCycleLR expect. Only for schedulers whose step()
            takes no figure.

    A per-batch schedule needs the number of batches of an epoch: ceil(n / batch_size), where n
    counts the training samples only, n = N - ceil(validation_split * N) with validation_split.

    Example:
        >>> sched = OneCycleLR(opt, max_lr=0.1, epochs=10, steps_per_epoch=math.ceil(n / 32))
        >>> trainer.fit(x, y, epochs=10, batch_size=32,
        ...             callbacks=[LearningRateScheduler(sched, interval="batch")])
    """

    def __init__(self, schedule, monitor: str = "val_loss", interval: str = "epoch"):
        if interval not in ("epoch", "batch"):
            raise ValueError(f"LearningRateScheduler: interval must be 'epoch' or 'batch', got "
                             f"{interval!r}")
        if interval == "batch" and (not hasattr(schedule, "step")
                                    or _is_plateau_scheduler(schedule)):
            raise ValueError(f"LearningRateScheduler: interval='batch' needs a scheduler stepped "
                             f"without a figure (e.g. OneCycleLR), got "
                             f"{type(schedule).__name__}")
        self.schedule = schedule
        self.monitor = monitor
        self.interval = interval

    def on_epoch_begin(self, epoch, logs=None):
        if callable(self.schedule) and not hasattr(self.schedule, "step"):
            optimizer = self.trainer.optimizer
            new_lr = float(self.schedule(epoch, optimizer.param_groups[0]["lr"]))
            for group in optimizer.param_groups:
                group["lr"] = new_lr

    def on_batch_end(self, batch, logs=None):
        if self.interval == "batch":
            self.schedule.step()

    def on_epoch_end(self, epoch, logs=None):
        if self.interval != "epoch" or not hasattr(self.schedule, "step"):
            return
        if _is_plateau_scheduler(self.schedule):
            current = _monitored(logs or {}, self.monitor, "LearningRateScheduler")
            if current is not None:
                self.schedule.step(current)
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
