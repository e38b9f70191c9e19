"""Autoregressive generation with the KV cache of any lmjax decoder-only model.

The pieces, each usable on its own (beam search, seq2seq decoding, sample-and-rank and PPLM build
on them):

* ``empty_cache``          the model's zeroed ``'cache'`` collection for [B, max_length].
* ``prompt_positions``     position ids of left-padded prompts.
* ``prefill_logits``       one model call over the whole prompt -> next-token logits + cache.
* ``decode_step_logits``   one model call over one token per row -> next-token logits + cache.
* ``emitted``              chooses a token from logits and records it (EOS / padding bookkeeping).
* ``decoded_state``        prefill, then ONE ``lax.while_loop`` over new tokens (stops early when
                           every row has emitted EOS).
* ``generated_sequences_and_scores``  the jitted ``decoded_state`` (also given a ready cache: the
                           encoder-decoder path of ``lmjax.decoding.seq2seq``).
* ``generate``             the checked entry point: int32 [B, T + max_new_tokens].

The model contract (see ``lmjax/models``): ``model.apply({'params': p, 'cache': c}, chunk,
positions=..., segment_ids=..., decode=True, mutable=['cache'])`` writes the chunk's keys and values
at the cache index, attends to cached keys at slots <= the query's and whose stored segment id is
nonzero, advances the index by the chunk length, and returns ``({'logits': [B, T, V], ...},
{'cache': ...})``. Prompts of unequal length are LEFT-padded: every row's last prompt token sits in
the last column, so one prefill call yields every row's next-token logits, and all rows then
advance in lock step. Pads get segment id 0 (never attended to) and real tokens positions
0, 1, ..., so a padded prompt decodes exactly as the same prompt alone.

This mirrors ``openai/gpt-2:src/sample.py`` (``sample_sequence``: a prefill ``step`` over the
context, then a ``tf.while_loop`` that feeds one sampled token at a time with the ``past`` keys and
values), with a fixed-size cache so shapes are static and ``generate`` compiles once per
(B, T, max_new_tokens, sampling options).

Axis legend: B batch, T prompt length, N max new tokens, V vocab.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.decoding import sampling
from lmjax.decoding.sampling import SamplingOptions

Cache = Any
Params = Any


def empty_cache(model: nn.Module, batch_size: int, max_length: int) -> Cache:
    """Returns the model's ``'cache'`` collection, all zeros, sized for [batch_size, max_length].

    Only shapes are traced (``jax.eval_shape``), so no parameters are initialised.

    Args:
      model: an lmjax decoder-only module following the KV-cache contract.
      batch_size: B.
      max_length: the number of cache slots (prompt length + new tokens).
    """
    dummy = jnp.zeros((batch_size, max_length), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), dummy, decode=True))
    if "cache" not in shapes:
        raise ValueError(
            f"{type(model).__name__}.init(..., decode=True) made no 'cache' collection; "
            "generate needs a model with the lmjax KV cache."
        )
    cache_shapes = nn.meta.unbox(shapes["cache"])
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), cache_shapes)


def prompt_positions(prompt_mask: jax.Array) -> jax.Array:
    """Returns int32 [B, T] positions of left-padded prompts: 0, 1, ... over real tokens, 0 on pads.

    Args:
      prompt_mask: [B, T], nonzero (True/1) on real tokens.
    """
    real = (prompt_mask != 0).astype(jnp.int32)
    return jnp.maximum(jnp.cumsum(real, axis=1) - 1, 0)


def prefill_logits(
    model: nn.Module, params: Params, cache: Cache, prompts: jax.Array, prompt_mask: jax.Array
) -> tuple[jax.Array, Cache]:
    """Runs the prompt through the model in one call; returns (next-token logits, cache).

    Args:
      model: the decoder-only module.
      params: its parameters.
      cache: an empty cache (``empty_cache``) with at least T slots.
      prompts: int32 [B, T], left-padded.
      prompt_mask: [B, T], nonzero on real tokens; the last column must be real in every row.

    Returns:
      float32 [B, V] logits for the first new token, and the cache holding the prompt.
    """
    segment_ids = (prompt_mask != 0).astype(jnp.int32)
    outputs, mutated = model.apply(
        {"params": params, "cache": cache},
        prompts.astype(jnp.int32),
        positions=prompt_positions(prompt_mask),
        segment_ids=segment_ids,
        decode=True,
        mutable=["cache"],
    )
    return outputs["logits"][:, -1].astype(jnp.float32), mutated["cache"]


def decode_step_logits(
    model: nn.Module, params: Params, cache: Cache, tokens: jax.Array, positions: jax.Array
) -> tuple[jax.Array, Cache]:
    """Feeds one token per row; returns (float32 [B, V] next-token logits, updated cache).

    Args:
      model: the decoder-only module.
      params: its parameters.
      cache: the cache after the prompt and any earlier steps.
      tokens: int32 [B], the tokens just emitted.
      positions: int32 [B], their positions.
    """
    outputs, mutated = model.apply(
        {"params": params, "cache": cache},
        tokens[:, None].astype(jnp.int32),
        positions=positions[:, None].astype(jnp.int32),
        segment_ids=jnp.ones((tokens.shape[0], 1), jnp.int32),
        decode=True,
        mutable=["cache"],
    )
    return outputs["logits"][:, 0].astype(jnp.float32), mutated["cache"]


@flax.struct.dataclass
class DecodeState:
    """The loop carry of ``decoded_state``.

    Attributes:
      step: int32 scalar, number of new tokens emitted so far.
      sequences: int32 [B, T + N], the prompt followed by the emitted tokens (pads after EOS and
        beyond ``step``).
      last_tokens: int32 [B], the most recently emitted token of each row.
      positions: int32 [B], the position the next fed token will have.
      done: bool [B], whether the row has emitted EOS.
      log_probs: float32 [B], sum of the model's (unprocessed) log-probabilities of the emitted,
        non-pad tokens of each row.
      cache: the model's KV cache.
    """

    step: jax.Array
    sequences: jax.Array
    last_tokens: jax.Array
    positions: jax.Array
    done: jax.Array
    log_probs: jax.Array
    cache: Cache


def emitted(
    state: DecodeState,
    logits: jax.Array,
    key: Optional[jax.Array],
    options: SamplingOptions,
    temperature,
    prompt_length: int,
    eos_id,
    pad_id,
) -> DecodeState:
    """Returns the state after choosing and recording the token of ``state.step``.

    The sampling key of step i is ``fold_in(key, i)``, so a given (key, prompts) pair always yields
    the same tokens. Rows already done emit ``pad_id``.

    Args:
      state: the state before this token.
      logits: float32 [B, V] next-token logits.
      key: the generation's PRNG key (None when greedy).
      options: sampling options (static).
      temperature: scalar (may be traced).
      prompt_length: T, the column where new tokens start.
      eos_id: int32 scalar end-of-sequence token (may be traced); negative = never stop early.
      pad_id: int32 scalar token written after EOS (may be traced).
    """
    step_key = None if key is None else jax.random.fold_in(key, state.step)
    tokens = sampling.next_tokens(step_key, logits, options, temperature)
    tokens = jnp.where(state.done, jnp.asarray(pad_id, jnp.int32), tokens)
    log_probs = state.log_probs + jnp.where(
        state.done, 0.0, sampling.token_log_probs(logits, tokens)
    )
    sequences = jax.lax.dynamic_update_slice(
        state.sequences, tokens[:, None], (jnp.int32(0), prompt_length + state.step)
    )
    done = state.done | ((tokens == eos_id) & (eos_id >= 0))
    return state.replace(
        step=state.step + 1,
        sequences=sequences,
        last_tokens=tokens,
        done=done,
        log_probs=log_probs,
    )


def decoded_state(
    model: nn.Module,
    params: Params,
    prompts: jax.Array,
    prompt_mask: jax.Array,
    key: Optional[jax.Array],
    temperature,
    eos_id,
    pad_id,
    *,
    max_new_tokens: int,
    options: SamplingOptions,
    cache: Optional[Cache] = None,
) -> DecodeState:
    """Prefills the prompts, then emits up to ``max_new_tokens`` tokens in one ``while_loop``.

    The loop ends after ``max_new_tokens`` tokens or once every row has emitted ``eos_id``; the
    columns not reached hold ``pad_id``. The cache has T + max_new_tokens - 1 slots: the last
    emitted token is never fed back.

    Args:
      model, params: the decoder-only module and its parameters.
      prompts: int32 [B, T], left-padded.
      prompt_mask: [B, T], nonzero on real tokens.
      key: PRNG key (None when greedy).
      temperature: scalar, may be traced.
      eos_id: int32 scalar end-of-sequence token, negative = none (may be traced).
      pad_id: int32 scalar token written after EOS (may be traced).
      max_new_tokens: N >= 1 (static).
      options: sampling options (static).
      cache: the empty cache to prefill (T + max_new_tokens - 1 slots); None = ``empty_cache``.
        Encoder-decoder decoding passes one that already holds the encoder output
        (``lmjax.decoding.seq2seq``).

    Returns:
      The final ``DecodeState``.
    """
    batch, prompt_length = prompts.shape
    if cache is None:
        cache = empty_cache(model, batch, prompt_length + max_new_tokens - 1)
    logits, cache = prefill_logits(model, params, cache, prompts, prompt_mask)
    pad_tail = jnp.full((batch, max_new_tokens), pad_id, jnp.int32)  # [B, N]
    state = DecodeState(
        step=jnp.int32(0),
        sequences=jnp.concatenate([prompts.astype(jnp.int32), pad_tail], axis=1),  # [B, T + N]
        last_tokens=jnp.zeros((batch,), jnp.int32),
        positions=jnp.sum((prompt_mask != 0).astype(jnp.int32), axis=1),  # [B] = prompt lengths
        done=jnp.zeros((batch,), bool),
        log_probs=jnp.zeros((batch,), jnp.float32),
        cache=cache,
    )
    emit = functools.partial(
        emitted,
        key=key,
        options=options,
        temperature=temperature,
        prompt_length=prompt_length,
        eos_id=eos_id,
        pad_id=pad_id,
    )
    state = emit(state, logits)

    def should_continue(state: DecodeState) -> jax.Array:
        return (state.step < max_new_tokens) & ~jnp.all(state.done)

    def fed_and_emitted(state: DecodeState) -> DecodeState:
        logits, cache = decode_step_logits(
            model, params, state.cache, state.last_tokens, state.positions
        )
        state = state.replace(cache=cache, positions=state.positions + 1)
        return emit(state, logits)

    return jax.lax.while_loop(should_continue, fed_and_emitted, state)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "options"))
def generated_sequences_and_scores(
    model, params, prompts, prompt_mask, key, temperature, eos_id, pad_id, cache=None, *,
    max_new_tokens, options,
):
    """The jitted ``decoded_state``: (int32 [B, T + N] sequences, float32 [B] log-probabilities).

    Arguments as ``decoded_state`` (checked by the callers: ``generate_with_scores``,
    ``lmjax.decoding.seq2seq``, ``lmjax.decoding.sample_and_rank``). Compiles once per (model,
    shapes, max_new_tokens, options).
    """
    state = decoded_state(
        model,
        params,
        prompts,
        prompt_mask,
        key,
        temperature,
        eos_id,
        pad_id,
        max_new_tokens=max_new_tokens,
        options=options,
        cache=cache,
    )
    return state.sequences, state.log_probs


def checked_cache_length(model: nn.Module, prompt_length: int, max_new_tokens: int) -> None:
    """Raises ValueError when T + N - 1 cache slots exceed the model's ``config.max_len``."""
    max_len = getattr(getattr(model, "config", None), "max_len", None)
    if max_len is not None and prompt_length + max_new_tokens - 1 > max_len:
        raise ValueError(
            f"prompt length {prompt_length} + max_new_tokens {max_new_tokens} - 1 exceeds the "
            f"model's max_len={max_len} positions / cache slots; shorten the prompts or ask for "
            "fewer new tokens."
        )


