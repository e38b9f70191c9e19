"""BART noising functions and the ``bart_denoising`` objective against fairseq's rules
(``data/denoising_dataset.py``): exact counts, a re-implementation of the span replacement loop,
span-length statistics, permutation / rotation / insertion structure, composition order.

Rates are compared with 5-standard-deviation bounds; every draw is seeded.
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy import stats

from lmjax.objectives import Objective
from lmjax.objectives import bart_denoising as bd
from lmjax.objectives import bart_noising as bn
from lmjax.objectives.seq2seq_loss import SEQ2SEQ_MODEL_INPUTS

BOS, PAD, EOS, MASK, DOT = 0, 1, 2, 3, 4
FIRST_WORD = 5  # body tokens are >= FIRST_WORD and < ORIGINAL_LIMIT
ORIGINAL_LIMIT = 1000
HUGE_VOCAB = 1 << 30  # random ids land above ORIGINAL_LIMIT (seeded: checked once, not by luck)
IDS = dict(mask_id=MASK, vocab_size=HUGE_VOCAB, pad_id=PAD)


def _documents(seed, rows, size, *, min_length=4, max_length=None):
    """<s> distinct increasing ids </s> pad..., random lengths in [min_length, max_length]."""
    rng = np.random.default_rng(seed)
    max_length = size if max_length is None else max_length
    lengths = rng.integers(min_length, max_length + 1, rows)
    tokens = np.full((rows, size), PAD, np.int64)
    for b, n in enumerate(lengths):
        tokens[b, 0], tokens[b, n - 1] = BOS, EOS
        tokens[b, 1 : n - 1] = FIRST_WORD + np.arange(n - 2)
    return tokens.astype(np.int32), lengths.astype(np.int32)


def _word_starts(seed, rows, size, rate=0.6):
    return np.random.default_rng(seed).random((rows, size)) < rate


def _np(tree):
    return jax.tree.map(np.asarray, tree)


def _keys(seed, rows):
    return jax.random.split(jax.random.PRNGKey(seed), rows)


def _word_budget(num_words, p):
    """fairseq's num_to_mask, computed by torch exactly as add_whole_word_mask does."""
    return int(math.ceil(torch.ones(int(num_words)).sum() * p))


def _inner_starts(word_starts, n):
    starts = np.asarray(word_starts[:n]).astype(np.int64).copy()
    starts[0] = 0
    starts[n - 1] = 0
    return starts


def _fairseq_replacement(tokens, n, span_lengths, is_random, word_starts, replace_length):
    """fairseq's add_whole_word_mask after the plan (indices, lengths, mask_random), written
    with its loop over span offsets; random replacements are marked -1."""
    source = np.asarray(tokens[:n]).astype(np.int64).copy()
    is_word_start = _inner_starts(word_starts, n)
    indices = np.nonzero(np.asarray(span_lengths[:n]))[0]
    lengths = np.asarray(span_lengths)[indices].astype(np.int64)
    random = np.asarray(is_random)[indices]
    to_keep = np.ones(n, bool)
    is_word_start[-1] = 255
    if replace_length == 0:
        to_keep[indices] = False
    else:
        source[indices] = MASK
        source[indices[random]] = -1
    lengths = lengths - 1
    while indices.size:
        lengths = lengths - is_word_start[indices + 1]
        uncompleted = lengths >= 0
        indices = indices[uncompleted] + 1
        random, lengths = random[uncompleted], lengths[uncompleted]
        if replace_length != -1:
            to_keep[indices] = False
        else:
            source[indices] = MASK
            source[indices[random]] = -1
    return source[to_keep]


def _marked(row, n):
    """Our output with random ids (>= ORIGINAL_LIMIT) marked -1, as the reference marks them."""
    row = np.asarray(row[:n]).astype(np.int64)
    return np.where(row >= ORIGINAL_LIMIT, -1, row)


