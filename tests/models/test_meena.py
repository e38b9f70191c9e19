"""Meena / Evolved Transformer: convs vs lax.conv, causality, packing, KV+conv cache, presets."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.layers import evolved_transformer as et
from lmjax.models import meena

KEY = jax.random.key(0)
TINY = meena.PRESETS["tiny"]
B, LE, LD = 2, 9, 12
ENC = jax.random.randint(jax.random.key(1), (B, LE), 2, TINY.vocab_size)
DEC = jax.random.randint(jax.random.key(2), (B, LD), 2, TINY.vocab_size)


@pytest.fixture(scope="module")
def tiny_params():
    return nn.unbox(meena.Meena(TINY).init(KEY, ENC, DEC)["params"])


def _apply(params, enc, dec, **kwargs):
    # Eager on purpose: on the shared 2-core CPU, compiling the unrolled blocks costs more than
    # op-by-op dispatch of these tiny shapes.
    return meena.Meena(TINY).apply({"params": params}, enc, dec, **kwargs)


# --- Convolutions ----------------------------------------------------------------------------


def _lax_conv(x, kernel, left, right, groups=1):
    """x [B, L, C], kernel [K, C/groups, F] -> [B, L', F] with explicit padding (reference)."""
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(1,), padding=[(left, right)],
        dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=groups,
        precision=jax.lax.Precision.HIGHEST,
    )


def test_wide_attention_heads_follow_tensor2tensor():
    """t2t _capped_double_heads: double the heads up to 16, never fewer than num_heads."""
    assert [et.wide_attention_heads(h) for h in (1, 4, 8, 12, 16, 32)] == [2, 8, 16, 16, 16, 32]
    tiny = meena.param_shapes(TINY)["decoder_block_0"]["wide_self_attention"]["query"]["kernel"]
    assert tiny.shape == (64, 8, 8)


def test_standard_conv_matches_lax_same_conv():
    x = jax.random.normal(jax.random.key(3), (2, 7, 6))
    conv = et.Conv1D(4, (None, "embed", "mlp"))
    windows = et.same_padding_windows(x, jnp.ones((2, 7), jnp.int32), 3)
    params = nn.unbox(conv.init(KEY, windows)["params"])
    got = conv.apply({"params": params}, windows)
    want = _lax_conv(x, params["kernel"], 1, 1) + params["bias"]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_causal_separable_conv_matches_left_padded_lax_conv():
    x = jax.random.normal(jax.random.key(4), (2, 9, 6))
    conv = et.SeparableConv1D(5, "embed", "mlp")
    windows = et.causal_windows(jnp.zeros((2, 6, 6)), jnp.zeros((2, 6), jnp.int32), x,
                                jnp.ones((2, 9), jnp.int32), match_segments=True)
    params = nn.unbox(conv.init(KEY, windows)["params"])
    got = conv.apply({"params": params}, windows)
    depthwise = params["depthwise"][:, None, :]  # [K, 1, C]
    want = _lax_conv(x, depthwise, 6, 0, groups=6)  # t2t: pad 6 on the left, 'VALID'
    want = want @ params["pointwise"]["kernel"] + params["pointwise"]["bias"]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_windows_mask_other_segments_and_padding():
    x = jnp.arange(1.0, 7.0)[None, :, None]  # values 1..6
    segments = jnp.array([[1, 1, 2, 2, 2, 0]])
    left, centre, right = et.same_padding_windows(x, segments, 3)
    np.testing.assert_array_equal(left[0, :, 0], [0, 1, 0, 3, 4, 0])
    np.testing.assert_array_equal(centre[0, :, 0], [1, 2, 3, 4, 5, 0])
    np.testing.assert_array_equal(right[0, :, 0], [2, 0, 4, 5, 0, 0])
    history = jnp.array([[[7.0], [8.0]]])
    w = et.causal_windows(history, jnp.array([[0, 1]]), x[:, :2], jnp.array([[1, 1]]),
                          match_segments=False)
    np.testing.assert_array_equal(jnp.stack(w)[:, 0, :, 0], [[0, 8], [8, 1], [1, 2]])


# --- The model -------------------------------------------------------------------------------


def test_outputs_follow_the_seq2seq_contract(tiny_params):
    out = _apply(tiny_params, ENC, DEC)
    assert out["logits"].shape == (B, LD, TINY.vocab_size) and out["logits"].dtype == jnp.float32
    assert out["hidden"].shape == (B, LD, TINY.embed_dim)
    assert out["encoded"].shape == (B, LE, TINY.embed_dim)
    model = meena.Meena(TINY)
    encoded = model.apply({"params": tiny_params}, ENC, method="encode")
    np.testing.assert_allclose(encoded, out["encoded"], atol=1e-6)
    decoded = model.apply({"params": tiny_params}, encoded, DEC, method="decode")
    np.testing.assert_allclose(decoded["logits"], out["logits"], atol=1e-6)
    assert np.all(np.isfinite(out["logits"]))


