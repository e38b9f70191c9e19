"""Sentence pairs: the sentence splitter, NSP and SOP instances checked against their source
sentences, truncation, reproducibility, and RoBERTa FULL-SENTENCES rows."""

from __future__ import annotations

import numpy as np
import pytest

from lmjax.data.sentence_pairs import (
    EncodedCorpus,
    FullSentenceStream,
    SentencePairStream,
    document_rng,
    document_sentences,
    sentence_pair_instances,
    truncation_cuts,
)
from lmjax.data.shuffle import EpochPermutation

MAX_NUM_TOKENS = 61  # seq_len 64
DOCUMENTS = 80  # documents whose instances are checked (B may come from any of the corpus)
SEP = 99_999  # a separator id no SentencePiece id of the test model reaches


@pytest.fixture(scope="module")
def corpus(python_docs_train_texts, encoder_sentencepiece):
    return EncodedCorpus(python_docs_train_texts, encoder_sentencepiece.encode)


def _instances(corpus, task, short_seq_prob=0.1, seed=0, epoch=0, documents=DOCUMENTS):
    return {d: sentence_pair_instances(corpus, d, task=task, max_num_tokens=MAX_NUM_TOKENS,
                                       short_seq_prob=short_seq_prob,
                                       rng=document_rng(seed, epoch, d))
            for d in range(documents)}


def _tokens(corpus, span):
    return corpus[span.document].tokens[span.start:span.stop]


def _assert_rate_is_a_fair_coin(labels):
    labels = np.asarray(labels)
    sigma = np.sqrt(0.25 / len(labels))
    assert abs(labels.mean() - 0.5) < 5 * sigma, (labels.mean(), len(labels))


def _text_of_sentences(corpus, document, start, stop):
    """The source text of tokens [start, stop) when both are sentence boundaries, else None."""
    offsets = list(corpus[document].offsets)
    if start not in offsets or stop not in offsets:
        return None
    sentences = document_sentences(corpus.documents[document])
    return "".join(sentences[offsets.index(start):offsets.index(stop)])


def test_document_sentences_split_prose_at_sentence_ends_and_code_by_line():
    text = ("Heading\n=======\n\nThe first sentence is wrapped\nover two lines. The second! "
            "A third? e.g. not this one.\n\n   x = f(1)\n   return x  \n\n\n  \nLast line")
    assert document_sentences(text) == [
        "Heading =======",
        "The first sentence is wrapped over two lines.",
        "The second!",
        "A third? e.g. not this one.",
        "x = f(1)",
        "return x",
        "Last line",
    ]
    assert document_sentences("\n \n") == []


def test_encoded_document_offsets_index_its_sentences(corpus, encoder_sentencepiece):
    doc = corpus[3]
    sentences = document_sentences(corpus.documents[3])
    assert doc.num_sentences == len(sentences) > 3
    for j in (0, 1, doc.num_sentences - 1):
        ids = doc.tokens[doc.offsets[j]:doc.offsets[j + 1]]
        assert encoder_sentencepiece.decode(ids) == sentences[j]
    np.testing.assert_array_equal(np.flatnonzero(doc.sentence_starts), doc.offsets[:-1])


def test_truncation_cuts_the_longer_side_from_both_ends():
    rng = np.random.default_rng(0)
    for len_a, len_b in [(10, 3), (3, 10), (40, 40), (5, 2)]:
        cuts = [truncation_cuts(len_a, len_b, 8, rng) for _ in range(200)]
        for a0, a1, b0, b1 in cuts:
            assert len_a - a0 - a1 + len_b - b0 - b1 == min(8, len_a + len_b)
            assert min(len_a - a0 - a1, len_b - b0 - b1) >= 1
        fronts = np.array([[c[0], c[2]] for c in cuts]).sum(0)
        backs = np.array([[c[1], c[3]] for c in cuts]).sum(0)
        if len_a + len_b > 8:  # both ends get cut, and only on the longer side(s)
            assert fronts.sum() > 0 and backs.sum() > 0
        if len_b <= 4:
            assert fronts[1] == backs[1] == 0
    assert truncation_cuts(3, 10, 8, rng)[:2] == (0, 0)  # B longer: A untouched


