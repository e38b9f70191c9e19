"""BART's document noising functions (Lewis et al. 2020, "BART: Denoising Sequence-to-Sequence
Pre-training for Natural Language Generation, Translation, and Comprehension", section 2.2 and
Figure 2), in pure jnp with static shapes.

Axis legend: T input row length (static), T' output row length (static), K span lengths.

Reference: fairseq ``data/denoising_dataset.py::DenoisingDataset`` (``permute_sentences``,
``add_whole_word_mask``, ``add_insertion_noise``, ``add_rolling_noise``) with the option names
of fairseq ``tasks/denoising.py`` (``mask``, ``mask_random``, ``mask_length``,
``poisson_lambda``, ``replace_length``, ``insert``, ``permute_sentences``, ``rotate``).

Representation. One document row is int32 ``tokens`` [T] and a ``length`` n (an int scalar that
may be traced): positions ``0 .. n-1`` hold ``<s> ... </s>``, positions ``n .. T-1`` padding
(``pad_id``). Every noise maps ``(key, tokens, length)`` to ``(tokens [T'], length)`` with a
static ``T'``: ``T`` for sentence permutation, rotation and ``replace_length=-1`` masking, more
where tokens can be added (``masked_spans_length``, ``inserted_noise_length``). Rows are vmapped;
nothing loops in Python over traced values: choices are random scores and ranks, spans are
cumulative maxima over word numbers, removals and insertions are cumsum-indexed gathers and
scatters.

Counts. Every count the reference rounds with ``math.ceil`` is read from a table built on the
host with the reference's own arithmetic, so the counts match it exactly for every length:
``ceil(is_word_start.float().sum() * p)`` in float32 (a torch float32 tensor times a Python
float), the other products in Python float64 -- including the quirk that the insertions made
for zero-length spans are ``ceil(n * (num_inserts / n))``, which is ``num_inserts + 1`` for some
``n`` (e.g. 7 inserts into 25 tokens insert 8).

Randomness follows the reference in distribution, not draw for draw (it uses torch/numpy RNGs).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

MASK_LENGTHS = ("subword", "word", "span-poisson")
REPLACE_LENGTHS = (-1, 0, 1)

# Scores above every uniform draw in [0, 1): non-candidates rank last.
_NOT_A_CANDIDATE = 2.0
# A row may need more room for zero-length-span insertions than the static bound with
# probability below this (``zero_span_room``); such a row keeps only the room's worth.
_ROOM_TAIL = 1e-12


@functools.lru_cache(maxsize=256)
def _ceil_table(max_count: int, p: float, arithmetic: str) -> np.ndarray:
    """int32 [max_count + 1]: the reference's rounded-up count for ``n = 0 .. max_count``.

    ``arithmetic``: ``'float32'`` = ``ceil(float32(n) * float32(p))`` (``add_whole_word_mask``'s
    ``num_to_mask``); ``'float64'`` = ``math.ceil(n * p)`` (``add_insertion_noise``'s ``n`` and
    ``num_random``); ``'sentences'`` = ``math.ceil((n * 2 * p) / 2.0)`` (``permute_sentences``).
    """
    n = range(max_count + 1)
    if arithmetic == "float32":
        values = [math.ceil(float(np.float32(i) * np.float32(p))) for i in n]
    elif arithmetic == "float64":
        values = [math.ceil(i * p) for i in n]
    elif arithmetic == "sentences":
        values = [math.ceil((i * 2 * p) / 2.0) for i in n]
    else:
        raise ValueError(f"unknown arithmetic {arithmetic!r}")
    return np.asarray(values, np.int32)


@functools.lru_cache(maxsize=64)
def _zero_span_insert_table(max_length: int, max_inserts: int) -> np.ndarray:
    """int32 [max_length + 1, max_inserts + 1]: ``ceil(n * (k / n))``, the insertions fairseq
    makes for ``k`` zero-length spans in a row of ``n`` tokens (``add_insertion_noise(source,
    k / n)``)."""
    table = np.zeros((max_length + 1, max_inserts + 1), np.int32)
    for n in range(max_length + 1):
        for k in range(max_inserts + 1):
            table[n, k] = k if n == 0 or k == 0 else math.ceil(n * (k / n))
    return table


@functools.lru_cache(maxsize=64)
def span_length_pmf(poisson_lambda: float) -> np.ndarray:
    """float64 [K]: fairseq's span-length distribution for ``mask_length='span-poisson'``.

    The Poisson(``poisson_lambda``) pmf over ``k = 0, 1, ...`` up to and including the first
    ``k`` whose probability is below 1e-7 (at most ``k = 127``), stored in float32 and normalised
    as ``torch.distributions.Categorical`` does (``DenoisingDataset.__init__``).

    Raises:
      ValueError: ``poisson_lambda`` is not positive, or so large that every length but 0 is cut.
    """
    lam = float(poisson_lambda)
    if not lam > 0:
        raise ValueError(f"poisson_lambda must be > 0 (fairseq: 3.0; BART-large: 3.5), got {lam}.")
    probabilities, power, factorial = [], 1.0, 1
    for k in range(128):
        probabilities.append(math.exp(-lam) * power / factorial)
        power *= lam
        factorial *= k + 1
        if probabilities[-1] < 1e-7:
            break
    pmf = np.asarray(probabilities, np.float32).astype(np.float64)
    if len(pmf) < 2 or pmf[1:].sum() <= 0:
        raise ValueError(
            f"poisson_lambda={lam} truncates the span-length distribution to length 0 only "
            "(exp(-lambda) < 1e-7); use a lambda below 16."
        )
    return pmf / pmf.sum()


def _most_spans(max_length: int, p: float) -> int:
    """The largest ``num_to_mask`` a row of ``max_length`` tokens can have (all inner positions
    word starts)."""
    return int(_ceil_table(max_length, float(p), "float32")[max(max_length - 2, 0)])


@functools.lru_cache(maxsize=64)
def zero_span_room(max_length: int, p: float, poisson_lambda: float) -> int:
    """Static bound on the zero-length spans of one row (``mask_length='span-poisson'``).

    A row with ``m`` spans of positive length has a NegativeBinomial(``m``, ``1 - p0``) number
    of zero-length draws among them (``p0`` = P(length 0)); the bound is that count's quantile
    at ``1 - 1e-12`` for the largest ``m`` (``num_to_mask`` with every inner token a word start).
    """
    m = _most_spans(max_length, p)
    p0 = float(span_length_pmf(poisson_lambda)[0])
    if m == 0 or p0 == 0.0:
        return 0
    log_p0, log_p1 = math.log(p0), math.log1p(-p0)
    cdf, k = 0.0, 0
    while True:
        log_pmf = math.lgamma(k + m) - math.lgamma(k + 1) - math.lgamma(m) + k * log_p0
        cdf += math.exp(log_pmf + m * log_p1)
        if 1.0 - cdf < _ROOM_TAIL or k > 64 * max_length:
            return k
        k += 1


def masked_spans_length(
    max_length: int, p: float, mask_length: str = "subword", poisson_lambda: float = 3.0
) -> int:
    """T' of ``masked_spans`` for rows of ``max_length`` tokens: ``T`` plus, for span-poisson, room
    for the zero-length spans' insertions (``zero_span_room``, +1 for fairseq's rounding)."""
    if mask_length != "span-poisson" or p == 0:
        return int(max_length)
    room = zero_span_room(int(max_length), float(p), float(poisson_lambda))
    return int(max_length) + int(_zero_span_insert_table(int(max_length), room).max())


def inserted_noise_length(max_length: int, p: float) -> int:
    """T' of ``inserted_noise``: ``T + ceil(T * p)``."""
    return int(max_length) + int(_ceil_table(int(max_length), float(p), "float64")[-1])


