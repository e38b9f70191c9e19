"""T5's prefix language-modelling objective (Raffel et al. 2020, section 3.3.1 "prefix LM"
baseline objective), in pure jnp with static shapes.

Axis legend: B batch, R raw row length (``inputs_length - 1``), Le encoder length
(``inputs_length``), Ld decoder length (``targets_length``).

The reference (``t5/data/preprocessors.py::prefix_lm``) cuts the token stream into pieces of
``inputs_length - 1`` tokens (``split_tokens_to_inputs_length``, leaving room for EOS), draws the
prefix length ``k`` uniformly in ``[1, n - 1]`` for a piece of ``n`` tokens
(``random_prefix_noise_mask``: ``[min(n - 1, 1), n - 1]``, so a one-token piece has an empty
prefix), and writes

- inputs: the prefix ``piece[:k]``, then EOS (``drop_nonnoise_tokens``);
- targets: the rest ``piece[k:]``, then EOS (``drop_noise_tokens``).

Here the packed LM rows (``lmjax.data.packing``) are the pieces: ``batch['inputs']`` [B, R], one
segment per row, with ``segment_ids == 0`` on the padding that ends the stream; every row draws
its own split point from ``fold_in(key, row)``. Set ``data.seq_len = inputs_length - 1``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from lmjax.objectives.seq2seq_loss import (
    SEQ2SEQ_MODEL_INPUTS,
    T5X_Z_LOSS,
    check_z_loss,
    seq2seq_loss,
)
from lmjax.objectives.span_corruption import (
    T5_DECODER_START_ID,
    T5_EOS_ID,
    T5_PAD_ID,
    real_row_lengths,
    row_keys,
    with_decoder_inputs,
)

PREFIX_LM_OPTIONS = ("inputs_length", "targets_length", "eos_id", "pad_id", "decoder_start_id")
# What the train loop fills from the tokenizer unless the experiment sets it.
PREFIX_LM_VOCABULARY_OPTIONS = ("eos_id", "pad_id")


def prefix_lm_lengths(inputs_length: int = 512) -> tuple[int, int]:
    """``(raw_tokens_length, targets_length)`` for encoder inputs of ``inputs_length`` tokens:
    ``(inputs_length - 1, inputs_length)`` (pieces leave room for EOS; the reference's T5 prefix
    LM used the same length for inputs and targets).

    Raises:
      ValueError: ``inputs_length < 3`` (a piece needs two tokens to split).
    """
    if inputs_length < 3:
        raise ValueError(f"prefix LM needs inputs_length >= 3, got {inputs_length}.")
    return inputs_length - 1, inputs_length


def prefix_split_point(key: jax.Array, length: jax.Array) -> jax.Array:
    """int32 prefix length, uniform in ``[1, length - 1]`` (``random_prefix_noise_mask``);
    0 when ``length <= 1``. ``length`` may be traced."""
    length = jnp.asarray(length, jnp.int32)
    most = length - 1
    least = jnp.minimum(most, 1)
    split = jax.random.randint(key, (), least, most + 1, dtype=jnp.int32)
    return jnp.clip(split, 0, jnp.maximum(most, 0))


def _split_row(
    key: jax.Array,
    tokens: jax.Array,
    length: jax.Array,
    *,
    inputs_length: int,
    targets_length: int,
    eos_id: int,
    pad_id: int,
) -> dict[str, jax.Array]:
    """One row: ``prefix EOS`` [Le] and ``suffix EOS`` [Ld] (all padding for an empty row)."""
    raw_length = tokens.shape[0]
    split = prefix_split_point(key, length)
    has_tokens = length > 0
    # Encoder: tokens[:split], EOS at `split`.
    enc_positions = jnp.arange(inputs_length)  # [Le]
    enc_tokens = jnp.take(tokens, jnp.minimum(enc_positions, raw_length - 1))  # [Le]
    encoder_inputs = jnp.where(
        enc_positions < split, enc_tokens, jnp.where(enc_positions == split, eos_id, pad_id)
    )
    num_inputs = jnp.where(has_tokens, split + 1, 0)
    # Decoder: tokens[split:length], EOS at `length - split`.
    dec_positions = jnp.arange(targets_length)  # [Ld]
    num_suffix = length - split
    dec_tokens = jnp.take(tokens, jnp.clip(split + dec_positions, 0, raw_length - 1))  # [Ld]
    dec_padding = jnp.where(dec_positions == num_suffix, eos_id, pad_id)  # [Ld]
    decoder_targets = jnp.where(dec_positions < num_suffix, dec_tokens, dec_padding)
    num_targets = jnp.where(has_tokens, num_suffix + 1, 0)
    encoder_segment_ids = (enc_positions < num_inputs).astype(jnp.int32)
    decoder_segment_ids = (dec_positions < num_targets).astype(jnp.int32)
    return {
        "encoder_inputs": jnp.where(encoder_segment_ids > 0, encoder_inputs, pad_id).astype(
            jnp.int32
        ),
        "encoder_segment_ids": encoder_segment_ids,
        "decoder_targets": jnp.where(decoder_segment_ids > 0, decoder_targets, pad_id).astype(
            jnp.int32
        ),
        "decoder_segment_ids": decoder_segment_ids,
    }


def prefix_lm(
    key: jax.Array,
    batch: dict[str, Any],
    *,
    inputs_length: int = 512,
    targets_length: int | None = None,
    eos_id: int = T5_EOS_ID,
    pad_id: int = T5_PAD_ID,
    decoder_start_id: int = T5_DECODER_START_ID,
) -> dict[str, Any]:
    """T5 prefix-LM corruption of packed LM rows (jittable; shapes static).

    Args:
      key: PRNG key (the train step's); row ``b`` uses ``fold_in(key, b)``.
      batch: ``'inputs'`` int [B, inputs_length - 1] and optionally ``'segment_ids'``.
      inputs_length: Le, the encoder length (T5: 512).
      targets_length: Ld (default ``inputs_length``; at least ``inputs_length - 1``).
      eos_id, pad_id, decoder_start_id: T5's 1, 0, 0.

    Returns:
      The batch plus ``encoder_inputs`` / ``encoder_segment_ids`` int32 [B, Le],
      ``decoder_inputs`` / ``decoder_targets`` / ``decoder_segment_ids`` int32 and
      ``decoder_weights`` float32 [B, Ld].

    Raises:
      ValueError: the row length is not ``inputs_length - 1`` (names the ``data.seq_len`` to
        set), or ``targets_length`` is too short.
    """
    raw_length, targets_length = _prefix_settings(inputs_length, targets_length)
    inputs = batch["inputs"]
    if inputs.ndim != 2:
        raise ValueError(f"batch['inputs'] must be [batch, length], got shape {inputs.shape}.")
    if inputs.shape[1] != raw_length:
        raise ValueError(
            f"prefix LM with inputs_length={inputs_length} reads rows of {raw_length} tokens "
            f"(room for EOS), but the batch rows hold {inputs.shape[1]}: set "
            f"data.seq_len={raw_length}."
        )
    row = functools.partial(
        _split_row,
        inputs_length=inputs_length,
        targets_length=targets_length,
        eos_id=eos_id,
        pad_id=pad_id,
    )
    rows = jax.vmap(row)(row_keys(key, inputs.shape[0]), inputs, real_row_lengths(batch))
    out = dict(batch)
    out.update(with_decoder_inputs(rows, decoder_start_id))
    return out


def _prefix_settings(inputs_length: int, targets_length: int | None) -> tuple[int, int]:
    raw_length, default_targets = prefix_lm_lengths(int(inputs_length))
    if targets_length is None:
        targets_length = default_targets
    if targets_length < raw_length:
        raise ValueError(
            f"targets_length={targets_length} cannot hold the longest prefix-LM target "
            f"({raw_length} tokens: {raw_length - 1} + EOS); set it >= {raw_length}."
        )
    return raw_length, int(targets_length)


def prefix_lm_objective(*, z_loss: float = T5X_Z_LOSS, **options: Any):
    """The ``prefix_lm`` ``Objective``: ``prefix_lm`` with ``options`` + the seq2seq loss.

    Options: ``inputs_length`` (512), ``targets_length``, ``eos_id``, ``pad_id``,
    ``decoder_start_id``, and the loss's ``z_loss`` (t5x's 1e-4). The train loop fills ``eos_id``
    and ``pad_id`` from the tokenizer; the data rows must be ``inputs_length - 1`` tokens long.
    """
    from lmjax.objectives import Objective

    unknown = sorted(set(options) - set(PREFIX_LM_OPTIONS))
    if unknown:
        raise ValueError(
            f"objective 'prefix_lm' has no options {unknown}; it takes "
            f"{sorted(PREFIX_LM_OPTIONS + ('z_loss',))}."
        )
    check_z_loss(z_loss)
    _prefix_settings(options.get("inputs_length", 512), options.get("targets_length"))

    def corrupt(key: jax.Array, batch: dict[str, Any]) -> dict[str, Any]:
        return prefix_lm(key, batch, **options)

    def loss(outputs: dict[str, jax.Array], batch: dict[str, Any]):
        return seq2seq_loss(outputs, batch, z_loss=z_loss)

    return Objective(
        name="prefix_lm", corrupt=corrupt, loss=loss, model_inputs=SEQ2SEQ_MODEL_INPUTS
    )
