"""T5's prefix-LM objective (lmjax.objectives.prefix_lm): exact split, EOS, padding, lengths,
a uniform split point (chi-square at p > 1e-6) and static shapes under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from lmjax.objectives import prefix_lm as plm
from lmjax.objectives import seq2seq_loss as s2s

EOS, PAD, START = 1, 0, 0
INPUTS_LENGTH = 24
RAW, TARGETS = plm.prefix_lm_lengths(INPUTS_LENGTH)
ROWS = 4000


@pytest.fixture(scope="module")
def split_rows():
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, 500, size=(ROWS, RAW)).astype(np.int32)
    lengths = np.where(np.arange(ROWS) < ROWS // 2, RAW, rng.integers(0, RAW + 1, ROWS))
    lengths[-3:] = (0, 1, 2)
    segment_ids = (np.arange(RAW)[None] < lengths[:, None]).astype(np.int32)
    tokens = np.where(segment_ids > 0, tokens, PAD)
    objective = plm.prefix_lm_objective(inputs_length=INPUTS_LENGTH)
    out = jax.jit(objective.corrupt)(
        jax.random.key(5), {"inputs": jnp.asarray(tokens), "segment_ids": jnp.asarray(segment_ids)}
    )
    return tokens, lengths, {k: np.asarray(v) for k, v in out.items()}


def test_prefix_lm_lengths():
    assert plm.prefix_lm_lengths(512) == (511, 512)
    with pytest.raises(ValueError, match="inputs_length"):
        plm.prefix_lm_lengths(2)


def test_prefix_and_rest_rebuild_the_row_each_with_eos(split_rows):
    tokens, lengths, out = split_rows
    assert out["encoder_inputs"].shape == (ROWS, INPUTS_LENGTH)
    assert out["decoder_targets"].shape == out["decoder_weights"].shape == (ROWS, TARGETS)
    num_inputs = out["encoder_segment_ids"].sum(1)
    num_targets = out["decoder_segment_ids"].sum(1)
    for row in range(ROWS):
        n = lengths[row]
        inputs, targets = out["encoder_inputs"][row], out["decoder_targets"][row]
        if n == 0:
            assert num_inputs[row] == num_targets[row] == 0
            assert (inputs == PAD).all() and (targets == PAD).all()
            continue
        split = num_inputs[row] - 1
        assert (1 <= split <= n - 1) if n >= 2 else split == 0
        assert num_targets[row] == n - split + 1
        assert inputs[split] == EOS and targets[n - split] == EOS
        rebuilt = list(inputs[:split]) + list(targets[: n - split])
        assert rebuilt == list(tokens[row, :n]), row
        assert (inputs[split + 1 :] == PAD).all() and (targets[n - split + 1 :] == PAD).all()
    np.testing.assert_array_equal(
        out["encoder_segment_ids"], np.arange(INPUTS_LENGTH)[None] < num_inputs[:, None]
    )
    np.testing.assert_array_equal(out["decoder_weights"], out["decoder_segment_ids"] > 0)
    np.testing.assert_array_equal(out["decoder_inputs"][:, 0], START)
    np.testing.assert_array_equal(out["decoder_inputs"][:, 1:], out["decoder_targets"][:, :-1])


def test_split_point_is_uniform_over_one_to_n_minus_one(split_rows):
    _, lengths, out = split_rows
    full = lengths == RAW
    splits = out["encoder_segment_ids"].sum(1)[full] - 1
    counts = np.bincount(splits, minlength=RAW)
    assert counts[0] == 0 and counts[RAW:].sum() == 0
    assert scipy.stats.chisquare(counts[1:RAW]).pvalue > 1e-6


def test_one_trace_traced_lengths_and_reproducible():
    objective = plm.prefix_lm_objective(inputs_length=16)
    traces = []

    def corrupt(key, batch):
        traces.append(1)
        return objective.corrupt(key, batch)

    jitted = jax.jit(corrupt)
    rows = jnp.tile(jnp.arange(2, 17, dtype=jnp.int32), (6, 1))
    for length in (15, 9, 3):
        segment_ids = (jnp.arange(15)[None] < length).astype(jnp.int32).repeat(6, 0)
        out = jitted(jax.random.key(length), {"inputs": rows, "segment_ids": segment_ids})
        assert (np.asarray(out["encoder_segment_ids"]).sum(1)
                + np.asarray(out["decoder_segment_ids"]).sum(1) == length + 2).all()
    assert len(traces) == 1
    first, again = (jitted(jax.random.key(0), {"inputs": rows})["encoder_inputs"] for _ in "ab")
    np.testing.assert_array_equal(first, again)
    assert len({tuple(r) for r in np.asarray(first)}) > 1  # one draw per row


def test_objective_options_and_errors():
    objective = plm.prefix_lm_objective()
    assert objective.name == "prefix_lm" and objective.model_inputs == s2s.SEQ2SEQ_MODEL_INPUTS
    with pytest.raises(ValueError, match="data.seq_len=511"):
        objective.corrupt(jax.random.key(0), {"inputs": jnp.zeros((2, 512), jnp.int32)})
    with pytest.raises(ValueError, match="no options"):
        plm.prefix_lm_objective(vocab_size=100)
    with pytest.raises(ValueError, match="targets_length"):
        plm.prefix_lm_objective(inputs_length=32, targets_length=16)
    logits = jax.nn.one_hot(jnp.array([[3, 1, 0]]), 5) * 10.0
    batch = {"decoder_targets": jnp.array([[3, 1, 0]]),
             "decoder_weights": jnp.array([[1.0, 1.0, 0.0]])}
    _, metrics = objective.loss({"logits": logits}, batch)
    assert float(metrics["accuracy"]) == 1.0 and float(metrics["num_tokens"]) == 2.0
    assert float(metrics["z_loss"]) > 0  # t5x's 1e-4 z-loss is on by default
