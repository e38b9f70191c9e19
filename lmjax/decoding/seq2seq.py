"""Decoding of lmjax encoder-decoder models (T5, BART, Meena) with the decoder-only machinery.

The encoder runs once (``model.apply(..., method='encode')``). The decoder then is a decoder-only
model whose "prompt" is the ``decoder_start_id`` token [B, 1]: ``ConditionedDecoder`` wraps a
seq2seq module so that it satisfies the decoder-only KV-cache contract of
``lmjax.decoding.generate``, keeping the encoder output and the encoder segment ids in its
``'cache'`` collection next to the decoder's self-attention cache. So the prefill / step /
``while_loop`` of ``generate`` and the beam search of ``beam_search`` (which reorders every batch
row of the cache by its parent beam; the encoder rows are gathered along with the keys and values)
are reused, not duplicated. This is how Hugging Face's ``generate`` treats encoder-decoder models
too (``transformers generation/utils.py``: encoder outputs computed once in
``_prepare_encoder_decoder_kwargs_for_generation``, the decoder started from
``decoder_start_token_id``, encoder outputs expanded ``num_beams`` times), and how t5x's
``EncoderDecoderModel.predict_batch_with_aux`` calls ``decoding.beam_search`` with the encoded
inputs repeated per beam in the cache.

The seq2seq model contract (``lmjax/models``, T5 / BART / Meena): ``encode(encoder_inputs, *,
encoder_segment_ids)`` -> [B, Le, E]; ``decode(encoded, decoder_inputs, *, encoder_segment_ids,
decoder_segment_ids, decoder_positions, decode=True)`` -> ``{'logits', 'hidden'}`` using the
decoder's KV cache; the cache is made by ``model.init(key, zeros [B, Le], zeros [B, M],
decode=True)['cache']``; ``config`` has ``pad_id``, ``eos_id`` and ``decoder_start_id``.

Cache tree of ``ConditionedDecoder`` (batch on axis 0 of the encoder entries)::

    encoded              [B, Le, E]   the encoder output (the model's compute dtype)
    encoder_segment_ids  int32 [B, Le] 1 on real encoder tokens, 0 on padding
    seq2seq/...                       the seq2seq model's own decoder cache, M slots

Axis legend: B batch, Le encoder length, E embed, N max new tokens, W beams, K samples, V vocab,
M cache slots.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.decoding import beam_search as beam_lib
from lmjax.decoding.generate import (
    checked_cache_length,
    empty_cache,
    generated_sequences_and_scores,
    static_sampling_options,
)

Cache = Any
Params = Any


class ConditionedDecoder(nn.Module):
    """A seq2seq model's decoder, conditioned on an encoder output kept in its cache, seen as a
    decoder-only model (the contract of ``lmjax.decoding.generate``).

    Its parameters are ``{'seq2seq': <the seq2seq model's params>}``. Only ``decode=True`` is
    supported: the encoder output lives in the cache, filled by ``encoded_cache``.

    Attributes:
      seq2seq: the encoder-decoder module (T5, BART, Meena, ...).
      encoder_length: Le, the encoder length the cache is sized for.
    """

    seq2seq: nn.Module
    encoder_length: int

    @property
    def config(self) -> Any:
        """The wrapped model's config (``generate`` reads ``max_len`` from it when present)."""
        return self.seq2seq.config

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        positions: Optional[jax.Array] = None,
        segment_ids: Optional[jax.Array] = None,
        deterministic: bool = True,
        decode: bool = False,
    ) -> dict[str, jax.Array]:
        """One decoder call with the KV cache.

        Args:
          inputs: int32 [B, T] decoder tokens (at init: a [B, M] dummy sizing the cache).
          positions: int32 [B, T] decoder positions (default: the cache index onwards).
          segment_ids: int32 [B, T] decoder segment ids stored in the cache (default: ones).
          deterministic: disables dropout.
          decode: must be True.

        Returns:
          ``{'logits': float32 [B, T, V], 'hidden': [B, T, E]}``.
        """
        if not decode:
            raise ValueError(
                "ConditionedDecoder only decodes with the KV cache (decode=True); call the "
                "seq2seq model itself for a full forward pass."
            )
        batch = inputs.shape[0]
        if self.is_initializing():
            # The contract's cache init: one full call at decode=True sizes every cache array.
            dummy_encoder = jnp.zeros((batch, self.encoder_length), jnp.int32)
            outputs = self.seq2seq(dummy_encoder, inputs, decode=True, deterministic=True)
            shape, dtype = outputs["encoded"].shape, outputs["encoded"].dtype  # [B, Le, E]
            self.variable("cache", "encoded", jnp.zeros, shape, dtype)
            self.variable(
                "cache", "encoder_segment_ids", jnp.zeros, (batch, self.encoder_length), jnp.int32
            )
            return {"logits": outputs["logits"], "hidden": outputs["hidden"]}
        if not self.has_variable("cache", "encoded"):
            raise ValueError(
                "ConditionedDecoder needs the encoder output in its cache: build the cache with "
                "lmjax.decoding.seq2seq.encoded_cache."
            )
        encoded = self.get_variable("cache", "encoded")
        encoder_segment_ids = self.get_variable("cache", "encoder_segment_ids")
        if segment_ids is None:
            segment_ids = jnp.ones(inputs.shape, jnp.int32)
        return self.seq2seq.decode(
            encoded,
            inputs,
            encoder_segment_ids=encoder_segment_ids,
            decoder_segment_ids=segment_ids,
            decoder_positions=positions,
            deterministic=deterministic,
            decode=True,
        )


