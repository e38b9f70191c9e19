"""SQuAD doc-stride rows: layout, windows against run_squad's arithmetic, labels that spell the
answer, unanswerable and misaligned answers, the max-context rule, and config validation."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from lmjax.data.encoder_vocab import WordPieceTokenizer, encoder_special_ids
from lmjax.data.squad_features import (
    SquadWindowConfig,
    context_words,
    doc_windows,
    squad_features,
)
from lmjax.data.task_examples import SquadExample
from tests.squad_text import example_at_words, paragraph, squad_tokenizer

# Small rows so that a paragraph of a few sentences needs several windows.
CONFIG = SquadWindowConfig(max_seq_len=40, doc_stride=7, max_query_len=10)


@pytest.fixture(scope="module")
def tokenizer():
    return squad_tokenizer()


@pytest.fixture(scope="module")
def specials(tokenizer):
    return encoder_special_ids(tokenizer)


def _doc_tokens(tokenizer, context):
    """(ids, first token of each word): every word encoded alone with its leading space."""
    ids, word_start = [], []
    for word in context.split():
        word_start.append(len(ids))
        ids.extend(tokenizer.encode(" " + word))
    return ids, word_start


def _window_count_by_hand(num_tokens, window, stride):
    """run_squad's window count: one window, plus ceil((T - W) / S) more when T > W."""
    return 1 if num_tokens <= window else math.ceil((num_tokens - window) / stride) + 1


def _offset(tokenizer, question):
    """Row position of the first window token: [CLS], the (cut) query, [SEP]."""
    return min(len(tokenizer.encode(question)), CONFIG.max_query_len) + 2


def _real_length(features, row):
    return int(features.attention_mask[row].sum())


def test_context_words_map_characters_to_whitespace_words():
    words, char_to_word = context_words("  Hi  there,\tyou\n")
    assert words == ["Hi", "there,", "you"]
    assert char_to_word == [-1, -1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2]


def test_doc_windows_follow_run_squads_loop():
    assert doc_windows(10, 4, 2) == [(0, 4), (2, 4), (4, 4), (6, 4)]
    assert doc_windows(11, 4, 3) == [(0, 4), (3, 4), (6, 4), (9, 2)]
    assert doc_windows(4, 4, 2) == [(0, 4)]
    assert doc_windows(3, 8, 2) == [(0, 3)]
    assert doc_windows(0, 8, 2) == []
    for tokens in range(1, 60):
        for window, stride in ((5, 2), (9, 4), (12, 11)):
            assert len(doc_windows(tokens, window, stride)) == _window_count_by_hand(
                tokens, window, stride)


def test_rows_are_cls_query_sep_window_sep_pad(tokenizer, specials):
    context = paragraph(1)
    question = "Who built the castle and when was it built by the teacher of the river?"
    features = squad_features([SquadExample("q", question, context)], tokenizer, specials,
                              CONFIG, training=False)
    query = tokenizer.encode(question)
    assert len(query) > CONFIG.max_query_len  # the query is cut
    query = query[:CONFIG.max_query_len]
    offset = len(query) + 2
    assert features.inputs.dtype == np.int32 and features.inputs.shape[1] == CONFIG.max_seq_len
    for row in range(len(features)):
        ids, real = features.inputs[row], _real_length(features, row)
        assert ids[0] == specials.cls_id
        assert list(ids[1:offset - 1]) == query
        assert ids[offset - 1] == specials.sep_id and ids[real - 1] == specials.sep_id
        assert np.all(ids[real:] == specials.pad_id)
        assert list(features.attention_mask[row]) == [1] * real + [0] * (CONFIG.max_seq_len - real)
        assert list(features.token_type_ids[row]) == (
            [0] * offset + [1] * (real - offset) + [0] * (CONFIG.max_seq_len - real))
        assert np.all(features.token_to_word[row, :offset] == -1)
        assert np.all(features.token_to_word[row, offset:real - 1] >= 0)
        assert np.all(features.token_to_word[row, real - 1:] == -1)
    assert set(features.arrays()) == {
        "inputs", "token_type_ids", "attention_mask", "start_positions", "end_positions"}


