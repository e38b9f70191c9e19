"""Tokenizers: SentencePiece training (determinism, specials, byte fallback), loading, caching,
and Hugging Face tokenizer.json files."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import sys
import threading

import pytest

from lmjax.data.tokenizers import (
    SentencePieceOptions,
    load_or_train_tokenizer,
    loaded_tokenizer,
    sentencepiece_options,
    trained_sentencepiece_tokenizer,
)

HANGUL = re.compile("[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
ROUND_TRIP_TEXTS = [
    "안녕하세요, 세계! 한국어 문장입니다.",
    "Mixed 한국어 and English: print('안녕') # 주석",
    "Emoji 😀🎉👩‍💻 and ✓ symbols",
    "  leading spaces, trailing tabs\t\t\n\n    indented code:\n        return x  ",
    "",
]


def test_training_corpus_has_no_hangul_yet_korean_round_trips(small_sentencepiece,
                                                                python_docs_train_texts):
    assert not any(HANGUL.search(python_docs_train_texts[i])
                   for i in range(len(python_docs_train_texts)))
    tok = small_sentencepiece
    for text in ROUND_TRIP_TEXTS:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.unk_id not in tok.encode("".join(ROUND_TRIP_TEXTS))  # bytes, never <unk>
    assert tok.encode("한")[:3] == [tok.id_of(f"<0x{b:02X}>") for b in "한".encode()]


def test_special_ids_and_user_defined_symbols_are_single_ids(small_sentencepiece):
    tok = small_sentencepiece
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert tok.vocab_size == 600
    for symbol in ("_start_", "_delimiter_", "_classify_"):
        assert tok.encode(symbol) == [tok.id_of(symbol)]
    ids = tok.encode("_start_ Some question _delimiter_ an answer _classify_")
    assert ids[0] == tok.id_of("_start_") and ids[-1] == tok.id_of("_classify_")
    assert tok.id_of("_delimiter_") in ids
    with pytest.raises(KeyError, match="user_defined_symbols"):
        tok.id_of("_not_a_piece_")


def test_training_is_deterministic_and_depends_on_options(python_docs_train_texts, small_options,
                                                          small_sentencepiece):
    again = trained_sentencepiece_tokenizer(python_docs_train_texts, small_options)
    assert again.model_proto == small_sentencepiece.model_proto
    bpe = trained_sentencepiece_tokenizer(
        python_docs_train_texts, dataclasses.replace(small_options, model_type="bpe")
    )
    assert bpe.model_proto != small_sentencepiece.model_proto
    assert bpe.decode(bpe.encode(ROUND_TRIP_TEXTS[1])) == ROUND_TRIP_TEXTS[1]


def test_model_file_loads_to_the_same_tokenizer(small_sentencepiece, tmp_path):
    path = tmp_path / "spm.model"
    path.write_bytes(small_sentencepiece.model_proto)
    loaded = loaded_tokenizer("sentencepiece", str(path))
    text = "def f(x):\n    return x + 1  # 한국어"
    assert loaded.encode(text) == small_sentencepiece.encode(text)
    assert loaded.vocab_size == small_sentencepiece.vocab_size
    with pytest.raises(FileNotFoundError, match=r"tokenizer.path=.*does not exist.*path=''"):
        loaded_tokenizer("sentencepiece", str(tmp_path / "missing.model"))
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        loaded_tokenizer("sentencepiece", str(tmp_path / "junk.model"))


def _tok_cfg(**overrides):
    cfg = {"kind": "sentencepiece", "path": "", "vocab_size": 600, "model_type": "unigram",
           "byte_fallback": True, "character_coverage": 0.9995,
           "user_defined_symbols": ("_start_",), "max_training_chars": 200_000}
    cfg.update(overrides)
    return cfg


class _NeverRead:
    """Texts that fail the test if anything iterates them."""

    def __iter__(self):
        raise AssertionError("the cached tokenizer should have been reused, not retrained")


def test_load_or_train_caches_in_workdir_and_reuses(python_docs_train_texts, tmp_path):
    first = load_or_train_tokenizer(_tok_cfg(), python_docs_train_texts, str(tmp_path))
    assert (tmp_path / "tokenizer" / "sentencepiece.model").exists()
    reused = load_or_train_tokenizer(_tok_cfg(), _NeverRead(), str(tmp_path))
    assert reused.model_proto == first.model_proto
    with pytest.raises(ValueError, match=r"vocab_size: cached 600 vs config 700.*Delete"):
        load_or_train_tokenizer(_tok_cfg(vocab_size=700), _NeverRead(), str(tmp_path))


def test_concurrent_callers_train_once(python_docs_train_texts, tmp_path):
    reads = []

    class CountingTexts:
        def __iter__(self):
            reads.append(1)
            for i in range(120):
                yield python_docs_train_texts[i]

    results = [None, None]

    def call(slot):
        results[slot] = load_or_train_tokenizer(_tok_cfg(), CountingTexts(), str(tmp_path))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reads) == 1
    assert results[0].model_proto == results[1].model_proto


def test_bad_options_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="leaves no room"):
        SentencePieceOptions(vocab_size=200)
    with pytest.raises(ValueError, match="'unigram' or 'bpe'"):
        SentencePieceOptions(model_type="wordpiece")
    with pytest.raises(ValueError, match="no comma or whitespace"):
        SentencePieceOptions(user_defined_symbols=("a b",))
    with pytest.raises(ValueError, match="lower tokenizer.vocab_size"):
        trained_sentencepiece_tokenizer(["tiny corpus"] * 3, SentencePieceOptions(vocab_size=5000))
    with pytest.raises(ValueError, match="only 'sentencepiece' models are trained"):
        load_or_train_tokenizer(_tok_cfg(kind="hf_json"), [], str(tmp_path))
    assert sentencepiece_options(_tok_cfg()).user_defined_symbols == ("_start_",)


def test_hugging_face_tokenizer_json(tmp_path, python_docs_train_texts):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator((python_docs_train_texts[i] for i in range(40)), trainer)
    path = tmp_path / "tokenizer.json"
    hf.save(str(path))

    tok = loaded_tokenizer("hf_json", str(path))
    assert tok.vocab_size == hf.get_vocab_size()
    assert tok.eos_id == tok.id_of("<|endoftext|>") == tok.pad_id
    assert tok.bos_id is None
    for text in ROUND_TRIP_TEXTS:
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("<|endoftext|>") == [tok.eos_id]
    with pytest.raises(KeyError, match="not a token"):
        tok.id_of("<never>")
    (tmp_path / "broken.json").write_text("{}")
    with pytest.raises(ValueError, match="not a Hugging Face tokenizer.json"):
        loaded_tokenizer("hf_json", str(tmp_path / "broken.json"))


class _StderrWithoutDescriptor(io.StringIO):
    """Like a Jupyter kernel's stderr under pytest: ``fileno()`` raises."""


class _StderrOnACopyOfDescriptor2(io.StringIO):
    """Like a Jupyter kernel's stderr: ``fileno()`` is a copy of the original descriptor 2."""

    def __init__(self):
        super().__init__()
        self.copy = os.dup(2)

    def fileno(self):
        return self.copy


@pytest.mark.parametrize("stream", [_StderrWithoutDescriptor, _StderrOnACopyOfDescriptor2])
def test_training_log_stays_out_of_a_notebooks_stderr(capfd, monkeypatch, stream,
                                                      python_docs_train_texts, small_options):
    captured = stream()
    monkeypatch.setattr(sys, "stderr", captured)
    tokenizer = trained_sentencepiece_tokenizer(python_docs_train_texts[:50], small_options)
    assert sys.stderr is captured
    assert "trainer_interface" not in capfd.readouterr().err  # the log went to the log file
    assert tokenizer.decode(tokenizer.encode("def read(self):")) == "def read(self):"
    if isinstance(captured, _StderrOnACopyOfDescriptor2):
        os.close(captured.copy)
