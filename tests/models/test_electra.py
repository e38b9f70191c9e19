"""ELECTRA: shapes, shared embeddings, stop-gradient sampling, the loss, presets and counts."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

# Test-only reference for the parameter count (missing is an error, not a skip).
import torch  # noqa: E402
import transformers  # noqa: E402

from lmjax import models, objectives  # noqa: E402
from lmjax.models import electra  # noqa: E402
from lmjax.objectives import replaced_token_detection as rtd  # noqa: E402

TINY = electra.PRESETS["tiny"]
# A smaller shape than 'tiny' for the runtime tests (M=16 != E=32 != G=8: both projections).
CFG = electra.ElectraConfig(
    vocab_size=64, max_len=16, embedding_size=16, num_layers=1, embed_dim=32, num_heads=2,
    mlp_dim=48, generator_num_layers=1, generator_embed_dim=8, generator_num_heads=1,
    generator_mlp_dim=16,
)
B, L = 2, 8


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    inputs = rng.integers(5, CFG.vocab_size, size=(B, L)).astype(np.int32)
    mask = np.ones((B, L), np.int32)
    mask[1, 5:] = 0
    inputs = np.where(mask == 1, inputs, 0)
    weights = np.zeros((B, L), np.float32)
    weights[0, [1, 3]] = 1.0
    weights[1, [2]] = 1.0
    return dict(
        inputs=jnp.asarray(inputs),
        token_type_ids=jnp.zeros((B, L), jnp.int32),
        attention_mask=jnp.asarray(mask),
        mlm_targets=jnp.asarray(inputs),
        mlm_weights=jnp.asarray(weights),
    )


@pytest.fixture(scope="module")
def tiny_params():
    model = electra.ElectraPretraining(CFG)
    init = jax.jit(lambda key: model.init(key, jnp.zeros((1, 4), jnp.int32)))
    return nn.unbox(init(jax.random.key(0))["params"])


@jax.jit
def _apply_jit(params, batch, key):
    return electra.ElectraPretraining(CFG).apply(
        {"params": params}, batch["inputs"], token_type_ids=batch["token_type_ids"],
        attention_mask=batch["attention_mask"], mlm_weights=batch["mlm_weights"],
        rngs={"sample": key},
    )


def _apply(params, batch, key=1):
    return _apply_jit(params, batch, jax.random.key(key))


def test_output_shapes_and_dtypes(tiny_params):
    out = _apply(tiny_params, _batch())
    assert out["generator_logits"].shape == (B, L, CFG.vocab_size)
    assert out["generator_logits"].dtype == jnp.float32
    assert out["discriminator_logits"].shape == (B, L)
    assert out["discriminator_logits"].dtype == jnp.float32
    assert out["discriminator_inputs"].shape == (B, L)
    assert out["discriminator_inputs"].dtype == jnp.int32
    assert out["hidden"].shape == (B, L, CFG.embed_dim)
    assert set(out) == {
        "generator_logits", "discriminator_logits", "discriminator_inputs", "hidden"
    }


def test_family_registry_builds_the_pretraining_model():
    cfg = models.config_dict("electra", "tiny")
    assert isinstance(models.build(cfg), electra.ElectraPretraining)
    assert electra.Model is electra.ElectraPretraining and electra.Config is electra.ElectraConfig


def test_one_embedding_table_shared_by_both_networks(tiny_params):
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tiny_params)]
    for table in ("token_embed", "position_embed", "type_embed", "embed_norm']['scale"):
        hits = [p for p in paths if table in p]
        assert hits and all(p.startswith("['embeddings']") for p in hits), (table, hits)
    assert len([p for p in paths if "token_embed" in p]) == 1
    # Each network projects M=16 to its own width with its own embed_project.
    assert tiny_params["generator"]["embed_project"]["kernel"].shape == (16, 8)
    assert tiny_params["discriminator"]["embed_project"]["kernel"].shape == (16, 32)
    # The one table feeds both networks: changing it changes both outputs.
    batch = dict(_batch(), mlm_weights=jnp.zeros((B, L), jnp.float32))
    before = _apply(tiny_params, batch)
    changed = jax.tree.map(lambda x: x, tiny_params)
    changed["embeddings"]["token_embed"]["embedding"] = (
        tiny_params["embeddings"]["token_embed"]["embedding"] * 2.0
    )
    after = _apply(changed, batch)
    for name in ("generator_logits", "discriminator_logits"):
        assert float(jnp.max(jnp.abs(after[name] - before[name]))) > 1e-3, name


def test_discriminator_loss_sends_no_gradient_into_the_generator(tiny_params):
    batch = _batch()

    def discriminator_term(params):
        out = _apply(params, batch)
        labels = rtd.is_replaced_labels(
            batch["mlm_targets"], out["discriminator_inputs"], batch["mlm_weights"]
        )
        return rtd.discriminator_loss(out["discriminator_logits"], labels,
                                      batch["attention_mask"])[0]

    def generator_term(params):
        return rtd.electra_loss(_apply(params, batch), batch)[1]["generator_loss"]

    def total(params):
        return rtd.electra_loss(_apply(params, batch), batch)[0]

    grads = jax.jit(lambda p: (jax.grad(discriminator_term)(p), jax.grad(total)(p),
                               jax.grad(generator_term)(p)))
    disc_grads, total_grads, gen_grads = grads(tiny_params)
    generator_only = jax.tree_util.tree_leaves(disc_grads["generator"])
    assert generator_only and all(float(jnp.max(jnp.abs(g))) == 0.0 for g in generator_only)
    assert float(jnp.max(jnp.abs(disc_grads["discriminator"]["head_out"]["kernel"]))) > 0
    assert float(jnp.max(jnp.abs(disc_grads["embeddings"]["token_embed"]["embedding"]))) > 0
    # The total's generator gradient is exactly the MLM term's.
    for got, want in zip(jax.tree_util.tree_leaves(total_grads["generator"]),
                         jax.tree_util.tree_leaves(gen_grads["generator"])):
        np.testing.assert_array_equal(got, want)
    assert float(jnp.max(jnp.abs(gen_grads["generator"]["mlm_bias"]))) > 0


def test_sampling_uses_the_sample_rng(tiny_params):
    batch = _batch()
    a, a_again, b = (_apply(tiny_params, batch, key=k)["discriminator_inputs"] for k in (1, 1, 2))
    np.testing.assert_array_equal(a, a_again)
    predicted = np.asarray(batch["mlm_weights"]) > 0
    assert not np.array_equal(np.asarray(a)[predicted], np.asarray(b)[predicted])
    # Only predicted positions change.
    inputs = np.asarray(batch["inputs"])
    np.testing.assert_array_equal(np.asarray(a)[~predicted], inputs[~predicted])
    # Without mlm_weights nothing is sampled and no 'sample' rng is needed.
    out = electra.ElectraPretraining(CFG).apply({"params": tiny_params}, batch["inputs"])
    np.testing.assert_array_equal(out["discriminator_inputs"], batch["inputs"])
    with pytest.raises(Exception, match="sample"):
        electra.ElectraPretraining(CFG).apply(
            {"params": tiny_params}, batch["inputs"], mlm_weights=batch["mlm_weights"])


def test_standalone_networks_reuse_the_pretraining_weights(tiny_params):
    batch = _batch()
    out = _apply(tiny_params, dict(batch, mlm_weights=jnp.zeros((B, L), jnp.float32)))
    gen_params, disc_params = electra.split_params(tiny_params)
    kwargs = dict(token_type_ids=batch["token_type_ids"], attention_mask=batch["attention_mask"])
    disc = electra.ElectraDiscriminator(CFG).apply(
        {"params": disc_params}, batch["inputs"], **kwargs
    )
    gen = electra.ElectraGenerator(CFG).apply({"params": gen_params}, batch["inputs"], **kwargs)
    # Same weights, same math (eager vs jit: float32 rounding only).
    np.testing.assert_allclose(disc["logits"], out["discriminator_logits"], atol=1e-5)
    np.testing.assert_allclose(disc["hidden"], out["hidden"], atol=1e-5)
    np.testing.assert_allclose(gen["logits"], out["generator_logits"], atol=1e-5)
    rejoined = electra.join_params(gen_params, disc_params)
    assert jax.tree.structure(rejoined) == jax.tree.structure(tiny_params)


def test_dropout_runs_with_both_rngs(tiny_params):
    batch = _batch()
    run = jax.jit(lambda p, dropout_key: electra.ElectraPretraining(CFG).apply(
        {"params": p}, batch["inputs"], mlm_weights=batch["mlm_weights"], deterministic=False,
        rngs={"dropout": dropout_key, "sample": jax.random.key(1)},
    ))
    a, b = run(tiny_params, jax.random.key(0)), run(tiny_params, jax.random.key(1))
    assert bool(jnp.all(jnp.isfinite(a["discriminator_logits"])))
    # Dropout is on: another dropout key gives other logits.
    assert float(jnp.max(jnp.abs(a["discriminator_logits"] - b["discriminator_logits"]))) > 0


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    return x - np.log(np.sum(np.exp(x), axis=-1, keepdims=True))


def test_electra_loss_on_hand_made_logits():
    # One row of 4 tokens, the last is padding; positions 1 and 2 are predicted.
    gen_logits = np.array([[[0.0, 0.0, 0.0], [2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 9.0]]],
                          np.float32)
    targets = np.array([[0, 0, 2, 0]], np.int32)
    weights = np.array([[0.0, 1.0, 1.0, 0.0]], np.float32)
    mask = np.array([[1, 1, 1, 0]], np.int32)
    # Position 1 sampled correctly (0 == target: "original"); position 2 replaced (1 != 2).
    disc_inputs = np.array([[0, 0, 1, 0]], np.int32)
    disc_logits = np.array([[-1.0, 0.5, 2.0, 7.0]], np.float32)
    outputs = dict(generator_logits=jnp.asarray(gen_logits),
                   discriminator_logits=jnp.asarray(disc_logits),
                   discriminator_inputs=jnp.asarray(disc_inputs))
    batch = dict(mlm_targets=jnp.asarray(targets), mlm_weights=jnp.asarray(weights),
                 attention_mask=jnp.asarray(mask))
    loss, metrics = rtd.electra_loss(outputs, batch)

    logp = _log_softmax(gen_logits[0])
    gen = -(logp[1, 0] + logp[2, 2]) / 2
    labels = np.array([0.0, 0.0, 1.0])  # real tokens only
    x = disc_logits[0, :3].astype(np.float64)
    disc = np.mean(np.log1p(np.exp(x)) - labels * x)
    np.testing.assert_allclose(metrics["generator_loss"], gen, rtol=1e-6)
    np.testing.assert_allclose(metrics["discriminator_loss"], disc, rtol=1e-6)
    np.testing.assert_allclose(loss, gen + 50.0 * disc, rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"], loss)
    # argmax hits: position 1 (0 == 0) yes, position 2 (1 != 2) no.
    assert float(metrics["generator_accuracy"]) == 0.5
    # Predictions (logit > 0): [0, 1, 1] vs labels [0, 0, 1] -> 2 of 3 right.
    np.testing.assert_allclose(metrics["discriminator_accuracy"], 2 / 3, rtol=1e-6)
    np.testing.assert_allclose(metrics["accuracy"], 2 / 3, rtol=1e-6)
    assert float(metrics["num_tokens"]) == 3.0
    np.testing.assert_allclose(metrics["replaced_fraction"], 1 / 3, rtol=1e-6)
    assert float(metrics["replaced_recall"]) == 1.0
    assert all(v.dtype == jnp.float32 and v.shape == () for v in metrics.values())
    # The weight is a keyword.
    loss_1, _ = rtd.electra_loss(outputs, batch, discriminator_weight=1.0)
    np.testing.assert_allclose(loss_1, gen + disc, rtol=1e-6)


def test_electra_objective_end_to_end(tiny_params):
    objective = rtd.electra_objective(mask_id=4, special_ids=(0, 1, 2, 4), rate=0.25)
    assert objective.name == "electra"
    assert objective.model_inputs == ("inputs", "token_type_ids", "attention_mask", "mlm_weights")
    batch = _batch()
    raw = {k: batch[k] for k in ("inputs", "token_type_ids", "attention_mask")}

    @jax.jit
    def step(params, raw):
        corrupted = objective.corrupt(jax.random.key(0), raw)
        out = electra.ElectraPretraining(CFG).apply(
            {"params": params}, **{k: corrupted[k] for k in objective.model_inputs},
            rngs={"sample": jax.random.key(1)},
        )
        return corrupted, objective.loss(out, corrupted)

    corrupted, (loss, metrics) = step(tiny_params, raw)
    assert float(jnp.sum(corrupted["mlm_weights"])) > 0
    assert np.isfinite(float(loss))
    assert isinstance(objective, objectives.Objective)
    # A random generator almost never samples every original token back from 64 ids.
    assert float(metrics["replaced_fraction"]) > 0
    assert float(metrics["num_tokens"]) == float(jnp.sum(batch["attention_mask"]))


def _hf_count(config):
    with torch.device("meta"):
        model = transformers.ElectraForPreTraining(config)
    return sum(p.numel() for p in model.parameters())


def test_small_discriminator_has_13_5m_parameters():
    count = electra.count_discriminator_params(electra.PRESETS["small"])
    # HF google/electra-small-discriminator config; the paper rounds 13.5M up to "14M".
    hf = transformers.ElectraConfig(embedding_size=128, hidden_size=256, num_hidden_layers=12,
                                    num_attention_heads=4, intermediate_size=1024)
    assert count == _hf_count(hf)
    assert abs(count - 13.5e6) / 13.5e6 < 0.02


@pytest.mark.parametrize("preset,published", [("base", 110e6), ("large", 335e6)])
def test_base_and_large_discriminator_counts(preset, published):
    count = electra.count_discriminator_params(electra.PRESETS[preset])
    assert abs(count - published) / published < 0.02


def test_pretraining_count_counts_shared_embeddings_once():
    cfg = electra.PRESETS["small"]
    m = cfg.embedding_size
    embeddings = (cfg.vocab_size + cfg.max_len + cfg.type_vocab_size) * m + 2 * m
    assert electra.count_params(cfg) == (
        electra.count_discriminator_params(cfg) + electra.count_generator_params(cfg) - embeddings
    )


def test_presets_match_the_published_shapes():
    for name, (layers, width, heads, m) in {
        "small": (12, 256, 4, 128), "base": (12, 768, 12, 768), "large": (24, 1024, 16, 1024)
    }.items():
        cfg = electra.PRESETS[name]
        assert (cfg.num_layers, cfg.embed_dim, cfg.num_heads, cfg.embedding_size) == (
            layers, width, heads, m), name
        assert cfg.mlp_dim == 4 * width
        # HF google/electra-{size}-generator: 256 wide, 4 heads, mlp 1024, same depth.
        assert (cfg.generator_num_layers, cfg.generator_embed_dim, cfg.generator_num_heads,
                cfg.generator_mlp_dim) == (layers, 256, 4, 1024), name
    assert (TINY.vocab_size, TINY.max_len, TINY.num_layers, TINY.embed_dim, TINY.num_heads,
            TINY.mlp_dim) == (2048, 128, 2, 128, 2, 512)
    assert electra.generator_shape(768, 1 / 3) == dict(
        generator_embed_dim=256, generator_num_heads=4, generator_mlp_dim=1024)


@pytest.mark.parametrize("field,value", [
    ("generator_num_heads", 3), ("embed_dim", 102), ("sampling_temperature", 0.0),
    ("generator_mlp_dim", 0), ("dtype", "int8"),
])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        electra.ElectraConfig(**{field: value})


@pytest.mark.parametrize("preset", ["small", "base"])
def test_every_parameter_has_distinct_logical_axes(preset):
    model = electra.ElectraPretraining(electra.PRESETS[preset])
    boxed = jax.eval_shape(
        lambda key: model.init(key, jnp.zeros((1, 1), jnp.int32)), jax.random.key(0)
    )["params"]
    specs = nn.get_partition_spec(boxed)
    flat = jax.tree_util.tree_leaves_with_path(
        specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
    )
    assert len(flat) == len(jax.tree_util.tree_leaves(boxed))
    for path, spec in flat:
        named = [a for a in spec if a is not None]
        assert len(spec) >= 1 and len(named) == len(set(named)), (jax.tree_util.keystr(path), spec)
    assert tuple(specs["embeddings"]["token_embed"]["embedding"]) == ("vocab", "factor")
    assert tuple(specs["generator"]["mlm_transform"]["kernel"]) == ("embed", "factor")
