"""Parity of lmjax ALBERT with Hugging Face's PyTorch models on converted checkpoints."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# The references are test-only dependencies (pyproject [test] extra): missing is an error,
# not a skip.
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from lmjax import convert, models  # noqa: E402
from lmjax.models import albert  # noqa: E402
from tests.hf_reference import noised  # noqa: E402

TINY = dict(
    vocab_size=97,
    embedding_size=16,
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=24,
    type_vocab_size=2,
    attn_implementation="eager",
)
TOL = 1e-4


def _save(model, directory):
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def _batch(vocab, seed=0, lengths=(11, 7, 4)):
    """Token ids with right padding (0), the 1/0 attention mask and A/B token types, [3, 11]."""
    rng = np.random.default_rng(seed)
    length = max(lengths)
    ids = rng.integers(1, vocab, size=(len(lengths), length))
    mask = (np.arange(length)[None] < np.array(lengths)[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, 0)
    types = (np.arange(length)[None] >= np.array(lengths)[:, None] // 2).astype(np.int64) * mask
    return ids, mask, types


def _torch_inputs(ids, mask, types):
    return dict(
        input_ids=torch.tensor(ids),
        attention_mask=torch.tensor(mask),
        token_type_ids=torch.tensor(types),
    )


def _run_lmjax(directory, ids, mask, types, **overrides):
    model, params = convert.load_hf_albert(directory, **overrides)
    out = model.apply(
        {"params": params},
        jnp.asarray(ids, jnp.int32),
        token_type_ids=jnp.asarray(types, jnp.int32),
        attention_mask=jnp.asarray(mask, jnp.int32),
    )
    return jax.tree.map(np.asarray, out)


def _assert_close(ours, theirs, name):
    theirs = theirs.detach().numpy()
    assert ours.shape == theirs.shape, name
    diff = float(np.max(np.abs(ours - theirs)))
    assert diff <= TOL, f"{name}: max abs diff {diff}"


def _pretraining(directory, num_groups, seed):
    torch.manual_seed(seed)
    config = transformers.AlbertConfig(**TINY, num_hidden_groups=num_groups)
    assert config.hidden_act == "gelu_new"  # ALBERT's default: the tanh GELU
    model = noised(transformers.AlbertForPreTraining(config), seed=seed + 1)
    return model, _save(model, directory)


@pytest.fixture(scope="module")
def albert_pretraining(tmp_path_factory):
    return _pretraining(tmp_path_factory.mktemp("albert_pretraining"), num_groups=1, seed=0)


@pytest.fixture(scope="module")
def albert_two_groups(tmp_path_factory):
    return _pretraining(tmp_path_factory.mktemp("albert_two_groups"), num_groups=2, seed=2)


def _check_pretraining(hf_model, directory, **overrides):
    ids, mask, types = _batch(TINY["vocab_size"])
    with torch.no_grad():
        ref = hf_model(**_torch_inputs(ids, mask, types))
        base = hf_model.albert(**_torch_inputs(ids, mask, types))
    ours = _run_lmjax(directory, ids, mask, types, **overrides)
    assert set(ours) == {"hidden", "pooled", "logits", "sop_logits"}
    _assert_close(ours["hidden"], base.last_hidden_state, "hidden")
    _assert_close(ours["pooled"], base.pooler_output, "pooled")
    _assert_close(ours["logits"], ref.prediction_logits, "MLM logits")
    _assert_close(ours["sop_logits"], ref.sop_logits, "SOP logits")
    assert ours["logits"].dtype == np.float32 and ours["sop_logits"].dtype == np.float32
    return ours


@pytest.mark.parametrize("scan_layers", [True, False])
def test_albert_for_pretraining_matches_hf(albert_pretraining, scan_layers):
    hf_model, directory = albert_pretraining
    cfg = convert.albert_config_from_hf(directory, scan_layers=scan_layers)
    assert (cfg.num_layers, cfg.num_groups, cfg.embedding_size, cfg.activation) == (
        4, 1, 16, "gelu_tanh",
    )
    assert (cfg.pooler, cfg.mlm_head, cfg.sop_head) == (True, True, True)
    _, params = convert.load_hf_albert(directory, scan_layers=scan_layers)
    assert set(params["encoder"]) == {"layers_0"}  # one shared layer, no layer axis
    assert params["encoder"]["layers_0"]["mlp"]["wi"]["kernel"].shape == (32, 48)
    _check_pretraining(hf_model, directory, scan_layers=scan_layers)


@pytest.mark.parametrize("scan_layers", [True, False])
def test_two_hidden_groups_match_hf(albert_two_groups, scan_layers):
    hf_model, directory = albert_two_groups
    _, params = convert.load_hf_albert(directory, scan_layers=scan_layers)
    assert set(params["encoder"]) == {"layers_0", "layers_1"}
    hf_ffn = hf_model.albert.encoder.albert_layer_groups[1].albert_layers[0].ffn.weight
    np.testing.assert_array_equal(
        params["encoder"]["layers_1"]["mlp"]["wi"]["kernel"], hf_ffn.detach().numpy().T
    )
    _check_pretraining(hf_model, directory, scan_layers=scan_layers)


def test_parity_tolerance_tells_the_variants_apart(albert_pretraining, albert_two_groups):
    """Guards the parity tests: exact GELU, swapped groups, dropped types or mask exceed TOL."""
    _, directory = albert_pretraining
    ids, mask, types = _batch(TINY["vocab_size"])
    full = _run_lmjax(directory, ids, mask, types)
    exact_gelu = _run_lmjax(directory, ids, mask, types, activation="gelu")
    assert np.max(np.abs(full["logits"] - exact_gelu["logits"])) > TOL
    no_types = _run_lmjax(directory, ids, mask, np.zeros_like(types))
    assert np.max(np.abs(full["hidden"] - no_types["hidden"])) > 1e-2
    no_mask = _run_lmjax(directory, ids, np.ones_like(mask), types)
    assert np.max(np.abs(full["hidden"][1] - no_mask["hidden"][1])) > 1e-2
    np.testing.assert_allclose(full["hidden"][0], no_mask["hidden"][0], atol=1e-6)

    # Two groups: applying the groups in the other order gives another encoder output.
    hf_model, directory = albert_two_groups
    model, params = convert.load_hf_albert(directory)
    swapped = dict(params, encoder={
        "layers_0": params["encoder"]["layers_1"], "layers_1": params["encoder"]["layers_0"]
    })
    args = (jnp.asarray(ids, jnp.int32), jnp.asarray(types, jnp.int32), jnp.asarray(mask))
    a = model.apply({"params": params}, *args)["hidden"]
    b = model.apply({"params": swapped}, *args)["hidden"]
    assert np.max(np.abs(np.asarray(a) - np.asarray(b))) > 1e-2


def test_albert_masked_lm_and_bare_model_match_hf(tmp_path):
    torch.manual_seed(4)
    config = transformers.AlbertConfig(**TINY)
    mlm = noised(transformers.AlbertForMaskedLM(config), seed=5)
    encoder = noised(transformers.AlbertModel(config), seed=6)
    ids, mask, types = _batch(TINY["vocab_size"], seed=1)
    with torch.no_grad():
        mlm_ref = mlm(**_torch_inputs(ids, mask, types))
        encoder_ref = encoder(**_torch_inputs(ids, mask, types))

    mlm_dir = _save(mlm, tmp_path / "mlm")
    cfg = convert.albert_config_from_hf(mlm_dir)
    assert (cfg.pooler, cfg.mlm_head, cfg.sop_head) == (False, True, False)
    ours = _run_lmjax(mlm_dir, ids, mask, types)
    assert set(ours) == {"hidden", "logits"}
    _assert_close(ours["logits"], mlm_ref.logits, "AlbertForMaskedLM logits")

    encoder_dir = _save(encoder, tmp_path / "encoder")
    cfg = convert.albert_config_from_hf(encoder_dir)
    assert (cfg.pooler, cfg.mlm_head, cfg.sop_head) == (True, False, False)
    ours = _run_lmjax(encoder_dir, ids, mask, types)
    assert set(ours) == {"hidden", "pooled"}
    _assert_close(ours["hidden"], encoder_ref.last_hidden_state, "AlbertModel hidden")
    _assert_close(ours["pooled"], encoder_ref.pooler_output, "AlbertModel pooled")


def test_unsharing_config_uses_the_stacked_layout(tmp_path):
    """num_hidden_groups == num_hidden_layers shares nothing: BERT's scanned [N, ...] layout."""
    torch.manual_seed(7)
    config = transformers.AlbertConfig(**{**TINY, "num_hidden_layers": 2}, num_hidden_groups=2)
    hf_model = noised(transformers.AlbertForPreTraining(config), seed=8)
    directory = _save(hf_model, tmp_path / "unshared")
    _, params = convert.load_hf_albert(directory)
    assert set(params["encoder"]) == {"layers"}
    assert params["encoder"]["layers"]["mlp"]["wi"]["kernel"].shape == (2, 32, 48)
    _check_pretraining(hf_model, directory)


