"""Checkpoint-format tests of lmjax.convert: sharding, legacy names, dtypes, configs and errors."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

# The references are test-only dependencies (pyproject [test] extra): missing is an error, not a skip.
import torch  # noqa: E402
import transformers  # noqa: E402

from lmjax import convert, models  # noqa: E402
from lmjax.models import gpt  # noqa: E402

TINY = dict(n_layer=2, n_embd=32, n_head=4, vocab_size=300, n_positions=16)


def _save(model, directory, **kwargs):
    model.save_pretrained(directory, safe_serialization=True, **kwargs)
    return directory


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(**TINY, bos_token_id=None, eos_token_id=None)
    )
    return _save(model.eval(), tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def openai_gpt(tmp_path_factory):
    torch.manual_seed(1)
    model = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(**TINY)).eval()
    return model, _save(model, tmp_path_factory.mktemp("openai_gpt"))


def _flat(params):
    leaves = jax.tree_util.tree_leaves_with_path(params)
    return {jax.tree_util.keystr(path): np.asarray(x) for path, x in leaves}


def _assert_same_params(a, b):
    a, b = _flat(a), _flat(b)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _rewritten_checkpoint(source, target, edit):
    """Copies ``source``'s config and writes ``edit(tensors)`` as its model.safetensors."""
    target.mkdir()
    shutil.copy(source / "config.json", target / "config.json")
    tensors = dict(convert.hf_tensors(source))
    save_file(edit(tensors), str(target / "model.safetensors"))
    return target


def test_params_follow_the_model_tree_and_hf_layout(gpt2_dir):
    params = convert.gpt_params_from_hf(gpt2_dir)  # scanned, the default
    shapes = gpt.param_shapes(convert.gpt_config_from_hf(gpt2_dir))
    assert jax.tree.map(lambda x: (x.shape, x.dtype), params) == jax.tree.map(
        lambda x: (x.shape, x.dtype), shapes
    )
    tensors = convert.hf_tensors(gpt2_dir)
    c_attn = tensors["transformer.h.1.attn.c_attn.weight"]  # [E, 3E] = q | k | v columns
    key = params["decoder"]["layers"]["attention"]["key"]["kernel"][1]  # [E, H, D]
    # column 32 + 8 * h + d of c_attn is key head h, dim d
    np.testing.assert_array_equal(key[:, 2, 5], c_attn[:, 32 + 8 * 2 + 5])
    out = params["decoder"]["layers"]["attention"]["out"]["kernel"][1]  # [H, D, E]
    c_proj = tensors["transformer.h.1.attn.c_proj.weight"]  # [E, E], row 8 * h + d
    np.testing.assert_array_equal(out[3, 1], c_proj[8 * 3 + 1])
    unscanned = convert.gpt_params_from_hf(
        gpt2_dir, convert.lmjax_model_config(gpt2_dir, scan_layers=False)
    )
    _assert_same_params(gpt.to_scanned_layout(unscanned, 2), params)


def test_sharded_checkpoint_converts_like_a_single_file(gpt2_dir, tmp_path):
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir)
    sharded = _save(model, tmp_path / "sharded", max_shard_size="20KB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert not (sharded / "model.safetensors").exists()
    _assert_same_params(convert.gpt_params_from_hf(sharded), convert.gpt_params_from_hf(gpt2_dir))


def test_legacy_names_buffers_and_tied_head_are_accepted(gpt2_dir, tmp_path):
    def legacy(tensors):
        out = {k.removeprefix("transformer."): v for k, v in tensors.items()}
        for i in range(2):  # the causal-mask buffers old GPT-2 files stored
            out[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 16, 16), np.float32))
            out[f"h.{i}.attn.masked_bias"] = np.asarray(-1e4, np.float32)
        out["lm_head.weight"] = out["wte.weight"].copy()
        return out

    legacy_dir = _rewritten_checkpoint(gpt2_dir, tmp_path / "legacy", legacy)
    _assert_same_params(
        convert.gpt_params_from_hf(legacy_dir), convert.gpt_params_from_hf(gpt2_dir)
    )


def test_untied_lm_head_is_rejected(gpt2_dir, tmp_path):
    def untied(tensors):
        tensors["lm_head.weight"] = tensors["transformer.wte.weight"] + 1.0
        return tensors

    with pytest.raises(ValueError, match="lm_head.weight"):
        convert.gpt_params_from_hf(_rewritten_checkpoint(gpt2_dir, tmp_path / "untied", untied))


def test_missing_unexpected_and_misshapen_tensors_are_named(gpt2_dir, tmp_path):
    def without_mlp(tensors):
        del tensors["transformer.h.1.mlp.c_fc.bias"]
        return tensors

    missing = _rewritten_checkpoint(gpt2_dir, tmp_path / "missing", without_mlp)
    with pytest.raises(ValueError, match=r"'h\.1\.mlp\.c_fc\.bias' is missing"):
        convert.gpt_params_from_hf(missing)

    def with_head(tensors):
        tensors["multiple_choice_head.summary.weight"] = np.zeros((1, 32), np.float32)
        return tensors

    extra = _rewritten_checkpoint(gpt2_dir, tmp_path / "extra", with_head)
    with pytest.raises(ValueError, match="multiple_choice_head.summary.weight"):
        convert.gpt_params_from_hf(extra)
    _assert_same_params(
        convert.gpt_params_from_hf(extra, skip_unexpected=True),
        convert.gpt_params_from_hf(gpt2_dir),
    )

    wider = convert.lmjax_model_config(gpt2_dir, vocab_size=301)
    with pytest.raises(ValueError, match=r"'wte\.weight' has shape \(300, 32\).*\(301, 32\)"):
        convert.gpt_params_from_hf(gpt2_dir, wider)


