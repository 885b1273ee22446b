import warnings

import numpy as np
import pytest

from fastnn import metrics as M
from fastnn.metrics import UndefinedMetricWarning


def sk():
    return pytest.importorskip("sklearn.metrics")


def same(ours, theirs):
    """Equal to the last bit, NaN equal to NaN."""
    if np.isnan(theirs):
        return np.isnan(ours)
    return ours == theirs


def label_cases():
    rng = np.random.default_rng(0)
    cases = {
        "binary_random": (rng.integers(0, 2, 50), rng.integers(0, 2, 50)),
        "multiclass_random": (rng.integers(0, 5, 200), rng.integers(0, 5, 200)),
        "class_only_in_pred": (np.array([0, 1, 1, 0]), np.array([0, 2, 1, 1])),
        "class_only_in_true": (np.array([0, 1, 2, 2]), np.array([0, 1, 1, 1])),
        "all_one_class": (np.zeros(6, int), np.zeros(6, int)),
        "perfect": (np.arange(10) % 3, np.arange(10) % 3),
        "all_wrong": (np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0])),
        "strings": (np.array(["cat", "dog", "dog", "eel"]), np.array(["cat", "cat", "dog", "dog"])),
        "string_binary": (np.array(["n", "y", "y", "n", "y"]), np.array(["y", "y", "n", "n", "y"])),
        "bools": (np.array([True, False, True]), np.array([True, True, False])),
        "single_sample": (np.array([1]), np.array([0])),
        "negative_labels": (np.array([-1, 1, -1, 1, 1]), np.array([-1, -1, 1, 1, 1])),
    }
    return cases


CASES = label_cases()


@pytest.mark.filterwarnings("ignore:A single label was found")
@pytest.mark.parametrize("case", list(CASES))
def test_accuracy_and_confusion_matrix_match_sklearn(case):
    skm = sk()
    y_true, y_pred = CASES[case]
    assert same(M.accuracy(y_true, y_pred), skm.accuracy_score(y_true, y_pred))
    ours = M.confusion_matrix(y_true, y_pred)
    theirs = skm.confusion_matrix(y_true, y_pred)
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("metric", ["precision", "recall", "f1_score"])
@pytest.mark.parametrize("average", ["binary", "macro", "micro", "weighted"])
@pytest.mark.parametrize("zero_division", ["warn", 0, 1, np.nan])
@pytest.mark.parametrize("case", list(CASES))
def test_prf_matches_sklearn(metric, average, zero_division, case):
    skm = sk()
    y_true, y_pred = CASES[case]
    theirs_fn = {"precision": skm.precision_score, "recall": skm.recall_score,
                 "f1_score": skm.f1_score}[metric]
    pos_label = {"strings": "dog", "string_binary": "y", "bools": True}.get(case, 1)
    kwargs = dict(average=average, zero_division=zero_division)
    if average == "binary":
        kwargs["pos_label"] = pos_label
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            theirs = theirs_fn(y_true, y_pred, **kwargs)
        except ValueError:
            with pytest.raises(ValueError):
                getattr(M, metric)(y_true, y_pred, **kwargs)
            return
        ours = getattr(M, metric)(y_true, y_pred, **kwargs)
    assert isinstance(ours, float)
    assert same(ours, theirs), (ours, theirs)


def test_prf_warns_on_zero_division():
    with pytest.warns(UndefinedMetricWarning, match="precision is ill-defined"):
        assert M.precision([0, 1], [0, 0]) == 0.0
    with pytest.warns(UndefinedMetricWarning, match="recall is ill-defined"):
        assert M.recall([0, 0], [1, 0]) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert M.precision([0, 1], [0, 0], zero_division=1) == 1.0