# With short_seq_prob=1 most targets are below MAX_NUM_TOKENS, so many pairs are not truncated
# and can be compared with the source sentences exactly.
@pytest.mark.parametrize("short_seq_prob", [0.1, 1.0])
def test_nsp_labels_partners_and_put_back(corpus, encoder_sentencepiece, short_seq_prob):
    instances = _instances(corpus, "nsp", short_seq_prob)
    labels, randoms_checked, continuations_checked, put_backs_checked = [], 0, 0, 0
    for document, pairs in instances.items():
        assert pairs, document
        for pair, next_pair in zip(pairs, pairs[1:] + [None]):
            (span_a,), (span_b,) = pair.spans_a, pair.spans_b
            labels.append(pair.label)
            assert 1 <= len(pair.tokens_a) and 1 <= len(pair.tokens_b)
            assert len(pair.tokens_a) + len(pair.tokens_b) <= MAX_NUM_TOKENS
            assert span_a.document == document
            np.testing.assert_array_equal(pair.tokens_a, _tokens(corpus, span_a))
            np.testing.assert_array_equal(pair.tokens_b, _tokens(corpus, span_b))
            untruncated = len(pair.tokens_a) + len(pair.tokens_b) < MAX_NUM_TOKENS
            if pair.label == 1:
                assert span_b.document != document
                sentences = "".join(document_sentences(corpus.documents[span_b.document]))
                assert encoder_sentencepiece.decode(pair.tokens_b) in sentences
                randoms_checked += 1
            else:
                assert span_b.document == document and span_a.stop <= span_b.start
                if untruncated:
                    assert span_a.stop == span_b.start
                    text = _text_of_sentences(corpus, document, span_a.start, span_b.stop)
                    if text is not None:
                        joined = np.concatenate([pair.tokens_a, pair.tokens_b])
                        assert encoder_sentencepiece.decode(joined) == text
                        continuations_checked += 1
            if next_pair is None or not untruncated:
                continue
            if len(next_pair.tokens_a) + len(next_pair.tokens_b) == MAX_NUM_TOKENS:
                continue  # the next A may have been cut at its front
            # The next chunk starts where this one's used segments end: after B when B was the
            # continuation, right after A when B was random (the unused segments are put back).
            offsets = corpus[document].offsets
            end = span_b.stop if pair.label == 0 else span_a.stop
            end = int(offsets[np.searchsorted(offsets, end)])  # a cut single segment: its end
            assert next_pair.spans_a[0].start == end
            put_backs_checked += pair.label
    _assert_rate_is_a_fair_coin(labels)
    assert len(labels) > 1000 and randoms_checked > 300
    if short_seq_prob == 1.0:
        assert continuations_checked > 200 and put_backs_checked > 200


@pytest.mark.parametrize("short_seq_prob", [0.1, 1.0])
def test_sop_swaps_half_and_unswapping_gives_the_source_text(corpus, encoder_sentencepiece,
                                                             short_seq_prob):
    instances = _instances(corpus, "sop", short_seq_prob)
    labels, texts_checked = [], 0
    for document, pairs in instances.items():
        for pair in pairs:
            (span_a,), (span_b,) = pair.spans_a, pair.spans_b
            labels.append(pair.label)
            assert span_a.document == span_b.document == document
            assert 1 <= len(pair.tokens_a) and 1 <= len(pair.tokens_b)
            assert len(pair.tokens_a) + len(pair.tokens_b) <= MAX_NUM_TOKENS
            first, second = (span_b, span_a) if pair.label == 1 else (span_a, span_b)
            in_order = ((pair.tokens_b, pair.tokens_a) if pair.label == 1
                        else (pair.tokens_a, pair.tokens_b))
            assert first.stop <= second.start
            np.testing.assert_array_equal(in_order[0], _tokens(corpus, first))
            np.testing.assert_array_equal(in_order[1], _tokens(corpus, second))
            if len(pair.tokens_a) + len(pair.tokens_b) < MAX_NUM_TOKENS:  # not truncated
                assert first.stop == second.start
                text = _text_of_sentences(corpus, document, first.start, second.stop)
                if text is not None:
                    assert encoder_sentencepiece.decode(np.concatenate(in_order)) == text
                    texts_checked += 1
    _assert_rate_is_a_fair_coin(labels)
    assert len(labels) > 1000 and texts_checked > (500 if short_seq_prob == 1.0 else 20)


def test_instances_are_reproducible_per_seed_epoch_and_document(corpus):
    def summary(pairs):
        return [(p.label, p.spans_a, p.spans_b) for p in pairs]

    again = sentence_pair_instances(corpus, 7, task="nsp", max_num_tokens=MAX_NUM_TOKENS,
                                    short_seq_prob=0.1, rng=document_rng(0, 0, 7))
    assert summary(again) == summary(_instances(corpus, "nsp", documents=8)[7])
    other_epoch = _instances(corpus, "nsp", epoch=1, documents=8)[7]
    other_seed = _instances(corpus, "nsp", seed=1, documents=8)[7]
    assert summary(other_epoch) != summary(again) != summary(other_seed)


