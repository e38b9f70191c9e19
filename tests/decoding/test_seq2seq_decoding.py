"""Tests for lmjax.decoding.seq2seq on a tiny encoder-decoder that follows the seq2seq contract.

``TinySeq2Seq`` (below) is built from lmjax.layers (TransformerStack with cross-attention) so the
decoding library is tested independently of the T5 / BART / Meena families. Every cached result
is checked against the model's full (cache-free) forward pass.
"""

import dataclasses
import functools
import itertools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.decoding import seq2seq
from lmjax.decoding.beam_search import gnmt_length_penalty, hf_length_penalty
from lmjax.layers import masks
from lmjax.layers.embeddings import Embed, PositionEmbed
from lmjax.layers.norms import make_norm
from lmjax.layers.transformer import BlockConfig, TransformerStack, stack_layer_params

PAD, EOS, START = 0, 1, 0


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    vocab_size: int = 23
    embed_dim: int = 16
    num_heads: int = 2
    mlp_dim: int = 32
    num_layers: int = 2
    max_len: int = 32
    pad_id: int = PAD
    eos_id: int = EOS
    decoder_start_id: int = START
    scan_layers: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32


class TinySeq2Seq(nn.Module):
    """A pre-LN transformer encoder-decoder with learned positions, following the lmjax seq2seq
    contract (encode / decode / __call__, KV cache in the decoder's self-attention)."""

    config: TinyConfig

    def setup(self):
        cfg = self.config
        block = functools.partial(
            BlockConfig, num_heads=cfg.num_heads, head_dim=cfg.embed_dim // cfg.num_heads,
            mlp_dim=cfg.mlp_dim, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
        )
        dtypes = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
        self.token_embed = Embed(cfg.vocab_size, cfg.embed_dim, **dtypes)
        self.encoder_positions = PositionEmbed(cfg.max_len, cfg.embed_dim, **dtypes)
        self.decoder_positions = PositionEmbed(cfg.max_len, cfg.embed_dim, **dtypes)
        self.encoder = TransformerStack(block(), cfg.num_layers, scan=cfg.scan_layers)
        self.decoder = TransformerStack(
            block(cross_attention=True), cfg.num_layers, scan=cfg.scan_layers
        )
        self.decoder_norm = make_norm("layer", 1e-5, cfg.dtype, cfg.param_dtype, "decoder_norm")
        # Untied output layer: with tied logits the fed token dominates and greedy repeats it.
        self.lm_head = nn.Dense(cfg.vocab_size, **dtypes)

    def encode(self, encoder_inputs, *, encoder_segment_ids=None, encoder_positions=None,
               deterministic=True):
        batch, length = encoder_inputs.shape
        if encoder_positions is None:
            encoder_positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
        x = self.token_embed(encoder_inputs) + self.encoder_positions(encoder_positions)
        mask = None if encoder_segment_ids is None else masks.segment_mask(encoder_segment_ids)
        return self.encoder(x, mask, deterministic=deterministic)  # [B, Le, E]

    def decode(self, encoded, decoder_inputs, *, encoder_segment_ids=None,
               decoder_segment_ids=None, decoder_positions=None, deterministic=True,
               decode=False):
        batch, length = decoder_inputs.shape
        if decoder_positions is None:
            if decode and not self.is_initializing():
                raise ValueError("TinySeq2Seq needs explicit decoder_positions when decoding.")
            decoder_positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
        dec_seg = jnp.ones((batch, length), jnp.int32) if decoder_segment_ids is None else (
            decoder_segment_ids)
        enc_seg = jnp.ones(encoded.shape[:2], jnp.int32) if encoder_segment_ids is None else (
            encoder_segment_ids)
        cross = masks.segment_mask(dec_seg, enc_seg)  # [B, 1, Ld, Le]
        self_mask = None if decode else masks.combine_masks(
            masks.causal_mask(length), masks.segment_mask(dec_seg)
        )
        x = self.token_embed(decoder_inputs) + self.decoder_positions(decoder_positions)
        x = self.decoder(
            x, self_mask, segment_ids=dec_seg if decode else None, encoded=encoded,
            encoder_mask=cross, deterministic=deterministic, decode=decode,
        )
        x = self.decoder_norm(x)
        return {"logits": self.lm_head(x).astype(jnp.float32), "hidden": x}

    def __call__(self, encoder_inputs, decoder_inputs, *, encoder_segment_ids=None,
                 decoder_segment_ids=None, encoder_positions=None, decoder_positions=None,
                 deterministic=True, decode=False):
        encoded = self.encode(encoder_inputs, encoder_segment_ids=encoder_segment_ids,
                              encoder_positions=encoder_positions, deterministic=deterministic)
        out = self.decode(encoded, decoder_inputs, encoder_segment_ids=encoder_segment_ids,
                          decoder_segment_ids=decoder_segment_ids,
                          decoder_positions=decoder_positions, deterministic=deterministic,
                          decode=decode)
        return {**out, "encoded": encoded}


