"""Token-identical parity of lmjax decoding with Hugging Face ``generate`` on the same weights.

Random small HF models (fixed torch seeds) are saved with ``save_pretrained`` to a temporary
directory and converted with ``lmjax.convert``; nothing is downloaded. Beam search with
``length_penalty_kind='hf'`` and HF's ``early_stopping`` value must return the same hypotheses,
in the same order, with the same ``sequences_scores`` as ``generate(num_beams=W,
length_penalty=..., early_stopping=..., max_new_tokens=N, do_sample=False)``; greedy decoding
must equal ``generate(do_sample=False)``.

So that EOS handling is exercised, each model's output row of the EOS token is set to
``c * mean_hidden / |mean_hidden|^2`` (``_with_reachable_eos``): its logit is about ``c`` (the
median top logit plus a shift) for a typical hidden state, so some hypotheses end early and
others run to the length limit.

Part (a): GPT-2 (decoder-only, left-padded prompts). Part (b): T5 and BART (encoder-decoder,
right-padded encoder inputs).
"""

import functools

import numpy as np
import pytest

# The references are test-only dependencies (pyproject [test] extra): missing is an error.
import torch  # noqa: E402
import transformers  # noqa: E402

from lmjax import convert, decoding  # noqa: E402
from lmjax.convert import hf_bart, hf_t5  # noqa: E402
from lmjax.decoding import seq2seq  # noqa: E402
from lmjax.decoding.beam_search import beam_search  # noqa: E402
from lmjax.models import bart  # noqa: E402
from tests.hf_reference import noised  # noqa: E402

NEW_TOKENS = 8
SCORE_TOL = 1e-4
# The EOS logit's offset from the median top logit, per model: chosen so that some hypotheses of
# width 3-4 end with EOS and some run to the length limit.
EOS_SHIFT = {"gpt2": -1.0, "t5": 1.0, "bart": -0.25}
# (num_beams, length_penalty, early_stopping): widths {1, 3, 4}, penalties {0.6, 1.0, 2.0} and
# HF's three early-stopping modes.
CASES = [
    (1, 1.0, False),
    (3, 0.6, False),
    (3, 2.0, "never"),
    (4, 1.0, True),
    (4, 0.6, "never"),
]


def _with_reachable_eos(hf, eos, shift, **inputs):
    """Sets the output-projection row of ``eos`` so that its logit is about the median top logit
    plus ``shift`` on the hidden states of ``inputs`` (see the module docstring)."""
    captured = []
    head = hf.get_output_embeddings()
    hook = head.register_forward_hook(lambda m, args, out: captured.append((args[0], out)))
    with torch.no_grad():
        hf(**inputs)
        hook.remove()
        hidden, logits = captured[0]
        mean = hidden.reshape(-1, hidden.shape[-1]).mean(0)
        target = logits.max(-1).values.median() + shift
        head.weight[eos] = target * mean / mean.dot(mean)
    return hf


def _until_eos(rows, eos):
    """Each token row cut after its first EOS (rows without EOS are kept whole)."""
    return [row[: row.index(eos) + 1] if eos in row else row for row in rows]


def _hf_generate(hf, inputs, mask, eos, pad, num_beams, length_penalty, early_stopping):
    """HF ``generate``: (sequences int64 [B * W, L], sequences_scores [B * W] or None for W=1)."""
    kwargs = dict(num_beams=num_beams, num_return_sequences=num_beams)
    if num_beams > 1:
        kwargs.update(length_penalty=length_penalty, early_stopping=early_stopping)
    with torch.no_grad():
        out = hf.generate(
            torch.as_tensor(inputs, dtype=torch.long),
            attention_mask=torch.as_tensor(mask, dtype=torch.long),
            do_sample=False,
            max_new_tokens=NEW_TOKENS,
            eos_token_id=eos,
            pad_token_id=pad,
            output_scores=True,
            return_dict_in_generate=True,
            **kwargs,
        )
    scores = out.sequences_scores.numpy() if num_beams > 1 else None
    return out.sequences.numpy(), scores


