"""Classification and regression metrics on numpy arrays.

The functions take the arguments and give the results of their scikit-learn namesakes (same
handling of labels, averages, `pos_label`, `zero_division` and ties), without the dependency.
Classification labels may be ints, bools or strings; scores are float arrays.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional, Tuple, Union

import numpy as np

__all__ = [
    "UndefinedMetricWarning",
    "accuracy",
    "precision",
    "recall",
    "f1_score",
    "roc_auc_score",
    "confusion_matrix",
    "mean_squared_error",
    "mean_absolute_error",
    "r2_score",
    "accuracy_score",
    "precision_score",
    "recall_score",
]

_AVERAGES = ("binary", "macro", "micro", "weighted")


class UndefinedMetricWarning(UserWarning):
    """A metric was undefined (e.g. precision with no predicted positives) and replaced."""


def _labels_1d(y: Any, name: str, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{where}: {name} must be a 1-D array of labels, got shape {y.shape}")
    if y.dtype.kind == "f" and y.size and not np.all(np.isfinite(y) & (y == np.round(y))):
        raise ValueError(
            f"{where}: {name} holds continuous values; classification metrics need labels"
        )
    if y.dtype.kind not in "biufUSO":
        raise TypeError(f"{where}: {name} has dtype {y.dtype}, which cannot hold labels")
    return y


def _pair(y_true: Any, y_pred: Any, where: str) -> Tuple[np.ndarray, np.ndarray]:
    y_true = _labels_1d(y_true, "y_true", where)
    y_pred = _labels_1d(y_pred, "y_pred", where)
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"{where}: y_true and y_pred have different shapes ({y_true.shape} and {y_pred.shape})"
        )
    if y_true.size == 0:
        raise ValueError(f"{where}: empty input")
    if (y_true.dtype.kind in "USO") != (y_pred.dtype.kind in "USO"):
        raise ValueError(f"{where}: y_true and y_pred mix string and numeric labels")
    return y_true, y_pred


def _unique_labels(*arrays: np.ndarray) -> np.ndarray:
    return np.unique(np.concatenate([np.unique(a) for a in arrays]))


def accuracy(y_true: Any, y_pred: Any, *, top_k: int = 1) -> float:
    """Fraction of samples whose prediction is right.

    Args:
        y_true: (N,) labels.
        y_pred: (N,) predicted labels, or (N, C) scores/probabilities, where column c scores
            class c (labels must then be ints in 0..C-1).
        top_k: with scores, count a sample right when its label is among the `top_k` highest
            scores. Ties go to the lower class index, as `np.argmax` does (scikit-learn's
            top_k_accuracy_score breaks ties the other way).

    Example:
        >>> accuracy([0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
        0.6666666666666666
    """
    where = "accuracy"
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"{where}: top_k must be a positive int, got {top_k!r}")
    scores = np.asarray(y_pred)
    if scores.ndim == 2:
        y_true = _labels_1d(y_true, "y_true", where)
        n, n_classes = scores.shape
        if y_true.shape[0] != n:
            raise ValueError(
                f"{where}: y_true has {y_true.shape[0]} labels but y_pred has {n} rows of scores "
                f"(shapes {y_true.shape} and {scores.shape})"
            )
        if n == 0:
            raise ValueError(f"{where}: empty input")
        if n_classes < 2:
            raise ValueError(
                f"{where}: y_pred has {n_classes} score column; give (N, C) scores with C >= 2 "
                f"or predicted labels"
            )
        if y_true.dtype.kind == "f":  # integral floats, checked by _labels_1d
            y_true = y_true.astype(np.int64)
        if y_true.dtype.kind not in "biu" or y_true.min() < 0 or y_true.max() >= n_classes:
            raise ValueError(
                f"{where}: with (N, {n_classes}) scores, y_true must hold ints in "
                f"0..{n_classes - 1}"
            )
        if top_k >= n_classes:
            return 1.0
        if top_k == 1:
            return float(np.mean(np.argmax(scores, axis=1) == y_true))
        # Stable sort of the negated scores: descending, equal scores keep index order.
        negated = -(scores.astype(np.float64) if scores.dtype.kind in "bu" else scores)
        top = np.argsort(negated, axis=1, kind="stable")[:, :top_k]
        return float(np.mean(np.any(top == y_true[:, None], axis=1)))
    if top_k != 1:
        raise ValueError(f"{where}: top_k={top_k} needs (N, C) scores, got y_pred of shape "
                         f"{scores.shape}")
    y_true, y_pred = _pair(y_true, scores, where)
    return float(np.mean(y_true == y_pred))


def _check_zero_division(zero_division: Any, where: str) -> float:
    if isinstance(zero_division, str) and zero_division == "warn":
        return 0.0
    if isinstance(zero_division, (int, float, np.number)) and not isinstance(zero_division, bool):
        if zero_division in (0, 1) or np.isnan(zero_division):
            return float(zero_division)
    raise ValueError(
        f"{where}: zero_division must be 'warn', 0, 1 or np.nan, got {zero_division!r}"
    )


def _divide(
    num: np.ndarray, den: np.ndarray, zero_division: Any, what: str, where: str
) -> np.ndarray:
    """num / den with zero_division's value where den == 0 (and a warning for 'warn')."""
    mask = den == 0
    result = num.astype(np.float64) / np.where(mask, 1, den).astype(np.float64)
    if mask.any():
        result[mask] = _check_zero_division(zero_division, where)
        if isinstance(zero_division, str):
            warnings.warn(
                f"{where}: {what}; set to 0.0. Use `zero_division` to choose another value.",
                UndefinedMetricWarning,
                stacklevel=3,
            )
    return result


def _nan_average(values: np.ndarray, weights: Optional[np.ndarray]) -> float:
    """Average that skips NaN entries (from zero_division=np.nan), as scikit-learn does."""
    keep = ~np.isnan(values)
    if not keep.any():
        return float("nan")
    if weights is None:
        return float(np.nanmean(values))
    if weights[keep].sum() == 0:
        return float(np.mean(values[keep]))
    return float(np.average(values[keep], weights=weights[keep]))


def _prf(y_true: Any, y_pred: Any, average: str, pos_label: Any, zero_division: Any,
         metric: str) -> float:
    """Precision, recall or F1, computed from per-class counts as scikit-learn does."""
    where = metric
    if average not in _AVERAGES:
        raise ValueError(f"{where}: average must be one of {_AVERAGES}, got {average!r}")
    _check_zero_division(zero_division, where)
    y_true, y_pred = _pair(y_true, y_pred, where)
    present = _unique_labels(y_true, y_pred)
    if average == "binary":
        if present.shape[0] > 2:
            raise ValueError(
                f"{where}: the targets have {present.shape[0]} classes but average='binary'; "
                f"choose one of 'macro', 'micro', 'weighted'"
            )
        if pos_label not in present.tolist() and present.shape[0] == 2:
            raise ValueError(
                f"{where}: pos_label={pos_label!r} is not a valid label; it should be one of "
                f"{present.tolist()}"
            )
    # Per-class counts over the present labels: true positives, predictions, true samples.
    n_labels = present.shape[0]
    t, p = np.searchsorted(present, y_true), np.searchsorted(present, y_pred)
    tp = np.bincount(t[t == p], minlength=n_labels)
    pred_sum = np.bincount(p, minlength=n_labels)
    true_sum = np.bincount(t, minlength=n_labels)
    if average == "binary":
        # pos_label may be absent from both inputs: then all its counts are zero.
        pick = [i for i in range(n_labels) if present[i] == pos_label]
        tp, pred_sum, true_sum = (np.array([c[pick].sum()]) for c in (tp, pred_sum, true_sum))
    if average == "micro":
        tp, pred_sum, true_sum = (c.sum(keepdims=True) for c in (tp, pred_sum, true_sum))
    if metric == "precision":
        scores = _divide(tp, pred_sum, zero_division, "precision is ill-defined for labels with "
                         "no predicted samples", where)
    elif metric == "recall":
        scores = _divide(tp, true_sum, zero_division, "recall is ill-defined for labels with "
                         "no true samples", where)
    else:
        scores = _divide(2.0 * tp, (true_sum + pred_sum).astype(np.float64), zero_division,
                         "F-score is ill-defined for labels with no true nor predicted samples",
                         where)
    return _nan_average(scores, true_sum if average == "weighted" else None)


def precision(y_true: Any, y_pred: Any, *, average: str = "binary", pos_label: Any = 1,
              zero_division: Union[str, float] = "warn") -> float:
    """Precision tp / (tp + fp), as scikit-learn's precision_score.

    Args:
        y_true, y_pred: (N,) labels.
        average: "binary" (the class `pos_label` only; at most two classes), "macro" (mean over
            classes), "micro" (from the pooled counts), "weighted" (mean weighted by each
            class's true count).
        pos_label: the positive class for average="binary".
        zero_division: value when a denominator is zero: "warn" (0 and an
            `UndefinedMetricWarning`), 0, 1 or np.nan (np.nan classes are left out of averages).
    """
    return _prf(y_true, y_pred, average, pos_label, zero_division, "precision")


def recall(y_true: Any, y_pred: Any, *, average: str = "binary", pos_label: Any = 1,
           zero_division: Union[str, float] = "warn") -> float:
    """Recall tp / (tp + fn), as scikit-learn's recall_score; arguments as in `precision`."""
    return _prf(y_true, y_pred, average, pos_label, zero_division, "recall")


def f1_score(y_true: Any, y_pred: Any, *, average: str = "binary", pos_label: Any = 1,
             zero_division: Union[str, float] = "warn") -> float:
    """F1 = 2 tp / (2 tp + fp + fn), as scikit-learn's f1_score; arguments as in `precision`."""
    return _prf(y_true, y_pred, average, pos_label, zero_division, "f1_score")


def _binary_auc(is_pos: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of one positive/negative split, by scikit-learn's route to the same bits.

    The curve has one point per distinct score (so tied samples move together and score half),
    collinear points are dropped, and the area is a trapezoid sum in that order.
    """
    order = np.argsort(score, kind="mergesort")[::-1]
    score, is_pos = score[order], is_pos[order].astype(np.float64)
    last_of_value = np.r_[np.flatnonzero(np.diff(score)), score.shape[0] - 1]
    tps = np.cumsum(is_pos)[last_of_value]
    fps = 1 + last_of_value - tps
    if tps.shape[0] > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        tps, fps = tps[keep], fps[keep]
    tpr = np.r_[0, tps] / tps[-1]
    fpr = np.r_[0, fps] / fps[-1]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def roc_auc_score(y_true: Any, y_score: Any, *, average: str = "macro") -> float:
    """Area under the ROC curve, as scikit-learn's roc_auc_score.

    Args:
        y_true: (N,) labels. Binary: two classes, the greater one is positive.
        y_score: binary: (N,) or (N, 1) scores of the positive class. Multiclass: (N, C)
            scores, column c for the c-th smallest label (all C labels must occur in y_true);
            each column is scored one-vs-rest.
        average: how one-vs-rest scores are combined: "macro" (plain mean) or "weighted"
            (by each class's count in y_true).

    Tied scores count half, as in the trapezoid rule. A single class in y_true gives NaN and
    an `UndefinedMetricWarning`. Unlike scikit-learn, (N, C) scores need
    not sum to 1 and C = 2 is accepted (scored one-vs-rest).
    """
    where = "roc_auc_score"
    if average not in ("macro", "weighted"):
        raise ValueError(f"{where}: average must be 'macro' or 'weighted', got {average!r}")
    y_true = _labels_1d(y_true, "y_true", where)
    score = np.asarray(y_score)
    if score.ndim == 2 and score.shape[1] == 1:
        score = score[:, 0]
    if score.ndim not in (1, 2) or score.shape[0] != y_true.shape[0]:
        raise ValueError(
            f"{where}: y_score must be (N,) or (N, C) with N = len(y_true); got shapes "
            f"{y_true.shape} and {np.shape(y_score)}"
        )
    if score.dtype.kind not in "biuf":
        raise TypeError(f"{where}: y_score must be numeric, got dtype {score.dtype}")
    if y_true.size == 0:
        raise ValueError(f"{where}: empty input")
    classes = np.unique(y_true)
    if score.ndim == 1:
        if classes.shape[0] < 2:
            warnings.warn(f"{where}: only one class present in y_true; ROC AUC is not defined",
                          UndefinedMetricWarning, stacklevel=2)
            return float("nan")
        if classes.shape[0] > 2:
            raise ValueError(
                f"{where}: y_true has {classes.shape[0]} classes; give (N, "
                f"{classes.shape[0]}) scores for one-vs-rest"
            )
        return _binary_auc(y_true == classes[1], score)
    n_classes = score.shape[1]
    if classes.shape[0] != n_classes:
        raise ValueError(
            f"{where}: y_true has {classes.shape[0]} classes but y_score has {n_classes} "
            f"columns; every column's class must occur in y_true"
        )
    aucs = np.array([_binary_auc(y_true == c, score[:, i]) for i, c in enumerate(classes)])
    if average == "weighted":
        return float(np.average(aucs, weights=np.array([np.sum(y_true == c) for c in classes])))
    return float(np.average(aucs))


def confusion_matrix(y_true: Any, y_pred: Any, *, labels: Any = None) -> np.ndarray:
    """Counts C[i, j] of samples with true label i predicted as j, as scikit-learn's.

    Args:
        y_true, y_pred: (N,) labels.
        labels: the rows/columns in order; None means every label in either input, sorted.
            Samples whose true or predicted label is not listed are left out.

    Returns:
        an int64 array (L, L).
    """
    where = "confusion_matrix"
    y_true = _labels_1d(y_true, "y_true", where)
    y_pred = _labels_1d(y_pred, "y_pred", where)
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"{where}: y_true and y_pred have different shapes ({y_true.shape} and {y_pred.shape})"
        )
    if y_true.size == 0:
        raise ValueError(f"{where}: empty input")
    if labels is None:
        labels = _unique_labels(y_true, y_pred)
    else:
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.size == 0:
            raise ValueError(f"{where}: labels must be a non-empty 1-D list, got {labels!r}")
        if np.unique(labels).shape[0] != labels.shape[0]:
            raise ValueError(f"{where}: labels contain duplicates: {labels.tolist()}")
        if not np.isin(labels, y_true).any():
            raise ValueError(f"{where}: at least one of labels must occur in y_true")
    n = labels.shape[0]
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]

    def index_of(y: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(sorted_labels, y), n - 1)
        return np.where(sorted_labels[pos] == y, order[pos], -1)

    t, p = index_of(y_true), index_of(y_pred)
    keep = (t >= 0) & (p >= 0)
    counts = np.bincount(t[keep] * n + p[keep], minlength=n * n)
    return counts.reshape(n, n).astype(np.int64)


def _regression_pair(y_true: Any, y_pred: Any, where: str) -> Tuple[np.ndarray, np.ndarray]:
    """(N, K) float arrays in the precision scikit-learn would compute in."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    shapes = (y_true.shape, y_pred.shape)
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.ndim not in (1, 2):
            raise ValueError(f"{where}: {name} must be (N,) or (N, K), got shape {y.shape}")
        if y.dtype.kind not in "biuf":
            raise TypeError(f"{where}: {name} must be numeric, got dtype {y.dtype}")
    y_true = y_true if y_true.ndim == 2 else y_true[:, None]
    y_pred = y_pred if y_pred.ndim == 2 else y_pred[:, None]
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"{where}: y_true and y_pred have different shapes ({shapes[0]} and {shapes[1]})"
        )
    if y_true.shape[0] == 0:
        raise ValueError(f"{where}: empty input")
    floats = [y.dtype for y in (y_true, y_pred) if y.dtype.kind == "f"]
    dtype = np.result_type(*floats) if floats else np.float64
    return y_true.astype(dtype), y_pred.astype(dtype)


def mean_squared_error(y_true: Any, y_pred: Any) -> float:
    """Mean of (y_true - y_pred)**2; (N, K) inputs average each output, then the outputs."""
    y_true, y_pred = _regression_pair(y_true, y_pred, "mean_squared_error")
    return float(np.average(np.average((y_true - y_pred) ** 2, axis=0)))


def mean_absolute_error(y_true: Any, y_pred: Any) -> float:
    """Mean of |y_true - y_pred|; (N, K) inputs average each output, then the outputs."""
    y_true, y_pred = _regression_pair(y_true, y_pred, "mean_absolute_error")
    return float(np.average(np.average(np.abs(y_pred - y_true), axis=0)))


def r2_score(y_true: Any, y_pred: Any) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot, as scikit-learn's r2_score.

    (N, K) inputs score each output and average them. A constant y_true gives 1.0 for a perfect
    prediction and 0.0 otherwise; fewer than two samples give NaN with a warning.
    """
    where = "r2_score"
    y_true, y_pred = _regression_pair(y_true, y_pred, where)
    if y_true.shape[0] < 2:
        warnings.warn(f"{where}: R^2 is not defined for fewer than two samples",
                      UndefinedMetricWarning, stacklevel=2)
        return float("nan")
    numerator = np.sum((y_true - y_pred) ** 2, axis=0)
    denominator = np.sum((y_true - np.average(y_true, axis=0)) ** 2, axis=0)
    scores = np.ones(y_true.shape[1], dtype=numerator.dtype)
    valid = (numerator != 0) & (denominator != 0)
    scores[valid] = 1 - numerator[valid] / denominator[valid]
    scores[(numerator != 0) & (denominator == 0)] = 0.0
    return float(np.average(scores))


# scikit-learn's names, for code written against it.
accuracy_score = accuracy
precision_score = precision
recall_score = recall
