"""T5's span-corruption objective (Raffel et al. 2020, "Exploring the Limits of Transfer Learning
with a Unified Text-to-Text Transformer", section 3.1.4 and 3.3.4), in pure jnp with static shapes.

Axis legend: B batch, R raw row length (tokens read from the stream), Le encoder length
(``inputs_length``), Ld decoder length (``targets_length``), S the most spans a row can have.

The reference pipeline (``t5/data/preprocessors.py::span_corruption``) concatenates documents
(``reduce_concat_tokens``), cuts the stream into pieces of ``raw_tokens_length`` tokens
(``split_tokens``), picks a random span mask per piece (``random_spans_noise_mask``) and writes

- inputs: the piece with every noise span replaced by one sentinel
  (``noise_span_to_unique_sentinel``), then EOS;
- targets: the piece with every *non-noise* span replaced by one sentinel
  (``nonnoise_span_to_unique_sentinel`` = the same function applied to ``~mask``), then EOS.

The sentinel of the ``i``-th replaced span of a sequence is ``sentinel_id - i`` in both
(``sentinel_id + 1 - cumsum(first_noise_tokens)``), with ``sentinel_id = vocab_size - 1`` (T5's
``<extra_id_0>`` = 32099). The mask starts with a non-noise span, so the ``i``-th non-noise span
and the ``i``-th noise span share sentinel ``i``::

    piece:    a b c D E f g H i j K L
    inputs:   a b c <X0> f g <X1> i j <X2> EOS
    targets:  <X0> D E <X1> H <X2> K L EOS

Here the packed LM rows of ``lmjax.data.packing`` are the pieces: ``batch['inputs']`` [B, R]
with ``R = raw_tokens_length`` is the token stream cut into consecutive rows, documents separated
by their EOS (which stays an ordinary token of the piece, where T5 concatenates documents with no
separator). Each row is one piece (one segment); the rows at the end of the stream are shorter
(``segment_ids == 0`` on their padding) and get the lengths the reference gives a short last
piece. Every row draws its own mask from ``fold_in(key, row)``.

``span_corruption_lengths(512) == (568, 114)``: set ``data.seq_len = 568`` to train T5 with
inputs 512 / targets 114 (85 noise tokens in 28 spans per full row).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lmjax.objectives.seq2seq_loss import (
    SEQ2SEQ_MODEL_INPUTS,
    T5X_Z_LOSS,
    check_z_loss,
    seq2seq_loss,
    shifted_right,
)

# T5's SentencePiece ids (``t5/data/vocabularies.py``): pad 0, EOS 1; the decoder starts at pad.
T5_PAD_ID = 0
T5_EOS_ID = 1
T5_DECODER_START_ID = 0


# ------------------------------------------------------------------------------------------------
# Lengths (static, Python).
# ------------------------------------------------------------------------------------------------


def noise_counts(num_tokens: int, noise_density: float, mean_noise_span_length: float):
    """``(num_noise_tokens, num_noise_spans)`` of a piece of ``num_tokens`` tokens (>= 2).

    The formulas of ``random_spans_noise_mask``, in float32 as the reference computes them:
    ``num_noise = clip(round(n * d), 1, n - 1)``, ``num_spans = max(1, round(num_noise / mean))``
    (``round`` = round half to even, as ``tf.round`` and ``jnp.round``).
    """
    n = max(int(num_tokens), 2)
    num_noise = int(np.round(np.float32(n) * np.float32(noise_density)))
    num_noise = min(max(num_noise, 1), n - 1)
    num_spans = int(np.round(np.float32(num_noise) / np.float32(mean_noise_span_length)))
    return num_noise, max(num_spans, 1)


def denoised_lengths(num_tokens: int, noise_density: float, mean_noise_span_length: float):
    """``(inputs, targets)`` token counts (EOS included) of a corrupted piece of ``num_tokens``.

    ``n - num_noise + num_spans + 1`` and ``num_noise + num_spans + 1``. A piece of one token is
    masked as the first token of a two-token piece (the reference's ``max(length, 2)``): no noise,
    inputs ``tok EOS`` and targets ``<X0> EOS``. An empty row (stream padding) gives ``(0, 0)``.
    """
    if num_tokens <= 0:
        return 0, 0
    if num_tokens == 1:
        return 2, 2
    num_noise, num_spans = noise_counts(num_tokens, noise_density, mean_noise_span_length)
    return num_tokens - num_noise + num_spans + 1, num_noise + num_spans + 1


def _check_rates(noise_density: float, mean_noise_span_length: float) -> None:
    if not 0.0 < noise_density < 1.0:
        raise ValueError(f"noise_density must be in (0, 1) (T5: 0.15), got {noise_density}.")
    if not mean_noise_span_length >= 1.0:
        raise ValueError(
            f"mean_noise_span_length must be >= 1 (T5: 3.0), got {mean_noise_span_length}."
        )


@functools.lru_cache(maxsize=64)
def span_corruption_lengths(
    inputs_length: int = 512, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """``(raw_tokens_length, targets_length)`` for encoder inputs of ``inputs_length`` tokens.

    T5's ``t5/data/preprocessors.py::random_spans_helper`` with one sentinel per span on both
    sides: the longest piece whose corrupted inputs (EOS included) fit in ``inputs_length``, and
    its targets length. 512 -> (568, 114); 1024 -> (1137, 229).

    The length formula is the mask's own (``denoised_lengths``: float32 arithmetic and the
    ``clip``/``max(1, .)`` guards), so the lengths are always the ones the mask produces. The
    reference helper computes in float64 without the guards; it agrees for 512 and 1024 but not
    everywhere: for ``inputs_length=172`` it reports targets 38, while its own mask corrupts the
    190-token piece with ``round(190 * 0.15) = 29`` noise tokens in float32 (28.5000011), i.e. 40
    target tokens (seqio would then truncate them); here 40 is returned. Includes the reference's
    adjustment for ``noise_density == 0.5`` (one token fewer, so the targets are not longer than
    the inputs).

    Raises:
      ValueError: bad rates, or ``inputs_length`` too small to hold a corrupted piece.
    """
    _check_rates(noise_density, mean_noise_span_length)
    if inputs_length < 2:
        raise ValueError(f"inputs_length must be >= 2 (a token and EOS), got {inputs_length}.")

    def lengths(n: int) -> tuple[int, int]:
        return denoised_lengths(n, noise_density, mean_noise_span_length)

    tokens_length = inputs_length - 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    while tokens_length > 1 and lengths(tokens_length)[0] > inputs_length:
        tokens_length -= 1
    inputs, targets = lengths(tokens_length)
    if noise_density == 0.5 and targets > inputs:
        tokens_length -= 1
        targets -= 1
    return tokens_length, targets


@functools.lru_cache(maxsize=64)
def _longest_outputs(raw_length: int, noise_density: float, mean: float) -> tuple[int, int, int]:
    """The most (inputs, targets, spans) any row of at most ``raw_length`` real tokens produces."""
    most_inputs = most_targets = most_spans = 1
    for n in range(raw_length + 1):
        inputs, targets = denoised_lengths(n, noise_density, mean)
        most_inputs, most_targets = max(most_inputs, inputs), max(most_targets, targets)
        most_spans = max(most_spans, noise_counts(n, noise_density, mean)[1])
    return most_inputs, most_targets, most_spans


# ------------------------------------------------------------------------------------------------
# The mask (jnp, one row).
# ------------------------------------------------------------------------------------------------


def _random_segment_lengths(
    key: jax.Array, num_items: jax.Array, num_segments: jax.Array, max_items: int, max_segments: int
) -> jax.Array:
    """Lengths [max_segments] of a uniformly random cut of ``num_items`` items into
    ``num_segments`` non-empty segments (zeros past ``num_segments``).

    The reference (``random_spans_noise_mask._random_segmentation``) shuffles
    ``[1] * (num_segments - 1) + [0] * (num_items - num_segments)`` over the ``num_items - 1``
    gaps between items: every set of ``num_segments - 1`` cut gaps is equally likely. Here a
    uniform permutation of the static ``max_items - 1`` gaps is drawn and the first
    ``num_segments - 1`` real gaps (``< num_items - 1``) in that order are cut, which is the same
    distribution with traced counts.
    """
    num_gaps = max_items - 1
    order = jax.random.permutation(key, num_gaps)  # [G] gap indices in random order
    real_gap = order < num_items - 1  # [G]
    rank = jnp.cumsum(real_gap) - 1  # [G] rank among real gaps, in random order
    cut_in_order = real_gap & (rank < num_segments - 1)  # [G]
    cut = jnp.zeros((num_gaps,), bool).at[order].set(cut_in_order)  # [G] cut after item g
    segment_of_item = jnp.concatenate(
        [jnp.zeros((1,), jnp.int32), jnp.cumsum(cut, dtype=jnp.int32)]
    )  # [max_items]
    is_item = jnp.arange(max_items) < num_items  # [max_items]
    return jax.ops.segment_sum(
        is_item.astype(jnp.int32), segment_of_item, num_segments=max_segments
    )  # [max_segments]


def random_spans_noise_mask(
    key: jax.Array,
    length: jax.Array | int,
    max_length: int,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
) -> jax.Array:
    """T5's random-spans noise mask of one piece (``t5/data/preprocessors.py::
    random_spans_noise_mask``, ``random_roll=False``).

    For ``n = length`` real tokens: ``num_noise = clip(round(n * d), 1, n - 1)`` noise tokens
    in ``num_spans = max(1, round(num_noise / mean))`` spans; noise and non-noise tokens are each
    cut into ``num_spans`` non-empty spans by a uniformly random segmentation, and the spans
    alternate starting with non-noise (so the last span is noise). Pieces of fewer than two
    tokens are masked as a two-token piece and cut (the reference's ``max(length, 2)``).

    Args:
      key: PRNG key.
      length: int scalar, may be traced: the number of real tokens (``<= max_length``).
      max_length: static length of the row.
      noise_density: share of noise tokens.
      mean_noise_span_length: mean noise span length.

    Returns:
      bool [max_length]: True at noise tokens, False at non-noise tokens and past ``length``.
    """
    _check_rates(noise_density, mean_noise_span_length)
    max_items = max(int(max_length), 2)
    max_spans = _longest_outputs(max_items, noise_density, mean_noise_span_length)[2]
    length = jnp.asarray(length, jnp.int32)
    n = jnp.maximum(length, 2)
    num_noise = jnp.round(n.astype(jnp.float32) * noise_density).astype(jnp.int32)
    num_noise = jnp.clip(num_noise, 1, n - 1)
    num_spans = jnp.round(num_noise.astype(jnp.float32) / mean_noise_span_length)
    num_spans = jnp.maximum(num_spans.astype(jnp.int32), 1)
    noise_key, nonnoise_key = jax.random.split(key)
    noise_spans = _random_segment_lengths(noise_key, num_noise, num_spans, max_items, max_spans)
    nonnoise_spans = _random_segment_lengths(
        nonnoise_key, n - num_noise, num_spans, max_items, max_spans
    )
    interleaved = jnp.stack([nonnoise_spans, noise_spans], axis=1).reshape(-1)  # [2S]
    span_ends = jnp.cumsum(interleaved)  # [2S]; spans past num_spans are empty, ending at n
    positions = jnp.arange(max_length)  # [max_length]
    span_number = jnp.searchsorted(span_ends, positions, side="right")  # [max_length]
    return (span_number % 2 == 1) & (positions < length)


# ------------------------------------------------------------------------------------------------
# Denoising (jnp, one row).
# ------------------------------------------------------------------------------------------------


def spans_to_unique_sentinels(
    tokens: jax.Array,
    span_mask: jax.Array,
    length: jax.Array,
    *,
    sentinel_id: int,
    eos_id: int,
    pad_id: int,
    out_length: int,
) -> tuple[jax.Array, jax.Array]:
    """Each run of ``span_mask`` tokens replaced by one sentinel, counting down from
    ``sentinel_id``; then EOS; padded (``t5/data/preprocessors.py::
    noise_span_to_unique_sentinel`` followed by seqio's EOS).

    Args:
      tokens: int [R]; span_mask: bool [R] (False past ``length``); length: int scalar.
      sentinel_id, eos_id, pad_id: ids; out_length: static output length.

    Returns:
      ``(ids [out_length], count)``: the sequence padded with ``pad_id`` and its number of real
      tokens (EOS included; 0 for an empty row, which gets no EOS).
    """
    positions = jnp.arange(tokens.shape[0])  # [R]
    previous = jnp.concatenate([jnp.zeros((1,), bool), span_mask[:-1]])  # [R]
    first = span_mask & ~previous  # [R] first token of a span -> its sentinel
    later = span_mask & previous  # [R] dropped
    sentinels = sentinel_id + 1 - jnp.cumsum(first, dtype=jnp.int32)  # [R]
    values = jnp.where(first, sentinels, tokens).astype(jnp.int32)  # [R]
    keep = (positions < length) & ~later  # [R]
    slots = jnp.where(keep, jnp.cumsum(keep, dtype=jnp.int32) - 1, out_length)  # [R]
    ids = jnp.full((out_length,), pad_id, jnp.int32).at[slots].set(values, mode="drop")
    kept = jnp.sum(keep, dtype=jnp.int32)
    ids = ids.at[jnp.where(length > 0, kept, out_length)].set(eos_id, mode="drop")
    return ids, jnp.where(length > 0, kept + 1, 0)


def _corrupted_row(
    key: jax.Array,
    tokens: jax.Array,
    length: jax.Array,
    *,
    inputs_length: int,
    targets_length: int,
    noise_density: float,
    mean_noise_span_length: float,
    sentinel_id: int,
    eos_id: int,
    pad_id: int,
) -> dict[str, jax.Array]:
    """One row: encoder inputs [Le] and decoder targets [Ld] with their real-token counts."""
    noise = random_spans_noise_mask(
        key, length, tokens.shape[0], noise_density, mean_noise_span_length
    )  # [R]
    real = jnp.arange(tokens.shape[0]) < length  # [R]
    ids = dict(sentinel_id=sentinel_id, eos_id=eos_id, pad_id=pad_id)
    inputs, num_inputs = spans_to_unique_sentinels(
        tokens, noise, length, out_length=inputs_length, **ids
    )
    targets, num_targets = spans_to_unique_sentinels(
        tokens, real & ~noise, length, out_length=targets_length, **ids
    )
    return {
        "encoder_inputs": inputs,
        "encoder_segment_ids": (jnp.arange(inputs_length) < num_inputs).astype(jnp.int32),
        "decoder_targets": targets,
        "decoder_segment_ids": (jnp.arange(targets_length) < num_targets).astype(jnp.int32),
    }


def real_row_lengths(batch: dict[str, Any]) -> jax.Array:
    """int32 [B]: real tokens per row (``segment_ids > 0``; padding only ends the stream)."""
    inputs = batch["inputs"]
    segment_ids = batch.get("segment_ids")
    if segment_ids is None:
        return jnp.full(inputs.shape[:1], inputs.shape[1], jnp.int32)
    return jnp.sum(segment_ids > 0, axis=1, dtype=jnp.int32)


def row_keys(key: jax.Array, num_rows: int) -> jax.Array:
    """One independent key per row: ``fold_in(key, row)``."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(num_rows))


def with_decoder_inputs(rows: dict[str, jax.Array], decoder_start_id: int) -> dict[str, jax.Array]:
    """Adds ``decoder_inputs`` (targets shifted right) and ``decoder_weights`` (float32)."""
    rows["decoder_inputs"] = shifted_right(rows["decoder_targets"], decoder_start_id)
    rows["decoder_weights"] = (rows["decoder_segment_ids"] > 0).astype(jnp.float32)
    return rows


# ------------------------------------------------------------------------------------------------
# The objective.
# ------------------------------------------------------------------------------------------------


def resolved_sentinel_id(sentinel_id: int | None, vocab_size: int | None) -> int:
    """``sentinel_id`` if given, else ``vocab_size - 1`` (T5's ``sentinel_id(vocabulary)``)."""
    if sentinel_id is None:
        if vocab_size is None:
            raise ValueError(
                "span corruption needs vocab_size (the tokenizer's, e.g. 32100 for T5, whose "
                "last 100 ids are <extra_id_*>) or an explicit sentinel_id."
            )
        sentinel_id = int(vocab_size) - 1
    return int(sentinel_id)


def span_corruption(
    key: jax.Array,
    batch: dict[str, Any],
    *,
    inputs_length: int = 512,
    targets_length: int | None = None,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    vocab_size: int | None = None,
    sentinel_id: int | None = None,
    num_sentinels: int | None = None,
    eos_id: int = T5_EOS_ID,
    pad_id: int = T5_PAD_ID,
    decoder_start_id: int = T5_DECODER_START_ID,
) -> dict[str, Any]:
    """T5 span corruption of packed LM rows (jittable; shapes static).

    Args:
      key: PRNG key (the train step's); row ``b`` uses ``fold_in(key, b)``.
      batch: ``'inputs'`` int [B, R] with ``R = span_corruption_lengths(inputs_length, ...)[0]``
        and optionally ``'segment_ids'`` [B, R] (0 on the padding that ends the stream).
      inputs_length: Le, the encoder length (T5: 512).
      targets_length: Ld; default the helper's (114 for 512); a larger value pads more.
      noise_density: share of corrupted tokens (T5: 0.15).
      mean_noise_span_length: mean corrupted span length (T5: 3.0).
      vocab_size: the tokenizer's vocabulary size; sentinels count down from ``vocab_size - 1``.
      sentinel_id: the first sentinel (overrides ``vocab_size``).
      num_sentinels: how many ids from ``sentinel_id`` down are reserved sentinels (T5: 100);
        when given, a row needing more spans is an error at build time.
      eos_id, pad_id, decoder_start_id: T5's 1, 0, 0.

    Returns:
      The batch plus ``encoder_inputs`` / ``encoder_segment_ids`` int32 [B, Le] and
      ``decoder_inputs`` / ``decoder_targets`` / ``decoder_segment_ids`` int32 and
      ``decoder_weights`` float32 [B, Ld] (segment id 1 on real tokens, 0 on padding).

    Raises:
      ValueError: the row length is not the raw length for ``inputs_length`` (names the
        ``data.seq_len`` to set), or a bad option.
    """
    settings = _span_settings(
        inputs_length, targets_length, noise_density, mean_noise_span_length,
        vocab_size, sentinel_id, num_sentinels,
    )
    inputs = batch["inputs"]
    if inputs.ndim != 2:
        raise ValueError(f"batch['inputs'] must be [batch, length], got shape {inputs.shape}.")
    raw_length = settings["raw_length"]
    if inputs.shape[1] != raw_length:
        raise ValueError(
            f"span corruption with inputs_length={inputs_length}, noise_density={noise_density}, "
            f"mean_noise_span_length={mean_noise_span_length} reads rows of {raw_length} tokens "
            f"(T5's random_spans_helper), but the batch rows hold {inputs.shape[1]}: set "
            f"data.seq_len={raw_length}."
        )
    row = functools.partial(
        _corrupted_row,
        inputs_length=inputs_length,
        targets_length=settings["targets_length"],
        noise_density=noise_density,
        mean_noise_span_length=mean_noise_span_length,
        sentinel_id=settings["sentinel_id"],
        eos_id=eos_id,
        pad_id=pad_id,
    )
    rows = jax.vmap(row)(row_keys(key, inputs.shape[0]), inputs, real_row_lengths(batch))
    out = dict(batch)
    out.update(with_decoder_inputs(rows, decoder_start_id))
    return out


def _span_settings(
    inputs_length, targets_length, noise_density, mean_noise_span_length,
    vocab_size, sentinel_id, num_sentinels,
) -> dict[str, int]:
    """Validated static settings: raw row length, targets length, first sentinel."""
    raw_length, needed_targets = span_corruption_lengths(
        int(inputs_length), float(noise_density), float(mean_noise_span_length)
    )
    most_inputs, most_targets, most_spans = _longest_outputs(
        raw_length, float(noise_density), float(mean_noise_span_length)
    )
    if most_inputs > inputs_length:
        raise ValueError(
            f"inputs_length={inputs_length} is too small for span corruption: a row needs "
            f"{most_inputs} encoder tokens; use a larger inputs_length."
        )
    needed_targets = max(needed_targets, most_targets)
    if targets_length is None:
        targets_length = needed_targets
    if targets_length < needed_targets:
        raise ValueError(
            f"targets_length={targets_length} is shorter than the {needed_targets} decoder "
            f"tokens span corruption with inputs_length={inputs_length} produces; leave it "
            f"unset or set it >= {needed_targets}."
        )
    first_sentinel = resolved_sentinel_id(sentinel_id, vocab_size)
    if first_sentinel - most_spans + 1 < 0:
        raise ValueError(
            f"sentinel_id={first_sentinel} leaves no room for {most_spans} sentinels counting "
            "down; set vocab_size / sentinel_id to the tokenizer's (T5: 32099)."
        )
    if num_sentinels is not None and most_spans > num_sentinels:
        raise ValueError(
            f"a row of {raw_length} tokens has up to {most_spans} noise spans but only "
            f"num_sentinels={num_sentinels} sentinel ids are reserved; lower inputs_length or "
            "reserve more extra ids in the tokenizer."
        )
    return {
        "raw_length": raw_length,
        "targets_length": int(targets_length),
        "sentinel_id": first_sentinel,
    }


def span_corruption_objective(*, z_loss: float = T5X_Z_LOSS, **options: Any):
    """The ``span_corruption`` ``Objective``: ``span_corruption`` with ``options`` + the seq2seq
    loss (z-loss ``z_loss``, t5x's 1e-4 by default).

    Options: those of ``span_corruption`` (``inputs_length``, ``targets_length``,
    ``noise_density``, ``mean_noise_span_length``, ``vocab_size`` or ``sentinel_id``,
    ``num_sentinels``, ``eos_id``, ``pad_id``, ``decoder_start_id``). The train loop fills
    ``vocab_size`` (the tokenizer's, not the model's padded embedding size), ``eos_id`` and
    ``pad_id`` from the tokenizer; the data rows must be ``span_corruption_lengths(inputs_length)
    [0]`` tokens long. Settings are validated here, before any step runs.
    """
    from lmjax.objectives import Objective

    unknown = sorted(set(options) - set(SPAN_CORRUPTION_OPTIONS))
    if unknown:
        raise ValueError(
            f"objective 'span_corruption' has no options {unknown}; it takes "
            f"{sorted(SPAN_CORRUPTION_OPTIONS + ('z_loss',))}."
        )
    defaults = {"inputs_length": 512, "noise_density": 0.15, "mean_noise_span_length": 3.0}
    merged = {**defaults, **options}
    _span_settings(
        merged["inputs_length"], merged.get("targets_length"), merged["noise_density"],
        merged["mean_noise_span_length"], merged.get("vocab_size"), merged.get("sentinel_id"),
        merged.get("num_sentinels"),
    )
    check_z_loss(z_loss)

    def corrupt(key: jax.Array, batch: dict[str, Any]) -> dict[str, Any]:
        return span_corruption(key, batch, **options)

    def loss(outputs: dict[str, jax.Array], batch: dict[str, Any]):
        return seq2seq_loss(outputs, batch, z_loss=z_loss)

    return Objective(
        name="span_corruption", corrupt=corrupt, loss=loss, model_inputs=SEQ2SEQ_MODEL_INPUTS
    )


SPAN_CORRUPTION_OPTIONS = (
    "inputs_length",
    "targets_length",
    "noise_density",
    "mean_noise_span_length",
    "vocab_size",
    "sentinel_id",
    "num_sentinels",
    "eos_id",
    "pad_id",
    "decoder_start_id",
)
# What the train loop fills from the tokenizer unless the experiment sets it.
SPAN_CORRUPTION_VOCABULARY_OPTIONS = ("vocab_size", "eos_id", "pad_id")
