"""Tests of lmjax.models.distilbert: presets, outputs, per-layer outputs, init from BERT."""

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
from lmjax.models import bert, distilbert  # noqa: E402

SMALL = dataclasses.replace(
    distilbert.PRESETS["tiny"],
    vocab_size=64, max_len=16, embed_dim=32, num_heads=4, mlp_dim=48, scan_layers=False,
)
TEACHER = bert.BERTConfig(
    vocab_size=64, max_len=16, num_layers=4, embed_dim=32, num_heads=4, mlp_dim=48,
    scan_layers=True,
)


def _ids(batch=2, length=7, vocab=64, seed=0):
    return jax.random.randint(jax.random.key(seed), (batch, length), 1, vocab)


def test_base_preset_is_66m_and_counts_exactly_what_hf_counts():
    base = distilbert.PRESETS["base"]
    count = distilbert.count_params(base)
    assert abs(count / 66e6 - 1) < 0.02, count
    assert (base.num_layers, base.embed_dim, base.num_heads, base.mlp_dim) == (6, 768, 12, 3072)
    with torch.device("meta"):
        hf = transformers.DistilBertForMaskedLM(transformers.DistilBertConfig())
    assert count == sum(p.numel() for p in hf.parameters())  # tied projector counted once


def test_tiny_preset_shape():
    tiny = distilbert.PRESETS["tiny"]
    assert (tiny.vocab_size, tiny.max_len, tiny.num_layers, tiny.embed_dim, tiny.num_heads,
            tiny.mlp_dim) == (2048, 128, 2, 128, 2, 512)


def test_outputs_shapes_and_token_types_are_ignored():
    model = distilbert.DistilBERT(SMALL)
    ids = _ids()
    params = model.init(jax.random.key(0), ids)["params"]
    assert "type_embed" not in params and "pooler" not in params
    out = model.apply({"params": params}, ids)
    assert set(out) == {"hidden", "logits"}
    assert out["hidden"].shape == (2, 7, 32) and out["logits"].shape == (2, 7, 64)
    assert out["logits"].dtype == jnp.float32
    typed = model.apply({"params": params}, ids, token_type_ids=jnp.ones_like(ids))
    np.testing.assert_array_equal(typed["logits"], out["logits"])


def test_logits_use_the_tied_table_and_mlm_bias():
    model = distilbert.DistilBERT(SMALL)
    ids = _ids()
    params = nn.unbox(model.init(jax.random.key(0), ids)["params"])
    params = dict(params, mlm_bias=jnp.arange(64, dtype=jnp.float32))
    out = model.apply({"params": params}, ids)
    h = out["hidden"] @ params["mlm_transform"]["kernel"] + params["mlm_transform"]["bias"]
    h = jax.nn.gelu(h, approximate=False)
    mean, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
    h = (h - mean) / jnp.sqrt(var + 1e-12)
    h = h * params["mlm_norm"]["scale"] + params["mlm_norm"]["bias"]
    expected = h @ params["token_embed"]["embedding"].T + params["mlm_bias"]
    np.testing.assert_allclose(out["logits"], expected, atol=1e-4)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_per_layer_outputs_do_not_change_params_or_outputs(scan_layers):
    base = dataclasses.replace(SMALL, scan_layers=scan_layers)
    per = dataclasses.replace(base, per_layer_outputs=True)
    ids = _ids()
    mask = jnp.array([[1] * 7, [1] * 4 + [0] * 3])
    params = distilbert.DistilBERT(base).init(jax.random.key(0), ids)["params"]
    assert jax.tree.structure(params) == jax.tree.structure(
        jax.eval_shape(distilbert.DistilBERT(per).init, jax.random.key(0), ids)["params"]
    )
    plain = distilbert.DistilBERT(base).apply({"params": params}, ids, attention_mask=mask)
    out = distilbert.DistilBERT(per).apply({"params": params}, ids, attention_mask=mask)
    np.testing.assert_array_equal(out["logits"], plain["logits"])
    assert out["hidden_states"].shape == (3, 2, 7, 32)
    assert out["attention_scores"].shape == (2, 2, 4, 7, 7)
    np.testing.assert_allclose(out["hidden_states"][-1], plain["hidden"], atol=1e-6)
    # hidden_states[0] is the embedding output: LN(token + position), no dropout.
    p = nn.unbox(params)
    emb = p["token_embed"]["embedding"][ids] + p["position_embed"]["embedding"][:7]
    mean, var = emb.mean(-1, keepdims=True), emb.var(-1, keepdims=True)
    emb = (emb - mean) / jnp.sqrt(var + 1e-12) * p["embed_norm"]["scale"] + p["embed_norm"]["bias"]
    np.testing.assert_allclose(out["hidden_states"][0], emb, atol=1e-5)


def test_first_layer_scores_are_scaled_q_dot_k():
    config = dataclasses.replace(SMALL, per_layer_outputs=True)
    ids = _ids()
    model = distilbert.DistilBERT(config)
    params = nn.unbox(model.init(jax.random.key(0), ids)["params"])
    out = model.apply({"params": params}, ids)
    attn = params["encoder"]["layers_0"]["attention"]
    x = out["hidden_states"][0]
    q = jnp.einsum("ble,ehd->blhd", x, attn["query"]["kernel"]) + attn["query"]["bias"]
    k = jnp.einsum("ble,ehd->blhd", x, attn["key"]["kernel"]) + attn["key"]["bias"]
    expected = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(8.0)
    np.testing.assert_allclose(out["attention_scores"][0], expected, atol=1e-5)