def encoded_cache(
    model: nn.Module,
    params: Params,
    encoder_inputs: jax.Array,
    encoder_segment_ids: jax.Array,
    num_slots: int,
    repeats: int = 1,
) -> tuple[ConditionedDecoder, Cache]:
    """Encodes once; returns (the ``ConditionedDecoder``, its cache holding the encoder output).

    Args:
      model: the seq2seq module.
      params: its parameters.
      encoder_inputs: int32 [B, Le].
      encoder_segment_ids: int32 [B, Le], 1 on real tokens and 0 on padding.
      num_slots: M, decoder cache slots (1 start token + N new tokens - 1: the last new token is
        never fed back).
      repeats: K, decoder rows per input (row ``b * K + k`` decodes input ``b``; sample-and-rank):
        the encoder still runs once per input.

    Returns:
      The decoder and its cache with B * K rows.
    """
    batch, encoder_length = encoder_inputs.shape
    decoder = ConditionedDecoder(model, encoder_length)
    cache = dict(empty_cache(decoder, batch * repeats, num_slots))
    encoded = model.apply(
        {"params": params},
        encoder_inputs,
        encoder_segment_ids=encoder_segment_ids,
        method="encode",
    )  # [B, Le, E]
    cache["encoded"] = jnp.repeat(encoded.astype(cache["encoded"].dtype), repeats, axis=0)
    cache["encoder_segment_ids"] = jnp.repeat(encoder_segment_ids, repeats, axis=0)
    return decoder, cache


def _start_tokens(batch: int, decoder_start_id) -> tuple[jax.Array, jax.Array]:
    """The decoder "prompt": ([B, 1] start tokens, [B, 1] mask of ones)."""
    start = jnp.full((batch, 1), decoder_start_id, jnp.int32)
    return start, jnp.ones((batch, 1), jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "options", "repeats"))
def seq2seq_sequences_and_scores(
    model, params, encoder_inputs, encoder_segment_ids, key, temperature, eos_id, pad_id,
    decoder_start_id, *, max_new_tokens, options, repeats=1,
):
    """The jitted decoding of ``seq2seq_generate_with_scores`` (arguments checked by callers).

    With ``repeats`` K > 1 every input is decoded K times (rows ``b * K + k``; sample-and-rank).

    Returns:
      (int32 [B * K, N] new tokens, float32 [B * K] summed log-probabilities).
    """
    decoder, cache = encoded_cache(
        model, params, encoder_inputs, encoder_segment_ids, max_new_tokens, repeats
    )
    start, start_mask = _start_tokens(encoder_inputs.shape[0] * repeats, decoder_start_id)
    sequences, log_probs = generated_sequences_and_scores(
        decoder, {"seq2seq": params}, start, start_mask, key, temperature, eos_id, pad_id, cache,
        max_new_tokens=max_new_tokens, options=options,
    )
    return sequences[:, 1:], log_probs  # [B * K, N], [B * K]


