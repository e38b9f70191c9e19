"""Beam search with the KV cache of any lmjax decoder-only model.

GPT-3 decodes its free-form few-shot answers with "beam search with a beam width of 4 and a length
penalty of alpha = 0.6" (Brown et al. 2020, section 2.4). The length penalty is GNMT's
``((5 + |Y|) / 6) ** alpha`` (Wu et al. 2016, "Google's Neural Machine Translation System",
section 7, eq. 14), the same ``brevity_penalty`` as ``google-research/t5x:t5x/decoding.py``:
a finished hypothesis scores ``log P(Y | X) / ((5 + |Y|) / 6) ** alpha``, where ``|Y|`` counts the
new tokens, the end-of-sequence token included.

The search follows the structure of t5x's ``beam_search`` (facts read there, code our own):

* ``alive`` beams: the ``W`` best hypotheses that have not emitted EOS, with their summed
  log-probabilities; at the start only beam 0 is live (the others hold ``NEG_INF`` so that the
  first step does not pick the same token ``W`` times).
* each step scores all ``W * V`` one-token extensions, keeps the best ``2 W`` (at most ``W`` of
  them end in EOS, so at least ``W`` live ones remain), moves the EOS-ending ones to the
  ``finished`` set (length-penalised, best ``W`` kept) and the best ``W`` others become the new
  alive beams. The KV cache rows are reordered to follow each new beam's parent.
* the loop stops after ``max_new_tokens`` tokens, or once no alive beam can still beat the worst
  finished one: with ``alpha >= 0`` an alive beam's best possible final score is its current
  log-probability divided by the largest penalty, that of ``max_new_tokens`` tokens.
* at the end the alive beams (cut by the length limit) compete with the finished ones, so a row
  without any EOS still returns ``W`` hypotheses.

The cache holds ``B * W`` rows (row ``b * W + w`` is beam ``w`` of prompt ``b``); the prompts are
prefilled once at batch ``B`` and each cache array is repeated ``W`` times along its batch axis.
Batch axes are found from the cache's shapes at two batch sizes, so scanned caches
(``[N, B, M, ...]``), unscanned ones (``[B, M, ...]``) and scalar indices are all handled.

Axis legend: B batch, W beams, T prompt length, N max new tokens, V vocab, M cache slots.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.decoding.generate import (
    _checked_prompt_mask,
    decode_step_logits,
    empty_cache,
    prefill_logits,
)

Cache = Any
Params = Any

# Finite "minus infinity" (as t5x's NEG_INF): sums of it with real log-probabilities stay ordered
# and free of NaN.
NEG_INF = -1.0e7


def gnmt_length_penalty(length, alpha) -> jax.Array:
    """Returns ``((5 + length) / 6) ** alpha`` (Wu et al. 2016, eq. 14; t5x ``brevity_penalty``).

    Args:
      length: the number of new tokens of a hypothesis (int or array).
      alpha: the length-penalty exponent; 0 = no penalty.
    """
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** jnp.asarray(alpha, jnp.float32)


def cache_batch_axes(model: nn.Module, max_length: int) -> Any:
    """Returns, for each array of the model's cache, its batch axis (None when it has none).

    The cache is shaped at batch sizes 1 and 2 (``jax.eval_shape``, nothing allocated); the axis
    whose size changes is the batch axis.

    Raises:
      ValueError: when a cache array grows along more than one axis with the batch.
    """
    one = jax.eval_shape(lambda: empty_cache(model, 1, max_length))
    two = jax.eval_shape(lambda: empty_cache(model, 2, max_length))

    def batch_axis(a, b):
        changed = [i for i, (x, y) in enumerate(zip(a.shape, b.shape)) if x != y]
        if len(changed) > 1:
            raise ValueError(
                f"a cache array of shape {b.shape} changes along axes {changed} with the batch; "
                "beam search needs one batch axis per cache array."
            )
        return changed[0] if changed else None

    return jax.tree.map(batch_axis, one, two)


def beam_gathered_cache(cache: Cache, axes: Any, rows: jax.Array) -> Cache:
    """Returns the cache with its batch rows replaced by ``cache[rows]`` (scalars untouched).

    Args:
      cache: the model's cache collection.
      axes: ``cache_batch_axes`` of the same tree.
      rows: int32 [R], the source row of each new row.
    """
    return jax.tree.map(
        lambda leaf, axis: leaf if axis is None else jnp.take(leaf, rows, axis=axis),
        cache,
        axes,
    )


@flax.struct.dataclass
class BeamState:
    """The loop carry of ``beam_search``.

    Attributes:
      step: int32 scalar, number of new tokens chosen so far.
      logits: float32 [B, W, V], next-token logits of the alive beams.
      alive_sequences: int32 [B, W, T + N].
      alive_log_probs: float32 [B, W], summed log-probabilities of the alive beams' new tokens.
      alive_tokens: int32 [B, W], the alive beams' last token (fed at the next step).
      finished_sequences: int32 [B, W, T + N], EOS-ended hypotheses (pads after EOS).
      finished_scores: float32 [B, W], their length-penalised scores (``NEG_INF`` = empty slot).
      positions: int32 [B * W], the position the next fed token will have.
      cache: the model's KV cache with B * W rows.
    """

    step: jax.Array
    logits: jax.Array
    alive_sequences: jax.Array
    alive_log_probs: jax.Array
    alive_tokens: jax.Array
    finished_sequences: jax.Array
    finished_scores: jax.Array
    positions: jax.Array
    cache: Cache


def _top_k_gathered(scores: jax.Array, k: int, *arrays: jax.Array):
    """Returns (top-k scores [B, k], each array gathered at their indices along axis 1)."""
    top_scores, index = jax.lax.top_k(scores, k)  # [B, k]
    gathered = [
        jnp.take_along_axis(a, index.reshape(index.shape + (1,) * (a.ndim - 2)), axis=1)
        for a in arrays
    ]
    return top_scores, gathered


def _chosen(state: BeamState, prompt_length, alpha, eos_id) -> tuple[BeamState, jax.Array]:
    """Extends every alive beam by one token; updates the alive and finished sets.

    Returns:
      The new state (its cache not yet reordered) and int32 [B * W], the cache row of each new
      alive beam's parent.
    """
    batch, beams, vocab = state.logits.shape
    log_probs = jax.nn.log_softmax(state.logits.astype(jnp.float32), axis=-1)  # [B, W, V]
    candidates = (state.alive_log_probs[:, :, None] + log_probs).reshape(batch, beams * vocab)
    k = min(2 * beams, beams * vocab)
    top_log_probs, flat_index = jax.lax.top_k(candidates, k)  # [B, 2W]
    parents = flat_index // vocab  # [B, 2W]
    tokens = (flat_index % vocab).astype(jnp.int32)  # [B, 2W]
    sequences = jnp.take_along_axis(state.alive_sequences, parents[:, :, None], axis=1)
    column = prompt_length + state.step
    sequences = jax.lax.dynamic_update_slice(
        sequences, tokens[:, :, None], (jnp.int32(0), jnp.int32(0), column)
    )  # [B, 2W, T + N]
    ends = (tokens == eos_id) & (eos_id >= 0)  # [B, 2W]

    # New alive beams: the best W candidates that do not end in EOS.
    alive_scores = jnp.where(ends, NEG_INF, top_log_probs)
    alive_log_probs, (alive_sequences, alive_tokens, alive_parents) = _top_k_gathered(
        alive_scores, beams, sequences, tokens, parents
    )

    # Finished: the old finished set and the EOS-ending candidates, best W by penalised score.
    new_scores = jnp.where(
        ends, top_log_probs / gnmt_length_penalty(state.step + 1, alpha), NEG_INF
    )
    finished_scores, (finished_sequences,) = _top_k_gathered(
        jnp.concatenate([state.finished_scores, new_scores], axis=1),
        beams,
        jnp.concatenate([state.finished_sequences, sequences], axis=1),
    )
    rows = (jnp.arange(batch)[:, None] * beams + alive_parents).reshape(-1)  # [B * W]
    return state.replace(
        step=state.step + 1,
        alive_sequences=alive_sequences,
        alive_log_probs=alive_log_probs,
        alive_tokens=alive_tokens,
        finished_sequences=finished_sequences,
        finished_scores=finished_scores,
    ), rows


@functools.partial(jax.jit, static_argnames=("model", "beam_size", "max_new_tokens"))
def _beam_search(
    model, params, prompts, prompt_mask, alpha, eos_id, pad_id, *, beam_size, max_new_tokens
):
    batch, prompt_length = prompts.shape
    beams = beam_size
    slots = prompt_length + max_new_tokens - 1
    axes = cache_batch_axes(model, slots)
    cache = empty_cache(model, batch, slots)
    logits, cache = prefill_logits(model, params, cache, prompts, prompt_mask)  # [B, V]
    cache = beam_gathered_cache(cache, axes, jnp.repeat(jnp.arange(batch), beams))
    prompt_lengths = jnp.sum((prompt_mask != 0).astype(jnp.int32), axis=1)  # [B]
    sequences = jnp.concatenate(
        [prompts.astype(jnp.int32), jnp.full((batch, max_new_tokens), pad_id, jnp.int32)], axis=1
    )  # [B, T + N]
    state = BeamState(
        step=jnp.int32(0),
        logits=jnp.broadcast_to(logits[:, None], (batch, beams, logits.shape[-1])),
        alive_sequences=jnp.broadcast_to(sequences[:, None], (batch, beams, sequences.shape[1])),
        alive_log_probs=jnp.where(jnp.arange(beams) == 0, 0.0, NEG_INF)[None].repeat(batch, 0),
        alive_tokens=jnp.zeros((batch, beams), jnp.int32),
        finished_sequences=jnp.broadcast_to(
            sequences[:, None], (batch, beams, sequences.shape[1])
        ),
        finished_scores=jnp.full((batch, beams), NEG_INF, jnp.float32),
        positions=jnp.repeat(prompt_lengths, beams),
        cache=cache,
    )

    def chosen_with_cache(state: BeamState) -> BeamState:
        state, rows = _chosen(state, prompt_length, alpha, eos_id)
        return state.replace(cache=beam_gathered_cache(state.cache, axes, rows))

    state = chosen_with_cache(state)
    largest_penalty = gnmt_length_penalty(max_new_tokens, alpha)

    def should_continue(state: BeamState) -> jax.Array:
        best_alive = state.alive_log_probs[:, 0] / largest_penalty  # [B], upper bound
        worst_finished = state.finished_scores[:, -1]  # [B]; NEG_INF while a slot is empty
        search_over = jnp.all(worst_finished > best_alive)
        return (state.step < max_new_tokens) & ~search_over

    def fed_and_chosen(state: BeamState) -> BeamState:
        logits, cache = decode_step_logits(
            model, params, state.cache, state.alive_tokens.reshape(-1), state.positions
        )
        state = state.replace(
            logits=logits.reshape(batch, beams, -1), cache=cache, positions=state.positions + 1
        )
        return chosen_with_cache(state)

    state = jax.lax.while_loop(should_continue, fed_and_chosen, state)

    # The alive beams, cut by the length limit, compete with the finished ones.
    alive_scores = state.alive_log_probs / gnmt_length_penalty(state.step, alpha)
    scores, (sequences,) = _top_k_gathered(
        jnp.concatenate([state.finished_scores, alive_scores], axis=1),
        beams,
        jnp.concatenate([state.finished_sequences, state.alive_sequences], axis=1),
    )
    return sequences, scores


def beam_search(
    model: nn.Module,
    params: Params,
    prompts,
    prompt_mask=None,
    *,
    beam_size: int = 4,
    max_new_tokens: int,
    length_penalty: float = 0.6,
    eos_id: Optional[int] = None,
    pad_id: int = 0,
) -> tuple[jax.Array, jax.Array]:
    """Returns the ``beam_size`` best continuations of each prompt and their scores.

    One prefill call over the (left-padded) prompts, then one jitted ``lax.while_loop`` that
    extends all beams by a token per step through the KV cache (see the module docstring).
    Compiles once per (model, B, T, beam_size, max_new_tokens); the params, prompts,
    length penalty, eos_id and pad_id are traced. References: Wu et al. 2016 (length penalty);
    ``google-research/t5x:t5x/decoding.py`` ``beam_search`` and ``brevity_penalty``.

    Args:
      model: an lmjax decoder-only module following the KV-cache contract.
      params: its ``'params'`` collection.
      prompts: int [B, T] token ids, LEFT-padded.
      prompt_mask: [B, T], nonzero on real tokens; None = all real.
      beam_size: W >= 1, hypotheses kept per prompt.
      max_new_tokens: N >= 1, the most tokens a hypothesis adds.
      length_penalty: GNMT alpha >= 0; 0 ranks by summed log-probability.
      eos_id: a hypothesis ends after emitting this token (kept); None = only the length limit.
      pad_id: written after a hypothesis's EOS.

    Returns:
      (int32 [B, W, T + N] prompts followed by the new tokens, best first; float32 [B, W] scores
      ``log P(new tokens | prompt) / ((5 + length) / 6) ** length_penalty``). When fewer than W
      distinct hypotheses exist (W > V ** N), the extra slots score about ``NEG_INF``.

    Raises:
      ValueError: for a bad beam size, length, penalty or prompt padding.

    Example:
      >>> tokens, scores = beam_search(model, params, prompts, mask, max_new_tokens=8)
      >>> best = tokens[:, 0, prompts.shape[1]:]   # [B, N]
    """
    if not isinstance(beam_size, (int, np.integer)) or beam_size < 1:
        raise ValueError(f"beam_size must be an int >= 1, got {beam_size!r}.")
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}.")
    if not float(length_penalty) >= 0.0:
        raise ValueError(
            f"length_penalty must be >= 0 (GPT-3 uses 0.6; 0 = none), got {length_penalty!r}."
        )
    prompts = jnp.asarray(prompts, jnp.int32)
    prompt_mask = _checked_prompt_mask(prompts, prompt_mask)
    max_len = getattr(getattr(model, "config", None), "max_len", None)
    if max_len is not None and prompts.shape[1] + max_new_tokens - 1 > max_len:
        raise ValueError(
            f"prompt length {prompts.shape[1]} + max_new_tokens {max_new_tokens} - 1 exceeds the "
            f"model's max_len={max_len}; shorten the prompts or ask for fewer new tokens."
        )
    return _beam_search(
        model,
        params,
        prompts,
        prompt_mask,
        jnp.float32(length_penalty),
        jnp.int32(-1 if eos_id is None else eos_id),
        jnp.int32(pad_id),
        beam_size=int(beam_size),
        max_new_tokens=int(max_new_tokens),
    )