def checked_prompt_mask(prompts, prompt_mask):
    """Returns an int32 mask for ``prompts``; checks shapes and, when concrete, left padding."""
    if prompts.ndim != 2:
        raise ValueError(f"prompts must be int [B, T], got shape {prompts.shape}.")
    if prompt_mask is None:
        return jnp.ones(prompts.shape, jnp.int32)
    if not isinstance(prompt_mask, jax.Array):
        prompt_mask = np.asarray(prompt_mask)
    if prompt_mask.shape != prompts.shape:
        raise ValueError(
            f"prompt_mask shape {prompt_mask.shape} differs from prompts shape {prompts.shape}."
        )
    if not isinstance(prompt_mask, jax.core.Tracer):
        real = np.asarray(prompt_mask) != 0
        if not real[:, -1].all():
            rows = np.nonzero(~real[:, -1])[0].tolist()
            raise ValueError(
                f"prompt rows {rows} end in padding: prompts must be LEFT-padded (real tokens "
                "last) and non-empty."
            )
        if (np.diff(real.astype(np.int8), axis=1) < 0).any():
            raise ValueError(
                "prompt_mask has a pad after a real token: prompts must be LEFT-padded."
            )
    return (jnp.asarray(prompt_mask) != 0).astype(jnp.int32)