def _edit_config(directory, **changes):
    path = directory / "config.json"
    values = json.loads(path.read_text())
    values.update(changes)
    path.write_text(json.dumps(values))


def test_converter_rejects_what_it_cannot_convert(albert_pretraining, tmp_path):
    _, directory = albert_pretraining
    cfg = convert.albert_model_config(directory, scan_layers=False)
    assert cfg.family == "albert" and cfg.scan_layers is False
    assert isinstance(models.build(cfg), albert.ALBERT)
    with pytest.raises(ValueError, match="num_groups=2 but the checkpoint"):
        convert.albert_params_from_hf(directory, dict(cfg.to_dict(), num_groups=2))
    with pytest.raises(ValueError, match="does not use.*sop_classifier"):
        convert.albert_params_from_hf(directory, dict(cfg.to_dict(), sop_head=False))
    params = convert.albert_params_from_hf(
        directory, dict(cfg.to_dict(), sop_head=False), skip_unexpected=True
    )
    assert "sop" not in params

    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("config.json", "model.safetensors"):
        (copy / name).write_bytes((directory / name).read_bytes())
    _edit_config(copy, inner_group_num=2)
    with pytest.raises(ValueError, match="inner_group_num=2"):
        convert.albert_config_from_hf(copy)
    _edit_config(copy, inner_group_num=1, num_hidden_layers=18, num_hidden_groups=14)
    with pytest.raises(ValueError, match="layer 9: HF 6, lmjax 7"):
        convert.albert_config_from_hf(copy)
    _edit_config(copy, num_hidden_layers=4, num_hidden_groups=1, model_type="bert")
    with pytest.raises(ValueError, match="model_type 'bert'"):
        convert.albert_config_from_hf(copy)

    # A stored decoder copy is accepted when it equals the table and rejected when it does not.
    _edit_config(copy, model_type="albert")
    tensors = convert.hf_tensors(directory)
    table = tensors["albert.embeddings.word_embeddings.weight"]
    save_file(dict(tensors, **{"predictions.decoder.weight": table}), copy / "model.safetensors")
    assert set(convert.load_hf_albert(copy)[1]) == set(convert.load_hf_albert(directory)[1])
    save_file(
        dict(tensors, **{"predictions.decoder.weight": table + 1.0}), copy / "model.safetensors"
    )
    with pytest.raises(ValueError, match="'predictions.decoder.weight' differs"):
        convert.load_hf_albert(copy)
