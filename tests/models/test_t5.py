"""lmjax.models.t5 and lmjax.layers.relative_position: presets, buckets, the seq2seq contract,
masks, KV-cache decoding and configuration errors."""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

# The reference is a test-only dependency (pyproject [test] extra): missing is an error, not a skip.
import torch  # noqa: E402
import transformers  # noqa: E402

from lmjax import axes, models  # noqa: E402
from lmjax.layers import relative_position  # noqa: E402
from lmjax.layers.relative_position import (  # noqa: E402
    RelativePositionBias,
    relative_position_bucket,
)
from lmjax.layers.transformer import TransformerBlock  # noqa: E402
from lmjax.models import t5  # noqa: E402

# The tiny preset with small buckets, so decoding 10 tokens reaches the logarithmic buckets.
SMALL_BUCKETS = dict(relative_buckets=8, relative_max_distance=12)


def _reference_bucket(relative: int, bidirectional: bool, num_buckets: int, max_distance: int):
    """mesh-tensorflow ``_relative_position_bucket`` for one distance, in plain Python."""
    n = -relative
    offset = 0
    if bidirectional:
        num_buckets //= 2
        if n < 0:
            offset = num_buckets
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return offset + n
    large = max_exact + int(
        math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    )
    return offset + min(large, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (16, 64), (8, 12), (32, 20)])