# ------------------------------------------------------------------------------------------------
# Counts.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.3, 0.15, 0.1, 0.35, 1 / 3, 0.7])
def test_count_tables_use_the_reference_arithmetic(p):
    words = bn._ceil_table(300, p, "float32")
    inserts = bn._ceil_table(300, p, "float64")
    sentences = bn._ceil_table(300, p, "sentences")
    for n in range(301):
        assert words[n] == _word_budget(n, p), (n, p)
        assert inserts[n] == math.ceil(n * p), (n, p)
        assert sentences[n] == math.ceil((n * 2 * p) / 2.0), (n, p)
    # fairseq inserts ceil(n * (k / n)) tokens for k zero-length spans: 8 for 7 into 25.
    assert bn._zero_span_insert_table(30, 8)[25, 7] == 8
    assert bn._zero_span_insert_table(30, 8)[20, 7] == 7


def test_span_length_pmf_is_fairseqs_truncated_poisson():
    pmf = bn.span_length_pmf(3.5)
    raw = [math.exp(-3.5) * 3.5**k / math.factorial(k) for k in range(len(pmf))]
    assert raw[-1] < 1e-7 and raw[-2] >= 1e-7  # cut after the first k below 1e-7
    np.testing.assert_allclose(pmf, np.asarray(raw) / sum(raw), rtol=1e-6)
    assert len(bn.span_length_pmf(3.0)) == 18  # k = 0..17; P(16) = 1.02e-7, P(17) = 1.8e-8


# ------------------------------------------------------------------------------------------------
# Token masking / deletion / whole words.
# ------------------------------------------------------------------------------------------------


def test_token_masking_masks_exactly_ceil_p_of_the_inner_tokens():
    rows, size, p = 2000, 40, 0.3
    tokens, lengths = _documents(0, rows, size)
    fn = functools.partial(bn.token_masking, p=p, mask_random=0.1, **IDS)
    out, out_lengths = _np(jax.jit(jax.vmap(fn))(_keys(1, rows), tokens, lengths))
    out, tokens = np.asarray(out), np.asarray(tokens)
    assert out.shape == (rows, size)
    np.testing.assert_array_equal(out_lengths, lengths)
    replaced = out != tokens
    num_random = 0
    for b, n in enumerate(np.asarray(lengths)):
        assert replaced[b].sum() == _word_budget(n - 2, p)
        assert out[b, 0] == BOS and out[b, n - 1] == EOS and (out[b, n:] == PAD).all()
        assert ((out[b][replaced[b]] == MASK) | (out[b][replaced[b]] >= ORIGINAL_LIMIT)).all()
        num_random += (out[b][replaced[b]] >= ORIGINAL_LIMIT).sum()
    total = replaced.sum()
    assert abs(num_random - 0.1 * total) <= 5 * math.sqrt(total * 0.1 * 0.9)


def test_token_deletion_removes_exactly_the_selected_count():
    rows, size, p = 2000, 40, 0.15
    tokens, lengths = _documents(2, rows, size)
    fn = functools.partial(bn.token_deletion, p=p, pad_id=PAD)
    out, out_lengths = _np(jax.jit(jax.vmap(fn))(_keys(3, rows), tokens, lengths))
    out = np.asarray(out)
    for b, n in enumerate(np.asarray(lengths)):
        m = int(out_lengths[b])
        assert m == n - _word_budget(n - 2, p)
        assert out[b, 0] == BOS and out[b, m - 1] == EOS and (out[b, m:] == PAD).all()
        body = out[b, 1 : m - 1]
        assert (np.diff(body) > 0).all() and set(body) <= set(np.asarray(tokens[b, 1 : n - 1]))


def test_word_masking_covers_whole_words():
    rows, size, p = 500, 32, 0.4
    tokens, lengths = _documents(4, rows, size)
    starts = _word_starts(5, rows, size)
    fn = functools.partial(
        bn.masked_spans, p=p, mask_length="word", replace_length=-1, **IDS
    )
    out, _ = _np(jax.jit(jax.vmap(fn))(_keys(6, rows), tokens, lengths, word_starts=starts))
    for b, n in enumerate(np.asarray(lengths)):
        masked = np.asarray(out[b, :n]) == MASK
        inner = _inner_starts(starts[b], n).astype(bool)
        assert (masked & inner).sum() == _word_budget(inner.sum(), p)
        for i in np.nonzero(masked)[0]:  # a masked piece is a word start or continues one
            assert inner[i] or (masked[i - 1] and not inner[i])
        for i in np.nonzero(masked & inner)[0]:  # ... and the whole word is masked
            j = i + 1
            while j < n - 1 and not inner[j]:
                assert masked[j]
                j += 1


