"""Checkpoint-format tests of lmjax.convert.hf_bert: layout, tied copies, configs and errors."""

import json

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

# The references are test-only dependencies (pyproject [test] extra): missing is an error, not a skip.
import torch  # noqa: E402
import transformers  # noqa: E402

from lmjax import convert  # noqa: E402
from lmjax.models import bert  # noqa: E402

TINY = dict(
    vocab_size=50,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=24,
    max_position_embeddings=12,
)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(transformers.BertConfig(**TINY)).eval()
    directory = tmp_path_factory.mktemp("bert")
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def _rewritten(source, target, edit_tensors=None, edit_config=None):
    """Copies ``source`` to ``target`` with its tensors and / or config.json edited."""
    target.mkdir()
    config = json.loads((source / "config.json").read_text())
    (target / "config.json").write_text(json.dumps(edit_config(config) if edit_config else config))
    tensors = dict(convert.hf_tensors(source))
    save_file(edit_tensors(tensors) if edit_tensors else tensors, str(target / "model.safetensors"))
    return target


def test_layout_transposes_linears_and_splits_heads(bert_dir):
    params = convert.bert_params_from_hf(bert_dir)
    cfg = convert.bert_config_from_hf(bert_dir)
    assert jax.tree.map(np.shape, params) == jax.tree.map(
        lambda x: tuple(x.shape), bert.param_shapes(cfg)
    )
    tensors = convert.hf_tensors(bert_dir)
    key = tensors["bert.encoder.layer.1.attention.self.key.weight"]  # [out E, in E]
    ours = params["encoder"]["layers"]["attention"]["key"]["kernel"][1]  # [E, H, D], D = 8
    np.testing.assert_array_equal(ours[:, 1, 3], key[8 * 1 + 3])
    out = tensors["bert.encoder.layer.0.attention.output.dense.weight"]  # [out E, in E]
    np.testing.assert_array_equal(
        params["encoder"]["layers"]["attention"]["out"]["kernel"][0][1, 2], out[:, 8 + 2]
    )
    np.testing.assert_array_equal(params["nsp"]["kernel"], tensors["cls.seq_relationship.weight"].T)
    unscanned = convert.bert_params_from_hf(
        bert_dir, convert.bert_model_config(bert_dir, scan_layers=False)
    )
    np.testing.assert_array_equal(
        unscanned["encoder"]["layers_1"]["mlp"]["wi"]["kernel"],
        tensors["bert.encoder.layer.1.intermediate.dense.weight"].T,
    )
    halves = convert.bert_params_from_hf(
        bert_dir, convert.bert_model_config(bert_dir, param_dtype="bfloat16")
    )
    assert halves["mlm_bias"].dtype == jax.numpy.bfloat16


def test_missing_misshaped_and_unexpected_tensors_are_named(bert_dir, tmp_path):
    name = "bert.encoder.layer.1.output.dense.bias"
    missing = _rewritten(
        bert_dir, tmp_path / "missing", lambda t: {k: v for k, v in t.items() if k != name}
    )
    with pytest.raises(ValueError, match=f"'{name}' is missing"):
        convert.bert_params_from_hf(missing)

    def misshape(tensors):
        tensors["bert.pooler.dense.weight"] = np.zeros((16, 15), np.float32)
        return tensors

    with pytest.raises(ValueError, match=r"'bert.pooler.dense.weight' has shape \(16, 15\)"):
        convert.bert_params_from_hf(_rewritten(bert_dir, tmp_path / "shape", misshape))

    def extra(tensors):
        tensors["classifier.weight"] = np.zeros((3, 16), np.float32)
        return tensors

    extra_dir = _rewritten(bert_dir, tmp_path / "extra", extra)
    with pytest.raises(ValueError, match="classifier.weight"):
        convert.bert_params_from_hf(extra_dir)
    assert "classifier" not in convert.bert_params_from_hf(extra_dir, skip_unexpected=True)

    no_nsp = convert.bert_model_config(bert_dir, nsp_head=False)
    with pytest.raises(ValueError, match="cls.seq_relationship.bias"):
        convert.bert_params_from_hf(bert_dir, no_nsp)
    assert "nsp" not in convert.bert_params_from_hf(bert_dir, no_nsp, skip_unexpected=True)


def test_stored_tied_copies_are_checked(bert_dir, tmp_path):
    def tied(tensors):
        table = tensors["bert.embeddings.word_embeddings.weight"]
        tensors["cls.predictions.decoder.weight"] = table
        tensors["cls.predictions.decoder.bias"] = tensors["cls.predictions.bias"]
        return tensors

    assert "mlm_bias" in convert.bert_params_from_hf(_rewritten(bert_dir, tmp_path / "tied", tied))

    def untied(tensors):
        tensors = tied(tensors)
        tensors["cls.predictions.decoder.weight"] = tensors["cls.predictions.decoder.weight"] + 1.0
        return tensors

    with pytest.raises(ValueError, match="'cls.predictions.decoder.weight' differs"):
        convert.bert_params_from_hf(_rewritten(bert_dir, tmp_path / "untied", untied))


def test_unsupported_configs_are_refused(bert_dir, tmp_path):
    relative = _rewritten(
        bert_dir,
        tmp_path / "relative",
        edit_config=lambda c: {**c, "position_embedding_type": "relative_key"},
    )
    with pytest.raises(ValueError, match="position_embedding_type='relative_key'"):
        convert.bert_model_config(relative)
    gpt = _rewritten(bert_dir, tmp_path / "gpt", edit_config=lambda c: {**c, "model_type": "gpt2"})
    with pytest.raises(ValueError, match="Unsupported Hugging Face model_type 'gpt2'"):
        convert.bert_params_from_hf(gpt)


def test_bare_checkpoint_without_prefix_is_read(tmp_path):
    torch.manual_seed(1)
    model = transformers.BertModel(transformers.BertConfig(**TINY), add_pooling_layer=False)
    model.save_pretrained(tmp_path, safe_serialization=True)
    assert not any(n.startswith("bert.") for n in convert.hf_tensors(tmp_path))
    cfg = convert.bert_config_from_hf(tmp_path)
    assert (cfg.pooler, cfg.mlm_head, cfg.nsp_head) == (False, False, False)
    params = convert.bert_params_from_hf(tmp_path)
    assert set(params) == {"token_embed", "position_embed", "type_embed", "embed_norm", "encoder"}

