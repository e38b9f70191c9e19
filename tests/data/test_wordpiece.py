"""WordPiece vocab.txt loading (ids equal to transformers' BertTokenizer), the encoder special
ids and their error message, and the word-start tables."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from transformers import BertTokenizer

from lmjax.data.encoder_vocab import (
    EncoderSpecialIds,
    WordPieceTokenizer,
    encoder_special_ids,
    space_end_table,
    word_start_table,
)
from lmjax.data.tokenizers import load_or_train_tokenizer, loaded_tokenizer

VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "the", "quick", "brown", "fox", "jump", "##s", "##ed", "over", "lazy", "dog",
    "un", "##believ", "##ably", "##ly", ".", ",", "!", "a", "cafe", "hello", "world",
    "Hello", "The", "Un", "##B", "run", "##ning", "'", "s", "(", ")", "x", "=", "1", "2",
    "中", "文",
]
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Unbelievably, the fox jumped!  Hello\tworld",
    "café (x = 12) running's UnB",
    "a [MASK] dog [SEP] the [CLS] fox",
    "中文 zzz unknownword",
    "",
]


@pytest.fixture
def vocab_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("".join(piece + "\n" for piece in VOCAB), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_ids_equal_transformers_bert_tokenizer(vocab_file, do_lower_case):
    ours = WordPieceTokenizer(vocab_file, do_lower_case=do_lower_case)
    reference = BertTokenizer(vocab_file, do_lower_case=do_lower_case)
    assert ours.vocab_size == len(VOCAB)
    for text in TEXTS:
        expected = reference(text, add_special_tokens=False)["input_ids"]
        assert ours.encode(text) == expected, text
    assert ours.encode("The fox") != WordPieceTokenizer(vocab_file, not do_lower_case).encode(
        "The fox")


def test_pieces_decode_and_special_ids(vocab_file):
    tok = WordPieceTokenizer(vocab_file)
    ids = tok.encode("unbelievably the fox jumped")
    assert [tok.id_to_piece(i) for i in ids] == [
        "un", "##believ", "##ably", "the", "fox", "jump", "##ed"]
    assert tok.decode(ids) == "unbelievably the fox jumped"
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, None, None)
    specials = encoder_special_ids(tok)
    assert specials == EncoderSpecialIds(cls_id=2, sep_id=3, mask_id=4, pad_id=0)
    assert specials.special_ids == (2, 3, 4, 0)
    with pytest.raises(KeyError, match="##zz"):
        tok.id_of("##zz")


def test_loaded_as_kind_wordpiece(vocab_file):
    assert loaded_tokenizer("wordpiece", vocab_file).encode("The Fox") == [5, 8]
    cased = load_or_train_tokenizer(
        {"kind": "wordpiece", "path": vocab_file, "do_lower_case": False}, [], "/nonexistent")
    assert cased.encode("The") == [27]
    with pytest.raises(ValueError, match="'wordpiece'"):
        loaded_tokenizer("bert", vocab_file)


def test_a_file_that_is_not_a_vocab_is_refused(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("the\nfox\n")
    with pytest.raises(ValueError, match=r"no '\[UNK\]' line"):
        WordPieceTokenizer(str(path))


def test_word_starts_of_wordpiece_pieces(vocab_file):
    tok = WordPieceTokenizer(vocab_file)
    table = word_start_table(tok)
    assert table.shape == (len(VOCAB),) and table.dtype == bool
    expected = np.array([not piece.startswith("##") for piece in VOCAB])
    np.testing.assert_array_equal(table, expected)
    ids = tok.encode("unbelievably the fox jumps")
    np.testing.assert_array_equal(table[ids], [1, 0, 0, 1, 1, 1, 0])
    assert not space_end_table(tok).any()


def test_word_starts_of_sentencepiece_pieces(encoder_sentencepiece):
    tok = encoder_sentencepiece
    table, space_end = word_start_table(tok), space_end_table(tok)
    assert table.shape == space_end.shape == (tok.vocab_size,)
    for piece in ("[CLS]", "[SEP]", "[MASK]", "<pad>", "<unk>", "<s>", "</s>", "<0x41>"):
        assert table[tok.id_of(piece)], piece
        assert not space_end[tok.id_of(piece)], piece
    for piece_id in range(tok.vocab_size):
        piece = tok.id_to_piece(piece_id)
        if not tok.is_special(piece_id):
            assert table[piece_id] == piece.startswith("\u2581"), piece
            # A piece of spaces only ('▁', '▁▁▁') joins the word after it.
            ends_after_text = piece.endswith("\u2581") and bool(piece.strip("\u2581"))
            assert space_end[piece_id] == ends_after_text, piece
    ids = tok.encode("Return the value")
    pieces = [tok.id_to_piece(i) for i in ids]
    assert pieces[0] == "Return" and not table[ids[0]]  # no dummy prefix: the batch marks it
    assert table[ids[1:]].sum() == 2 == sum(p.startswith("\u2581") for p in pieces)


def test_missing_mask_names_the_piece_and_the_fix(small_sentencepiece):
    # Trained with user_defined_symbols ('_start_', ...): <s> and </s> serve as CLS and SEP,
    # but there is no [MASK] / <mask>.
    with pytest.raises(ValueError, match=r"no MASK piece \('\[MASK\]' or '<mask>'\)") as error:
        encoder_special_ids(small_sentencepiece)
    assert "tokenizer.user_defined_symbols" in str(error.value)
    assert "'[MASK]'" in str(error.value)


def test_sentencepiece_special_ids_prefer_bert_spellings(encoder_sentencepiece):
    tok = encoder_sentencepiece
    specials = encoder_special_ids(tok)
    assert specials.cls_id == tok.id_of("[CLS]") != tok.id_of("<s>")
    assert specials.sep_id == tok.id_of("[SEP]") != tok.id_of("</s>")
    assert specials.mask_id == tok.id_of("[MASK]")
    assert specials.pad_id == tok.pad_id == 0
    assert len(set(specials.special_ids)) == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        specials.cls_id = 7
