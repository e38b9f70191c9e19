"""GLUE metrics agree with scikit-learn and scipy; glue_scores picks the right metrics per task."""

import math
import warnings

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from lmjax.data.task_examples import NO_LABEL
from lmjax.eval.glue_metrics import (
    GLUE_TASK_METRICS,
    accuracy,
    binary_f1,
    glue_scores,
    matthews_correlation,
    pearson,
    spearman,
)

SEEDS = range(6)


def _random_classes(seed, num_classes, size=97):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size)
    # Agree with the label ~60% of the time so the scores are far from 0 and from 1.
    predictions = np.where(rng.random(size) < 0.6, labels, rng.integers(0, num_classes, size))
    return predictions, labels


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("num_classes", [2, 3])
def test_classification_metrics_match_sklearn(seed, num_classes):
    predictions, labels = _random_classes(seed, num_classes)
    assert accuracy(predictions, labels) == pytest.approx(
        sklearn.metrics.accuracy_score(labels, predictions), abs=1e-9)
    assert matthews_correlation(predictions, labels) == pytest.approx(
        sklearn.metrics.matthews_corrcoef(labels, predictions), abs=1e-9)
    for positive in range(num_classes):
        expected = sklearn.metrics.f1_score(
            labels == positive, predictions == positive, zero_division=0.0)
        ours = binary_f1(predictions, labels, positive=positive)
        assert ours == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_classification_metrics_on_arbitrary_class_ids(seed):
    # Class ids need not be 0..K-1 (e.g. -3, 5, 7): the confusion matrix uses the classes seen.
    predictions, labels = _random_classes(seed, 3)
    ids = np.array([-3, 5, 7])
    predictions, labels = ids[predictions], ids[labels]
    assert matthews_correlation(predictions, labels) == pytest.approx(
        sklearn.metrics.matthews_corrcoef(labels, predictions), abs=1e-9)
    assert binary_f1(predictions, labels, positive=5) == pytest.approx(
        sklearn.metrics.f1_score(labels, predictions, labels=[5], average="micro"), abs=1e-9)


def test_f1_is_not_electras_precision_only_f1():
    # 1 TP, 0 FP, 3 FN: precision 1, recall 1/4, F1 = 2 * 1 * 0.25 / 1.25 = 0.4. ELECTRA's
    # F1Scorer would report 1.0 (its "recall" counts predicted positives).
    predictions = [1, 0, 0, 0, 0]
    labels = [1, 1, 1, 1, 0]
    assert binary_f1(predictions, labels) == pytest.approx(0.4, abs=1e-12)


