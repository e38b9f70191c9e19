"""BART's denoising objective (Lewis et al. 2020, section 2.2 and 3.1): noise a document, train
the encoder-decoder to reconstruct the original.

Axis legend: B batch, L packed row length, T = L + 2 document length (= decoder length Ld),
Le encoder length.

Reference: fairseq ``data/denoising_dataset.py::DenoisingDataset.__getitem__`` (noising order
permute sentences -> mask (text infilling / token masking / deletion) -> insert -> rotate with
probability ``rotate``; ``target = tokens.clone()``) and ``collate`` (decoder input = target with
``</s>`` moved to the front, ``data_utils.collate_tokens(move_eos_to_beginning=True)``; HF
``modeling_bart.py::shift_tokens_right`` with ``decoder_start_token_id = 2``). Option names and
defaults are fairseq ``tasks/denoising.py``'s ``DenoisingConfig``.

Rows -> documents. Each packed row of ``batch['inputs']`` [B, L] (its real tokens are
``segment_ids > 0``; padding only ends the stream) is treated as one document: ``<s>`` is
prepended unless the row already starts with it and ``</s>`` appended unless it already ends with
it, giving ``tokens [T = L + 2]``. fairseq's blocks hold ``tokens_per_sample - 2`` tokens plus
``<s>``/``</s>``, so ``data.seq_len = 510`` gives BART's 512-token documents. An all-padding row
stays empty (zero weights). Each row draws its noise from ``fold_in(key, row)``.

Outputs (the seq2seq contract): ``encoder_inputs`` / ``encoder_segment_ids`` [B, Le] (the noised
document; Le = ``denoising_lengths(L)[1]`` unless ``encoder_length`` is set), ``decoder_targets``
[B, T] (the original document), ``decoder_inputs`` [B, T] (``</s>`` then the targets shifted
right), ``decoder_segment_ids`` int32 and ``decoder_weights`` float32 [B, T] (1 on the document's
tokens, 0 on padding).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lmjax.objectives import bart_noising as noising
from lmjax.objectives.seq2seq_loss import (
    SEQ2SEQ_MODEL_INPUTS,
    check_z_loss,
    seq2seq_loss,
    shifted_right,
)

# The fairseq BART (GPT-2 BPE) dictionary as in HF ``facebook/bart-large``: <s> 0, <pad> 1,
# </s> 2, "." 4 (GPT-2 id 13, fairseq's full_stop_index), <mask> 50264, 50265 ids.
BART_BOS_ID = 0
BART_PAD_ID = 1
BART_EOS_ID = 2
BART_FULL_STOP_IDS = (4,)
BART_MASK_ID = 50264
BART_VOCAB_SIZE = 50265

# fairseq ``tasks/denoising.py`` defaults.
FAIRSEQ_DEFAULTS = {
    "mask": 0.0,
    "mask_random": 0.0,
    "insert": 0.0,
    "permute_sentences": 0.0,
    "rotate": 0.5,
    "poisson_lambda": 3.0,
    "mask_length": "subword",
    "replace_length": 0,
}
# The BART-large pre-training command (fairseq issue #1899): text infilling of 30% of the words
# with Poisson(3.5) spans, each span -> one <mask> (10% a random token), all sentences permuted,
# no rotation or insertion. Spans count whole words when ``word_start_mask`` is given (fairseq
# with gpt2 BPE), subwords otherwise.
BART_LARGE_PRETRAINING = {
    "mask": 0.3,
    "mask_random": 0.1,
    "insert": 0.0,
    "permute_sentences": 1.0,
    "rotate": 0.0,
    "poisson_lambda": 3.5,
    "mask_length": "span-poisson",
    "replace_length": 1,
}
PRESETS = {"fairseq_defaults": FAIRSEQ_DEFAULTS, "bart_large": BART_LARGE_PRETRAINING}


@dataclasses.dataclass(frozen=True)
class DenoisingConfig:
    """BART denoising settings (fairseq names); validated on construction.

    Attributes:
      mask: share of word starts that start a masked span (0 = no masking).
      mask_random: probability that a masked span / inserted token is a random id.
      insert: inserted tokens per token (``ceil(n * insert)``).
      permute_sentences: share of sentences permuted.
      rotate: probability of rotating the document.
      poisson_lambda: span-length mean for ``mask_length='span-poisson'``.
      mask_length: ``'subword'``, ``'word'`` or ``'span-poisson'``.
      replace_length: -1, 0 or 1 (see ``bart_noising.tokens_with_spans_replaced``).
      mask_id, vocab_size, bos_id, pad_id, eos_id: the tokenizer's; random ids are
        ``[1, vocab_size)`` as in fairseq's ``torch.randint(1, len(vocab))``.
      full_stop_ids: sentence-ending ids (fairseq: "." for gpt2 BPE, else ``</s>``).
      word_start_mask: optional per-id 0/1 table [vocab_size], 1 for ids that begin a word
        (fairseq ``encoders/utils.py::get_whole_word_mask``: special ids and ids whose text starts
        a word); used by ``'word'`` and ``'span-poisson'``; None = every token starts a word.
      encoder_length: static Le; None = the bound (``denoising_lengths``). A noised document
        longer than Le is cut to Le tokens ending in ``</s>``.
      decoder_start_id: first decoder input; None = ``eos_id`` (BART).
    """

    mask: float = 0.0
    mask_random: float = 0.0
    insert: float = 0.0
    permute_sentences: float = 0.0
    rotate: float = 0.5
    poisson_lambda: float = 3.0
    mask_length: str = "subword"
    replace_length: int = 0
    mask_id: int = BART_MASK_ID
    vocab_size: int = BART_VOCAB_SIZE
    bos_id: int = BART_BOS_ID
    pad_id: int = BART_PAD_ID
    eos_id: int = BART_EOS_ID
    full_stop_ids: tuple[int, ...] = BART_FULL_STOP_IDS
    word_start_mask: tuple[int, ...] | None = None
    encoder_length: int | None = None
    decoder_start_id: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "full_stop_ids", tuple(int(i) for i in self.full_stop_ids))
        if self.word_start_mask is not None:
            table = tuple(int(bool(v)) for v in np.asarray(self.word_start_mask).reshape(-1))
            object.__setattr__(self, "word_start_mask", table)
        noising.check_span_options(
            self.mask, self.mask_length, self.replace_length, self.poisson_lambda,
            self.mask_random,
        )
        for name in ("permute_sentences", "rotate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1] (0 turns it off), got {value}.")
        if not (self.insert >= 0 and np.isfinite(self.insert)):
            raise ValueError(f"insert must be a ratio >= 0 (0 turns it off), got {self.insert}.")
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be the tokenizer's (>= 2), got {self.vocab_size}.")
        for name in ("mask_id", "bos_id", "pad_id", "eos_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ValueError(
                    f"{name}={value} is outside the vocabulary [0, {self.vocab_size}); set the "
                    "tokenizer's ids (BART: bos 0, pad 1, eos 2, mask 50264, 50265 ids)."
                )
        if self.permute_sentences > 0 and not self.full_stop_ids:
            raise ValueError(
                "permute_sentences needs full_stop_ids (the tokenizer's '.' id; BART: (4,))."
            )
        if self.word_start_mask is not None:
            if self.mask_length == "subword":
                raise ValueError(
                    "word_start_mask is used only by mask_length='word' or 'span-poisson'; "
                    "drop it or change mask_length."
                )
            if len(self.word_start_mask) != self.vocab_size:
                raise ValueError(
                    f"word_start_mask has {len(self.word_start_mask)} entries; it needs one per "
                    f"vocabulary id ({self.vocab_size})."
                )
        if self.encoder_length is not None and self.encoder_length < 2:
            raise ValueError(f"encoder_length must be >= 2 or None, got {self.encoder_length}.")


def denoising_lengths(row_length: int, config: DenoisingConfig) -> tuple[int, int]:
    """Static ``(document length T = L + 2, longest noised document)`` for rows of ``L`` tokens.

    The noised bound is ``T`` plus room for zero-length-span insertions (span-poisson,
    ``bart_noising.masked_spans_length``) plus ``ceil(T1 * insert)`` (``inserted_noise_length``);
    permutation, rotation and masking otherwise never lengthen a document.
    """
    size = int(row_length) + 2
    bound = size
    if config.mask > 0:
        bound = noising.masked_spans_length(
            bound, config.mask, config.mask_length, config.poisson_lambda
        )
    if config.insert > 0:
        bound = noising.inserted_noise_length(bound, config.insert)
    return size, bound


def documents_from_rows(
    batch: dict[str, Any], config: DenoisingConfig
) -> tuple[jax.Array, jax.Array]:
    """``(tokens int32 [B, L + 2], lengths int32 [B])``: each row as ``<s> row </s>`` (no second
    ``<s>`` / ``</s>`` where the row already has one), padded with ``pad_id``."""
    inputs = jnp.asarray(batch["inputs"], jnp.int32)
    if inputs.ndim != 2:
        raise ValueError(f"batch['inputs'] must be [batch, length], got shape {inputs.shape}.")
    rows, row_length = inputs.shape
    segment_ids = batch.get("segment_ids")
    if segment_ids is None:
        real = jnp.full((rows,), row_length, jnp.int32)
    else:
        real = jnp.sum(jnp.asarray(segment_ids) > 0, axis=1, dtype=jnp.int32)  # [B]
    has_bos = (real > 0) & (inputs[:, 0] == config.bos_id)
    last = jnp.take_along_axis(inputs, jnp.maximum(real - 1, 0)[:, None], axis=1)[:, 0]
    has_eos = (real > 0) & (last == config.eos_id)
    lead = (~has_bos).astype(jnp.int32)  # [B]
    body_end = lead + real  # [B]
    lengths = jnp.where(real > 0, body_end + (~has_eos).astype(jnp.int32), 0)  # [B]
    positions = jnp.arange(row_length + 2)[None, :]  # [1, T]
    source = jnp.clip(positions - lead[:, None], 0, row_length - 1)  # [B, T]
    body = jnp.take_along_axis(inputs, source, axis=1)  # [B, T]
    tokens = jnp.where(positions < body_end[:, None], body, config.eos_id)
    tokens = jnp.where(positions < lead[:, None], config.bos_id, tokens)
    tokens = jnp.where(positions < lengths[:, None], tokens, config.pad_id)
    return tokens.astype(jnp.int32), lengths


def noised_document(
    key: jax.Array, tokens: jax.Array, length: jax.Array, config: DenoisingConfig
) -> tuple[jax.Array, jax.Array]:
    """One document through fairseq's noising order: permute sentences -> mask -> insert ->
    rotate (with probability ``rotate``); a noise whose ratio is 0 is skipped.

    The key is split as ``permute, mask, insert, coin, rotate = jax.random.split(key, 5)``.

    Returns:
      ``(tokens [denoising_lengths(T - 2)[1]], length)``.
    """
    permute_key, mask_key, insert_key, coin_key, rotate_key = jax.random.split(key, 5)
    ids = dict(mask_id=config.mask_id, vocab_size=config.vocab_size, pad_id=config.pad_id)
    if config.permute_sentences > 0:
        tokens, length = noising.permuted_sentences(
            permute_key, tokens, length, config.permute_sentences, config.full_stop_ids
        )
    if config.mask > 0:
        word_starts = None
        if config.word_start_mask is not None:
            table = jnp.asarray(config.word_start_mask, bool)
            word_starts = table[jnp.clip(tokens, 0, config.vocab_size - 1)]
        tokens, length = noising.masked_spans(
            mask_key, tokens, length, config.mask, mask_random=config.mask_random,
            mask_length=config.mask_length, poisson_lambda=config.poisson_lambda,
            replace_length=config.replace_length, word_starts=word_starts, **ids,
        )
    if config.insert > 0:
        tokens, length = noising.inserted_noise(
            insert_key, tokens, length, config.insert, config.mask_random, config.mask_id,
            config.vocab_size, pad_id=config.pad_id,
        )
    if config.rotate > 0:
        rotated, _ = noising.rotated_document(rotate_key, tokens, length)
        tokens = jnp.where(jax.random.uniform(coin_key) < config.rotate, rotated, tokens)
    return tokens, length


def _fitted(tokens: jax.Array, length: jax.Array, size: int, config: DenoisingConfig):
    """``tokens`` padded or cut to ``size`` (a cut row ends in ``</s>``)."""
    if tokens.shape[0] < size:
        pad = jnp.full((size - tokens.shape[0],), config.pad_id, tokens.dtype)
        return jnp.concatenate([tokens, pad]), length
    if tokens.shape[0] == size:
        return tokens, length
    cut = length > size
    tokens = tokens[:size]
    tokens = jnp.where(cut & (jnp.arange(size) == size - 1), config.eos_id, tokens)
    return tokens, jnp.minimum(length, size)


def bart_denoising(
    key: jax.Array, batch: dict[str, Any], config: DenoisingConfig
) -> dict[str, Any]:
    """BART denoising corruption of packed rows (jittable; shapes static).

    Returns:
      The batch plus ``encoder_inputs``, ``encoder_segment_ids`` int32 [B, Le] and
      ``decoder_inputs``, ``decoder_targets``, ``decoder_segment_ids`` int32 and
      ``decoder_weights`` float32 [B, L + 2] (segment id 1 on real tokens, 0 on padding).
    """
    documents, lengths = documents_from_rows(batch, config)  # [B, T], [B]
    rows = documents.shape[0]
    _, bound = denoising_lengths(documents.shape[1] - 2, config)
    encoder_length = bound if config.encoder_length is None else int(config.encoder_length)

    def one_row(row_key, tokens, length):
        noised, noised_length = noised_document(row_key, tokens, length, config)
        return _fitted(noised, noised_length, encoder_length, config)

    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(rows))
    encoder_inputs, encoder_lengths = jax.vmap(one_row)(keys, documents, lengths)
    start = config.eos_id if config.decoder_start_id is None else config.decoder_start_id
    decoder_real = jnp.arange(documents.shape[1])[None, :] < lengths[:, None]  # [B, T]
    out = dict(batch)
    out["encoder_inputs"] = encoder_inputs.astype(jnp.int32)
    out["encoder_segment_ids"] = (
        jnp.arange(encoder_length)[None, :] < encoder_lengths[:, None]
    ).astype(jnp.int32)
    out["decoder_targets"] = documents
    out["decoder_inputs"] = shifted_right(documents, start)
    out["decoder_segment_ids"] = decoder_real.astype(jnp.int32)
    out["decoder_weights"] = decoder_real.astype(jnp.float32)
    return out


BART_DENOISING_OPTIONS = tuple(f.name for f in dataclasses.fields(DenoisingConfig))
# What the train loop fills from the tokenizer unless the experiment sets it.
BART_DENOISING_VOCABULARY_OPTIONS = (
    "mask_id", "vocab_size", "bos_id", "pad_id", "eos_id", "full_stop_ids",
)


def bart_denoising_objective(
    *, preset: str | None = None, z_loss: float = 0.0, **options: Any
):
    """The ``bart_denoising`` ``Objective``: ``bart_denoising`` + ``seq2seq_loss``.

    Args:
      preset: None / ``'fairseq_defaults'`` (fairseq ``tasks/denoising.py``: only rotation, with
        probability 0.5) or ``'bart_large'`` (``BART_LARGE_PRETRAINING``); ``options`` override it.
      z_loss: t5x z-loss coefficient (0 = off, fairseq has none).
      **options: ``DenoisingConfig`` fields. The train loop fills ``mask_id``, ``vocab_size`` (the
        tokenizer's, not a padded embedding size), ``bos_id``, ``pad_id``, ``eos_id`` and
        ``full_stop_ids`` (the id(s) of "."; fairseq uses ``</s>`` for non-gpt2 BPE);
        ``word_start_mask`` is optional (experiment's choice, with ``'word'``/``'span-poisson'``).

    Raises:
      ValueError: an unknown option or preset, or a bad value (checked here, before any step).
    """
    from lmjax.objectives import Objective

    unknown = sorted(set(options) - set(BART_DENOISING_OPTIONS))
    if unknown:
        raise ValueError(
            f"objective 'bart_denoising' has no options {unknown}; it takes "
            f"{sorted(BART_DENOISING_OPTIONS + ('preset', 'z_loss'))}."
        )
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"Unknown bart_denoising preset {preset!r}; known: {sorted(PRESETS)}.")
    settings = {**PRESETS.get(preset or "fairseq_defaults"), **options}
    if isinstance(settings.get("full_stop_ids"), int):
        settings["full_stop_ids"] = (settings["full_stop_ids"],)
    if isinstance(settings.get("full_stop_ids"), Sequence):
        settings["full_stop_ids"] = tuple(settings["full_stop_ids"])
    config = DenoisingConfig(**settings)
    check_z_loss(z_loss)

    def corrupt(key: jax.Array, batch: dict[str, Any]) -> dict[str, Any]:
        return bart_denoising(key, batch, config)

    def loss(outputs: dict[str, jax.Array], batch: dict[str, Any]):
        return seq2seq_loss(outputs, batch, z_loss=z_loss)

    return Objective(
        name="bart_denoising", corrupt=corrupt, loss=loss, model_inputs=SEQ2SEQ_MODEL_INPUTS
    )