def test_decoder_is_strictly_causal(tiny_params):
    base = _apply(tiny_params, ENC, DEC)["logits"]
    changed = _apply(tiny_params, ENC, DEC.at[:, 6].set(DEC[:, 6] + 1))["logits"]
    np.testing.assert_allclose(changed[:, :6], base[:, :6], atol=1e-6)
    assert np.abs(changed[:, 6:] - base[:, 6:]).max(axis=-1).min() > 1e-4  # every later token


def test_encoder_is_bidirectional_and_feeds_every_decoder_position(tiny_params):
    base = _apply(tiny_params, ENC, DEC)
    changed = _apply(tiny_params, ENC.at[:, -1].set(ENC[:, -1] + 1), DEC)
    assert np.abs(changed["encoded"][:, 0] - base["encoded"][:, 0]).max() > 1e-4
    assert np.abs(changed["logits"] - base["logits"]).max(axis=-1).min() > 1e-5


def test_packed_rows_equal_padded_separate_rows(tiny_params):
    """Two examples packed in one row give the outputs of each alone in a padded row.

    Shapes equal the other tests' [2, 9] / [2, 12] (eager op caches are reused). Packing leaks
    and padding leaks would both break the equality.
    """
    e1, e2 = ENC[0, :5], ENC[1, :4]  # 5 + 4 = LE: the packed row has no padding
    d1, d2 = DEC[0, :7], DEC[1, :5]  # 7 + 5 = LD
    pad = lambda a, n: jnp.concatenate([a, jnp.zeros((n - a.shape[0],), a.dtype)])
    ones = lambda n, length: pad(jnp.ones((n,), jnp.int32), length)
    packed_row = dict(
        enc=jnp.concatenate([e1, e2]), dec=jnp.concatenate([d1, d2]),
        enc_seg=jnp.array([1] * 5 + [2] * 4), dec_seg=jnp.array([1] * 7 + [2] * 5),
        enc_pos=jnp.array([0, 1, 2, 3, 4, 0, 1, 2, 3]),
        dec_pos=jnp.array([0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4]),
    )
    rows = lambda key: jnp.stack([packed_row[key]] * 2)
    packed = _apply(tiny_params, rows("enc"), rows("dec"), encoder_segment_ids=rows("enc_seg"),
                    decoder_segment_ids=rows("dec_seg"), encoder_positions=rows("enc_pos"),
                    decoder_positions=rows("dec_pos"))["logits"][0]
    alone = _apply(
        tiny_params, jnp.stack([pad(e1, LE), pad(e2, LE)]), jnp.stack([pad(d1, LD), pad(d2, LD)]),
        encoder_segment_ids=jnp.stack([ones(5, LE), ones(4, LE)]),
        decoder_segment_ids=jnp.stack([ones(7, LD), ones(5, LD)]),
    )["logits"]
    np.testing.assert_allclose(packed[:7], alone[0, :7], atol=2e-5)
    np.testing.assert_allclose(packed[7:], alone[1, :5], atol=2e-5)
    # The pad-free call of one example agrees with its padded row.
    full = _apply(tiny_params, ENC, DEC)["logits"]
    padded = _apply(tiny_params, ENC.at[:, 6:].set(0), DEC,
                    encoder_segment_ids=jnp.stack([ones(6, LE)] * 2))["logits"]
    np.testing.assert_array_less(1e-4, np.abs(full - padded).max())  # the context did change
    unpadded = meena.Meena(TINY).apply({"params": tiny_params}, ENC[:, :6], DEC)["logits"]
    np.testing.assert_allclose(padded, unpadded, atol=2e-5)


def _decode_stepwise(params, chunks):
    model = meena.Meena(TINY)
    cache = model.init(KEY, jnp.zeros((B, LE), jnp.int32), jnp.zeros((B, LD), jnp.int32),
                       decode=True)["cache"]
    encoded = model.apply({"params": params}, ENC, method="encode")
    logits = []
    for chunk in chunks:
        out, mutated = model.apply({"params": params, "cache": cache}, encoded, chunk,
                                   method="decode", decode=True, mutable=["cache"])
        cache = mutated["cache"]
        logits.append(out["logits"])
    return jnp.concatenate(logits, axis=1), cache


