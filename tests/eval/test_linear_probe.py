"""The linear probe separates what is linearly separable, and only that."""

import numpy as np
import pytest

from lmjax.eval.linear_probe import (
    fit_linear_probe,
    mean_pooled_features,
    probe_accuracy,
)


def _blobs(rng, n_per_class, centers, scale):
    features = np.concatenate(
        [c + scale * rng.standard_normal((n_per_class, len(c))) for c in centers]
    )
    labels = np.repeat(np.arange(len(centers)), n_per_class)
    return features.astype(np.float32), labels


def test_probe_reads_separable_classes_and_not_noise():
    rng = np.random.default_rng(0)
    centers = 3.0 * rng.standard_normal((4, 16))
    train_x, train_y = _blobs(rng, 50, centers, 1.0)
    test_x, test_y = _blobs(rng, 50, centers, 1.0)
    probe = fit_linear_probe(train_x, train_y, 4)
    assert probe_accuracy(probe, test_x, test_y) > 0.95
    # Labels independent of the features: held-out accuracy stays near chance (1/4).
    shuffled = rng.permutation(train_y)
    noise = fit_linear_probe(train_x, shuffled, 4)
    assert probe_accuracy(noise, test_x, rng.permutation(test_y)) < 0.45


def test_probe_is_scale_invariant_through_standardisation():
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((3, 8))
    x, y = _blobs(rng, 40, centers, 0.3)
    a = fit_linear_probe(x, y, 3).predict(x)
    b = fit_linear_probe(1000.0 * x + 5.0, y, 3).predict(1000.0 * x + 5.0)
    np.testing.assert_array_equal(a, b)


def test_mean_pooling_ignores_padding():
    hidden = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    batch = {"attention_mask": np.array([[1, 1, 0], [1, 0, 0]])}
    pooled = mean_pooled_features(lambda b: hidden, [batch])
    np.testing.assert_allclose(pooled, [[1.0, 2.0], [6.0, 7.0]])


def test_bad_labels_are_errors():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        fit_linear_probe(np.zeros((3, 2)), np.array([0, 1, 2]), 2)
    with pytest.raises(ValueError, match="features must be"):
        fit_linear_probe(np.zeros((3,)), np.array([0, 1, 0]), 2)