def test_every_parameter_has_logical_axes():
    variables = jax.eval_shape(
        distilbert.DistilBERT(dataclasses.replace(SMALL, scan_layers=True)).init,
        jax.random.key(0), jnp.zeros((1, 4), jnp.int32),
    )
    for path, leaf in jax.tree_util.tree_leaves_with_path(
        variables["params"], is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
    ):
        assert isinstance(leaf, nn.LogicallyPartitioned), path
        assert len(leaf.names) == leaf.value.ndim, path
        assert all(name in axes.ALL for name in leaf.names), path
        if jax.tree_util.keystr(path).startswith("['encoder']"):
            assert leaf.names[0] == axes.LAYERS, path
    wi = variables["params"]["encoder"]["layers"]["mlp"]["wi"]["kernel"]
    assert wi.names == (axes.LAYERS, axes.EMBED, axes.MLP)


def _teacher_params(scan_layers):
    teacher = dataclasses.replace(TEACHER, scan_layers=scan_layers)
    return nn.unbox(bert.BERT(teacher).init(jax.random.key(3), _ids())["params"])


@pytest.mark.parametrize("teacher_scanned", [True, False])
@pytest.mark.parametrize("student_scanned", [True, False])
def test_init_from_bert_copies_the_chosen_layers_exactly(teacher_scanned, student_scanned):
    teacher = _teacher_params(teacher_scanned)
    student = distilbert.distilbert_params_from_bert(
        teacher, layers=(1, 3), scan_layers=student_scanned
    )
    config = dataclasses.replace(SMALL, scan_layers=student_scanned)
    want = jax.tree.map(lambda x: (x.shape, x.dtype), distilbert.param_shapes(config))
    assert jax.tree.map(lambda x: (x.shape, x.dtype), student) == want
    t_layers = (
        bert.to_unscanned_layout(teacher)["encoder"] if teacher_scanned else teacher["encoder"]
    )
    s_layers = (
        distilbert.to_unscanned_layout(student)["encoder"] if student_scanned
        else student["encoder"]
    )
    for j, i in enumerate((1, 3)):
        jax.tree.map(np.testing.assert_array_equal, s_layers[f"layers_{j}"],
                     t_layers[f"layers_{i}"])
    # Layer 0 of the student is not teacher layer 0 (the choice matters).
    assert not np.array_equal(
        s_layers["layers_0"]["mlp"]["wi"]["kernel"], t_layers["layers_0"]["mlp"]["wi"]["kernel"]
    )
    for name in ("token_embed", "position_embed", "embed_norm", "mlm_transform", "mlm_norm"):
        jax.tree.map(np.testing.assert_array_equal, student[name], teacher[name])
    np.testing.assert_array_equal(student["mlm_bias"], teacher["mlm_bias"])


def test_init_from_bert_gives_the_teachers_function_when_all_layers_are_copied():
    teacher_cfg = dataclasses.replace(TEACHER, scan_layers=False)
    teacher = _teacher_params(False)
    student = distilbert.distilbert_params_from_bert(teacher, layers=(0, 1, 2, 3))
    config = dataclasses.replace(SMALL, num_layers=4, scan_layers=True)
    ids, mask = _ids(), jnp.array([[1] * 7, [1] * 5 + [0] * 2])
    types = jnp.zeros_like(ids)
    ours = distilbert.DistilBERT(config).apply({"params": student}, ids, attention_mask=mask)
    # BERT adds the type-0 embedding row; DistilBERT has none, so fold it into the teacher's.
    teacher_no_types = dict(teacher, type_embed={"embedding": jnp.zeros((2, 32))})
    theirs = bert.BERT(teacher_cfg).apply(
        {"params": teacher_no_types}, ids, token_type_ids=types, attention_mask=mask
    )
    np.testing.assert_allclose(ours["logits"], theirs["logits"], atol=1e-4)


def test_reference_layer_choice_and_validation():
    assert distilbert.teacher_layer_choice(12, 6) == distilbert.REFERENCE_TEACHER_LAYERS
    assert distilbert.REFERENCE_TEACHER_LAYERS == (0, 2, 4, 7, 9, 11)
    assert distilbert.teacher_layer_choice(4, 2) == (0, 3)
    teacher = _teacher_params(True)
    with pytest.raises(ValueError, match="layers"):
        distilbert.distilbert_params_from_bert(teacher, layers=(0, 4))
    with pytest.raises(ValueError, match="student_params"):
        distilbert.distilbert_params_from_bert(teacher, layers=(0, 2), vocab_transform=False)
    kept = nn.unbox(distilbert.DistilBERT(SMALL).init(jax.random.key(9), _ids())["params"])
    student = distilbert.distilbert_params_from_bert(
        teacher, layers=(0, 2), vocab_transform=False, student_params=kept
    )
    np.testing.assert_array_equal(student["mlm_transform"]["kernel"],
                                  kept["mlm_transform"]["kernel"])


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="num_heads"):
        distilbert.DistilBERTConfig(embed_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="remat"):
        distilbert.DistilBERTConfig(remat="sometimes")
    cfg = models.config_dict("distilbert", "tiny", num_layers=3)
    assert models.make_config(cfg).num_layers == 3