def _assert_same_beams(ours, our_scores, theirs, their_scores, eos):
    """ours int [B, W, N] new tokens, theirs int [B * W, N'] new tokens (HF's order)."""
    ours = np.asarray(ours)
    ours_rows = _until_eos(ours.reshape(-1, ours.shape[-1]).tolist(), eos)
    their_rows = _until_eos(theirs.tolist(), eos)
    assert ours_rows == their_rows
    if their_scores is not None:
        np.testing.assert_allclose(
            np.asarray(our_scores).reshape(-1), their_scores, atol=SCORE_TOL, rtol=0
        )
    return [len(row) for row in their_rows]


# ---------------------------------------------------------------------------------------------
# Part (a): GPT-2.

GPT_VOCAB, GPT_EOS, GPT_PAD = 64, 41, 0
PROMPT_LENGTHS = (3, 6, 5, 4)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """(HF model, lmjax model, params, left-padded prompts [4, 6], their mask)."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=GPT_VOCAB, n_positions=32,
        bos_token_id=None, eos_token_id=None,
    )
    config._attn_implementation = "eager"
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # N(0, 0.3) weights, LayerNorm gains 1 + N(0, 0.3): varied outputs
        for name, param in hf.named_parameters():
            is_gain = name.endswith(".weight") and ".ln_" in name
            param.copy_((1.0 if is_gain else 0.0) + 0.3 * torch.randn_like(param))
    rng = np.random.default_rng(0)
    width = max(PROMPT_LENGTHS)
    prompts = np.full((len(PROMPT_LENGTHS), width), GPT_PAD, np.int64)
    mask = np.zeros(prompts.shape, np.int64)
    for row, length in enumerate(PROMPT_LENGTHS):
        prompts[row, width - length :] = rng.integers(2, GPT_VOCAB, length)
        mask[row, width - length :] = 1
    prompts[prompts == GPT_EOS] = 2  # EOS never inside a prompt
    _with_reachable_eos(hf, GPT_EOS, EOS_SHIFT["gpt2"], input_ids=torch.as_tensor(
        np.random.default_rng(1).integers(2, GPT_VOCAB, (4, 12))))
    directory = tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(directory, safe_serialization=True)
    model, params = convert.load_hf_gpt(directory)
    return hf, model, params, prompts, mask


def test_gpt2_greedy_matches_hf(gpt2):
    hf, model, params, prompts, mask = gpt2
    ours = decoding.generate(model, params, prompts, mask, None, NEW_TOKENS, greedy=True,
                             eos_id=GPT_EOS, pad_id=GPT_PAD)
    theirs, _ = _hf_generate(hf, prompts, mask, GPT_EOS, GPT_PAD, 1, 1.0, False)
    width = prompts.shape[1]
    rows = _until_eos(np.asarray(ours)[:, width:].tolist(), GPT_EOS)
    assert rows == _until_eos(theirs[:, width:].tolist(), GPT_EOS)
    assert {len(r) for r in rows} != {NEW_TOKENS}, "some greedy row ends with EOS"


@pytest.mark.parametrize("num_beams,length_penalty,early_stopping", CASES)
def test_gpt2_beam_search_matches_hf(gpt2, num_beams, length_penalty, early_stopping):
    hf, model, params, prompts, mask = gpt2
    width = prompts.shape[1]
    ours, scores = beam_search(
        model, params, prompts, mask, beam_size=num_beams, max_new_tokens=NEW_TOKENS,
        length_penalty=length_penalty, eos_id=GPT_EOS, pad_id=GPT_PAD,
        length_penalty_kind="hf", early_stopping=early_stopping,
    )
    assert np.array_equal(np.asarray(ours)[:, :, :width], np.repeat(prompts[:, None],
                                                                    num_beams, 1))
    theirs, their_scores = _hf_generate(
        hf, prompts, mask, GPT_EOS, GPT_PAD, num_beams, length_penalty, early_stopping
    )
    lengths = _assert_same_beams(
        np.asarray(ours)[:, :, width:], scores, theirs[:, width:], their_scores, GPT_EOS
    )
    if length_penalty < 2.0:  # EOS handling is exercised: early ends and length-limit cuts
        assert min(lengths) < NEW_TOKENS and max(lengths) == NEW_TOKENS


# ---------------------------------------------------------------------------------------------
# Part (b): T5 and BART (helpers A's lmjax.convert.hf_t5 and B's lmjax.convert.hf_bart).

ENCODER_LENGTHS = (7, 4, 6)


def _encoder_batch(vocab, pad, eos):
    """Right-padded encoder ids [3, 7] and their 1/0 mask (HF attention_mask)."""
    rng = np.random.default_rng(0)
    width = max(ENCODER_LENGTHS)
    ids = np.full((len(ENCODER_LENGTHS), width), pad, np.int64)
    mask = np.zeros(ids.shape, np.int64)
    for row, length in enumerate(ENCODER_LENGTHS):
        ids[row, :length] = rng.integers(3, vocab, length)
        mask[row, :length] = 1
    ids[(ids == eos) & (mask == 1)] = 3
    return ids, mask


def _probe_inputs(vocab):
    rng = np.random.default_rng(5)
    return dict(input_ids=torch.as_tensor(rng.integers(3, vocab, (4, 7))),
                decoder_input_ids=torch.as_tensor(rng.integers(3, vocab, (4, 6))))


@functools.lru_cache(maxsize=None)
def _seq2seq_case(kind, directory):
    """(HF model, lmjax model, params, encoder ids, mask, eos, pad) of a random T5 or BART."""
    torch.manual_seed(0)
    if kind == "t5":  # T5.1.1 style: gated GELU, untied output layer
        vocab, pad, eos = 64, 0, 1
        config = transformers.T5Config(
            vocab_size=vocab, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2,
            num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=10,
            feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0,
            pad_token_id=pad, eos_token_id=eos, attn_implementation="eager",
        )
        hf = noised(transformers.T5ForConditionalGeneration(config), 1)
    else:
        vocab, pad, eos = 61, 1, 2
        config = transformers.BartConfig(
            vocab_size=vocab, d_model=32, encoder_layers=2, decoder_layers=2,
            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=48,
            decoder_ffn_dim=48, max_position_embeddings=16, activation_function="gelu",
            forced_eos_token_id=None, forced_bos_token_id=None, attn_implementation="eager",
        )
        hf = noised(transformers.BartForConditionalGeneration(config), 1)
    _with_reachable_eos(hf, eos, EOS_SHIFT[kind], **_probe_inputs(vocab))
    hf.save_pretrained(directory, safe_serialization=True)
    if kind == "t5":
        model, params = hf_t5.load_hf_t5(directory)
    else:
        config, params = hf_bart.load_hf_bart(directory)
        model = bart.BART(config)
    assert (model.config.eos_id, model.config.pad_id) == (eos, pad)
    ids, mask = _encoder_batch(vocab, pad, eos)
    return hf, model, params, ids, mask, eos, pad


@pytest.fixture(scope="module", params=["t5", "bart"])
def seq2seq_case(request, tmp_path_factory):
    return _seq2seq_case(request.param, str(tmp_path_factory.mktemp(request.param)))


def test_seq2seq_greedy_matches_hf(seq2seq_case):
    hf, model, params, ids, mask, eos, pad = seq2seq_case
    ours = seq2seq.seq2seq_generate(model, params, ids, mask, max_new_tokens=NEW_TOKENS,
                                    greedy=True)  # eos / pad / start from the config
    theirs, _ = _hf_generate(hf, ids, mask, eos, pad, 1, 1.0, False)
    assert theirs[:, 0].tolist() == [model.config.decoder_start_id] * len(ids)
    rows = _until_eos(np.asarray(ours).tolist(), eos)
    assert rows == _until_eos(theirs[:, 1:].tolist(), eos)


@pytest.mark.parametrize("num_beams,length_penalty,early_stopping", CASES)
def test_seq2seq_beam_search_matches_hf(seq2seq_case, num_beams, length_penalty, early_stopping):
    hf, model, params, ids, mask, eos, pad = seq2seq_case
    ours, scores = seq2seq.seq2seq_beam_search(
        model, params, ids, mask, beam_size=num_beams, max_new_tokens=NEW_TOKENS,
        length_penalty=length_penalty, length_penalty_kind="hf", early_stopping=early_stopping,
    )
    theirs, their_scores = _hf_generate(
        hf, ids, mask, eos, pad, num_beams, length_penalty, early_stopping
    )
    lengths = _assert_same_beams(ours, scores, theirs[:, 1:], their_scores, eos)
    if num_beams > 1 and length_penalty < 2.0:
        assert min(lengths) < NEW_TOKENS and max(lengths) == NEW_TOKENS