def test_prf_errors():
    with pytest.raises(ValueError, match="average must be one of .*got 'samples'"):
        M.f1_score([0, 1], [0, 1], average="samples")
    with pytest.raises(ValueError, match="3 classes but average='binary'"):
        M.precision([0, 1, 2], [0, 1, 1])
    with pytest.raises(ValueError, match="pos_label=1 is not a valid label"):
        M.recall(["a", "b"], ["a", "a"])
    with pytest.raises(ValueError, match=r"different shapes \(\(3,\) and \(2,\)\)"):
        M.f1_score([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="zero_division must be"):
        M.precision([0, 1], [0, 1], zero_division=0.5)
    with pytest.raises(ValueError, match="continuous values"):
        M.precision([0, 1], [0.2, 0.7])
    with pytest.raises(ValueError, match="1-D array of labels"):
        M.precision(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="empty input"):
        M.accuracy([], [])
    with pytest.raises(ValueError, match="mix string and numeric"):
        M.accuracy(["a", "b"], [0, 1])


def test_accuracy_from_scores_and_top_k():
    skm = sk()
    rng = np.random.default_rng(1)
    scores = rng.random((300, 6))
    y = rng.integers(0, 6, 300)
    assert same(M.accuracy(y, scores), skm.accuracy_score(y, scores.argmax(1)))
    for k in (1, 2, 3, 5):
        assert same(M.accuracy(y, scores, top_k=k),
                    skm.top_k_accuracy_score(y, scores, k=k, labels=np.arange(6)))
    assert M.accuracy(y, scores, top_k=6) == 1.0


def test_accuracy_top_k_ties_go_to_lower_index():
    scores = np.array([[0.5, 0.5, 0.0], [0.2, 0.4, 0.4]])
    assert M.accuracy([0, 2], scores) == 0.5
    assert M.accuracy([1, 1], scores) == 0.5
    assert M.accuracy([1, 2], scores, top_k=2) == 1.0
    assert M.accuracy([1.0, 2.0], (scores * 10).astype(np.uint8), top_k=2) == 1.0


def test_accuracy_errors():
    with pytest.raises(ValueError, match="top_k must be a positive int"):
        M.accuracy([0], [[0.1, 0.9]], top_k=0)
    with pytest.raises(ValueError, match=r"2 labels but y_pred has 3 rows .*\(2,\) and \(3, 4\)"):
        M.accuracy([0, 1], np.zeros((3, 4)))
    with pytest.raises(ValueError, match="must hold ints in 0..3"):
        M.accuracy([0, 4], np.zeros((2, 4)))
    with pytest.raises(ValueError, match="top_k=2 needs"):
        M.accuracy([0, 1], [0, 1], top_k=2)
    with pytest.raises(ValueError, match="1 score column"):
        M.accuracy([0, 1], np.zeros((2, 1)))


def test_confusion_matrix_with_labels():
    skm = sk()
    y_true = np.array([0, 1, 2, 2, 3, 1])
    y_pred = np.array([0, 2, 2, 3, 3, 1])
    for labels in ([2, 0, 1], [3, 1], [0, 1, 2, 3, 7], [7, 0]):
        np.testing.assert_array_equal(M.confusion_matrix(y_true, y_pred, labels=labels),
                                      skm.confusion_matrix(y_true, y_pred, labels=labels))
    with pytest.raises(ValueError, match="at least one of labels must occur in y_true"):
        M.confusion_matrix(y_true, y_pred, labels=[9])
    with pytest.raises(ValueError, match="duplicates"):
        M.confusion_matrix(y_true, y_pred, labels=[1, 1])
    with pytest.raises(ValueError, match="different shapes"):
        M.confusion_matrix([0, 1], [0])


def score_cases():
    rng = np.random.default_rng(2)
    return {
        "random": (rng.integers(0, 2, 100), rng.random(100)),
        "heavy_ties": (rng.integers(0, 2, 200), rng.integers(0, 4, 200) / 4),
        "all_tied": (np.array([0, 1, 0, 1, 1]), np.full(5, 0.3)),
        "perfect": (np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])),
        "inverted": (np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.8, 0.9])),
        "labels_3_and_7": (np.array([3, 7, 7, 3, 7]), np.array([0.2, 0.9, 0.4, 0.4, 0.6])),
        "float32_scores": (rng.integers(0, 2, 64), rng.random(64).astype(np.float32)),
        "int_scores": (rng.integers(0, 2, 64), rng.integers(-3, 3, 64)),
        "collinear": (np.array([0, 1, 0, 1, 0, 1, 0, 1]), np.arange(8.0)),
    }


SCORE_CASES = score_cases()


