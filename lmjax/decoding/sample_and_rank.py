"""Meena's sample-and-rank decoding, for decoder-only and encoder-decoder lmjax models.

Adiwardana et al. 2020, "Towards a Human-like Open-Domain Chatbot" (Meena), section 4.3
(decoding): "First, we sample N independent candidate responses using plain random sampling with
temperature T. Second, we select the candidate response with the highest probability to use as
the final output." Meena uses N = 20 and T = 0.88 (the defaults here). There is no public code.

Choices (the paper does not spell them out):

* "probability" is the model's own, **untempered** probability of the candidate given the
  context: the temperature shapes only the sampling distribution. ``score='log_prob'`` (default)
  ranks by the summed token log-probabilities ``log P(response | context)``, EOS included, which
  is the paper's "highest probability"; ``score='mean'`` divides by the response length (tokens
  through EOS) for callers who want a length-neutral rank.
* "plain random sampling" means no top-k / top-p; both stay available as options (off by
  default).

The K = ``num_samples`` candidates of each input are decoded as one batch of B * K rows (row
``b * K + k`` is candidate k of input b) by ``lmjax.decoding.generate``'s jitted loop, with one
key: every row draws its own Gumbel noise, so the candidates are independent samples, and with
K = 1 the result is exactly ``generate``'s sample for the same key. Encoder-decoder models encode
each input once and repeat the encoder output K times in the cache (``lmjax.decoding.seq2seq``).

Axis legend: B batch, K samples per input, T prompt length, N max new tokens, Le encoder length.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.decoding.generate import (
    checked_cache_length,
    checked_prompt_mask,
    generated_sequences_and_scores,
    static_sampling_options,
)
from lmjax.decoding.seq2seq import (
    seq2seq_sequences_and_scores,
    checked_encoder_inputs,
    model_token,
)

SCORES = ("log_prob", "mean")
MEENA_NUM_SAMPLES = 20
MEENA_TEMPERATURE = 0.88


class RankedSamples(NamedTuple):
    """The result of sample-and-rank.

    Attributes:
      best: int32 [B, L], the highest-scoring candidate of each input.
      best_scores: float32 [B], its score.
      candidates: int32 [B, K, L], every candidate (L = T + N for decoder-only models, the prompt
        included; L = N for encoder-decoder models), ``pad_id`` after EOS.
      scores: float32 [B, K], their scores.
    """

    best: jax.Array
    best_scores: jax.Array
    candidates: jax.Array
    scores: jax.Array


def ranking_scores(
    new_tokens: jax.Array, log_probs: jax.Array, eos_id, score: str
) -> jax.Array:
    """Returns the rank score of each candidate, float32 [R].

    Args:
      new_tokens: int32 [R, N], the generated tokens (``pad_id`` after EOS).
      log_probs: float32 [R], their summed untempered log-probabilities (EOS included).
      eos_id: int32 scalar; negative = none (every candidate has N tokens).
      score: 'log_prob' (the sum) or 'mean' (the sum over the length through EOS).
    """
    if score == "log_prob":
        return log_probs
    ends = (new_tokens == eos_id) & (eos_id >= 0)  # [R, N]
    length = jnp.where(
        jnp.any(ends, axis=1), jnp.argmax(ends, axis=1) + 1, new_tokens.shape[1]
    )  # [R]
    return log_probs / length.astype(jnp.float32)


def _ranked(sequences, new_tokens, log_probs, eos_id, *, num_samples, score) -> RankedSamples:
    """Groups the B * K rows by input and picks each input's best candidate."""
    scores = ranking_scores(new_tokens, log_probs, eos_id, score).reshape(-1, num_samples)
    candidates = sequences.reshape(scores.shape + sequences.shape[1:])  # [B, K, L]
    best_index = jnp.argmax(scores, axis=1)  # [B], the first on ties
    best = jnp.take_along_axis(candidates, best_index[:, None, None], axis=1)[:, 0]  # [B, L]
    best_scores = jnp.take_along_axis(scores, best_index[:, None], axis=1)[:, 0]
    return RankedSamples(best, best_scores, candidates, scores)


@functools.partial(
    jax.jit, static_argnames=("model", "num_samples", "max_new_tokens", "options", "score")
)
def _decoder_only_ranked(
    model, params, prompts, prompt_mask, key, temperature, eos_id, pad_id, *, num_samples,
    max_new_tokens, options, score,
):
    sequences, log_probs = generated_sequences_and_scores(
        model,
        params,
        jnp.repeat(prompts, num_samples, axis=0),  # [B * K, T]
        jnp.repeat(prompt_mask, num_samples, axis=0),
        key,
        temperature,
        eos_id,
        pad_id,
        max_new_tokens=max_new_tokens,
        options=options,
    )  # [B * K, T + N], [B * K]
    new_tokens = sequences[:, prompts.shape[1] :]
    return _ranked(
        sequences, new_tokens, log_probs, eos_id, num_samples=num_samples, score=score
    )