def test_degenerate_predictions_match_sklearn_and_scipy():
    labels = np.array([0, 1, 1, 0, 1, 2])
    constant = np.zeros(6, dtype=int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's UndefinedMetricWarning, scipy's constant input
        expected_f1 = sklearn.metrics.f1_score(labels == 1, constant == 1)  # default zero_division
        expected_f1_none = sklearn.metrics.f1_score([0, 0, 0], [0, 0, 0])
        expected_pearson = scipy.stats.pearsonr(constant, labels).statistic
        expected_spearman = scipy.stats.spearmanr(constant, labels).statistic
    # No predicted positive: precision undefined, TP = 0, F1 = 0 as sklearn's default gives.
    assert binary_f1(constant, labels) == expected_f1 == 0.0
    assert binary_f1([0, 0, 0], [0, 0, 0]) == expected_f1_none == 0.0
    assert matthews_correlation(constant, labels) == 0.0
    assert sklearn.metrics.matthews_corrcoef(labels, constant) == 0.0
    assert matthews_correlation(labels, constant) == 0.0
    assert math.isnan(pearson(constant, labels)) and math.isnan(expected_pearson)
    assert math.isnan(spearman(constant, labels)) and math.isnan(expected_spearman)
    # Perfect and perfectly inverted binary predictions.
    assert matthews_correlation([0, 1, 1, 0], [0, 1, 1, 0]) == pytest.approx(1.0)
    assert matthews_correlation([1, 0, 0, 1], [0, 1, 1, 0]) == pytest.approx(-1.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_correlations_match_scipy(seed):
    rng = np.random.default_rng(seed)
    labels = rng.uniform(0, 5, 83)
    predictions = labels + rng.normal(0, 1.5, 83)
    assert pearson(predictions, labels) == pytest.approx(
        scipy.stats.pearsonr(predictions, labels).statistic, abs=1e-9)
    assert spearman(predictions, labels) == pytest.approx(
        scipy.stats.spearmanr(predictions, labels).statistic, abs=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_spearman_with_ties_matches_scipy(seed):
    # STS-B labels are multiples of 0.2 and a rounded model output ties a lot: ties on both sides.
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, 61) / 1.0
    predictions = np.round(labels + rng.normal(0, 1.0, 61))
    assert len(np.unique(predictions)) < 61 and len(np.unique(labels)) < 61
    assert spearman(predictions, labels) == pytest.approx(
        scipy.stats.spearmanr(predictions, labels).statistic, abs=1e-9)
    assert pearson(predictions, labels) == pytest.approx(
        scipy.stats.pearsonr(predictions, labels).statistic, abs=1e-9)


def test_spearman_average_ranks_by_hand():
    # x ranks: 10 -> 1, 20 and 20 -> (2+3)/2 = 2.5 each, 30 -> 4: ranks [1, 2.5, 2.5, 4].
    # y = [1, 2, 3, 4] has ranks [1, 2, 3, 4]. Centred: x [-1.5, 0, 0, 1.5], y [-1.5, -.5, .5,
    # 1.5]; r = 4.5 / sqrt(4.5 * 5) = sqrt(0.9).
    assert spearman([10, 20, 20, 30], [1, 2, 3, 4]) == pytest.approx(math.sqrt(0.9), abs=1e-12)


@pytest.mark.parametrize("task", sorted(GLUE_TASK_METRICS))
def test_glue_scores_keys_and_scale(task):
    if task == "stsb":
        rng = np.random.default_rng(0)
        labels = rng.uniform(0, 5, 50)
        predictions = labels + rng.normal(0, 1, 50)
    else:
        predictions, labels = _random_classes(1, 3 if task in ("ax", "mnli") else 2, size=50)
    scores = glue_scores(task, predictions, labels)
    assert list(scores) == [*GLUE_TASK_METRICS[task], "score"]
    reference = {
        "accuracy": lambda: sklearn.metrics.accuracy_score(labels, predictions),
        "f1": lambda: sklearn.metrics.f1_score(labels, predictions),
        "matthews": lambda: sklearn.metrics.matthews_corrcoef(labels, predictions),
        "pearson": lambda: scipy.stats.pearsonr(predictions, labels).statistic,
        "spearman": lambda: scipy.stats.spearmanr(predictions, labels).statistic,
    }
    for name in GLUE_TASK_METRICS[task]:
        assert scores[name] == pytest.approx(100 * reference[name](), abs=1e-7)
    metric_values = [scores[name] for name in GLUE_TASK_METRICS[task]]
    assert scores["score"] == pytest.approx(sum(metric_values) / len(metric_values))
    assert 20 < max(metric_values) <= 100  # ×100, not a fraction


def test_glue_task_table():
    assert GLUE_TASK_METRICS["cola"] == ("matthews",)
    assert GLUE_TASK_METRICS["mrpc"] == GLUE_TASK_METRICS["qqp"] == ("f1", "accuracy")
    assert GLUE_TASK_METRICS["stsb"] == ("pearson", "spearman")
    assert GLUE_TASK_METRICS["ax"] == ("matthews",)
    for task in ("sst2", "mnli", "mnli_matched", "mnli_mismatched", "qnli", "rte", "wnli"):
        assert GLUE_TASK_METRICS[task] == ("accuracy",)


def test_glue_scores_mrpc_by_hand():
    # TP = 2 (0, 1), FP = 1 (2), FN = 1 (3), TN = 1 (4): F1 = 4 / (4 + 2) = 2/3, accuracy 3/5.
    scores = glue_scores("mrpc", [1, 1, 1, 0, 0], [1, 1, 0, 1, 0])
    assert scores == pytest.approx({"f1": 200 / 3, "accuracy": 60.0, "score": (200 / 3 + 60) / 2})


def test_glue_scores_errors():
    with pytest.raises(ValueError, match=r"unknown GLUE task 'sst-2'.*'sst2'"):
        glue_scores("sst-2", [0, 1], [0, 1])
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        glue_scores("sst2", [0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="test splits have no labels; score the validation split"):
        glue_scores("rte", [0, 1, 1], [NO_LABEL, NO_LABEL, NO_LABEL])
    with pytest.raises(ValueError, match="1 of 3 labels are NO_LABEL"):
        glue_scores("stsb", [0.5, 1.0, 2.0], [1.0, float(NO_LABEL), 3.0])
    with pytest.raises(ValueError, match="argmax"):
        glue_scores("sst2", np.zeros((4, 2)), [0, 1, 1, 0])
    with pytest.raises(ValueError, match="no examples"):
        accuracy([], [])
    with pytest.raises(ValueError, match="at least 2"):
        pearson([1.0], [2.0])
    with pytest.raises(ValueError, match="NaN"):
        spearman([1.0, float("nan")], [2.0, 3.0])