# ------------------------------------------------------------------------------------------------
# Text infilling.
# ------------------------------------------------------------------------------------------------


def _covered_count(tokens, n, span_lengths, word_starts):
    no_random = np.zeros(len(span_lengths), bool)
    replaced = _fairseq_replacement(tokens, n, span_lengths, no_random, word_starts, -1)
    return int((replaced == MASK).sum())


@pytest.mark.parametrize("mask_length", ["word", "span-poisson"])
def test_span_replacement_matches_fairseqs_loop(mask_length):
    rows, size, p = 300, 36, 0.35
    tokens, lengths = _documents(7, rows, size)
    starts = _word_starts(8, rows, size)

    @jax.jit
    def plan_and_replacements(keys, tokens, lengths, starts):
        plan_fn = functools.partial(
            bn.span_plan, p=p, size=size, mask_length=mask_length, poisson_lambda=2.0,
            mask_random=0.3,
        )
        plans = jax.vmap(plan_fn)(keys, starts, lengths)
        outputs = {}
        for replace_length in (-1, 0, 1):
            replace_fn = functools.partial(
                bn.tokens_with_spans_replaced, replace_length=replace_length, **IDS
            )
            outputs[replace_length] = jax.vmap(replace_fn)(keys, tokens, lengths, plans, starts)
        return plans, outputs

    plans, outputs = _np(plan_and_replacements(_keys(9, rows), tokens, lengths, starts))
    overlapping = 0
    for b, n in enumerate(lengths):
        for replace_length, (out, out_lengths) in outputs.items():
            expected = _fairseq_replacement(
                tokens[b], n, plans.lengths[b], plans.is_random[b], starts[b], replace_length
            )
            assert int(out_lengths[b]) == len(expected)
            np.testing.assert_array_equal(_marked(out[b], len(expected)), expected)
        single_spans = [
            np.where(np.arange(size) == i, plans.lengths[b], 0)
            for i in np.nonzero(plans.lengths[b])[0]
        ]
        alone = sum(_covered_count(tokens[b], n, one, starts[b]) for one in single_spans)
        overlapping += _covered_count(tokens[b], n, plans.lengths[b], starts[b]) < alone
    # One-word spans start at distinct words and never overlap; Poisson spans often do, and
    # the comparison covers them.
    assert overlapping == 0 if mask_length == "word" else overlapping > 10


def test_span_plan_budget_is_exact_and_starts_are_word_starts():
    rows, size, p = 2000, 48, 0.3
    _, lengths = _documents(11, rows, size, min_length=2)
    starts = _word_starts(12, rows, size)
    fn = functools.partial(
        bn.span_plan, p=p, size=size, mask_length="span-poisson", poisson_lambda=3.5,
        mask_random=0.1,
    )
    plans = _np(jax.jit(jax.vmap(fn))(_keys(13, rows), starts, lengths))
    span_lengths = np.asarray(plans.lengths)
    for b, n in enumerate(np.asarray(lengths)):
        inner = np.zeros(size, bool)
        inner[:n] = _inner_starts(starts[b], n).astype(bool)
        assert plans.num_to_mask[b] == _word_budget(inner.sum(), p)
        assert span_lengths[b].sum() == plans.num_to_mask[b]
        assert (span_lengths[b][~inner] == 0).all()
        assert not np.asarray(plans.is_random[b])[span_lengths[b] == 0].any()


