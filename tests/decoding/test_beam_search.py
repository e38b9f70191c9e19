"""Tests for lmjax.decoding.beam_search on tiny random lmjax GPTs.

Every score is checked against log-probabilities recomputed by a plain (cache-free) forward pass.
"""

import dataclasses
import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import decoding
from lmjax.decoding import left_padded_prompts
from lmjax.decoding.beam_search import (
    beam_search,
    cache_batch_axes,
    gnmt_length_penalty,
)
from lmjax.models import gpt

MAX_LEN = 24


def _model(vocab_size=61, scan_layers=True):
    # The 'tiny' preset shrunk; a large init so the blocks, not the tied embedding, decide the
    # argmax (continuations vary instead of repeating the last token).
    config = dataclasses.replace(
        gpt.PRESETS["tiny"],
        vocab_size=vocab_size,
        max_len=MAX_LEN,
        num_layers=2,
        embed_dim=32,
        num_heads=4,
        mlp_dim=64,
        init_std=0.3,
        position_init_std=0.3,
        residual_scaling=False,
        scan_layers=scan_layers,
    )
    return gpt.GPT(config)


@functools.lru_cache(maxsize=None)
def _model_and_params(vocab_size=61, scan_layers=False):
    """A tiny GPT and random N(0, 0.3) parameters (drawn in numpy: no init to compile).

    Both layouts hold the same weights. Most tests decode with the unscanned model (it compiles
    faster); the scanned one, whose cache has its batch on axis 1, is checked against it.
    """
    model = _model(vocab_size)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
    rng = np.random.default_rng(vocab_size)
    params = jax.tree.map(
        lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), jnp.float32),
        nn.meta.unbox(shapes["params"]),
    )
    if scan_layers:
        return model, params
    return _model(vocab_size, scan_layers=False), gpt.to_unscanned_layout(params)


@functools.lru_cache(maxsize=None)
def _forward(vocab_size=61):
    model, params = _model_and_params(vocab_size)
    return jax.jit(lambda tokens: model.apply({"params": params}, tokens)["logits"])


def _sequence_log_probs(prompt, continuations, vocab_size=61):
    """Summed log P(continuation | prompt) of each continuation (equal lengths), float64 [S]."""
    rows = [list(prompt) + list(c) for c in continuations]
    length = len(rows[0])
    # One shape [128, MAX_LEN] (right-padded; causal, so the pads change nothing): one compile.
    tokens = np.zeros((128, MAX_LEN), np.int32)
    tokens[: len(rows), :length] = rows
    logits = np.asarray(_forward(vocab_size)(jnp.asarray(tokens)), np.float64)[: len(rows)]
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    start = len(prompt)
    picked = np.take_along_axis(
        log_probs[:, start - 1 : length - 1], tokens[: len(rows), start:length, None], axis=-1
    )
    return picked[..., 0].sum(-1)


PROMPTS = ([5, 6, 7], [1, 2, 3, 4, 5, 6], [40, 41, 42, 43, 44])


def test_beam_of_one_is_greedy():
    model, params = _model_and_params()
    tokens, mask = left_padded_prompts(PROMPTS, 0)
    greedy = decoding.generate(model, params, tokens, mask, max_new_tokens=8, greedy=True)
    beams, scores = beam_search(
        model, params, tokens, mask, beam_size=1, max_new_tokens=8, length_penalty=0.0
    )
    assert beams.shape == (3, 1, tokens.shape[1] + 8) and scores.shape == (3, 1)
    np.testing.assert_array_equal(np.asarray(beams[:, 0]), np.asarray(greedy))
    for row, prompt in enumerate(PROMPTS):
        expected = _sequence_log_probs(prompt, [np.asarray(greedy[row, tokens.shape[1]:])])[0]
        np.testing.assert_allclose(scores[row, 0], expected, rtol=1e-4, atol=1e-4)


def test_eos_ends_hypotheses_and_scores_are_penalised_log_probs():
    model, params = _model_and_params(scan_layers=True)
    prompt = list(PROMPTS[0])
    # EOS = the fourth most likely first token: on this model some beams finish (after 1, 2 and
    # 5 tokens) and one is cut by the length limit, so both kinds of score are checked.
    padded = np.zeros((128, MAX_LEN), np.int32)
    padded[0, : len(prompt)] = prompt
    first = np.argsort(np.asarray(_forward()(jnp.asarray(padded))[0, len(prompt) - 1]))[::-1]
    eos = int(first[3])
    alpha, steps = 0.6, 6
    tokens, scores = beam_search(
        model, params, jnp.asarray([prompt]), beam_size=4, max_new_tokens=steps,
        length_penalty=alpha, eos_id=eos, pad_id=0,
    )
    new = np.asarray(tokens[0, :, len(prompt):])
    scores = np.asarray(scores[0])
    assert np.all(np.diff(scores) <= 0), "beams come best first"
    assert any(eos in row for row in new.tolist()), "a finished hypothesis is kept"
    assert any(eos not in row for row in new.tolist()), "and one cut by the length limit"
    for row, score in zip(new.tolist(), scores):
        length = row.index(eos) + 1 if eos in row else steps
        assert all(t == 0 for t in row[length:]), "pads after EOS"
        assert eos not in row[: length - 1]
        expected = _sequence_log_probs(prompt, [row[:length]])[0] / float(
            gnmt_length_penalty(length, alpha)
        )
        np.testing.assert_allclose(score, expected, rtol=1e-4, atol=1e-4)