@functools.lru_cache(maxsize=None)
def _model_and_params(vocab_size=23, scan_layers=False, eos_boost=0.0):
    """The tiny model and random parameters drawn in numpy (the same for both layouts).

    ``eos_boost`` raises the EOS output bias so that hypotheses end early often enough to exercise
    EOS handling.
    """
    config = TinyConfig(vocab_size=vocab_size, scan_layers=scan_layers)
    model = TinySeq2Seq(config)
    unscanned = TinySeq2Seq(dataclasses.replace(config, scan_layers=False))
    shapes = jax.eval_shape(
        lambda: unscanned.init(jax.random.key(0), jnp.zeros((1, 3), jnp.int32),
                               jnp.zeros((1, 2), jnp.int32))
    )
    rng = np.random.default_rng(vocab_size)

    def draw(path, s):  # gains 1 + N(0, 0.1), biases N(0, 0.1), all else N(0, 0.4)
        name = jax.tree_util.keystr(path)
        noise = rng.standard_normal(s.shape).astype(np.float32)
        if "scale" in name:
            return 1.0 + 0.1 * noise
        return (0.1 if "bias" in name else 0.4) * noise

    params = jax.tree_util.tree_map_with_path(draw, nn.meta.unbox(shapes["params"]))
    params["lm_head"]["bias"][EOS] += eos_boost
    params = jax.tree.map(jnp.asarray, params)
    if scan_layers:
        for stack in ("encoder", "decoder"):
            params[stack] = stack_layer_params(params[stack], config.num_layers)
    return model, params


ROWS, ENCODER_WIDTH, DECODER_WIDTH = 128, 6, 8


@functools.lru_cache(maxsize=None)
def _full_logits_fn(vocab_size=23, eos_boost=0.0):
    model, params = _model_and_params(vocab_size, eos_boost=eos_boost)

    @jax.jit
    def full(encoder_inputs, encoder_segment_ids, decoder_inputs):
        return model.apply({"params": params}, encoder_inputs, decoder_inputs,
                           encoder_segment_ids=encoder_segment_ids)["logits"]

    return full


