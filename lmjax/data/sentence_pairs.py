"""Sentence pairs for encoder pre-training: BERT's NSP, ALBERT's SOP, RoBERTa's FULL-SENTENCES.

What one row of an encoder batch holds, before the layout ``[CLS] A [SEP] B [SEP]`` and masking
(``lmjax.data.segment_batches``):

==========  ========================================================================================
``'nsp'``   BERT's next-sentence prediction (Devlin et al. 2019, arXiv:1810.04805, section 3.1;
            google-research/bert ``create_pretraining_data.py``,
            ``create_instances_from_document``).
            A is the first ``a_end`` segments of a chunk; with probability 0.5 B is a span of a
            *random other* document (label 1) and the chunk's unused segments are put back to
            start the next chunk; otherwise B is the rest of the chunk (label 0).
``'sop'``   ALBERT's sentence-order prediction (Lan et al. 2020, arXiv:1909.11942, section 4.1;
            google-research/albert ``create_pretraining_data.py``): B is always the true
            continuation of A, and with probability 0.5 the two are swapped (label 1).
``'none'``  RoBERTa's FULL-SENTENCES (Liu et al. 2019, arXiv:1907.11692, section 4.2; fairseq
            ``sample_break_mode='complete'``): whole sentences read contiguously, packed up to
            ``seq_len - 2`` tokens, crossing document boundaries; one segment, no label.
==========  ========================================================================================

**Sentences.** The reference reads one sentence per line. Our corpora are not split that way (the
embedded Python docs are hard-wrapped at ~70 characters, so a line is a piece of a sentence), so
:func:`document_sentences` splits a document into paragraphs at blank lines; a paragraph whose
first line is indented (code, grammar rules, tables) gives one sentence per non-empty line; any
other paragraph is joined into one line and cut after ``.``, ``!`` or ``?`` followed by space and
a capital, digit, quote or bracket. A sentence too long for a row is truncated (NSP/SOP, by
``truncate_seq_pair``) or split across rows (FULL-SENTENCES), never dropped.

**Where we differ from the references, and why.**

* The reference builds all instances once (``dupe_factor`` copies with different masks) and
  shuffles them globally. Here instances are built lazily, document by document, in a shuffled
  document order that changes every epoch; each epoch is a fresh draw of chunks, split points,
  random partners and swaps (a dynamic ``dupe_factor``). Rows of one batch may come from the
  same document.
* All randomness of document ``d`` in epoch ``e`` comes from ``np.random.default_rng([seed, e,
  d])`` in the reference's order of draws, so any position is rebuilt exactly on resumption.
  As in the reference, the short-target draw (``short_seq_prob``) is made once per document.
* NSP's random document is drawn uniformly from the *other* documents (the reference draws up to
  ten times and may keep its own document); documents without sentences are skipped.
* A chunk with a single segment (a sentence longer than the target, or a document's last
  sentence) is cut at a random token inside it, and the label is drawn as for any chunk; a
  one-token chunk gives no instance. BERT instead always gives such a chunk a random-document B
  (label 1), and ALBERT does the same under SOP. With long sentences that skews the labels: on
  the embedded corpus at ``seq_len=64`` a fifth of the chunks have one segment and the NSP labels
  come out 60/40. For SOP it would also mix NSP's signal into the order label.
* FULL-SENTENCES: where a row crosses from one document into the next, a ``[SEP]`` separates
  them (fairseq ends every sentence with ``</s>``; one separator per document boundary keeps the
  boundary visible at less cost). Rows are ``[CLS] ... [SEP]`` with token types all 0.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Sequence

import numpy as np

from lmjax.data.shuffle import EpochPermutation

__all__ = [
    "SENTENCE_PAIR_TASKS",
    "EncodedCorpus",
    "EncodedDocument",
    "FullSentenceStream",
    "SegmentPair",
    "SentencePairStream",
    "Span",
    "document_rng",
    "document_sentences",
    "sentence_pair_instances",
    "truncation_cuts",
]

SENTENCE_PAIR_TASKS = ("none", "nsp", "sop")

_PARAGRAPH_BREAK = re.compile(r"\n(?:[ \t]*\n)+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_CACHED_DOCUMENTS = 1024


def document_sentences(text: str) -> list[str]:
    """Returns the sentences of ``text`` (see the module docstring), stripped and non-empty."""
    sentences = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        lines = [line.strip() for line in paragraph.split("\n")]
        lines = [line for line in lines if line]
        if not lines:
            continue
        if paragraph.lstrip("\n")[:1].isspace():  # an indented block: one sentence per line
            sentences.extend(lines)
        else:
            sentences.extend(s for s in _SENTENCE_END.split(" ".join(lines)) if s)
    return sentences


@dataclasses.dataclass(frozen=True)
class EncodedDocument:
    """A document's sentences, tokenized and concatenated.

    Attributes:
        tokens: int32 [T], the sentences' ids one after the other.
        offsets: int64 [S + 1], sentence ``j`` is ``tokens[offsets[j]:offsets[j + 1]]``.
    """

    tokens: np.ndarray
    offsets: np.ndarray

    @property
    def num_sentences(self) -> int:
        return len(self.offsets) - 1

    @functools.cached_property
    def sentence_starts(self) -> np.ndarray:
        """bool [T]: True at the first token of each sentence (shared: copy before writing)."""
        starts = np.zeros(len(self.tokens), bool)
        starts[self.offsets[:-1]] = True
        return starts

    def sentence_length(self, j: int) -> int:
        return int(self.offsets[j + 1] - self.offsets[j])


class EncodedCorpus:
    """Random access to the :class:`EncodedDocument` of each document, a few hundred cached.

    Args:
        documents: Random-access documents (``open_documents``).
        encode: The tokenizer's ``encode``; each sentence is encoded on its own.
    """

    def __init__(self, documents: Sequence[str], encode: Callable[[str], list[int]]):
        self.documents = documents
        self._encode = encode
        self._encoded = functools.lru_cache(maxsize=_CACHED_DOCUMENTS)(self._encoded_uncached)

    def __len__(self) -> int:
        return len(self.documents)

    def __getitem__(self, index: int) -> EncodedDocument:
        return self._encoded(int(index))

    def _encoded_uncached(self, index: int) -> EncodedDocument:
        encoded = [self._encode(s) for s in document_sentences(self.documents[index])]
        encoded = [ids for ids in encoded if ids]
        lengths = np.array([len(ids) for ids in encoded], np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        tokens = np.array([i for ids in encoded for i in ids], np.int32)
        return EncodedDocument(tokens=tokens, offsets=offsets)


@dataclasses.dataclass(frozen=True)
class Span:
    """Tokens ``[start, stop)`` of document ``document``'s :attr:`EncodedDocument.tokens`."""

    document: int
    start: int
    stop: int


