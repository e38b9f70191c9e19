"""Reference multi-head dot-product attention with a chunked KV cache.

Axis legend: B batch, Lq / Lk query / key length, H heads, D head dim, E embed, T chunk length,
M max cache length.

``MultiHeadAttention`` projects with kernels ``query/key/value`` [E, H, D] and ``out`` [H, D, E]
(Vaswani et al., 2017, §3.2.2), scales logits by ``1/sqrt(D)`` (GPT-2 ``src/model.py``
``multihead_attn``: ``w * tf.rsqrt(d_head)``), masks with a boolean mask (True = attend, see
:mod:`lmjax.layers.masks`), adds an optional additive bias (T5's relative position bias), applies
softmax in float32, then dropout on the attention weights. With ``return_scores=True`` it also
returns the pre-softmax scores (``attention_scores``), the per-layer outputs TinyBERT distils.

KV cache (``decode=True``), flax's lm1b cache generalised to chunks:

- Initialise with ``model.init(key, jnp.zeros((B, M), jnp.int32), decode=True)``: every
  attention layer creates the 'cache' collection ``cached_key`` / ``cached_value`` [B, M, H, D]
  (compute dtype), ``cached_segment_ids`` int32 [B, M] and ``cache_index`` int32 [], all zeros,
  sized by the dummy input. (During init the layer runs ordinary attention on the dummy input.)
- ``apply(..., decode=True, mutable=['cache'])`` with a chunk of ``T >= 1`` tokens writes its keys,
  values and segment ids at slots ``[cache_index, cache_index + T)``, lets query ``t`` (at slot
  ``cache_index + t``) attend to every cached key at a slot ``<=`` its own whose stored segment id
  is nonzero, and advances ``cache_index`` by ``T``. ``segment_ids=None`` stores ones (all real), so
  left-padded prompts are prefilled with ``segment_ids`` (1 = real, 0 = pad) and later single tokens
  need none. A ``window`` restricts queries to keys within ``window`` slots (locally banded layers).
  Writing past ``M`` is not checked inside jit (``dynamic_update_slice`` clamps): callers keep
  ``cache_index + T <= M``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax import axes
from lmjax.layers import masks as masks_lib
from lmjax.layers.dense import DenseGeneral, Initializer, default_kernel_init

_HEAD_AXES = (axes.BATCH, axes.LENGTH, axes.ACT_HEADS, axes.ACT_KV)


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    mask: jax.Array | None = None,
    bias: jax.Array | None = None,
    *,
    scale: float | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
    dtype: Any = jnp.float32,
) -> tuple[jax.Array, jax.Array]:
    """Scaled dot-product attention, softmax in float32.

    Args:
      query: [B, Lq, H, D].
      key: [B, Lk, H, D].
      value: [B, Lk, H, D].
      mask: bool, broadcastable to [B, H, Lq, Lk]; True = attend.
      bias: float, broadcastable to [B, H, Lq, Lk], added to the logits before masking.
      scale: multiplies the logits (default ``1/sqrt(D)``).
      dropout_rate: dropout on the attention weights.
      dropout_rng: PRNG key for dropout (needed when ``dropout_rate > 0`` and not deterministic).
      deterministic: disables dropout.
      dtype: the dtype of the weights-times-values product.

    Returns:
      (out [B, Lq, H, D] in ``dtype``, weights float32 [B, H, Lq, Lk]).
    """
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    logits = jnp.einsum(
        "bqhd,bkhd->bhqk",
        jnp.asarray(query, dtype),
        jnp.asarray(key, dtype),
        preferred_element_type=jnp.float32,
    )  # [B, H, Lq, Lk]
    logits = logits * jnp.float32(scale)
    if bias is not None:
        logits = logits + jnp.asarray(bias, jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1)  # [B, H, Lq, Lk] float32
    if not deterministic and dropout_rate > 0.0:
        if dropout_rng is None:
            raise ValueError("dot_product_attention: dropout_rate > 0 needs a dropout_rng.")
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
        weights_for_values = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
    else:
        weights_for_values = weights
    out = jnp.einsum(
        "bhqk,bkhd->bqhd", jnp.asarray(weights_for_values, dtype), jnp.asarray(value, dtype)
    )  # [B, Lq, H, D]
    return out, weights


def attention_scores(
    query: jax.Array,
    key: jax.Array,
    bias: jax.Array | None = None,
    *,
    scale: float | None = None,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """The pre-softmax attention scores ``scale * q.k + bias``, before any mask.

    These are the logits ``dot_product_attention`` masks and normalises (same einsum, scale and
    bias); TinyBERT (Jiao et al., 2020, §3.1, ``TinyBERT/transformer/modeling.py``
    ``BertSelfAttention`` returning ``attention_scores``) distils them. Masking is left to the
    caller: TinyBERT's reference adds -10000 at padded keys and its loss zeroes every entry
    <= -100, which equals zeroing the padded-key entries of these unmasked scores.

    Args:
      query: [B, Lq, H, D].
      key: [B, Lk, H, D].
      bias: float, broadcastable to [B, H, Lq, Lk], or None.
      scale: multiplies the logits (default ``1/sqrt(D)``).
      dtype: the dtype of the q.k product's inputs (accumulated in float32).

    Returns:
      float32 [B, H, Lq, Lk].
    """
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    scores = jnp.einsum(
        "bqhd,bkhd->bhqk",
        jnp.asarray(query, dtype),
        jnp.asarray(key, dtype),
        preferred_element_type=jnp.float32,
    )  # [B, H, Lq, Lk]
    scores = scores * jnp.float32(scale)
    if bias is not None:
        scores = scores + jnp.asarray(bias, jnp.float32)
    return scores


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate q/k/v kernels [E, H, D] and an out kernel [H, D, E].

    Attributes:
      num_heads: H.
      head_dim: D.
      out_features: width of the output (default: the query input's width E).
      use_bias: biases on the projections (GPT/BERT: yes; T5: no).
      dropout_rate: dropout on the attention weights.
      logit_scale: multiplies q.k (default ``1/sqrt(D)``; T5 uses 1.0).
      kernel_init: initialiser of the query/key/value kernels.
      out_kernel_init: initialiser of the out kernel (GPT-2 residual scaling).
      bias_init: initialiser of the biases.
      dtype: the compute dtype (also the KV cache's dtype).
      param_dtype: the storage dtype.
      return_scores: also return the pre-softmax scores float32 [B, H, Lq, Lk] (unmasked; see
        ``attention_scores``): ``__call__`` then returns ``(out, scores)``.
      query_kernel_init: initialiser of the query kernel alone (default ``kernel_init``); T5
        folds the ``1/sqrt(D)`` logit scale into it (``t5x/examples/t5/layers.py``
        ``MultiHeadDotProductAttention``: ``query_init = kernel_init / sqrt(head_dim)``).
    """

    num_heads: int
    head_dim: int
    out_features: int | None = None
    use_bias: bool = True
    dropout_rate: float = 0.0
    logit_scale: float | None = None
    kernel_init: Initializer = default_kernel_init
    out_kernel_init: Initializer = default_kernel_init
    bias_init: Initializer = nn.initializers.zeros_init()
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    return_scores: bool = False
    query_kernel_init: Initializer | None = None

    @nn.compact
    def __call__(
        self,
        inputs_q: jax.Array,
        inputs_kv: jax.Array | None = None,
        mask: jax.Array | None = None,
        bias: jax.Array | None = None,
        *,
        window: int | jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        deterministic: bool = True,
        decode: bool = False,
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """Attends from ``inputs_q`` to ``inputs_kv``.

        Args:
          inputs_q: [B, Lq, E] queries (and keys/values when ``inputs_kv`` is None).
          inputs_kv: [B, Lk, E] for cross-attention, else None (self-attention).
          mask: bool broadcastable to [B, H, Lq, Lk] (decode: [B, H, T, M]), True = attend.
            In decode mode it is ANDed with the cache's causal and validity mask.
          bias: float broadcastable to [B, H, Lq, Lk], added to the logits.
          window: local band width (slots); None or <= 0 = dense. May be a traced scalar.
          segment_ids: decode only: int [B, T] stored per key; keys with 0 are never attended.
            None stores ones.
          deterministic: disables dropout.
          decode: use and update the KV cache (self-attention only).

        Returns:
          [B, Lq, out_features or E] in ``dtype``; with ``return_scores`` the pair
          ``(out, scores float32 [B, H, Lq, Lk])``.
        """
        if decode and inputs_kv is not None:
            raise ValueError("decode=True caches self-attention only; pass inputs_kv=None.")
        inputs_kv = inputs_q if inputs_kv is None else inputs_kv
        projection = dict(
            features=(self.num_heads, self.head_dim),
            kernel_axes=(axes.EMBED, axes.HEADS, axes.KV),
            use_bias=self.use_bias,
            kernel_init=self.kernel_init,
            bias_init=self.bias_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        query_projection = dict(projection, kernel_init=self.query_kernel_init or self.kernel_init)
        query = DenseGeneral(name="query", **query_projection)(inputs_q)  # [B, Lq, H, D]
        key = DenseGeneral(name="key", **projection)(inputs_kv)  # [B, Lk, H, D]
        value = DenseGeneral(name="value", **projection)(inputs_kv)  # [B, Lk, H, D]
        query = nn.with_logical_constraint(query, _HEAD_AXES)
        key = nn.with_logical_constraint(key, _HEAD_AXES)
        value = nn.with_logical_constraint(value, _HEAD_AXES)

        q_index = jnp.arange(query.shape[1])
        k_index = jnp.arange(key.shape[1])
        if decode:
            key, value, mask, q_index, k_index = self._update_cache(key, value, mask, segment_ids)

        if window is not None and not (isinstance(window, int) and window <= 0):
            mask = masks_lib.combine_masks(
                mask, masks_lib.local_band_mask(q_index, k_index, window)
            )

        dropout_rng = None
        if not deterministic and self.dropout_rate > 0.0:
            dropout_rng = self.make_rng("dropout")
        out, weights = dot_product_attention(
            query,
            key,
            value,
            mask,
            bias,
            scale=self.logit_scale,
            dropout_rate=self.dropout_rate,
            dropout_rng=dropout_rng,
            deterministic=deterministic,
            dtype=self.dtype,
        )  # [B, Lq, H, D], [B, H, Lq, Lk]
        self.sow("intermediates", "attention_weights", weights)
        out = DenseGeneral(
            features=self.out_features or inputs_q.shape[-1],
            kernel_axes=(axes.HEADS, axes.KV, axes.EMBED),
            axis=(-2, -1),
            use_bias=self.use_bias,
            kernel_init=self.out_kernel_init,
            bias_init=self.bias_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="out",
        )(out)  # [B, Lq, E]
        out = nn.with_logical_constraint(out, (axes.BATCH, axes.LENGTH, axes.ACT_EMBED))
        if self.return_scores:
            # The same q.k product dot_product_attention takes (XLA merges the two under jit).
            scores = attention_scores(query, key, bias, scale=self.logit_scale, dtype=self.dtype)
            return out, scores
        return out

    def _update_cache(
        self,
        key: jax.Array,
        value: jax.Array,
        mask: jax.Array | None,
        segment_ids: jax.Array | None,
    ) -> tuple[jax.Array, jax.Array, jax.Array | None, jax.Array, jax.Array]:
        """Creates the cache (init) or writes a chunk into it (apply); see the module docstring.

        Args:
          key: [B, T, H, D] this chunk's keys.
          value: [B, T, H, D] this chunk's values.
          mask: the caller's mask or None.
          segment_ids: [B, T] or None.

        Returns:
          (keys, values, mask, q_index, k_index): during init the chunk itself with the
          caller's mask; afterwards the full cache [B, M, H, D], the cache mask ANDed with the
          caller's, query slots ``cache_index + arange(T)`` and key slots ``arange(M)``.
        """
        batch, length = key.shape[:2]
        initializing = self.is_initializing()
        if not initializing and not self.has_variable("cache", "cached_key"):
            raise ValueError(
                "decode=True needs a KV cache: create it with "
                "model.init(key, jnp.zeros((batch, max_len), jnp.int32), decode=True) and pass "
                "{'params': ..., 'cache': variables['cache']} with mutable=['cache']."
            )
        cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, self.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, self.dtype)
        cached_segment_ids = self.variable(
            "cache", "cached_segment_ids", jnp.zeros, (batch, length), jnp.int32
        )
        cache_index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
        if initializing:
            return key, value, mask, jnp.arange(length), jnp.arange(length)

        max_len = cached_key.value.shape[1]
        if cached_key.value.shape[0] != batch:
            raise ValueError(
                f"The KV cache was built for batch {cached_key.value.shape[0]} but the chunk has "
                f"batch {batch}; re-initialise the cache with the decoding batch size."
            )
        index = cache_index.value
        if segment_ids is None:
            segment_ids = jnp.ones((batch, length), jnp.int32)
        keys = jax.lax.dynamic_update_slice(
            cached_key.value, jnp.asarray(key, self.dtype), (0, index, 0, 0)
        )  # [B, M, H, D]
        values = jax.lax.dynamic_update_slice(
            cached_value.value, jnp.asarray(value, self.dtype), (0, index, 0, 0)
        )  # [B, M, H, D]
        stored_segments = jax.lax.dynamic_update_slice(
            cached_segment_ids.value, jnp.asarray(segment_ids, jnp.int32), (0, index)
        )  # [B, M]
        cached_key.value = keys
        cached_value.value = values
        cached_segment_ids.value = stored_segments
        cache_index.value = index + length

        q_index = index + jnp.arange(length)  # [T]
        k_index = jnp.arange(max_len)  # [M]
        cache_mask = masks_lib.combine_masks(
            masks_lib.causal_mask_from_indices(q_index, k_index),  # [1, 1, T, M]
            masks_lib.key_padding_mask(stored_segments, length),  # [B, 1, T, M]
        )
        return keys, values, masks_lib.combine_masks(mask, cache_mask), q_index, k_index
