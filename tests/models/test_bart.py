"""BART: presets and parameter counts against HF, the position offset, segment masks, KV-cache
decoding against the full decoder call, and config / input errors."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

# The references are test-only dependencies (pyproject [test] extra): missing is an error, not a skip.
import torch  # noqa: E402
import transformers  # noqa: E402

from lmjax.models import bart  # noqa: E402

SMALL = dataclasses.replace(
    bart.PRESETS["tiny"], vocab_size=64, max_positions=24, embed_dim=32, mlp_dim=48, dropout=0.0
)
KEY = jax.random.key(0)


def _jit(model, **static):
    """``model.apply`` compiled, with keyword arguments ``static`` fixed (eager flax is slow);
    one compiled function per (config, static) so tests share compilations."""
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in static.items()))
    return _compiled_apply(model.config, frozen)


@functools.lru_cache(maxsize=None)
def _compiled_apply(config, static):
    model = bart.BART(config)
    fixed = {k: list(v) if isinstance(v, tuple) else v for k, v in static}
    return jax.jit(lambda variables, *args, **kwargs: model.apply(variables, *args, **fixed,
                                                                   **kwargs))


def _ids(key, shape, vocab=64):
    return jax.random.randint(jax.random.key(key), shape, 3, vocab, jnp.int32)


@functools.lru_cache(maxsize=None)
def _params(config, seed=0):
    model = bart.BART(config)
    ids = jnp.zeros((1, 2), jnp.int32)
    params = nn.unbox(jax.jit(model.init)(jax.random.key(seed), ids, ids)["params"])
    # a nonzero logits bias and position tables, so that ignoring either shows
    params["final_logits_bias"] = jax.random.normal(jax.random.key(seed + 1), (config.vocab_size,))
    return model, params


def _hf_param_count(**config):
    """Unique parameters of HF BartForConditionalGeneration built on the meta device (no memory),
    plus its final_logits_bias buffer [1, V], which lmjax keeps as a parameter."""
    with torch.device("meta"):
        model = transformers.BartForConditionalGeneration(transformers.BartConfig(**config))
    unique = {id(p): p.numel() for p in model.parameters()}
    return sum(unique.values()) + model.final_logits_bias.numel()


def test_presets_follow_fairseq_architectures():
    base, large, tiny = (bart.PRESETS[k] for k in ("bart_base", "bart_large", "tiny"))
    assert (base.encoder_layers, base.decoder_layers, base.embed_dim, base.num_heads,
            base.mlp_dim) == (6, 6, 768, 12, 3072)
    assert (large.encoder_layers, large.decoder_layers, large.embed_dim, large.num_heads,
            large.mlp_dim) == (12, 12, 1024, 16, 4096)
    assert (tiny.embed_dim, tiny.encoder_layers, tiny.num_heads, tiny.mlp_dim,
            tiny.vocab_size, tiny.max_positions) == (64, 2, 4, 128, 512, 256)
    for config in (base, large):
        assert (config.vocab_size, config.max_positions, config.activation) == (50265, 1024, "gelu")
        ids = (config.pad_id, config.bos_id, config.eos_id, config.decoder_start_id)
        assert ids == (1, 0, 2, 2)
        assert (config.dropout, config.attention_dropout, config.activation_dropout) == (0.1, 0, 0)
        assert not config.scale_embedding and config.layer_norm_eps == 1e-5


@pytest.mark.parametrize(
    "preset, hf",
    [
        ("bart_base", dict(d_model=768, encoder_layers=6, decoder_layers=6,
                           encoder_attention_heads=12, decoder_attention_heads=12,
                           encoder_ffn_dim=3072, decoder_ffn_dim=3072)),
        ("bart_large", dict()),  # HF BartConfig's defaults are bart-large
    ],
)
def test_param_counts_equal_hf(preset, hf):
    ours = bart.count_params(bart.PRESETS[preset])
    assert ours == _hf_param_count(**hf)
    assert ours == {"bart_base": 139_470_681, "bart_large": 406_341_721}[preset]


def test_param_tree_shapes_and_logical_axes():
    boxed = jax.eval_shape(
        lambda k: bart.BART(SMALL).init(k, jnp.zeros((1, 3), jnp.int32),
                                        jnp.zeros((1, 2), jnp.int32)), KEY
    )["params"]
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
    shapes = bart.param_shapes(SMALL)
    e, v, n = SMALL.embed_dim, SMALL.vocab_size, SMALL.decoder_layers
    assert shapes["token_embed"]["embedding"].shape == (v, e)
    assert shapes["final_logits_bias"].shape == (v,)
    for stack in ("encoder_embed", "decoder_embed"):
        assert shapes[stack]["position_embed"]["embedding"].shape == (SMALL.max_positions + 2, e)
    cross = shapes["decoder"]["layers"]["cross_attention"]["query"]["kernel"]
    assert cross.shape == (n, e, SMALL.num_heads, SMALL.head_dim)
    assert "cross_attention" not in shapes["encoder"]["layers"]


def test_position_id_p_reads_table_row_p_plus_2():
    cfg = SMALL
    table = jax.random.normal(KEY, (cfg.max_positions + 2, cfg.embed_dim))
    embed_params = {
        "position_embed": {"embedding": table},
        "embed_norm": {"scale": jnp.ones(cfg.embed_dim), "bias": jnp.zeros(cfg.embed_dim)},
    }
    positions = jnp.array([[0, 5, 21]], jnp.int32)
    out = bart.BartEmbeddings(cfg).apply(
        {"params": embed_params}, jnp.zeros((1, 3, cfg.embed_dim)), positions, True
    )

    def norm(x):
        return (x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-5)

    np.testing.assert_allclose(out[0], norm(table[positions[0] + 2]), atol=1e-5)
    assert np.max(np.abs(out[0] - norm(table[positions[0]]))) > 0.1
    # the whole model: default positions are arange, i.e. rows 2 .. L+1
    model, params = _params(cfg)
    enc, dec = _ids(1, (2, 6)), _ids(2, (2, 5))
    apply = _jit(model)
    default = apply({"params": params}, enc, dec)
    explicit = apply({"params": params}, enc, dec,
                           encoder_positions=jnp.broadcast_to(jnp.arange(6), (2, 6)),
                           decoder_positions=jnp.broadcast_to(jnp.arange(5), (2, 5)))
    np.testing.assert_array_equal(default["logits"], explicit["logits"])


def test_outputs_dtypes_and_encode_decode_methods():
    model, params = _params(SMALL)
    enc, dec = _ids(1, (2, 6)), _ids(2, (2, 5))
    seg = jnp.array([[1] * 6, [1] * 4 + [0] * 2], jnp.int32)
    out = _jit(model)({"params": params}, enc, dec, encoder_segment_ids=seg)
    assert out["logits"].shape == (2, 5, SMALL.vocab_size) and out["logits"].dtype == jnp.float32
    assert out["hidden"].shape == (2, 5, SMALL.embed_dim)
    assert out["encoded"].shape == (2, 6, SMALL.embed_dim)
    encoded = _jit(model, method="encode")({"params": params}, enc, encoder_segment_ids=seg)
    decoded = _jit(model, method="decode")({"params": params}, encoded, dec,
                                           encoder_segment_ids=seg)
    np.testing.assert_array_equal(encoded, out["encoded"])
    np.testing.assert_array_equal(decoded["logits"], out["logits"])
    # logits = hidden @ table^T + final_logits_bias
    expected = out["hidden"] @ params["token_embed"]["embedding"].T + params["final_logits_bias"]
    np.testing.assert_allclose(out["logits"], expected, atol=1e-5)
    bf16 = bart.BART(dataclasses.replace(SMALL, dtype="bfloat16"))
    assert _jit(bf16)({"params": params}, enc, dec)["logits"].dtype == jnp.float32


def test_packed_rows_equal_separate_examples():
    """Two examples packed in one row (segments 1, 2; positions restarting) give the outputs of
    each example run alone: encoder, decoder self- and cross-attention all stay in segment."""
    model, params = _params(SMALL)
    enc_a, enc_b, dec_a, dec_b = _ids(1, (1, 4)), _ids(2, (1, 3)), _ids(3, (1, 3)), _ids(4, (1, 4))
    pad = jnp.ones((1, 1), jnp.int32)
    enc = jnp.concatenate([enc_a, enc_b, pad], 1)
    dec = jnp.concatenate([dec_a, dec_b, pad], 1)
    apply = _jit(model)
    packed = apply(
        {"params": params}, enc, dec,
        encoder_segment_ids=jnp.array([[1, 1, 1, 1, 2, 2, 2, 0]]),
        decoder_segment_ids=jnp.array([[1, 1, 1, 2, 2, 2, 2, 0]]),
        encoder_positions=jnp.array([[0, 1, 2, 3, 0, 1, 2, 0]]),
        decoder_positions=jnp.array([[0, 1, 2, 0, 1, 2, 3, 0]]),
    )
    alone_a = apply({"params": params}, enc_a, dec_a)
    alone_b = apply({"params": params}, enc_b, dec_b)
    np.testing.assert_allclose(packed["encoded"][0, :4], alone_a["encoded"][0], atol=1e-5)
    np.testing.assert_allclose(packed["encoded"][0, 4:7], alone_b["encoded"][0], atol=1e-5)
    np.testing.assert_allclose(packed["logits"][0, :3], alone_a["logits"][0], atol=1e-5)
    np.testing.assert_allclose(packed["logits"][0, 3:7], alone_b["logits"][0], atol=1e-5)


@pytest.mark.parametrize("chunks", [[1] * 6, [4, 2]], ids=["token_by_token", "prefill_4"])
def test_kv_cache_decoding_equals_full_decoder_call(chunks):
    """Decoding with the KV cache, token by token (or a 4-token prefill then 2) reproduces the
    full decoder call's logits, with a padded encoder row."""
    model, params = _params(SMALL)
    batch, enc_len, dec_len, slots = 2, 7, 6, 8
    enc, dec = _ids(5, (batch, enc_len)), _ids(6, (batch, dec_len))
    enc_seg = jnp.array([[1] * 7, [1] * 4 + [0] * 3], jnp.int32)
    full = _jit(model)({"params": params}, enc, dec, encoder_segment_ids=enc_seg)

    cache = jax.jit(lambda k, e, d: model.init(k, e, d, decode=True))(
        KEY, jnp.zeros((batch, enc_len), jnp.int32), jnp.zeros((batch, slots), jnp.int32)
    )["cache"]
    assert int(cache["decoder_embed"]["cache_index"]) == 0
    encoded = _jit(model, method="encode")({"params": params}, enc, encoder_segment_ids=enc_seg)
    step = _jit(model, decode=True, method="decode", mutable=["cache"])
    steps, start = [], 0
    for size in chunks:
        out, mutated = step(
            {"params": params, "cache": cache}, encoded, dec[:, start:start + size],
            encoder_segment_ids=enc_seg,
        )
        cache, start = mutated["cache"], start + size
        steps.append(out["logits"])
    assert int(cache["decoder_embed"]["cache_index"]) == dec_len
    logits = jnp.concatenate(steps, axis=1)
    np.testing.assert_allclose(logits, full["logits"], atol=1e-5, rtol=0)
    # the check has teeth: another encoder padding changes the logits
    other = _jit(model)({"params": params}, enc, dec)
    assert np.max(np.abs(other["logits"][1] - full["logits"][1])) > 1e-3