def test_bucket_matches_the_reference_formula(bidirectional, num_buckets, max_distance):
    relative = np.arange(-400, 401)
    ours = np.asarray(
        relative_position_bucket(jnp.asarray(relative), bidirectional, num_buckets, max_distance)
    )
    expected = [
        _reference_bucket(int(r), bidirectional, num_buckets, max_distance) for r in relative
    ]
    np.testing.assert_array_equal(ours, expected)
    assert ours.dtype == np.int32
    if bidirectional:  # every bucket but "distance 0, key after the query" is in use
        assert set(ours.tolist()) == set(range(num_buckets)) - {num_buckets // 2}
    else:  # every later key shares bucket 0
        assert np.all(ours[relative > 0] == 0)


def test_relative_bias_shapes_axes_and_decode_positions():
    module = RelativePositionBias(num_heads=3, num_buckets=8, max_distance=12, bidirectional=False)
    variables = module.init(jax.random.key(0), jnp.arange(5), jnp.arange(5))
    boxed = variables["params"]["embedding"]
    assert boxed.names == (None, axes.HEADS) and boxed.value.shape == (8, 3)
    table = np.asarray(boxed.value)
    bias = np.asarray(module.apply(variables, jnp.arange(5), jnp.arange(5)))
    assert bias.shape == (1, 3, 5, 5) and bias.dtype == np.float32
    # Query 2 of a decode chunk at cache index 4, against 9 cache slots: [B, H, T, M].
    batched = module.apply(variables, 4 + jnp.arange(3)[None], jnp.arange(9)[None].repeat(2, 0))
    assert batched.shape == (2, 3, 3, 9)
    bucket = _reference_bucket(7 - 6, False, 8, 12)  # key slot 7, query position 6
    np.testing.assert_allclose(np.asarray(batched)[1, :, 2, 7], table[bucket])
    far_back = _reference_bucket(0 - 6, False, 8, 12)  # key slot 0
    np.testing.assert_allclose(np.asarray(batched)[0, :, 2, 0], table[far_back])


def test_presets_match_the_published_shapes_and_parameter_counts():
    small, xxl11 = t5.PRESETS["t5_small"], t5.PRESETS["t5_11b"]
    assert (small.embed_dim, small.num_heads, small.head_dim, small.mlp_dim) == (512, 8, 64, 2048)
    assert (xxl11.num_heads, xxl11.head_dim, xxl11.mlp_dim) == (128, 128, 65536)
    assert t5.PRESETS["t5_3b"].head_dim == 128
    for name in ("t5_1_1_xl", "mt5_xl"):
        cfg = t5.PRESETS[name]
        assert (cfg.embed_dim, cfg.num_heads, cfg.mlp_dim, cfg.activation) == (
            2048, 32, 5120, "gated_gelu",
        )
    assert {t5.PRESETS[n].vocab_size for n in t5.PRESETS if n.startswith("mt5")} == {250112}
    assert {t5.PRESETS[n].vocab_size for n in t5.PRESETS if n.startswith("t5")} == {32128}
    tied = {n for n in t5.PRESETS if t5.PRESETS[n].tie_embeddings}
    assert tied == {"t5_small", "t5_base", "t5_large", "t5_3b", "t5_11b", "tiny_v1_0"}
    assert t5.count_params(small) == 60_506_624  # HF t5-small, the tied table counted once
    for name, count in t5.PUBLISHED_PARAMS.items():
        assert t5.count_params(t5.PRESETS[name]) == count, name


@pytest.mark.parametrize(
    "preset,hf_class,hf_config",
    [
        ("t5_small", transformers.T5ForConditionalGeneration, dict(feed_forward_proj="relu")),
        (
            "t5_1_1_small",
            transformers.T5ForConditionalGeneration,
            dict(d_ff=1024, num_layers=8, num_heads=6, feed_forward_proj="gated-gelu",
                 tie_word_embeddings=False),
        ),
        ("mt5_small", transformers.MT5ForConditionalGeneration, {}),
    ],
)
def test_parameter_count_equals_the_hf_model(preset, hf_class, hf_config):
    config_class = transformers.MT5Config if preset.startswith("mt5") else transformers.T5Config
    with torch.device("meta"):
        hf_model = hf_class(config_class(**hf_config))
    hf_count = sum(p.numel() for p in hf_model.parameters())  # shared tensors counted once
    cfg = t5.PRESETS[preset]
    untied_in_release = not cfg.tie_embeddings
    if untied_in_release and hf_model.lm_head.weight is hf_model.shared.weight:
        hf_count += cfg.vocab_size * cfg.embed_dim  # transformers 5 ties the released lm_head
    assert t5.count_params(cfg) == hf_count


ENC = jnp.array([[5, 6, 7, 8, 9, 10, 1], [11, 12, 13, 1, 0, 0, 0]], jnp.int32)
ENC_SEGMENTS = (ENC != 0).astype(jnp.int32)


def _tiny(**overrides):
    """The 'tiny' preset (small buckets, unscanned unless overridden) and its parameters."""
    cfg = dataclasses.replace(
        t5.PRESETS["tiny"], **{**SMALL_BUCKETS, "scan_layers": False, **overrides}
    )
    model = t5.T5(cfg)
    params = jax.jit(model.init)(jax.random.key(3), ENC, jnp.ones((2, 10), jnp.int32))["params"]
    return model, params


@pytest.fixture(scope="module")
def tiny():
    return _tiny(dropout_rate=0.2)  # dropout only acts with deterministic=False


def _forward(model, **static):
    """model.__call__ under jit; keyword arrays (segment ids, positions) are traced."""
    return jax.jit(lambda params, enc, dec, **kw: model.apply({"params": params}, enc, dec,
                                                               **static, **kw))


def _empty_cache(model, batch, encoder_length, max_length):
    """The cache ``model.init(..., decode=True)`` makes (all zeros), built from shapes alone."""
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((batch, encoder_length), jnp.int32),
                           jnp.zeros((batch, max_length), jnp.int32), decode=True)["cache"]
    )
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def test_one_bias_table_per_stack_computed_once_per_call(tiny, monkeypatch):
    model, params = tiny
    params = nn.unbox(params)
    assert params["encoder_relative_bias"]["embedding"].shape == (8, 4)
    assert params["decoder_relative_bias"]["embedding"].shape == (8, 4)
    paths = ["/".join(str(k.key) for k in path)
             for path, _ in jax.tree_util.tree_leaves_with_path(params)]
    assert [p for p in paths if "relative" in p] == [
        "decoder_relative_bias/embedding", "encoder_relative_bias/embedding",
    ]
    calls = []
    original = relative_position.relative_position_bucket
    monkeypatch.setattr(
        relative_position, "relative_position_bucket",
        lambda *args: calls.append(args[1]) or original(*args),
    )
    jax.eval_shape(lambda p: model.apply({"params": p}, ENC, ENC[:, :4]), params)
    assert calls == [True, False]  # encoder bidirectional, decoder causal; 2 + 2 layers share them


def test_tied_logits_are_scaled_and_untied_logits_read_the_head(tiny):
    dec = jnp.array([[0, 9, 3], [0, 4, 2]], jnp.int32)
    for model, params in (tiny, _tiny(tie_embeddings=True, activation="relu")):
        out = _forward(model)(params, ENC, dec, encoder_segment_ids=ENC_SEGMENTS)
        assert set(out) == {"logits", "hidden", "encoded"}
        assert out["logits"].shape == (2, 3, 512) and out["logits"].dtype == jnp.float32
        assert out["encoded"].shape == (2, 7, 64) and out["hidden"].shape == (2, 3, 64)
        hidden = np.asarray(out["hidden"], np.float64)
        if model.config.tie_embeddings:
            table = np.asarray(nn.unbox(params)["token_embed"]["embedding"], np.float64)
            expected = hidden @ table.T * 64**-0.5
            assert "lm_head" not in params
        else:
            expected = hidden @ np.asarray(nn.unbox(params)["lm_head"]["kernel"], np.float64)
            assert params["lm_head"]["kernel"].names == (axes.EMBED, axes.VOCAB)
        np.testing.assert_allclose(np.asarray(out["logits"]), expected, rtol=1e-5, atol=1e-5)


