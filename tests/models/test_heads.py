"""Fine-tuning heads (lmjax.models.heads): shapes, the parameter split, features, dropout, vocab."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

# Test-only reference: HF's ELECTRA / DistilBERT classification heads (missing = an error).
import torch
import transformers

from lmjax import models
from lmjax.models import heads

V, L, E = 64, 8, 32
SMALL = dict(vocab_size=V, max_len=16, num_layers=1, embed_dim=E, num_heads=2, mlp_dim=48,
             scan_layers=False)
BACKBONES = {
    "bert": dict(family="bert", **SMALL),
    "albert": dict(family="albert", embedding_size=16, **SMALL),
    "distilbert": dict(family="distilbert", **SMALL),
    "electra": dict(
        family="electra", embedding_size=16, generator_num_layers=1, generator_embed_dim=16,
        generator_num_heads=1, generator_mlp_dim=32, **SMALL,
    ),
    "gpt": dict(family="gpt", norm="post", final_norm=False, **SMALL),
}
EXTRACT = V - 1  # the tiny GPT's '_classify_' id
NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0)
GPT_NO_DROPOUT = dict(embed_dropout=0.0, attention_dropout=0.0, residual_dropout=0.0)


def _config(family, head="classification", **overrides):
    extract = dict(extract_id=EXTRACT) if family == "gpt" and head not in heads.TOKEN_HEADS else {}
    return heads.TaskConfig(**{"backbone": BACKBONES[family], "head": head, "num_labels": 3,
                               **extract, **overrides})


def _ids(shape, seed=0):
    ids = np.random.default_rng(seed).integers(1, V - 1, size=shape).astype(np.int32)
    ids[..., -2] = EXTRACT  # an extract token, followed by one more token
    return jnp.asarray(ids)


def _init(config, inputs):
    return nn.unbox(jax.jit(heads.TaskModel(config).init)(jax.random.key(0), inputs)["params"])


def _apply(module):
    """``module.apply``, jitted (eager flax is slow on a shared CPU)."""
    return jax.jit(module.apply, static_argnames="deterministic")


EXPECTED = {
    "classification": {"class_logits": (2, 3)},
    "regression": {"prediction": (2,)},
    "multiple_choice": {"choice_logits": (2, 4)},
    "span": {"start_logits": (2, L), "end_logits": (2, L)},
    "token_classification": {"token_logits": (2, L, 3)},
}


@pytest.mark.parametrize("family", sorted(BACKBONES))
@pytest.mark.parametrize("head", heads.HEADS)
def test_output_shapes_of_every_head_on_every_backbone(family, head):
    config = _config(family, head)
    shape = (2, 4, L) if head == "multiple_choice" else (2, L)
    inputs = jax.ShapeDtypeStruct(shape, jnp.int32)
    model = heads.TaskModel(config)
    params = jax.eval_shape(lambda ids: model.init(jax.random.key(0), ids), inputs)
    out = jax.eval_shape(lambda p, ids: model.apply(p, ids, attention_mask=ids), params, inputs)
    expected = dict(EXPECTED[head])
    if family == "gpt":
        expected["lm_logits"] = shape + (V,)
    assert {k: v.shape for k, v in out.items()} == expected
    assert all(v.dtype == jnp.float32 for v in out.values())


@pytest.mark.parametrize("family", sorted(BACKBONES))
def test_params_are_backbone_family_tree_plus_head(family):
    config = _config(family, "multiple_choice")
    tree = jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), heads.param_shapes(config))
    assert set(tree) == {"backbone", "head"}
    backbone = models.build(BACKBONES[family])
    own = jax.eval_shape(
        lambda key: backbone.init(key, jnp.zeros((1, 1), jnp.int32)), jax.random.key(0)
    )
    own = jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), nn.unbox(own["params"]))
    assert tree["backbone"] == own
    assert tree["head"]["classifier"]["kernel"] == ((E, 1), jnp.float32)
    assert ("feature_dense" in tree["head"]) == (family in ("distilbert", "electra"))


def test_presets_registry_and_feature_resolution():
    assert models.presets("task").keys() >= {"tiny-bert-classification", "tiny-gpt-extract"}
    cfg = models.config_dict("task", "tiny-gpt-extract")
    config = models.make_config(cfg)
    assert config == heads.PRESETS["tiny-gpt-extract"]
    assert config.backbone_config().vocab_size == 8192 + 3 and config.extract_id == 8194
    assert isinstance(models.build(cfg), heads.TaskModel)
    resolved = {f: _config(f).resolved_feature for f in BACKBONES}
    assert resolved == {"bert": "pooled", "albert": "pooled", "distilbert": "first",
                        "electra": "first", "gpt": "extract"}
    assert _config("electra").resolved_feature_activation == "gelu"
    assert _config("distilbert").resolved_feature_activation == "relu"
    roberta = dict(BACKBONES["bert"], pooler=False, nsp_head=False)
    config = heads.TaskConfig(backbone=roberta)
    assert (config.resolved_feature, config.resolved_feature_activation) == ("first", "tanh")
    assert _config("bert", "span").resolved_feature == "tokens"
    hash(heads.PRESETS["gpt1-multiple-choice"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(backbone=BACKBONES["gpt"], feature="pooled"), "feature='pooled' needs a backbone"),
        (dict(head="span", feature="extract", extract_id=3), "set feature='tokens'"),
        (dict(backbone=BACKBONES["gpt"]), "set extract_id"),
        (dict(backbone=BACKBONES["gpt"], extract_id=V), "outside the backbone vocabulary"),
        (dict(extract_id=5), "set extract_id=-1"),
        (dict(head="multiple_choice", combine_orderings=True), "combine_orderings=False"),
        (dict(share_choice_dropout=True), "needs head='multiple_choice'"),
        (dict(head="classify"), "head='classify' must be one of"),
        (dict(num_labels=1), "use head='regression'"),
        (dict(feature="tokens"), "feature='tokens' is for the per-token heads"),
        (dict(feature_activation="relu"), "only used by feature='first'"),
        (dict(classifier_dropout=1.0), "classifier_dropout=1.0"),
        (dict(dtype="float64"), "dtype='float64'"),
        (dict(backbone=dict(family="teacher_student")), "cannot be a backbone"),
        (dict(backbone=dict(vocab_size=3)), "'family' key"),
    ],
)
def test_config_errors_name_the_field_and_the_fix(overrides, message):
    values = dict(backbone=BACKBONES["bert"])
    values.update(overrides)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        heads.TaskConfig(**values)


def test_bad_inputs_are_rejected():
    config = _config("gpt")
    ids = _ids((2, L))
    params = _init(config, ids)
    model = heads.TaskModel(config)
    with pytest.raises(ValueError, match="takes no 'token_type_ids'"):
        model.apply({"params": params}, ids, token_type_ids=jnp.zeros_like(ids))
    with pytest.raises(ValueError, match=r"expects inputs \[batch, length\]"):
        model.apply({"params": params}, ids[:, None])
    mc = _config("bert", "multiple_choice")
    with pytest.raises(ValueError, match=r"\[batch, choices, length\]"):
        heads.TaskModel(mc).init(jax.random.key(0), ids)
    pair = _config("gpt", "regression", combine_orderings=True)
    with pytest.raises(ValueError, match="2 orderings"):
        heads.TaskModel(pair).init(jax.random.key(0), _ids((2, 3, L)))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model.apply({"params": params}, ids, attention_mask=ids[:, :4])


def test_gpt_extract_feature_is_backbone_hidden_at_extract_token():
    config = _config("gpt")
    ids = np.array(_ids((2, L)))
    ids[0, -2], ids[0, 3] = 5, EXTRACT  # row 0: the extract token at position 3
    mask = np.ones((2, L), np.int32)
    mask[0, 5:] = 0  # row 0 is padded after its extract token
    params = _init(config, jnp.asarray(ids))
    out = _apply(heads.TaskModel(config))({"params": params}, jnp.asarray(ids),
                                        attention_mask=jnp.asarray(mask))
    backbone = models.build(BACKBONES["gpt"])
    direct = _apply(backbone)({"params": params["backbone"]}, jnp.asarray(ids),
                            segment_ids=jnp.asarray(mask))
    hidden = np.asarray(direct["hidden"])
    feature = np.stack([hidden[0, 3], hidden[1, L - 2]])  # [B, E]
    clf = params["head"]["classifier"]
    expected = feature @ np.asarray(clf["kernel"]) + np.asarray(clf["bias"])
    np.testing.assert_allclose(out["class_logits"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["lm_logits"], direct["logits"], rtol=1e-6, atol=1e-6)
    unmasked = _apply(backbone)({"params": params["backbone"]}, jnp.asarray(ids))
    assert not np.allclose(out["lm_logits"][0], unmasked["logits"][0], atol=1e-4)


def test_pooled_feature_is_backbone_pooled_output():
    config = _config("bert")
    ids = _ids((2, L))
    types = jnp.asarray(np.tile([0] * 4 + [1] * 4, (2, 1)))
    params = _init(config, ids)
    out = _apply(heads.TaskModel(config))({"params": params}, ids, token_type_ids=types)
    pooled = _apply(models.build(BACKBONES["bert"]))(
        {"params": params["backbone"]}, ids, token_type_ids=types
    )["pooled"]
    clf = params["head"]["classifier"]
    np.testing.assert_allclose(out["class_logits"], pooled @ clf["kernel"] + clf["bias"],
                               rtol=1e-5, atol=1e-5)
    assert "lm_logits" not in out


@pytest.mark.parametrize("family", ["electra", "distilbert"])
def test_first_token_head_matches_hugging_face(family):
    config = _config(family)
    ids = _ids((2, L))
    params = _init(config, ids)
    out = _apply(heads.TaskModel(config))({"params": params}, ids)
    backbone = _apply(models.build(BACKBONES[family]))({"params": params["backbone"]}, ids)
    hidden = torch.tensor(np.asarray(backbone["hidden"]))
    dense, clf = params["head"]["feature_dense"], params["head"]["classifier"]

    def linear(layer, weights):
        layer.weight.data = torch.tensor(np.asarray(weights["kernel"]).T.copy())
        layer.bias.data = torch.tensor(np.asarray(weights["bias"]))

    if family == "electra":
        hf = transformers.ElectraConfig(hidden_size=E, num_labels=3)
        head = transformers.models.electra.modeling_electra.ElectraClassificationHead(hf).eval()
        linear(head.dense, dense)
        linear(head.out_proj, clf)
        expected = head(hidden)
    else:
        hf = transformers.DistilBertConfig(dim=E, num_labels=3, n_heads=2, n_layers=1)
        model = transformers.DistilBertForSequenceClassification(hf).eval()
        linear(model.pre_classifier, dense)
        linear(model.classifier, clf)
        expected = model.classifier(torch.relu(model.pre_classifier(hidden[:, 0])))
    np.testing.assert_allclose(out["class_logits"], expected.detach().numpy(), rtol=1e-5,
                               atol=1e-5)


def test_similarity_adds_both_orderings():
    config = _config("gpt", "regression", combine_orderings=True)
    pairs = _ids((3, 2, L))
    params = _init(config, pairs)
    model = _apply(heads.TaskModel(config))
    out = model({"params": params}, pairs)["prediction"]
    swapped = model({"params": params}, pairs[:, ::-1])["prediction"]
    assert out.shape == (3,)
    np.testing.assert_allclose(out, swapped, rtol=1e-5, atol=1e-6)
    hidden = _apply(models.build(BACKBONES["gpt"]))(
        {"params": params["backbone"]}, pairs.reshape(6, L)
    )["hidden"][:, L - 2].reshape(3, 2, E)  # the extract position of every sequence
    clf = params["head"]["classifier"]
    expected = (hidden[:, 0] + hidden[:, 1]) @ clf["kernel"][:, 0] + clf["bias"][0]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    other = model({"params": params}, jnp.stack([pairs[:, 0], pairs[:, 0]], 1))
    assert not np.allclose(out, other["prediction"], atol=1e-4)


@pytest.mark.parametrize("family", ["bert", "gpt"])
def test_multiple_choice_scores_each_choice_alone(family):
    config = _config(family, "multiple_choice")
    choices = _ids((2, 4, L))
    params = _init(config, choices)
    model = _apply(heads.TaskModel(config))
    out = model({"params": params}, choices, attention_mask=jnp.ones_like(choices))
    logits = out["choice_logits"]
    assert logits.shape == (2, 4)
    permuted = model({"params": params}, choices[:, ::-1])["choice_logits"]
    np.testing.assert_allclose(permuted, logits[:, ::-1], rtol=1e-5, atol=1e-5)
    one = model({"params": params}, choices[:1, 2:3])["choice_logits"]  # C = 1
    np.testing.assert_allclose(one[0, 0], logits[0, 2], rtol=1e-5, atol=1e-5)
    if family == "gpt":
        assert out["lm_logits"].shape == (2, 4, L, V)


def test_dropout_only_when_not_deterministic():
    config = _config("bert", classifier_dropout=0.5)
    ids = _ids((4, L))
    params = _init(config, ids)
    model = _apply(heads.TaskModel(config))
    run = lambda det, key: model(  # noqa: E731
        {"params": params}, ids, deterministic=det, rngs={"dropout": jax.random.key(key)}
    )["class_logits"]
    np.testing.assert_array_equal(run(True, 1), run(True, 2))
    np.testing.assert_array_equal(run(True, 1), model({"params": params}, ids)["class_logits"])
    assert not np.allclose(run(False, 1), run(True, 1))
    assert not np.allclose(run(False, 1), run(False, 2))


@pytest.mark.parametrize("shared", [True, False])
def test_choice_dropout_mask_is_shared_over_choices_when_asked(shared):
    backbone = dict(BACKBONES["gpt"], **GPT_NO_DROPOUT)
    config = heads.TaskConfig(backbone=backbone, head="multiple_choice", extract_id=EXTRACT,
                              classifier_dropout=0.5, share_choice_dropout=shared)
    same = jnp.repeat(_ids((2, 1, L)), 4, axis=1)  # 4 identical choices
    params = _init(config, same)
    logits = _apply(heads.TaskModel(config))(
        {"params": params}, same, deterministic=False, rngs={"dropout": jax.random.key(3)}
    )["choice_logits"]
    equal = np.allclose(logits, logits[:, :1], atol=1e-6)
    assert equal == shared


def test_span_and_token_heads_read_every_token():
    ids = _ids((2, L))
    span = _config("bert", "span")
    params = _init(span, ids)
    out = _apply(heads.TaskModel(span))({"params": params}, ids)
    hidden = _apply(models.build(BACKBONES["bert"]))({"params": params["backbone"]}, ids)["hidden"]
    clf = params["head"]["classifier"]
    both = hidden @ clf["kernel"] + clf["bias"]  # [B, L, 2]
    np.testing.assert_allclose(out["start_logits"], both[..., 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["end_logits"], both[..., 1], rtol=1e-5, atol=1e-5)
    tokens = _config("distilbert", "token_classification", num_labels=5)
    params = _init(tokens, ids)
    logits = _apply(heads.TaskModel(tokens))({"params": params}, ids)["token_logits"]
    hidden = _apply(models.build(BACKBONES["distilbert"]))(
        {"params": params["backbone"]}, ids
    )["hidden"]
    clf = params["head"]["classifier"]
    np.testing.assert_allclose(logits, hidden @ clf["kernel"] + clf["bias"], rtol=1e-5, atol=1e-5)


def test_feature_activation_none_skips_the_dense_layer():
    config = _config("electra", feature_activation="none")
    ids = _ids((2, L))
    params = _init(config, ids)
    assert set(params["head"]) == {"classifier"}
    out = _apply(heads.TaskModel(config))({"params": params}, ids)["class_logits"]
    hidden = _apply(models.build(BACKBONES["electra"]))({"params": params["backbone"]}, ids)
    clf = params["head"]["classifier"]
    np.testing.assert_allclose(out, hidden["hidden"][:, 0] @ clf["kernel"] + clf["bias"],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["gpt", "bert"])
def test_extended_vocab_params_appends_rows_and_keeps_the_old_ones(family):
    small = dict(BACKBONES[family], vocab_size=V - 3)
    init = jax.jit(models.build(small).init)
    pretrained = nn.unbox(init(jax.random.key(5), _ids((1, L)) % (V - 3)))["params"]
    config = _config(family)
    abstract = heads.abstract_task_params(config)["backbone"]
    grown = heads.extended_vocab_params(pretrained, abstract, jax.random.key(7), stddev=0.02)
    shapes = jax.tree_util.tree_map(lambda x: x.shape, grown)
    assert shapes == jax.tree_util.tree_map(lambda x: x.shape, nn.unbox(abstract))
    table = np.asarray(grown["token_embed"]["embedding"])
    np.testing.assert_array_equal(table[: V - 3], pretrained["token_embed"]["embedding"])
    new = table[V - 3:]
    assert new.shape == (3, E) and 0.002 < new.std() < 0.1 and np.all(new != 0)
    if family == "bert":
        bias = np.asarray(grown["mlm_bias"])
        np.testing.assert_array_equal(bias[: V - 3], pretrained["mlm_bias"])
        np.testing.assert_array_equal(bias[V - 3:], 0.0)
    position = "position_embed"
    np.testing.assert_array_equal(grown[position]["embedding"], pretrained[position]["embedding"])
    params = {"backbone": grown, "head": _init(config, _ids((2, L)))["head"]}
    out = _apply(heads.TaskModel(config))({"params": params}, _ids((2, L)))
    assert np.isfinite(np.asarray(out["class_logits"])).all()


def _pretrained(backbone, vocab):
    init = jax.jit(models.build(backbone).init)
    return nn.unbox(init(jax.random.key(0), _ids((1, L)) % vocab))["params"]


def test_extended_vocab_params_rejects_other_mismatches():
    config = _config("gpt")
    abstract = heads.abstract_task_params(config)["backbone"]
    wider = dict(BACKBONES["gpt"], vocab_size=V - 3, max_len=32)
    pretrained = _pretrained(wider, V - 3)
    with pytest.raises(ValueError, match="position_embed/embedding"):
        heads.extended_vocab_params(pretrained, abstract, jax.random.key(0))
    scanned = dict(BACKBONES["gpt"], vocab_size=V - 3, scan_layers=True)
    pretrained = _pretrained(scanned, V - 3)
    with pytest.raises(ValueError, match="missing"):
        heads.extended_vocab_params(pretrained, abstract, jax.random.key(0))
    bigger = dict(BACKBONES["gpt"], vocab_size=V + 1)
    pretrained = _pretrained(bigger, V)
    with pytest.raises(ValueError, match="token_embed/embedding"):
        heads.extended_vocab_params(pretrained, abstract, jax.random.key(0))


def test_bfloat16_head_keeps_float32_outputs():
    config = _config("bert", dtype="bfloat16")
    ids = _ids((2, L))
    params = _init(config, ids)
    assert params["head"]["classifier"]["kernel"].dtype == jnp.float32
    out = _apply(heads.TaskModel(config))({"params": params}, ids)
    assert out["class_logits"].dtype == jnp.float32
    stored = heads.param_shapes(dataclasses.replace(config, param_dtype="bfloat16"))
    assert stored["head"]["classifier"]["kernel"].dtype == jnp.bfloat16