def test_files_that_are_not_there_give_clear_errors(gpt2_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        convert.gpt_params_from_hf(tmp_path)
    only_config = tmp_path / "only_config"
    only_config.mkdir()
    shutil.copy(gpt2_dir / "config.json", only_config / "config.json")
    with pytest.raises(FileNotFoundError, match="safe_serialization=True"):
        convert.gpt_params_from_hf(only_config)
    (only_config / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"transformer.wte.weight": "model-00001-of-00002.safetensors"}})
    )
    with pytest.raises(FileNotFoundError, match="model-00001-of-00002"):
        convert.gpt_params_from_hf(only_config)


def test_bfloat16_checkpoints_and_param_dtype(gpt2_dir, tmp_path):
    model = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir).to(torch.bfloat16)
    bf16_dir = _save(model, tmp_path / "bf16")
    tensors = convert.hf_tensors(bf16_dir)
    assert tensors["transformer.wte.weight"].dtype == jnp.bfloat16
    as_f32 = convert.gpt_params_from_hf(bf16_dir)
    reference = model.transformer.wte.weight.detach().float().numpy()
    np.testing.assert_array_equal(as_f32["token_embed"]["embedding"], reference)
    as_bf16 = convert.gpt_params_from_hf(
        bf16_dir, convert.lmjax_model_config(bf16_dir, param_dtype="bfloat16")
    )
    assert {x.dtype for x in jax.tree.leaves(as_bf16)} == {np.dtype(jnp.bfloat16)}


def test_gpt1_special_token_rows_are_appended(openai_gpt):
    hf, directory = openai_gpt
    model, params = convert.load_hf_gpt(directory, added_token_rows=3, added_token_seed=7)
    assert model.config.vocab_size == 303
    table = params["token_embed"]["embedding"]  # [303, 32]
    np.testing.assert_array_equal(table[:300], hf.transformer.tokens_embed.weight.detach().numpy())
    assert 0.005 < table[300:].std() < 0.05  # N(0, initializer_range = 0.02)
    again = convert.gpt_params_from_hf(
        directory, model.config, added_token_rows=3, added_token_seed=7
    )
    np.testing.assert_array_equal(again["token_embed"]["embedding"], table)
    tokens = np.random.default_rng(0).integers(0, 300, (1, 10))
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(tokens))["logits"])
    with torch.no_grad():
        theirs = hf(torch.as_tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(ours[..., :300], theirs, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="norm='post'"):
        convert.gpt_params_from_hf(directory, dict(models.config_dict("gpt", "tiny")))


def _write_config(directory, values):
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(values))
    return directory


ARCHITECTURE = (
    "vocab_size", "max_len", "num_layers", "embed_dim", "num_heads", "mlp_dim", "norm",
    "final_norm", "activation", "layer_norm_eps",
)


@pytest.mark.parametrize(
    "hf_config_class, preset", [("GPT2Config", "gpt2"), ("OpenAIGPTConfig", "gpt1")]
)
def test_full_size_configs_map_to_the_presets(tmp_path, hf_config_class, preset):
    getattr(transformers, hf_config_class)().save_pretrained(tmp_path)
    cfg = convert.gpt_config_from_hf(tmp_path)
    for field in ARCHITECTURE:
        assert getattr(cfg, field) == getattr(gpt.PRESETS[preset], field), field
    if preset == "gpt1":
        with_specials = convert.gpt_config_from_hf(tmp_path, added_token_rows=3)
        assert with_specials.vocab_size == gpt.GPT1_VOCAB_WITH_SPECIALS


def test_hub_style_config_with_n_ctx_only(tmp_path):
    hub = dict(
        model_type="gpt2", vocab_size=50257, n_ctx=1024, n_embd=1024, n_head=16, n_layer=24,
        activation_function="gelu_new", layer_norm_epsilon=1e-5,
    )
    cfg = convert.gpt_config_from_hf(_write_config(tmp_path / "hub", hub), scan_layers=False)
    preset = gpt.PRESETS["gpt2-medium"]
    assert [getattr(cfg, f) for f in ARCHITECTURE] == [getattr(preset, f) for f in ARCHITECTURE]
    assert cfg.scan_layers is False


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(add_cross_attention=True), "add_cross_attention"),
        (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
        (dict(scale_attn_weights=False), "scale_attn_weights"),
        (dict(tie_word_embeddings=False), "tie_word_embeddings"),
        (dict(activation_function="gelu_10"), "gelu_10"),
        (dict(model_type="bert"), "model_type 'bert'"),
    ],
)
def test_unsupported_configs_are_rejected(tmp_path, change, message):
    values = dict(model_type="gpt2", vocab_size=10, n_positions=8, n_embd=8, n_head=2, n_layer=1)
    values.update(change)
    with pytest.raises(ValueError, match=message):
        convert.lmjax_model_config(_write_config(tmp_path / "cfg", values))
