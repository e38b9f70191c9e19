"""Parity of lmjax T5 / T5.1.1 / mT5 with Hugging Face's PyTorch models on converted checkpoints."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# The references are test-only dependencies (pyproject [test] extra): missing is an error,
# not a skip.
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from lmjax import convert  # noqa: E402
from lmjax.convert import hf_t5  # noqa: E402
from lmjax.layers.relative_position import relative_position_bucket  # noqa: E402
from tests.hf_reference import noised  # noqa: E402

# Inner width H*D = 24 differs from d_model = 32 (the kernels' reshapes are exercised); 8 buckets
# with max_distance 10 put lengths 12 / 10 into the logarithmic and the clipped buckets.
TINY = dict(
    vocab_size=101,
    d_model=32,
    d_kv=6,
    d_ff=48,
    num_layers=2,
    num_decoder_layers=3,
    num_heads=4,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=10,
    attn_implementation="eager",
)
TOL = 1e-4
ENCODER_LENGTHS = (12, 9, 5)
DECODER_LENGTHS = (10, 6, 3)


def _hf_model(model_class, config, seed):
    torch.manual_seed(seed)
    model = noised(model_class(config), seed=seed + 1)
    with torch.no_grad():  # biases of order 1, so a wrong bucket shows in the outputs
        for stack in (model.encoder, model.decoder):
            stack.block[0].layer[0].SelfAttention.relative_attention_bias.weight.mul_(10.0)
    return model


def _saved(model, directory):
    model.save_pretrained(directory, safe_serialization=True)
    return directory


@pytest.fixture(scope="module")
def t5_v1_0(tmp_path_factory):
    config = transformers.T5Config(**TINY, feed_forward_proj="relu", tie_word_embeddings=True)
    model = _hf_model(transformers.T5ForConditionalGeneration, config, seed=0)
    return model, _saved(model, tmp_path_factory.mktemp("t5_v1_0"))


@pytest.fixture(scope="module")
def t5_v1_1(tmp_path_factory):
    config = transformers.T5Config(
        **TINY, feed_forward_proj="gated-gelu", tie_word_embeddings=False
    )
    model = _hf_model(transformers.T5ForConditionalGeneration, config, seed=10)
    return model, _saved(model, tmp_path_factory.mktemp("t5_v1_1"))


@pytest.fixture(scope="module")
def mt5(tmp_path_factory):
    config = transformers.MT5Config(**TINY)  # gated-gelu by default
    model = _hf_model(transformers.MT5ForConditionalGeneration, config, seed=20)
    return model, _saved(model, tmp_path_factory.mktemp("mt5"))


def _masks(lengths):
    return (np.arange(max(lengths))[None] < np.array(lengths)[:, None]).astype(np.int64)


def _batch(vocab, seed=0):
    """Right-padded encoder ids [3, 12] and decoder inputs [3, 10] (start id 0) with 1/0 masks."""
    rng = np.random.default_rng(seed)
    enc_mask, dec_mask = _masks(ENCODER_LENGTHS), _masks(DECODER_LENGTHS)
    enc = np.where(enc_mask == 1, rng.integers(2, vocab, enc_mask.shape), 0)
    dec = np.where(dec_mask == 1, rng.integers(2, vocab, dec_mask.shape), 0)
    dec[:, 0] = 0  # decoder_start_id
    return enc, enc_mask, dec, dec_mask


def _hf_outputs(model, enc, enc_mask, dec, dec_mask):
    t = {k: torch.tensor(v) for k, v in dict(a=enc, b=enc_mask, c=dec, d=dec_mask).items()}
    with torch.no_grad():
        encoded = model.encoder(input_ids=t["a"], attention_mask=t["b"]).last_hidden_state
        hidden = model.decoder(
            input_ids=t["c"],
            attention_mask=t["d"],
            encoder_hidden_states=encoded,
            encoder_attention_mask=t["b"],
        ).last_hidden_state
        logits = model(
            input_ids=t["a"], attention_mask=t["b"], decoder_input_ids=t["c"],
            decoder_attention_mask=t["d"],
        ).logits
    return {"encoded": encoded.numpy(), "hidden": hidden.numpy(), "logits": logits.numpy()}


def _lmjax_outputs(directory, enc, enc_mask, dec, dec_mask, **overrides):
    model, params = hf_t5.load_hf_t5(directory, **overrides)
    out = model.apply(
        {"params": params},
        jnp.asarray(enc, jnp.int32),
        jnp.asarray(dec, jnp.int32),
        encoder_segment_ids=jnp.asarray(enc_mask, jnp.int32),
        decoder_segment_ids=jnp.asarray(dec_mask, jnp.int32),
    )
    return jax.tree.map(np.asarray, out)


def _max_diff_on_real_tokens(ours, theirs, mask):
    assert ours.shape == theirs.shape
    return float(np.max(np.abs(ours - theirs)[mask == 1]))


def _assert_parity(ours, theirs, enc_mask, dec_mask):
    assert ours["logits"].dtype == np.float32
    for name, mask in (("encoded", enc_mask), ("hidden", dec_mask), ("logits", dec_mask)):
        diff = _max_diff_on_real_tokens(ours[name], theirs[name], mask)
        assert diff <= TOL, f"{name}: max abs diff {diff}"


@pytest.mark.parametrize("scan_layers", [True, False])
def test_t5_v1_0_relu_tied_matches_hf(t5_v1_0, scan_layers):
    hf_model, directory = t5_v1_0
    batch = _batch(TINY["vocab_size"])
    config = hf_t5.t5_config_from_hf(directory, scan_layers=scan_layers)
    assert (config.activation, config.tie_embeddings) == ("relu", True)
    ours = _lmjax_outputs(directory, *batch, scan_layers=scan_layers)
    _assert_parity(ours, _hf_outputs(hf_model, *batch), *batch[1::2])


def test_t5_v1_1_gated_gelu_untied_matches_hf(t5_v1_1):
    hf_model, directory = t5_v1_1
    batch = _batch(TINY["vocab_size"], seed=1)
    config = hf_t5.t5_config_from_hf(directory)
    assert (config.activation, config.tie_embeddings) == ("gated_gelu", False)
    ours = _lmjax_outputs(directory, *batch)
    _assert_parity(ours, _hf_outputs(hf_model, *batch), *batch[1::2])


def test_mt5_matches_hf(mt5):
    hf_model, directory = mt5
    batch = _batch(TINY["vocab_size"], seed=2)
    config = hf_t5.t5_config_from_hf(directory)
    assert (config.activation, config.tie_embeddings) == ("gated_gelu", False)
    ours = _lmjax_outputs(directory, *batch)
    _assert_parity(ours, _hf_outputs(hf_model, *batch), *batch[1::2])


def test_parity_tolerance_tells_the_variants_apart(t5_v1_0):
    """Guards the parity tests: other bucket settings or a dropped encoder mask move the outputs
    beyond TOL (so the biases and masks are really compared)."""
    _, directory = t5_v1_0
    enc, enc_mask, dec, dec_mask = batch = _batch(TINY["vocab_size"])
    full = _lmjax_outputs(directory, *batch)
    wider = _lmjax_outputs(directory, *batch, relative_max_distance=40)
    assert _max_diff_on_real_tokens(full["encoded"], wider["encoded"], enc_mask) > 1e-2
    assert _max_diff_on_real_tokens(full["hidden"], wider["hidden"], dec_mask) > 1e-2
    unmasked = _lmjax_outputs(directory, enc, np.ones_like(enc_mask), dec, dec_mask)
    assert _max_diff_on_real_tokens(full["hidden"][1:], unmasked["hidden"][1:], dec_mask[1:]) > 1e-2
    np.testing.assert_allclose(full["hidden"][0], unmasked["hidden"][0], atol=1e-6)


def test_bucket_function_equals_hf_for_every_distance():
    theirs = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket
    relative = np.arange(-300, 301)
    for bidirectional in (True, False):
        for num_buckets, max_distance in ((32, 128), (8, 10), (16, 64)):
            ref = theirs(torch.tensor(relative), bidirectional, num_buckets, max_distance).numpy()
            ours = np.asarray(
                relative_position_bucket(jnp.asarray(relative), bidirectional, num_buckets,
                                         max_distance)
            )
            np.testing.assert_array_equal(ours, ref)


def test_separately_stored_lm_head_of_released_v1_1_checkpoints(t5_v1_1, tmp_path):
    """Released T5.1.1 / mT5 files hold their own lm_head.weight and say tie_word_embeddings=false
    (without transformers 5's scale_decoder_outputs); the logits then read that head, unscaled."""
    hf_model, directory = t5_v1_1
    released = tmp_path / "released"
    shutil.copytree(directory, released)
    tensors = convert.hf_tensors(released)
    head = np.random.default_rng(5).normal(size=tensors["shared.weight"].shape)
    tensors["lm_head.weight"] = head.astype(np.float32)
    save_file(tensors, str(released / "model.safetensors"))
    config = json.loads((released / "config.json").read_text())
    config.pop("scale_decoder_outputs")
    config["tie_word_embeddings"] = False
    (released / "config.json").write_text(json.dumps(config))

    enc, enc_mask, dec, dec_mask = batch = _batch(TINY["vocab_size"], seed=3)
    theirs = _hf_outputs(hf_model, *batch)
    ours = _lmjax_outputs(released, *batch)
    expected_logits = theirs["hidden"] @ head.T.astype(np.float32)
    assert _max_diff_on_real_tokens(ours["hidden"], theirs["hidden"], dec_mask) <= TOL
    assert _max_diff_on_real_tokens(ours["logits"], expected_logits, dec_mask) <= TOL

    # The same file claiming a tied, scaled head cannot be converted exactly.
    config["tie_word_embeddings"] = True
    (released / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="lm_head.weight.*differs"):
        hf_t5.t5_params_from_hf(released)


def test_config_json_to_lmjax_config_and_bad_checkpoints(t5_v1_0, tmp_path):
    _, directory = t5_v1_0
    cfg = hf_t5.t5_model_config(directory, scan_layers=False)
    assert cfg.family == "t5"
    assert (cfg.vocab_size, cfg.embed_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_dim) == (
        101, 32, 4, 6, 48,
    )
    assert (cfg.num_encoder_layers, cfg.num_decoder_layers) == (2, 3)
    assert (cfg.relative_buckets, cfg.relative_max_distance, cfg.norm_eps) == (8, 10, 1e-6)
    assert (cfg.pad_id, cfg.eos_id, cfg.decoder_start_id, cfg.dropout_rate) == (0, 1, 0, 0.1)
    assert cfg.scan_layers is False

    broken = tmp_path / "broken"
    shutil.copytree(directory, broken)
    tensors = convert.hf_tensors(broken)
    del tensors["decoder.block.2.layer.2.DenseReluDense.wo.weight"]
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(ValueError, match=r"decoder\.block\.2\.layer\.2\.DenseReluDense\.wo"):
        hf_t5.t5_params_from_hf(broken)

    config = json.loads((broken / "config.json").read_text())
    config["feed_forward_proj"] = "gated-tanh"
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="feed_forward_proj='gated-tanh'"):
        hf_t5.t5_config_from_hf(broken)
    with pytest.raises(ValueError, match="model_type 'bart'"):
        hf_t5.t5_config_fields({**config, "model_type": "bart"})
