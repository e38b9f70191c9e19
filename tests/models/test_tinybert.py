"""Tests of lmjax.models.tinybert: presets vs the paper, per-layer outputs, fit_dense."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import models
from lmjax.models import bert, tinybert

SMALL = dataclasses.replace(
    tinybert.PRESETS["tiny"],
    vocab_size=64, max_len=16, num_layers=3, embed_dim=24, num_heads=3, mlp_dim=40,
    teacher_dim=40, scan_layers=False,
)


def _ids(batch=2, length=6, seed=0):
    return jax.random.randint(jax.random.key(seed), (batch, length), 1, 64)


@pytest.mark.parametrize("name, paper", [("4l-312", 14.5e6), ("6l-768", 67e6)])
def test_presets_match_the_papers_counts(name, paper):
    config = tinybert.PRESETS[name]
    # The paper counts the deployed student; fit_dense (E x 768) is a training-only projection.
    deployed = tinybert.count_params(dataclasses.replace(config, fit_dense=False))
    assert abs(deployed / paper - 1) < 0.02, deployed
    with_fit = tinybert.count_params(config)
    assert with_fit - deployed == config.embed_dim * 768 + 768


def test_preset_shapes():
    four = tinybert.PRESETS["4l-312"]
    assert (four.num_layers, four.embed_dim, four.num_heads, four.mlp_dim, four.teacher_dim,
            four.vocab_size) == (4, 312, 12, 1200, 768, 30522)
    six = tinybert.PRESETS["6l-768"]
    assert (six.num_layers, six.embed_dim, six.mlp_dim) == (6, 768, 3072)
    tiny = tinybert.PRESETS["tiny"]
    assert (tiny.vocab_size, tiny.max_len, tiny.num_layers, tiny.embed_dim) == (2048, 128, 2, 128)
    assert all(c.per_layer_outputs for c in tinybert.PRESETS.values())


@pytest.mark.parametrize("scan_layers", [False, True])
def test_per_layer_outputs_and_fit_dense(scan_layers):
    config = dataclasses.replace(SMALL, scan_layers=scan_layers)
    model = tinybert.TinyBERT(config)
    ids = _ids()
    mask = jnp.array([[1] * 6, [1] * 3 + [0] * 3])
    params = nn.unbox(model.init(jax.random.key(0), ids)["params"])
    out = model.apply({"params": params}, ids, attention_mask=mask)
    assert out["hidden_states"].shape == (4, 2, 6, 24)  # embedding output + 3 layers
    assert out["attention_scores"].shape == (3, 2, 3, 6, 6)  # [N, B, H, L, L]
    assert out["fit_hidden_states"].shape == (4, 2, 6, 40)
    assert out["fit_hidden"].shape == (2, 6, 40)
    assert params["fit_dense"]["kernel"].shape == (24, 40)
    np.testing.assert_allclose(out["hidden_states"][-1], out["hidden"], atol=1e-6)
    fit = params["fit_dense"]
    np.testing.assert_allclose(
        out["fit_hidden_states"], out["hidden_states"] @ fit["kernel"] + fit["bias"], atol=1e-5
    )
    # Scores are unmasked: padded keys keep finite raw scores (the loss masks them).
    assert np.all(np.isfinite(out["attention_scores"]))
    # A padded key changes nothing at the real tokens of row 1.
    alone = model.apply({"params": params}, ids[1:, :3])
    np.testing.assert_allclose(alone["hidden_states"][:, 0], out["hidden_states"][:, 1, :3],
                               atol=1e-5)
    np.testing.assert_allclose(
        alone["attention_scores"][:, 0], out["attention_scores"][:, 1, :, :3, :3], atol=1e-5
    )


def test_scores_equal_the_softmax_inputs():
    """softmax(scores masked at padded keys) reproduces the attention weights flax sows."""
    config = dataclasses.replace(SMALL, per_layer_outputs=True)
    model = tinybert.TinyBERT(config)
    ids = _ids(seed=2)
    mask = jnp.array([[1] * 6, [1] * 4 + [0] * 2])
    params = model.init(jax.random.key(0), ids)["params"]
    out, state = model.apply(
        {"params": params}, ids, attention_mask=mask, mutable=["intermediates"]
    )
    for i in range(3):
        (weights,) = state["intermediates"]["encoder"][f"layers_{i}"]["attention"][
            "attention_weights"
        ]
        masked = jnp.where(mask[:, None, None, :] == 1, out["attention_scores"][i], -1e30)
        np.testing.assert_allclose(jax.nn.softmax(masked, -1), weights, atol=1e-6)


def test_same_tree_as_bert_and_same_outputs_without_fit_dense():
    bert_cfg = dataclasses.replace(
        bert.PRESETS["tiny"], vocab_size=64, max_len=16, embed_dim=24, num_heads=3, mlp_dim=40,
        scan_layers=False,
    )
    ids = _ids()
    bert_params = bert.BERT(bert_cfg).init(jax.random.key(1), ids)["params"]
    twin = tinybert.TinyBERT(tinybert.from_bert_config(bert_cfg, fit_dense=False))
    assert jax.tree.structure(bert_params) == jax.tree.structure(
        jax.eval_shape(twin.init, jax.random.key(0), ids)["params"]
    )
    ours = twin.apply({"params": bert_params}, ids)
    theirs = bert.BERT(bert_cfg).apply({"params": bert_params}, ids)
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name])
    assert "fit_hidden" not in ours


def test_config_is_a_bert_config_and_validates():
    assert isinstance(tinybert.PRESETS["4l-312"], bert.BERTConfig)
    with pytest.raises(ValueError, match="teacher_dim"):
        tinybert.TinyBERTConfig(teacher_dim=0)
    with pytest.raises(ValueError, match="num_heads"):
        tinybert.TinyBERTConfig(embed_dim=312, num_heads=5)
    cfg = models.config_dict("tinybert", "4l-312", teacher_dim=1024)
    assert isinstance(models.build(cfg), tinybert.TinyBERT)
    assert models.make_config(cfg).teacher_dim == 1024