def static_sampling_options(
    greedy: bool, key: Optional[jax.Array], temperature, top_k: int, top_p: float
) -> tuple[SamplingOptions, Any, Optional[jax.Array]]:
    """Returns (static ``SamplingOptions``, the temperature to trace, the key to use).

    The temperature is kept out of the static options so that a jitted caller does not recompile
    per temperature; greedy decoding drops the key and the temperature.

    Raises:
      ValueError: sampling without a key, or a bad temperature / top_k / top_p.
    """
    if greedy:
        return SamplingOptions(greedy=True), 1.0, None
    if key is None:
        raise ValueError("generate needs a PRNG key to sample; pass key=... or greedy=True.")
    # Validates top_k / top_p / a concrete temperature; the temperature itself stays dynamic.
    concrete = temperature if isinstance(temperature, (int, float)) else 1.0
    SamplingOptions(temperature=concrete, top_k=int(top_k), top_p=float(top_p))
    return SamplingOptions(top_k=int(top_k), top_p=float(top_p)), temperature, key


def generate_with_scores(
    model: nn.Module,
    params: Params,
    prompts,
    prompt_mask=None,
    key: Optional[jax.Array] = None,
    max_new_tokens: int = 32,
    temperature=1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    eos_id: Optional[int] = None,
    pad_id: Optional[int] = 0,
) -> tuple[jax.Array, jax.Array]:
    """Like ``generate``, also returning each row's summed log-probability of its new tokens.

    Returns:
      (int32 [B, T + max_new_tokens] sequences, float32 [B] sum of the model's unprocessed
      log-probabilities of the emitted non-pad tokens, EOS included).
    """
    prompts = jnp.asarray(prompts, jnp.int32)
    prompt_mask = checked_prompt_mask(prompts, prompt_mask)
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}.")
    if max_new_tokens == 0:
        return prompts, jnp.zeros((prompts.shape[0],), jnp.float32)
    checked_cache_length(model, prompts.shape[1], max_new_tokens)
    options, temperature, key = static_sampling_options(greedy, key, temperature, top_k, top_p)
    return generated_sequences_and_scores(
        model,
        params,
        prompts,
        prompt_mask,
        key,
        jnp.asarray(temperature, jnp.float32),
        jnp.int32(-1 if eos_id is None else eos_id),
        jnp.int32(0 if pad_id is None else pad_id),
        max_new_tokens=max_new_tokens,
        options=options,
    )


