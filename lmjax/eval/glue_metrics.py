"""GLUE metrics: accuracy, binary F1, Matthews correlation, Pearson and Spearman, per task.

Every function takes host arrays (numpy, lists, or device arrays already fetched) of N predictions
and N labels, in that order, and returns a Python float. They are written with numpy alone, so the
library does not depend on scikit-learn or scipy; ``tests/eval/test_glue_metrics.py`` checks them
against ``sklearn.metrics`` and ``scipy.stats`` on random inputs.

Which metric scores which task follows T5's ``t5/data/glue_utils.py::GLUE_METRICS`` and the GLUE
paper (Wang et al., 2018, "GLUE: A Multi-Task Benchmark and Analysis Platform for Natural Language
Understanding", table 1):

    cola                                          Matthews correlation
    sst2, mnli(_matched/_mismatched), qnli, rte, wnli   accuracy
    mrpc, qqp                                     F1 (positive class 1) and accuracy
    stsb                                          Pearson and Spearman correlation
    ax                                            Matthews correlation on the 3 MNLI classes

AX, the diagnostic set, has no public labels in TFDS (test split only; T5 gives it no metric). The
GLUE server scores it with R3, Gorodkin's (2004) K-class generalisation of the Matthews
correlation, which is what ``matthews_correlation`` computes for K = 3 [I: GLUE paper, section on
the diagnostic dataset, recalled, not checked against the server's code].

``glue_scores`` reports every metric ×100, as the GLUE leaderboard and T5's metric functions do,
and a ``score``: the mean of the task's metrics, the one number per task that the leaderboard's
GLUE average uses (e.g. MRPC's (F1 + accuracy) / 2; the leaderboard shows the pair as "F1/acc").
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lmjax.data.task_examples import NO_LABEL

__all__ = [
    "GLUE_TASK_METRICS",
    "accuracy",
    "binary_f1",
    "glue_scores",
    "matthews_correlation",
    "pearson",
    "spearman",
]

# TFDS ``glue/<config>`` name -> the metrics the GLUE leaderboard reports for it.
GLUE_TASK_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("matthews",),
    "sst2": ("accuracy",),
    "mrpc": ("f1", "accuracy"),
    "qqp": ("f1", "accuracy"),
    "stsb": ("pearson", "spearman"),
    "mnli": ("accuracy",),
    "mnli_matched": ("accuracy",),
    "mnli_mismatched": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
    "ax": ("matthews",),
}


def _paired(predictions, labels, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns predictions and labels as 1-D arrays [N] of equal, non-zero length."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.ndim != 1 or labels.ndim != 1:
        raise ValueError(
            f"{what}: predictions {predictions.shape} and labels {labels.shape} must be 1-D [N]; "
            "for a classifier pass class ids (argmax over the logits' last axis), not logits."
        )
    if predictions.shape != labels.shape:
        raise ValueError(
            f"{what}: {predictions.size} predictions for {labels.size} labels; score the "
            "predictions of exactly the examples whose labels you pass, in the same order."
        )
    if predictions.size == 0:
        raise ValueError(f"{what}: no examples to score.")
    return predictions, labels


def _paired_finite(predictions, labels, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns float64 predictions and labels [N], N >= 2, checking every value is finite."""
    predictions, labels = _paired(predictions, labels, what)
    predictions, labels = predictions.astype(np.float64), labels.astype(np.float64)
    if predictions.size < 2:
        raise ValueError(f"{what}: a correlation needs at least 2 examples, got 1.")
    if not (np.isfinite(predictions).all() and np.isfinite(labels).all()):
        raise ValueError(f"{what}: predictions or labels hold NaN or inf; check the model output.")
    return predictions, labels


def accuracy(predictions, labels) -> float:
    """Returns the fraction of predictions equal to their label.

    Args:
        predictions: [N] predicted class ids.
        labels: [N] gold class ids.
    """
    predictions, labels = _paired(predictions, labels, "accuracy")
    return float(np.mean(predictions == labels))


def binary_f1(predictions, labels, positive: int = 1) -> float:
    """Returns F1 of the ``positive`` class: the harmonic mean of precision and recall.

    ``F1 = 2 TP / (2 TP + FP + FN)``, equal to ``2 P R / (P + R)`` whenever P + R > 0. With no
    true positive it is 0.0, and also when neither side has any positive (0 / 0), the value
    ``sklearn.metrics.f1_score`` returns there by default.

    Unlike ELECTRA's ``finetune/classification/classification_metrics.py::F1Scorer``, which
    counts gold positives where the *prediction* is positive (so its recall equals its
    precision), recall here counts the true gold positives.

    Args:
        predictions: [N] predicted class ids.
        labels: [N] gold class ids.
        positive: the class whose F1 is reported (1 for MRPC "equivalent", QQP "duplicate").
    """
    predictions, labels = _paired(predictions, labels, "binary_f1")
    predicted, gold = predictions == positive, labels == positive
    true_pos = int(np.sum(predicted & gold))
    false_pos = int(np.sum(predicted & ~gold))
    false_neg = int(np.sum(~predicted & gold))
    denominator = 2 * true_pos + false_pos + false_neg
    return 2 * true_pos / denominator if denominator else 0.0


