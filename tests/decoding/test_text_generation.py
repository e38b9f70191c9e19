"""Tests for lmjax.decoding.text: strings in, strings out, on a tiny random GPT."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import decoding
from lmjax.models import gpt

MAX_LEN = 16
_FIRST_CHAR = 3  # ids 0, 1, 2 are pad, BOS and EOS; printable ASCII follows


class CharTokenizer:
    """One id per printable ASCII character, after pad (0), BOS (1) and EOS (2)."""

    pad_id = 0
    vocab_size = _FIRST_CHAR + 95

    def __init__(self, bos_id=1, eos_id=2):
        self.bos_id, self.eos_id = bos_id, eos_id

    def encode(self, text):
        return [ord(c) - 32 + _FIRST_CHAR for c in text]

    def decode(self, ids):
        return "".join(chr(i - _FIRST_CHAR + 32) if i >= _FIRST_CHAR else f"<{i}>" for i in ids)


@functools.lru_cache(maxsize=None)
def _model_and_params():
    # A large init, so that greedy continuations vary instead of repeating one token.
    config = gpt.GPTConfig(
        vocab_size=CharTokenizer.vocab_size, max_len=MAX_LEN, num_layers=2, embed_dim=32,
        num_heads=4, mlp_dim=64, init_std=0.3, position_init_std=0.3, residual_scaling=False,
    )
    model = gpt.GPT(config)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 4), jnp.int32)))(jax.random.key(0))
    return model, variables["params"]


def _texts(prompts, tokenizer=None, **kwargs):
    model, params = _model_and_params()
    return decoding.generated_texts(model, params, tokenizer or CharTokenizer(), prompts, **kwargs)


def test_left_padded_prompts_put_every_prompt_last():
    tokens, mask = decoding.left_padded_prompts([[5, 6], [7, 8, 9], [4]], pad_id=0)
    assert tokens.tolist() == [[0, 5, 6], [7, 8, 9], [0, 0, 4]]
    assert mask.tolist() == [[0, 1, 1], [1, 1, 1], [0, 0, 1]]
    assert tokens.dtype == mask.dtype == np.int32
    with pytest.raises(ValueError, match=r"prompts \[1\] have no tokens"):
        decoding.left_padded_prompts([[5], []], pad_id=0)


def test_batched_prompts_continue_as_each_prompt_alone():
    prompts = ["def f(", "import os", "x"]
    together = _texts(prompts, max_new_tokens=6, greedy=True)
    model, params = _model_and_params()
    for prompt, text in zip(prompts, together):
        ids = CharTokenizer().encode(prompt)
        alone = np.asarray(
            decoding.generate(model, params, np.asarray([ids], np.int32), None, None, 6,
                              greedy=True)
        )[0, len(ids):].tolist()
        assert text == CharTokenizer().decode(ids + alone)
        assert text.startswith(prompt) and len(text) == len(prompt) + 6  # no EOS was drawn
    assert len({text[-6:] for text in together}) > 1  # not a degenerate model


def test_text_is_cut_before_the_first_eos():
    prompts = ["def f(", "import os", "x"]
    free = _texts(prompts, max_new_tokens=6, greedy=True)
    eos_char = free[0][len(prompts[0]) + 2]  # make row 0's third new token the EOS
    cut = _texts(prompts, CharTokenizer(eos_id=CharTokenizer().encode(eos_char)[0]),
                 max_new_tokens=6, greedy=True)
    for prompt, before, after in zip(prompts, free, cut):
        new = before[len(prompt):]
        expected = before if eos_char not in new else before[: len(prompt) + new.index(eos_char)]
        assert after == expected
    assert len(cut[0]) <= len(prompts[0]) + 2


def test_temperature_zero_and_top_k_one_decode_greedily():
    prompts = ["ab", "abc", "a"]
    greedy = _texts(prompts, max_new_tokens=5, greedy=True)
    assert _texts(prompts, max_new_tokens=5, temperature=0.0) == greedy
    top1 = _texts(prompts, key=jax.random.key(7), max_new_tokens=5, temperature=2.0, top_k=1)
    assert top1 == greedy


def test_repeated_prompt_draws_different_samples():
    sample = functools.partial(_texts, ["ab"] * 4, max_new_tokens=5, temperature=1.5)
    first = sample(key=jax.random.key(0))
    assert sample(key=jax.random.key(0)) == first
    assert len(set(first)) > 1  # each row draws its own tokens
    assert all(text.startswith("ab") for text in first)


def test_empty_prompt_starts_from_bos_or_is_an_error():
    (text,) = _texts([""], max_new_tokens=3, greedy=True)
    assert text.startswith("<1>") and len(text) == 3 + 3
    with pytest.raises(ValueError, match=r"prompt 0 \(''\) encodes to no tokens .* no BOS"):
        _texts([""], CharTokenizer(bos_id=None), max_new_tokens=3, greedy=True)


def test_prompts_too_long_for_the_model_raise_or_keep_their_ends():
    long_prompt = "abcdefghijklmn"  # 14 characters + 4 new tokens > 16 positions
    with pytest.raises(ValueError, match=r"the prompt \(14 tokens\) plus max_new_tokens=4 "
                                         r"exceeds the model's 16 positions"):
        _texts([long_prompt], max_new_tokens=4, greedy=True)
    (kept,) = _texts([long_prompt, "xy"], max_new_tokens=4, greedy=True, truncate_prompts=True)[:1]
    assert kept.startswith(long_prompt[-12:]) and len(kept) == 16
    with pytest.raises(ValueError, match="leaves no room for a prompt"):
        _texts(["a"], max_new_tokens=MAX_LEN, greedy=True, truncate_prompts=True)