def generate(
    model: nn.Module,
    params: Params,
    prompts,
    prompt_mask=None,
    key: Optional[jax.Array] = None,
    max_new_tokens: int = 32,
    temperature=1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    eos_id: Optional[int] = None,
    pad_id: Optional[int] = 0,
) -> jax.Array:
    """Continues each prompt by up to ``max_new_tokens`` tokens with the model's KV cache.

    One prefill call over the (left-padded) prompts, then one jitted ``lax.while_loop`` feeding a
    token per step. Compiles once per (model, B, T, max_new_tokens, top_k, top_p, greedy); the
    prompts, params, key, temperature, eos_id and pad_id are traced. Reference: ``openai/gpt-2:
    src/sample.py`` ``sample_sequence`` (temperature, then top-k, then top-p; see
    ``lmjax.decoding.sampling``).

    Args:
      model: an lmjax decoder-only module following the KV-cache contract.
      params: its parameters (the ``'params'`` collection).
      prompts: int [B, T] token ids, LEFT-padded.
      prompt_mask: [B, T], nonzero/True on real tokens; None = all real.
      key: PRNG key; step i samples with ``fold_in(key, i)``. Not needed when ``greedy``.
      max_new_tokens: N, the number of new columns.
      temperature: > 0; divides the logits.
      top_k: keep the k most likely tokens; 0 = off.
      top_p: nucleus mass; 1.0 = off.
      greedy: argmax decoding (ignores key, temperature, top_k, top_p).
      eos_id: a row stops after emitting this token (it is kept); None = never.
      pad_id: written in a row's columns after its EOS (None = 0).

    Returns:
      int32 [B, T + N]: the prompts followed by the new tokens.

    Example:
      >>> tokens = generate(model, params, prompts, mask, jax.random.key(0), 20, top_k=40)
    """
    sequences, _ = generate_with_scores(
        model, params, prompts, prompt_mask, key, max_new_tokens, temperature, top_k, top_p,
        greedy, eos_id, pad_id,
    )
    return sequences
