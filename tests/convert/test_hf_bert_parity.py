"""Parity of lmjax BERT / RoBERTa with Hugging Face's PyTorch models on converted checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# The references are test-only dependencies (pyproject [test] extra): missing is an error, not a skip.
import torch  # noqa: E402
import transformers  # noqa: E402

from lmjax import convert, models  # noqa: E402
from lmjax.models import bert  # noqa: E402
from tests.hf_reference import noised  # noqa: E402

TINY = dict(
    vocab_size=97,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=24,
    attn_implementation="eager",
)
TOL = 1e-4


def _save(model, directory):
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def _batch(vocab, pad_id, seed=0, lengths=(11, 7, 4)):
    """Token ids with right padding (pad_id) and the 1/0 attention mask, [3, 11]."""
    rng = np.random.default_rng(seed)
    length = max(lengths)
    ids = rng.integers(pad_id + 1, vocab, size=(len(lengths), length))
    mask = (np.arange(length)[None] < np.array(lengths)[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, pad_id)
    types = (np.arange(length)[None] >= np.array(lengths)[:, None] // 2).astype(np.int64) * mask
    return ids, mask, types


def _run_lmjax(directory, ids, mask, types=None, **overrides):
    model, params = convert.load_hf_bert(directory, **overrides)
    out = model.apply(
        {"params": params},
        jnp.asarray(ids, jnp.int32),
        token_type_ids=None if types is None else jnp.asarray(types, jnp.int32),
        attention_mask=jnp.asarray(mask, jnp.int32),
    )
    return jax.tree.map(np.asarray, out)


def _assert_close(ours, theirs, name):
    theirs = theirs.detach().numpy()
    assert ours.shape == theirs.shape, name
    diff = float(np.max(np.abs(ours - theirs)))
    assert diff <= TOL, f"{name}: max abs diff {diff}"


@pytest.fixture(scope="module")
def bert_pretraining(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.BertConfig(**TINY, type_vocab_size=2, hidden_act="gelu")
    model = noised(transformers.BertForPreTraining(config), seed=1)
    return model, _save(model, tmp_path_factory.mktemp("bert_pretraining"))


@pytest.fixture(scope="module")
def roberta_mlm(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.RobertaConfig(
        **{**TINY, "max_position_embeddings": 11 + 2 + 3},
        type_vocab_size=1,
        pad_token_id=1,
        layer_norm_eps=1e-5,
    )
    model = noised(transformers.RobertaForMaskedLM(config), seed=2)
    return model, _save(model, tmp_path_factory.mktemp("roberta_mlm"))


@pytest.mark.parametrize("scan_layers", [True, False])
def test_bert_for_pretraining_matches_hf(bert_pretraining, scan_layers):
    hf_model, directory = bert_pretraining
    ids, mask, types = _batch(TINY["vocab_size"], pad_id=0)
    with torch.no_grad():
        ref = hf_model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            token_type_ids=torch.tensor(types),
            output_hidden_states=True,
        )
        base = hf_model.bert(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            token_type_ids=torch.tensor(types),
        )
    ours = _run_lmjax(directory, ids, mask, types, scan_layers=scan_layers)
    assert set(ours) == {"hidden", "pooled", "logits", "nsp_logits"}
    _assert_close(ours["hidden"], ref.hidden_states[-1], "hidden")
    _assert_close(ours["pooled"], base.pooler_output, "pooled")
    _assert_close(ours["logits"], ref.prediction_logits, "MLM logits")
    _assert_close(ours["nsp_logits"], ref.seq_relationship_logits, "NSP logits")
    assert ours["logits"].dtype == np.float32 and ours["nsp_logits"].dtype == np.float32


def test_parity_tolerance_tells_the_variants_apart(bert_pretraining):
    """Guards the parity test: the tanh GELU, dropped types or no mask move outputs beyond TOL."""
    _, directory = bert_pretraining
    ids, mask, types = _batch(TINY["vocab_size"], pad_id=0)
    full = _run_lmjax(directory, ids, mask, types)
    tanh_gelu = _run_lmjax(directory, ids, mask, types, activation="gelu_tanh")
    assert np.max(np.abs(full["logits"] - tanh_gelu["logits"])) > TOL
    no_types = _run_lmjax(directory, ids, mask, None)
    no_mask = _run_lmjax(directory, ids, np.ones_like(mask), types)
    assert np.max(np.abs(full["hidden"] - no_types["hidden"])) > 1e-2
    # the padded row differs without the mask; the full-length row 0 is unaffected
    assert np.max(np.abs(full["hidden"][1] - no_mask["hidden"][1])) > 1e-2
    np.testing.assert_allclose(full["hidden"][0], no_mask["hidden"][0], atol=1e-6)


def test_bert_masked_lm_and_bare_model_match_hf(tmp_path):
    torch.manual_seed(3)
    config = transformers.BertConfig(**TINY, type_vocab_size=2)
    mlm = noised(transformers.BertForMaskedLM(config), seed=4)
    encoder = noised(transformers.BertModel(config), seed=5)
    ids, mask, types = _batch(TINY["vocab_size"], pad_id=0, seed=1)
    inputs = dict(
        input_ids=torch.tensor(ids),
        attention_mask=torch.tensor(mask),
        token_type_ids=torch.tensor(types),
    )
    with torch.no_grad():
        mlm_ref, encoder_ref = mlm(**inputs), encoder(**inputs)

    mlm_dir = _save(mlm, tmp_path / "mlm")
    cfg = convert.bert_config_from_hf(mlm_dir)
    assert (cfg.pooler, cfg.mlm_head, cfg.nsp_head) == (False, True, False)
    ours = _run_lmjax(mlm_dir, ids, mask, types)
    assert set(ours) == {"hidden", "logits"}
    _assert_close(ours["logits"], mlm_ref.logits, "BertForMaskedLM logits")

    encoder_dir = _save(encoder, tmp_path / "encoder")
    cfg = convert.bert_config_from_hf(encoder_dir)
    assert (cfg.pooler, cfg.mlm_head, cfg.nsp_head) == (True, False, False)
    ours = _run_lmjax(encoder_dir, ids, mask, types)
    assert set(ours) == {"hidden", "pooled"}
    _assert_close(ours["hidden"], encoder_ref.last_hidden_state, "BertModel hidden")
    _assert_close(ours["pooled"], encoder_ref.pooler_output, "BertModel pooled")


def test_roberta_masked_lm_matches_hf_on_padded_inputs(roberta_mlm):
    hf_model, directory = roberta_mlm
    ids, mask, _ = _batch(TINY["vocab_size"], pad_id=1, seed=2)
    with torch.no_grad():
        ref = hf_model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            output_hidden_states=True,
        )
    cfg = convert.bert_config_from_hf(directory)
    assert cfg.position_convention == "fairseq" and cfg.pad_token_id == 1
    assert (cfg.pooler, cfg.mlm_head, cfg.nsp_head, cfg.type_vocab_size) == (False, True, False, 1)
    ours = _run_lmjax(directory, ids, mask)
    _assert_close(ours["hidden"], ref.hidden_states[-1], "RoBERTa hidden")
    _assert_close(ours["logits"], ref.logits, "RoBERTa MLM logits")

    # With BERT's arange positions the padded rows come out different: the offset matters.
    model, params = convert.load_hf_bert(directory, position_convention="arange")
    arange = model.apply(
        {"params": params}, jnp.asarray(ids, jnp.int32), attention_mask=jnp.asarray(mask)
    )
    assert np.max(np.abs(np.asarray(arange["hidden"]) - ours["hidden"])) > 1e-2


def test_roberta_bare_model_with_pooler_matches_hf(tmp_path):
    torch.manual_seed(6)
    config = transformers.RobertaConfig(
        **{**TINY, "max_position_embeddings": 16}, type_vocab_size=1, pad_token_id=1
    )
    model = noised(transformers.RobertaModel(config), seed=7)
    ids, mask, _ = _batch(TINY["vocab_size"], pad_id=1, seed=3)
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    directory = _save(model, tmp_path / "roberta")
    ours = _run_lmjax(directory, ids, mask)
    assert set(ours) == {"hidden", "pooled"}
    _assert_close(ours["hidden"], ref.last_hidden_state, "RobertaModel hidden")
    _assert_close(ours["pooled"], ref.pooler_output, "RobertaModel pooled")


def test_fairseq_positions_follow_hf(roberta_mlm):
    ids, _, _ = _batch(TINY["vocab_size"], pad_id=1, seed=4)
    ids[2, 0] = 1  # a pad inside a row is skipped too
    theirs = transformers.models.roberta.modeling_roberta.RobertaEmbeddings
    ref = theirs.create_position_ids_from_input_ids(torch.tensor(ids), padding_idx=1)
    ours = bert.fairseq_positions(jnp.asarray(ids), 1)
    np.testing.assert_array_equal(np.asarray(ours), ref.numpy())
    assert int(ours[0, 0]) == 2 and int(ours[1, -1]) == 1


def test_config_json_to_lmjax_config(bert_pretraining):
    _, directory = bert_pretraining
    cfg = convert.bert_model_config(directory, scan_layers=False)
    assert cfg.family == "bert"
    assert (cfg.vocab_size, cfg.embed_dim, cfg.num_layers, cfg.num_heads, cfg.mlp_dim) == (
        97, 32, 2, 4, 48,
    )
    assert (cfg.max_len, cfg.type_vocab_size, cfg.layer_norm_eps) == (24, 2, 1e-12)
    assert cfg.activation == "gelu" and cfg.scan_layers is False
    assert isinstance(models.build(cfg), bert.BERT)