def _expected_span_counts(budget, positive_pmf):
    """E[#spans of each length] for fairseq's draw-until-budget-then-trim, by recursion on the
    remaining budget (positive lengths only; zeros do not change the budget)."""
    k_max = len(positive_pmf)
    expected = np.zeros((budget + 1, k_max + 1))
    for r in range(1, budget + 1):
        for k, q in enumerate(positive_pmf, start=1):
            if k < r:
                expected[r] += q * expected[r - k]
                expected[r, k] += q
            else:
                expected[r, r if r <= k_max else 0] += q
    return expected[budget]


def test_span_lengths_follow_the_truncated_poisson_with_budget_trimming():
    lam = 3.5
    pmf = bn.span_length_pmf(lam)
    # Untrimmed positive draws: chi-square against the zero-truncated pmf.
    draws = np.asarray(bn.nonzero_span_lengths(jax.random.PRNGKey(14), (100_000,), lam))
    observed = np.bincount(draws, minlength=len(pmf))[1 : len(pmf)]
    expected = 100_000 * pmf[1:] / pmf[1:].sum()
    big = expected >= 5
    chi2 = np.sum((observed[big] - expected[big]) ** 2 / expected[big])
    assert stats.chi2.sf(chi2, big.sum() - 1) > 1e-4
    # Per row, the spans including the trimmed last one: exact expectation by recursion.
    rows, size, p = 2000, 64, 0.3
    _, lengths = _documents(15, rows, size, min_length=20)
    fn = functools.partial(
        bn.span_plan, p=p, size=size, mask_length="span-poisson", poisson_lambda=lam
    )
    plans = _np(jax.jit(jax.vmap(fn, in_axes=(0, None, 0)))(_keys(16, rows), None, lengths))
    positive = pmf[1:] / pmf[1:].sum()
    expected_counts = np.zeros(len(pmf))
    for budget in np.asarray(plans.num_to_mask):
        counts = _expected_span_counts(int(budget), positive)
        expected_counts[: len(counts)] += counts[: len(pmf)]
    span_lengths = np.asarray(plans.lengths)
    observed_counts = np.bincount(span_lengths[span_lengths > 0], minlength=len(pmf))[: len(pmf)]
    for k in range(1, len(pmf)):
        assert abs(observed_counts[k] - expected_counts[k]) <= 5 * math.sqrt(expected_counts[k]) + 1
    # Zero-length spans: a Geometric number before each positive one, P(0) = pmf[0].
    num_spans = (span_lengths > 0).sum()
    mean_zeros = num_spans * pmf[0] / (1 - pmf[0])
    sd = math.sqrt(num_spans * pmf[0]) / (1 - pmf[0])
    assert abs(int(np.asarray(plans.num_inserts).sum()) - mean_zeros) <= 5 * sd


def test_zero_length_spans_become_insertions():
    rows, size, p = 1000, 40, 0.4
    tokens, lengths = _documents(17, rows, size, min_length=10)
    fn = functools.partial(
        bn.masked_spans, p=p, mask_length="span-poisson", poisson_lambda=1.0,
        replace_length=0, return_plan=True, **IDS,
    )
    out, out_lengths, plans = _np(jax.jit(jax.vmap(fn))(_keys(18, rows), tokens, lengths))
    assert out.shape[1] == bn.masked_spans_length(size, p, "span-poisson", 1.0)
    ones = np.ones((size,), bool)
    total_inserts = 0
    for b, n in enumerate(np.asarray(lengths)):
        kept = _fairseq_replacement(tokens[b], n, plans.lengths[b], plans.is_random[b], ones, 0)
        k = int(plans.num_inserts[b])
        inserted = math.ceil(len(kept) * (k / len(kept))) if k else 0
        m = int(out_lengths[b])
        row = np.asarray(out[b, :m])
        assert m == len(kept) + inserted
        assert (row == MASK).sum() == inserted and row[0] == BOS and row[-1] == EOS
        np.testing.assert_array_equal(row[row != MASK], kept)
        total_inserts += k
    assert total_inserts > 100  # lambda = 1 draws many zero lengths


# ------------------------------------------------------------------------------------------------
# Insertion, rotation, sentence permutation.
# ------------------------------------------------------------------------------------------------


