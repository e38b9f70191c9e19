"""Tests of lmjax.models.albert: presets and counts, shared layer groups, axes, heads, masks."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

# The reference is a test-only dependency (pyproject [test] extra): missing is an error, not a skip.
import torch  # noqa: E402
import transformers  # noqa: E402

from lmjax import axes, models  # noqa: E402
from lmjax.models import albert  # noqa: E402

SMALL = dataclasses.replace(
    albert.PRESETS["tiny"],
    vocab_size=64,
    max_len=16,
    embedding_size=8,
    num_layers=4,
    num_groups=1,
    embed_dim=32,
    num_heads=4,
    mlp_dim=48,
    scan_layers=False,
)
# Paper (Lan et al. 2019, Table 1) sizes of base / large / xlarge; xxlarge is stated as 235M there
# but the released model has 223M (HF model card and google-research/albert's hub module), which
# is what we compare with.
PUBLISHED = {"base": 12e6, "large": 18e6, "xlarge": 60e6, "xxlarge": 223e6}


def _hf_count(preset: albert.ALBERTConfig, heads: bool) -> int:
    """HF's parameter count (tied weights counted once), built on the 'meta' device."""
    config = transformers.AlbertConfig(
        vocab_size=preset.vocab_size,
        embedding_size=preset.embedding_size,
        hidden_size=preset.embed_dim,
        num_hidden_layers=preset.num_layers,
        num_hidden_groups=preset.num_groups,
        num_attention_heads=preset.num_heads,
        intermediate_size=preset.mlp_dim,
        max_position_embeddings=preset.max_len,
        type_vocab_size=preset.type_vocab_size,
    )
    with torch.device("meta"):
        if heads:
            model = transformers.AlbertForPreTraining(config)
        else:
            model = transformers.AlbertModel(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["base", "large", "xlarge", "xxlarge"])
def test_presets_count_exactly_what_hf_counts_and_match_published_sizes(name):
    preset = albert.PRESETS[name]
    count = albert.count_params(preset)
    assert count == _hf_count(preset, heads=True)
    assert abs(count / PUBLISHED[name] - 1) < 0.02, count
    encoder = dataclasses.replace(preset, mlm_head=False, sop_head=False)
    assert albert.count_params(encoder) == _hf_count(preset, heads=False)


def test_preset_shapes_are_the_v2_configs():
    shapes = {
        n: (c.num_layers, c.embed_dim, c.num_heads, c.mlp_dim)
        for n, c in albert.PRESETS.items()
        if n != "tiny"
    }
    assert shapes == {
        "base": (12, 768, 12, 3072),
        "large": (24, 1024, 16, 4096),
        "xlarge": (24, 2048, 16, 8192),
        "xxlarge": (12, 4096, 64, 16384),
    }
    for name in shapes:
        c = albert.PRESETS[name]
        assert (c.vocab_size, c.embedding_size, c.num_groups, c.activation) == (
            30000, 128, 1, "gelu_tanh",
        )
        assert (c.hidden_dropout, c.attention_dropout, c.layer_norm_eps) == (0.0, 0.0, 1e-12)
    tiny = albert.PRESETS["tiny"]
    assert (tiny.vocab_size, tiny.max_len, tiny.embedding_size, tiny.num_layers) == (
        2048, 128, 64, 2,
    )
    assert (tiny.embed_dim, tiny.num_heads, tiny.mlp_dim) == (128, 2, 512)


def _encoder_shapes(config):
    return jax.tree.map(lambda x: x.shape, albert.param_shapes(config)["encoder"])


@pytest.mark.parametrize("scan_layers", [True, False])
def test_layer_groups_hold_one_parameter_set_each(scan_layers):
    one = _encoder_shapes(dataclasses.replace(SMALL, num_groups=1, scan_layers=scan_layers))
    assert set(one) == {"layers_0"}
    assert one["layers_0"]["mlp"]["wi"]["kernel"] == (32, 48)  # no layer axis
    two = _encoder_shapes(dataclasses.replace(SMALL, num_groups=2, scan_layers=scan_layers))
    assert set(two) == {"layers_0", "layers_1"}
    assert two["layers_1"]["attention"]["query"]["kernel"] == (32, 4, 8)
    unshared = _encoder_shapes(dataclasses.replace(SMALL, num_groups=4, scan_layers=scan_layers))
    if scan_layers:
        assert set(unshared) == {"layers"}
        assert unshared["layers"]["mlp"]["wi"]["kernel"] == (4, 32, 48)
    else:
        assert set(unshared) == {f"layers_{i}" for i in range(4)}
    # depth is free with one group: 4 and 12 layers have the same parameter count
    deep = dataclasses.replace(SMALL, num_layers=12)
    assert albert.count_params(deep) == albert.count_params(SMALL)
    two_groups = albert.count_params(dataclasses.replace(SMALL, num_groups=2))
    one_block = sum(
        int(np.prod(s)) for s in jax.tree.leaves(one, is_leaf=lambda x: isinstance(x, tuple))
    )
    assert one_block == 4 * (32 * 32 + 32) + 2 * 32 * 48 + 48 + 32 + 2 * 2 * 32
    assert two_groups - albert.count_params(SMALL) == one_block


