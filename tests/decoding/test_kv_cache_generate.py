"""Tests for lmjax.decoding.generate on a tiny lmjax GPT (random weights)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import decoding
from lmjax.decoding import left_padded_prompts
from lmjax.decoding import sampling
from lmjax.models import gpt

MAX_LEN = 32


@functools.lru_cache(maxsize=None)
def _model_and_params(scan_layers=True):
    # A larger init than GPT's 0.02 so that the blocks, not the tied input embedding, decide the
    # argmax: greedy continuations then vary instead of repeating the last token.
    config = gpt.GPTConfig(
        vocab_size=97,
        max_len=MAX_LEN,
        num_layers=2,
        embed_dim=32,
        num_heads=4,
        mlp_dim=64,
        init_std=0.3,
        position_init_std=0.3,
        residual_scaling=False,
        scan_layers=scan_layers,
    )
    model = gpt.GPT(config)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 4), jnp.int32)))(jax.random.key(0))
    return model, variables["params"]


@functools.lru_cache(maxsize=None)
def _full_forward(scan_layers=True):
    model, params = _model_and_params(scan_layers)

    @jax.jit
    def logits_fn(tokens):  # [1, MAX_LEN] right-padded; causal, so the pads do not matter
        return model.apply({"params": params}, tokens)["logits"][0]

    return logits_fn


def _naive_greedy(prompt, num_new, scan_layers=True):
    """Recomputes the full forward each step; returns (new tokens, summed log-probs)."""
    logits_fn = _full_forward(scan_layers)
    tokens, total = list(prompt), 0.0
    for _ in range(num_new):
        padded = np.zeros((1, MAX_LEN), np.int32)
        padded[0, : len(tokens)] = tokens
        logits = np.asarray(logits_fn(jnp.asarray(padded))[len(tokens) - 1])
        token = int(np.argmax(logits))
        total += float(jax.nn.log_softmax(logits)[token])
        tokens.append(token)
    return tokens[len(prompt):], total


PROMPTS = ([5, 6, 7], [1, 2, 3, 4, 5, 6], [40, 41, 42, 43, 44])


@pytest.mark.parametrize("scan_layers", [True, False])
def test_greedy_matches_naive_full_forward_loop(scan_layers):
    # The reference runs each prompt alone, unpadded, so this also checks that a left-padded
    # batch continues every prompt exactly as it would be continued on its own.
    model, params = _model_and_params(scan_layers)
    tokens, mask = left_padded_prompts(PROMPTS, 0)
    num_new = 8
    out, scores = decoding.generate_with_scores(
        model, params, tokens, mask, max_new_tokens=num_new, greedy=True
    )
    assert out.shape == (3, tokens.shape[1] + num_new) and out.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(out)[:, : tokens.shape[1]], tokens)
    for row, prompt in enumerate(PROMPTS):
        expected, expected_score = _naive_greedy(prompt, num_new, scan_layers)
        assert np.asarray(out)[row, tokens.shape[1]:].tolist() == expected
        np.testing.assert_allclose(float(scores[row]), expected_score, rtol=1e-4, atol=1e-4)
    # the continuations are not degenerate (the test would be weak if they only repeated a token)
    assert len(set(np.asarray(out)[:, tokens.shape[1]:].ravel().tolist())) > 4


def test_eos_stops_each_row_and_pads_the_rest():
    model, params = _model_and_params()
    tokens, mask = left_padded_prompts(PROMPTS, 0)
    num_new, width = 8, tokens.shape[1]
    free = np.asarray(decoding.generate(model, params, tokens, mask, None, num_new, greedy=True))
    new = free[:, width:]
    eos = int(new[0, 2])
    pad_id = 96
    stopped = np.asarray(
        decoding.generate(
            model, params, tokens, mask, None, num_new, greedy=True, eos_id=eos, pad_id=pad_id
        )
    )
    assert stopped.shape == free.shape
    for row in range(len(PROMPTS)):
        hits = np.nonzero(new[row] == eos)[0]
        cut = hits[0] + 1 if hits.size else num_new
        assert stopped[row, width: width + cut].tolist() == new[row, :cut].tolist()
        assert (stopped[row, width + cut:] == pad_id).all()
    assert (stopped[0, width + 3:] == pad_id).all()  # row 0 stops at its third new token


def test_every_row_done_gives_eos_then_padding():
    model, params = _model_and_params()
    tokens, mask = left_padded_prompts([PROMPTS[1]] * 3, 0)  # the other tests' shape: no recompile
    free = np.asarray(decoding.generate(model, params, tokens, mask, None, 8, greedy=True))
    first = int(free[0, 6])
    state = jax.jit(
        decoding.decoded_state, static_argnames=("model", "max_new_tokens", "options")
    )(
        model, params, jnp.asarray(tokens), jnp.asarray(mask), None, 1.0, jnp.int32(first),
        jnp.int32(-1), max_new_tokens=8, options=sampling.SamplingOptions(greedy=True),
    )
    assert int(state.step) == 1  # the while_loop stopped once every row had emitted EOS
    assert np.asarray(state.sequences)[:, 6:].tolist() == [[first] + [-1] * 7] * 3


def test_sampling_is_reproducible_and_key_dependent():
    model, params = _model_and_params()
    tokens, mask = left_padded_prompts(PROMPTS, 0)
    sample = functools.partial(
        decoding.generate, model, params, tokens, mask, max_new_tokens=8, temperature=1.5
    )
    a = np.asarray(sample(key=jax.random.key(3)))
    assert a.shape == (3, 6 + 8)
    b = np.asarray(sample(key=jax.random.key(3)))
    c = np.asarray(sample(key=jax.random.key(4)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # with top_k=1 every draw is the argmax: sampling reduces to greedy decoding
    top1 = decoding.generate(
        model, params, tokens, mask, jax.random.key(5), 8, temperature=2.0, top_k=1
    )
    greedy = decoding.generate(model, params, tokens, mask, None, 8, greedy=True)
    np.testing.assert_array_equal(top1, greedy)


def test_generate_compiles_once_per_shape(monkeypatch):
    model, params = _model_and_params()
    traces = []
    original = sampling.next_tokens

    def counting_next_tokens(*args, **kwargs):
        traces.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(sampling, "next_tokens", counting_next_tokens)
    rng = np.random.default_rng(0)
    shape = (3, 4)  # unique to this test, so the first call must trace

    def run(seed, temperature, max_new_tokens=5, top_p=0.9):
        prompts = rng.integers(0, 97, shape).astype(np.int32)
        return decoding.generate(
            model, params, prompts, None, jax.random.key(seed), max_new_tokens,
            temperature=temperature, top_p=top_p,
        )

    run(0, 1.0)
    after_first = len(traces)
    assert after_first > 0
    run(1, 0.7)
    run(2, 1.3)
    assert len(traces) == after_first  # new key, prompts and temperature: no retrace
    run(3, 1.0, max_new_tokens=6)
    assert len(traces) > after_first  # a new static shape does retrace


def test_zero_new_tokens_returns_prompts():
    model, params = _model_and_params()
    prompts = np.asarray([PROMPTS[1]], np.int32)
    np.testing.assert_array_equal(decoding.generate(model, params, prompts, None, None, 0), prompts)


def test_bad_inputs_raise_clear_errors():
    model, params = _model_and_params()
    tokens, mask = left_padded_prompts(PROMPTS, 0)
    with pytest.raises(ValueError, match="LEFT-padded"):
        decoding.generate(model, params, tokens, mask[:, ::-1], None, 4, greedy=True)
    with pytest.raises(ValueError, match="max_len"):
        decoding.generate(model, params, tokens, mask, None, MAX_LEN, greedy=True)
    with pytest.raises(ValueError, match="PRNG key"):
        decoding.generate(model, params, tokens, mask, None, 4)
    with pytest.raises(ValueError, match="top_p"):
        decoding.generate(model, params, tokens, mask, jax.random.key(0), 4, top_p=0.0)


def test_prompt_positions_count_only_real_tokens():
    mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(
        decoding.prompt_positions(mask), [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    )