def test_token_by_token_decoding_equals_the_full_call(tiny_params):
    full = _apply(tiny_params, ENC, DEC)["logits"]
    stepwise, cache = _decode_stepwise(tiny_params, [DEC[:, t : t + 1] for t in range(LD)])
    np.testing.assert_allclose(stepwise, full, atol=1e-5)
    block = cache["decoder_block_0"]
    assert block["conv_branches_inputs"].shape == (B, 10, TINY.embed_dim)
    assert block["final_conv_inputs"].shape == (B, 6, 2 * TINY.embed_dim)
    assert int(cache["decode_positions"]["cache_index"]) == LD


def test_chunked_prefill_then_single_tokens_equals_the_full_call(tiny_params):
    full = _apply(tiny_params, ENC, DEC)["logits"]
    chunks = [DEC[:, :7]] + [DEC[:, t : t + 1] for t in range(7, LD)]
    stepwise, _ = _decode_stepwise(tiny_params, chunks)
    np.testing.assert_allclose(stepwise, full, atol=1e-5)


def test_decoding_without_a_cache_is_a_clear_error(tiny_params):
    model = meena.Meena(TINY)
    encoded = model.apply({"params": tiny_params}, ENC, method="encode")
    with pytest.raises(ValueError, match="cache"):
        model.apply({"params": tiny_params}, encoded, DEC[:, :1], method="decode", decode=True,
                    mutable=["cache"])


def test_dropout_needs_and_uses_the_rng():
    config = dataclasses.replace(TINY, dropout_rate=0.3, attention_dropout=0.1,
                                 num_decoder_blocks=1)
    model = meena.Meena(config)
    params = model.init(KEY, ENC, DEC)["params"]
    run = lambda seed: model.apply({"params": params}, ENC, DEC, deterministic=False,
                                   rngs={"dropout": jax.random.key(seed)})["logits"]
    assert np.abs(run(0) - run(1)).max() > 1e-3
    np.testing.assert_allclose(run(0), run(0))


def test_every_parameter_has_logical_axis_names():
    boxed = meena.Meena(TINY).init(KEY, ENC, DEC)["params"]
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(leaf, nn.LogicallyPartitioned) for leaf in leaves)
    assert all(len(leaf.names) == leaf.value.ndim for leaf in leaves)


