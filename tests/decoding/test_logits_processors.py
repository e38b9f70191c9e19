"""Tests for lmjax.decoding.sampling: the logits processors on hand-made logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.decoding import sampling
from lmjax.decoding.sampling import MASKED_LOGIT, SamplingOptions


def _kept(logits):
    return np.asarray(logits) > MASKED_LOGIT / 2


def _distinct_logits(seed, batch=3, vocab=50):
    rng = np.random.default_rng(seed)
    return jnp.asarray(np.stack([rng.permutation(vocab) for _ in range(batch)]) * 0.1, jnp.float32)


def test_temperature_divides_logits():
    logits = jnp.array([[1.0, 2.0, -3.0]])
    np.testing.assert_allclose(sampling.temperature_scaled_logits(logits, 0.5), [[2.0, 4.0, -6.0]])
    np.testing.assert_allclose(sampling.temperature_scaled_logits(logits, 1.0), logits)
    traced = jax.jit(sampling.temperature_scaled_logits)(logits, jnp.float32(2.0))
    np.testing.assert_allclose(traced, [[0.5, 1.0, -1.5]])


@pytest.mark.parametrize("k", [1, 5, 17])
def test_top_k_keeps_exactly_the_k_largest(k):
    logits = _distinct_logits(0)
    out = sampling.top_k_filtered_logits(logits, k)
    kept = _kept(out)
    assert (kept.sum(-1) == k).all()
    for row, row_kept in zip(np.asarray(logits), kept):
        assert set(np.nonzero(row_kept)[0]) == set(np.argsort(-row)[:k])
    np.testing.assert_array_equal(np.asarray(out)[kept], np.asarray(logits)[kept])


def test_top_k_off_and_oversized_are_identity():
    logits = _distinct_logits(1)
    np.testing.assert_array_equal(sampling.top_k_filtered_logits(logits, 0), logits)
    np.testing.assert_array_equal(sampling.top_k_filtered_logits(logits, 50), logits)
    np.testing.assert_array_equal(sampling.top_k_filtered_logits(logits, 500), logits)


@pytest.mark.parametrize(
    "p, expected", [(0.4, {1}), (0.75, {1, 3}), (0.85, {1, 3, 0}), (0.99, {1, 3, 0, 2})]
)
def test_top_p_keeps_smallest_set_reaching_p(p, expected):
    # probabilities 0.15, 0.5, 0.05, 0.3 in scrambled vocabulary order
    logits = jnp.log(jnp.array([[0.15, 0.5, 0.05, 0.3]]))
    kept = _kept(sampling.top_p_filtered_logits(logits, p))[0]
    assert set(np.nonzero(kept)[0]) == expected


def test_top_p_matches_brute_force_on_random_rows():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(6, 40)).astype(np.float32) * 2
    for p in (0.1, 0.5, 0.9):
        kept = _kept(sampling.top_p_filtered_logits(jnp.asarray(logits), p))
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        for row in range(logits.shape[0]):
            order = np.argsort(-probs[row])
            size = int(np.searchsorted(np.cumsum(probs[row][order]), p) + 1)
            assert set(np.nonzero(kept[row])[0]) == set(order[:size]), (p, row)
            # the set reaches p, and dropping its least likely member would not
            mass = probs[row][kept[row]].sum()
            assert mass >= p - 1e-6
            assert mass - probs[row][kept[row]].min() < p


def test_top_p_one_is_identity_and_traced_p_works():
    logits = _distinct_logits(3)
    np.testing.assert_array_equal(sampling.top_p_filtered_logits(logits, 1.0), logits)
    eager = sampling.top_p_filtered_logits(logits, 0.3)
    traced = jax.jit(sampling.top_p_filtered_logits)(logits, jnp.float32(0.3))
    np.testing.assert_array_equal(eager, traced)


def test_processed_logits_applies_top_k_before_top_p():
    logits = jnp.log(jnp.array([[0.4, 0.3, 0.2, 0.1]]))
    # top-p alone at 0.5 needs two tokens (0.4 < 0.5)
    only_p = sampling.processed_logits(logits, SamplingOptions(top_p=0.5))
    assert _kept(only_p)[0].tolist() == [True, True, False, False]
    # after top-2 the first token has 0.4 / 0.7 = 0.57 >= 0.5 of the renormalised mass
    k_then_p = sampling.processed_logits(logits, SamplingOptions(top_k=2, top_p=0.5))
    assert _kept(k_then_p)[0].tolist() == [True, False, False, False]
    # temperature scales before truncation: at a high temperature the nucleus grows
    hot = sampling.processed_logits(logits, SamplingOptions(temperature=100.0, top_p=0.5))
    assert _kept(hot)[0].sum() == 2
    hot = sampling.processed_logits(logits, SamplingOptions(temperature=100.0, top_p=0.6))
    assert _kept(hot)[0].sum() == 3


def test_sampled_tokens_never_leave_the_top_k():
    logits = jnp.tile(_distinct_logits(4, batch=1, vocab=30), (256, 1))
    top2 = set(np.argsort(-np.asarray(logits[0]))[:2])
    options = SamplingOptions(top_k=2)
    tokens = sampling.next_tokens(jax.random.key(0), logits, options)
    assert tokens.dtype == jnp.int32 and tokens.shape == (256,)
    assert set(np.asarray(tokens).tolist()) == top2


def test_sampled_frequencies_follow_tempered_softmax():
    probs = np.array([0.6, 0.3, 0.1])
    logits = jnp.tile(jnp.log(jnp.asarray(probs, jnp.float32)), (20000, 1))
    tokens = np.asarray(
        sampling.next_tokens(jax.random.key(1), logits, SamplingOptions(temperature=2.0))
    )
    tempered = probs**0.5 / (probs**0.5).sum()
    np.testing.assert_allclose(np.bincount(tokens, minlength=3) / tokens.size, tempered, atol=0.02)


def test_greedy_and_log_probs():
    logits = jnp.array([[0.0, 3.0, 1.0], [5.0, 1.0, 5.0]])
    np.testing.assert_array_equal(
        sampling.next_tokens(None, logits, SamplingOptions(greedy=True)), [1, 0]
    )
    got = sampling.token_log_probs(logits, jnp.array([2, 1]))
    want = jax.nn.log_softmax(logits)[jnp.arange(2), jnp.array([2, 1])]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_options_reject_bad_values():
    with pytest.raises(ValueError, match="top_k"):
        SamplingOptions(top_k=-1)
    with pytest.raises(ValueError, match="top_p"):
        SamplingOptions(top_p=0.0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingOptions(top_p=1.5)
    with pytest.raises(ValueError, match="greedy=True"):
        SamplingOptions(temperature=0.0)
    SamplingOptions(temperature=0.0, greedy=True)
    with pytest.raises(ValueError, match="PRNG key"):
        sampling.next_tokens(None, jnp.zeros((1, 3)), SamplingOptions())