@functools.partial(
    jax.jit, static_argnames=("model", "num_samples", "max_new_tokens", "options", "score")
)
def _seq2seq_ranked(
    model, params, encoder_inputs, encoder_segment_ids, key, temperature, eos_id, pad_id,
    decoder_start_id, *, num_samples, max_new_tokens, options, score,
):
    sequences, log_probs = seq2seq_sequences_and_scores(
        model, params, encoder_inputs, encoder_segment_ids, key, temperature, eos_id, pad_id,
        decoder_start_id, max_new_tokens=max_new_tokens, options=options, repeats=num_samples,
    )  # [B * K, N], [B * K]
    return _ranked(
        sequences, sequences, log_probs, eos_id, num_samples=num_samples, score=score
    )


def _checked_rank_options(num_samples, max_new_tokens, score, temperature) -> None:
    if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1 (Meena: 20), got {num_samples!r}.")
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}.")
    if score not in SCORES:
        raise ValueError(f"score={score!r}; choose one of {SCORES}.")
    if isinstance(temperature, (int, float)) and not temperature > 0:
        raise ValueError(
            f"temperature must be > 0 (Meena: 0.88), got {temperature!r}; sample-and-rank samples."
        )


def sample_and_rank(
    model: nn.Module,
    params,
    prompts,
    prompt_mask=None,
    key: Optional[jax.Array] = None,
    *,
    max_new_tokens: int,
    num_samples: int = MEENA_NUM_SAMPLES,
    temperature=MEENA_TEMPERATURE,
    top_k: int = 0,
    top_p: float = 1.0,
    score: str = "log_prob",
    eos_id: Optional[int] = None,
    pad_id: int = 0,
) -> RankedSamples:
    """Meena's sample-and-rank with a decoder-only model (see the module docstring).

    Compiles once per (model, B, T, num_samples, max_new_tokens, top_k, top_p, score); the
    params, prompts, key, temperature, eos_id and pad_id are traced.

    Args:
      model: an lmjax decoder-only module following the KV-cache contract.
      params: its parameters.
      prompts: int [B, T], LEFT-padded contexts.
      prompt_mask: [B, T], nonzero on real tokens; None = all real.
      key: PRNG key (required).
      max_new_tokens: N >= 1.
      num_samples: K candidates per prompt (Meena: 20).
      temperature: sampling temperature (Meena: 0.88); never applied to the scores.
      top_k, top_p: optional truncation of the sampling distribution (off = Meena's plain
        sampling).
      score: 'log_prob' (summed untempered log-probability, default) or 'mean' (per token).
      eos_id: a candidate ends after this token (kept); None = never.
      pad_id: written after EOS.

    Returns:
      ``RankedSamples`` with ``best`` [B, T + N] and ``candidates`` [B, K, T + N].

    Example:
      >>> ranked = sample_and_rank(model, params, prompts, mask, key, max_new_tokens=32)
      >>> reply = ranked.best[:, prompts.shape[1]:]
    """
    _checked_rank_options(num_samples, max_new_tokens, score, temperature)
    options, temperature, key = static_sampling_options(False, key, temperature, top_k, top_p)
    prompts = jnp.asarray(prompts, jnp.int32)
    prompt_mask = checked_prompt_mask(prompts, prompt_mask)
    checked_cache_length(model, prompts.shape[1], max_new_tokens)
    return _decoder_only_ranked(
        model,
        params,
        prompts,
        prompt_mask,
        key,
        jnp.asarray(temperature, jnp.float32),
        jnp.int32(-1 if eos_id is None else eos_id),
        jnp.int32(pad_id),
        num_samples=int(num_samples),
        max_new_tokens=int(max_new_tokens),
        options=options,
        score=score,
    )


def seq2seq_sample_and_rank(
    model: nn.Module,
    params,
    encoder_inputs,
    encoder_mask=None,
    key: Optional[jax.Array] = None,
    *,
    max_new_tokens: int,
    num_samples: int = MEENA_NUM_SAMPLES,
    temperature=MEENA_TEMPERATURE,
    top_k: int = 0,
    top_p: float = 1.0,
    score: str = "log_prob",
    eos_id: Optional[int] = None,
    pad_id: Optional[int] = None,
    decoder_start_id: Optional[int] = None,
) -> RankedSamples:
    """Meena's sample-and-rank with an encoder-decoder model (Meena itself is one).

    The encoder runs once per input; the K candidates decode as B * K rows. Arguments as
    ``sample_and_rank``, with the encoder inputs of ``lmjax.decoding.seq2seq.seq2seq_generate``
    (``eos_id`` / ``pad_id`` / ``decoder_start_id`` None = the model config's; a negative
    ``eos_id`` = never stop).

    Returns:
      ``RankedSamples`` with ``best`` [B, N] and ``candidates`` [B, K, N] (new tokens only).
    """
    _checked_rank_options(num_samples, max_new_tokens, score, temperature)
    options, temperature, key = static_sampling_options(False, key, temperature, top_k, top_p)
    encoder_inputs, encoder_segment_ids = checked_encoder_inputs(encoder_inputs, encoder_mask)
    return _seq2seq_ranked(
        model,
        params,
        encoder_inputs,
        encoder_segment_ids,
        key,
        jnp.asarray(temperature, jnp.float32),
        jnp.int32(model_token(model, eos_id, "eos_id")),
        jnp.int32(model_token(model, pad_id, "pad_id")),
        jnp.int32(model_token(model, decoder_start_id, "decoder_start_id")),
        num_samples=int(num_samples),
        max_new_tokens=int(max_new_tokens),
        options=options,
        score=score,
    )