def test_tiny_parameter_count_matches_the_block_formula():
    """Counted by hand from the t2t layer list (E = 64, V = 512, 1 + 2 blocks, tied)."""
    e, v = TINY.embed_dim, TINY.vocab_size
    norm = lambda n: 2 * n
    dense = lambda i, o: i * o + o
    attention = 4 * e * e  # no biases
    separable = lambda k, c, f: k * c + c * f + f
    encoder = (
        norm(e) + 2 * dense(e, e)  # GLU
        + norm(e) + dense(e, 4 * e) + 3 * e * (e // 2) + e // 2  # conv branches
        + norm(4 * e) + separable(9, 4 * e, e // 2)
        + norm(e) + attention
        + norm(e) + dense(e, 4 * e) + dense(4 * e, e)
    )
    decoder = (
        norm(e) + 2 * attention
        + norm(e) + separable(11, e, 2 * e) + separable(7, e, e // 2)
        + norm(2 * e) + separable(7, 2 * e, e)
        + 2 * (norm(e) + attention)
        + norm(e) + dense(e, 4 * e) + norm(4 * e) + dense(4 * e, e)
    )
    expected = v * e + encoder + 2 * decoder + 2 * norm(e)
    assert meena.count_params(TINY) == expected


def test_meena_preset_has_about_2_6_billion_parameters():
    config = meena.PRESETS["meena"]
    assert (config.num_encoder_blocks, config.num_decoder_blocks) == (1, 13)
    assert (config.embed_dim, config.num_heads, config.vocab_size, config.max_len) == (
        2560, 32, 8000, 128)
    count = meena.count_params(config)
    print(f"meena preset: {count:,} parameters")
    assert count == 2_591_745_280  # tied embeddings, sinusoidal positions (no position table)
    shapes = meena.param_shapes(config)
    wide = shapes["decoder_block_0"]["wide_self_attention"]["query"]["kernel"]
    assert wide.shape == (2560, 32, 80)  # t2t: max(min(2 * 32, 16), 32) heads
    spec_reading = meena.param_shapes(dataclasses.replace(config, wide_heads=16))
    assert spec_reading["decoder_block_0"]["wide_self_attention"]["query"]["kernel"].shape == (
        2560, 16, 160)
    assert meena.count_params(dataclasses.replace(config, wide_heads=16)) == count
    untied = meena.count_params(dataclasses.replace(config, tie_embeddings=False))
    assert untied - count == 2560 * 8000


@pytest.mark.parametrize(
    "field, value, match",
    [("num_heads", 3, "num_heads"), ("embed_dim", 63, "embed_dim"), ("eos_id", 600, "eos_id"),
     ("dropout_rate", 1.0, "dropout_rate"), ("dtype", "int8", "dtype"),
     ("wide_heads", 3, "wide_heads")],
)
def test_config_rejects_bad_values_naming_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(TINY, **{field: value})


def test_too_long_inputs_are_a_clear_error(tiny_params):
    long = jnp.zeros((1, TINY.max_len + 1), jnp.int32)
    with pytest.raises(ValueError, match="max_len"):
        meena.Meena(TINY).apply({"params": tiny_params}, long, DEC[:1])


def test_shift_right_puts_the_start_id_first():
    targets = jnp.array([[5, 6, 1, 0]])
    np.testing.assert_array_equal(meena.shift_right(targets, 0), [[0, 5, 6, 1]])


def test_parameters_shard_on_a_data_fsdp_tensor_mesh():
    from jax.sharding import PartitionSpec as P

    from lmjax import axes
    from lmjax.train import mesh as mesh_lib

    mesh = mesh_lib.build_mesh([("data", 2), ("fsdp", 2), ("tensor", 2)])
    rules = mesh_lib.check_rules(axes.DEFAULT_RULES, mesh)
    abstract = jax.eval_shape(meena.Meena(TINY).init, KEY, ENC, DEC)["params"]
    shardings = mesh_lib.logical_shardings(abstract, mesh, rules)
    block = shardings["decoder_block_0"]
    assert block["conv_left"]["depthwise"].spec == P(None, "fsdp")
    assert block["conv_left"]["pointwise"]["kernel"].spec == P("fsdp", "tensor")
    assert block["conv_final"]["pointwise"]["kernel"].spec == P("tensor", "fsdp")
    assert shardings["encoder_block_0"]["conv_right"]["kernel"].spec == P(None, "fsdp", "tensor")
    assert shardings["token_embed"]["embedding"].spec == P("tensor", "fsdp")


def test_positions_are_tensor2tensor_timing_signal():
    """t2t get_timing_signal_1d: inverse frequencies 1e4^(-i / (E/2 - 1)), [sin..., cos...]."""
    from lmjax.layers.embeddings import sinusoidal_positions

    e, half = 8, 4
    positions = np.arange(5.0)
    inverse = 1e4 ** (-np.arange(half) / (half - 1))
    angles = positions[:, None] * inverse
    want = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
    got = sinusoidal_positions(positions, e, max_timescale=meena.t2t_max_timescale(e))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_left_padded_prefill_then_decoding_matches_the_unpadded_call(tiny_params):
    """Row 0 is prefilled behind 3 pad slots (segment 0): convs and attention must skip them."""
    pads = 3
    model = meena.Meena(TINY)
    full = _apply(tiny_params, ENC, DEC)["logits"]  # [B, LD, V]
    cache = model.init(KEY, jnp.zeros((B, LE), jnp.int32), jnp.zeros((B, LD), jnp.int32),
                       decode=True)["cache"]
    encoded = model.apply({"params": tiny_params}, ENC, method="encode")
    prompt = 5
    row0 = jnp.concatenate([jnp.zeros((pads,), jnp.int32), DEC[0, : prompt - pads]])
    chunk = jnp.stack([row0, DEC[1, :prompt]])  # row 0: 3 pads + 2 real tokens
    segments = jnp.array([[0] * pads + [1] * (prompt - pads), [1] * prompt])
    positions = jnp.array([[0] * pads + list(range(prompt - pads)), list(range(prompt))])
    out, mutated = model.apply({"params": tiny_params, "cache": cache}, encoded, chunk,
                               decoder_segment_ids=segments, decoder_positions=positions,
                               method="decode", decode=True, mutable=["cache"])
    np.testing.assert_allclose(out["logits"][0, pads:], full[0, : prompt - pads], atol=1e-5)
    np.testing.assert_allclose(out["logits"][1], full[1, :prompt], atol=1e-5)
    # One more token each: row 0 continues at position 2, row 1 at position 5.
    step = jnp.stack([DEC[0, prompt - pads], DEC[1, prompt]])[:, None]
    out, _ = model.apply({"params": tiny_params, "cache": mutated["cache"]}, encoded, step,
                         decoder_positions=jnp.array([[prompt - pads], [prompt]]),
                         method="decode", decode=True, mutable=["cache"])
    np.testing.assert_allclose(out["logits"][0, 0], full[0, prompt - pads], atol=1e-5)
    np.testing.assert_allclose(out["logits"][1, 0], full[1, prompt], atol=1e-5)