def _init(config, length=8, seed=0):
    model = albert.ALBERT(config)
    params = model.init(jax.random.key(seed), jnp.zeros((2, length), jnp.int32))["params"]
    return model, nn.unbox(params)


def _ids(batch=2, length=8, vocab=64, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(1, vocab, (batch, length)), jnp.int32)


def test_a_shared_group_computes_the_layer_applied_num_layers_times():
    model, params = _init(SMALL)
    unshared_config = dataclasses.replace(SMALL, num_groups=SMALL.num_layers)
    shared_layer = params["encoder"]["layers_0"]
    unshared = dict(params, encoder={f"layers_{i}": shared_layer for i in range(4)})
    ids = _ids()
    a = model.apply({"params": params}, ids)
    b = albert.ALBERT(unshared_config).apply({"params": unshared}, ids)
    np.testing.assert_allclose(a["hidden"], b["hidden"], atol=1e-5)
    # ...and with two groups, layers 0-1 use group 0 and layers 2-3 group 1.
    grouped_config = dataclasses.replace(SMALL, num_groups=2)
    grouped_model, grouped = _init(grouped_config, seed=1)
    g0, g1 = grouped["encoder"]["layers_0"], grouped["encoder"]["layers_1"]
    as_unshared = dict(grouped, encoder=dict(layers_0=g0, layers_1=g0, layers_2=g1, layers_3=g1))
    a = grouped_model.apply({"params": grouped}, ids)
    b = albert.ALBERT(unshared_config).apply({"params": as_unshared}, ids)
    np.testing.assert_allclose(a["hidden"], b["hidden"], atol=1e-5)
    scanned = dataclasses.replace(grouped_config, scan_layers=True)
    c = albert.ALBERT(scanned).apply({"params": grouped}, ids)
    np.testing.assert_allclose(a["logits"], c["logits"], atol=1e-5)


def test_every_parameter_has_one_known_logical_axis_per_dimension():
    config = dataclasses.replace(SMALL, num_groups=4, scan_layers=True)
    variables = jax.eval_shape(
        lambda k: albert.ALBERT(config).init(k, jnp.zeros((1, 4), jnp.int32)), jax.random.key(0)
    )
    leaves = jax.tree_util.tree_leaves_with_path(
        variables["params"], is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
    )
    assert len(leaves) > 20
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path)
        assert isinstance(leaf, nn.LogicallyPartitioned), name
        assert len(leaf.names) == leaf.value.ndim, name
        assert all(n in axes.ALL for n in leaf.names), (name, leaf.names)
    names = {jax.tree_util.keystr(p): leaf.names for p, leaf in leaves}
    assert names["['token_embed']['embedding']"] == (axes.VOCAB, axes.FACTOR)
    assert names["['token_embed']['projection']['kernel']"] == (axes.FACTOR, axes.EMBED)
    assert names["['position_embed']['embedding']"] == (axes.POSITION, axes.FACTOR)
    assert names["['type_embed']['embedding']"] == (axes.TYPE, axes.FACTOR)
    assert names["['mlm_transform']['kernel']"] == (axes.EMBED, axes.FACTOR)
    assert names["['sop']['kernel']"] == (axes.EMBED, axes.CLASSES)
    assert names["['encoder']['layers']['mlp']['wi']['kernel']"] == (
        axes.LAYERS, axes.EMBED, axes.MLP,
    )


