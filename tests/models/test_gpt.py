"""GPT: forward against a jnp reference, layouts, axes, dtypes, packing and KV-cache decoding."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import axes
from lmjax.models import gpt

KEY = jax.random.key(0)
SMALL = dict(vocab_size=32, max_len=16, num_layers=2, embed_dim=16, num_heads=2, mlp_dim=32)
GPT2_SMALL = dataclasses.replace(gpt.PRESETS["tiny"], **SMALL)
GPT1_SMALL = dataclasses.replace(gpt.PRESETS["gpt1-tiny"], **SMALL)
GPT3_SMALL = dataclasses.replace(gpt.PRESETS["gpt3-tiny"], **SMALL, local_window=3)
B, L = 2, 10
IDS = jax.random.randint(jax.random.key(1), (B, L), 0, 32)


def _init(config):
    return nn.unbox(gpt.GPT(config).init(KEY, IDS)["params"])


def reference_logits(config, params, ids):
    """GPT written out with jnp from the unscanned parameter tree (GPT-1 and GPT-2 formulas)."""

    def norm(q, h):
        mean = h.mean(-1, keepdims=True)
        var = ((h - mean) ** 2).mean(-1, keepdims=True)
        return (h - mean) / jnp.sqrt(var + config.layer_norm_eps) * q["scale"] + q["bias"]

    def attention(q, h):
        proj = lambda n: jnp.einsum("ble,ehd->blhd", h, q[n]["kernel"]) + q[n]["bias"]
        logits = jnp.einsum("bqhd,bkhd->bhqk", proj("query"), proj("key"))
        logits = logits / np.sqrt(config.head_dim)
        causal = np.tril(np.ones((h.shape[1], h.shape[1]), bool))
        weights = jax.nn.softmax(jnp.where(causal, logits, -1e30), axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, proj("value"))
        return jnp.einsum("blhd,hde->ble", out, q["out"]["kernel"]) + q["out"]["bias"]

    def mlp(q, h):
        h = jax.nn.gelu(h @ q["wi"]["kernel"] + q["wi"]["bias"], approximate=True)
        return h @ q["wo"]["kernel"] + q["wo"]["bias"]

    table = params["token_embed"]["embedding"]
    x = table[ids] + params["position_embed"]["embedding"][jnp.arange(ids.shape[1])]
    for i in range(config.num_layers):
        p = params["decoder"][f"layers_{i}"]
        if config.norm == "pre":
            x = x + attention(p["attention"], norm(p["attention_norm"], x))
            x = x + mlp(p["mlp"], norm(p["mlp_norm"], x))
        else:
            x = norm(p["attention_norm"], x + attention(p["attention"], x))
            x = norm(p["mlp_norm"], x + mlp(p["mlp"], x))
    if config.final_norm:
        x = norm(params["final_norm"], x)
    return x @ table.T


@pytest.mark.parametrize("config", [GPT2_SMALL, GPT1_SMALL], ids=["gpt2", "gpt1"])
def test_forward_matches_reference(config):
    config = dataclasses.replace(config, scan_layers=False)
    params = _init(config)
    assert ("final_norm" in params) == config.final_norm
    out = gpt.GPT(config).apply({"params": params}, IDS)
    assert set(out) == {"logits", "hidden"}
    assert out["logits"].shape == (B, L, 32) and out["logits"].dtype == jnp.float32
    assert out["hidden"].shape == (B, L, 16)
    np.testing.assert_allclose(out["logits"], reference_logits(config, params, IDS), atol=1e-4)


@pytest.fixture(scope="module")
def gpt2_unscanned():
    config = dataclasses.replace(GPT2_SMALL, scan_layers=False)
    params = _init(config)
    return config, params, gpt.GPT(config).apply({"params": params}, IDS)["logits"]


def test_scanned_layout_gives_identical_logits(gpt2_unscanned):
    config, params, logits = gpt2_unscanned
    scanned_config = dataclasses.replace(config, scan_layers=True)
    scanned = gpt.to_scanned_layout(params, config.num_layers)
    shapes = jax.tree_util.tree_map(lambda a: a.shape, gpt.param_shapes(scanned_config))
    assert jax.tree_util.tree_map(lambda a: a.shape, scanned) == shapes
    out = gpt.GPT(scanned_config).apply({"params": scanned}, IDS)["logits"]
    np.testing.assert_allclose(out, logits, rtol=1e-6, atol=1e-6)
    back = gpt.to_unscanned_layout(scanned)
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, params)


@pytest.mark.parametrize("scan", [True, False])
def test_every_parameter_has_logical_axes_of_its_rank(scan):
    config = dataclasses.replace(GPT3_SMALL, scan_layers=scan)
    boxed = jax.eval_shape(lambda: gpt.GPT(config).init(KEY, IDS))["params"]
    leaves = jax.tree_util.tree_flatten_with_path(
        boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
    )[0]
    assert len(leaves) == (20 if scan else 2 * 16 + 4)
    for path, leaf in leaves:
        assert isinstance(leaf, nn.LogicallyPartitioned), path
        assert len(leaf.names) == leaf.value.ndim, path
        assert all(name in axes.ALL for name in leaf.names), (path, leaf.names)
        assert (leaf.names[0] == axes.LAYERS) == (scan and "decoder" in str(path)), path
    specs = nn.get_partition_spec(boxed)
    assert specs["token_embed"]["embedding"] == jax.sharding.PartitionSpec(axes.VOCAB, axes.EMBED)


def test_bfloat16_compute_keeps_float32_logits_and_params(gpt2_unscanned):
    config, params, logits = gpt2_unscanned
    bf16 = gpt.GPT(dataclasses.replace(config, dtype="bfloat16"))
    out = jax.jit(bf16.apply)({"params": params}, IDS)
    assert out["logits"].dtype == jnp.float32 and out["hidden"].dtype == jnp.bfloat16
    np.testing.assert_allclose(out["logits"], logits, atol=0.1)  # bf16 rounding only
    shapes = gpt.param_shapes(dataclasses.replace(config, dtype="bfloat16"))
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(shapes))
    stored = gpt.param_shapes(dataclasses.replace(config, param_dtype="bfloat16"))
    assert all(p.dtype == jnp.bfloat16 for p in jax.tree_util.tree_leaves(stored))


def test_initialisation_stds(gpt2_unscanned):
    # 512-sample estimates of each std are within ~10% (3 sigma): enough to tell 0.01 from 0.02.
    _, params, _ = gpt2_unscanned
    std = lambda a: float(jnp.std(a))
    assert abs(std(params["token_embed"]["embedding"]) - 0.02) < 0.002
    assert abs(std(params["position_embed"]["embedding"]) - 0.01) < 0.0015
    layer = params["decoder"]["layers_0"]
    assert abs(std(layer["mlp"]["wi"]["kernel"]) - 0.02) < 0.002
    # Residual scaling: 0.02 / sqrt(2 * 2 layers) = 0.01 on the attention-out and MLP-out kernels.
    assert abs(std(layer["mlp"]["wo"]["kernel"]) - 0.01) < 0.001
    assert abs(std(layer["attention"]["out"]["kernel"]) - 0.01) < 0.0015
    assert float(jnp.abs(layer["mlp"]["wo"]["bias"]).max()) == 0.0
    assert float(jnp.abs(layer["attention_norm"]["scale"] - 1).max()) == 0.0


def test_packed_documents_do_not_see_each_other(gpt2_unscanned):
    config, params, _ = gpt2_unscanned
    model = gpt.GPT(config)
    segments = jnp.array([[1] * 4 + [2] * 6, [1] * 10])
    positions = jnp.array([list(range(4)) + list(range(6)), list(range(10))])
    packed = model.apply({"params": params}, IDS, positions=positions, segment_ids=segments)
    alone = model.apply({"params": params}, IDS[:1, 4:])  # document 2 of row 0 on its own
    np.testing.assert_allclose(packed["logits"][0, 4:], alone["logits"][0], atol=1e-5)
    ignored = model.apply({"params": params}, IDS)
    assert not np.allclose(packed["logits"][0, 4:], ignored["logits"][0, 4:], atol=1e-3)


def test_dropout_needs_rng_and_is_off_when_deterministic(gpt2_unscanned):
    config, params, logits = gpt2_unscanned
    model = gpt.GPT(config)
    noisy = model.apply({"params": params}, IDS, deterministic=False, rngs={"dropout": KEY})
    assert not np.allclose(noisy["logits"], logits, atol=1e-4)
    with pytest.raises(Exception, match="dropout"):
        model.apply({"params": params}, IDS, deterministic=False)


def test_input_errors(gpt2_unscanned):
    config, params, _ = gpt2_unscanned
    model = gpt.GPT(config)
    with pytest.raises(ValueError, match="max_len=16"):
        model.apply({"params": params}, jnp.zeros((1, 17), jnp.int32))
    with pytest.raises(ValueError, match="KV cache of 17 slots"):
        model.init(KEY, jnp.zeros((1, 17), jnp.int32), decode=True)
    with pytest.raises(ValueError, match="batch, length"):
        model.apply({"params": params}, jnp.zeros((17,), jnp.int32))
    with pytest.raises(ValueError, match="not divisible"):
        dataclasses.replace(config, num_heads=3)


@pytest.mark.parametrize("scan", [True, False])
def test_alternating_pattern_restricts_odd_layers_to_the_band(scan):
    config = dataclasses.replace(GPT3_SMALL, scan_layers=False, num_layers=4)
    assert config.layer_windows() == (0, 3, 0, 3)
    params = _init(config)
    if scan:
        config = dataclasses.replace(config, scan_layers=True)
        params = gpt.to_scanned_layout(params, 4)
    model = gpt.GPT(config)
    apply = lambda p, x: model.apply({"params": p}, x, mutable=["intermediates"])[1]
    stack = (jax.jit(apply) if scan else apply)(params, IDS)["intermediates"]["decoder"]
    if scan:
        weights = stack["layers"]["attention"]["attention_weights"][0]  # [N, B, H, L, L]
    else:
        weights = jnp.stack(
            [stack[f"layers_{i}"]["attention"]["attention_weights"][0] for i in range(4)]
        )
    distance = np.arange(L)[:, None] - np.arange(L)[None, :]
    outside_band = distance >= 3
    for layer in range(4):
        far = np.asarray(weights[layer])[..., outside_band]
        if layer % 2:
            assert np.all(far == 0), f"local layer {layer} attends beyond its band"
        else:
            assert np.all(far > 0), f"dense layer {layer} should see every earlier key"


def _decode(model, params, ids, chunks, segment_ids=None, positions=None):
    """Prefills / steps through ``ids`` in ``chunks`` with one jitted apply (one trace per size)."""
    cache = jax.eval_shape(lambda: model.init(KEY, jnp.zeros(ids.shape, jnp.int32), decode=True))
    cache = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), cache["cache"])

    @jax.jit
    def step(cache, chunk, positions, segment_ids):
        out, mutated = model.apply(
            {"params": params, "cache": cache},
            chunk,
            positions=positions,
            segment_ids=segment_ids,
            decode=True,
            mutable=["cache"],
        )
        return out["logits"], mutated["cache"]

    outs, start = [], 0
    for size in chunks:
        pieces = [None if a is None else a[:, start : start + size] for a in (ids, positions)]
        segments = None if segment_ids is None else segment_ids[:, start : start + size]
        logits, cache = step(cache, *pieces, segments)
        outs.append(logits)
        start += size
    assert int(cache["cache_index"]) == ids.shape[1]
    return jnp.concatenate(outs, axis=1)


def test_decode_init_gives_a_zero_cache_sized_for_the_dummy(gpt2_unscanned):
    config, _, _ = gpt2_unscanned
    variables = gpt.GPT(config).init(KEY, jnp.zeros((B, L), jnp.int32), decode=True)
    cache = variables["cache"]
    assert cache["decoder"]["layers_1"]["attention"]["cached_key"].shape == (B, L, 2, 8)
    assert cache["decoder"]["layers_1"]["attention"]["cached_segment_ids"].shape == (B, L)
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree_util.tree_leaves(cache))


@pytest.mark.parametrize(
    "config",
    [GPT2_SMALL, dataclasses.replace(GPT1_SMALL, scan_layers=False), GPT3_SMALL],
    ids=["gpt2-scanned", "gpt1-unscanned", "gpt3-alternating"],
)
def test_prefill_then_token_by_token_equals_full_forward(config):
    params = _init(dataclasses.replace(config, scan_layers=False))
    full = gpt.GPT(dataclasses.replace(config, scan_layers=False)).apply({"params": params}, IDS)
    if config.scan_layers:
        params = gpt.to_scanned_layout(params, config.num_layers)
    decoded = _decode(gpt.GPT(config), params, IDS, chunks=(4, 1, 1, 3, 1))
    full = full["logits"]
    np.testing.assert_allclose(decoded, full, atol=1e-5)


def test_left_padded_prompts_decode_like_the_full_forward(gpt2_unscanned):
    config, params, _ = gpt2_unscanned
    model = gpt.GPT(config)
    # Row 0: a 3-token prompt left-padded to 5; row 1: a 5-token prompt. Then 5 more tokens.
    prompt_mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    segments = jnp.concatenate([prompt_mask, jnp.ones((B, 5), jnp.int32)], axis=1)
    positions = jnp.maximum(jnp.cumsum(segments, axis=1) - 1, 0)
    full = model.apply({"params": params}, IDS, positions=positions, segment_ids=segments)
    decoded = _decode(
        model, params, IDS, chunks=(5, 1, 1, 3), segment_ids=segments, positions=positions
    )
    real = np.asarray(segments) != 0
    np.testing.assert_allclose(
        np.asarray(decoded)[real], np.asarray(full["logits"])[real], atol=1e-5
    )


def test_sharded_forward_under_default_rules(gpt2_unscanned):
    config, params, logits = gpt2_unscanned
    config = dataclasses.replace(config, scan_layers=True)
    model = gpt.GPT(config)
    mesh = jax.sharding.Mesh(
        np.array(jax.devices()[:4]).reshape(1, 2, 2), ("data", "fsdp", "tensor")
    )
    abstract = jax.eval_shape(model.init, KEY, IDS)["params"]
    shardings = nn.logical_to_mesh_sharding(
        nn.get_partition_spec(abstract), mesh, axes.DEFAULT_RULES
    )
    P = jax.sharding.PartitionSpec
    assert shardings["token_embed"]["embedding"].spec == P("tensor", "fsdp")
    query = shardings["decoder"]["layers"]["attention"]["query"]["kernel"]
    assert query.spec == P(None, "fsdp", "tensor", None)
    with jax.set_mesh(mesh), nn.logical_axis_rules(axes.DEFAULT_RULES):
        out = jax.jit(model.apply)({"params": gpt.to_scanned_layout(params, 2)}, IDS)
    expected = jax.sharding.NamedSharding(mesh, P(("data", "fsdp"), None, "tensor"))
    assert out["logits"].sharding.is_equivalent_to(expected, 3)
    np.testing.assert_allclose(out["logits"], logits, atol=1e-5)