@dataclasses.dataclass(frozen=True)
class SegmentPair:
    """One pre-training instance before layout: segments A and B and the sentence label.

    Attributes:
        tokens_a, tokens_b: int32 [La], [Lb]; B is empty for FULL-SENTENCES.
        starts_a, starts_b: bool [La], [Lb]; True at the first token of each sentence and of the
            segment (the word starts the vocabulary cannot see, see ``word_start_table``).
        label: NSP: 1 = B is from another document; SOP: 1 = swapped; FULL-SENTENCES: 0.
        spans_a, spans_b: Where the tokens come from, in order (FULL-SENTENCES: one span per
            document, with a ``[SEP]`` between consecutive ones in ``tokens_a``).
    """

    tokens_a: np.ndarray
    tokens_b: np.ndarray
    starts_a: np.ndarray
    starts_b: np.ndarray
    label: int
    spans_a: tuple[Span, ...]
    spans_b: tuple[Span, ...]


def document_rng(seed: int, epoch: int, document: int) -> np.random.Generator:
    """The generator of every random choice about document ``document`` in ``epoch``."""
    return np.random.default_rng([int(seed), int(epoch), int(document)])


def truncation_cuts(len_a: int, len_b: int, max_num_tokens: int,
                    rng: np.random.Generator) -> tuple[int, int, int, int]:
    """BERT's ``truncate_seq_pair``: tokens to cut from (A front, A back, B front, B back).

    While the pair is longer than ``max_num_tokens``, one token goes from the longer segment (B on
    a tie), from its front or its back with probability 0.5 each (one ``rng.random()`` a token).
    """
    cuts = [0, 0, 0, 0]
    while len_a + len_b > max_num_tokens:
        side = 0 if len_a > len_b else 2
        cuts[side + (0 if rng.random() < 0.5 else 1)] += 1
        if side == 0:
            len_a -= 1
        else:
            len_b -= 1
    return cuts[0], cuts[1], cuts[2], cuts[3]


