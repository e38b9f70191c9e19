"""Encoder segment batches: layout, labels, word starts, resumption, process slices, dispatch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmjax.data.batches import LMBatches, eval_batches, train_batches
from lmjax.data.encoder_vocab import WordPieceTokenizer, encoder_special_ids, word_start_table
from lmjax.data.segment_batches import SegmentBatches
from lmjax.data.sentence_pairs import EncodedCorpus, SentencePairStream

SEQ_LEN = 48
MODES = ("nsp", "sop", "none")


@pytest.fixture(scope="module")
def documents(python_docs_train_texts):
    return [python_docs_train_texts[i] for i in range(40)]


def _batches(documents, tokenizer, mode, **options):
    options = {"seq_len": SEQ_LEN, "global_batch": 8, "process_index": 0, "process_count": 1,
               **options}
    return SegmentBatches(documents, tokenizer, sentence_pairs=mode, **options)


def _take(batches, count):
    return [next(batches) for _ in range(count)]


def _assert_batches_equal(left, right):
    assert len(left) == len(right)
    for a, b in zip(left, right):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("mode", MODES)
def test_layout_of_cls_sep_token_types_and_padding(documents, encoder_sentencepiece, mode):
    tok = encoder_sentencepiece
    specials = encoder_special_ids(tok)
    label_key = {"nsp": "nsp_labels", "sop": "sop_labels", "none": None}[mode]
    for batch in _take(_batches(documents, tok, mode), 6):
        expected_keys = {"inputs", "token_type_ids", "attention_mask", "word_starts"}
        assert set(batch) == expected_keys | ({label_key} if label_key else set())
        for key in ("inputs", "token_type_ids", "attention_mask"):
            assert batch[key].shape == (8, SEQ_LEN) and batch[key].dtype == np.int32
        assert batch["word_starts"].dtype == bool and batch["word_starts"].shape == (8, SEQ_LEN)
        if label_key:
            assert batch[label_key].shape == (8,) and batch[label_key].dtype == np.int32
            assert set(batch[label_key].tolist()) <= {0, 1}
        for inputs, types, mask, starts in zip(batch["inputs"], batch["token_type_ids"],
                                               batch["attention_mask"], batch["word_starts"]):
            n = int(mask.sum())
            np.testing.assert_array_equal(mask[:n], 1)  # real tokens first, then padding
            np.testing.assert_array_equal(inputs[n:], specials.pad_id)
            assert not starts[n:].any() and (types[n:] == 0).all()
            assert inputs[0] == specials.cls_id and inputs[n - 1] == specials.sep_id
            assert specials.cls_id not in inputs[1:n] and specials.mask_id not in inputs[:n]
            seps = np.flatnonzero(inputs[:n] == specials.sep_id)
            assert starts[0] and starts[seps].all()
            if mode == "none":
                assert (types == 0).all()
                continue
            assert len(seps) == 2 and 1 < seps[0] < n - 2  # A and B are not empty
            np.testing.assert_array_equal(types[:seps[0] + 1], 0)
            np.testing.assert_array_equal(types[seps[0] + 1:n], 1)
            assert starts[1] and starts[seps[0] + 1]  # first tokens of A and B start words


@pytest.mark.parametrize("mode", ["nsp", "sop"])
def test_rows_hold_the_stream_pairs_and_their_labels(documents, encoder_sentencepiece, mode):
    tok = encoder_sentencepiece
    specials = encoder_special_ids(tok)
    stream = SentencePairStream(EncodedCorpus(documents, tok.encode), task=mode,
                                max_num_tokens=SEQ_LEN - 3, short_seq_prob=0.1, seed=4)
    batch = next(_batches(documents, tok, mode, seed=4))
    for row in range(8):
        pair = stream.next_pair()
        expected = np.concatenate([[specials.cls_id], pair.tokens_a, [specials.sep_id],
                                   pair.tokens_b, [specials.sep_id]])
        n = len(expected)
        np.testing.assert_array_equal(batch["inputs"][row, :n], expected)
        assert batch["attention_mask"][row].sum() == n
        assert batch[f"{mode}_labels"][row] == pair.label


def test_sentencepiece_word_starts(documents, encoder_sentencepiece):
    tok = encoder_sentencepiece
    table = word_start_table(tok)
    batch = next(_batches(documents, tok, "none"))
    pieces_seen = {"inner": 0, "meta_space": 0}
    for inputs, mask, starts in zip(batch["inputs"], batch["attention_mask"],
                                    batch["word_starts"]):
        for position in range(1, int(mask.sum())):
            piece = tok.id_to_piece(inputs[position])
            before = tok.id_to_piece(inputs[position - 1])
            if piece.startswith("\u2581") or tok.is_special(inputs[position]):
                assert starts[position], piece
                pieces_seen["meta_space"] += 1
            elif before.endswith("\u2581") and before.strip("\u2581"):  # e.g. 'a▁' then 'b'
                assert starts[position], (before, piece)
            elif before and not before.strip("\u2581"):  # '▁' then 'Protocol': one word
                assert not starts[position], (before, piece)
            elif before.isalnum() and piece.isalnum() and not table[inputs[position]]:
                assert not starts[position], (before, piece)  # inside a word: 'val' 'ue'
                pieces_seen["inner"] += 1
    assert pieces_seen["inner"] > 20 and pieces_seen["meta_space"] > 50


def test_wordpiece_word_starts_follow_the_hash_pieces(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "dog", "jump", "##ed", "un",
             "##believ", "##ably", ".", "a", "fox", "##es", "run", "##s"]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    tok = WordPieceTokenizer(str(path))
    docs = ["The dog jumped. Unbelievably a fox runs.", "Foxes run. The dog jumped."]
    batch = next(SegmentBatches(docs, tok, seq_len=16, global_batch=1, sentence_pairs="none",
                                shuffle=False, process_index=0, process_count=1))
    n = int(batch["attention_mask"][0].sum())
    pieces = [tok.id_to_piece(i) for i in batch["inputs"][0, :n]]
    assert pieces == ["[CLS]", "the", "dog", "jump", "##ed", ".", "un", "##believ", "##ably",
                      "a", "fox", "run", "##s", ".", "[SEP]"]
    expected = [not p.startswith("##") for p in pieces]
    np.testing.assert_array_equal(batch["word_starts"][0, :n], expected)
    assert not batch["word_starts"][0, n:].any()


@pytest.mark.parametrize("mode", MODES)
def test_state_and_restore_resume_exactly_across_epochs(documents, encoder_sentencepiece, mode):
    few = [d[:800] for d in documents[:5]]  # a few short documents: several epochs go by
    first = _batches(few, encoder_sentencepiece, mode, seed=11)
    _take(first, 9)
    state = first.state()
    assert json.loads(json.dumps(state)) == state
    expected = _take(first, 12)
    assert first.state()["epoch"] > state["epoch"]
    resumed = _batches(few, encoder_sentencepiece, mode, seed=11)
    resumed.restore(state)
    _assert_batches_equal(_take(resumed, 12), expected)
    assert resumed.state() == first.state()
    fresh = _take(_batches(few, encoder_sentencepiece, mode, seed=11), 21)
    _assert_batches_equal(fresh[9:], expected)
    other_seed = _take(_batches(few, encoder_sentencepiece, mode, seed=12), 21)
    assert any((a["inputs"] != b["inputs"]).any() for a, b in zip(other_seed, fresh))


def test_restore_refuses_another_seed_or_a_partial_state(documents, encoder_sentencepiece):
    batches = _batches(documents, encoder_sentencepiece, "nsp", seed=1)
    with pytest.raises(ValueError, match="shuffle seed 2"):
        batches.restore({**batches.state(), "seed": 2})
    with pytest.raises(ValueError, match=r"lacks \['item'\]"):
        batches.restore({"seed": 1, "epoch": 0, "document": 0, "batches": 0})


@pytest.mark.parametrize("mode", MODES)
def test_process_slices_partition_the_global_batch(documents, encoder_sentencepiece, mode):
    whole = _take(_batches(documents, encoder_sentencepiece, mode, seed=2), 3)
    slices = [_take(_batches(documents, encoder_sentencepiece, mode, seed=2, process_index=i,
                             process_count=4), 3) for i in range(4)]
    for step, batch in enumerate(whole):
        for key, value in batch.items():
            parts = [s[step][key] for s in slices]
            assert all(len(p) == 2 for p in parts)
            np.testing.assert_array_equal(np.concatenate(parts), value, err_msg=key)
    with pytest.raises(ValueError, match="multiple of the 3 processes"):
        _batches(documents, encoder_sentencepiece, mode, process_index=0, process_count=3)


def test_a_tokenizer_without_mask_is_refused_with_the_fix(documents, small_sentencepiece):
    with pytest.raises(ValueError, match=r"no MASK piece.*tokenizer\.user_defined_symbols"):
        _batches(documents, small_sentencepiece, "nsp")


def test_bad_options_are_refused(documents, encoder_sentencepiece):
    with pytest.raises(ValueError, match="data.sentence_pairs='mlm'"):
        _batches(documents, encoder_sentencepiece, "mlm")
    with pytest.raises(ValueError, match="data.seq_len=4 is too short"):
        _batches(documents, encoder_sentencepiece, "nsp", seq_len=4)


def test_train_and_eval_dispatch_on_data_format(python_docs_dir, encoder_sentencepiece):
    cfg = {"source": "python_docs", "data_dir": python_docs_dir[0], "train_split": "train",
           "eval_split": "validation", "seq_len": 32, "shuffle_seed": 0}
    assert isinstance(train_batches(cfg, encoder_sentencepiece, 4, process_index=0,
                                    process_count=1), LMBatches)
    segments = {**cfg, "format": "segments", "sentence_pairs": "sop", "short_seq_prob": 0.2}
    train = train_batches(segments, encoder_sentencepiece, 4, process_index=0, process_count=1)
    assert isinstance(train, SegmentBatches) and "sop_labels" in next(train)
    assert train._stream.short_seq_prob == 0.2
    evals = eval_batches(segments, encoder_sentencepiece, 4, 3, process_index=1,
                         process_count=2)
    assert len(evals) == 3 and evals[0]["inputs"].shape == (2, 32)
    _assert_batches_equal(evals, eval_batches(segments, encoder_sentencepiece, 4, 3,
                                              process_index=1, process_count=2))
    whole_split = eval_batches({**segments, "sentence_pairs": "nsp"}, encoder_sentencepiece, 4,
                               None, process_index=0, process_count=1)
    assert 5 < len(whole_split) < 10_000 and "nsp_labels" in whole_split[0]
    default_pairs = next(train_batches({**cfg, "format": "segments"}, encoder_sentencepiece, 4,
                                       process_index=0, process_count=1))
    assert set(default_pairs) == {"inputs", "token_type_ids", "attention_mask", "word_starts"}
    with pytest.raises(ValueError, match="data.format='bert'"):
        train_batches({**cfg, "format": "bert"}, encoder_sentencepiece, 4, process_index=0,
                      process_count=1)
