"""Tests for lmjax.decoding.sample_and_rank (Meena, Adiwardana et al. 2020, section 4.3).

Decoder-only: the tiny random GPT of test_beam_search; encoder-decoder: the tiny seq2seq model of
test_seq2seq_decoding. Scores are checked against log-probabilities recomputed by full forward
passes at temperature 1.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import decoding
from lmjax.decoding import left_padded_prompts
from lmjax.decoding import seq2seq
from lmjax.decoding.sample_and_rank import (
    MEENA_NUM_SAMPLES,
    MEENA_TEMPERATURE,
    sample_and_rank,
    seq2seq_sample_and_rank,
)
from tests.decoding import test_beam_search as gpt_case
from tests.decoding import test_seq2seq_decoding as s2s_case

PROMPTS = ([5, 6, 7], [1, 2, 3, 4, 5])
EOS = 7


def test_meena_defaults():
    assert (MEENA_NUM_SAMPLES, MEENA_TEMPERATURE) == (20, 0.88)


def test_one_sample_is_plain_sampling_with_the_same_key():
    model, params = gpt_case._model_and_params()
    tokens, mask = left_padded_prompts(PROMPTS, 0)
    key = jax.random.key(7)
    ranked = sample_and_rank(model, params, tokens, mask, key, max_new_tokens=6, num_samples=1,
                             temperature=0.88, eos_id=EOS)
    sampled, log_probs = decoding.generate_with_scores(
        model, params, tokens, mask, key, 6, temperature=0.88, eos_id=EOS
    )
    assert ranked.candidates.shape == (2, 1, tokens.shape[1] + 6)
    np.testing.assert_array_equal(np.asarray(ranked.best), np.asarray(sampled))
    np.testing.assert_array_equal(np.asarray(ranked.candidates[:, 0]), np.asarray(sampled))
    np.testing.assert_allclose(ranked.best_scores, log_probs, rtol=1e-6)


def test_best_has_the_highest_untempered_log_prob():
    model, params = gpt_case._model_and_params()
    tokens, mask = left_padded_prompts(PROMPTS, 0)
    width, samples, temperature = tokens.shape[1], 6, 1.7
    key = jax.random.key(11)
    ranked = sample_and_rank(model, params, tokens, mask, key, max_new_tokens=5,
                             num_samples=samples, temperature=temperature)
    candidates, scores = np.asarray(ranked.candidates), np.asarray(ranked.scores)
    assert candidates.shape == (2, samples, width + 5) and scores.shape == (2, samples)
    # The temperature shapes the sampling: the candidates are generate's tempered samples of
    # the prompts repeated K times (row b * K + k), all with the one key ...
    repeated = decoding.generate(
        model, params, np.repeat(tokens, samples, 0), np.repeat(mask, samples, 0), key, 5,
        temperature=temperature,
    )
    np.testing.assert_array_equal(candidates.reshape(-1, width + 5), np.asarray(repeated))
    for row, prompt in enumerate(PROMPTS):
        news = [c[width:].tolist() for c in candidates[row]]
        assert len({tuple(n) for n in news}) > samples // 2, "independent samples"
        # ... but the scores are the model's own (temperature 1) log-probabilities.
        expected = gpt_case._sequence_log_probs(prompt, news)
        np.testing.assert_allclose(scores[row], expected, rtol=1e-4, atol=1e-4)
        best = int(np.argmax(expected))
        np.testing.assert_array_equal(np.asarray(ranked.best[row]), candidates[row, best])
        assert ranked.best_scores[row] == scores[row].max()


def test_mean_score_divides_by_the_length_through_eos():
    model, params = gpt_case._model_and_params()
    tokens, mask = left_padded_prompts(PROMPTS, 0)
    width, key = tokens.shape[1], jax.random.key(5)
    options = dict(max_new_tokens=6, num_samples=8, temperature=1.5, eos_id=EOS)
    total = sample_and_rank(model, params, tokens, mask, key, **options)
    mean = sample_and_rank(model, params, tokens, mask, key, score="mean", **options)
    np.testing.assert_array_equal(np.asarray(total.candidates), np.asarray(mean.candidates))
    new = np.asarray(total.candidates[:, :, width:])
    lengths = np.where((new == EOS).any(-1), (new == EOS).argmax(-1) + 1, 6)
    assert lengths.min() < 6, "some sample ends with EOS"
    np.testing.assert_allclose(mean.scores, np.asarray(total.scores) / lengths, rtol=1e-6)
    best = np.asarray(mean.scores).argmax(1)
    np.testing.assert_array_equal(
        np.asarray(mean.best), np.asarray(mean.candidates)[np.arange(2), best]
    )


def test_seq2seq_sample_and_rank():
    model, params = s2s_case._model_and_params(eos_boost=2.0)
    encoder, mask = s2s_case.ENCODER, s2s_case.ENCODER_MASK
    key, samples = jax.random.key(2), 5
    one = seq2seq_sample_and_rank(model, params, encoder, mask, key, max_new_tokens=6,
                                  num_samples=1)
    sampled = seq2seq.seq2seq_generate(model, params, encoder, mask, key, max_new_tokens=6,
                                       temperature=0.88)
    np.testing.assert_array_equal(np.asarray(one.best), np.asarray(sampled))
    ranked = seq2seq_sample_and_rank(model, params, encoder, mask, key, max_new_tokens=6,
                                     num_samples=samples, temperature=1.5)
    assert ranked.candidates.shape == (3, samples, 6) and ranked.best.shape == (3, 6)
    for row in range(3):
        outs = []
        for out in np.asarray(ranked.candidates[row]).tolist():
            length = out.index(s2s_case.EOS) + 1 if s2s_case.EOS in out else 6
            assert all(t == s2s_case.PAD for t in out[length:])
            outs.append(out[:length])
        expected = s2s_case._log_probs_of(encoder[row], mask[row], outs, eos_boost=2.0)
        np.testing.assert_allclose(ranked.scores[row], expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(
            np.asarray(ranked.best[row]), np.asarray(ranked.candidates[row, expected.argmax()])
        )


def test_bad_arguments_are_errors():
    model, params = gpt_case._model_and_params()
    prompts = jnp.asarray([[1, 2, 3]])
    with pytest.raises(ValueError, match="PRNG key"):
        sample_and_rank(model, params, prompts, max_new_tokens=2)
    with pytest.raises(ValueError, match="num_samples"):
        sample_and_rank(model, params, prompts, None, jax.random.key(0), max_new_tokens=2,
                        num_samples=0)
    with pytest.raises(ValueError, match="score="):
        sample_and_rank(model, params, prompts, None, jax.random.key(0), max_new_tokens=2,
                        score="max")
    with pytest.raises(ValueError, match="temperature"):
        sample_and_rank(model, params, prompts, None, jax.random.key(0), max_new_tokens=2,
                        temperature=0.0)


def test_meena_tiny_decodes_with_the_cache_and_ranks_samples():
    # The model family sample-and-rank was made for: lmjax Meena (helper-built), tiny preset.
    from lmjax.models import meena

    config = meena.PRESETS["tiny"]
    model = meena.Meena(config)
    encoder = jnp.asarray(np.random.default_rng(0).integers(3, 100, (2, 6)), jnp.int32)
    mask = jnp.asarray([[1] * 6, [1] * 4 + [0] * 2], jnp.int32)
    params = jax.jit(model.init)(jax.random.key(0), encoder, jnp.zeros((2, 4), jnp.int32))
    params = params["params"]
    greedy = seq2seq.seq2seq_generate(model, params, encoder, mask, max_new_tokens=4,
                                      greedy=True, eos_id=-1)
    full = jax.jit(lambda decoder: model.apply(
        {"params": params}, encoder, decoder, encoder_segment_ids=mask)["logits"])
    # Greedy by re-running the full model on the whole prefix (right-padded: causal).
    decoder = np.full((2, 5), config.decoder_start_id, np.int32)
    for step in range(4):
        decoder[:, step + 1] = np.asarray(full(jnp.asarray(decoder)))[:, step].argmax(-1)
    np.testing.assert_array_equal(np.asarray(greedy), decoder[:, 1:])
    ranked = seq2seq_sample_and_rank(model, params, encoder, mask, jax.random.key(1),
                                     max_new_tokens=4, num_samples=4)
    assert ranked.candidates.shape == (2, 4, 4)
    np.testing.assert_array_equal(ranked.best_scores, np.asarray(ranked.scores).max(1))
