"""Static-shape position selection for masked-language-model corruption.

Axis legend: B batch, L length, N draws per row, W words per row (W = L: a row never has more
words than tokens, so word-level arrays are padded to L).

The reference pipelines pick masked positions with Python loops over shuffled candidate lists
(``google-research/bert:create_pretraining_data.py::create_masked_lm_predictions``,
``google-research/albert:create_pretraining_data.py``). Here the same choices are made with
random scores and ranks (token level) or with a ``lax.scan`` over words in a random order (word
and n-gram level), so every function is jittable, vectorised over the batch and has shapes that
depend only on the input shapes. Each function takes the step's key; nothing is stateful.

Vocabulary-level helpers (``special_token_mask``, ``random_tokens``, ``replace_selected``) live
here too, because every masking scheme shares them.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

# Scores above every uniform draw in [0, 1): non-candidates sort last.
_NOT_A_CANDIDATE = 2.0


def special_token_mask(inputs: jax.Array, special_ids: Sequence[int]) -> jax.Array:
    """bool [B, L]: True where ``inputs`` holds one of ``special_ids``."""
    if not special_ids:
        return jnp.zeros(inputs.shape, bool)
    return jnp.isin(inputs, jnp.asarray(tuple(special_ids), inputs.dtype))


def real_token_mask(batch: dict[str, jax.Array]) -> jax.Array:
    """bool [B, L]: True at real (non-padding) tokens, from ``batch['attention_mask']``.

    A batch without ``attention_mask`` has no padding.
    """
    inputs = batch["inputs"]
    mask = batch.get("attention_mask")
    if mask is None:
        return jnp.ones(inputs.shape, bool)
    if mask.shape != inputs.shape:
        raise ValueError(f"attention_mask {mask.shape} and inputs {inputs.shape} disagree.")
    return jnp.asarray(mask) != 0


def word_starts_from_batch(batch: dict[str, jax.Array]) -> jax.Array:
    """bool [B, L]: True at the first piece of each word.

    Taken from ``batch['word_starts']`` (bool / 0-1), or derived from ``batch['word_ids']`` (a
    word starts where the id differs from the previous position's).

    Raises:
      ValueError: when the batch has neither key.
    """
    if "word_starts" in batch:
        return jnp.asarray(batch["word_starts"]) != 0
    if "word_ids" in batch:
        word_ids = jnp.asarray(batch["word_ids"])
        previous = jnp.pad(word_ids[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
        return word_ids != previous
    raise ValueError(
        "Whole-word masking needs batch['word_starts'] (True at the first piece of each word) "
        "or batch['word_ids']."
    )


def budget(
    num_real: jax.Array, rate: float, max_predictions: int | None, *, at_least_one: bool = True
) -> jax.Array:
    """int32 [B]: ``min(max_predictions, max(1, round(num_real * rate)))``.

    BERT's ``num_to_predict`` (``create_masked_lm_predictions``; ``num_real`` is ``len(tokens)``,
    [CLS] and [SEP] included). ``jnp.round`` rounds halves to even like Python's ``round``; the
    product is taken in float32, so a product that lands within float32 rounding of a half can
    round the other way from the reference's float64.
    """
    count = jnp.round(jnp.asarray(num_real, jnp.float32) * rate).astype(jnp.int32)
    if at_least_one:
        count = jnp.maximum(count, 1)
    if max_predictions is not None:
        count = jnp.minimum(count, max_predictions)
    return count


def select_fixed_count(key: jax.Array, candidates: jax.Array, count: jax.Array) -> jax.Array:
    """Picks ``count[b]`` candidate positions per row uniformly without replacement.

    Equivalent to shuffling the candidate list and taking its first ``count`` entries: each
    position gets a uniform score, non-candidates score above every candidate, and the positions
    whose rank is below ``count`` are taken (all candidates when a row has fewer than ``count``).

    Args:
      key: PRNG key.
      candidates: bool [B, L].
      count: int [B].

    Returns:
      bool [B, L], a subset of ``candidates``.
    """
    scores = jax.random.uniform(key, candidates.shape)
    scores = jnp.where(candidates, scores, _NOT_A_CANDIDATE)  # [B, L]
    rank = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)  # [B, L]
    return candidates & (rank < count[:, None])


def select_bernoulli(key: jax.Array, candidates: jax.Array, rate: float) -> jax.Array:
    """bool [B, L]: each candidate is selected independently with probability ``rate``.

    The selection of Hugging Face ``DataCollatorForLanguageModeling.torch_mask_tokens`` (a
    ``bernoulli(mlm_probability)`` matrix with special tokens and padding zeroed); a row may get
    no selected position at all.
    """
    return candidates & jax.random.bernoulli(key, rate, candidates.shape)


def word_ids(candidates: jax.Array, word_starts: jax.Array) -> jax.Array:
    """int32 [B, L]: the index of each candidate's word among the row's candidate words.

    Words are numbered 0, 1, ... over candidate positions only; a candidate that is not a word
    start joins the previous candidate word even across a special token, as BERT's
    ``cand_indexes[-1].append(i)`` does for ``##`` pieces. Non-candidates get ``L`` (an index past
    every word, which segment sums drop).
    """
    length = candidates.shape[-1]
    starts = word_starts & candidates
    ids = jnp.maximum(jnp.cumsum(starts, axis=-1) - 1, 0)  # [B, L]
    return jnp.where(candidates, ids, length).astype(jnp.int32)


def word_lengths(ids: jax.Array) -> jax.Array:
    """int32 [B, W=L]: the number of candidate pieces in each word (0 past the last word)."""
    length = ids.shape[-1]
    one_row = lambda row: jax.ops.segment_sum(  # noqa: E731
        jnp.ones(row.shape, jnp.int32), row, num_segments=length
    )
    return jax.vmap(one_row)(ids)


def ngram_lengths(key: jax.Array, shape: tuple[int, ...], max_ngram: int) -> jax.Array:
    """int32 ``shape``: n-gram lengths n in 1..max_ngram with p(n) proportional to 1/n.

    ALBERT's ``favor_shorter_ngram`` ``pvals`` (``create_pretraining_data.py``): for
    ``max_ngram=3`` the probabilities are 6/11, 3/11, 2/11. ``max_ngram=1`` always gives 1.
    """
    inverse = 1.0 / jnp.arange(1, max_ngram + 1, dtype=jnp.float32)
    logits = jnp.log(inverse / jnp.sum(inverse))
    return 1 + jax.random.categorical(key, logits, shape=shape).astype(jnp.int32)


def _greedy_word_spans_one_row(
    key: jax.Array, lengths: jax.Array, row_budget: jax.Array, max_ngram: int
) -> tuple[jax.Array, jax.Array]:
    """One row of ``select_word_spans``: returns (covered bool [W], span length int32 [W])."""
    num_slots = lengths.shape[0]
    valid = lengths > 0
    num_words = jnp.sum(valid)
    order_key, ngram_key = jax.random.split(key)
    scores = jnp.where(valid, jax.random.uniform(order_key, (num_slots,)), _NOT_A_CANDIDATE)
    order = jnp.argsort(scores)  # [W] word indices, shuffled, invalid last
    drawn = ngram_lengths(ngram_key, (num_slots,), max_ngram)  # [W]
    prefix = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(lengths)])  # [W + 1]
    span_sizes = jnp.arange(1, max_ngram + 1)  # [n]
    slots = jnp.arange(num_slots)

    def step(carry, x):
        count, covered = carry
        start, n = x
        # Spans starting at `start` of 1..max_ngram words, cut at the last word as ALBERT's
        # cand_indexes[idx:idx + n] slicing cuts them.
        ends = jnp.minimum(start + span_sizes, num_words)  # [n]
        pieces = prefix[ends] - prefix[start]  # [n]
        # ALBERT draws n, then tries n - 1, ..., 1 while the span would exceed the budget.
        fits = (span_sizes <= n) & (count + pieces <= row_budget)
        size = jnp.max(jnp.where(fits, span_sizes, 0))
        end = jnp.minimum(start + size, num_words)
        in_span = (slots >= start) & (slots < end)  # [W]
        take = valid[start] & (size > 0) & (count < row_budget)
        take = take & ~jnp.any(covered & in_span)
        covered = covered | (take & in_span)
        count = count + jnp.where(take, prefix[end] - prefix[start], 0)
        return (count, covered), jnp.where(take, end - start, 0)

    init = (jnp.zeros((), jnp.int32), jnp.zeros((num_slots,), bool))
    (_, covered), taken = jax.lax.scan(step, init, (order, drawn))
    span_length = jnp.zeros((num_slots,), jnp.int32).at[order].set(taken)
    return covered, span_length


def select_word_spans(
    key: jax.Array,
    candidates: jax.Array,
    word_starts: jax.Array,
    count: jax.Array,
    max_ngram: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """Picks whole words (``max_ngram=1``) or n-grams of whole words under a piece budget.

    The words are visited in a random order. At each word an n-gram length n is drawn
    (``ngram_lengths``); the longest span of at most n words starting there whose pieces still fit
    in the row's budget ``count`` is taken unless it overlaps a span already taken. With
    ``max_ngram=1`` this is BERT's ``do_whole_word_mask`` loop (a word that would exceed the budget
    is skipped and later, shorter words may still fit); with ``max_ngram=3`` ALBERT's n-gram loop.

    A ``lax.scan`` over the L word slots of each row; O(L * L) work per row.

    Args:
      key: PRNG key.
      candidates: bool [B, L].
      word_starts: bool [B, L], True at the first piece of each word.
      count: int [B] piece budget per row.
      max_ngram: the longest span, in words.

    Returns:
      ``(selected, span_length)``: ``selected`` bool [B, L] positions (a subset of
      ``candidates``, whole words only); ``span_length`` int32 [B, W], at each taken span's first
      word the number of words it covers, 0 elsewhere.
    """
    ids = word_ids(candidates, word_starts)  # [B, L]
    lengths = word_lengths(ids)  # [B, W]
    keys = jax.random.split(key, candidates.shape[0])
    covered, span_length = jax.vmap(
        lambda k, n, c: _greedy_word_spans_one_row(k, n, c, max_ngram)
    )(keys, lengths, count)  # [B, W] each
    safe_ids = jnp.minimum(ids, candidates.shape[-1] - 1)
    selected = candidates & jnp.take_along_axis(covered, safe_ids, axis=-1)  # [B, L]
    return selected, span_length


def select_words_bernoulli(
    key: jax.Array, candidates: jax.Array, word_starts: jax.Array, rate: float
) -> jax.Array:
    """bool [B, L]: each candidate word is selected, as a unit, with probability ``rate``."""
    ids = word_ids(candidates, word_starts)  # [B, L]
    chosen = jax.random.bernoulli(key, rate, candidates.shape)  # [B, W]
    safe_ids = jnp.minimum(ids, candidates.shape[-1] - 1)
    return candidates & jnp.take_along_axis(chosen, safe_ids, axis=-1)


def random_tokens(
    key: jax.Array, shape: tuple[int, ...], vocab_size: int, exclude: Sequence[int] = ()
) -> jax.Array:
    """int32 ``shape``: ids uniform over ``[0, vocab_size)`` minus the ids in ``exclude``.

    Draws r uniform over the ``vocab_size - len(exclude)`` allowed ids and maps it to the r-th
    allowed id by stepping over each excluded id in increasing order.
    """
    excluded = sorted({int(i) for i in exclude if 0 <= int(i) < vocab_size})
    allowed = vocab_size - len(excluded)
    if allowed <= 0:
        raise ValueError(f"No token left to draw: vocab_size {vocab_size}, excluded {excluded}.")
    tokens = jax.random.randint(key, shape, 0, allowed, dtype=jnp.int32)
    for special in excluded:
        tokens = tokens + (tokens >= special).astype(jnp.int32)
    return tokens


def replace_selected(
    key: jax.Array,
    inputs: jax.Array,
    selected: jax.Array,
    *,
    mask_id: int,
    vocab_size: int,
    mask_prob: float,
    random_prob: float,
    random_exclude: Sequence[int] = (),
) -> jax.Array:
    """Replaces the selected positions: [MASK] w.p. ``mask_prob``, a random token w.p.
    ``random_prob``, otherwise the original token; each position decides independently.

    BERT (``create_masked_lm_predictions``): ``mask_prob=0.8, random_prob=0.1``. ELECTRA
    (``pretrain_helpers.mask``): ``mask_prob=0.85, random_prob=0``.
    """
    if not 0.0 <= mask_prob <= 1.0 or not 0.0 <= random_prob <= 1.0 - mask_prob:
        raise ValueError(
            f"Need 0 <= mask_prob, random_prob and their sum <= 1; got {mask_prob}, {random_prob}."
        )
    decision_key, token_key = jax.random.split(key)
    u = jax.random.uniform(decision_key, inputs.shape)  # [B, L]
    to_mask = selected & (u < mask_prob)
    replaced = jnp.where(to_mask, jnp.asarray(mask_id, inputs.dtype), inputs)
    if random_prob > 0.0:
        to_random = selected & (u >= mask_prob) & (u < mask_prob + random_prob)
        tokens = random_tokens(token_key, inputs.shape, vocab_size, random_exclude)
        replaced = jnp.where(to_random, tokens.astype(inputs.dtype), replaced)
    return replaced