@pytest.mark.parametrize("sentences", [1, 4, 9])
def test_windows_cover_every_context_token_with_run_squads_stride(tokenizer, specials,
                                                                  sentences):
    context = paragraph(2, sentences)
    question = "Who?"
    features = squad_features([SquadExample("q", question, context)], tokenizer, specials,
                              CONFIG, training=False)
    doc_ids, word_start = _doc_tokens(tokenizer, context)
    offset = _offset(tokenizer, question)
    window = CONFIG.max_seq_len - offset - 1
    assert len(features) == _window_count_by_hand(len(doc_ids), window, CONFIG.doc_stride)
    covered = np.zeros(len(doc_ids), int)
    token_word = np.repeat(np.arange(len(word_start)), np.diff(word_start + [len(doc_ids)]))
    for row in range(len(features)):
        start = row * CONFIG.doc_stride  # every window but the last is full, so stride is exact
        real = _real_length(features, row)
        size = real - 1 - offset  # window tokens of this row
        assert list(features.inputs[row, offset:real - 1]) == doc_ids[start:start + size]
        assert list(features.token_to_word[row, offset:real - 1]) == list(
            token_word[start:start + size])
        covered[start:start + size] += 1
        if row + 1 < len(features):
            assert real == CONFIG.max_seq_len  # a full window: it overlaps the next one
    assert np.all(covered >= 1)
    if len(features) > 1:
        assert covered.max() > 1  # windows overlap
    assert features.words == (tuple(context.split()),)


def test_every_context_token_is_max_context_in_exactly_its_best_window(tokenizer, specials):
    context = paragraph(3, 5)
    features = squad_features([SquadExample("q", "Who?", context)], tokenizer, specials, CONFIG,
                              training=False)
    offset = _offset(tokenizer, "Who?")
    doc_ids, _ = _doc_tokens(tokenizer, context)
    spans = [(row * CONFIG.doc_stride, _real_length(features, row) - 1 - offset)
             for row in range(len(features))]
    assert len(spans) >= 3
    for token in range(len(doc_ids)):
        scores = [min(token - s, s + n - 1 - token) + 0.01 * n if s <= token < s + n else -1
                  for s, n in spans]
        best = int(np.argmax(scores))  # first maximum, as run_squad
        flags = [bool(features.token_is_max_context[row, offset + token - s])
                 for row, (s, n) in enumerate(spans) if s <= token < s + n]
        rows_holding = [row for row, (s, n) in enumerate(spans) if s <= token < s + n]
        assert flags == [row == best for row in rows_holding]
    assert not features.token_is_max_context[:, :offset].any()


def _labelled_rows(features, row_ids):
    return [row for row in row_ids if features.start_positions[row] != 0]


def test_labels_spell_the_answer_in_every_window_that_holds_it(tokenizer, specials):
    context = paragraph(4, 7)
    words = context.split()
    doc_ids, word_start = _doc_tokens(tokenizer, context)
    word_end = [s - 1 for s in word_start[1:]] + [len(doc_ids) - 1]
    offset = _offset(tokenizer, "Who built it?")
    window = CONFIG.max_seq_len - offset - 1
    # A two-word answer whose tokens cross the end of the first window.
    straddling = next(w for w in range(len(words) - 1)
                      if word_start[w] < window <= word_end[w + 1])
    examples = [
        example_at_words("straddle", context, straddling, straddling + 1),
        example_at_words("first", context, 0, 2),
        example_at_words("middle", context, 20, 23),
        example_at_words("end", context, len(words) - 3, len(words) - 1),
    ]
    for training in (True, False):
        features = squad_features(examples, tokenizer, specials, CONFIG, training=training)
        assert features.start_positions.dtype == np.int32
        for index, example in enumerate(examples):
            rows = np.flatnonzero(features.example_index == index)
            first_word = len(example.context[:example.answer_starts[0]].split())
            last_word = first_word + len(example.answers[0].split()) - 1
            first_tok, last_tok = word_start[first_word], word_end[last_word]
            holding = [row for i, row in enumerate(rows)
                       if i * CONFIG.doc_stride <= first_tok
                       and last_tok < i * CONFIG.doc_stride + window]
            assert holding, example.uid
            assert _labelled_rows(features, rows) == holding, example.uid
            for row in rows:
                start, end = features.start_positions[row], features.end_positions[row]
                if row not in holding:
                    assert start == end == 0
                    continue
                assert offset <= start <= end < _real_length(features, row) - 1
                answer_ids = features.inputs[row, start:end + 1]
                assert tokenizer.decode(answer_ids).split() == example.answers[0].split()
                assert list(features.token_to_word[row, [start, end]]) == [first_word, last_word]
            if example.uid == "straddle":
                assert features.start_positions[rows[0]] == 0  # cut by the first window
            if example.uid == "end":
                last_row = rows[-1]
                assert features.end_positions[last_row] == _real_length(features, last_row) - 2


def test_a_sub_word_answer_is_narrowed_to_its_tokens(tokenizer, specials):
    context = "The bridge was built in the (1990s) by Anna."
    start = context.index("1990")
    example = SquadExample("q", "When?", context, ("1990",), (start,))
    features = squad_features([example], tokenizer, specials, CONFIG, training=True)
    s, e = features.start_positions[0], features.end_positions[0]
    assert s > 0
    assert tokenizer.decode(features.inputs[0, s:e + 1]).strip() == "1990"
    word = context.split().index("(1990s)")
    assert list(features.token_to_word[0, [s, e]]) == [word, word]