def test_dropout_and_frozen_logits_bias():
    config = dataclasses.replace(SMALL, dropout=0.1)
    model, params = _params(config)
    enc, dec = _ids(1, (2, 6)), _ids(2, (2, 5))

    @jax.jit
    def outputs_and_grads(p):
        train = model.apply({"params": p}, enc, dec, deterministic=False,
                            rngs={"dropout": jax.random.key(3)})["logits"]
        evaluate = lambda q: model.apply({"params": q}, enc, dec)["logits"]  # noqa: E731
        return train, evaluate(p), jax.grad(lambda q: jnp.sum(evaluate(q) ** 2))(p)

    train, evaluate, grads = outputs_and_grads(params)
    assert np.max(np.abs(evaluate - train)) > 1e-3
    assert not np.any(grads["final_logits_bias"])  # HF: a buffer, never trained
    assert np.any(grads["token_embed"]["embedding"])


def test_shift_right():
    targets = jnp.array([[5, 6, 2], [7, -100, -100]])
    np.testing.assert_array_equal(
        bart.shift_right(targets, 2, pad_id=1), [[2, 5, 6], [2, 7, 1]]
    )


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(embed_dim=30), "embed_dim=30 is not divisible by num_heads=4"),
        (dict(dropout=1.0), "dropout=1.0 must be in"),
        (dict(activation="gelu_exact"), "Unknown activation 'gelu_exact'"),
        (dict(pad_id=64), "pad_id=64 must be a token id"),
        (dict(encoder_layers=0), "encoder_layers=0 must be positive"),
        (dict(dtype="float64"), "dtype='float64' must be one of"),
        (dict(remat="some"), "remat='some' must be one of"),
    ],
)
def test_bad_config_raises(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SMALL, **changes)


def test_bad_inputs_raise():
    model, params = _params(SMALL)
    too_long = jnp.zeros((1, SMALL.max_positions + 1), jnp.int32)
    ok = jnp.zeros((1, 4), jnp.int32)
    traced = lambda f: jax.eval_shape(f)  # noqa: E731  (the checks run while tracing)
    with pytest.raises(ValueError, match="encoder_inputs has length 25 > max_positions=24"):
        traced(lambda: model.apply({"params": params}, too_long, ok))
    with pytest.raises(ValueError, match="decoder_inputs has length 25 > max_positions=24"):
        traced(lambda: model.apply({"params": params}, ok, too_long))
    with pytest.raises(ValueError, match="decoder_inputs has length 25 > max_positions=24"):
        traced(lambda: model.init(KEY, ok, too_long, decode=True))  # cache > position table
    with pytest.raises(ValueError, match=r"expects encoder_inputs \[batch, length\]"):
        traced(lambda: model.apply({"params": params}, jnp.zeros((4,), jnp.int32), ok))
    with pytest.raises(ValueError, match="needs a KV cache"):
        traced(lambda: model.apply({"params": params}, ok, ok, decode=True, mutable=["cache"]))