def test_insertion_adds_ceil_len_p_tokens_with_the_random_split():
    rows, size, p, mask_random = 2000, 30, 0.2, 0.3
    tokens, lengths = _documents(19, rows, size)
    fn = functools.partial(
        bn.inserted_noise, p=p, mask_random=mask_random, mask_id=MASK,
        vocab_size=HUGE_VOCAB, pad_id=PAD,
    )
    out, out_lengths = _np(jax.jit(jax.vmap(fn))(_keys(20, rows), tokens, lengths))
    assert out.shape[1] == bn.inserted_noise_length(size, p) == size + 6
    first_slot = np.zeros(size + 6)
    for b, n in enumerate(np.asarray(lengths)):
        added = math.ceil(n * p)
        m = int(out_lengths[b])
        row = np.asarray(out[b])
        assert m == n + added and (row[m:] == PAD).all()
        assert row[0] == BOS and row[m - 1] == EOS
        new = (row[:m] == MASK) | (row[:m] >= ORIGINAL_LIMIT)
        assert new.sum() == added
        assert (row[:m] >= ORIGINAL_LIMIT).sum() == math.ceil(added * mask_random)
        np.testing.assert_array_equal(row[:m][~new], tokens[b, :n])
        if n == 20:
            first_slot[np.nonzero(new)[0]] += 1
    # Rows of 20 tokens: 4 new positions, uniform over 1 .. 22 (never <s>, nor </s> at 23).
    rows_20 = int((lengths == 20).sum())
    assert first_slot[0] == 0 and first_slot[23:].sum() == 0
    q = 4 / 22
    for count in first_slot[1:23]:
        assert abs(count - rows_20 * q) <= 5 * math.sqrt(rows_20 * q * (1 - q))


def test_rotation_is_a_uniform_rotation_of_the_interior():
    rows, size, n = 4000, 16, 12
    tokens, lengths = _documents(21, rows, size, min_length=n, max_length=n)
    out, out_lengths = _np(jax.jit(jax.vmap(bn.rotated_document))(_keys(22, rows), tokens, lengths))
    np.testing.assert_array_equal(out_lengths, lengths)
    shifts = np.zeros(n - 2, int)
    for b in range(rows):
        row, original = np.asarray(out[b]), np.asarray(tokens[b])
        assert row[0] == BOS and row[n - 1] == EOS and (row[n:] == PAD).all()
        shift = int(row[1] - FIRST_WORD)
        np.testing.assert_array_equal(row[1 : n - 1], np.roll(original[1 : n - 1], -shift))
        shifts[shift] += 1
    # offset uniform in [1, n - 1]: offsets 1 and n - 1 both leave the row as it is.
    probabilities = np.full(n - 2, 1 / (n - 1))
    probabilities[0] = 2 / (n - 1)
    for count, q in zip(shifts, probabilities):
        assert abs(count - rows * q) <= 5 * math.sqrt(rows * q * (1 - q))


def _sentences(row, n):
    """fairseq's sentence split of row[:n] (full stop DOT; the token before </s> forced)."""
    full = np.asarray(row[:n]) == DOT
    full[n - 2] = True
    ends = np.nonzero(full[1:] & ~full[:-1])[0] + 2
    starts = np.concatenate([[1], ends[:-1]]).astype(int)
    sentences = [tuple(np.asarray(row[s:e])) for s, e in zip(starts, ends)]
    return sentences, int(ends[-1]) if len(ends) else 1


def _orderings(body, sentences):
    """Every order of ``sentences`` whose concatenation is ``body``."""
    if not sentences:
        return [[]] if not body else []
    found = []
    for i, sentence in enumerate(sentences):
        if tuple(body[: len(sentence)]) == sentence:
            rest = _orderings(body[len(sentence) :], sentences[:i] + sentences[i + 1 :])
            found += [[sentence] + order for order in rest]
    return found