def _segment(corpus: EncodedCorpus, span: Span) -> tuple[np.ndarray, np.ndarray]:
    """Returns (tokens, starts) of ``span``, the first token marked as a start."""
    document = corpus[span.document]
    tokens = document.tokens[span.start:span.stop].copy()
    starts = document.sentence_starts[span.start:span.stop].copy()
    if len(starts):
        starts[0] = True
    return tokens, starts


def _random_other_document(corpus: EncodedCorpus, document: int,
                           rng: np.random.Generator) -> int:
    """A uniformly drawn document other than ``document`` that has sentences."""
    n = len(corpus)
    for _ in range(100):
        other = int(rng.integers(0, n - 1))
        other += other >= document
        if corpus[other].num_sentences:
            return other
    raise ValueError(
        "NSP draws B from another document, but 100 draws found only documents without text. "
        "Use a corpus with more non-empty documents."
    )


def sentence_pair_instances(corpus: EncodedCorpus, document: int, *, task: str,
                            max_num_tokens: int, short_seq_prob: float,
                            rng: np.random.Generator) -> list[SegmentPair]:
    """The NSP or SOP instances of one document (``create_instances_from_document``).

    Args:
        corpus: All documents (NSP draws B from the others).
        document: The document's index in ``corpus``.
        task: ``'nsp'`` or ``'sop'``.
        max_num_tokens: Tokens of A and B together (``seq_len - 3``), at least 2.
        short_seq_prob: Probability that this document's target length is drawn from
            ``[2, max_num_tokens]`` instead of ``max_num_tokens`` (BERT: 0.1).
        rng: ``document_rng(seed, epoch, document)``.
    """
    if task not in ("nsp", "sop"):
        raise ValueError(f"data.sentence_pairs={task!r} has no pair instances; use 'nsp' or 'sop'.")
    if task == "nsp" and len(corpus) < 2:
        raise ValueError("data.sentence_pairs='nsp' needs at least 2 documents to draw B from.")
    doc = corpus[document]
    target = max_num_tokens
    if rng.random() < short_seq_prob:
        target = int(rng.integers(2, max_num_tokens + 1))
    instances = []
    chunk: list[int] = []  # sentence indices
    chunk_length = 0
    i = 0
    while i < doc.num_sentences:
        chunk.append(i)
        chunk_length += doc.sentence_length(i)
        if i == doc.num_sentences - 1 or chunk_length >= target:
            instance, unused = _chunk_instance(corpus, document, chunk, task, target,
                                               max_num_tokens, rng)
            if instance is not None:
                instances.append(instance)
            i -= unused  # NSP with a random B puts the chunk's unused segments back
            chunk, chunk_length = [], 0
        i += 1
    return instances


def _chunk_instance(corpus: EncodedCorpus, document: int, chunk: list[int], task: str,
                    target: int, max_num_tokens: int,
                    rng: np.random.Generator) -> tuple[SegmentPair | None, int]:
    """One instance from a chunk of consecutive sentences, and how many sentences to put back."""
    doc = corpus[document]
    first, stop = int(doc.offsets[chunk[0]]), int(doc.offsets[chunk[-1] + 1])
    if len(chunk) >= 2:
        a_end = int(rng.integers(1, len(chunk)))
        split = int(doc.offsets[chunk[0] + a_end])
    elif stop - first >= 2:  # one segment: cut it inside (see the module docstring)
        a_end, split = 1, first + int(rng.integers(1, stop - first))
    else:
        return None, 0
    unused, label = 0, 0
    if task == "nsp" and rng.random() < 0.5:
        label = 1
        target_b = target - (split - first)
        other = _random_other_document(corpus, document, rng)
        other_doc = corpus[other]
        j = int(rng.integers(0, other_doc.num_sentences))
        b_start = b_stop = int(other_doc.offsets[j])
        for j in range(j, other_doc.num_sentences):
            b_stop = int(other_doc.offsets[j + 1])
            if b_stop - b_start >= target_b:
                break
        span_a, span_b = Span(document, first, split), Span(other, b_start, b_stop)
        unused = len(chunk) - a_end
    else:
        span_a, span_b = Span(document, first, split), Span(document, split, stop)
        if task == "sop" and rng.random() < 0.5:
            span_a, span_b, label = span_b, span_a, 1
    cut_a0, cut_a1, cut_b0, cut_b1 = truncation_cuts(
        span_a.stop - span_a.start, span_b.stop - span_b.start, max_num_tokens, rng)
    span_a = Span(span_a.document, span_a.start + cut_a0, span_a.stop - cut_a1)
    span_b = Span(span_b.document, span_b.start + cut_b0, span_b.stop - cut_b1)
    tokens_a, starts_a = _segment(corpus, span_a)
    tokens_b, starts_b = _segment(corpus, span_b)
    return SegmentPair(tokens_a, tokens_b, starts_a, starts_b, label, (span_a,),
                       (span_b,)), unused