def _full_log_probs(encoder_rows, mask_rows, decoder_rows, vocab_size=23, eos_boost=0.0):
    """log-softmax of the full (cache-free) forward pass, float64 [S, DECODER_WIDTH, V].

    Every call is padded to one shape (ROWS rows, encoder pads masked, decoder right-padded:
    causal, so the pads change nothing before them), so the reference compiles once.
    """
    count = len(decoder_rows)
    encoder = np.zeros((ROWS, ENCODER_WIDTH), np.int32)
    mask = np.zeros((ROWS, ENCODER_WIDTH), np.int32)
    mask[:, 0] = 1
    decoder = np.full((ROWS, DECODER_WIDTH), PAD, np.int32)
    for i, (enc, m, dec) in enumerate(zip(encoder_rows, mask_rows, decoder_rows)):
        encoder[i, : len(enc)], mask[i, : len(m)], decoder[i, : len(dec)] = enc, m, dec
    logits = _full_logits_fn(vocab_size, eos_boost)(
        jnp.asarray(encoder), jnp.asarray(mask), jnp.asarray(decoder)
    )
    logits = np.asarray(logits, np.float64)[:count]
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def _log_probs_of(encoder_row, encoder_mask_row, outputs, vocab_size=23, eos_boost=0.0):
    """Summed log P(output | encoder input) of each output (a list of token lists), float64."""
    decoder_rows = [[START] + list(out[:-1]) for out in outputs]
    log_probs = _full_log_probs(
        [encoder_row] * len(outputs), [encoder_mask_row] * len(outputs), decoder_rows,
        vocab_size, eos_boost,
    )
    return np.asarray([
        sum(log_probs[s, i, t] for i, t in enumerate(out)) for s, out in enumerate(outputs)
    ])


# Right-padded encoder inputs of lengths 5, 3 and 6 (HF attention_mask style).
ENCODER = np.array([[5, 6, 7, 8, 9, 0], [10, 11, 12, 0, 0, 0], [3, 4, 13, 14, 15, 16]], np.int32)
ENCODER_MASK = (np.arange(6)[None] < np.array([[5], [3], [6]])).astype(np.int32)


def _greedy_by_recomputation(num_new, eos_id=-1, vocab_size=23, eos_boost=0.0):
    """Greedy decoding that re-runs the full model on the whole decoder prefix every step."""
    batch = ENCODER.shape[0]
    decoder = [[START] for _ in range(batch)]
    done = np.zeros(batch, bool)
    out = np.full((batch, num_new), PAD, np.int32)
    for step in range(num_new):
        log_probs = _full_log_probs(ENCODER, ENCODER_MASK, decoder, vocab_size, eos_boost)
        tokens = np.where(done, PAD, log_probs[:, step].argmax(-1))
        out[:, step] = tokens
        done |= tokens == eos_id
        decoder = [row + [int(t)] for row, t in zip(decoder, tokens)]
    return out


@pytest.mark.parametrize("scan_layers", [False, True])
def test_cached_greedy_equals_full_recomputation(scan_layers):
    model, params = _model_and_params(scan_layers=scan_layers)
    ours, scores = seq2seq.seq2seq_generate_with_scores(
        model, params, ENCODER, ENCODER_MASK, max_new_tokens=6, greedy=True, eos_id=-1
    )
    expected = _greedy_by_recomputation(6)
    assert ours.shape == (3, 6) and ours.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(ours), expected)
    assert len({tuple(r) for r in expected.tolist()}) == 3, "rows differ: the encoder matters"
    for row in range(3):
        recomputed = _log_probs_of(ENCODER[row], ENCODER_MASK[row], [expected[row].tolist()])
        np.testing.assert_allclose(scores[row], recomputed[0], rtol=1e-4, atol=1e-4)


def test_greedy_stops_at_eos_and_pads_after_it():
    eos_boost = 2.0
    model, params = _model_and_params(eos_boost=eos_boost)
    ours = np.asarray(seq2seq.seq2seq_generate(
        model, params, ENCODER, ENCODER_MASK, max_new_tokens=6, greedy=True
    ))  # eos_id and pad_id from the config
    expected = _greedy_by_recomputation(6, eos_id=EOS, eos_boost=eos_boost)
    np.testing.assert_array_equal(ours, expected)
    ended = [EOS in row[:-1] for row in ours.tolist()]
    assert any(ended), "some row ends before the length limit"


def test_padded_encoder_row_decodes_as_alone():
    model, params = _model_and_params()
    batch = seq2seq.seq2seq_generate(
        model, params, ENCODER, ENCODER_MASK, max_new_tokens=5, greedy=True, eos_id=-1
    )
    alone = seq2seq.seq2seq_generate(
        model, params, ENCODER[1:2, :3], None, max_new_tokens=5, greedy=True, eos_id=-1
    )
    np.testing.assert_array_equal(np.asarray(batch[1]), np.asarray(alone[0]))