def test_short_seq_prob_draws_shorter_targets(corpus):
    def mean_length(short_seq_prob):
        pairs = [p for ps in _instances(corpus, "sop", short_seq_prob, documents=40).values()
                 for p in ps]
        return np.mean([len(p.tokens_a) + len(p.tokens_b) for p in pairs])

    assert mean_length(1.0) < 0.8 * mean_length(0.0)


def test_pair_stream_walks_documents_in_the_epoch_order(corpus):
    stream = SentencePairStream(corpus, task="sop", max_num_tokens=MAX_NUM_TOKENS, seed=3)
    order = EpochPermutation(len(corpus), 3, 0)
    expected = [(p.spans_a, p.spans_b) for position in range(3)
                for p in sentence_pair_instances(
                    corpus, order[position], task="sop", max_num_tokens=MAX_NUM_TOKENS,
                    short_seq_prob=0.1, rng=document_rng(3, 0, order[position]))]
    got = [stream.next_pair() for _ in range(len(expected))]
    assert [(p.spans_a, p.spans_b) for p in got] == expected
    assert stream.position() == {"epoch": 0, "document": 2, "item": len(
        sentence_pair_instances(corpus, order[2], task="sop", max_num_tokens=MAX_NUM_TOKENS,
                                short_seq_prob=0.1, rng=document_rng(3, 0, order[2])))}


def test_nsp_needs_two_documents_and_room(corpus):
    with pytest.raises(ValueError, match="at least 2 documents"):
        sentence_pair_instances(EncodedCorpus(["One. Two."], corpus._encode), 0, task="nsp",
                                max_num_tokens=10, short_seq_prob=0.0,
                                rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="data.seq_len=4 leaves 1 tokens"):
        SentencePairStream(corpus, task="nsp", max_num_tokens=1)


def test_full_sentences_pack_whole_sentences_across_documents(corpus):
    max_tokens, documents = 40, 12
    small = EncodedCorpus([corpus.documents[i] for i in range(documents)], corpus._encode)
    stream = FullSentenceStream(small, max_tokens=max_tokens, sep_id=SEP, seed=5, repeat=False)
    order = EpochPermutation(documents, 5, 0)
    rows = []
    while (row := stream.next_row()) is not None:
        rows.append(row)
    cursor = (0, 0)  # (position in the epoch order, token)
    crossed = splits = 0
    for row in rows:
        assert 1 <= len(row.tokens_a) <= max_tokens and len(row.tokens_b) == 0 and row.label == 0
        pieces = np.split(row.tokens_a, np.flatnonzero(row.tokens_a == SEP))
        pieces = [pieces[0]] + [p[1:] for p in pieces[1:]]  # drop the separators
        assert len(pieces) == len(row.spans_a)
        crossed += len(pieces) - 1
        for piece, span in zip(pieces, row.spans_a):
            position, token = cursor
            if token == len(small[order[position]].tokens):
                position, token = position + 1, 0
            assert (span.document, span.start) == (order[position], token)
            np.testing.assert_array_equal(piece, _tokens(small, span))
            cursor = (position, span.stop)
        offsets = small[row.spans_a[-1].document].offsets
        if row.spans_a[-1].stop not in offsets:  # a sentence split: only if longer than a row
            j = np.searchsorted(offsets, row.spans_a[-1].stop) - 1
            assert offsets[j + 1] - offsets[j] > max_tokens
            splits += 1
    position, token = cursor
    assert position == documents - 1 and token == len(small[order[position]].tokens)
    assert crossed > 0 and len(rows) > 100
    # Rows are full: the sentence that starts the next row would not have fitted.
    for row, following in zip(rows, rows[1:]):
        doc = small[following.spans_a[0].document]
        start = following.spans_a[0].start
        j = np.searchsorted(doc.offsets, start, side="right") - 1
        boundary = following.spans_a[0].document != row.spans_a[-1].document
        needed = int(doc.offsets[j + 1]) - start + boundary
        if doc.offsets[j + 1] - start <= max_tokens:
            assert len(row.tokens_a) + needed > max_tokens


def test_streams_refuse_an_empty_corpus(corpus):
    empty = EncodedCorpus([], corpus._encode)
    with pytest.raises(ValueError, match="split has none"):
        SentencePairStream(empty, task="sop", max_num_tokens=10)
    with pytest.raises(ValueError, match="split has none"):
        FullSentenceStream(empty, max_tokens=10, sep_id=SEP)
    blank = EncodedCorpus(["\n\n", " "], corpus._encode)
    with pytest.raises(ValueError, match="every document is empty"):
        FullSentenceStream(blank, max_tokens=10, sep_id=SEP).next_row()
    with pytest.raises(ValueError, match="no text"):
        SentencePairStream(blank, task="sop", max_num_tokens=10).next_pair()