def _sentence_documents(seed, rows, size):
    """Documents of words and full stops, with runs of full stops and a trailing run."""
    rng = np.random.default_rng(seed)
    tokens = np.full((rows, size), PAD, np.int64)
    lengths = np.zeros(rows, np.int64)
    for b in range(rows):
        body, word = [], FIRST_WORD
        for _ in range(rng.integers(1, 6)):
            for _ in range(rng.integers(1, 4)):
                body.append(word)
                word += 1
            body += [DOT] * int(rng.choice([1, 1, 2, 3]))
        if rng.random() < 0.3:
            body += [word, DOT, DOT]
        row = [BOS] + body + [EOS]
        tokens[b, : len(row)], lengths[b] = row, len(row)
    return tokens.astype(np.int32), lengths.astype(np.int32)


@pytest.mark.parametrize("p", [1.0, 0.5])
def test_sentence_permutation_reorders_whole_sentences(p):
    rows, size = 1000, 40
    tokens, lengths = _sentence_documents(23, rows, size)
    fn = functools.partial(bn.permuted_sentences, p=p, full_stop_ids=(DOT,))
    out, out_lengths = _np(jax.jit(jax.vmap(fn))(_keys(24, rows), tokens, lengths))
    np.testing.assert_array_equal(out_lengths, lengths)
    unchanged = {}
    for b, n in enumerate(np.asarray(lengths)):
        row, original = np.asarray(out[b]), np.asarray(tokens[b])
        sentences, body_end = _sentences(original, n)
        assert row[0] == BOS and (row[body_end:] == original[body_end:]).all()
        orders = _orderings(tuple(row[1:body_end]), sentences)
        assert orders, (original[:n], row[:n])
        moved = min(sum(a != s for a, s in zip(order, sentences)) for order in orders)
        assert moved <= math.ceil(len(sentences) * p)
        if len(sentences) == 4:
            unchanged.setdefault("rows", 0)
            unchanged["rows"] += 1
            unchanged["same"] = unchanged.get("same", 0) + (moved == 0)
    # 4 sentences: p=1 permutes all 4 (identity 1/24); p=0.5 shuffles 2 of them (identity 1/2).
    q = 1 / 24 if p == 1.0 else 1 / 2
    count = unchanged["rows"]
    assert abs(unchanged["same"] - count * q) <= 5 * math.sqrt(count * q * (1 - q)) + 1


# ------------------------------------------------------------------------------------------------
# Composition and the objective.
# ------------------------------------------------------------------------------------------------

ALL_NOISES = dict(
    mask=0.3, mask_random=0.1, insert=0.1, permute_sentences=1.0, rotate=1.0,
    poisson_lambda=3.5, mask_length="span-poisson", replace_length=1,
    mask_id=MASK, vocab_size=HUGE_VOCAB, bos_id=BOS, pad_id=PAD, eos_id=EOS, full_stop_ids=(DOT,),
)


def test_noising_order_is_permute_mask_insert_rotate_in_one_trace():
    config = bd.DenoisingConfig(**ALL_NOISES)
    traces = []

    @jax.jit
    def noised(key, tokens, length):
        traces.append(1)
        return bd.noised_document(key, tokens, length, config)

    @jax.jit
    def in_order(key, tokens, length):
        permute_key, mask_key, insert_key, _, rotate_key = jax.random.split(key, 5)
        t, n = bn.permuted_sentences(permute_key, tokens, length, 1.0, (DOT,))
        t, n = bn.masked_spans(
            mask_key, t, n, 0.3, mask_random=0.1, mask_length="span-poisson",
            poisson_lambda=3.5, replace_length=1, **IDS,
        )
        t, n = bn.inserted_noise(insert_key, t, n, 0.1, 0.1, MASK, HUGE_VOCAB, pad_id=PAD)
        return bn.rotated_document(rotate_key, t, n)

    tokens, lengths = _sentence_documents(25, 12, 40)
    keys = _keys(26, 12)
    masked = 0
    for b in range(12):  # traced lengths: one trace for every row
        got, got_length = _np(noised(keys[b], tokens[b], lengths[b]))
        expected, expected_length = _np(in_order(keys[b], tokens[b], lengths[b]))
        assert got_length == expected_length
        np.testing.assert_array_equal(got, expected)
        assert got[0] == BOS and got[got_length - 1] == EOS
        masked += (got == MASK).sum()
    assert len(traces) == 1 and masked > 0
    assert len(set(lengths.tolist())) > 3


