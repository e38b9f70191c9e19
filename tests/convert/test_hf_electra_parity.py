"""Parity of lmjax ELECTRA with Hugging Face's ElectraForPreTraining / ElectraForMaskedLM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# The references are test-only dependencies (pyproject [test] extra): missing is an error, no skip.
import torch  # noqa: E402
import transformers  # noqa: E402

from lmjax import convert  # noqa: E402
from lmjax.convert import hf_electra  # noqa: E402
from lmjax.models import electra  # noqa: E402
from tests.hf_reference import noised  # noqa: E402

# embedding_size != hidden_size so embeddings_project is exercised in both networks.
SHARED = dict(
    vocab_size=97,
    embedding_size=16,
    max_position_embeddings=24,
    type_vocab_size=2,
    hidden_act="gelu",
    attn_implementation="eager",
)
DISCRIMINATOR = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=48)
GENERATOR = dict(hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=12)
TOL = 1e-4


def _batch(vocab, seed=0, lengths=(11, 7, 4)):
    """Right-padded ids (pad 0), the 1/0 attention mask and A/B token types, [3, 11]."""
    rng = np.random.default_rng(seed)
    length = max(lengths)
    ids = rng.integers(1, vocab, size=(len(lengths), length))
    mask = (np.arange(length)[None] < np.array(lengths)[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, 0)
    types = (np.arange(length)[None] >= np.array(lengths)[:, None] // 2).astype(np.int64) * mask
    return ids, mask, types


def _assert_close(ours, theirs, mask, name):
    """Compares at real tokens (HF's padded rows are not meaningful either way)."""
    theirs = theirs.detach().numpy()
    assert ours.shape == theirs.shape, name
    keep = mask.astype(bool)
    diff = float(np.max(np.abs(np.asarray(ours)[keep] - theirs[keep])))
    assert diff <= TOL, f"{name}: max abs diff {diff}"


@pytest.fixture(scope="module")
def discriminator_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.ElectraConfig(**SHARED, **DISCRIMINATOR)
    model = noised(transformers.ElectraForPreTraining(config), seed=1)
    directory = tmp_path_factory.mktemp("electra_discriminator")
    model.save_pretrained(directory, safe_serialization=True)
    return model, directory


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.ElectraConfig(**SHARED, **GENERATOR)
    model = noised(transformers.ElectraForMaskedLM(config), seed=2)
    model.tie_weights()  # the decoder reads the (noised) word table, as lmjax's tied head does
    directory = tmp_path_factory.mktemp("electra_generator")
    model.save_pretrained(directory, safe_serialization=True)
    return model, directory


@pytest.mark.parametrize("scan_layers", [True, False])
def test_discriminator_matches_hf(discriminator_dir, scan_layers):
    hf_model, directory = discriminator_dir
    ids, mask, types = _batch(SHARED["vocab_size"])
    model, params = convert.load_hf_electra_discriminator(directory, scan_layers=scan_layers)
    assert isinstance(model, electra.ElectraDiscriminator)
    assert "embed_project" in params
    out = model.apply({"params": params}, jnp.asarray(ids, jnp.int32),
                      token_type_ids=jnp.asarray(types, jnp.int32),
                      attention_mask=jnp.asarray(mask, jnp.int32))
    with torch.no_grad():
        ref = hf_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                       token_type_ids=torch.tensor(types), output_hidden_states=True)
    assert out["logits"].dtype == jnp.float32
    _assert_close(out["logits"], ref.logits, mask, "discriminator logits")
    _assert_close(out["hidden"], ref.hidden_states[-1], mask, "discriminator hidden")


def test_generator_matches_hf(generator_dir):
    hf_model, directory = generator_dir
    ids, mask, types = _batch(SHARED["vocab_size"], seed=1)
    model, params = convert.load_hf_electra_generator(directory)
    assert isinstance(model, electra.ElectraGenerator)
    out = model.apply({"params": params}, jnp.asarray(ids, jnp.int32),
                      token_type_ids=jnp.asarray(types, jnp.int32),
                      attention_mask=jnp.asarray(mask, jnp.int32))
    with torch.no_grad():
        ref = hf_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                       token_type_ids=torch.tensor(types), output_hidden_states=True)
    _assert_close(out["logits"], ref.logits, mask, "generator MLM logits")
    _assert_close(out["hidden"], ref.hidden_states[-1], mask, "generator hidden")


def test_pretraining_pair_runs_both_hf_networks(generator_dir, discriminator_dir):
    """The assembled model's generator logits equal HF's generator run on the discriminator's
    embeddings, and its discriminator equals HF's discriminator on the sampled inputs."""
    gen_hf, gen_dir = generator_dir
    disc_hf, disc_dir = discriminator_dir
    model, params = convert.load_hf_electra_pretraining(gen_dir, disc_dir)
    cfg = model.config
    assert (cfg.embed_dim, cfg.generator_embed_dim, cfg.embedding_size) == (32, 8, 16)
    # One embedding table, the discriminator's; the generator subtree has none.
    assert "embeddings" not in params["generator"]
    np.testing.assert_array_equal(
        params["embeddings"]["token_embed"]["embedding"],
        disc_hf.electra.embeddings.word_embeddings.weight.detach().numpy(),
    )
    # Independently noised HF pair: the two copies differ, so check_shared refuses it.
    with pytest.raises(ValueError, match="embeddings differ"):
        convert.load_hf_electra_pretraining(gen_dir, disc_dir, check_shared=True)

    ids, mask, types = _batch(SHARED["vocab_size"], seed=2)
    weights = np.zeros(ids.shape, np.float32)
    weights[:, 1:3] = 1.0
    out = model.apply({"params": params}, jnp.asarray(ids, jnp.int32),
                      token_type_ids=jnp.asarray(types, jnp.int32),
                      attention_mask=jnp.asarray(mask, jnp.int32),
                      mlm_weights=jnp.asarray(weights), rngs={"sample": jax.random.key(3)})
    shared = {k: v for k, v in gen_hf.state_dict().items()}
    for name, value in disc_hf.electra.embeddings.state_dict().items():
        shared[f"electra.embeddings.{name}"] = value
    shared["generator_lm_head.weight"] = shared["electra.embeddings.word_embeddings.weight"]
    gen_on_disc_embeddings = transformers.ElectraForMaskedLM(gen_hf.config).eval()
    gen_on_disc_embeddings.load_state_dict(shared)
    gen_on_disc_embeddings.tie_weights()
    sampled = np.asarray(out["discriminator_inputs"])
    with torch.no_grad():
        gen_ref = gen_on_disc_embeddings(
            input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
            token_type_ids=torch.tensor(types))
        disc_ref = disc_hf(
            input_ids=torch.tensor(sampled, dtype=torch.long), attention_mask=torch.tensor(mask),
            token_type_ids=torch.tensor(types))
    _assert_close(out["generator_logits"], gen_ref.logits, mask, "pretraining generator logits")
    _assert_close(out["discriminator_logits"], disc_ref.logits, mask, "pretraining disc logits")
    np.testing.assert_array_equal(np.where(weights > 0, ids, sampled), ids)


def test_generator_checkpoint_is_not_a_discriminator(tmp_path):
    """Read as a discriminator, a generator checkpoint lacks the discriminator head."""
    config = transformers.ElectraConfig(**SHARED, **DISCRIMINATOR)
    transformers.ElectraForMaskedLM(config).save_pretrained(tmp_path, safe_serialization=True)
    with pytest.raises(ValueError, match="discriminator_predictions.dense.weight"):
        hf_electra.discriminator_params_from_hf(tmp_path)