@functools.partial(
    jax.jit,
    static_argnames=("model", "beam_size", "max_new_tokens", "length_penalty_kind",
                     "early_stopping"),
)
def _seq2seq_beams(
    model, params, encoder_inputs, encoder_segment_ids, alpha, eos_id, pad_id, decoder_start_id,
    *, beam_size, max_new_tokens, length_penalty_kind, early_stopping,
):
    decoder, cache = encoded_cache(
        model, params, encoder_inputs, encoder_segment_ids, max_new_tokens
    )
    start, start_mask = _start_tokens(encoder_inputs.shape[0], decoder_start_id)
    sequences, scores = beam_lib.beams_and_scores(
        decoder, {"seq2seq": params}, start, start_mask, alpha, eos_id, pad_id, cache,
        beam_size=beam_size, max_new_tokens=max_new_tokens,
        length_penalty_kind=length_penalty_kind, early_stopping=early_stopping,
    )
    return sequences[:, :, 1:], scores  # [B, W, N], [B, W]


def model_token(model: nn.Module, given: Optional[int], field: str) -> int:
    """``given``, else ``model.config.<field>``; a clear error when neither exists."""
    if given is not None:
        return int(given)
    value = getattr(getattr(model, "config", None), field, None)
    if value is None:
        raise ValueError(
            f"{type(model).__name__}.config has no {field!r}; pass {field}=... explicitly."
        )
    return int(value)


def checked_encoder_inputs(encoder_inputs, encoder_mask) -> tuple[jax.Array, jax.Array]:
    """Returns (int32 [B, Le] inputs, int32 [B, Le] segment ids: 1 real, 0 padding).

    The mask may be None (all real) or [B, Le] nonzero on real tokens, padded anywhere (HF's
    ``attention_mask``; usually right padding).

    Raises:
      ValueError: wrong ranks or shapes, or a row without any real token.
    """
    encoder_inputs = jnp.asarray(encoder_inputs, jnp.int32)
    if encoder_inputs.ndim != 2:
        raise ValueError(f"encoder_inputs must be int [B, Le], got shape {encoder_inputs.shape}.")
    if encoder_mask is None:
        return encoder_inputs, jnp.ones(encoder_inputs.shape, jnp.int32)
    if not isinstance(encoder_mask, jax.core.Tracer):
        mask = np.asarray(encoder_mask)
        if mask.shape != encoder_inputs.shape:
            raise ValueError(
                f"encoder_mask shape {mask.shape} differs from encoder_inputs shape "
                f"{encoder_inputs.shape}."
            )
        empty = np.nonzero(~(mask != 0).any(axis=1))[0].tolist()
        if empty:
            raise ValueError(f"encoder rows {empty} are all padding; give each row a token.")
    return encoder_inputs, (jnp.asarray(encoder_mask) != 0).astype(jnp.int32)


def seq2seq_generate_with_scores(
    model: nn.Module,
    params: Params,
    encoder_inputs,
    encoder_mask=None,
    key: Optional[jax.Array] = None,
    *,
    max_new_tokens: int,
    greedy: bool = False,
    temperature=1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_id: Optional[int] = None,
    pad_id: Optional[int] = None,
    decoder_start_id: Optional[int] = None,
) -> tuple[jax.Array, jax.Array]:
    """Like ``seq2seq_generate``, also returning each row's summed log-probability.

    Returns:
      (int32 [B, N] new tokens, float32 [B] sum of the model's unprocessed log-probabilities of
      the emitted non-pad tokens, EOS included).
    """
    encoder_inputs, encoder_segment_ids = checked_encoder_inputs(encoder_inputs, encoder_mask)
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}.")
    checked_cache_length(model, 1, max_new_tokens)
    options, temperature, key = static_sampling_options(greedy, key, temperature, top_k, top_p)
    return seq2seq_sequences_and_scores(
        model,
        params,
        encoder_inputs,
        encoder_segment_ids,
        key,
        jnp.asarray(temperature, jnp.float32),
        jnp.int32(model_token(model, eos_id, "eos_id")),
        jnp.int32(model_token(model, pad_id, "pad_id")),
        jnp.int32(model_token(model, decoder_start_id, "decoder_start_id")),
        max_new_tokens=int(max_new_tokens),
        options=options,
    )


