"""SQuAD 1.1 / 2.0 inputs for BERT-style encoders: doc-stride windows over the context.

Devlin et al. 2019 (arXiv:1810.04805, section 4.2-4.3); google-research/bert ``run_squad.py``
(``read_squad_examples``, ``convert_examples_to_features``, ``_improve_answer_span``,
``_check_is_max_context``). The approach needs no character offsets from the tokenizer:

1. The context is split into whitespace-separated **words**; every character maps to the word it
   is in (``char_to_word_offset``), so an answer's character span becomes a word span.
2. Every word is tokenized on its own, which keeps ``token -> word`` (``tok_to_orig_index``) and
   ``word -> first token`` (``orig_to_tok_index``). A word is tokenized in its mid-text form,
   ``tokenizer.encode(' ' + word)``: our SentencePiece models have no dummy prefix, so a bare
   ``'castle'`` encodes as ``'c' 'as' 't' 'l' 'e'`` while ``' castle'`` gives the word-start piece
   ``'▁castle'`` that pre-training saw; WordPiece drops the space, and byte-level BPE gets its
   ``'Ġ'`` form (RoBERTa's ``add_prefix_space``).
3. The query is cut to ``max_query_len`` tokens; the context tokens are cut into overlapping
   windows of at most ``max_seq_len - len(query) - 3`` tokens, the next starting
   ``min(length, doc_stride)`` tokens later, until a window reaches the last token. Each window
   is one row ``[CLS] query [SEP] window [SEP] [PAD]...`` with token types 0 up to the first
   ``[SEP]`` and 1 after it.
4. Labels use the first answer (as ``run_squad`` trains): the word span is refined to the
   sub-span of tokens that spells the answer when there is one (``_improve_answer_span``), and a
   row whose window does not hold the whole answer, or an unanswerable example, points both
   labels at ``[CLS]`` (position 0).
5. A token is *max-context* in the window where ``min(left, right) + 0.01 * window_length`` is
   largest (``_check_is_max_context``); span decoding only starts spans there.

Where we differ from the reference, and why:

* An answer whose text is not found in its word span (an ``answer_start`` off by a few
  characters in the official data, or outside the context) is skipped for training with a logged
  warning, as ``run_squad`` does; with ``training=False`` the example keeps its rows (it is still
  scored against its answer texts) and its labels point at ``[CLS]``.
* Whitespace is what ``str.isspace`` says (``run_squad`` lists space, tab, CR, LF and U+202F),
  consistent with ``str.split`` that cleans the answer text.
* A context without words still gives one row (``[CLS] query [SEP] [SEP]``), so every evaluated
  example has a prediction (``run_squad``'s window loop gives none).
* When the answer's tokens do not match as a whole, the improvement also tries the answer's
  first word without its leading space, which lets a SentencePiece model find ``'1990'`` inside
  the word ``'(1990s)'``, as WordPiece's punctuation split lets ``run_squad`` do.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np

from lmjax.data.encoder_vocab import EncoderSpecialIds
from lmjax.data.task_examples import SquadExample
from lmjax.data.tokenizers import Tokenizer

__all__ = [
    "SquadFeatures",
    "SquadWindowConfig",
    "context_words",
    "doc_windows",
    "squad_features",
]

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SquadWindowConfig:
    """How questions and contexts are cut into rows (``run_squad.py`` flags and defaults).

    Attributes:
        max_seq_len: Tokens in a row: ``[CLS]``, query, ``[SEP]``, window, ``[SEP]``, padding.
        doc_stride: Context tokens between the starts of two consecutive windows.
        max_query_len: Query tokens kept (the rest is cut off).
    """

    max_seq_len: int = 384
    doc_stride: int = 128
    max_query_len: int = 64

    def __post_init__(self):
        for name in ("max_seq_len", "doc_stride", "max_query_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"SquadWindowConfig.{name}={value!r}: use a positive integer.")
        if self.max_seq_len <= self.max_query_len + 3:
            raise ValueError(
                f"SquadWindowConfig.max_seq_len={self.max_seq_len} leaves no room for the context "
                f"after max_query_len={self.max_query_len} query tokens and [CLS] [SEP] [SEP]: "
                f"raise max_seq_len above {self.max_query_len + 3} or lower max_query_len."
            )
        if self.doc_stride >= self.min_window_len:
            raise ValueError(
                f"SquadWindowConfig.doc_stride={self.doc_stride} is not below the smallest window "
                f"({self.min_window_len} context tokens = max_seq_len - max_query_len - 3), so "
                "windows would not overlap and the max-context rule would have nothing to "
                f"choose from: lower doc_stride below {self.min_window_len} (run_squad: 128 of "
                "317) or raise max_seq_len."
            )

    @property
    def min_window_len(self) -> int:
        """Context tokens of a window when the query has its full ``max_query_len`` tokens."""
        return self.max_seq_len - self.max_query_len - 3


@dataclasses.dataclass(frozen=True)
class SquadFeatures:
    """The rows of a set of SQuAD examples, and what span decoding needs to map back to text.

    N rows (one per window), L = ``max_seq_len``. Arrays are numpy.

    Attributes:
        inputs: int32 [N, L]: ``[CLS] query [SEP] window [SEP]`` then ``pad_id``.
        token_type_ids: int32 [N, L]: 0 up to the first ``[SEP]`` (and on padding), 1 for the
            window and its ``[SEP]``.
        attention_mask: int32 [N, L]: 1 at real tokens, 0 at padding.
        start_positions: int32 [N]: row position of the first answer token; 0 (``[CLS]``) for
            an unanswerable example, an answer outside this window, or an unlabelled one.
        end_positions: int32 [N]: row position of the last answer token (0 as above).
        example_index: int32 [N]: index of the row's example in ``examples``.
        token_to_word: int32 [N, L]: index in ``words[example_index]`` of the context word a
            window token belongs to; -1 at ``[CLS]``, query, ``[SEP]`` and padding.
        token_is_max_context: bool [N, L]: True where this row is the token's max-context window.
        words: per example, its context's whitespace words (the text predictions are made of).
        uids: per example, its ``uid``.
    """

    inputs: np.ndarray
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    start_positions: np.ndarray
    end_positions: np.ndarray
    example_index: np.ndarray
    token_to_word: np.ndarray
    token_is_max_context: np.ndarray
    words: tuple[tuple[str, ...], ...]
    uids: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """Returns the model inputs and training labels, keyed as the encoder batches are."""
        return {
            "inputs": self.inputs,
            "token_type_ids": self.token_type_ids,
            "attention_mask": self.attention_mask,
            "start_positions": self.start_positions,
            "end_positions": self.end_positions,
        }


def context_words(context: str) -> tuple[list[str], list[int]]:
    """Returns the whitespace-separated words of ``context`` and each character's word index.

    ``run_squad.py::read_squad_examples``: a whitespace character maps to the word before it
    (-1 before the first word), so a character span maps to a word span.
    """
    words: list[str] = []
    char_to_word: list[int] = []
    after_space = True
    for char in context:
        if char.isspace():
            after_space = True
        else:
            if after_space:
                words.append(char)
            else:
                words[-1] += char
            after_space = False
        char_to_word.append(len(words) - 1)
    return words, char_to_word


def doc_windows(num_tokens: int, max_window_len: int, doc_stride: int) -> list[tuple[int, int]]:
    """Returns the ``(start, length)`` windows over ``num_tokens`` context tokens.

    ``run_squad.py::convert_examples_to_features``: a window takes what is left, at most
    ``max_window_len`` tokens; the loop stops once a window reaches the last token, else the next
    starts ``min(length, doc_stride)`` later. No tokens give no windows.
    """
    windows = []
    start = 0
    while start < num_tokens:
        length = min(num_tokens - start, max_window_len)
        windows.append((start, length))
        if start + length == num_tokens:
            break
        start += min(length, doc_stride)
    return windows


def _max_context_windows(windows: Sequence[tuple[int, int]], num_tokens: int) -> np.ndarray:
    """int [T]: for each context token, the window where it has the most context.

    ``run_squad.py::_check_is_max_context``: the score is ``min(left, right) + 0.01 * length``,
    the first window wins ties.
    """
    best = np.full([num_tokens], -1, np.int64)
    best_score = np.full([num_tokens], -np.inf)
    for index, (start, length) in enumerate(windows):
        positions = np.arange(start, start + length)
        score = np.minimum(positions - start, start + length - 1 - positions) + 0.01 * length
        better = score > best_score[start:start + length]
        best[start:start + length][better] = index
        best_score[start:start + length][better] = score[better]
    return best


def _word_ids(tokenizer: Tokenizer, word: str) -> list[int]:
    """The ids of one context word in its mid-text (word-start) form."""
    return tokenizer.encode(" " + word)


def _context_tokens(context: str, tokenizer: Tokenizer) -> tuple[list, list, list, list, list]:
    """``(words, char_to_word, doc_ids, tok_to_word, word_to_tok)`` of a context.

    ``run_squad.py``'s ``all_doc_tokens``, ``tok_to_orig_index`` and ``orig_to_tok_index``.
    """
    words, char_to_word = context_words(context)
    doc_ids, tok_to_word, word_to_tok = [], [], []
    for word_index, word in enumerate(words):
        word_to_tok.append(len(doc_ids))
        ids = _word_ids(tokenizer, word)
        doc_ids.extend(ids)
        tok_to_word.extend([word_index] * len(ids))
    return words, char_to_word, doc_ids, tok_to_word, word_to_tok


def _answer_word_span(example: SquadExample, words: Sequence[str],
                      char_to_word: Sequence[int]) -> tuple[int, int] | None:
    """The first answer's word span, or None when its text is not there (logged)."""
    text, start_char = example.answers[0], example.answer_starts[0]
    end_char = start_char + len(text) - 1
    cleaned = " ".join(text.split())
    if cleaned and 0 <= start_char <= end_char < len(char_to_word):
        start_word, end_word = char_to_word[start_char], char_to_word[end_char]
        if 0 <= start_word <= end_word and cleaned in " ".join(words[start_word:end_word + 1]):
            return start_word, end_word
        found = " ".join(words[max(start_word, 0):end_word + 1])
    else:
        found = f"<characters {start_char}..{end_char} of a {len(char_to_word)}-character context>"
    _log.warning(
        "SQuAD example %r: answer %r is not at answer_start=%d (found %r): training skips the "
        "example (as run_squad.py does), prediction rows label it at [CLS].", example.uid, text,
        start_char, found,
    )
    return None


