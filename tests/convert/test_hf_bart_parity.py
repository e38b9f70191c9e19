"""Parity of lmjax BART with Hugging Face's PyTorch BART on converted random checkpoints."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# The references are test-only dependencies (pyproject [test] extra): missing is an error, not a skip.
import torch  # noqa: E402
import transformers  # noqa: E402

from lmjax.convert import hf_bart  # noqa: E402
from lmjax.models import bart  # noqa: E402
from tests.hf_reference import noised  # noqa: E402
from transformers.models.bart.modeling_bart import shift_tokens_right  # noqa: E402

TINY = dict(
    vocab_size=61,
    d_model=32,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=48,
    decoder_ffn_dim=48,
    max_position_embeddings=16,
    activation_function="gelu",
    attn_implementation="eager",
)
TOL = 1e-4
PAD, START = 1, 2


def _save(model, directory):
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def _batch(seed=0, enc_lengths=(9, 6, 3), dec_lengths=(7, 5, 2)):
    """Right-padded encoder ids + 1/0 mask [3, 9]; decoder inputs [3, 7] = labels (-100 after
    the end) shifted right with decoder_start first (HF shift_tokens_right, and ours) + mask."""
    rng = np.random.default_rng(seed)
    vocab = TINY["vocab_size"]

    def padded(lengths):
        length = max(lengths)
        ids = rng.integers(3, vocab, size=(len(lengths), length))
        mask = (np.arange(length)[None] < np.array(lengths)[:, None]).astype(np.int64)
        return np.where(mask == 1, ids, PAD), mask

    enc_ids, enc_mask = padded(enc_lengths)
    labels, dec_mask = padded(dec_lengths)
    labels = np.where(dec_mask == 1, labels, -100)  # HF's ignored-label id on padding
    dec_ids = shift_tokens_right(torch.tensor(labels), PAD, START).numpy()
    ours = np.asarray(bart.shift_right(jnp.asarray(labels), START, pad_id=PAD))
    np.testing.assert_array_equal(ours, dec_ids)
    return enc_ids, enc_mask, dec_ids, dec_mask


@pytest.fixture(scope="module")
def bart_lm(tmp_path_factory):
    torch.manual_seed(0)
    model = noised(transformers.BartForConditionalGeneration(transformers.BartConfig(**TINY)), 1)
    with torch.no_grad():  # a nonzero final_logits_bias buffer, so dropping it shows
        model.final_logits_bias.copy_(0.1 * torch.randn(model.final_logits_bias.shape))
    return model, _save(model, tmp_path_factory.mktemp("bart_lm"))


@pytest.fixture(scope="module")
def bart_base_model(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.BartConfig(**{**TINY, "scale_embedding": True})
    model = noised(transformers.BartModel(config), 2)
    return model, _save(model, tmp_path_factory.mktemp("bart_model"))


def _run_lmjax(directory, enc_ids, enc_mask, dec_ids, dec_mask=None, **overrides):
    config, params = hf_bart.load_hf_bart(directory, **overrides)
    out = bart.BART(config).apply(
        {"params": params},
        jnp.asarray(enc_ids, jnp.int32),
        jnp.asarray(dec_ids, jnp.int32),
        encoder_segment_ids=jnp.asarray(enc_mask, jnp.int32),
        decoder_segment_ids=None if dec_mask is None else jnp.asarray(dec_mask, jnp.int32),
    )
    return config, jax.tree.map(np.asarray, out)


def _assert_close(ours, theirs, valid, name):
    """Max abs difference <= TOL at the real (valid) positions; padded rows are not compared
    (HF lets padded queries attend to real keys, lmjax gives them no keys: no output reads them)."""
    theirs = theirs.detach().numpy()
    assert ours.shape == theirs.shape, name
    diff = float(np.max(np.abs(ours - theirs)[valid.astype(bool)]))
    assert diff <= TOL, f"{name}: max abs diff {diff}"


@pytest.mark.parametrize("scan_layers", [True, False])
def test_bart_for_conditional_generation_matches_hf(bart_lm, scan_layers):
    hf_model, directory = bart_lm
    enc_ids, enc_mask, dec_ids, dec_mask = _batch()
    with torch.no_grad():
        ref = hf_model(
            input_ids=torch.tensor(enc_ids),
            attention_mask=torch.tensor(enc_mask),
            decoder_input_ids=torch.tensor(dec_ids),
            decoder_attention_mask=torch.tensor(dec_mask),
            output_hidden_states=True,
        )
    config, ours = _run_lmjax(directory, enc_ids, enc_mask, dec_ids, dec_mask,
                              scan_layers=scan_layers)
    assert config.scan_layers == scan_layers and config.pad_id == PAD
    assert set(ours) == {"logits", "hidden", "encoded"}
    assert ours["logits"].dtype == np.float32
    _assert_close(ours["encoded"], ref.encoder_last_hidden_state, enc_mask, "encoder output")
    _assert_close(ours["hidden"], ref.decoder_hidden_states[-1], dec_mask, "decoder hidden")
    _assert_close(ours["logits"], ref.logits, dec_mask, "logits")


def test_bart_model_without_lm_head_matches_hf(bart_base_model):
    """BartModel: no final_logits_bias (zeros), logits from the tied table; sqrt(E) scaling."""
    hf_model, directory = bart_base_model
    enc_ids, enc_mask, dec_ids, _ = _batch(seed=1)
    with torch.no_grad():
        ref = hf_model(
            input_ids=torch.tensor(enc_ids),
            attention_mask=torch.tensor(enc_mask),
            decoder_input_ids=torch.tensor(dec_ids),
        )
        ref_logits = ref.last_hidden_state @ hf_model.shared.weight.T
    config, ours = _run_lmjax(directory, enc_ids, enc_mask, dec_ids)
    assert config.scale_embedding
    all_valid = np.ones(dec_ids.shape, bool)
    _assert_close(ours["encoded"], ref.encoder_last_hidden_state, enc_mask, "encoder output")
    _assert_close(ours["hidden"], ref.last_hidden_state, all_valid, "decoder hidden")
    _assert_close(ours["logits"], ref_logits, all_valid, "logits")


def test_parity_tolerance_tells_the_variants_apart(bart_lm):
    """Guards the parity test: the tanh GELU, sqrt(E) scaling, a zero logits bias or dropping the
    encoder padding mask move outputs beyond TOL."""
    _, directory = bart_lm
    enc_ids, enc_mask, dec_ids, dec_mask = _batch()
    _, full = _run_lmjax(directory, enc_ids, enc_mask, dec_ids, dec_mask)
    for overrides in (dict(activation="gelu_tanh"), dict(scale_embedding=True)):
        _, variant = _run_lmjax(directory, enc_ids, enc_mask, dec_ids, dec_mask, **overrides)
        assert np.max(np.abs(full["logits"] - variant["logits"])) > TOL, overrides
    config, params = hf_bart.load_hf_bart(directory)
    assert np.max(np.abs(params["final_logits_bias"])) > 1e-2
    _, no_mask = _run_lmjax(directory, enc_ids, np.ones_like(enc_mask), dec_ids, dec_mask)
    # the padded encoder row 2 changes the decoder through cross-attention; full row 0 does not
    assert np.max(np.abs(full["hidden"][2] - no_mask["hidden"][2])) > 1e-2
    np.testing.assert_allclose(full["hidden"][0], no_mask["hidden"][0], atol=1e-6)


def _edit_config(directory, **changes):
    path = directory / "config.json"
    values = json.loads(path.read_text())
    values.update(changes)
    path.write_text(json.dumps(values))


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(normalize_before=True), "normalize_before"),
        (dict(add_final_layer_norm=True), "add_final_layer_norm"),
        (dict(model_type="mbart"), "model_type 'mbart'"),
        (dict(decoder_attention_heads=2), "encoder_attention_heads=4 != decoder_attention_heads"),
        (dict(activation_function="quick_gelu"), "activation_function 'quick_gelu'"),
    ],
)
def test_unsupported_configs_raise(tmp_path, changes, message):
    model = transformers.BartModel(transformers.BartConfig(**TINY))
    directory = _save(model, tmp_path / "bart")
    _edit_config(directory, **changes)
    with pytest.raises(ValueError, match=message):
        hf_bart.bart_config_from_hf(directory)


def test_missing_and_unexpected_tensors_raise(bart_lm, tmp_path):
    from safetensors.numpy import load_file, save_file

    _, directory = bart_lm
    tensors = load_file(f"{directory}/model.safetensors")
    config_text = (directory / "config.json").read_text()

    def saved(name, tensor_map):
        out = tmp_path / name
        out.mkdir()
        (out / "config.json").write_text(config_text)
        save_file(tensor_map, str(out / "model.safetensors"))
        return out

    missing = {k: v for k, v in tensors.items() if "decoder.layers.1.encoder_attn.k_proj" not in k}
    with pytest.raises(ValueError, match="decoder.layers.1.encoder_attn.k_proj.weight"):
        hf_bart.load_hf_bart(saved("missing", missing))
    extra = {**tensors, "classification_head.dense.weight": np.zeros((2, 2), np.float32)}
    with pytest.raises(ValueError, match="classification_head.dense.weight"):
        hf_bart.load_hf_bart(saved("extra", extra))
    _, params = hf_bart.load_hf_bart(tmp_path / "extra", skip_unexpected=True)
    assert "classification_head" not in params and params["final_logits_bias"].shape == (61,)
    untied = {**tensors, "lm_head.weight": tensors["model.shared.weight"] + 1.0}
    with pytest.raises(ValueError, match="lm_head.weight.*differs"):
        hf_bart.load_hf_bart(saved("untied", untied))