def check_span_options(
    p: float, mask_length: str, replace_length: int, poisson_lambda: float, mask_random: float
) -> None:
    """Raises ValueError naming a bad masking option (fairseq ``DenoisingDataset.__init__``)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"mask must be a fraction in [0, 1] (BART-large: 0.3), got {p}.")
    if not 0.0 <= mask_random <= 1.0:
        raise ValueError(f"mask_random must be in [0, 1] (BART-large: 0.1), got {mask_random}.")
    if mask_length not in MASK_LENGTHS:
        raise ValueError(f"mask_length must be one of {MASK_LENGTHS}, got {mask_length!r}.")
    if replace_length not in REPLACE_LENGTHS:
        raise ValueError(
            f"replace_length must be -1 (keep span length), 0 (delete) or 1 (one token), got "
            f"{replace_length!r}."
        )
    if mask_length == "subword" and replace_length == -1:
        raise ValueError(
            "mask_length='subword' masks single tokens: use replace_length=1 (token masking) or 0 "
            "(token deletion), as fairseq requires."
        )
    if mask_length == "span-poisson":
        span_length_pmf(poisson_lambda)


def _ranks(key: jax.Array, candidates: jax.Array) -> jax.Array:
    """int32 [N]: a uniformly random order of the candidates (ranks 0, 1, ...), others after."""
    scores = jnp.where(candidates, jax.random.uniform(key, candidates.shape), _NOT_A_CANDIDATE)
    return jnp.argsort(jnp.argsort(scores)).astype(jnp.int32)


def _compacted(tokens: jax.Array, keep: jax.Array, pad_id: int) -> tuple[jax.Array, jax.Array]:
    """The kept tokens moved to the front in order, padded: ``(tokens [T], count)``."""
    size = tokens.shape[0]
    slots = jnp.where(keep, jnp.cumsum(keep, dtype=jnp.int32) - 1, size)  # [T]
    out = jnp.full((size,), pad_id, tokens.dtype).at[slots].set(tokens, mode="drop")
    return out, jnp.sum(keep, dtype=jnp.int32)


def _inner(size: int, length: jax.Array) -> jax.Array:
    """bool [size]: positions strictly between ``<s>`` (0) and ``</s>`` (``length - 1``)."""
    positions = jnp.arange(size)
    return (positions >= 1) & (positions < length - 1)


def _as_length(length: jax.Array | int) -> jax.Array:
    return jnp.asarray(length, jnp.int32)


def permuted_sentences(
    key: jax.Array,
    tokens: jax.Array,
    length: jax.Array | int,
    p: float,
    full_stop_ids: Sequence[int],
) -> tuple[jax.Array, jax.Array]:
    """Sentence permutation (``DenoisingDataset.permute_sentences``).

    Full stops are the tokens in ``full_stop_ids`` (fairseq: the id of GPT-2 BPE ``"13"``, i.e.
    ".", for ``bpe='gpt2'``, else ``</s>``), and the token before ``</s>`` counts as one. A
    sentence ends at a full stop not preceded by a full stop (so in ``". . ."`` only the first
    ends a sentence; the rest open the next). ``ceil(n_sentences * p)`` sentences, chosen
    uniformly, are shuffled among their own slots; the others stay. ``<s>`` stays first; tokens
    after the last sentence end (``</s>``, and full stops following the forced one) stay in place.

    Returns:
      ``(tokens [T], length)``.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"permute_sentences must be in [0, 1] (BART-large: 1.0), got {p}.")
    if not full_stop_ids:
        raise ValueError(
            "permuted_sentences needs full_stop_ids (the tokenizer's '.' id(s); fairseq uses "
            "</s> when the BPE is not gpt2)."
        )
    size = tokens.shape[0]
    length = _as_length(length)
    positions = jnp.arange(size)  # [T]
    stops = jnp.isin(tokens, jnp.asarray(tuple(full_stop_ids), tokens.dtype))
    full = (stops & (positions < length)) | (positions == length - 2)  # [T]
    previous = jnp.concatenate([jnp.zeros((1,), bool), full[:-1]])  # [T]
    is_end = full & ~previous & (positions >= 1)  # [T] last token of a sentence
    num_sentences = jnp.sum(is_end, dtype=jnp.int32)
    sentence_of = jnp.cumsum(is_end, dtype=jnp.int32) - is_end  # [T] ends before the position
    in_body = (positions >= 1) & (sentence_of < num_sentences)  # [T]
    lengths = jax.ops.segment_sum(
        in_body.astype(jnp.int32), jnp.where(in_body, sentence_of, size), num_segments=size
    )  # [S=T]
    starts = 1 + jnp.cumsum(lengths) - lengths  # [S]

    pick_key, order_key = jax.random.split(key)
    slots = jnp.arange(size)  # [S]
    num_to_permute = jnp.asarray(_ceil_table(size, float(p), "sentences"))[num_sentences]
    chosen = _ranks(pick_key, slots < num_sentences) < num_to_permute  # [S]
    chosen_slots = jnp.argsort(jnp.where(chosen, slots, size + slots))  # [S] chosen first
    shuffle = jnp.argsort(
        jnp.where(slots < num_to_permute, jax.random.uniform(order_key, (size,)), 2.0 + slots)
    )  # [S] a random permutation of the first num_to_permute, identity after
    ordering = slots.at[chosen_slots].set(chosen_slots[shuffle])  # [S] slot -> sentence

    out_lengths = lengths[ordering]  # [S]
    out_ends = 1 + jnp.cumsum(out_lengths)  # [S] exclusive
    slot_of = jnp.minimum(jnp.searchsorted(out_ends, positions, side="right"), size - 1)  # [T]
    source = starts[ordering[slot_of]] + positions - (out_ends - out_lengths)[slot_of]  # [T]
    body_end = 1 + jnp.sum(lengths)
    moved = (positions >= 1) & (positions < body_end)
    return jnp.where(moved, tokens[jnp.clip(source, 0, size - 1)], tokens), length


