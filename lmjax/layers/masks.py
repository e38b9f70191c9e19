"""Boolean attention masks.

Conventions, shared by every attention layer in lmjax:

- A mask is a boolean array broadcastable to ``[B, H, Lq, Lk]``; the functions here return
  ``[B, 1, Lq, Lk]`` (or ``[1, 1, Lq, Lk]`` when nothing depends on the batch). **True means the
  query may attend to the key.** ``combine_masks`` ANDs masks; ``None`` means "no restriction".
- A query row with no allowed key gets uniform weights over all keys rather than NaN (attention
  fills masked logits with the most negative finite float32); such rows belong to padding, whose
  outputs no loss reads.
- Indices (``q_index``, ``k_index``) are *slot* indices: a token's place in the row (or in the
  KV cache), not its position id. Causality and locality are decided on slots, so packed rows whose
  position ids restart at each document, and left-padded prompts whose first real token has
  position 0, still mask correctly.
- Segment ids: int32 ``[B, L]``, ``0`` = padding, ``1, 2, ...`` = documents packed into one row
  (lmjax's batch contract). Tokens attend only within the same nonzero segment.
- A local band of width ``window`` keeps keys with ``|q - k| < window``; combined with the causal
  mask, a query sees itself and the ``window - 1`` keys before it. ``window <= 0`` means no band,
  so a per-layer window array (for ``nn.scan``) can mix dense (0) and local layers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _query_index(index: jax.Array) -> jax.Array:
    """[Lq] or [B, Lq] -> [1|B, 1, Lq, 1]."""
    index = jnp.asarray(index)
    index = index if index.ndim == 2 else index[None]
    return index[:, None, :, None]


def _key_index(index: jax.Array) -> jax.Array:
    """[Lk] or [B, Lk] -> [1|B, 1, 1, Lk]."""
    index = jnp.asarray(index)
    index = index if index.ndim == 2 else index[None]
    return index[:, None, None, :]


def causal_mask(length: int) -> jax.Array:
    """The lower-triangular mask: query ``i`` sees keys ``j <= i``. Returns bool [1, 1, L, L]."""
    index = jnp.arange(length)
    return causal_mask_from_indices(index, index)


def causal_mask_from_indices(q_index: jax.Array, k_index: jax.Array) -> jax.Array:
    """Keys at a slot ``<=`` the query's slot (used by the KV cache, where queries sit at
    ``cache_index + arange(T)`` and keys at ``arange(max_len)``).

    Args:
      q_index: int [Lq] or [B, Lq] slot of each query.
      k_index: int [Lk] or [B, Lk] slot of each key.

    Returns:
      bool [1|B, 1, Lq, Lk].
    """
    return _key_index(k_index) <= _query_index(q_index)


def padding_mask(q_valid: jax.Array, k_valid: jax.Array | None = None) -> jax.Array:
    """Both the query and the key are real tokens.

    Args:
      q_valid: [B, Lq], nonzero / True for real tokens.
      k_valid: [B, Lk] (default: ``q_valid``, self-attention).

    Returns:
      bool [B, 1, Lq, Lk].
    """
    k_valid = q_valid if k_valid is None else k_valid
    return (_query_index(q_valid) != 0) & (_key_index(k_valid) != 0)


def key_padding_mask(k_valid: jax.Array, q_length: int = 1) -> jax.Array:
    """Only the key must be real (queries unrestricted). Returns bool [B, 1, q_length, Lk]."""
    mask = _key_index(k_valid) != 0
    return jnp.broadcast_to(mask, (mask.shape[0], 1, q_length, mask.shape[-1]))


def segment_mask(q_segment_ids: jax.Array, k_segment_ids: jax.Array | None = None) -> jax.Array:
    """Query and key belong to the same nonzero segment (document masking of packed rows).

    Args:
      q_segment_ids: int [B, Lq]; 0 = padding.
      k_segment_ids: int [B, Lk] (default: ``q_segment_ids``).

    Returns:
      bool [B, 1, Lq, Lk].
    """
    k_segment_ids = q_segment_ids if k_segment_ids is None else k_segment_ids
    q = _query_index(q_segment_ids)
    k = _key_index(k_segment_ids)
    return (q == k) & (q != 0)


def local_band_mask(q_index: jax.Array, k_index: jax.Array, window: int | jax.Array) -> jax.Array:
    """Keys within ``window`` slots of the query: ``|q - k| < window`` (all True if window <= 0).

    ``window`` may be a traced int32 scalar, so a scanned stack can carry one window per layer.

    Args:
      q_index: int [Lq] or [B, Lq] query slots.
      k_index: int [Lk] or [B, Lk] key slots.
      window: the band width; ``<= 0`` disables the band (dense attention).

    Returns:
      bool [1|B, 1, Lq, Lk].
    """
    distance = jnp.abs(_query_index(q_index) - _key_index(k_index))
    window = jnp.asarray(window, distance.dtype)
    return (distance < window) | (window <= 0)


def combine_masks(*masks: jax.Array | None) -> jax.Array | None:
    """ANDs the given masks (broadcasting); ``None`` entries are skipped.

    Returns:
      The combined bool mask, or ``None`` if every argument was ``None``.
    """
    present = [jnp.asarray(m, jnp.bool_) for m in masks if m is not None]
    if not present:
        return None
    combined = present[0]
    for mask in present[1:]:
        combined = jnp.logical_and(combined, mask)
    return combined


def decoder_mask(length: int, segment_ids: jax.Array | None = None) -> jax.Array:
    """The causal mask, restricted to same-document keys when ``segment_ids`` [B, L] is given.

    Returns:
      bool [B|1, 1, L, L].
    """
    mask = causal_mask(length)
    if segment_ids is None:
        return mask
    return combine_masks(mask, segment_mask(segment_ids))
