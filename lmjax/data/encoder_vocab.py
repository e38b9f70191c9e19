"""What encoders need of a vocabulary: BERT's WordPiece, the special ids, the word starts.

* :class:`WordPieceTokenizer` reads a published BERT ``vocab.txt`` (Devlin et al. 2019,
  arXiv:1810.04805, section 3; google-research/bert ``tokenization.py``) with the ``tokenizers``
  library: BERT's normaliser and pre-tokenizer, greedy longest-match-first WordPiece (Wu et al.
  2016, arXiv:1609.08144). It gives the ids of Hugging Face's ``BertTokenizer``.
* :func:`encoder_special_ids` finds ``[CLS]``/``[SEP]``/``[MASK]``/``[PAD]`` (or RoBERTa's and
  ALBERT's ``<s>``/``</s>``/``<mask>``/``<pad>``) of any :class:`~lmjax.data.tokenizers.Tokenizer`.
* :func:`word_start_table` and :func:`space_end_table` tell which ids begin a word, for whole-word
  masking (BERT's ``do_whole_word_mask``, ALBERT's n-gram masking); the segment batches turn them
  into the ``word_starts`` array.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lmjax.data.tokenizers import HuggingFaceTokenizer, Tokenizer

__all__ = [
    "EncoderSpecialIds",
    "WordPieceTokenizer",
    "encoder_special_ids",
    "space_end_table",
    "word_start_table",
]

# The pieces of a BERT vocabulary that encode as themselves when written in a text.
_WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class WordPieceTokenizer(HuggingFaceTokenizer):
    """A published BERT ``vocab.txt`` (one piece a line, the line number is the id).

    Built on the ``tokenizers`` library the way BERT's ``tokenization.py`` tokenizes: BERT's
    normaliser (control characters removed, whitespace unified, CJK characters spaced out,
    lowercasing and accent stripping when ``do_lower_case``), BERT's pre-tokenizer (split on
    whitespace and punctuation), then greedy longest-match-first WordPiece with ``##`` marking
    pieces inside a word and ``[UNK]`` for words over 100 characters or without a match. The
    pieces ``[PAD] [UNK] [CLS] [SEP] [MASK]`` found in the vocabulary are special: written in a
    text they encode to their own id, as Hugging Face's ``BertTokenizer`` does.

    It is a :class:`~lmjax.data.tokenizers.HuggingFaceTokenizer` (same library, same methods)
    built from the ``vocab.txt`` instead of read from a ``tokenizer.json``.

    ``bos_id`` and ``eos_id`` are None (BERT has ``[CLS]``/``[SEP]`` instead; see
    :func:`encoder_special_ids`), so these vocabularies serve the encoder batches, not packed LM
    rows. ``pad_id`` is ``[PAD]``.

    Args:
        path: The ``vocab.txt`` file.
        do_lower_case: Lowercase and strip accents (uncased checkpoints); False for cased ones.
    """

    def __init__(self, path: str, do_lower_case: bool = True):
        from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        with open(path, encoding="utf-8") as f:
            pieces = [line.rstrip("\r\n") for line in f]
        if not pieces or "[UNK]" not in pieces:
            raise ValueError(
                f"{path} is not a BERT vocab.txt: it has no '[UNK]' line. Point tokenizer.path at "
                "the checkpoint's vocab.txt, or use tokenizer.kind='hf_json' for a tokenizer.json."
            )
        self._path = path
        self.do_lower_case = bool(do_lower_case)
        tokenizer = HFTokenizer(models.WordPiece.from_file(
            path, unk_token="[UNK]", continuing_subword_prefix="##",
            max_input_chars_per_word=100,
        ))
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None,
            lowercase=self.do_lower_case,
        )
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece(prefix="##")
        specials = [p for p in _WORDPIECE_SPECIALS if p in pieces]
        tokenizer.add_special_tokens([AddedToken(p, normalized=False, special=True)
                                      for p in specials])
        self._tokenizer = tokenizer
        # The roles HuggingFaceTokenizer reads; BERT has no BOS/EOS ([CLS]/[SEP] instead).
        self._special = {
            "eos": None, "bos": None,
            "pad": tokenizer.token_to_id("[PAD]"), "unk": tokenizer.token_to_id("[UNK]"),
        }

    def __repr__(self) -> str:
        return (f"WordPieceTokenizer({self._path}, vocab_size={self.vocab_size}, "
                f"do_lower_case={self.do_lower_case})")


# --- What encoders need of a tokenizer -------------------------------------------------------

# Spellings of each encoder special piece, first match wins: BERT/WordPiece, then RoBERTa/ALBERT.
_ENCODER_SPECIAL_CANDIDATES = {
    "cls": ("[CLS]", "<s>"),
    "sep": ("[SEP]", "</s>"),
    "mask": ("[MASK]", "<mask>"),
    "pad": ("[PAD]", "<pad>"),
}


@dataclasses.dataclass(frozen=True)
class EncoderSpecialIds:
    """The ids an encoder batch and its corruption need (Devlin et al. 2019, section 3).

    Attributes:
        cls_id: ``[CLS]`` (``<s>``), first in every row; its output feeds the sentence heads.
        sep_id: ``[SEP]`` (``</s>``), after each segment.
        mask_id: ``[MASK]`` (``<mask>``), what masked language modelling writes.
        pad_id: ``[PAD]`` (``<pad>``), fills the row after the last ``[SEP]``.
    """

    cls_id: int
    sep_id: int
    mask_id: int
    pad_id: int

    @property
    def special_ids(self) -> tuple[int, ...]:
        """The four ids; masking never chooses them (the objectives' ``special_ids``)."""
        return (self.cls_id, self.sep_id, self.mask_id, self.pad_id)


def encoder_special_ids(tokenizer: Tokenizer) -> EncoderSpecialIds:
    """Finds the ``[CLS]``/``[SEP]``/``[MASK]``/``[PAD]`` ids of ``tokenizer`` by their spellings.

    Each role takes the first spelling the vocabulary has: ``[CLS]`` else ``<s>``, ``[SEP]`` else
    ``</s>``, ``[MASK]`` else ``<mask>``, ``[PAD]`` else ``<pad>`` (BERT's WordPiece vocabulary,
    then RoBERTa's and ALBERT's).

    Raises:
        ValueError: A role has none of its spellings; the message names it and the fix.
    """
    found = {}
    for role, spellings in _ENCODER_SPECIAL_CANDIDATES.items():
        for spelling in spellings:
            try:
                found[role] = tokenizer.id_of(spelling)
                break
            except KeyError:
                continue
        else:
            names = " or ".join(repr(s) for s in spellings)
            raise ValueError(
                f"{tokenizer!r} has no {role.upper()} piece ({names}), which encoder batches "
                f"need. For a SentencePiece model trained here, add {spellings[0]!r} to "
                "tokenizer.user_defined_symbols (e.g. ('[CLS]', '[SEP]', '[MASK]')) and retrain "
                "(a new workdir or an empty tokenizer/ folder); for a loaded vocabulary, use one "
                "that has it."
            )
    return EncoderSpecialIds(found["cls"], found["sep"], found["mask"], found["pad"])


# Characters a piece begins with when it starts a word: SentencePiece's meta space, the byte-level
# BPE spellings of space, newline and tab (GPT-2), and plain whitespace.
_WORD_START_MARKS = ("\u2581", "\u0120", "\u010a", "\u0109", " ", "\n", "\t")
_SPACE_MARKS = "\u2581\u0120 "  # the spellings of a space (not of a line break or a tab)


def _prefix(tokenizer: Tokenizer) -> str | None:
    return getattr(tokenizer, "continuing_subword_prefix", None)


def word_start_table(tokenizer: Tokenizer) -> np.ndarray:
    """Returns bool [V]: True for the ids whose piece begins a word.

    WordPiece vocabularies (``##`` marks a piece inside a word): every piece without the prefix.
    SentencePiece and byte-level BPE: pieces starting with the meta space ``'▁'`` (or ``'Ġ'``,
    ``'Ċ'``, ``'ĉ'``). Special pieces (control, unknown, user-defined, added) and byte pieces
    count as starts. What the table cannot see from one id alone, the batch builder adds: the
    first token of a segment or sentence starts a word (our SentencePiece models are trained
    without a dummy prefix, so a line's first word has no ``'▁'``), and so does a token after a
    piece that ends in whitespace (:func:`space_end_table`, e.g. ``'▁▁▁'`` then ``'def'``).
    """
    prefix = _prefix(tokenizer)
    table = np.zeros([tokenizer.vocab_size], bool)
    for piece_id in range(tokenizer.vocab_size):
        piece = tokenizer.id_to_piece(piece_id)
        if tokenizer.is_special(piece_id):
            table[piece_id] = True
        elif prefix is not None:
            table[piece_id] = not piece.startswith(prefix)
        else:
            table[piece_id] = piece.startswith(_WORD_START_MARKS)
    return table


def space_end_table(tokenizer: Tokenizer) -> np.ndarray:
    """Returns bool [V]: True for pieces that end in whitespace after some text, so the next
    piece starts a word.

    A piece made only of spaces (``'▁'``, ``'▁▁▁'``) is False: it begins the word that
    follows it (``'▁'`` + ``'Protocol'`` is one word, as ``'▁Protocol'`` would be). Always
    False for WordPiece (whitespace never survives its pre-tokenizer) and special pieces.
    """
    table = np.zeros([tokenizer.vocab_size], bool)
    if _prefix(tokenizer) is not None:
        return table
    for piece_id in range(tokenizer.vocab_size):
        if not tokenizer.is_special(piece_id):
            piece = tokenizer.id_to_piece(piece_id)
            only_spaces = not piece.strip(_SPACE_MARKS)
            table[piece_id] = piece.endswith(_WORD_START_MARKS) and not only_spaces
    return table
