"""Embedding tables: tokens (with tied output logits), learned and sinusoidal positions, token
types, and ALBERT's factorized embedding.

Axis legend: B batch, L length, E embed (model width), V vocab, P positions, T token types,
F factor (ALBERT's small embedding width).

- ``Embed``: a ``[V, E]`` table looked up by integer ids; ``attend(x)`` computes the tied output
  logits ``x @ table^T`` in float32 (GPT-1 ``openai/finetune-transformer-lm:train.py``
  ``lm_logits = tf.matmul(h, we, transpose_b=True)``; GPT-2 ``src/model.py`` likewise).
- ``PositionEmbed``: a learned ``[P, E]`` table (GPT, BERT) indexed by positions.
- ``TypeEmbed``: a ``[T, E]`` segment / token-type table (BERT's ``token_type_embeddings``).
- ``sinusoidal_positions``: the fixed encoding of Vaswani et al. (2017, arXiv:1706.03762, §3.5).
- ``FactorizedEmbed``: ALBERT's ``[V, F]`` table plus an ``F -> E`` projection (Lan et al., 2019,
  arXiv:1909.11942, §3.1; ``google-research/albert:modeling.py`` ``embedding_hidden_mapping_in``).

Lookups use ``jnp.take``, which returns NaN rows for out-of-range ids, so a wrong vocabulary size
shows up as NaN instead of silently reading a neighbouring row.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax import axes
from lmjax.layers.dense import DenseGeneral, Initializer, default_kernel_init


def _check_ids(ids: jax.Array, what: str) -> None:
    if not jnp.issubdtype(jnp.asarray(ids).dtype, jnp.integer):
        raise TypeError(f"{what} must be an integer array, got dtype {jnp.asarray(ids).dtype}.")


class Embed(nn.Module):
    """A lookup table ``[num_embeddings, features]`` with a tied output projection.

    Attributes:
      num_embeddings: number of rows (V).
      features: width of each row (E).
      table_axes: logical axis names of the table (default ``('vocab', 'embed')``).
      embedding_init: initialiser of the table (GPT: N(0, 0.02)).
      dtype: the compute dtype of looked-up rows and of ``attend``'s matmul inputs.
      param_dtype: the storage dtype of the table.
    """

    num_embeddings: int
    features: int
    table_axes: tuple[str, str] = (axes.VOCAB, axes.EMBED)
    embedding_init: Initializer = nn.initializers.normal(stddev=0.02)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self) -> None:
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(self.embedding_init, self.table_axes),
            (self.num_embeddings, self.features),
            self.param_dtype,
        )

    def __call__(self, ids: jax.Array) -> jax.Array:
        """Looks up ``ids`` int [...] and returns [..., E] in ``dtype``."""
        _check_ids(ids, "Embedding ids")
        return jnp.asarray(jnp.take(self.embedding, ids, axis=0), self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        """Tied output logits ``x @ table^T``.

        The matmul takes its inputs in ``dtype`` and accumulates in float32
        (``preferred_element_type``), so the logits are float32 whatever the compute dtype.

        Args:
          x: [..., E] hidden states.

        Returns:
          float32 [..., V] logits.
        """
        table = jnp.asarray(self.embedding, self.dtype)
        return jnp.einsum(
            "...e,ve->...v",
            jnp.asarray(x, self.dtype),
            table,
            preferred_element_type=jnp.float32,
        )


class PositionEmbed(Embed):
    """A learned position table ``[P, E]`` (logical axes ``('position', 'embed')``)."""

    table_axes: tuple[str, str] = (axes.POSITION, axes.EMBED)


class TypeEmbed(Embed):
    """A segment / token-type table ``[T, E]`` (logical axes ``('type', 'embed')``)."""

    table_axes: tuple[str, str] = (axes.TYPE, axes.EMBED)


def sinusoidal_positions(
    positions: jax.Array,
    features: int,
    min_timescale: float = 1.0,
    max_timescale: float = 10_000.0,
    interleave: bool = False,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """The fixed sinusoidal position encoding of Vaswani et al. (2017, §3.5).

    Channel ``i < features/2`` has inverse frequency
    ``1 / (min_timescale * (max_timescale/min_timescale) ** (2i / features))``; with the defaults
    this is the paper's ``1 / 10000^(2i/d)``.

    Args:
      positions: [...] integer or float positions (may be negative, e.g. relative distances).
      features: the even encoding width.
      min_timescale: the shortest wavelength divided by 2*pi.
      max_timescale: the longest wavelength divided by 2*pi.
      interleave: False gives ``[sin..., cos...]`` (the layout of tensor2tensor and
        Transformer-XL); True gives the paper's ``sin, cos, sin, cos, ...``.
      dtype: the output dtype.

    Returns:
      [..., features] encodings.
    """
    if features % 2:
        raise ValueError(f"sinusoidal_positions needs an even width, got features={features}.")
    half = features // 2
    exponent = jnp.arange(half, dtype=jnp.float32) * 2.0 / features
    inverse_frequency = 1.0 / (min_timescale * (max_timescale / min_timescale) ** exponent)
    angles = jnp.asarray(positions, jnp.float32)[..., None] * inverse_frequency  # [..., half]
    if interleave:
        encoding = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)
        encoding = encoding.reshape(*angles.shape[:-1], features)
    else:
        encoding = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    return jnp.asarray(encoding, dtype)


class FactorizedEmbed(nn.Module):
    """ALBERT's factorized embedding: a small ``[V, F]`` table and an ``F -> E`` projection.

    ALBERT sums word, position and type embeddings at the small width F, normalises, and only then
    projects to the hidden width E, so the lookup and the projection are separate methods:
    ``project(layer_norm(embed(ids) + positions + types))``. ``attend`` ties the output to the
    small table (ALBERT's MLM head first maps the hidden state down to F).

    Attributes:
      num_embeddings: vocabulary size V.
      factor_dim: the small embedding width F (ALBERT: 128).
      features: the hidden width E the projection maps to.
      use_bias: whether the projection has a bias (ALBERT: yes).
      embedding_init: initialiser of the table.
      kernel_init: initialiser of the projection.
      dtype: the compute dtype.
      param_dtype: the storage dtype.
    """

    num_embeddings: int
    factor_dim: int
    features: int
    use_bias: bool = True
    embedding_init: Initializer = nn.initializers.normal(stddev=0.02)
    kernel_init: Initializer = default_kernel_init
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self) -> None:
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(self.embedding_init, (axes.VOCAB, axes.FACTOR)),
            (self.num_embeddings, self.factor_dim),
            self.param_dtype,
        )
        self.projection = DenseGeneral(
            self.features,
            kernel_axes=(axes.FACTOR, axes.EMBED),
            use_bias=self.use_bias,
            kernel_init=self.kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )

    def __call__(self, ids: jax.Array) -> jax.Array:
        """Looks up ``ids`` int [...] in the small table; returns [..., F] in ``dtype``."""
        _check_ids(ids, "Embedding ids")
        return jnp.asarray(jnp.take(self.embedding, ids, axis=0), self.dtype)

    def project(self, x: jax.Array) -> jax.Array:
        """Maps [..., F] to the hidden width [..., E]."""
        return self.projection(x)

    def attend(self, x: jax.Array) -> jax.Array:
        """Tied logits against the small table: [..., F] -> float32 [..., V]."""
        table = jnp.asarray(self.embedding, self.dtype)
        return jnp.einsum(
            "...f,vf->...v", jnp.asarray(x, self.dtype), table, preferred_element_type=jnp.float32
        )

    def embed_and_project(self, ids: jax.Array) -> jax.Array:
        """``project(embed(ids))``: [...] -> [..., E], for models without a sum at width F."""
        return self.project(self(ids))