def test_query_init_folds_the_attention_scale():
    cfg = dataclasses.replace(t5.PRESETS["tiny"], embed_dim=256, head_dim=64)
    block = TransformerBlock(t5.T5(cfg).block_config(cross_attention=False))
    shapes = jax.eval_shape(block.init, jax.random.key(0), jnp.ones((1, 2, 256)))
    assert shapes["params"]["attention"]["query"]["kernel"].value.shape == (256, 4, 64)
    attention = nn.unbox(jax.jit(block.init)(jax.random.key(0), jnp.ones((1, 2, 256))))
    attention = attention["params"]["attention"]
    for name, std in (("key", 256**-0.5), ("query", (256 * 64) ** -0.5), ("out", 256**-0.5)):
        measured = float(jnp.std(attention[name]["kernel"]))
        assert abs(measured - std) < 0.05 * std, (name, measured, std)
    assert "bias" not in attention["query"]


@pytest.mark.parametrize("scan_layers", [True, False])
def test_kv_cache_decoding_equals_the_full_decoder(tiny, scan_layers):
    model, params = tiny
    if scan_layers:  # the same weights in the scanned layout
        model = t5.T5(dataclasses.replace(model.config, scan_layers=True))
        params = t5.to_scanned_layout(params, model.config)
        assert params["decoder"]["layers"]["cross_attention"]["query"]["kernel"].shape[0] == 2
        assert t5.to_unscanned_layout(params).keys() == nn.unbox(tiny[1]).keys()
    dec = jax.random.randint(jax.random.key(4), (2, 10), 2, 512).at[:, 0].set(0)
    encoded = jax.jit(lambda p: model.apply({"params": p}, ENC, encoder_segment_ids=ENC_SEGMENTS,
                                            method="encode"))(params)
    full = jax.jit(lambda p: model.apply({"params": p}, encoded, dec,
                                         encoder_segment_ids=ENC_SEGMENTS,
                                         method="decode"))(params)["logits"]
    step = jax.jit(lambda p, cache, chunk: model.apply(
        {"params": p, "cache": cache}, encoded, chunk, encoder_segment_ids=ENC_SEGMENTS,
        decode=True, method="decode", mutable=["cache"],
    ))
    cache = _empty_cache(model, 2, 7, 10)
    assert cache["decoder_positions"]["cached_positions"].shape == (2, 10)
    pieces = []
    for start, stop in [(0, 3)] + [(t, t + 1) for t in range(3, 10)]:  # a prefill, then tokens
        out, mutated = step(params, cache, dec[:, start:stop])
        cache = mutated["cache"]
        pieces.append(out["logits"])
    stepped = jnp.concatenate(pieces, axis=1)
    np.testing.assert_allclose(np.asarray(stepped), np.asarray(full), atol=1e-5, rtol=0)
    assert int(cache["decoder_positions"]["cache_index"]) == 10
    np.testing.assert_array_equal(cache["decoder_positions"]["cached_positions"],
                                  np.tile(np.arange(10), (2, 1)))


def test_kv_cache_through_call_and_missing_cache_error(tiny):
    model, params = tiny
    dec = jnp.array([[0, 7, 8, 9], [0, 4, 4, 4]], jnp.int32)
    full = _forward(model)(params, ENC, dec)["logits"]
    step = jax.jit(lambda p, cache, chunk: model.apply(
        {"params": p, "cache": cache}, ENC, chunk, decode=True, mutable=["cache"]))
    cache = _empty_cache(model, 2, 7, 4)
    steps = []
    for t in range(4):
        out, mutated = step(params, cache, dec[:, t:t + 1])
        cache = mutated["cache"]
        steps.append(out["logits"])
    np.testing.assert_allclose(np.asarray(jnp.concatenate(steps, 1)), np.asarray(full), atol=1e-5)
    with pytest.raises(ValueError, match="decode=True needs a KV cache"):
        jax.eval_shape(
            lambda p: model.apply({"params": p}, ENC, dec, decode=True, mutable=["cache"]), params
        )


