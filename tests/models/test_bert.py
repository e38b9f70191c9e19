"""Tests of lmjax.models.bert: presets, parameter tree and axes, masks, positions, layouts."""

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
from lmjax.models import bert  # noqa: E402

# Unrolled layers: eager applies of a scanned stack retrace the scan on every call (slow on CPU);
# the scanned layout is covered by the layout and axes tests.
SMALL = dataclasses.replace(
    bert.PRESETS["tiny"],
    vocab_size=64,
    max_len=16,
    embed_dim=32,
    num_heads=4,
    mlp_dim=48,
    scan_layers=False,
)


def _hf_count(preset: bert.BERTConfig, roberta: bool) -> int:
    """HF's parameter count (tied weights counted once), built on the 'meta' device."""
    common = dict(
        vocab_size=preset.vocab_size,
        hidden_size=preset.embed_dim,
        num_hidden_layers=preset.num_layers,
        num_attention_heads=preset.num_heads,
        intermediate_size=preset.mlp_dim,
        max_position_embeddings=preset.max_len,
        type_vocab_size=preset.type_vocab_size,
    )
    with torch.device("meta"):
        if roberta:
            model = transformers.RobertaForMaskedLM(transformers.RobertaConfig(**common))
        else:
            model = transformers.BertForPreTraining(transformers.BertConfig(**common))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["mini", "small", "medium", "base", "large"])
def test_bert_presets_count_exactly_what_hf_bert_for_pretraining_counts(name):
    assert bert.count_params(bert.PRESETS[name]) == _hf_count(bert.PRESETS[name], roberta=False)


@pytest.mark.parametrize("name", ["roberta-base", "roberta-large"])
def test_roberta_presets_count_exactly_what_hf_roberta_for_masked_lm_counts(name):
    assert bert.count_params(bert.PRESETS[name]) == _hf_count(bert.PRESETS[name], roberta=True)


def test_preset_sizes_match_the_papers():
    assert abs(bert.count_params(bert.PRESETS["base"]) / 110e6 - 1) < 0.02
    assert abs(bert.count_params(bert.PRESETS["large"]) / 340e6 - 1) < 0.02
    base, roberta = bert.PRESETS["base"], bert.PRESETS["roberta-base"]
    assert (base.num_layers, base.embed_dim, base.num_heads, base.layer_norm_eps) == (
        12, 768, 12, 1e-12,
    )
    assert (roberta.vocab_size, roberta.max_len, roberta.type_vocab_size) == (50265, 514, 1)
    assert (roberta.layer_norm_eps, roberta.nsp_head, roberta.position_convention) == (
        1e-5, False, "fairseq",
    )
    mini, small, medium = (bert.PRESETS[n] for n in ("mini", "small", "medium"))
    assert [(c.num_layers, c.embed_dim) for c in (mini, small, medium)] == [
        (4, 256), (4, 512), (8, 512),
    ]


