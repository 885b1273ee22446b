"""A Keras-style training loop: `Trainer.fit`, `evaluate`, `predict`, and `History`.

The loop is ordinary PyTorch-style code (forward, loss, zero_grad, backward, step) around a
DataLoader, with a progress bar, per-epoch metrics, validation and callbacks. A hand-written
loop over the same pieces works equally well; this one only saves typing.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from . import functional as F
from . import metrics as metric_fns
from . import nn
from .autograd import no_grad
from .callbacks import Callback, TerminateOnNaN
from .data import ArrayDataset, DataLoader, train_val_split
from .tensor import Tensor


# --- metrics on model outputs -----------------------------------------------------------------
def _softmax(scores):
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _is_binary_output(outputs):
    return outputs.ndim == 1 or (outputs.ndim == 2 and outputs.shape[1] == 1)


def predicted_labels(outputs: np.ndarray) -> np.ndarray:
    """Class labels from model outputs: argmax of (N, C) scores, or logit > 0 for one column."""
    if _is_binary_output(outputs):
        return (outputs.reshape(-1) > 0).astype(np.int64)
    return outputs.argmax(axis=1)


def predicted_probabilities(outputs: np.ndarray) -> np.ndarray:
    """Probabilities from logits: sigmoid for one column, softmax across (N, C) columns."""
    if _is_binary_output(outputs):
        return 1.0 / (1.0 + np.exp(-outputs.reshape(-1).astype(np.float64)))
    return _softmax(outputs.astype(np.float64))


def _roc_auc(y, out):
    probabilities = predicted_probabilities(out)
    if probabilities.ndim == 1:
        return metric_fns.roc_auc_score(y, probabilities)
    return metric_fns.roc_auc_score(y, probabilities, average="macro")


def _f1(y, out):
    average = "binary" if _is_binary_output(out) else "macro"
    return metric_fns.f1_score(y, predicted_labels(out), average=average)


def _precision(y, out):
    average = "binary" if _is_binary_output(out) else "macro"
    return metric_fns.precision_score(y, predicted_labels(out), average=average)


def _recall(y, out):
    average = "binary" if _is_binary_output(out) else "macro"
    return metric_fns.recall_score(y, predicted_labels(out), average=average)


# Each takes (targets, raw model outputs) as numpy arrays. Classification metrics read logits.
NAMED_METRICS = {
    "accuracy": lambda y, out: metric_fns.accuracy_score(y, predicted_labels(out)),
    "f1": _f1,
    "precision": _precision,
    "recall": _recall,
    "roc_auc": _roc_auc,
    "mse": lambda y, out: metric_fns.mean_squared_error(y, out.reshape(np.shape(y))),
    "mae": lambda y, out: metric_fns.mean_absolute_error(y, out.reshape(np.shape(y))),
    "r2": lambda y, out: metric_fns.r2_score(y, out.reshape(np.shape(y))),
}


def _resolve_metrics(metrics):
    resolved = OrderedDict()
    for metric in metrics or ():
        if isinstance(metric, str):
            if metric not in NAMED_METRICS:
                raise ValueError(f"Trainer: unknown metric {metric!r}; expected one of "
                                 f"{sorted(NAMED_METRICS)} or a callable (y_true, outputs)")
            resolved[metric] = NAMED_METRICS[metric]
        elif callable(metric):
            resolved[getattr(metric, "__name__", f"metric{len(resolved)}")] = metric
        else:
            raise TypeError(f"Trainer: a metric must be a name or a callable, got {metric!r}")
    return resolved


def _metric_targets(targets) -> np.ndarray:
    """Targets for the metrics: an (N, 1) column becomes the (N,) labels they expect."""
    targets = np.asarray(targets)
    return targets.reshape(-1) if targets.ndim == 2 and targets.shape[1] == 1 else targets


# --- loss targets -----------------------------------------------------------------------------
# Losses that compare outputs with targets of the same shape. A Keras user passes (N,) targets
# for a one-column (N, 1) output; these losses rightly refuse the pair, so the loop matches them.
_SAME_SHAPE_LOSSES = (nn.MSELoss, nn.L1Loss, nn.HuberLoss, nn.SmoothL1Loss, nn.BCEWithLogitsLoss,
                      nn.BCELoss)
_SAME_SHAPE_LOSS_FUNCTIONS = (F.mse_loss, F.l1_loss, F.huber_loss, F.smooth_l1_loss,
                              F.binary_cross_entropy_with_logits, F.binary_cross_entropy)


def _takes_same_shape_targets(loss_fn) -> bool:
    return isinstance(loss_fn, _SAME_SHAPE_LOSSES) or any(
        loss_fn is function for function in _SAME_SHAPE_LOSS_FUNCTIONS)


def _loss_targets(loss_fn, output_shape: tuple, targets, where: str):
    """Targets shaped like the outputs when the two differ only by a trailing dimension of 1.

    Only that case is reshaped: (N,) against (N, 1) must never broadcast into an (N, N) loss,
    and any other mismatch is the user's to fix, so it raises naming both shapes.
    """
    if not _takes_same_shape_targets(loss_fn):
        return targets
    if not isinstance(targets, (np.ndarray, Tensor)):
        targets = np.asarray(targets)
    output_shape, target_shape = tuple(output_shape), tuple(targets.shape)
    if target_shape == output_shape:
        return targets
    if output_shape == target_shape + (1,) or target_shape == output_shape + (1,):
        return targets.reshape(output_shape)
    name = getattr(loss_fn, "__name__", type(loss_fn).__name__)
    raise ValueError(f"{where}: {name} compares outputs and targets of one shape, but the model "
                     f"gave outputs of shape {output_shape} for targets of shape {target_shape}")


# --- History ----------------------------------------------------------------------------------
class History:
    """Per-epoch figures recorded by `fit`: `history["loss"]`, `history["val_accuracy"]`, ..."""

    def __init__(self):
        self.epoch = []
        self.history = OrderedDict()

    def record(self, epoch: int, logs: dict) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))

    def __getitem__(self, key):
        return self.history[key]

    def __contains__(self, key):
        return key in self.history

    def __repr__(self):
        last = {k: round(v[-1], 4) for k, v in self.history.items() if v}
        return f"History(epochs={len(self.epoch)}, last={last})"

    def plot(self, path, keys=None, title: str = "Training history"):
        """Draw each figure (and its val_ twin on the same axes) per epoch into a PNG file.

        Needs matplotlib (`pip install matplotlib`).
        """
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as error:
            raise ImportError("History.plot needs matplotlib: pip install matplotlib") from error
        bases = keys or [k for k in self.history if not k.startswith("val_") and k != "lr"]
        if not bases:
            raise ValueError("History.plot: nothing recorded yet")
        fig, axes = plt.subplots(1, len(bases), figsize=(4.5 * len(bases), 3.5), squeeze=False)
        epochs = [e + 1 for e in self.epoch]
        for ax, key in zip(axes[0], bases):
            if key in self.history:
                ax.plot(epochs, self.history[key], marker="o", label=f"train {key}")
            if f"val_{key}" in self.history:
                ax.plot(epochs, self.history[f"val_{key}"], marker="s", label=f"val {key}")
            ax.set_xlabel("epoch")
            ax.set_title(key)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


# --- Trainer ----------------------------------------------------------------------------------
class Trainer:
    """Trains a model with a loss and an optimizer, Keras style.

    Args:
        model: an nn.Module mapping a batch of inputs to outputs (logits for classification).
        loss: a loss module or function taking (outputs, targets).
        optimizer: a fastnn.optim optimizer over the model's parameters.
        metrics: names ("accuracy", "f1", "precision", "recall", "roc_auc", "mse", "mae", "r2")
            or callables (y_true, outputs) -> float, computed per epoch. Targets of shape (N, 1)
            reach the metrics as (N,).

    With a loss that takes targets of the outputs' shape (MSELoss, L1Loss, HuberLoss,
    SmoothL1Loss, BCEWithLogitsLoss, BCELoss or their functional forms), targets of shape (N,)
    for a model giving (N, 1), or the reverse, are reshaped to the outputs' shape; other
    mismatches raise ValueError.

    Example:
        >>> trainer = Trainer(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters()),
        ...                   metrics=["accuracy"])
        >>> history = trainer.fit(x, y, epochs=10, batch_size=32, validation_split=0.1)
    """

    def __init__(self, model, loss, optimizer, metrics=()):
        self.model = model
        self.loss_fn = loss
        self.optimizer = optimizer
        self.metrics = _resolve_metrics(metrics)
        self.stop_training = False
        self.epoch = 0

    # --- single steps ------------------------------------------------------------------------
    def train_step(self, inputs, targets):
        """One optimisation step on a batch; returns (loss value, outputs array)."""
        outputs = self.model(inputs if isinstance(inputs, Tensor) else Tensor(inputs))
        loss = self.loss_fn(outputs, _loss_targets(self.loss_fn, outputs.shape, targets, "fit"))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item(), outputs.data

    def _loader(self, x, y, batch_size, shuffle):
        if isinstance(x, DataLoader):
            return x
        if y is None:
            raise ValueError("Trainer: pass targets y with array inputs, or a DataLoader as x")
        return DataLoader(ArrayDataset(np.asarray(x), np.asarray(y)), batch_size=batch_size,
                          shuffle=shuffle)

    # --- fit ---------------------------------------------------------------------------------
    def fit(self, x, y=None, epochs: int = 1, batch_size: int = 32, validation_data=None,
            validation_split: float = 0.0, shuffle: bool = True, callbacks=(), verbose: int = 1,
            initial_epoch: int = 0) -> History:
        """Train for `epochs` epochs and return the History of per-epoch figures.

        Args:
            x, y: arrays, or x a DataLoader yielding (inputs, targets) and y None.
            validation_data: a tuple (x_val, y_val) or a DataLoader, evaluated after each epoch.
            validation_split: instead of validation_data, hold out the last fraction of the
                samples of (x, y), as Keras does: the last ceil(validation_split * N) rows,
                taken before any shuffling. The split draws nothing from the random generator
                and is the same on every call, so a second fit() never trains on the first's
                validation rows and a run resumed from a checkpoint repeats exactly. Shuffle
                the data beforehand if its order is meaningful (sorted by class or time).
            shuffle: reshuffle the training samples every epoch (from fastnn's generator).
            callbacks: Callback instances (fastnn.callbacks).
            verbose: 0 silent, 1 a progress bar per epoch, 2 one line per epoch.
            initial_epoch: the epoch to start from, to resume a run; epochs is the last one.
        """
        if epochs < 1 or initial_epoch < 0:
            raise ValueError(f"fit: epochs must be >= 1 and initial_epoch >= 0, got epochs="
                             f"{epochs}, initial_epoch={initial_epoch}")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"fit: validation_split must be in [0, 1), got {validation_split}")
        if validation_split and validation_data is None:
            if isinstance(x, DataLoader):
                raise ValueError("fit: validation_split needs arrays; pass validation_data "
                                 "with a DataLoader")
            if y is None:
                raise ValueError("fit: validation_split needs targets y with the arrays x")
            (x, y), validation_data = train_val_split(np.asarray(x), np.asarray(y),
                                                      val_fraction=validation_split,
                                                      shuffle=False)
        loader = self._loader(x, y, batch_size, shuffle)
        callbacks = list(callbacks)
        for callback in callbacks:
            if not isinstance(callback, Callback):
                raise TypeError(f"fit: callbacks must be Callback instances, got {callback!r}")
            callback.set_trainer(self)

        history = History()
        self.stop_training = False
        for callback in callbacks:
            callback.on_train_begin({})
        for epoch in range(initial_epoch, epochs):
            self.epoch = epoch
            for callback in callbacks:
                callback.on_epoch_begin(epoch, {})
            logs = self._train_epoch(loader, epoch, epochs, callbacks, verbose)
            if validation_data is not None and not self.stop_training:
                val_x, val_y = (validation_data, None) if isinstance(validation_data, DataLoader) \
                    else validation_data
                results = self.evaluate(val_x, val_y, batch_size=max(batch_size, 256))
                for key, value in results.items():
                    logs[f"val_{key}"] = value
            logs["lr"] = self.optimizer.param_groups[0]["lr"]
            history.record(epoch, logs)
            for callback in callbacks:
                callback.on_epoch_end(epoch, logs)
            if verbose:
                self._report_epoch(epoch, epochs, logs, verbose)
            if self.stop_training:
                break
        for callback in callbacks:
            callback.on_train_end({})
        return history

    def _train_epoch(self, loader, epoch, epochs, callbacks, verbose):
        self.model.train()
        bar = None
        if verbose == 1:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
                       leave=True, dynamic_ncols=True)
        total_loss, seen = 0.0, 0
        outputs_seen, targets_seen = [], []
        nan_guard = any(isinstance(c, TerminateOnNaN) for c in callbacks)
        for batch_index, (inputs, targets) in enumerate(loader):
            loss_value, outputs = self.train_step(inputs, targets)
            count = len(inputs)
            total_loss += loss_value * count
            seen += count
            if self.metrics:
                outputs_seen.append(outputs.copy())
                targets_seen.append(np.asarray(targets))
            batch_logs = {"loss": loss_value}
            for callback in callbacks:
                callback.on_batch_end(batch_index, batch_logs)
            if bar is not None:
                bar.update(1)
                if batch_index % 10 == 0 or batch_index + 1 == len(loader):
                    bar.set_postfix(loss=f"{total_loss / max(seen, 1):.4f}")
            if self.stop_training and nan_guard:
                break
        logs = OrderedDict(loss=total_loss / max(seen, 1))
        if self.metrics and outputs_seen:
            y_all = _metric_targets(np.concatenate(targets_seen))
            out_all = np.concatenate(outputs_seen)
            for name, fn in self.metrics.items():
                logs[name] = float(fn(y_all, out_all))
        if bar is not None:
            bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()})
            bar.close()
        return logs

    @staticmethod
    def _report_epoch(epoch, epochs, logs, verbose):
        # The progress bar already shows the training figures; a line adds validation ones.
        if verbose == 2 or any(k.startswith("val_") for k in logs):
            from tqdm.auto import tqdm

            figures = "  ".join(f"{k}={v:.4g}" for k, v in logs.items())
            tqdm.write(f"epoch {epoch + 1}/{epochs}: {figures}")

    # --- evaluation --------------------------------------------------------------------------
    def _outputs(self, x, batch_size):
        self.model.eval()
        chunks = []
        with no_grad():
            if isinstance(x, DataLoader):
                targets = []
                for inputs, batch_targets in x:
                    chunks.append(np.array(self.model(Tensor(inputs)).data))
                    targets.append(np.asarray(batch_targets))
                return np.concatenate(chunks), np.concatenate(targets)
            x = np.asarray(x)
            for start in range(0, len(x), batch_size):
                chunks.append(np.array(self.model(Tensor(x[start:start + batch_size])).data))
        return (np.concatenate(chunks) if chunks else np.empty((0,))), None

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """Model outputs for x (arrays or a DataLoader), in eval mode, without gradients."""
        outputs, _ = self._outputs(x, batch_size)
        return outputs

    def evaluate(self, x, y=None, batch_size: int = 256) -> dict:
        """Loss and metrics over (x, y) in eval mode: {"loss": ..., "accuracy": ...}."""
        outputs, loader_targets = self._outputs(x, batch_size)
        targets = loader_targets if loader_targets is not None else (
            None if y is None else np.asarray(y))
        if targets is None or len(targets) != len(outputs):
            raise ValueError(f"evaluate: got {len(outputs)} outputs but "
                             f"{0 if targets is None else len(targets)} targets")
        loss = math.nan
        if len(outputs):
            loss_targets = _loss_targets(self.loss_fn, outputs.shape, targets, "evaluate")
            with no_grad():
                loss = float(self.loss_fn(Tensor(outputs), loss_targets).item())
        results = OrderedDict(loss=loss)
        metric_targets = _metric_targets(targets)
        for name, fn in self.metrics.items():
            results[name] = float(fn(metric_targets, outputs))
        return results