def test_sampling_scores_are_the_model_log_probs_and_top_k_1_is_greedy():
    model, params = _model_and_params()
    key = jax.random.key(3)
    sampled, scores = seq2seq.seq2seq_generate_with_scores(
        model, params, ENCODER, ENCODER_MASK, key, max_new_tokens=5, temperature=1.3, eos_id=-1
    )
    again = seq2seq.seq2seq_generate(
        model, params, ENCODER, ENCODER_MASK, key, max_new_tokens=5, temperature=1.3, eos_id=-1
    )
    np.testing.assert_array_equal(np.asarray(sampled), np.asarray(again))
    other = seq2seq.seq2seq_generate(
        model, params, ENCODER, ENCODER_MASK, jax.random.key(4), max_new_tokens=5,
        temperature=1.3, eos_id=-1,
    )
    assert not np.array_equal(np.asarray(sampled), np.asarray(other)), "the key matters"
    for row in range(3):
        recomputed = _log_probs_of(ENCODER[row], ENCODER_MASK[row], [sampled[row].tolist()])
        np.testing.assert_allclose(scores[row], recomputed[0], rtol=1e-4, atol=1e-4)
    top1 = seq2seq.seq2seq_generate(
        model, params, ENCODER, ENCODER_MASK, key, max_new_tokens=5, top_k=1, eos_id=-1
    )
    np.testing.assert_array_equal(np.asarray(top1), _greedy_by_recomputation(5))


def test_beam_of_one_is_greedy():
    # HF rules: only the best candidate may finish, so width 1 is greedy, EOS included.
    model, params = _model_and_params(eos_boost=2.0)
    beams, scores = seq2seq.seq2seq_beam_search(
        model, params, ENCODER, ENCODER_MASK, beam_size=1, max_new_tokens=6, length_penalty=0.0,
        length_penalty_kind="hf", early_stopping=False,
    )
    assert beams.shape == (3, 1, 6) and scores.shape == (3, 1)
    greedy = _greedy_by_recomputation(6, eos_id=EOS, eos_boost=2.0)
    assert any(EOS in row[:-1] for row in greedy.tolist())
    np.testing.assert_array_equal(np.asarray(beams[:, 0]), greedy)
    # t5x rules keep an EOS candidate ranked second too, so width 1 is greedy without EOS.
    beams, _ = seq2seq.seq2seq_beam_search(
        model, params, ENCODER, ENCODER_MASK, beam_size=1, max_new_tokens=6, length_penalty=0.0,
        eos_id=-1,
    )
    np.testing.assert_array_equal(
        np.asarray(beams[:, 0]), _greedy_by_recomputation(6, eos_boost=2.0)
    )


@pytest.mark.parametrize(
    "kind,early_stopping,alpha", [("gnmt", None, 0.6), ("hf", False, 1.0), ("hf", "never", 0.6)]
)
def test_beam_scores_are_penalised_log_probs(kind, early_stopping, alpha):
    eos_boost = 2.0
    model, params = _model_and_params(eos_boost=eos_boost)
    steps = 6
    beams, scores = seq2seq.seq2seq_beam_search(
        model, params, ENCODER, ENCODER_MASK, beam_size=3, max_new_tokens=steps,
        length_penalty=alpha, length_penalty_kind=kind, early_stopping=early_stopping,
    )
    beams, scores = np.asarray(beams), np.asarray(scores)
    penalty = gnmt_length_penalty if kind == "gnmt" else hf_length_penalty
    lengths = []
    for row in range(3):
        assert np.all(np.diff(scores[row]) <= 0), "best first"
        outs = []
        for out in beams[row].tolist():
            length = out.index(EOS) + 1 if EOS in out else steps
            assert all(t == PAD for t in out[length:]), "pads after EOS"
            outs.append(out[:length])
            lengths.append(length)
        expected = _log_probs_of(ENCODER[row], ENCODER_MASK[row], outs, eos_boost=eos_boost)
        expected /= np.array([float(penalty(len(o), alpha)) for o in outs])
        np.testing.assert_allclose(scores[row], expected, rtol=1e-4, atol=1e-4)
    assert min(lengths) < steps and max(lengths) == steps, "EOS-ended and length-cut beams"