@pytest.mark.parametrize("scan_layers", [True, False])
def test_every_parameter_has_one_known_logical_axis_per_dimension(scan_layers):
    config = dataclasses.replace(SMALL, scan_layers=scan_layers)
    variables = jax.eval_shape(
        lambda k: bert.BERT(config).init(k, jnp.zeros((1, 4), jnp.int32)), jax.random.key(0)
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
    assert names["['nsp']['kernel']"] == (axes.EMBED, axes.CLASSES)
    assert names["['mlm_bias']"] == (axes.VOCAB,)
    assert names["['type_embed']['embedding']"] == (axes.TYPE, axes.EMBED)


def _init(config, length=8, seed=0):
    model = bert.BERT(config)
    params = model.init(jax.random.key(seed), jnp.zeros((2, length), jnp.int32))["params"]
    return model, nn.unbox(params)


def test_outputs_shapes_dtypes_and_heads():
    model, params = _init(SMALL)
    ids = jnp.arange(16, dtype=jnp.int32).reshape(2, 8)
    out = model.apply({"params": params}, ids)
    assert out["hidden"].shape == (2, 8, 32) and out["pooled"].shape == (2, 32)
    assert out["logits"].shape == (2, 8, 64) and out["logits"].dtype == jnp.float32
    assert out["nsp_logits"].shape == (2, 2) and out["nsp_logits"].dtype == jnp.float32
    # the MLM decoder is tied: changing the token table changes the logits of a fixed input
    params2 = jax.tree.map(lambda x: x, params)
    params2["token_embed"]["embedding"] = params["token_embed"]["embedding"] * 2.0
    out2 = model.apply({"params": params2}, ids)
    assert not np.allclose(out["logits"], out2["logits"], atol=1e-3)

    encoder_only = dataclasses.replace(SMALL, pooler=False, mlm_head=False, nsp_head=False)
    model, params = _init(encoder_only)
    assert set(model.apply({"params": params}, ids)) == {"hidden"}
    assert set(params) == {"token_embed", "position_embed", "type_embed", "embed_norm", "encoder"}

    bf16 = dataclasses.replace(SMALL, dtype="bfloat16")
    model, params = _init(bf16)
    out = model.apply({"params": params}, ids)
    assert out["logits"].dtype == jnp.float32 and out["hidden"].dtype == jnp.bfloat16


def test_scanned_and_unscanned_layouts_give_the_same_outputs():
    scanned = dataclasses.replace(SMALL, scan_layers=True)
    model, params = _init(scanned)
    unscanned = bert.to_unscanned_layout(params)
    assert "layers_1" in unscanned["encoder"]
    ids = jnp.arange(16, dtype=jnp.int32).reshape(2, 8) % 64
    a = model.apply({"params": params}, ids)
    b = bert.BERT(SMALL).apply({"params": unscanned}, ids)
    np.testing.assert_allclose(a["logits"], b["logits"], atol=1e-5)
    rescanned = bert.to_scanned_layout(unscanned, SMALL.num_layers)
    assert jax.tree.map(np.shape, rescanned) == jax.tree.map(np.shape, params)


def test_segment_ids_keep_packed_documents_apart():
    model, params = _init(SMALL)
    rng = np.random.default_rng(0)
    doc_a, doc_b = rng.integers(1, 64, 5), rng.integers(1, 64, 3)
    packed = jnp.asarray(np.concatenate([doc_a, doc_b])[None], jnp.int32)  # [1, 8]
    segments = jnp.asarray([[1] * 5 + [2] * 3], jnp.int32)
    positions = jnp.asarray([[0, 1, 2, 3, 4, 0, 1, 2]], jnp.int32)
    out = model.apply({"params": params}, packed, positions=positions, segment_ids=segments)
    alone = model.apply({"params": params}, jnp.asarray(doc_b[None], jnp.int32))
    np.testing.assert_allclose(out["hidden"][0, 5:], alone["hidden"][0], atol=1e-5)
    mixed = model.apply({"params": params}, packed, positions=positions)
    assert np.max(np.abs(mixed["hidden"][0, 5:] - alone["hidden"][0])) > 1e-3


def test_attention_mask_hides_padded_keys():
    model, params = _init(SMALL)
    ids = jnp.asarray([[5, 6, 7, 8, 0, 0, 0, 0]], jnp.int32)
    mask = jnp.asarray([[1, 1, 1, 1, 0, 0, 0, 0]], jnp.int32)
    padded = model.apply({"params": params}, ids, attention_mask=mask)
    short = model.apply({"params": params}, ids[:, :4])
    np.testing.assert_allclose(padded["hidden"][:, :4], short["hidden"], atol=1e-5)
    np.testing.assert_allclose(padded["nsp_logits"], short["nsp_logits"], atol=1e-5)


def test_fairseq_positions_and_default_positions():
    ids = jnp.asarray([[0, 5, 6, 2, 1, 1], [0, 7, 1, 8, 2, 1]], jnp.int32)
    np.testing.assert_array_equal(
        bert.fairseq_positions(ids, 1), [[2, 3, 4, 5, 1, 1], [2, 3, 1, 4, 5, 1]]
    )
    roberta = dataclasses.replace(
        SMALL, position_convention="fairseq", pad_token_id=1, type_vocab_size=1, max_len=10
    )
    model, params = _init(roberta, length=6)
    implicit = model.apply({"params": params}, ids)
    explicit = model.apply({"params": params}, ids, positions=bert.fairseq_positions(ids, 1))
    arange = model.apply({"params": params}, ids, positions=jnp.broadcast_to(jnp.arange(6), (2, 6)))
    np.testing.assert_allclose(implicit["hidden"], explicit["hidden"], atol=1e-6)
    assert np.max(np.abs(implicit["hidden"] - arange["hidden"])) > 1e-3
    with pytest.raises(ValueError, match="fairseq positions"):
        model.apply({"params": params}, jnp.full((1, 9), 5, jnp.int32))


def test_dropout_is_active_only_when_not_deterministic():
    model, params = _init(SMALL)
    ids = jnp.arange(16, dtype=jnp.int32).reshape(2, 8)
    kwargs = dict(deterministic=False)
    a = model.apply({"params": params}, ids, rngs={"dropout": jax.random.key(1)}, **kwargs)
    b = model.apply({"params": params}, ids, rngs={"dropout": jax.random.key(2)}, **kwargs)
    c = model.apply({"params": params}, ids)
    d = model.apply({"params": params}, ids)
    assert np.max(np.abs(a["hidden"] - b["hidden"])) > 1e-3
    np.testing.assert_array_equal(c["hidden"], d["hidden"])


def test_registry_and_config_validation():
    cfg = models.config_dict("bert", "tiny", num_layers=1)
    model = models.build(cfg)
    assert isinstance(model, bert.BERT) and model.config.num_layers == 1
    assert "roberta-base" in models.presets("bert")
    with pytest.raises(ValueError, match="nsp_head=True needs pooler=True"):
        bert.BERTConfig(pooler=False, nsp_head=True)
    with pytest.raises(ValueError, match="position_convention"):
        bert.BERTConfig(position_convention="offset")
    with pytest.raises(ValueError, match="not divisible"):
        bert.BERTConfig(embed_dim=30, num_heads=4)
    model, params = _init(SMALL)
    with pytest.raises(ValueError, match="exceeds max_len=16"):
        model.apply({"params": params}, jnp.zeros((1, 17), jnp.int32))
    with pytest.raises(ValueError, match=r"inputs \[batch, length\]"):
        model.apply({"params": params}, jnp.zeros((17,), jnp.int32))


def test_parameter_shardings_on_a_2x2x2_mesh_and_sharded_forward():
    from jax.sharding import PartitionSpec as P

    from lmjax.train import mesh as mesh_lib
    from lmjax.train import optimizers
    from lmjax.train import state as state_lib

    mesh = mesh_lib.build_mesh([("data", 2), ("fsdp", 2), ("tensor", 2)])
    rules = mesh_lib.check_rules(axes.DEFAULT_RULES, mesh)
    model = bert.BERT(SMALL)
    tx = optimizers.make_optimizer(dict(name="adamw", learning_rate=1e-3), 10)
    inputs = {"inputs": jax.ShapeDtypeStruct((2, 8), np.int32)}
    _, shardings = state_lib.abstract_train_state(model, tx, inputs, mesh, rules)
    specs = shardings.params
    assert specs["pooler"]["kernel"].spec == P("fsdp", "tensor")  # [E, E] (embed, mlp)
    assert specs["nsp"]["kernel"].spec == P("fsdp", None)  # [E, 2] (embed, classes)
    assert specs["mlm_bias"].spec == P("tensor")  # [V]
    assert specs["type_embed"]["embedding"].spec == P(None, "fsdp")  # [T, E]
    assert specs["encoder"]["layers_0"]["mlp"]["wi"]["kernel"].spec == P("fsdp", "tensor")

    _, params = _init(SMALL)
    ids = jnp.arange(16, dtype=jnp.int32).reshape(2, 8)
    expected = model.apply({"params": params}, ids)["logits"]
    sharded = jax.device_put(params, shardings.params)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        logits = jax.jit(lambda p, x: model.apply({"params": p}, x)["logits"])(sharded, ids)
    np.testing.assert_allclose(logits, expected, atol=1e-5)