def _packed_batch():
    rng = np.random.default_rng(28)
    inputs = rng.integers(FIRST_WORD, 50, (4, 12))
    inputs[1, 0] = BOS  # already starts with <s>
    inputs[2, 7] = EOS  # already ends with </s> (8 real tokens)
    segment_ids = np.ones((4, 12), np.int32)
    segment_ids[2, 8:] = 0
    segment_ids[3] = 0  # all padding
    return {"inputs": jnp.asarray(inputs, jnp.int32), "segment_ids": jnp.asarray(segment_ids)}


def test_objective_builds_the_seq2seq_batch():
    objective = bd.bart_denoising_objective(preset="bart_large", **{
        k: ALL_NOISES[k] for k in ("mask_id", "vocab_size", "bos_id", "pad_id", "eos_id")
    }, full_stop_ids=[DOT])
    assert isinstance(objective, Objective) and objective.name == "bart_denoising"
    assert objective.model_inputs == SEQ2SEQ_MODEL_INPUTS
    batch = _packed_batch()
    out = _np(jax.jit(objective.corrupt)(jax.random.PRNGKey(0), batch))
    inputs = np.asarray(batch["inputs"])
    targets = np.asarray(out["decoder_targets"])
    assert targets.shape == (4, 14)
    np.testing.assert_array_equal(targets[0], [BOS, *inputs[0], EOS])
    np.testing.assert_array_equal(targets[1], [*inputs[1], EOS, PAD])
    np.testing.assert_array_equal(targets[2], [BOS, *inputs[2, :8], *[PAD] * 5])
    np.testing.assert_array_equal(targets[3], [PAD] * 14)
    np.testing.assert_array_equal(out["decoder_inputs"][:, 0], [EOS] * 4)
    np.testing.assert_array_equal(out["decoder_inputs"][:, 1:], targets[:, :-1])
    real = np.array([14, 13, 9, 0])[:, None] > np.arange(14)
    np.testing.assert_array_equal(out["decoder_weights"], real.astype(np.float32))
    np.testing.assert_array_equal(out["decoder_segment_ids"], real.astype(np.int32))
    assert out["decoder_weights"].dtype == jnp.float32
    config = bd.DenoisingConfig(**{**bd.BART_LARGE_PRETRAINING, **{
        k: ALL_NOISES[k] for k in ("mask_id", "vocab_size", "bos_id", "pad_id", "eos_id")
    }, "full_stop_ids": (DOT,)})
    assert out["encoder_inputs"].shape == (4, bd.denoising_lengths(12, config)[1])
    encoder_real = np.asarray(out["encoder_segment_ids"]).sum(1)
    for b in range(3):
        row = np.asarray(out["encoder_inputs"][b])
        n = encoder_real[b]
        assert row[0] == BOS and row[n - 1] == EOS and (row[n:] == PAD).all()
        assert (row[:n] == MASK).any()  # 30% of the words were infilled
    assert encoder_real[3] == 0
    logits = jax.random.normal(jax.random.PRNGKey(1), (4, 14, 60))
    loss, metrics = objective.loss({"logits": logits}, out)
    log_probs = jax.nn.log_softmax(logits)
    nll = -np.take_along_axis(np.asarray(log_probs), targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(loss, (nll * real).sum() / real.sum(), rtol=1e-5)
    assert metrics["num_tokens"] == real.sum()


def test_objective_defaults_are_fairseqs_and_encoder_length_cuts():
    objective = bd.bart_denoising_objective()
    out = objective.corrupt(jax.random.PRNGKey(0), _packed_batch())
    assert out["encoder_inputs"].shape == (4, 14)  # rotation only: no growth
    assert bd.DenoisingConfig().rotate == 0.5 and bd.DenoisingConfig().replace_length == 0
    for name, value in bd.FAIRSEQ_DEFAULTS.items():
        assert getattr(bd.DenoisingConfig(), name) == value
    cut = bd.bart_denoising_objective(encoder_length=6, eos_id=EOS, bos_id=BOS, pad_id=PAD)
    out = cut.corrupt(jax.random.PRNGKey(0), _packed_batch())
    np.testing.assert_array_equal(out["encoder_inputs"][:3, [0, 5]], [[BOS, EOS]] * 3)
    np.testing.assert_array_equal(out["encoder_segment_ids"].sum(1), [6, 6, 6, 0])


def test_word_start_mask_makes_spans_cover_words():
    vocab = 60
    table = np.zeros(vocab, int)
    table[:5] = 1  # specials start words, as in fairseq's get_whole_word_mask
    table[FIRST_WORD::3] = 1
    config = bd.DenoisingConfig(
        mask=0.5, mask_length="word", replace_length=-1, rotate=0.0, word_start_mask=table,
        mask_id=MASK, vocab_size=vocab, bos_id=BOS, pad_id=PAD, eos_id=EOS,
    )
    tokens, lengths = _documents(29, 200, 30, min_length=12)
    out, _ = _np(jax.jit(jax.vmap(functools.partial(bd.noised_document, config=config)))(
        _keys(30, 200), tokens, lengths
    ))
    for b, n in enumerate(np.asarray(lengths)):
        masked = np.asarray(out[b, :n]) == MASK
        starts = table[np.asarray(tokens[b, :n])].astype(bool)
        starts[0] = starts[n - 1] = False
        assert (masked & starts).sum() == _word_budget(starts.sum(), 0.5)
        assert all(starts[i] or masked[i - 1] for i in np.nonzero(masked)[0])


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(mask=1.5), "mask must be"),
        (dict(mask=0.3, mask_length="span"), "mask_length must be"),
        (dict(replace_length=2), "replace_length must be"),
        (dict(mask_length="subword", replace_length=-1), "replace_length=1"),
        (dict(mask_length="span-poisson", poisson_lambda=0.0), "poisson_lambda must be > 0"),
        (dict(mask_length="span-poisson", poisson_lambda=20.0), "lambda below 16"),
        (dict(rotate=-0.1), "rotate must be"),
        (dict(insert=-1.0), "insert must be"),
        (dict(permute=0.1), "no options ['permute']"),
        (dict(preset="nope"), "Unknown bart_denoising preset"),
        (dict(mask_id=50265), "mask_id=50265 is outside"),
        (dict(word_start_mask=[1] * 50265), "only by mask_length='word'"),
        (dict(mask_length="word", word_start_mask=[1, 0]), "one per vocabulary id"),
        (dict(permute_sentences=0.5, full_stop_ids=()), "needs full_stop_ids"),
        (dict(encoder_length=1), "encoder_length must be"),
        (dict(z_loss=-1.0), "z_loss must be"),
    ],
)
def test_bad_options_raise_clear_errors(options, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        bd.bart_denoising_objective(**options)


def test_noise_functions_reject_bad_arguments():
    tokens = jnp.asarray([BOS, 5, 6, EOS], jnp.int32)
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="treats every token as a word start"):
        bn.masked_spans(key, tokens, 4, 0.3, word_starts=jnp.ones(4, bool), **IDS)
    with pytest.raises(ValueError, match="must match tokens"):
        bn.masked_spans(
            key, tokens, 4, 0.3, mask_length="word", word_starts=jnp.ones(3, bool), **IDS
        )
    with pytest.raises(ValueError, match="needs full_stop_ids"):
        bn.permuted_sentences(key, tokens, 4, 1.0, ())
    with pytest.raises(ValueError, match="insert must be"):
        bn.inserted_noise(key, tokens, 4, -0.5, 0.0, MASK, 10)
    assert list(itertools.islice(bn.MASK_LENGTHS, 3)) == ["subword", "word", "span-poisson"]