def _improved_token_span(doc_ids: Sequence[int], start: int, end: int, tokenizer: Tokenizer,
                         answer: str) -> tuple[int, int]:
    """The sub-span of ``doc_ids[start:end + 1]`` that spells ``answer``, else ``(start, end)``.

    ``run_squad.py::_improve_answer_span``: earliest start first, then the longest end. The
    answer is tokenized as the context is (word by word, each with its leading space); failing
    that, with its first word bare (a sub-word answer such as ``'1990'`` in ``'(1990s)'``).
    """
    answer_words = answer.split()
    spaced = [i for word in answer_words for i in _word_ids(tokenizer, word)]
    bare_first = tokenizer.encode(answer_words[0]) + [
        i for word in answer_words[1:] for i in _word_ids(tokenizer, word)]
    for target in (spaced, bare_first):
        size = len(target)
        for new_start in range(start, end - size + 2):
            if list(doc_ids[new_start:new_start + size]) == target:
                return new_start, new_start + size - 1
    return start, end


def squad_features(
    examples: Sequence[SquadExample],
    tokenizer: Tokenizer,
    specials: EncoderSpecialIds,
    config: SquadWindowConfig = SquadWindowConfig(),
    *,
    training: bool,
) -> SquadFeatures:
    """Returns the doc-stride rows of ``examples`` (``run_squad.py::convert_examples_to_features``).

    Args:
        examples: SQuAD 1.1 / 2.0 examples; no answers = unanswerable (labels at ``[CLS]``).
        tokenizer: Any :class:`~lmjax.data.tokenizers.Tokenizer`; words are encoded one at a
            time (see the module docstring).
        specials: ``[CLS]``/``[SEP]``/``[PAD]`` ids (``encoder_special_ids(tokenizer)``).
        config: Row length, stride and query length.
        training: True skips (with a warning) examples whose first answer is not found at its
            ``answer_start``; False keeps every example, for prediction.

    Returns:
        The rows, grouped by example in input order, windows in context order.

    Raises:
        ValueError: ``examples`` is empty, or training keeps no example.
    """
    if not examples:
        raise ValueError("squad_features got no examples: pass at least one SquadExample.")
    length = config.max_seq_len
    rows: dict[str, list] = {name: [] for name in (
        "inputs", "token_type_ids", "real_len", "start", "end", "example", "to_word",
        "max_context")}
    all_words, uids = [], []
    tokenized = {}  # context -> its tokens; SQuAD asks about five questions per paragraph
    for example_index, example in enumerate(examples):
        if example.context not in tokenized:
            tokenized[example.context] = _context_tokens(example.context, tokenizer)
        words, char_to_word, doc_ids, tok_to_word, word_to_tok = tokenized[example.context]
        all_words.append(tuple(words))
        uids.append(example.uid)

        answer_tokens = None  # (first, last) context token of the first answer
        if not example.is_impossible:
            word_span = _answer_word_span(example, words, char_to_word)
            if word_span is None and training:
                continue
            if word_span is not None:
                start_word, end_word = word_span
                last = (word_to_tok[end_word + 1] - 1 if end_word + 1 < len(words)
                        else len(doc_ids) - 1)
                answer_tokens = _improved_token_span(
                    doc_ids, word_to_tok[start_word], last, tokenizer, example.answers[0])

        query_ids = tokenizer.encode(example.question)[:config.max_query_len]
        max_window_len = length - len(query_ids) - 3
        windows = doc_windows(len(doc_ids), max_window_len, config.doc_stride) or [(0, 0)]
        best_window = _max_context_windows(windows, len(doc_ids))
        offset = len(query_ids) + 2  # row position of the window's first token
        for window_index, (start, size) in enumerate(windows):
            # [L] each: [CLS] query [SEP] window [SEP] pad...
            ids = np.full([length], specials.pad_id, np.int32)
            ids[0] = specials.cls_id
            ids[1:offset - 1] = query_ids
            ids[offset - 1] = specials.sep_id
            ids[offset:offset + size] = doc_ids[start:start + size]
            ids[offset + size] = specials.sep_id
            types = np.zeros([length], np.int32)
            types[offset:offset + size + 1] = 1
            to_word = np.full([length], -1, np.int32)
            to_word[offset:offset + size] = tok_to_word[start:start + size]
            max_context = np.zeros([length], bool)
            max_context[offset:offset + size] = best_window[start:start + size] == window_index
            label = (0, 0)
            if answer_tokens is not None:
                first, last = answer_tokens
                if start <= first and last <= start + size - 1:
                    label = (first - start + offset, last - start + offset)
            rows["inputs"].append(ids)
            rows["token_type_ids"].append(types)
            rows["real_len"].append(offset + size + 1)
            rows["start"].append(label[0])
            rows["end"].append(label[1])
            rows["example"].append(example_index)
            rows["to_word"].append(to_word)
            rows["max_context"].append(max_context)
    if not rows["inputs"]:
        raise ValueError(
            f"None of the {len(examples)} SQuAD examples has its answer at its answer_start, so "
            "training has no rows: check the answers / answer_starts of the reader (see the "
            "warnings above), or build prediction rows with training=False."
        )
    real_len = np.asarray(rows["real_len"])  # [N]
    return SquadFeatures(
        inputs=np.stack(rows["inputs"]),
        token_type_ids=np.stack(rows["token_type_ids"]),
        attention_mask=(np.arange(length)[None, :] < real_len[:, None]).astype(np.int32),
        start_positions=np.asarray(rows["start"], np.int32),
        end_positions=np.asarray(rows["end"], np.int32),
        example_index=np.asarray(rows["example"], np.int32),
        token_to_word=np.stack(rows["to_word"]),
        token_is_max_context=np.stack(rows["max_context"]),
        words=tuple(all_words),
        uids=tuple(uids),
    )

