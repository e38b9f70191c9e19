"""LM batches: the batch contract, invariants, determinism, resumption, slicing, eval batches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmjax.data.batches import LMBatches, eval_batches, train_batches
from lmjax.data.shuffle import EpochPermutation
from lmjax.data.sources import open_documents

EOS = 3


def _numbered_documents(count, seed=0):
    """Documents of distinct word ids, lengths 1..29: doc k holds ids 1000*k + 10 + j."""
    lengths = np.random.default_rng(seed).integers(1, 30, size=count)
    return [" ".join(str(1000 * k + 10 + j) for j in range(n)) for k, n in enumerate(lengths)]


def _take(batches, count):
    return [next(batches) for _ in range(count)]


def _assert_batches_equal(left, right):
    assert len(left) == len(right)
    for a, b in zip(left, right):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _stream_of(batches):
    """Rebuilds the token stream from consecutive rows: the first input, then every real target.

    Padding targets are the word tokenizer's pad id 0, which no real token uses.
    """
    stream = [int(batches[0]["inputs"][0, 0])]
    for batch in batches:
        for targets, segments in zip(batch["targets"], batch["segment_ids"]):
            stream.extend(targets[(segments > 0) & (targets != 0)].tolist())
    return stream


def test_batch_contract_shapes_and_dtypes(word_tokenizer):
    batches = LMBatches(_numbered_documents(50), word_tokenizer, seq_len=16, global_batch=4,
                        process_index=0, process_count=1)
    batch = next(batches)
    assert set(batch) == {"inputs", "targets", "segment_ids", "positions", "weights"}
    for key, value in batch.items():
        assert value.shape == (4, 16)
        assert value.dtype == (np.float32 if key == "weights" else np.int32)


def test_rows_follow_the_epoch_order_and_mask_document_boundaries(word_tokenizer):
    docs = _numbered_documents(40)
    batches = LMBatches(docs, word_tokenizer, seq_len=12, global_batch=3, seed=7,
                        process_index=0, process_count=1)
    taken = _take(batches, 12)
    order = EpochPermutation(len(docs), seed=7, epoch=0)
    expected = [t for i in range(len(docs)) for t in word_tokenizer.encode(docs[order[i]]) + [EOS]]
    stream = _stream_of(taken)
    assert stream == expected[:len(stream)]
    for batch in taken:
        inputs, targets, weights = batch["inputs"], batch["targets"], batch["weights"]
        segments, positions = batch["segment_ids"], batch["positions"]
        np.testing.assert_array_equal(targets[:, :-1], inputs[:, 1:])
        # The only untrained targets follow an EOS input (no padding while training).
        np.testing.assert_array_equal(weights == 0, inputs == EOS)
        assert (segments[:, 0] == 1).all()
        assert set(np.diff(segments, axis=1).ravel()) <= {0, 1}
        new_document = np.concatenate([np.ones((3, 1), bool), np.diff(segments, axis=1) == 1], 1)
        np.testing.assert_array_equal(positions == 0, new_document)
        np.testing.assert_array_equal(positions[:, 1:][~new_document[:, 1:]],
                                      positions[:, :-1][~new_document[:, 1:]] + 1)


def test_document_mask_off_gives_one_stream_per_row(word_tokenizer):
    batches = LMBatches(_numbered_documents(20), word_tokenizer, seq_len=10, global_batch=2,
                        document_mask=False, process_index=0, process_count=1)
    batch = next(batches)
    assert (batch["segment_ids"] == 1).all() and (batch["weights"] == 1).all()
    np.testing.assert_array_equal(batch["positions"], np.tile(np.arange(10), (2, 1)))


def test_same_seed_same_batches_and_each_epoch_its_own_order(word_tokenizer):
    docs = _numbered_documents(30)

    def batches(seed):
        return LMBatches(docs, word_tokenizer, seq_len=8, global_batch=2, seed=seed,
                         process_index=0, process_count=1)

    _assert_batches_equal(_take(batches(1), 10), _take(batches(1), 10))
    assert not np.array_equal(next(batches(1))["inputs"], next(batches(2))["inputs"])
    # Two and a half epochs: epoch e reads documents in EpochPermutation(n, seed, e) order.
    epoch_tokens = sum(len(word_tokenizer.encode(d)) + 1 for d in docs)
    stream = _stream_of(_take(batches(1), (5 * epoch_tokens // 2) // 16))
    expected = []
    for epoch in range(3):
        order = EpochPermutation(len(docs), seed=1, epoch=epoch)
        assert [order[i] for i in range(30)] != list(range(30))
        expected += [t for i in range(30) for t in word_tokenizer.encode(docs[order[i]]) + [EOS]]
    assert stream == expected[:len(stream)]
    assert len(stream) > 2 * epoch_tokens


def test_restore_continues_with_exactly_the_uninterrupted_batches(word_tokenizer):
    docs = _numbered_documents(12)  # ~180 tokens: an epoch lasts a few batches

    def fresh():
        return LMBatches(docs, word_tokenizer, seq_len=16, global_batch=2, seed=3,
                         process_index=0, process_count=1)

    uninterrupted = _take(fresh(), 30)
    for k in (1, 5, 13):
        interrupted = fresh()
        _take(interrupted, k)
        state = json.loads(json.dumps(interrupted.state()))
        assert all(isinstance(v, int) for v in state.values())
        resumed = fresh()
        resumed.restore(state)
        _assert_batches_equal(_take(resumed, 30 - k), uninterrupted[k:])
    assert fresh().state()["batches"] == 0 and state["epoch"] >= 1  # crossed an epoch boundary


def test_restore_rejects_other_seed_or_incomplete_state(word_tokenizer):
    batches = LMBatches(_numbered_documents(5), word_tokenizer, seq_len=8, global_batch=2,
                        seed=1, process_index=0, process_count=1)
    state = batches.state()
    with pytest.raises(ValueError, match="shuffle seed 9 .* uses 1"):
        batches.restore({**state, "seed": 9})
    with pytest.raises(ValueError, match=r"lacks \['token'\]"):
        batches.restore({k: v for k, v in state.items() if k != "token"})


def test_process_slices_concatenate_to_the_global_batch(word_tokenizer):
    docs = _numbered_documents(60)

    def batches(index, count):
        return LMBatches(docs, word_tokenizer, seq_len=8, global_batch=4, seed=5,
                         process_index=index, process_count=count)

    whole = _take(batches(0, 1), 6)
    halves = [_take(batches(i, 2), 6) for i in range(2)]
    for step in range(6):
        for key in whole[step]:
            np.testing.assert_array_equal(
                np.concatenate([halves[0][step][key], halves[1][step][key]]), whole[step][key])
    assert halves[0][0]["inputs"].shape == (2, 8)
    with pytest.raises(ValueError, match="multiple of the 3 processes"):
        batches(0, 3)


def test_eval_batches_read_the_split_once_in_order(word_tokenizer, tmp_path):
    for split, count in (("train", 3), ("validation", 7)):
        (tmp_path / split).mkdir()
        for k, doc in enumerate(_numbered_documents(count, seed=len(split))):
            (tmp_path / split / f"{k:02d}.txt").write_text(doc)
    cfg = {"source": f"text:{tmp_path}/{{split}}/*.txt", "eval_split": "validation",
           "seq_len": 8, "document_mask": True}
    docs = _numbered_documents(7, seed=len("validation"))
    total = sum(len(word_tokenizer.encode(d)) + 1 for d in docs)
    everything = eval_batches(cfg, word_tokenizer, 4, None, process_index=0, process_count=1)
    assert sum(b["weights"].sum() for b in everything) == total - len(docs)
    expected = [t for d in docs for t in word_tokenizer.encode(d) + [EOS]]
    assert _stream_of(everything) == expected
    last = everything[-1]
    assert (last["segment_ids"][-1] == 0).all() and last["weights"][-1].sum() == 0
    again = eval_batches(cfg, word_tokenizer, 4, None, process_index=0, process_count=1)
    _assert_batches_equal(again, everything)
    capped = eval_batches(cfg, word_tokenizer, 4, 2, process_index=0, process_count=1)
    _assert_batches_equal(capped, everything[:2])
    more = eval_batches(cfg, word_tokenizer, 4, 1000, process_index=0, process_count=1)
    assert len(more) == len(everything)


def test_tokenizer_without_eos_is_rejected(word_tokenizer):
    class NoEos(type(word_tokenizer)):
        @property
        def eos_id(self):
            return None

    with pytest.raises(ValueError, match="no end-of-text token"):
        LMBatches(["1 2"], NoEos(), seq_len=4, global_batch=1, process_index=0, process_count=1)


def test_python_docs_pipeline_end_to_end(python_docs_dir, small_sentencepiece):
    cfg = {"source": "python_docs", "data_dir": python_docs_dir[0], "train_split": "train",
           "eval_split": "validation", "seq_len": 64, "document_mask": True, "shuffle_seed": 0}
    tok = small_sentencepiece
    train = train_batches(cfg, tok, 8, process_index=1, process_count=2)
    batch = next(train)
    assert batch["inputs"].shape == (4, 64)
    assert (batch["inputs"] < tok.vocab_size).all()
    np.testing.assert_array_equal(batch["weights"] == 0, batch["inputs"] == tok.eos_id)
    evals = eval_batches(cfg, tok, 8, 3, process_index=0, process_count=1)
    assert len(evals) == 3 and all(b["weights"].sum() > 0 for b in evals)
    first_document = open_documents(cfg, "validation")[0]  # read in stored (name) order
    text = tok.decode(evals[0]["inputs"][0][evals[0]["segment_ids"][0] == 1])
    assert len(text) > 50 and first_document.startswith(text)
