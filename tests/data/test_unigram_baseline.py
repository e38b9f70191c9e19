"""Perplexity helpers and the add-one unigram baseline, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmjax.eval import (
    bits_per_token,
    perplexity,
    unigram_baseline_loss,
    unigram_baseline_loss_of_batches,
    unigram_log_probs,
)


def test_add_one_unigram_by_hand():
    # Counts over V=4 from [0, 0, 1, 0]: (3, 1, 0, 0); smoothed (4, 2, 1, 1) / 8.
    np.testing.assert_allclose(np.exp(unigram_log_probs(np.array([0, 0, 1, 0]), 4)),
                               [4 / 8, 2 / 8, 1 / 8, 1 / 8])
    # Zero-weight tokens (padding) are not counted: the 3 below is ignored.
    np.testing.assert_allclose(
        np.exp(unigram_log_probs(np.array([0, 0, 1, 3]), 4, weights=np.array([1, 1, 1, 0]))),
        [3 / 7, 2 / 7, 1 / 7, 1 / 7])


def test_baseline_loss_is_weighted_like_the_lm_loss():
    train = np.array([[0, 0, 1], [0, 2, 2]])  # counts (3, 1, 2) -> smoothed (4, 2, 3) / 9
    targets = np.array([[0, 1, 2, 1]])
    weights = np.array([[1.0, 1.0, 0.0, 1.0]])  # the third target crosses a document boundary
    expected = -(math.log(4 / 9) + 2 * math.log(2 / 9)) / 3
    assert unigram_baseline_loss(train, targets, 3, eval_weights=weights) == pytest.approx(expected)
    batches = [{"targets": targets, "weights": weights}]
    fit = [{"targets": train, "weights": np.ones_like(train, dtype=np.float32)}]
    assert unigram_baseline_loss_of_batches(fit, batches, 3) == pytest.approx(expected)


def test_perplexity_and_bits_per_token():
    assert perplexity(2 * math.log(8.0), 2) == pytest.approx(8.0)
    assert bits_per_token(2 * math.log(8.0), 2) == pytest.approx(3.0)
    # A uniform model over V tokens has perplexity V.
    uniform = unigram_baseline_loss(np.arange(10), np.arange(10), 10)
    assert perplexity(uniform * 10, 10) == pytest.approx(10.0)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="outside"):
        unigram_baseline_loss(np.array([0, 5]), np.array([0]), 3)
    with pytest.raises(ValueError, match="positive weight"):
        unigram_baseline_loss(np.array([0]), np.array([1]), 3, eval_weights=np.array([0.0]))
    with pytest.raises(ValueError, match="same shape"):
        unigram_log_probs(np.array([0, 1]), 3, weights=np.array([1.0]))
    with pytest.raises(ValueError, match="at least one token"):
        perplexity(1.0, 0)