@pytest.mark.parametrize("case", list(SCORE_CASES))
def test_binary_roc_auc_matches_sklearn_exactly(case):
    skm = sk()
    y, s = SCORE_CASES[case]
    assert same(M.roc_auc_score(y, s), skm.roc_auc_score(y, s))
    assert same(M.roc_auc_score(y, s[:, None]), skm.roc_auc_score(y, s))


@pytest.mark.parametrize("average", ["macro", "weighted"])
@pytest.mark.parametrize("ties", [False, True])
def test_multiclass_roc_auc_matches_sklearn(average, ties):
    skm = sk()
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 150)
    logits = rng.standard_normal((150, 4))
    if ties:
        logits = np.round(logits)
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ours = M.roc_auc_score(y, proba, average=average)
    theirs = skm.roc_auc_score(y, proba, average=average, multi_class="ovr")
    assert same(ours, theirs), (ours, theirs)


def test_roc_auc_single_class_is_nan_with_warning():
    with pytest.warns(UndefinedMetricWarning, match="only one class"):
        assert np.isnan(M.roc_auc_score([1, 1, 1], [0.1, 0.2, 0.3]))


def test_roc_auc_errors():
    with pytest.raises(ValueError, match="average must be 'macro' or 'weighted', got 'micro'"):
        M.roc_auc_score([0, 1], [0.1, 0.2], average="micro")
    with pytest.raises(ValueError, match=r"shapes \(3,\) and \(2,\)"):
        M.roc_auc_score([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"3 classes; give \(N, 3\) scores"):
        M.roc_auc_score([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="2 classes but y_score has 3 columns"):
        M.roc_auc_score([0, 1, 1], np.eye(3))
    with pytest.raises(TypeError, match="y_score must be numeric"):
        M.roc_auc_score([0, 1], ["a", "b"])


def regression_cases():
    rng = np.random.default_rng(4)
    return {
        "random_1d": (rng.standard_normal(50), rng.standard_normal(50)),
        "random_2d": (rng.standard_normal((40, 3)), rng.standard_normal((40, 3))),
        "column": (rng.standard_normal((20, 1)), rng.standard_normal((20, 1))),
        "float32": (rng.standard_normal(33).astype(np.float32),
                    rng.standard_normal(33).astype(np.float32)),
        "ints": (rng.integers(0, 10, 30), rng.integers(0, 10, 30)),
        "constant_true_perfect": (np.full(5, 2.0), np.full(5, 2.0)),
        "constant_true_wrong": (np.full(5, 2.0), np.arange(5.0)),
        "mixed_constant_outputs": (np.c_[np.full(6, 1.0), np.arange(6.0)],
                                   np.c_[np.arange(6.0), np.arange(6.0) + 0.5]),
        "perfect": (np.arange(7.0), np.arange(7.0)),
    }


REGRESSION_CASES = regression_cases()


@pytest.mark.parametrize("case", list(REGRESSION_CASES))
@pytest.mark.parametrize("name", ["mean_squared_error", "mean_absolute_error", "r2_score"])
def test_regression_metrics_match_sklearn(case, name):
    skm = sk()
    y_true, y_pred = REGRESSION_CASES[case]
    ours = getattr(M, name)(y_true, y_pred)
    theirs = getattr(skm, name)(y_true, y_pred)
    assert isinstance(ours, float)
    assert same(ours, theirs), (ours, theirs)


def test_regression_edge_cases_and_errors():
    with pytest.warns(UndefinedMetricWarning, match="fewer than two samples"):
        assert np.isnan(M.r2_score([1.0], [2.0]))
    with pytest.raises(ValueError, match=r"different shapes \(\(4,\) and \(3,\)\)"):
        M.mean_squared_error(np.zeros(4), np.zeros(3))
    with pytest.raises(ValueError, match=r"different shapes \(\(4, 2\) and \(4, 3\)\)"):
        M.mean_absolute_error(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="must be \\(N,\\) or \\(N, K\\)"):
        M.r2_score(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="empty input"):
        M.mean_squared_error([], [])
    with pytest.raises(TypeError, match="must be numeric"):
        M.mean_squared_error(["a"], [1.0])


def test_sklearn_style_aliases():
    assert M.accuracy_score is M.accuracy
    assert M.precision_score is M.precision and M.recall_score is M.recall
