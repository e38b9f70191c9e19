"""Properties of the MLM / ALBERT / ELECTRA corruption functions and the MLM losses.

Rates are checked against binomial expectations with a tolerance of 5 standard deviations
(``_assert_rate``), so a correct implementation fails with probability below 1e-6 per check and
the draws are seeded anyway.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import objectives
from lmjax.objectives import masking, mlm, replaced_token_detection as rtd

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIALS = (PAD, CLS, SEP, MASK)
VOCAB = 50
KW = dict(mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIALS)

# One jitted function per corruption (keyword options static), shared by the tests so that each
# (options, shape) combination compiles once.
_OPTIONS = (
    "mask_id", "vocab_size", "special_ids", "rate", "max_predictions", "selection",
    "whole_word", "max_ngram", "mask_prob", "random_prob", "random_excludes_special",
)
corrupt = jax.jit(mlm.mlm_corruption, static_argnames=_OPTIONS)
albert = jax.jit(mlm.albert_ngram_corruption, static_argnames=_OPTIONS)
electra = jax.jit(
    mlm.electra_masking,
    static_argnames=("mask_id", "special_ids", "rate", "max_predictions", "with_replacement"),
)


def _batch(seed, rows=256, length=64, *, min_len=6, word_start_rate=0.6):
    """[CLS] A [SEP] B [SEP] [PAD]...: random lengths, random word boundaries."""
    rng = np.random.default_rng(seed)
    inputs = rng.integers(len(SPECIALS), VOCAB, size=(rows, length))
    attention = np.zeros((rows, length), np.int32)
    for b in range(rows):
        n = rng.integers(min_len, length + 1)
        mid = rng.integers(2, n - 2)
        inputs[b, 0], inputs[b, mid], inputs[b, n - 1] = CLS, SEP, SEP
        inputs[b, n:] = PAD
        attention[b, :n] = 1
    word_starts = rng.random((rows, length)) < word_start_rate
    return {
        "inputs": jnp.asarray(inputs, jnp.int32),
        "attention_mask": jnp.asarray(attention),
        "token_type_ids": jnp.zeros((rows, length), jnp.int32),
        "word_starts": jnp.asarray(word_starts),
        "nsp_labels": jnp.asarray(rng.integers(0, 2, size=rows), jnp.int32),
    }


def _candidates(batch):
    inputs = np.asarray(batch["inputs"])
    return (np.asarray(batch["attention_mask"]) == 1) & ~np.isin(inputs, SPECIALS)


def _assert_rate(successes, trials, p, sigmas=5.0):
    sd = np.sqrt(trials * p * (1 - p))
    assert abs(successes - trials * p) <= sigmas * sd + 1e-9, (successes, trials, p)


def _expected_budget(batch, rate=0.15, cap=None):
    n = np.asarray(batch["attention_mask"]).sum(-1)
    count = np.maximum(1, np.array([round(float(x) * rate) for x in n]))
    return count if cap is None else np.minimum(count, cap)


def _replacement_split(out, mask_prob, random_prob, allowed):
    """Checks the [MASK] / random / kept split among the selected positions."""
    sel = np.asarray(out["mlm_weights"]) > 0
    new = np.asarray(out["inputs"])[sel]
    old = np.asarray(out["mlm_targets"])[sel]
    trials = sel.sum()
    # Originals are never [MASK]; a random draw equals the original with probability 1/allowed.
    _assert_rate((new == MASK).sum(), trials, mask_prob)
    _assert_rate((new == old).sum(), trials, 1 - mask_prob - random_prob * (1 - 1 / allowed))
    _assert_rate(((new != MASK) & (new != old)).sum(), trials, random_prob * (1 - 1 / allowed))


def test_fixed_count_is_bert_budget_and_never_special_or_padding():
    batch = _batch(0)
    for cap in (None, 5):
        out = corrupt(jax.random.key(1), batch, max_predictions=cap, **KW)
        sel = np.asarray(out["mlm_weights"]) > 0
        assert not (sel & ~_candidates(batch)).any()
        np.testing.assert_array_equal(sel.sum(-1), _expected_budget(batch, cap=cap))
        np.testing.assert_array_equal(out["mlm_targets"], batch["inputs"])
        unselected = ~sel
        np.testing.assert_array_equal(
            np.asarray(out["inputs"])[unselected], np.asarray(batch["inputs"])[unselected]
        )
        assert out["mlm_weights"].dtype == jnp.float32


def test_fixed_count_positions_are_uniform_over_candidates():
    # Every candidate of a row with c candidates and budget k is chosen with probability k / c.
    length = 20
    inputs = jnp.asarray([[CLS] + [10] * (length - 2) + [SEP]] * 2000, jnp.int32)
    out = mlm.mlm_corruption(jax.random.key(3), {"inputs": inputs}, **KW)
    sel = np.asarray(out["mlm_weights"]) > 0
    k = round(length * 0.15)  # 3 of the 18 candidates
    for position in range(1, length - 1):
        _assert_rate(sel[:, position].sum(), sel.shape[0], k / (length - 2))


def test_80_10_10_split_with_and_without_special_exclusion():
    batch = _batch(1, rows=512)
    out = corrupt(jax.random.key(2), batch, **KW)
    _replacement_split(out, 0.8, 0.1, VOCAB)
    out = corrupt(jax.random.key(2), batch, random_excludes_special=True, **KW)
    _replacement_split(out, 0.8, 0.1, VOCAB - len(SPECIALS))
    new = np.asarray(out["inputs"])
    changed = (np.asarray(out["mlm_weights"]) > 0) & (new != MASK)
    assert not np.isin(new[changed], SPECIALS).any()


def test_random_tokens_are_uniform_over_the_allowed_ids():
    exclude = (0, 3, 9)
    draws = np.asarray(masking.random_tokens(jax.random.key(0), (20000,), 10, exclude))
    allowed = [i for i in range(10) if i not in exclude]
    assert set(np.unique(draws)) == set(allowed)
    for token in allowed:
        _assert_rate((draws == token).sum(), draws.size, 1 / len(allowed))


def test_bernoulli_selection_rate_is_15_percent():
    batch = _batch(2, rows=512)
    out = corrupt(jax.random.key(4), batch, selection="bernoulli", **KW)
    sel = np.asarray(out["mlm_weights"]) > 0
    cand = _candidates(batch)
    assert not (sel & ~cand).any()
    _assert_rate(sel.sum(), cand.sum(), 0.15)
    _replacement_split(out, 0.8, 0.1, VOCAB)


def _words(batch):
    """Per row, the candidate positions of each word (pieces join across specials, as BERT)."""
    ids = np.asarray(masking.word_ids(jnp.asarray(_candidates(batch)), batch["word_starts"]))
    length = ids.shape[-1]
    return [
        [np.flatnonzero(row == w) for w in range(length) if (row == w).any()] for row in ids
    ]


def _check_whole_words_and_greedy_budget(batch, out, budget):
    sel = np.asarray(out["mlm_weights"]) > 0
    assert not (sel & ~_candidates(batch)).any()
    for b, words in enumerate(_words(batch)):
        count = sel[b].sum()
        assert count <= budget[b]
        for pieces in words:
            chosen = sel[b, pieces]
            assert chosen.all() or not chosen.any(), (b, pieces, chosen)
            # Greedy: a word left out did not fit in what the budget had left when visited.
            if not chosen.any():
                assert len(pieces) > budget[b] - count


def test_whole_word_masking_masks_words_as_units_within_budget():
    batch = _batch(3, word_start_rate=0.4)
    out = corrupt(jax.random.key(5), batch, whole_word=True, **KW)
    _check_whole_words_and_greedy_budget(batch, out, _expected_budget(batch))
    # Bernoulli variant: units too, and the word-level rate is 15%.
    out = corrupt(jax.random.key(6), batch, whole_word=True, selection="bernoulli", **KW)
    sel = np.asarray(out["mlm_weights"]) > 0
    chosen_words = total_words = 0
    for b, words in enumerate(_words(batch)):
        for pieces in words:
            assert sel[b, pieces].all() or not sel[b, pieces].any()
            chosen_words += sel[b, pieces].all()
            total_words += 1
    _assert_rate(chosen_words, total_words, 0.15)


def test_word_ids_input_is_equivalent_to_word_starts():
    batch = _batch(4)
    starts = np.asarray(batch["word_starts"])
    ids_batch = {k: v for k, v in batch.items() if k != "word_starts"}
    ids_batch["word_ids"] = jnp.asarray(np.cumsum(starts | (np.arange(64) == 0), -1))
    b = corrupt(jax.random.key(0), ids_batch, whole_word=True, **KW)
    forced = starts.copy()
    forced[:, 0] = True
    forced_batch = dict(batch, word_starts=jnp.asarray(forced))
    c = corrupt(jax.random.key(0), forced_batch, whole_word=True, **KW)
    np.testing.assert_array_equal(b["mlm_weights"], c["mlm_weights"])
    with pytest.raises(ValueError, match="word_starts"):
        mlm.mlm_corruption(jax.random.key(0), {"inputs": batch["inputs"]}, whole_word=True)


def test_ngram_lengths_follow_6_3_2_elevenths():
    draws = np.asarray(masking.ngram_lengths(jax.random.key(7), (30000,), 3))
    for n, p in zip((1, 2, 3), (6 / 11, 3 / 11, 2 / 11)):
        _assert_rate((draws == n).sum(), draws.size, p)
    assert set(np.unique(draws)) == {1, 2, 3}


def test_albert_ngram_spans_are_disjoint_runs_of_at_most_three_whole_words():
    batch = _batch(5, word_start_rate=0.5)
    cand = jnp.asarray(_candidates(batch))
    budget = jnp.asarray(_expected_budget(batch, cap=20))
    # albert_ngram_corruption selects with the first half of its key.
    select_key = jax.random.split(jax.random.key(8))[0]
    selected, span_length = jax.jit(masking.select_word_spans, static_argnums=4)(
        select_key, cand, batch["word_starts"], budget, 3
    )
    ids = np.asarray(masking.word_ids(cand, batch["word_starts"]))
    span_length = np.asarray(span_length)
    assert set(np.unique(span_length)) <= {0, 1, 2, 3} and (span_length > 1).any()
    for b in range(ids.shape[0]):
        covered = np.zeros(ids.shape[1], int)
        for start in np.flatnonzero(span_length[b]):
            covered[start : start + span_length[b, start]] += 1
        assert covered.max(initial=0) <= 1  # disjoint
        word_selected = covered[np.minimum(ids[b], ids.shape[1] - 1)] > 0
        np.testing.assert_array_equal(np.asarray(selected[b]), word_selected & np.asarray(cand[b]))
    out = albert(jax.random.key(8), batch, **KW)
    np.testing.assert_array_equal(np.asarray(out["mlm_weights"]) > 0, np.asarray(selected))
    _check_whole_words_and_greedy_budget(batch, out, np.asarray(budget))


def test_dynamic_masks_follow_the_step_key_and_static_masking_makes_fixed_copies():
    batch = _batch(6, rows=16)

    def mask_at(seed, step):
        key = jax.random.fold_in(jax.random.key(seed), step)
        return np.asarray(corrupt(key, batch, **KW)["inputs"])

    np.testing.assert_array_equal(mask_at(0, 5), mask_at(0, 5))
    assert (mask_at(0, 5) != mask_at(0, 6)).any()
    assert (mask_at(0, 5) != mask_at(1, 5)).any()

    copies = mlm.static_masking(jax.random.key(0), batch, 3, **KW)
    assert copies["inputs"].shape == (48, 64) and copies["nsp_labels"].shape == (48,)
    again = mlm.static_masking(jax.random.key(0), batch, 3, **KW)
    np.testing.assert_array_equal(copies["inputs"], again["inputs"])
    first, second = np.split(np.asarray(copies["mlm_weights"]), 3)[:2]
    assert (first != second).any()
    third_targets = np.split(np.asarray(copies["mlm_targets"]), 3)[2]
    np.testing.assert_array_equal(third_targets, batch["inputs"])


def test_corruptions_jit_with_static_shapes_and_trace_once():
    variants = [
        (corrupt, {}),
        (corrupt, dict(selection="bernoulli", whole_word=True)),
        (albert, {}),
    ]
    traces = []

    def counted(fn, options):
        def traced(key, batch):
            traces.append(fn)
            return fn(key, batch, **options)

        return jax.jit(traced)

    for fn, options in variants:
        fn = counted(fn, dict(KW, **options))
        for seed in (7, 8):  # new data and a new key, same shapes: no retrace
            batch = _batch(seed)
            out = fn(jax.random.key(seed), batch)
            for name in ("inputs", "mlm_targets", "mlm_weights"):
                assert out[name].shape == batch["inputs"].shape
    electra_fn = counted(electra, dict(mask_id=MASK, special_ids=SPECIALS))
    for seed in (7, 8):
        assert electra_fn(jax.random.key(seed), _batch(seed))["mlm_weights"].shape == (256, 64)
    assert len(traces) == len(variants) + 1


def test_electra_masking_85_15_no_random_tokens_and_draws_with_replacement():
    batch = _batch(8)
    length = batch["inputs"].shape[1]
    fn = functools.partial(electra, mask_id=MASK, special_ids=SPECIALS)
    out = fn(jax.random.key(10), batch)
    sel = np.asarray(out["mlm_weights"]) > 0
    assert not (sel & ~_candidates(batch)).any()
    new = np.asarray(out["inputs"])[sel]
    old = np.asarray(out["mlm_targets"])[sel]
    assert ((new == MASK) | (new == old)).all()  # no random replacement
    _assert_rate((new == MASK).sum(), sel.sum(), 0.85)
    num_draws = int((0.15 + 0.005) * length)
    budget = _expected_budget(batch, cap=num_draws)
    distinct = sel.sum(-1)
    assert (distinct <= budget).all() and (distinct >= 1).all()
    assert (distinct < budget).any()  # duplicates happen with replacement
    # Uniform draws with replacement: with c candidates and k draws each candidate is selected
    # with probability 1 - (1 - 1/c)^k (c = 18, k = int(0.155 * 20) = 3).
    row = jnp.asarray([[CLS] + [10] * 18 + [SEP]] * 4000, jnp.int32)
    sel = np.asarray(fn(jax.random.key(11), {"inputs": row})["mlm_weights"]) > 0
    for position in range(1, 19):
        _assert_rate(sel[:, position].sum(), sel.shape[0], 1 - (17 / 18) ** 3)
    out = fn(jax.random.key(10), batch, with_replacement=False)
    np.testing.assert_array_equal(
        np.asarray(out["mlm_weights"]).sum(-1), np.minimum(budget, _candidates(batch).sum(-1))
    )


def test_gumbel_samples_follow_the_softmax():
    logits = jnp.log(jnp.asarray([0.5, 0.3, 0.15, 0.05]))
    samples = np.asarray(rtd.gumbel_sample(jax.random.key(0), jnp.tile(logits, (20000, 1))))
    for token, p in enumerate((0.5, 0.3, 0.15, 0.05)):
        _assert_rate((samples == token).sum(), samples.size, p)
    hot = np.asarray(
        rtd.gumbel_sample(jax.random.key(1), jnp.tile(logits, (2000, 1)), temperature=0.05)
    )
    assert (hot == 0).mean() > 0.99  # low temperature concentrates on the argmax


def test_replaced_token_detection_labels_a_correct_sample_as_original():
    inputs = jnp.asarray([[CLS, 10, 11, 12, 13, SEP]], jnp.int32)
    masked = {
        "inputs": jnp.asarray([[CLS, MASK, MASK, 12, MASK, SEP]], jnp.int32),
        "mlm_targets": inputs,
        "mlm_weights": jnp.asarray([[0, 1, 1, 1, 0, 0]], jnp.float32),
    }
    # The generator is certain of: the original at 1, token 20 at 2 and 3, token 21 elsewhere.
    favourite = jnp.asarray([[21, 10, 20, 20, 21, 21]])
    logits = 100.0 * jax.nn.one_hot(favourite, VOCAB)
    out = rtd.replaced_token_detection(jax.random.key(0), logits, masked)
    np.testing.assert_array_equal(out["sampled_tokens"], favourite)
    # Position 4 is [MASK] but not predicted: untouched. Position 3 was kept unmasked but is
    # predicted, so it receives the sample too.
    np.testing.assert_array_equal(out["disc_inputs"], [[CLS, 10, 20, 20, MASK, SEP]])
    np.testing.assert_array_equal(out["disc_labels"], [[0, 0, 1, 1, 0, 0]])
    banned = rtd.replaced_token_detection(jax.random.key(0), logits, masked, disallow_correct=True)
    assert int(banned["sampled_tokens"][0, 1]) != 10 and int(banned["disc_labels"][0, 1]) == 1


def test_discriminator_loss_by_hand():
    logits = jnp.asarray([[0.0, np.log(3.0), 2.0]], jnp.float32)
    labels = jnp.asarray([[1, 0, 1]])
    loss, metrics = rtd.discriminator_loss(logits, labels, jnp.asarray([[1, 1, 0]]))
    # sigmoid(0) = 1/2 -> -ln(1/2); sigmoid(ln 3) = 3/4, label 0 -> -ln(1/4). Third is padding.
    np.testing.assert_allclose(loss, (np.log(2) + np.log(4)) / 2, rtol=1e-6)
    np.testing.assert_allclose(metrics["accuracy"], 0.0)  # logit 0 is not > 0; ln 3 > 0 vs 0
    assert float(metrics["num_tokens"]) == 2


def test_mlm_and_nsp_losses_by_hand():
    ln2 = np.log(2.0)
    # V = 3. Position logits [ln 2, 0, 0] -> probabilities 1/2, 1/4, 1/4; zeros -> 1/3 each.
    logits = jnp.asarray(
        [
            [[ln2, 0.0, 0.0], [0.0, 0.0, 0.0], [9.0, 0.0, 0.0]],
            [[0.0, ln2, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        ],
        jnp.float32,
    )
    batch = {
        "mlm_targets": jnp.asarray([[0, 2, 1], [2, 0, 0]]),
        "mlm_weights": jnp.asarray([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),
        "nsp_labels": jnp.asarray([0, 1]),
    }
    loss, metrics = mlm.mlm_loss({"logits": logits}, batch)
    expected_mlm = (np.log(2) + np.log(3) + np.log(4)) / 3
    np.testing.assert_allclose(loss, expected_mlm, rtol=1e-6)
    np.testing.assert_allclose(metrics["accuracy"], 1 / 3, rtol=1e-6)
    assert float(metrics["num_tokens"]) == 3
    nsp_logits = jnp.asarray([[ln2, 0.0], [0.0, 0.0]], jnp.float32)  # p = 2/3, 1/3 ; 1/2, 1/2
    total, metrics = jax.jit(mlm.mlm_nsp_loss)({"logits": logits, "nsp_logits": nsp_logits}, batch)
    expected_nsp = (np.log(1.5) + np.log(2)) / 2
    np.testing.assert_allclose(metrics["nsp_loss"], expected_nsp, rtol=1e-6)
    np.testing.assert_allclose(metrics["mlm_loss"], expected_mlm, rtol=1e-6)
    np.testing.assert_allclose(total, expected_mlm + expected_nsp, rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"], total)
    # argmax [ln 2, 0] -> 0 (label 0, hit); [0, 0] -> 0 (label 1, miss).
    np.testing.assert_allclose(metrics["nsp_accuracy"], 0.5)
    assert all(v.dtype == jnp.float32 for v in metrics.values())
    zero, _ = mlm.mlm_loss({"logits": logits}, dict(batch, mlm_weights=jnp.zeros((2, 3))))
    assert float(zero) == 0.0
    half, _ = mlm.mlm_loss({"logits": logits.astype(jnp.bfloat16)}, batch)
    assert half.dtype == jnp.float32
    np.testing.assert_allclose(half, expected_mlm, rtol=1e-2)


def test_mlm_objectives_are_registered():
    for name, loss in (("mlm", mlm.mlm_loss), ("mlm_nsp", mlm.mlm_nsp_loss)):
        objective = objectives.get(name)
        assert objective.model_inputs == ("inputs", "token_type_ids", "attention_mask")
        assert objective.loss is loss
    batch = {"inputs": jnp.asarray([[101, 2000, 2001, 2002, 2003, 2004, 2005, 102]], jnp.int32)}
    out = jax.jit(objectives.get("mlm").corrupt)(jax.random.key(0), batch)
    sel = np.asarray(out["mlm_weights"]) > 0
    assert sel.sum() == 1 and not sel[0, 0] and not sel[0, -1]  # round(8 * 0.15) = 1


def test_bad_arguments_are_errors():
    batch = {"inputs": jnp.ones((2, 8), jnp.int32)}
    with pytest.raises(ValueError, match="selection"):
        mlm.mlm_corruption(jax.random.key(0), batch, selection="geometric")
    with pytest.raises(ValueError, match="N-gram"):
        mlm.mlm_corruption(
            jax.random.key(0), dict(batch, word_starts=batch["inputs"]), selection="bernoulli",
            max_ngram=3,
        )
    with pytest.raises(ValueError, match="dupe_factor"):
        mlm.static_masking(jax.random.key(0), batch, 0)