def _checked_budget(max_num_tokens: int, least: int, seq_len_offset: int) -> int:
    if int(max_num_tokens) < least:
        raise ValueError(
            f"data.seq_len={max_num_tokens + seq_len_offset} leaves {max_num_tokens} tokens for "
            f"the segments; at least {least} are needed. Use a longer data.seq_len."
        )
    return int(max_num_tokens)


def _check_not_empty(corpus: EncodedCorpus) -> None:
    if not len(corpus):
        raise ValueError("Encoder batches need documents, but the split has none.")


class SentencePairStream:
    """The NSP/SOP instances of all documents, document by document in each epoch's order.

    The position is ``(epoch, document, instance)``: the ``document``-th document of the epoch's
    order and the index of the next instance among its instances.

    Args:
        corpus: The documents.
        task: ``'nsp'`` or ``'sop'``.
        max_num_tokens: ``seq_len - 3``.
        short_seq_prob: See :func:`sentence_pair_instances`.
        seed: The data shuffle seed; fixes the order and every random choice.
        shuffle: Shuffle documents every epoch (train) or read them in order (evaluation).
        repeat: Run for ever (train) or stop after one epoch (evaluation).
    """

    def __init__(self, corpus: EncodedCorpus, *, task: str, max_num_tokens: int,
                 short_seq_prob: float = 0.1, seed: int = 0, shuffle: bool = True,
                 repeat: bool = True):
        if task not in ("nsp", "sop"):
            raise ValueError(f"data.sentence_pairs={task!r}: a pair stream is 'nsp' or 'sop'.")
        if not 0.0 <= short_seq_prob <= 1.0:
            raise ValueError(f"data.short_seq_prob={short_seq_prob} must be in [0, 1].")
        _check_not_empty(corpus)
        self.corpus, self.task = corpus, task
        self.max_num_tokens = _checked_budget(max_num_tokens, 2, 3)
        self.short_seq_prob = float(short_seq_prob)
        self.seed, self.shuffle, self.repeat = int(seed), bool(shuffle), bool(repeat)
        self.seek(0, 0, 0)

    def position(self) -> dict[str, int]:
        return {"epoch": self._epoch, "document": self._document, "item": self._item}

    def seek(self, epoch: int, document: int, item: int) -> None:
        self._epoch, self._document, self._item = int(epoch), int(document), int(item)
        self._order = EpochPermutation(len(self.corpus), self.seed, self._epoch, self.shuffle)
        self._instances: tuple[tuple[int, int], list[SegmentPair]] | None = None

    def _document_instances(self) -> list[SegmentPair]:
        key = (self._epoch, self._document)
        if self._instances is None or self._instances[0] != key:
            index = self._order[self._document]
            self._instances = key, sentence_pair_instances(
                self.corpus, index, task=self.task, max_num_tokens=self.max_num_tokens,
                short_seq_prob=self.short_seq_prob,
                rng=document_rng(self.seed, self._epoch, index))
        return self._instances[1]

    def next_pair(self) -> SegmentPair | None:
        """The next instance, or None at the end of a non-repeating stream."""
        barren = 0  # documents in a row that gave no instance
        while True:
            if self._document >= len(self.corpus):
                if not self.repeat:
                    return None
                self.seek(self._epoch + 1, 0, 0)
            instances = self._document_instances()
            if self._item < len(instances):
                self._item += 1
                return instances[self._item - 1]
            barren = barren + 1 if not instances else 0
            if barren > len(self.corpus):
                raise ValueError("No document gives a sentence pair: the corpus has no text.")
            self._document, self._item = self._document + 1, 0


