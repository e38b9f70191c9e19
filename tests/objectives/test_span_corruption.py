"""T5 span corruption (lmjax.objectives.span_corruption) and the seq2seq loss.

Over 2,000 rows drawn in one jitted call: exact lengths, exact noise and span counts, spans
starting with non-noise, sentinels counting down, and inputs + targets rebuilding the original
row. The segmentation is checked to be uniform over every possible mask of a small case (a
chi-square test at p > 1e-6, so a correct implementation fails once in a million seeded runs).
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from lmjax.objectives import seq2seq_loss as s2s
from lmjax.objectives import span_corruption as sc

VOCAB = 1000
SENTINEL = VOCAB - 1
EOS, PAD, START = 1, 0, 0
INPUTS_LENGTH = 64
RAW, TARGETS = sc.span_corruption_lengths(INPUTS_LENGTH)
ROWS = 2000


def _reference_helper(inputs_length, density=0.15, mean=3.0):
    """t5/data/preprocessors.py::random_spans_helper, re-derived in float64 for the test."""

    def lengths(n):
        noise = int(round(n * density))
        spans = int(round(noise / mean))
        return n - noise + spans + 1, noise + spans + 1

    tokens = inputs_length - 1
    while lengths(tokens + 1)[0] <= inputs_length:
        tokens += 1
    return tokens, lengths(tokens)[1]


def test_lengths_match_t5():
    assert sc.span_corruption_lengths(512) == (568, 114) == _reference_helper(512)
    assert sc.span_corruption_lengths(1024) == (1137, 229) == _reference_helper(1024)
    assert sc.noise_counts(568, 0.15, 3.0) == (85, 28)
    assert sc.denoised_lengths(568, 0.15, 3.0) == (512, 114)
    for inputs_length in range(4, 400):
        raw, targets = sc.span_corruption_lengths(inputs_length)
        # The longest raw row whose corrupted inputs fit, and its targets length.
        assert sc.denoised_lengths(raw, 0.15, 3.0) == (
            sc.denoised_lengths(raw, 0.15, 3.0)[0], targets
        )
        assert sc.denoised_lengths(raw, 0.15, 3.0)[0] <= inputs_length
        assert sc.denoised_lengths(raw + 1, 0.15, 3.0)[0] > inputs_length
    # Where the float64 helper and the float32 mask disagree, the mask's count wins (see the
    # docstring): 190 * 0.15 is 28.5000011 in float32 -> 29 noise tokens, 10 spans.
    assert _reference_helper(172) == (190, 38)
    assert sc.span_corruption_lengths(172) == (190, 40)


def _uncorrupted(inputs, targets):
    """Rebuilds the original row from the corrupted inputs and targets (both end with EOS)."""
    inputs = list(inputs[: list(inputs).index(EOS)])
    targets = list(targets[: list(targets).index(EOS)])
    noise_of = {}
    current = None
    for token in targets:
        if token > VOCAB - 50:
            current = token
            noise_of[current] = []
        else:
            noise_of[current].append(token)
    rebuilt = []
    for token in inputs:
        rebuilt.extend(noise_of.pop(token) if token > VOCAB - 50 else [token])
    # Only a one-token row has a sentinel without a noise span (targets "<X0> EOS").
    assert all(not span for span in noise_of.values()), "every noise span is in the inputs"
    return rebuilt


@pytest.fixture(scope="module")
def corrupted():
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, VOCAB - 100, size=(ROWS, RAW)).astype(np.int32)
    lengths = np.where(np.arange(ROWS) < ROWS // 2, RAW, rng.integers(0, RAW + 1, ROWS))
    lengths[ROWS // 2 : ROWS // 2 + 3] = (0, 1, 2)
    segment_ids = (np.arange(RAW)[None, :] < lengths[:, None]).astype(np.int32)
    tokens = np.where(segment_ids > 0, tokens, PAD)
    batch = {"inputs": jnp.asarray(tokens), "segment_ids": jnp.asarray(segment_ids)}
    objective = sc.span_corruption_objective(inputs_length=INPUTS_LENGTH, vocab_size=VOCAB)
    out = jax.jit(objective.corrupt)(jax.random.key(1), batch)
    return tokens, lengths, {k: np.asarray(v) for k, v in out.items()}


def test_shapes_and_exact_lengths(corrupted):
    _, lengths, out = corrupted
    assert out["encoder_inputs"].shape == out["encoder_segment_ids"].shape == (ROWS, INPUTS_LENGTH)
    for key in ("decoder_inputs", "decoder_targets", "decoder_segment_ids", "decoder_weights"):
        assert out[key].shape == (ROWS, TARGETS), key
    assert out["decoder_weights"].dtype == np.float32
    num_inputs = out["encoder_segment_ids"].sum(1)
    num_targets = out["decoder_segment_ids"].sum(1)
    full = lengths == RAW
    assert full.sum() >= ROWS // 2
    assert (num_inputs[full] == INPUTS_LENGTH).all() and (num_targets[full] == TARGETS).all()
    expected = np.array([sc.denoised_lengths(n, 0.15, 3.0) for n in lengths])
    np.testing.assert_array_equal(num_inputs, expected[:, 0])
    np.testing.assert_array_equal(num_targets, expected[:, 1])
    # Segment ids are a prefix of ones; padding is pad; the last real token is EOS.
    for ids_key, seg_key in (("encoder_inputs", "encoder_segment_ids"),
                             ("decoder_targets", "decoder_segment_ids")):
        counts = out[seg_key].sum(1)
        width = out[seg_key].shape[1]
        np.testing.assert_array_equal(out[seg_key], np.arange(width)[None] < counts[:, None])
        assert (out[ids_key][out[seg_key] == 0] == PAD).all()
        real = counts > 0
        assert (out[ids_key][real, counts[real] - 1] == EOS).all()


def test_inputs_and_targets_rebuild_the_row_with_descending_unique_sentinels(corrupted):
    tokens, lengths, out = corrupted
    for row in range(ROWS):
        n = lengths[row]
        inputs, targets = out["encoder_inputs"][row], out["decoder_targets"][row]
        if n == 0:
            assert (inputs == PAD).all() and (targets == PAD).all()
            continue
        rebuilt = _uncorrupted(inputs, targets)
        assert rebuilt == list(tokens[row, :n]), row
        num_spans = sc.noise_counts(n, 0.15, 3.0)[1] if n >= 2 else 0
        in_sentinels = [t for t in inputs if t > VOCAB - 50]
        out_sentinels = [t for t in targets if t > VOCAB - 50]
        assert in_sentinels == [SENTINEL - i for i in range(num_spans)], row
        # Targets start with <X0> (the first non-noise span) and alternate sentinel / noise.
        assert targets[0] == SENTINEL
        assert out_sentinels == [SENTINEL - i for i in range(max(num_spans, 1))], row


def test_decoder_inputs_are_targets_shifted_right(corrupted):
    _, _, out = corrupted
    np.testing.assert_array_equal(out["decoder_inputs"][:, 0], START)
    np.testing.assert_array_equal(out["decoder_inputs"][:, 1:], out["decoder_targets"][:, :-1])
    np.testing.assert_array_equal(out["decoder_weights"], out["decoder_segment_ids"] > 0)


def test_short_rows_follow_the_reference_degenerate_cases(corrupted):
    tokens, lengths, out = corrupted
    one = int(np.flatnonzero(lengths == 1)[0])
    # A one-token piece is masked as a two-token piece cut to one: no noise.
    assert list(out["encoder_inputs"][one, :3]) == [tokens[one, 0], EOS, PAD]
    assert list(out["decoder_targets"][one, :3]) == [SENTINEL, EOS, PAD]
    empty = int(np.flatnonzero(lengths == 0)[0])
    assert out["encoder_segment_ids"][empty].sum() == out["decoder_weights"][empty].sum() == 0


def _mask_fn(max_length, density, mean):
    return jax.jit(jax.vmap(
        lambda key, n: sc.random_spans_noise_mask(key, n, max_length, density, mean)
    ))


def _spans(mask_row):
    """[(is_noise, length), ...] runs of one mask row."""
    return [(bool(k), len(list(g))) for k, g in itertools.groupby(mask_row)]


@pytest.mark.parametrize("density,mean", [(0.15, 3.0), (0.5, 2.0), (0.3, 1.0)])
def test_noise_count_span_count_and_order_are_exact(density, mean):
    max_length = 80
    lengths = np.random.default_rng(2).integers(0, max_length + 1, ROWS)
    keys = jax.random.split(jax.random.key(3), ROWS)
    masks = np.asarray(_mask_fn(max_length, density, mean)(keys, jnp.asarray(lengths)))
    for mask, n in zip(masks, lengths):
        assert not mask[n:].any()
        if n < 2:
            assert not mask.any()
            continue
        # round(n * d) in float32 (as tf.round in the reference), clipped to [1, n - 1].
        num_noise = min(max(int(np.round(np.float32(n) * np.float32(density))), 1), n - 1)
        num_spans = max(int(np.round(np.float32(num_noise) / np.float32(mean))), 1)
        assert (num_noise, num_spans) == sc.noise_counts(n, density, mean)
        assert mask[:n].sum() == num_noise
        runs = _spans(mask[:n])
        assert len(runs) == 2 * num_spans
        assert [noise for noise, _ in runs] == [False, True] * num_spans  # non-noise first


def test_segmentation_is_uniform_over_all_masks_with_a_traced_length():
    # 12 real tokens in a 20-slot row: 6 noise tokens in 3 spans and 6 non-noise tokens in 3
    # spans. Each side has C(5, 2) = 10 equally likely segmentations: 100 masks in all.
    n, max_length, draws = 12, 20, 20000
    assert sc.noise_counts(n, 0.5, 2.0) == (6, 3)
    keys = jax.random.split(jax.random.key(4), draws)
    masks = np.asarray(_mask_fn(max_length, 0.5, 2.0)(keys, jnp.full((draws,), n)))
    assert not masks[:, n:].any()
    patterns, counts = np.unique(masks[:, :n], axis=0, return_counts=True)
    assert len(patterns) == math.comb(5, 2) ** 2
    assert scipy.stats.chisquare(counts).pvalue > 1e-6
    # The first noise span's length has the exact law P(k) = C(6 - k - 1, 1) / C(5, 2).
    first = np.array([_spans(m)[1][1] for m in masks[:, :n]])
    observed = np.bincount(first, minlength=5)[1:5]
    expected = np.array([math.comb(6 - k - 1, 1) for k in range(1, 5)]) / math.comb(5, 2)
    assert scipy.stats.chisquare(observed, expected * draws).pvalue > 1e-6


def test_mask_is_jittable_with_a_traced_length():
    traces = []

    def mask_of(key, n):
        traces.append(1)
        return sc.random_spans_noise_mask(key, n, 64, 0.15, 3.0)

    masked = jax.jit(mask_of)
    for n in (30, 57, 64):
        mask = np.asarray(masked(jax.random.key(0), jnp.int32(n)))
        assert mask[:n].sum() == sc.noise_counts(n, 0.15, 3.0)[0] and not mask[n:].any()
    assert len(traces) == 1


def test_sentinel_replacement_by_hand():
    tokens = jnp.arange(10, 22)  # a b c D E f g H i j K L
    mask = jnp.array([0, 0, 0, 1, 1, 0, 0, 1, 0, 0, 1, 1], bool)
    ids = dict(sentinel_id=99, eos_id=EOS, pad_id=PAD, out_length=14)
    inputs, n_in = sc.spans_to_unique_sentinels(tokens, mask, jnp.int32(12), **ids)
    targets, n_out = sc.spans_to_unique_sentinels(tokens, ~mask, jnp.int32(12), **ids)
    assert list(np.asarray(inputs)) == [10, 11, 12, 99, 15, 16, 98, 18, 19, 97, EOS, 0, 0, 0]
    assert list(np.asarray(targets)) == [99, 13, 14, 98, 17, 97, 20, 21, EOS, 0, 0, 0, 0, 0]
    assert (int(n_in), int(n_out)) == (11, 9)


def test_one_trace_for_repeated_calls_and_fresh_draws_per_key_and_row():
    objective = sc.span_corruption_objective(inputs_length=32, vocab_size=VOCAB)
    raw = sc.span_corruption_lengths(32)[0]
    traces = []

    def corrupt(key, batch):
        traces.append(1)
        return objective.corrupt(key, batch)

    jitted = jax.jit(corrupt)
    rows = jnp.tile(jnp.arange(2, 2 + raw, dtype=jnp.int32), (8, 1))
    outs = [jitted(jax.random.key(k), {"inputs": rows + k}) for k in range(3)]
    assert len(traces) == 1
    first = np.asarray(outs[0]["encoder_inputs"])
    assert len({tuple(r) for r in first}) > 1  # identical rows, different masks
    again = np.asarray(jitted(jax.random.key(0), {"inputs": rows})["encoder_inputs"])
    np.testing.assert_array_equal(first, again)  # reproducible from the key


def test_wrong_row_length_and_bad_options_raise_clear_errors():
    objective = sc.span_corruption_objective(vocab_size=32100)
    with pytest.raises(ValueError, match="data.seq_len=568"):
        objective.corrupt(jax.random.key(0), {"inputs": jnp.zeros((2, 512), jnp.int32)})
    with pytest.raises(ValueError, match="vocab_size"):
        sc.span_corruption_objective()
    with pytest.raises(ValueError, match="no options"):
        sc.span_corruption_objective(vocab_size=100, mask_id=3)
    with pytest.raises(ValueError, match="targets_length"):
        sc.span_corruption_objective(vocab_size=100, targets_length=100)
    with pytest.raises(ValueError, match="num_sentinels"):
        sc.span_corruption_objective(vocab_size=32100, inputs_length=1024, num_sentinels=50)
    with pytest.raises(ValueError, match="noise_density"):
        sc.span_corruption_objective(vocab_size=100, noise_density=1.5)
    with pytest.raises(ValueError, match="z_loss"):
        sc.span_corruption_objective(vocab_size=100, z_loss=-1.0)
    assert sc.span_corruption_objective(
        vocab_size=32100, inputs_length=512, num_sentinels=100
    ).model_inputs == s2s.SEQ2SEQ_MODEL_INPUTS


def test_seq2seq_loss_by_hand_with_z_loss():
    logits = jnp.array([[[np.log(2.0), 0.0, 0.0], [0.0, 0.0, 0.0], [3.0, 1.0, 0.0]]])
    batch = {"decoder_targets": jnp.array([[0, 2, 1]]),
             "decoder_weights": jnp.array([[1.0, 1.0, 0.0]])}
    loss, metrics = s2s.seq2seq_loss({"logits": logits}, batch)
    cross_entropy = (np.log(2.0) + np.log(3.0)) / 2
    np.testing.assert_allclose(loss, cross_entropy, rtol=1e-6)
    np.testing.assert_allclose(metrics["accuracy"], 0.5, rtol=1e-6)
    assert float(metrics["num_tokens"]) == 2.0 and float(metrics["z_loss"]) == 0.0
    loss, metrics = s2s.seq2seq_loss({"logits": logits}, batch, z_loss=1e-4)
    z_term = 1e-4 * (np.log(4.0) ** 2 + np.log(3.0) ** 2) / 2
    np.testing.assert_allclose(metrics["z_loss"], z_term, rtol=1e-5)
    np.testing.assert_allclose(loss, cross_entropy + z_term, rtol=1e-6)
    np.testing.assert_allclose(metrics["cross_entropy"], cross_entropy, rtol=1e-6)
    assert all(v.dtype == jnp.float32 for v in metrics.values())
    with pytest.raises(ValueError, match="disagree"):
        s2s.seq2seq_loss({"logits": logits}, {"decoder_targets": jnp.zeros((1, 2), jnp.int32)})