def test_best_beam_is_at_least_as_likely_as_greedy():
    model, params = _model_and_params()
    tokens, mask = left_padded_prompts(PROMPTS, 0)
    greedy = np.asarray(
        decoding.generate(model, params, tokens, mask, max_new_tokens=6, greedy=True)
    )
    beams, scores = beam_search(
        model, params, tokens, mask, beam_size=4, max_new_tokens=6, length_penalty=0.0
    )
    width = tokens.shape[1]
    gained = []
    for row, prompt in enumerate(PROMPTS):
        best = np.asarray(beams[row, 0, width:])
        best_lp, greedy_lp = _sequence_log_probs(prompt, [best, greedy[row, width:]])
        np.testing.assert_allclose(scores[row, 0], best_lp, rtol=1e-4, atol=1e-4)
        assert best_lp >= greedy_lp - 1e-4
        gained.append(best_lp - greedy_lp)
    assert max(gained) > 1e-3, "on some prompt the beam finds a likelier sequence than greedy"


def test_wide_enough_beam_is_exhaustive_search():
    vocab, steps = 5, 3
    model, params = _model_and_params(vocab_size=vocab)
    prompt = [1, 3]
    beam = vocab ** (steps - 1)
    tokens, scores = beam_search(
        model, params, jnp.asarray([prompt]), beam_size=beam, max_new_tokens=steps,
        length_penalty=0.0,
    )
    every = list(itertools.product(range(vocab), repeat=steps))  # all V**N continuations
    log_probs = _sequence_log_probs(prompt, every, vocab_size=vocab)
    order = np.argsort(-log_probs, kind="stable")
    found = [tuple(row) for row in np.asarray(tokens[0, :, len(prompt):]).tolist()]
    assert found[0] == every[order[0]], "the true argmax sequence"
    # The last step sees every continuation, so all W beams are the W best sequences.
    np.testing.assert_allclose(np.asarray(scores[0]), log_probs[order[:beam]], atol=1e-4)
    assert set(found) == {every[i] for i in order[:beam]}


def test_padded_batch_decodes_each_prompt_as_alone():
    model, params = _model_and_params()
    tokens, mask = left_padded_prompts(PROMPTS, 0)
    options = dict(beam_size=4, max_new_tokens=6, length_penalty=0.6, eos_id=7)
    batch_tokens, batch_scores = beam_search(model, params, tokens, mask, **options)
    # Alone: the most padded row, decoded by the scanned model (same weights; its cache keeps
    # the batch on axis 1), so both cache layouts are reordered right.
    scanned, scanned_params = _model_and_params(scan_layers=True)
    for row, prompt in enumerate(PROMPTS[:1]):
        alone, alone_scores = beam_search(
            scanned, scanned_params, jnp.asarray([prompt]), **options
        )
        np.testing.assert_array_equal(
            np.asarray(batch_tokens[row, :, tokens.shape[1] - len(prompt):]), np.asarray(alone[0])
        )
        np.testing.assert_allclose(batch_scores[row], alone_scores[0], rtol=1e-5, atol=1e-5)


def test_cache_batch_axes_of_scanned_and_unscanned_caches():
    scanned = cache_batch_axes(_model(scan_layers=True), 8)
    unscanned = cache_batch_axes(_model(scan_layers=False), 8)
    assert scanned["cache_index"] is None
    attention = scanned["decoder"]["layers"]["attention"]
    assert attention["cached_key"] == 1 and attention["cache_index"] is None  # [N, B, M, H, D]
    assert unscanned["decoder"]["layers_0"]["attention"]["cached_key"] == 0  # [B, M, H, D]


def test_bad_arguments_are_errors():
    model, params = _model_and_params()
    prompts = jnp.asarray([[1, 2, 3]])
    with pytest.raises(ValueError, match="beam_size must be"):
        beam_search(model, params, prompts, beam_size=0, max_new_tokens=2)
    with pytest.raises(ValueError, match="length_penalty must be >= 0"):
        beam_search(model, params, prompts, max_new_tokens=2, length_penalty=-1.0)
    with pytest.raises(ValueError, match="exceeds the model's max_len"):
        beam_search(model, params, prompts, max_new_tokens=MAX_LEN)
    with pytest.raises(ValueError, match="LEFT-padded"):
        beam_search(model, params, prompts, jnp.asarray([[1, 1, 0]]), max_new_tokens=2)