def test_beam_padded_batch_equals_alone_and_scanned_cache():
    model, params = _model_and_params(eos_boost=2.0)
    options = dict(beam_size=3, max_new_tokens=5, length_penalty=1.0, length_penalty_kind="hf",
                   early_stopping=False)
    batch_beams, batch_scores = seq2seq.seq2seq_beam_search(
        model, params, ENCODER, ENCODER_MASK, **options
    )
    # Same weights in the scanned layout (decoder cache [N, B, M, H, D]), row 1 alone.
    scanned, scanned_params = _model_and_params(scan_layers=True, eos_boost=2.0)
    alone, alone_scores = seq2seq.seq2seq_beam_search(
        scanned, scanned_params, ENCODER[1:2, :3], **options
    )
    np.testing.assert_array_equal(np.asarray(batch_beams[1]), np.asarray(alone[0]))
    np.testing.assert_allclose(batch_scores[1], alone_scores[0], rtol=1e-5, atol=1e-5)


def test_wide_beam_is_exhaustive_search():
    vocab, steps = 5, 3
    model, params = _model_and_params(vocab_size=vocab)
    encoder, mask = ENCODER[:1, :5] % vocab, ENCODER_MASK[:1, :5]
    width = vocab ** (steps - 1)
    beams, scores = seq2seq.seq2seq_beam_search(
        model, params, encoder, mask, beam_size=width, max_new_tokens=steps, length_penalty=0.0,
        eos_id=-1,
    )
    every = [list(c) for c in itertools.product(range(vocab), repeat=steps)]
    log_probs = _log_probs_of(encoder[0], mask[0], every, vocab_size=vocab)
    order = np.argsort(-log_probs, kind="stable")
    np.testing.assert_allclose(np.asarray(scores[0]), log_probs[order[:width]], atol=1e-4)
    assert {tuple(b) for b in np.asarray(beams[0]).tolist()} == {
        tuple(every[i]) for i in order[:width]
    }


def test_bad_arguments_are_errors():
    model, params = _model_and_params()
    with pytest.raises(ValueError, match="PRNG key"):
        seq2seq.seq2seq_generate(model, params, ENCODER, ENCODER_MASK, max_new_tokens=2)
    with pytest.raises(ValueError, match="all padding"):
        seq2seq.seq2seq_generate(model, params, ENCODER, 0 * ENCODER_MASK, max_new_tokens=2,
                                 greedy=True)
    with pytest.raises(ValueError, match="encoder_mask shape"):
        seq2seq.seq2seq_generate(model, params, ENCODER, ENCODER_MASK[:, :2], max_new_tokens=2,
                                 greedy=True)
    with pytest.raises(ValueError, match="max_new_tokens"):
        seq2seq.seq2seq_generate(model, params, ENCODER, max_new_tokens=0, greedy=True)
    with pytest.raises(ValueError, match="early_stopping"):
        seq2seq.seq2seq_beam_search(model, params, ENCODER, max_new_tokens=2,
                                    early_stopping="sometimes")
    with pytest.raises(ValueError, match="length_penalty_kind"):
        seq2seq.seq2seq_beam_search(model, params, ENCODER, max_new_tokens=2,
                                    length_penalty_kind="wu")
    with pytest.raises(ValueError, match="decode=True"):
        seq2seq.ConditionedDecoder(model, 6).apply({}, jnp.zeros((1, 1), jnp.int32))