def seq2seq_generate(
    model: nn.Module,
    params: Params,
    encoder_inputs,
    encoder_mask=None,
    key: Optional[jax.Array] = None,
    *,
    max_new_tokens: int,
    greedy: bool = False,
    temperature=1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_id: Optional[int] = None,
    pad_id: Optional[int] = None,
    decoder_start_id: Optional[int] = None,
) -> jax.Array:
    """Decodes up to ``max_new_tokens`` tokens per input with an encoder-decoder model.

    Encodes once, then runs ``lmjax.decoding.generate``'s prefill and jitted ``while_loop`` on the
    ``ConditionedDecoder`` from ``[decoder_start_id]`` (temperature, then top-k, then top-p, as
    ``lmjax.decoding.sampling``). Compiles once per (model, B, Le, max_new_tokens, top_k, top_p,
    greedy). Reference: ``transformers generation/utils.py::GenerationMixin._sample`` for
    encoder-decoder models (greedy here is token-identical to its ``do_sample=False``).

    Args:
      model: an lmjax seq2seq module (the contract in the module docstring).
      params: its parameters.
      encoder_inputs: int [B, Le] token ids.
      encoder_mask: [B, Le], nonzero on real tokens (any padding side); None = all real.
      key: PRNG key; step i samples with ``fold_in(key, i)``. Not needed when ``greedy``.
      max_new_tokens: N >= 1.
      greedy: argmax decoding.
      temperature, top_k, top_p: sampling options (see ``lmjax.decoding.generate``).
      eos_id: a row stops after this token (kept); None = ``model.config.eos_id``; negative =
        never.
      pad_id: written after a row's EOS; None = ``model.config.pad_id``.
      decoder_start_id: the first decoder input; None = ``model.config.decoder_start_id``.

    Returns:
      int32 [B, N], the new tokens (the start token not included), ``pad_id`` after EOS.

    Example:
      >>> out = seq2seq_generate(t5, params, inputs, mask, max_new_tokens=32, greedy=True)
    """
    sequences, _ = seq2seq_generate_with_scores(
        model, params, encoder_inputs, encoder_mask, key, max_new_tokens=max_new_tokens,
        greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p, eos_id=eos_id,
        pad_id=pad_id, decoder_start_id=decoder_start_id,
    )
    return sequences


def seq2seq_beam_search(
    model: nn.Module,
    params: Params,
    encoder_inputs,
    encoder_mask=None,
    *,
    beam_size: int = 4,
    max_new_tokens: int,
    length_penalty: float = 0.6,
    eos_id: Optional[int] = None,
    pad_id: Optional[int] = None,
    decoder_start_id: Optional[int] = None,
    length_penalty_kind: str = "gnmt",
    early_stopping: Union[None, bool, str] = None,
) -> tuple[jax.Array, jax.Array]:
    """Returns the ``beam_size`` best outputs of an encoder-decoder model for each input.

    ``lmjax.decoding.beam_search`` on the ``ConditionedDecoder`` (the encoder output is repeated
    per beam in the cache and reordered with it); the options are those of ``beam_search``. HF
    ``generate(num_beams=W, length_penalty=a, early_stopping=e, max_new_tokens=N,
    do_sample=False)`` equals ``length_penalty_kind='hf', early_stopping=e``; t5x's
    ``beam_search`` (``alpha``) equals the defaults.

    Args:
      model, params: the seq2seq module and its parameters.
      encoder_inputs: int [B, Le].
      encoder_mask: [B, Le], nonzero on real tokens; None = all real.
      beam_size: W >= 1.
      max_new_tokens: N >= 1.
      length_penalty: the exponent alpha (t5x rules: >= 0).
      eos_id, pad_id, decoder_start_id: None = the model config's.
      length_penalty_kind: 'gnmt' or 'hf'.
      early_stopping: None (t5x rules) or True / False / 'never' (HF rules).

    Returns:
      (int32 [B, W, N] new tokens, best first, ``pad_id`` after EOS; float32 [B, W] scores
      ``log P / penalty(length)``).
    """
    beam_lib.checked_beam_options(
        beam_size, max_new_tokens, length_penalty, length_penalty_kind, early_stopping
    )
    encoder_inputs, encoder_segment_ids = checked_encoder_inputs(encoder_inputs, encoder_mask)
    checked_cache_length(model, 1, max_new_tokens)
    return _seq2seq_beams(
        model,
        params,
        encoder_inputs,
        encoder_segment_ids,
        jnp.float32(length_penalty),
        jnp.int32(model_token(model, eos_id, "eos_id")),
        jnp.int32(model_token(model, pad_id, "pad_id")),
        jnp.int32(model_token(model, decoder_start_id, "decoder_start_id")),
        beam_size=int(beam_size),
        max_new_tokens=int(max_new_tokens),
        length_penalty_kind=length_penalty_kind,
        early_stopping=early_stopping,
    )