def test_outputs_shapes_dtypes_and_tied_decoder():
    model, params = _init(SMALL)
    assert params["token_embed"]["embedding"].shape == (64, 8)  # [V, M]
    assert params["mlm_transform"]["kernel"].shape == (32, 8)  # [E, M]
    ids = _ids()
    out = model.apply({"params": params}, ids)
    assert set(out) == {"hidden", "pooled", "logits", "sop_logits"}
    assert out["hidden"].shape == (2, 8, 32) and out["pooled"].shape == (2, 32)
    assert out["logits"].shape == (2, 8, 64) and out["logits"].dtype == jnp.float32
    assert out["sop_logits"].shape == (2, 2) and out["sop_logits"].dtype == jnp.float32
    # the pooler reads the first token
    np.testing.assert_allclose(
        out["pooled"],
        np.tanh(out["hidden"][:, 0] @ params["pooler"]["kernel"] + params["pooler"]["bias"]),
        atol=1e-5,
    )
    # the decoder is tied to the [V, M] table: changing only the rows' scale changes the logits
    rescaled = jax.tree.map(lambda x: x, params)
    rescaled["token_embed"]["embedding"] = params["token_embed"]["embedding"].at[:, 0].mul(3.0)
    first = model.apply({"params": rescaled}, ids)
    assert np.max(np.abs(out["logits"] - first["logits"])) > 1e-3

    encoder_only = dataclasses.replace(SMALL, pooler=False, mlm_head=False, sop_head=False)
    model, params = _init(encoder_only)
    assert set(model.apply({"params": params}, ids)) == {"hidden"}
    assert set(params) == {"token_embed", "position_embed", "type_embed", "embed_norm", "encoder"}

    model, params = _init(dataclasses.replace(SMALL, dtype="bfloat16"))
    out = model.apply({"params": params}, ids)
    assert out["logits"].dtype == jnp.float32 and out["hidden"].dtype == jnp.bfloat16


def test_attention_mask_hides_padded_keys_and_types_matter():
    model, params = _init(SMALL)
    ids = jnp.asarray([[5, 6, 7, 8, 0, 0, 0, 0]], jnp.int32)
    mask = jnp.asarray([[1, 1, 1, 1, 0, 0, 0, 0]], jnp.int32)
    padded = model.apply({"params": params}, ids, attention_mask=mask)
    short = model.apply({"params": params}, ids[:, :4])
    np.testing.assert_allclose(padded["hidden"][:, :4], short["hidden"], atol=1e-5)
    np.testing.assert_allclose(padded["sop_logits"], short["sop_logits"], atol=1e-5)
    types = jnp.asarray([[0, 0, 1, 1]], jnp.int32)
    typed = model.apply({"params": params}, ids[:, :4], token_type_ids=types)
    assert np.max(np.abs(typed["hidden"] - short["hidden"])) > 1e-3


def test_dropout_is_active_only_when_not_deterministic():
    model, params = _init(dataclasses.replace(SMALL, hidden_dropout=0.1))
    ids = _ids()
    train = dict(deterministic=False)
    a = model.apply({"params": params}, ids, rngs={"dropout": jax.random.key(1)}, **train)
    b = model.apply({"params": params}, ids, rngs={"dropout": jax.random.key(2)}, **train)
    c = model.apply({"params": params}, ids)
    assert np.max(np.abs(a["hidden"] - b["hidden"])) > 1e-3
    np.testing.assert_array_equal(c["hidden"], model.apply({"params": params}, ids)["hidden"])


def test_registry_and_config_validation():
    model = models.build(models.config_dict("albert", "tiny", num_layers=3))
    assert isinstance(model, albert.ALBERT) and model.config.num_layers == 3
    assert {"tiny", "base", "large", "xlarge", "xxlarge"} <= set(models.presets("albert"))
    with pytest.raises(ValueError, match="num_groups=5 exceeds num_layers=4"):
        albert.ALBERTConfig(num_layers=4, num_groups=5)
    with pytest.raises(ValueError, match="num_groups=0 must be positive"):
        albert.ALBERTConfig(num_groups=0)
    with pytest.raises(ValueError, match="sop_head=True needs pooler=True"):
        albert.ALBERTConfig(pooler=False)
    with pytest.raises(ValueError, match="not divisible"):
        albert.ALBERTConfig(embed_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="embedding_size=0 must be positive"):
        albert.ALBERTConfig(embedding_size=0)
    with pytest.raises(ValueError, match="activation"):
        albert.ALBERTConfig(activation="gelu_new")  # HF's name; lmjax calls it 'gelu_tanh'
    with pytest.raises(ValueError, match="hidden_dropout=1.0"):
        albert.ALBERTConfig(hidden_dropout=1.0)
    model, params = _init(SMALL)
    with pytest.raises(ValueError, match="exceeds max_len=16"):
        model.apply({"params": params}, jnp.zeros((1, 17), jnp.int32))
    with pytest.raises(ValueError, match=r"inputs \[batch, length\]"):
        model.apply({"params": params}, jnp.zeros((17,), jnp.int32))