def test_unanswerable_examples_point_every_row_at_cls(tokenizer, specials):
    context = paragraph(5, 6)
    features = squad_features([SquadExample("no", "Why?", context)], tokenizer, specials, CONFIG,
                              training=True)
    assert len(features) > 1
    assert np.all(features.start_positions == 0) and np.all(features.end_positions == 0)


def test_misaligned_answers_are_skipped_for_training_with_a_warning(tokenizer, specials, caplog):
    context = paragraph(6, 2)
    good = example_at_words("good", context, 1, 1)
    shifted = SquadExample("shifted", "Who?", context, (good.answers[0],),
                           (good.answer_starts[0] + 9,))
    outside = SquadExample("outside", "Who?", context, ("castle",), (len(context) + 3,))
    examples = [shifted, good, outside]
    with caplog.at_level(logging.WARNING, logger="lmjax.data.squad_features"):
        features = squad_features(examples, tokenizer, specials, CONFIG, training=True)
    assert set(features.example_index.tolist()) == {1}
    assert features.start_positions[0] > 0  # the answer is in the first window
    warned = " ".join(record.getMessage() for record in caplog.records)
    assert "'shifted'" in warned and "'outside'" in warned and "'good'" not in warned
    assert features.words[0] == tuple(context.split())  # indexed by example, skipped or not

    kept = squad_features(examples, tokenizer, specials, CONFIG, training=False)
    assert set(kept.example_index.tolist()) == {0, 1, 2}
    assert np.all(kept.start_positions[kept.example_index != 1] == 0)

    with pytest.raises(ValueError, match="training=False"):
        squad_features([shifted], tokenizer, specials, CONFIG, training=True)


def test_an_answer_found_inside_its_word_span_is_kept(tokenizer, specials):
    # run_squad keeps an answer that is part of its words ("castle" of "castle,").
    context = "Anna opened the castle, then the river."
    example = SquadExample("q", "What?", context, ("castle",), (context.index("castle"),))
    features = squad_features([example], tokenizer, specials, CONFIG, training=True)
    s, e = features.start_positions[0], features.end_positions[0]
    assert s > 0
    assert tokenizer.decode(features.inputs[0, s:e + 1]).strip() == "castle"


def test_an_empty_context_still_gives_one_row(tokenizer, specials):
    features = squad_features([SquadExample("q", "Who?", "   ")], tokenizer, specials, CONFIG,
                              training=False)
    assert len(features) == 1
    offset = _offset(tokenizer, "Who?")
    assert _real_length(features, 0) == offset + 1
    assert features.words == ((),)


def test_no_examples_is_an_error(tokenizer, specials):
    with pytest.raises(ValueError, match="no examples"):
        squad_features([], tokenizer, specials, CONFIG, training=True)


@pytest.mark.parametrize("kwargs, field", [
    (dict(max_seq_len=0), "max_seq_len"),
    (dict(doc_stride=-1), "doc_stride"),
    (dict(max_query_len=2.5), "max_query_len"),
    (dict(max_seq_len=67, max_query_len=64), "max_seq_len"),
    (dict(max_seq_len=40, max_query_len=10, doc_stride=27), "doc_stride"),
])
def test_window_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"SquadWindowConfig.{field}="):
        SquadWindowConfig(**kwargs)
    assert SquadWindowConfig(max_seq_len=40, max_query_len=10, doc_stride=26).min_window_len == 27


def test_wordpiece_narrows_an_answer_inside_punctuation_as_run_squad(tmp_path):
    # run_squad's _improve_answer_span example: the word is "(1895-1943)." but the answer 1895.
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join([
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "leader", "was", "john", "smith",
        "(", ")", "-", ".", "1895", "1943", "what", "year", "born", "?"]) + "\n")
    tokenizer = WordPieceTokenizer(str(vocab))
    specials = encoder_special_ids(tokenizer)
    context = "The leader was John Smith (1895-1943)."
    example = SquadExample("q", "What year was John Smith born?", context, ("1895",),
                           (context.index("1895"),))
    config = SquadWindowConfig(max_seq_len=24, doc_stride=4, max_query_len=8)
    features = squad_features([example], tokenizer, specials, config, training=True)
    assert len(features) == 1
    s, e = features.start_positions[0], features.end_positions[0]
    assert s == e and tokenizer.decode(features.inputs[0, s:e + 1]) == "1895"
    assert features.token_to_word[0, s] == 5  # the word "(1895-1943)."
    assert features.inputs[0, 0] == specials.cls_id == 2
