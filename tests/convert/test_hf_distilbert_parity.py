"""Parity of lmjax DistilBERT with Hugging Face's PyTorch DistilBERT on converted checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# Test-only dependencies (pyproject [test] extra): missing is an error, not a skip.
import torch  # noqa: E402
import transformers  # noqa: E402

from lmjax import convert, models  # noqa: E402
from lmjax.convert import hf_distilbert  # noqa: E402
from lmjax.models import distilbert  # noqa: E402
from tests.hf_reference import noised  # noqa: E402

TINY = dict(
    vocab_size=97,
    dim=32,
    n_layers=2,
    n_heads=4,
    hidden_dim=48,
    max_position_embeddings=24,
    activation="gelu",
    attn_implementation="eager",
)
TOL = 1e-4


def _batch(seed=0, lengths=(11, 7, 4), vocab=97):
    """Token ids with right padding (id 0) and the 1/0 attention mask, [3, 11]."""
    rng = np.random.default_rng(seed)
    length = max(lengths)
    ids = rng.integers(1, vocab, size=(len(lengths), length))
    mask = (np.arange(length)[None] < np.array(lengths)[:, None]).astype(np.int64)
    return np.where(mask == 1, ids, 0), mask


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = noised(transformers.DistilBertForMaskedLM(transformers.DistilBertConfig(**TINY)), 1)
    directory = tmp_path_factory.mktemp("distilbert_mlm")
    model.save_pretrained(directory, safe_serialization=True)
    return model, directory


def _max_diff(ours, theirs, real):
    """Max abs difference over the real (non-pad) positions [B, L, ...]."""
    diff = np.abs(np.asarray(ours) - theirs.detach().numpy())
    return float(np.max(diff[real.astype(bool)]))


@pytest.mark.parametrize("scan_layers", [False, True])
def test_masked_lm_matches_hf(mlm_dir, scan_layers):
    hf_model, directory = mlm_dir
    ids, mask = _batch()
    model, params = convert.load_hf_distilbert(directory, scan_layers=scan_layers)
    assert model.config.mlm_head and model.config.num_layers == 2
    types = np.ones_like(ids)  # ignored by DistilBERT
    out = model.apply(
        {"params": params},
        jnp.asarray(ids, jnp.int32),
        token_type_ids=jnp.asarray(types, jnp.int32),
        attention_mask=jnp.asarray(mask, jnp.int32),
    )
    with torch.no_grad():
        ref = hf_model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            output_hidden_states=True,
        )
    assert out["logits"].dtype == jnp.float32
    assert _max_diff(out["logits"], ref.logits, mask) <= TOL
    assert _max_diff(out["hidden"], ref.hidden_states[-1], mask) <= TOL
    # Padding changes nothing at the real tokens: row 2 alone, unpadded, gives the same logits.
    alone = model.apply({"params": params}, jnp.asarray(ids[2:, :4], jnp.int32))
    np.testing.assert_allclose(alone["logits"][0], out["logits"][2, :4], atol=TOL)


def test_per_layer_hidden_states_match_hf(mlm_dir):
    hf_model, directory = mlm_dir
    ids, mask = _batch(seed=3)
    model, params = convert.load_hf_distilbert(directory, per_layer_outputs=True)
    out = model.apply({"params": params}, jnp.asarray(ids, jnp.int32),
                      attention_mask=jnp.asarray(mask, jnp.int32))
    with torch.no_grad():
        ref = hf_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                       output_hidden_states=True)
    assert out["hidden_states"].shape == (3, 3, 11, 32)  # embeddings + 2 layers
    for i, theirs in enumerate(ref.hidden_states):
        assert _max_diff(out["hidden_states"][i], theirs, mask) <= TOL, i


def test_bare_model_converts_without_head(tmp_path):
    torch.manual_seed(0)
    hf_model = noised(transformers.DistilBertModel(transformers.DistilBertConfig(**TINY)), 2)
    hf_model.save_pretrained(tmp_path, safe_serialization=True)
    ids, mask = _batch(seed=1)
    cfg = hf_distilbert.distilbert_model_config(tmp_path)
    assert cfg.mlm_head is False and cfg.family == "distilbert"
    params = hf_distilbert.distilbert_params_from_hf(tmp_path, cfg)
    out = models.build(cfg).apply({"params": params}, jnp.asarray(ids, jnp.int32),
                                  attention_mask=jnp.asarray(mask, jnp.int32))
    assert "logits" not in out
    with torch.no_grad():
        ref = hf_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    assert _max_diff(out["hidden"], ref.last_hidden_state, mask) <= TOL


def test_converted_tree_matches_param_shapes_and_rejects_mismatch(mlm_dir):
    _, directory = mlm_dir
    cfg = hf_distilbert.distilbert_model_config(directory)
    params = hf_distilbert.distilbert_params_from_hf(directory, cfg)
    want = jax.tree.map(lambda x: x.shape, distilbert.param_shapes(models.make_config(cfg)))
    assert jax.tree.map(lambda x: x.shape, params) == want
    wrong = hf_distilbert.distilbert_model_config(directory, num_heads=2, embed_dim=16)
    with pytest.raises(ValueError, match="word_embeddings"):
        hf_distilbert.distilbert_params_from_hf(directory, wrong)
    no_head = hf_distilbert.distilbert_model_config(directory, mlm_head=False)
    with pytest.raises(ValueError, match="vocab_transform"):
        hf_distilbert.distilbert_params_from_hf(directory, no_head)


def test_rejects_other_model_types():
    with pytest.raises(ValueError, match="model_type"):
        hf_distilbert.distilbert_config_fields({"model_type": "bert"})
