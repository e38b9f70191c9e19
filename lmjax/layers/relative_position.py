"""T5's bucketed relative position bias.

Axis legend: B batch, H heads, Lq / Lk query / key length, NB buckets.

T5 (Raffel et al., 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer", §2.1) replaces position embeddings by a learned scalar per head and per *bucket* of
the relative distance ``key_position - query_position``, added to the attention logits. Small
distances get a bucket each; larger ones share logarithmically wider buckets up to
``max_distance``, beyond which everything falls into the last bucket. An encoder
(``bidirectional=True``) splits the buckets between keys before and after the query; a causal
decoder only sees keys at or before the query, so every later key maps to bucket 0 (and is masked
anyway).

References (read for the formula, written anew here): mesh-tensorflow
``transformer/transformer_layers.py::_relative_position_bucket``, flaxformer
``components/relative_position_biases.py::RelativePositionBiases``, Hugging Face
``transformers/models/t5/modeling_t5.py::T5Attention._relative_position_bucket`` and
``compute_bias``. The logarithmic bucket is computed in float32 with the reference's operation
order (``log(n / max_exact) / log(max_distance / max_exact) * (num_buckets - max_exact)``, then
truncation), so bucket boundaries at exact powers land where Hugging Face's do.

The bias table is ``[NB, H]`` (Hugging Face's ``relative_attention_bias.weight`` layout). The bias
is computed once per stack and handed to every layer (T5 shares the first layer's table across
the stack); cross-attention has none.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax import axes
from lmjax.layers.dense import Initializer

# The bucket axis of the table has no logical name in lmjax/axes.py: it is never sharded.
TABLE_AXES = (None, axes.HEADS)


def check_bucket_settings(num_buckets: int, max_distance: int, bidirectional: bool) -> None:
    """Raises ValueError unless the bucket settings give at least one exact and one log bucket.

    Bidirectional attention halves ``num_buckets`` per direction; half of those are exact, so a
    direction needs ``num_buckets // 2 >= 2`` buckets and ``max_distance`` above the exact range.
    """
    per_direction = num_buckets // 2 if bidirectional else num_buckets
    max_exact = per_direction // 2
    if max_exact < 1:
        raise ValueError(
            f"num_buckets={num_buckets} is too small for "
            f"{'bidirectional' if bidirectional else 'causal'} attention; use at least "
            f"{4 if bidirectional else 2} (T5 uses 32)."
        )
    if max_distance <= max_exact:
        raise ValueError(
            f"max_distance={max_distance} must exceed the {max_exact} exact buckets of "
            f"num_buckets={num_buckets}; raise max_distance (T5 uses 128)."
        )


def relative_position_bucket(
    relative_position: jax.Array,
    bidirectional: bool,
    num_buckets: int = 32,
    max_distance: int = 128,
) -> jax.Array:
    """The T5 bucket of each relative position ``key_position - query_position``.

    Steps (``n = -relative_position``, the distance back from the query):

    1. Bidirectional: half the buckets per sign, ``offset = num_buckets // 2`` for keys after the
       query (``n < 0``), ``n = |n|``. Causal: ``n = max(n, 0)`` (later keys share bucket 0).
    2. ``max_exact = buckets_per_direction // 2``; ``n < max_exact`` is its own bucket.
    3. Otherwise ``max_exact + trunc(log(n / max_exact) / log(max_distance / max_exact) *
       (buckets_per_direction - max_exact))``, clipped to ``buckets_per_direction - 1``.

    Args:
      relative_position: int [...] key position minus query position.
      bidirectional: encoder (True) or causal decoder (False) bucketing.
      num_buckets: NB, the number of buckets (T5: 32).
      max_distance: distances at or beyond this share the last bucket (T5: 128).

    Returns:
      int32 [...] buckets in ``[0, num_buckets)``.
    """
    check_bucket_settings(num_buckets, max_distance, bidirectional)
    n = -jnp.asarray(relative_position, jnp.int32)
    if bidirectional:
        num_buckets //= 2
        offset = jnp.where(n < 0, num_buckets, 0)
        n = jnp.abs(n)
    else:
        offset = jnp.zeros_like(n)
        n = jnp.maximum(n, 0)
    max_exact = num_buckets // 2
    # The log is only read where n >= max_exact; the floor at max_exact keeps log(0) out.
    ratio = jnp.maximum(n, max_exact).astype(jnp.float32) / max_exact
    log_bucket = (
        jnp.log(ratio) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    )  # float32, the reference's order of operations
    large = jnp.minimum(max_exact + log_bucket.astype(jnp.int32), num_buckets - 1)
    return (offset + jnp.where(n < max_exact, n, large)).astype(jnp.int32)


class RelativePositionBias(nn.Module):
    """The learned per-head bias of each relative-position bucket, as attention logits' bias.

    Attributes:
      num_heads: H.
      num_buckets: NB (T5: 32).
      max_distance: T5: 128.
      bidirectional: encoder (True) or causal decoder (False) bucketing.
      embedding_init: initialiser of the table (Hugging Face T5: normal, std ``d_model**-0.5``).
      dtype: compute dtype (unused: the bias is float32, added to float32 attention logits).
      param_dtype: storage dtype of the table.
    """

    num_heads: int
    num_buckets: int = 32
    max_distance: int = 128
    bidirectional: bool = True
    embedding_init: Initializer = nn.initializers.normal(stddev=1.0)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, query_positions: jax.Array, key_positions: jax.Array) -> jax.Array:
        """The bias of every (query, key) pair.

        Args:
          query_positions: int [Lq] or [B, Lq] (decoding: ``cache_index + arange(T)``).
          key_positions: int [Lk] or [B, Lk] (decoding: the cache slots' positions, [M]).

        Returns:
          float32 [1|B, H, Lq, Lk] (B when either position array is batched).
        """
        check_bucket_settings(self.num_buckets, self.max_distance, self.bidirectional)
        table = self.param(
            "embedding",
            nn.with_logical_partitioning(self.embedding_init, TABLE_AXES),
            (self.num_buckets, self.num_heads),
            self.param_dtype,
        )  # [NB, H]
        query_positions = jnp.asarray(query_positions, jnp.int32)
        key_positions = jnp.asarray(key_positions, jnp.int32)
        relative = key_positions[..., None, :] - query_positions[..., :, None]  # [(B,) Lq, Lk]
        buckets = relative_position_bucket(
            relative, self.bidirectional, self.num_buckets, self.max_distance
        )
        values = jnp.take(jnp.asarray(table, jnp.float32), buckets, axis=0)  # [(B,) Lq, Lk, H]
        bias = jnp.moveaxis(values, -1, -3)  # [(B,) H, Lq, Lk]
        return bias if bias.ndim == 4 else bias[None]