def rotated_document(
    key: jax.Array, tokens: jax.Array, length: jax.Array | int
) -> tuple[jax.Array, jax.Array]:
    """Document rotation (``DenoisingDataset.add_rolling_noise``), always applied.

    ``offset`` is uniform in ``[1, max(1, n - 1)]`` (``np.random.randint(1, max(1, n - 1) + 1)``)
    and the row becomes ``[<s>] + t[offset:-1] + t[1:offset] + [</s>]``; offsets 1 and ``n - 1``
    both leave it unchanged. The objective applies it with probability ``rotate``.

    Returns:
      ``(tokens [T], length)``.
    """
    size = tokens.shape[0]
    length = _as_length(length)
    positions = jnp.arange(size)
    offset = jax.random.randint(key, (), 1, jnp.maximum(1, length - 1) + 1)
    interior = jnp.maximum(length - 2, 1)
    source = 1 + (positions - 1 + offset - 1) % interior  # [T]
    rotate_here = _inner(size, length)
    return jnp.where(rotate_here, tokens[jnp.clip(source, 0, size - 1)], tokens), length


def tokens_with_insertions(
    key: jax.Array,
    tokens: jax.Array,
    length: jax.Array | int,
    count: jax.Array | int,
    max_count: int,
    *,
    mask_random: float,
    mask_id: int,
    vocab_size: int,
    pad_id: int,
) -> tuple[jax.Array, jax.Array]:
    """``count`` (<= static ``max_count``) new tokens at uniformly chosen positions strictly inside
    the lengthened row: ``ceil(count * mask_random)`` of them random ids in ``[1, vocab_size)``,
    the rest ``mask_id`` (the body of ``add_insertion_noise``).

    Returns:
      ``(tokens [T + max_count], length + count)``.
    """
    size = tokens.shape[0]
    out_size = size + max_count
    length = _as_length(length)
    count = jnp.minimum(jnp.asarray(count, jnp.int32), max_count)
    new_length = length + count
    positions = jnp.arange(out_size)  # [T']
    rank_key, random_key = jax.random.split(key)
    candidates = (positions >= 1) & (positions <= new_length - 2)  # [T']
    rank = _ranks(rank_key, candidates)  # [T']
    noise = candidates & (rank < count)  # [T']
    num_random = jnp.asarray(_ceil_table(max_count, float(mask_random), "float64"))[count]
    is_random = noise & (rank < num_random)  # [T'] a uniform subset of the new positions
    source = positions - jnp.cumsum(noise, dtype=jnp.int32)  # [T'] for kept positions
    padded = jnp.concatenate([tokens, jnp.full((max_count,), pad_id, tokens.dtype)])
    body = padded[jnp.clip(source, 0, out_size - 1)]
    random_tokens = jax.random.randint(random_key, (out_size,), 1, vocab_size, tokens.dtype)
    out = jnp.where(noise, jnp.where(is_random, random_tokens, mask_id), body)
    return jnp.where(positions < new_length, out, pad_id).astype(tokens.dtype), new_length