class FullSentenceStream:
    """RoBERTa FULL-SENTENCES rows: whole sentences, contiguous across documents.

    Each :meth:`next_row` packs sentences from the cursor until the next one does not fit in
    ``max_tokens`` (``seq_len - 2``); a ``sep_id`` goes between two documents in one row. A
    sentence that fits in a row is never split; one longer than a row fills the rest of the
    current row and goes on in the next. The position is ``(epoch,
    document, token)``: the token offset in the ``document``-th document of the epoch's order.

    Args:
        corpus: The documents.
        max_tokens: ``seq_len - 2``.
        sep_id: The ``[SEP]`` id.
        seed, shuffle, repeat: As :class:`SentencePairStream`.
    """

    def __init__(self, corpus: EncodedCorpus, *, max_tokens: int, sep_id: int, seed: int = 0,
                 shuffle: bool = True, repeat: bool = True):
        _check_not_empty(corpus)
        self.corpus = corpus
        self.max_tokens = _checked_budget(max_tokens, 1, 2)
        self.sep_id = int(sep_id)
        self.seed, self.shuffle, self.repeat = int(seed), bool(shuffle), bool(repeat)
        self.seek(0, 0, 0)

    def position(self) -> dict[str, int]:
        return {"epoch": self._epoch, "document": self._document, "item": self._token}

    def seek(self, epoch: int, document: int, item: int) -> None:
        self._epoch, self._document, self._token = int(epoch), int(document), int(item)
        self._order = EpochPermutation(len(self.corpus), self.seed, self._epoch, self.shuffle)

    def _current(self) -> tuple[int, EncodedDocument] | None:
        """The current document (index, encoding), moving past ended ones; None at the end."""
        skipped = 0
        while True:
            if self._document >= len(self.corpus):
                if not self.repeat:
                    return None
                self.seek(self._epoch + 1, 0, 0)
            index = self._order[self._document]
            doc = self.corpus[index]
            if self._token < len(doc.tokens):
                return index, doc
            skipped += 1
            if skipped > len(self.corpus) + 1:
                raise ValueError("FULL-SENTENCES rows need text, but every document is empty.")
            self._document, self._token = self._document + 1, 0

    def next_row(self) -> SegmentPair | None:
        """The next row's content (in ``tokens_a``), or None at the end of the stream."""
        tokens, starts, spans = [], [], []
        used, boundary = 0, False
        while (current := self._current()) is not None:
            index, doc = current
            j = int(np.searchsorted(doc.offsets, self._token, side="right")) - 1
            stop = int(doc.offsets[j + 1])
            cost = stop - self._token + (1 if boundary else 0)
            if used + cost > self.max_tokens:
                room = self.max_tokens - used - (1 if boundary else 0)
                if stop - self._token <= self.max_tokens or room < 1:
                    break  # it fits a row of its own: start the next row with it
                stop = self._token + room  # longer than any row: fill this one, go on in the next
            if boundary:
                tokens.append(np.array([self.sep_id], np.int32))
                starts.append(np.ones(1, bool))
            tokens.append(doc.tokens[self._token:stop])
            piece_starts = doc.sentence_starts[self._token:stop].copy()
            piece_starts[0] = True
            starts.append(piece_starts)
            if spans and spans[-1].document == index and not boundary:
                spans[-1] = Span(index, spans[-1].start, stop)
            else:
                spans.append(Span(index, self._token, stop))
            used += stop - self._token + (1 if boundary else 0)
            self._token, boundary = stop, False
            if stop == len(doc.tokens):
                self._document, self._token, boundary = self._document + 1, 0, True
            if used >= self.max_tokens:
                break
        if not tokens:
            return None
        empty = np.zeros(0, np.int32)
        return SegmentPair(np.concatenate(tokens).astype(np.int32), empty,
                           np.concatenate(starts), np.zeros(0, bool), 0, tuple(spans), ())