def test_packed_segments_equal_separate_examples(tiny):
    """A packed row (two examples per side) gives each example's logits as if run alone."""
    model, params = tiny
    forward = _forward(model)
    enc_a, enc_b = [5, 6, 7, 1], [8, 9, 1]
    dec_a, dec_b = [0, 11, 12], [0, 13, 14, 15]
    packed_enc = jnp.array([enc_a + enc_b + [0]], jnp.int32)
    packed_dec = jnp.array([dec_a + dec_b + [0]], jnp.int32)
    packed = forward(
        params, packed_enc, packed_dec,
        encoder_segment_ids=jnp.array([[1] * 4 + [2] * 3 + [0]], jnp.int32),
        decoder_segment_ids=jnp.array([[1] * 3 + [2] * 4 + [0]], jnp.int32),
    )["logits"]
    alone_a = forward(params, jnp.array([enc_a]), jnp.array([dec_a]))["logits"]
    alone_b = forward(params, jnp.array([enc_b]), jnp.array([dec_b]))["logits"]
    np.testing.assert_allclose(np.asarray(packed[0, :3]), np.asarray(alone_a[0]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(packed[0, 3:7]), np.asarray(alone_b[0]), atol=1e-5)
    # Without segment ids the examples see each other and the logits move.
    mixed = forward(params, packed_enc, packed_dec)["logits"]
    assert float(jnp.max(jnp.abs(mixed[0, 3:7] - alone_b[0]))) > 1e-3


def test_decoder_is_causal_and_dropout_needs_rngs(tiny):
    model, params = tiny
    dec = jnp.array([[0, 7, 8, 9], [0, 4, 4, 4]], jnp.int32)
    forward = _forward(model)
    base = forward(params, ENC, dec)["logits"]
    changed = forward(params, ENC, dec.at[:, 3].set(20))["logits"]
    np.testing.assert_allclose(np.asarray(base[:, :3]), np.asarray(changed[:, :3]), atol=1e-6)
    assert float(jnp.max(jnp.abs(base[:, 3] - changed[:, 3]))) > 1e-3
    noisy = jax.jit(lambda p, key: model.apply({"params": p}, ENC, dec, deterministic=False,
                                               rngs={"dropout": key})["logits"])
    first, second = noisy(params, jax.random.key(0)), noisy(params, jax.random.key(1))
    assert float(jnp.max(jnp.abs(first - second))) > 1e-3


def test_bfloat16_compute_keeps_float32_logits_and_registry_builds_t5():
    model = models.build(
        models.config_dict("t5", "tiny", dtype="bfloat16", num_decoder_layers=1, remat="full")
    )
    assert isinstance(model, t5.T5) and model.config.num_decoder_layers == 1
    dec = jnp.zeros((2, 3), jnp.int32)
    params = jax.jit(model.init)(jax.random.key(0), ENC, dec)["params"]
    assert params["token_embed"]["embedding"].value.dtype == jnp.float32
    out = _forward(model)(params, ENC, dec)
    assert out["logits"].dtype == jnp.float32 and out["hidden"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        np.asarray(t5.shift_right(jnp.array([[4, 5, 1]]), 0)), [[0, 4, 5]]
    )


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(activation="tanh"), "Unknown activation 'tanh'"),
        (dict(relative_buckets=2), "relative_buckets=2 is too small"),
        (dict(relative_buckets=32, relative_max_distance=8), "relative_max_distance=8 must exceed"),
        (dict(pad_id=512, vocab_size=512), r"pad_id=512 must be a token id in \[0, vocab_size\)"),
        (dict(dropout_rate=1.0), r"dropout_rate=1.0 must be in \[0, 1\)"),
        (dict(head_dim=0), "head_dim=0 must be positive"),
        (dict(remat="most"), "remat='most' must be one of"),
        (dict(dtype="fp8"), "dtype='fp8' must be one of"),
    ],
)
def test_bad_configs_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(t5.PRESETS["tiny"], **overrides)


def test_bad_inputs_are_clear_errors(tiny):
    model, params = tiny

    def run(enc, dec):
        return jax.eval_shape(lambda p: model.apply({"params": p}, enc, dec), params)

    with pytest.raises(ValueError, match=r"decoder_inputs \[batch, length\]"):
        run(ENC, jnp.zeros((4,), jnp.int32))
    with pytest.raises(TypeError, match="integer"):
        run(ENC.astype(jnp.float32), jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(ValueError, match="num_buckets=3 is too small for bidirectional"):
        relative_position_bucket(jnp.arange(3), True, num_buckets=3)