def inserted_noise(
    key: jax.Array,
    tokens: jax.Array,
    length: jax.Array | int,
    p: float,
    mask_random: float,
    mask_id: int,
    vocab_size: int,
    *,
    pad_id: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """Insertion noise (``DenoisingDataset.add_insertion_noise``): ``ceil(n * p)`` new tokens at
    positions strictly inside the row, ``ceil(new * mask_random)`` of them random ids in
    ``[1, vocab_size)``, the rest ``mask_id``.

    Returns:
      ``(tokens [T + ceil(T * p)], length + ceil(length * p))`` (``inserted_noise_length``).
    """
    if not p >= 0 or not math.isfinite(p):
        raise ValueError(f"insert must be a ratio >= 0 (fairseq default 0.0), got {p}.")
    if not 0.0 <= mask_random <= 1.0:
        raise ValueError(f"mask_random must be in [0, 1], got {mask_random}.")
    size = tokens.shape[0]
    table = _ceil_table(size, float(p), "float64")
    count = jnp.asarray(table)[_as_length(length)]
    return tokens_with_insertions(
        key, tokens, length, count, int(table[-1]),
        mask_random=mask_random, mask_id=mask_id, vocab_size=vocab_size, pad_id=pad_id,
    )


class SpanPlan(NamedTuple):
    """The random choices of one row's masking (before tokens are touched).

    Attributes:
      lengths: int32 [T], the length in words of the span starting at each position (0: none).
        Positive lengths sum to ``num_to_mask`` exactly.
      is_random: bool [T], the span starting there is replaced by a random token, not mask.
      num_inserts: int32 scalar, the zero-length spans (they become insertions).
      num_to_mask: int32 scalar, ``ceil(#word_starts * p)``.
    """

    lengths: jax.Array
    is_random: jax.Array
    num_inserts: jax.Array
    num_to_mask: jax.Array


def nonzero_span_lengths(
    key: jax.Array, shape: tuple[int, ...], poisson_lambda: float
) -> jax.Array:
    """int32 ``shape``: span lengths drawn from ``span_length_pmf`` conditioned on length >= 1."""
    pmf = span_length_pmf(poisson_lambda)[1:]
    logits = np.where(pmf > 0, np.log(np.maximum(pmf, 1e-300)), -np.inf).astype(np.float32)
    return 1 + jax.random.categorical(key, jnp.asarray(logits), shape=shape).astype(jnp.int32)


def _inner_word_starts(word_starts: jax.Array | None, size: int, length: jax.Array) -> jax.Array:
    """bool [T]: fairseq's ``is_word_start`` (all ones for subwords) with the first and last
    positions (and padding) cleared."""
    starts = jnp.ones((size,), bool) if word_starts is None else jnp.asarray(word_starts) != 0
    return starts & _inner(size, length)


def span_plan(
    key: jax.Array,
    word_starts: jax.Array | None,
    length: jax.Array | int,
    p: float,
    *,
    size: int,
    mask_length: str = "subword",
    poisson_lambda: float = 3.0,
    mask_random: float = 0.0,
) -> SpanPlan:
    """The spans of ``add_whole_word_mask``: how many, how long, where, mask or random.

    ``num_to_mask = ceil(#word_starts * p)`` (first and last positions are never word starts).
    For ``'span-poisson'`` the reference draws lengths from ``span_length_pmf`` until they sum
    to at least ``num_to_mask`` and trims the last so they sum exactly to it; zero lengths are
    dropped and counted as insertions. The same sequence is drawn here as ``num_to_mask``
    positive lengths (cut by cumsum where they reach the budget, the last trimmed) with a
    Geometric number of zero draws before each kept one, which has the reference's
    distribution. Otherwise every span is one word. Span starts are a uniformly random subset
    of the word starts; each span is random with probability ``mask_random``.
    """
    length = _as_length(length)
    starts = _inner_word_starts(word_starts, size, length)  # [T]
    num_words = jnp.sum(starts, dtype=jnp.int32)
    num_to_mask = jnp.asarray(_ceil_table(size, float(p), "float32"))[num_words]
    draw_key, zero_key, start_key, random_key = jax.random.split(key, 4)
    slots = jnp.arange(size)  # [T] span number
    if mask_length == "span-poisson":
        drawn = nonzero_span_lengths(draw_key, (size,), poisson_lambda)  # [T]
        reached = jnp.cumsum(drawn)  # [T]
        num_spans = jnp.where(num_to_mask > 0, jnp.sum(reached < num_to_mask) + 1, 0)
        before = reached - drawn
        lengths = jnp.where(slots < num_spans, jnp.minimum(drawn, num_to_mask - before), 0)
        p0 = float(span_length_pmf(poisson_lambda)[0])
        if p0 > 0:
            zeros = jax.random.geometric(zero_key, 1.0 - p0, (size,)) - 1  # [T]
            num_inserts = jnp.sum(jnp.where(slots < num_spans, zeros, 0), dtype=jnp.int32)
        else:
            num_inserts = jnp.zeros((), jnp.int32)
        num_inserts = jnp.minimum(num_inserts, zero_span_room(size, float(p), poisson_lambda))
    else:
        num_spans = num_to_mask
        lengths = (slots < num_spans).astype(jnp.int32)
        num_inserts = jnp.zeros((), jnp.int32)
    rank = _ranks(start_key, starts)  # [T]
    span_lengths = jnp.where(starts & (rank < num_spans), lengths[rank], 0).astype(jnp.int32)
    is_random = (span_lengths > 0) & (jax.random.uniform(random_key, (size,)) < mask_random)
    return SpanPlan(span_lengths, is_random, num_inserts.astype(jnp.int32), num_to_mask)


def tokens_with_spans_replaced(
    key: jax.Array,
    tokens: jax.Array,
    length: jax.Array | int,
    plan: SpanPlan,
    word_starts: jax.Array | None = None,
    *,
    replace_length: int,
    mask_id: int,
    vocab_size: int,
    pad_id: int,
) -> tuple[jax.Array, jax.Array]:
    """Applies ``plan``'s spans (the replacement loop of ``add_whole_word_mask``).

    A span of ``l`` words starting at word start ``s`` covers ``s`` and every later position
    until the ``l + 1``-th word start, never ``</s>`` (fairseq's ``is_word_start[-1] = 255``
    stopper). Spans may overlap, as in the reference. ``replace_length``: 0 deletes every
    covered token; 1 replaces each span's first token by ``mask_id`` (or a random id) and
    deletes the rest of the span, and a start covered by an earlier span is deleted; -1
    replaces every covered token, taking mask-or-random from the earliest-starting span covering
    it (the reference's last write).

    Returns:
      ``(tokens [T], length)`` with the removals compacted; no insertions yet.
    """
    size = tokens.shape[0]
    length = _as_length(length)
    positions = jnp.arange(size)
    word_number = jnp.cumsum(_inner_word_starts(word_starts, size, length), dtype=jnp.int32)
    last_word = jnp.where(plan.lengths > 0, word_number + plan.lengths - 1, -1)  # [T]
    furthest = jax.lax.cummax(last_word)  # [T] the furthest word reached by a span so far
    inner = _inner(size, length)
    covered = inner & (furthest >= word_number)  # [T]
    furthest_before = jnp.concatenate([jnp.full((1,), -1, furthest.dtype), furthest[:-1]])
    continued = inner & (furthest_before >= word_number)  # [T] covered by an earlier start
    random_tokens = jax.random.randint(key, (size,), 1, vocab_size, tokens.dtype)
    real = positions < length
    if replace_length == -1:
        owner = jnp.searchsorted(furthest, word_number, side="left")  # earliest covering span
        is_random = plan.is_random[jnp.clip(owner, 0, size - 1)]
        out = jnp.where(covered, jnp.where(is_random, random_tokens, mask_id), tokens)
        keep = real
    elif replace_length == 1:
        head = covered & ~continued
        out = jnp.where(head, jnp.where(plan.is_random, random_tokens, mask_id), tokens)
        keep = real & ~continued
    else:
        out, keep = tokens, real & ~covered
    return _compacted(out.astype(tokens.dtype), keep, pad_id)


def masked_spans(
    key: jax.Array,
    tokens: jax.Array,
    length: jax.Array | int,
    p: float,
    *,
    mask_id: int,
    vocab_size: int,
    mask_random: float = 0.0,
    mask_length: str = "subword",
    poisson_lambda: float = 3.0,
    replace_length: int = 0,
    word_starts: jax.Array | None = None,
    pad_id: int = 1,
    return_plan: bool = False,
) -> tuple[jax.Array, jax.Array] | tuple[jax.Array, jax.Array, SpanPlan]:
    """Text infilling, token masking or token deletion (``add_whole_word_mask``); defaults are
    fairseq's (``mask_length='subword'``, ``replace_length=0``, ``poisson_lambda=3.0``).

    Args:
      key: PRNG key.
      tokens: int32 [T]; length: real tokens (may be traced).
      p: ``mask``, the share of word starts that start a span (BART-large: 0.3).
      mask_id, vocab_size: ``<mask>`` and the vocabulary (random ids are ``[1, vocab_size)``).
      mask_random: probability that a span becomes one random token instead of mask.
      mask_length: ``'subword'`` (every token a word start; ``word_starts`` not allowed),
        ``'word'`` (one-word spans) or ``'span-poisson'`` (Poisson-length spans in words).
      poisson_lambda: mean span length for ``'span-poisson'``.
      replace_length: -1 keep the span's length, 0 delete it, 1 one token (see
        ``tokens_with_spans_replaced``).
      word_starts: optional bool [T], True at the first piece of each word (fairseq's
        ``mask_whole_words`` looked up at the row's ids); None = every token.
      pad_id: padding id.
      return_plan: also return the ``SpanPlan`` (static).

    Returns:
      ``(tokens [masked_spans_length(T, ...)], length)`` (+ ``plan``). Zero-length spans are
      inserted afterwards as ``tokens_with_insertions`` (fairseq's ``add_insertion_noise(
      num_inserts / n)``).
    """
    check_span_options(p, mask_length, replace_length, poisson_lambda, mask_random)
    if mask_length == "subword" and word_starts is not None:
        raise ValueError(
            "mask_length='subword' treats every token as a word start (fairseq ignores word "
            "boundaries there); drop word_starts or use mask_length='word' / 'span-poisson'."
        )
    size = tokens.shape[0]
    if word_starts is not None and jnp.shape(word_starts) != (size,):
        raise ValueError(f"word_starts {jnp.shape(word_starts)} must match tokens {(size,)}.")
    plan_key, replace_key, insert_key = jax.random.split(key, 3)
    plan = span_plan(
        plan_key, word_starts, length, p, size=size, mask_length=mask_length,
        poisson_lambda=poisson_lambda, mask_random=mask_random,
    )
    out, out_length = tokens_with_spans_replaced(
        replace_key, tokens, length, plan, word_starts, replace_length=replace_length,
        mask_id=mask_id, vocab_size=vocab_size, pad_id=pad_id,
    )
    out_size = masked_spans_length(size, p, mask_length, poisson_lambda)
    if out_size == size:
        return (out, out_length, plan) if return_plan else (out, out_length)
    room = zero_span_room(size, float(p), float(poisson_lambda))
    table = jnp.asarray(_zero_span_insert_table(size, room))
    count = table[out_length, plan.num_inserts]
    out, out_length = tokens_with_insertions(
        insert_key, out, out_length, count, out_size - size, mask_random=mask_random,
        mask_id=mask_id, vocab_size=vocab_size, pad_id=pad_id,
    )
    return (out, out_length, plan) if return_plan else (out, out_length)


def token_masking(
    key: jax.Array,
    tokens: jax.Array,
    length: jax.Array | int,
    p: float,
    *,
    mask_id: int,
    vocab_size: int,
    mask_random: float = 0.0,
    pad_id: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """BART's token masking: ``masked_spans`` with ``mask_length='subword'``,
    ``replace_length=1`` (``ceil((n - 2) * p)`` single tokens -> mask / random). ``(tokens [T],
    length)``."""
    return masked_spans(
        key, tokens, length, p, mask_id=mask_id, vocab_size=vocab_size, mask_random=mask_random,
        mask_length="subword", replace_length=1, pad_id=pad_id,
    )


def token_deletion(
    key: jax.Array, tokens: jax.Array, length: jax.Array | int, p: float, *, pad_id: int = 1
) -> tuple[jax.Array, jax.Array]:
    """BART's token deletion: ``masked_spans`` with ``mask_length='subword'``,
    ``replace_length=0`` (``ceil((n - 2) * p)`` tokens removed). ``(tokens [T], length)``."""
    return masked_spans(
        key, tokens, length, p, mask_id=0, vocab_size=2, mask_length="subword",
        replace_length=0, pad_id=pad_id,
    )
