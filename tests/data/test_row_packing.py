"""Packing: exact rows on hand-made examples, the token stream cursor, and the epoch permutation."""

from __future__ import annotations

import numpy as np
import pytest

from lmjax.data.packing import DocumentTokenStream, packed_row
from lmjax.data.shuffle import EpochPermutation

EOS = 3


def _row(**arrays):
    return {k: np.asarray(v) for k, v in arrays.items()}


def _assert_row_equal(row, expected):
    assert set(row) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(row[key], value, err_msg=key)
    assert row["weights"].dtype == np.float32
    assert all(row[k].dtype == np.int32 for k in ("inputs", "targets", "segment_ids", "positions"))


def test_two_documents_in_one_row():
    chunks = [np.array([10, 11, 12, EOS]), np.array([20, 21, EOS])]
    _assert_row_equal(packed_row(chunks, seq_len=6, pad_id=0), _row(
        inputs=[10, 11, 12, EOS, 20, 21],
        targets=[11, 12, EOS, 20, 21, EOS],
        segment_ids=[1, 1, 1, 1, 2, 2],
        positions=[0, 1, 2, 3, 0, 1],
        weights=[1, 1, 1, 0, 1, 1],  # EOS -> next document's first token is not trained
    ))


def test_without_document_mask_the_row_is_one_stream():
    chunks = [np.array([10, 11, 12, EOS]), np.array([20, 21, EOS])]
    _assert_row_equal(packed_row(chunks, seq_len=6, pad_id=0, document_mask=False), _row(
        inputs=[10, 11, 12, EOS, 20, 21],
        targets=[11, 12, EOS, 20, 21, EOS],
        segment_ids=[1, 1, 1, 1, 1, 1],
        positions=[0, 1, 2, 3, 4, 5],
        weights=[1, 1, 1, 1, 1, 1],
    ))


def test_padding_has_segment_zero_and_no_weight():
    _assert_row_equal(packed_row([np.array([10, 11, EOS])], seq_len=6, pad_id=9), _row(
        inputs=[10, 11, EOS, 9, 9, 9],
        targets=[11, EOS, 9, 9, 9, 9],
        segment_ids=[1, 1, 1, 0, 0, 0],
        positions=[0, 1, 2, 0, 0, 0],
        weights=[1, 1, 0, 0, 0, 0],
    ))
    empty = packed_row([], seq_len=4, pad_id=0)
    assert empty["weights"].sum() == 0 and empty["segment_ids"].sum() == 0
    with pytest.raises(ValueError, match="at most 5"):
        packed_row([np.arange(6)], seq_len=4, pad_id=0)


def _words(*docs):
    return [" ".join(str(t) for t in doc) for doc in docs]


def _encode(text):
    return [int(w) for w in text.split()]


def test_stream_rows_overlap_by_one_token_and_end_cleanly():
    docs = _words([10, 11, 12], [20, 21], [30, 31, 32, 33, 34])
    stream = DocumentTokenStream(docs, _encode, eos_id=EOS, shuffle=False, repeat=False)
    rows = []
    while chunks := stream.next_row_chunks(4):
        rows.append([c.tolist() for c in chunks])
    # Stream: 10 11 12 3 | 20 21 3 | 30 31 32 33 34 3  (13 tokens, rows of 5 sharing 1)
    assert rows == [
        [[10, 11, 12, EOS], [20]],
        [[20, 21, EOS], [30, 31]],
        [[31, 32, 33, 34, EOS]],
    ]  # the lone final EOS would have no target, so no fourth row
    assert stream.next_row_chunks(4) == []


def test_stream_with_bos_and_repeat_continues_into_next_epoch():
    docs = _words([10], [20, 21])
    stream = DocumentTokenStream(docs, _encode, eos_id=EOS, bos_id=2, shuffle=False, repeat=True)
    flat = []
    for _ in range(4):
        chunks = stream.next_row_chunks(3)
        flat.extend(np.concatenate(chunks)[:-1].tolist())  # drop the overlapping last token
    # Epoch 0 is 7 tokens, so 12 tokens end inside epoch 1's second document.
    assert flat == [2, 10, EOS, 2, 20, 21, EOS] + [2, 10, EOS, 2, 20]
    assert stream.position() == {"epoch": 1, "document": 1, "token": 2}


def test_stream_seek_resumes_mid_document():
    docs = _words(list(range(10, 30)), list(range(40, 45)))
    first = DocumentTokenStream(docs, _encode, eos_id=EOS, seed=3)
    for _ in range(3):
        first.next_row_chunks(7)
    position = first.position()
    expected = [[c.tolist() for c in first.next_row_chunks(7)] for _ in range(5)]
    second = DocumentTokenStream(docs, _encode, eos_id=EOS, seed=3)
    second.seek(**position)
    assert [[c.tolist() for c in second.next_row_chunks(7)] for _ in range(5)] == expected
    with pytest.raises(ValueError, match="outside a stream"):
        second.seek(0, 5, 0)
    with pytest.raises(ValueError, match="source split is empty"):
        DocumentTokenStream([], _encode, eos_id=EOS)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 16, 17, 1000, 4099])
def test_epoch_permutation_is_a_bijection(n):
    order = EpochPermutation(n, seed=5, epoch=2)
    assert sorted(order[i] for i in range(n)) == list(range(n))
    with pytest.raises(IndexError):
        order[n]


def test_epoch_permutation_depends_on_seed_and_epoch_only():
    def listed(seed, epoch, shuffle=True):
        order = EpochPermutation(500, seed, epoch, shuffle)
        return [order[i] for i in range(500)]

    assert listed(0, 0) == listed(0, 0)
    assert listed(0, 0) != listed(0, 1)
    assert listed(0, 0) != listed(1, 0)
    assert listed(0, 0, shuffle=False) == list(range(500))
    # A shuffle, not a near-identity: few fixed points, positions spread over the range.
    assert sum(i == v for i, v in enumerate(listed(4, 0))) < 10
    assert np.mean(listed(4, 0)[:50]) == pytest.approx(250, abs=60)