def matthews_correlation(predictions, labels) -> float:
    """Returns the Matthews correlation coefficient, binary or K-class (Gorodkin's R_K).

    With C the K x K confusion matrix over the classes seen on either side, s = N examples,
    c = trace(C) correct ones, t_k = gold count and p_k = predicted count of class k:

        MCC = (c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2))

    which for K = 2 is the familiar (TP TN - FP FN) / sqrt(...). When either factor of the
    denominator is 0 (all predictions, or all labels, one class) the coefficient is undefined
    and 0.0 is returned, as ``sklearn.metrics.matthews_corrcoef`` does. GLUE scores CoLA with
    it (x100), and the AX diagnostic with its 3-class form R3.

    Args:
        predictions: [N] predicted class ids.
        labels: [N] gold class ids.
    """
    predictions, labels = _paired(predictions, labels, "matthews_correlation")
    _, class_of = np.unique(np.concatenate([predictions, labels]), return_inverse=True)
    num = predictions.size
    pred_class, gold_class = class_of[:num], class_of[num:]
    num_classes = int(class_of.max()) + 1
    pred_counts = np.bincount(pred_class, minlength=num_classes).astype(np.float64)  # [K]
    gold_counts = np.bincount(gold_class, minlength=num_classes).astype(np.float64)  # [K]
    correct = float(np.sum(pred_class == gold_class))
    covariance = correct * num - pred_counts @ gold_counts
    pred_variance = float(num) ** 2 - pred_counts @ pred_counts
    gold_variance = float(num) ** 2 - gold_counts @ gold_counts
    if pred_variance * gold_variance == 0:
        return 0.0
    return float(covariance / np.sqrt(pred_variance * gold_variance))


def pearson(predictions, labels) -> float:
    """Returns Pearson's linear correlation coefficient between predictions and labels.

    NaN when either side is constant (the coefficient is undefined there), as
    ``scipy.stats.pearsonr`` returns; a regression head that has collapsed to one value shows
    up as NaN rather than as a plausible number.

    Args:
        predictions: [N] predicted scores (STS-B: similarity in [0, 5]), N >= 2.
        labels: [N] gold scores.
    """
    predictions, labels = _paired_finite(predictions, labels, "pearson")
    return _pearson_of_finite(predictions, labels)


def _pearson_of_finite(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r of two float64 vectors [N] already checked, NaN if one is constant."""
    if (x == x[0]).all() or (y == y[0]).all():
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    # Normalising first keeps the sums of squares away from overflow and underflow.
    x, y = x / np.linalg.norm(x), y / np.linalg.norm(y)
    return float(np.clip(x @ y, -1.0, 1.0))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Returns the 1-based ranks [N] of ``values``, tied values sharing their mean rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(counts)  # [U] rank of the last copy of each distinct value
    mean_rank = last_rank - (counts - 1) / 2.0  # [U] mean of ranks last-count+1 .. last
    return mean_rank[inverse.reshape(-1)]


def spearman(predictions, labels) -> float:
    """Returns Spearman's rank correlation: Pearson's r of the ranks, ties given mean ranks.

    Mean ("average") ranks for ties, as ``scipy.stats.spearmanr`` does; NaN when either side
    is constant.

    Args:
        predictions: [N] predicted scores, N >= 2.
        labels: [N] gold scores.
    """
    predictions, labels = _paired_finite(predictions, labels, "spearman")
    return _pearson_of_finite(_average_ranks(predictions), _average_ranks(labels))


_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "f1": binary_f1,
    "matthews": matthews_correlation,
    "pearson": pearson,
    "spearman": spearman,
}


def glue_scores(task: str, predictions, labels) -> dict[str, float]:
    """Returns the GLUE metrics of ``task`` ×100, and their mean as ``score``.

    For example ``glue_scores("mrpc", ...)`` gives ``{"f1": 88.1, "accuracy": 83.6,
    "score": 85.85}``; a one-metric task has ``score`` equal to that metric. The ×100 scale is
    the GLUE leaderboard's and T5's (``t5/evaluation/metrics.py`` returns percentages).

    Args:
        task: a TFDS ``glue`` config name, a key of ``GLUE_TASK_METRICS``.
        predictions: [N] predicted class ids, or scores for ``stsb``.
        labels: [N] gold labels of the same examples, in the same order.

    Raises:
        ValueError: unknown task, predictions and labels of different lengths, or unlabelled
            examples (``NO_LABEL``), which GLUE test splits (and AX) hold.
    """
    if task not in GLUE_TASK_METRICS:
        raise ValueError(f"unknown GLUE task {task!r}; known tasks: {sorted(GLUE_TASK_METRICS)}.")
    predictions, labels = _paired(predictions, labels, f"glue_scores({task!r})")
    unlabelled = int(np.sum(labels == NO_LABEL))
    if unlabelled:
        raise ValueError(
            f"glue_scores({task!r}): {unlabelled} of {labels.size} labels are NO_LABEL "
            f"({NO_LABEL}): test splits have no labels; score the validation split (test "
            "predictions are scored by the GLUE server)."
        )
    scores = {name: 100.0 * _METRICS[name](predictions, labels)
              for name in GLUE_TASK_METRICS[task]}
    scores["score"] = float(np.mean(list(scores.values())))
    return scores
