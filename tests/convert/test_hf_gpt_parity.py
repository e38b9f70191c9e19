"""Parity of converted Hugging Face GPT-2 / openai-gpt checkpoints with the PyTorch reference.

Randomly initialised HF models (small configs, fixed torch seed) are saved with
``save_pretrained(safe_serialization=True)``, converted with ``lmjax.convert`` and compared in
float32: full-forward logits and KV-cache decoding step by step (scanned and unscanned layouts),
and greedy generation token for token against HF ``generate(do_sample=False)``, single prompts
and left-padded batches.
Nothing is downloaded.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# The references are test-only dependencies (pyproject [test] extra): missing is an error, not a skip.
import torch  # noqa: E402
import transformers  # noqa: E402

from lmjax import convert, decoding, models  # noqa: E402

TOL = 1e-4
VOCAB = 1000
SMALL = dict(n_layer=3, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=64)


def _randomized(model, std=0.3):
    """Overwrites every parameter with noise: LayerNorm gains 1 + N(0, std), all else N(0, std).

    HF's init (unit gains, zero biases, std 0.02) would hide a swapped scale / bias or a dropped
    bias, and its greedy continuations just repeat the last prompt token.
    """
    with torch.no_grad():
        for name, param in model.named_parameters():  # the tied lm_head is listed once
            is_gain = name.endswith(".weight") and ".ln_" in name
            param.copy_((1.0 if is_gain else 0.0) + std * torch.randn_like(param))
    return model


def _hf_model(kind):
    torch.manual_seed(0)
    if kind == "gpt2":
        config = transformers.GPT2Config(**SMALL, bos_token_id=None, eos_token_id=None)
        model = transformers.GPT2LMHeadModel(config)
    else:
        config = transformers.OpenAIGPTConfig(**SMALL)
        model = transformers.OpenAIGPTLMHeadModel(config)
    config._attn_implementation = "eager"
    return _randomized(model.eval())


@pytest.fixture(scope="module", params=["gpt2", "openai-gpt"])
def hf_checkpoint(request, tmp_path_factory):
    """(kind, HF torch model, directory of its safetensors checkpoint)."""
    model = _hf_model(request.param)
    directory = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(directory, safe_serialization=True)
    return request.param, model, directory


@functools.lru_cache(maxsize=None)
def _converted(directory, scan_layers):
    return convert.load_hf_gpt(directory, scan_layers=scan_layers)


def _hf_logits(model, tokens, **kwargs):
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(tokens), dtype=torch.long), **kwargs).logits.numpy()


def _random_tokens(shape, seed=0):
    return np.random.default_rng(seed).integers(0, VOCAB, shape).astype(np.int32)


@pytest.mark.parametrize("scan_layers", [True, False])
def test_forward_logits_match(hf_checkpoint, scan_layers):
    kind, hf, directory = hf_checkpoint
    model, params = _converted(str(directory), scan_layers)
    assert model.config.scan_layers == scan_layers
    assert ("layers" in params["decoder"]) == scan_layers
    tokens = _random_tokens((2, 24))
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(tokens))["logits"])
    theirs = _hf_logits(hf, tokens)
    assert ours.shape == theirs.shape == (2, 24, VOCAB)
    np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)


@pytest.mark.parametrize("scan_layers", [True, False])
def test_kv_cache_decoding_matches_full_forward(hf_checkpoint, scan_layers):
    kind, hf, directory = hf_checkpoint
    model, params = _converted(str(directory), scan_layers)
    tokens = _random_tokens((2, 12), seed=1)
    prompt_length = 5
    full = _hf_logits(hf, tokens)  # [B, 12, V]
    cache = decoding.empty_cache(model, 2, tokens.shape[1])
    out, mutated = model.apply(
        {"params": params, "cache": cache},
        jnp.asarray(tokens[:, :prompt_length]),
        decode=True,
        mutable=["cache"],
    )
    np.testing.assert_allclose(out["logits"], full[:, :prompt_length], atol=TOL, rtol=0)
    cache = mutated["cache"]
    step_fn = jax.jit(decoding.decode_step_logits, static_argnums=0)
    if kind == "gpt2":  # HF's own KV cache as a second reference
        with torch.no_grad():
            prompt = torch.as_tensor(tokens[:, :prompt_length], dtype=torch.long)
            hf_step = hf(prompt, use_cache=True)
        past = hf_step.past_key_values
    for t in range(prompt_length, tokens.shape[1]):
        step_logits, cache = step_fn(
            model, params, cache, jnp.asarray(tokens[:, t]), jnp.full((2,), t, jnp.int32)
        )
        np.testing.assert_allclose(step_logits, full[:, t], atol=TOL, rtol=0)
        if kind == "gpt2":
            with torch.no_grad():
                hf_step = hf(
                    torch.as_tensor(tokens[:, t : t + 1], dtype=torch.long),
                    past_key_values=past,
                    use_cache=True,
                )
            past = hf_step.past_key_values
            np.testing.assert_allclose(step_logits, hf_step.logits[:, 0].numpy(), atol=TOL, rtol=0)


def test_greedy_generation_matches_hf_generate(hf_checkpoint):
    # Scanned layout only: the layouts' step logits are compared above, and
    # tests/decoding runs generate in both layouts.
    kind, hf, directory = hf_checkpoint
    model, params = _converted(str(directory), True)
    prompt = _random_tokens((1, 6), seed=2)
    num_new = 12
    ours = np.asarray(decoding.generate(model, params, prompt, None, None, num_new, greedy=True))
    with torch.no_grad():
        theirs = hf.generate(
            torch.as_tensor(prompt, dtype=torch.long),
            attention_mask=torch.ones(prompt.shape, dtype=torch.long),
            do_sample=False,
            max_new_tokens=num_new,
            min_new_tokens=num_new,
            pad_token_id=0,
        ).numpy()
    assert ours.tolist() == theirs.tolist()
    assert len(set(ours[0, 6:].tolist())) > 3  # a non-degenerate continuation


def test_left_padded_batch_generation_matches_hf(hf_checkpoint):
    kind, hf, directory = hf_checkpoint
    model, params = _converted(str(directory), True)
    lengths = (3, 7, 5)
    prompts = np.zeros((3, 7), np.int32)
    mask = np.zeros((3, 7), np.int32)
    for row, length in enumerate(lengths):
        prompts[row, 7 - length:] = _random_tokens((length,), seed=10 + row)
        mask[row, 7 - length:] = 1
    num_new = 8
    ours = np.asarray(decoding.generate(model, params, prompts, mask, None, num_new, greedy=True))
    with torch.no_grad():
        theirs = hf.generate(
            torch.as_tensor(prompts, dtype=torch.long),
            attention_mask=torch.as_tensor(mask, dtype=torch.long),
            do_sample=False,
            max_new_tokens=num_new,
            min_new_tokens=num_new,
            pad_token_id=0,
        ).numpy()
    assert ours[:, 7:].tolist() == theirs[:, 7:].tolist()


def test_config_matches_the_checkpoint(hf_checkpoint):
    kind, hf, directory = hf_checkpoint
    cfg = convert.lmjax_model_config(directory)
    assert cfg.family == "gpt"
    assert (cfg.num_layers, cfg.embed_dim, cfg.num_heads, cfg.mlp_dim) == (3, 64, 4, 256)
    assert (cfg.vocab_size, cfg.max_len, cfg.activation) == (VOCAB, 64, "gelu_tanh")
    assert cfg.norm == ("pre" if kind == "gpt2" else "post")
    assert cfg.final_norm == (kind == "gpt2")
    assert models.build(cfg).config == convert.gpt_config_from_hf(directory)
