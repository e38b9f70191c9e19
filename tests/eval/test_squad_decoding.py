"""SQuAD span decoding over doc-stride windows: spans never end before they start nor exceed the
longest answer, gold logits give back the gold text, the max-context rule, SQuAD 2.0's null
threshold, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmjax.data.encoder_vocab import encoder_special_ids
from lmjax.data.squad_features import SquadWindowConfig, squad_features
from lmjax.eval.squad_decoding import SpanDecodingConfig, best_spans, predictions_by_uid
from tests.squad_text import example_at_words, paragraph, squad_tokenizer

# Short rows and a short stride: every paragraph below needs several overlapping windows.
WINDOWS = SquadWindowConfig(max_seq_len=32, doc_stride=5, max_query_len=8)


@pytest.fixture(scope="module")
def tokenizer():
    return squad_tokenizer()


@pytest.fixture(scope="module")
def answered(tokenizer):
    """Rows of five answered questions whose answers sit across the paragraph, and the examples."""
    examples = []
    for seed, (first, last) in enumerate([(0, 1), (9, 10), (23, 23), (30, 31), (43, 43)]):
        examples.append(example_at_words(f"q{seed}", paragraph(seed, 4), first, last))
    features = squad_features(examples, tokenizer, encoder_special_ids(tokenizer), WINDOWS,
                              training=False)
    return examples, features


def _rows(features, example):
    return np.flatnonzero(features.example_index == example)


def _valid_pairs(features, row, max_answer_length, candidates=None):
    """Brute force: every (start, end) of ``row`` that the rules allow."""
    to_word, max_context = features.token_to_word[row], features.token_is_max_context[row]
    positions = range(features.inputs.shape[1]) if candidates is None else candidates
    return [(s, e) for s in positions for e in positions
            if to_word[s] >= 0 and to_word[e] >= 0 and max_context[s]
            and s <= e < s + max_answer_length]


def _check_span(answer, features, example, max_answer_length):
    """An n-best span lies in the example's context, in order, and is short enough."""
    row, s, e = answer.row, answer.start_token, answer.end_token
    assert features.example_index[row] == example
    assert e >= s and e - s + 1 <= max_answer_length  # tokens
    assert answer.end_word >= answer.start_word
    assert answer.end_word - answer.start_word + 1 <= max_answer_length  # words
    assert features.token_to_word[row, s] == answer.start_word >= 0
    assert features.token_to_word[row, e] == answer.end_word >= 0
    assert features.token_is_max_context[row, s]
    words = features.words[example]
    assert answer.text == " ".join(words[answer.start_word:answer.end_word + 1])


def test_every_window_of_every_example_is_several_rows(answered):
    _, features = answered
    counts = np.bincount(features.example_index)
    assert len(counts) == 5 and counts.min() >= 4


@pytest.mark.parametrize("version_2", [False, True])
def test_random_logits_never_give_an_end_before_its_start_or_a_long_span(answered, version_2):
    _, features = answered
    config = SpanDecodingConfig(n_best_size=6, max_answer_length=5, version_2=version_2)
    non_null = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        start = rng.normal(size=features.inputs.shape).astype(np.float32) * 3
        end = rng.normal(size=features.inputs.shape).astype(np.float32) * 3
        predictions = best_spans(start, end, features, config)
        assert [p.uid for p in predictions] == list(features.uids)
        for example, prediction in enumerate(predictions):
            assert 1 <= len(prediction.n_best) <= config.n_best_size + version_2
            scores = [a.score for a in prediction.n_best]
            assert math.isclose(sum(a.probability for a in prediction.n_best), 1.0, rel_tol=1e-6)
            assert len({a.text for a in prediction.n_best}) == len(prediction.n_best)
            assert [a.text for a in prediction.n_best].count("") == int(version_2)
            non_null_scores = [a.score for a in prediction.n_best if a.text]
            assert non_null_scores == sorted(non_null_scores, reverse=True)
            for answer in prediction.n_best:
                if answer.text:
                    _check_span(answer, features, example, config.max_answer_length)
                    non_null += 1
            assert prediction.text == next(a.text for a in prediction.n_best if a.text)
            assert prediction.score == pytest.approx(max(non_null_scores))
            if not version_2:
                assert scores == sorted(scores, reverse=True)
    assert non_null > 40 * 5 * 3  # the checks saw many spans


def test_the_best_span_is_the_best_allowed_pair_of_all_windows(answered):
    """With n_best_size = L every pair is a candidate: compare against brute force."""
    _, features = answered
    length = features.inputs.shape[1]
    config = SpanDecodingConfig(n_best_size=length, max_answer_length=4)
    for seed in range(5):
        rng = np.random.default_rng(100 + seed)
        start = rng.normal(size=features.inputs.shape).astype(np.float32)
        end = rng.normal(size=features.inputs.shape).astype(np.float32)
        for example, prediction in enumerate(best_spans(start, end, features, config)):
            best = max((float(start[r, s]) + float(end[r, e]), r, s, e)
                       for r in _rows(features, example)
                       for s, e in _valid_pairs(features, r, config.max_answer_length))
            top = prediction.n_best[0]
            assert prediction.score == pytest.approx(best[0])
            assert (top.row, top.start_token, top.end_token) == best[1:]


def test_gold_logits_recover_the_gold_text_across_windows(answered):
    examples, features = answered
    rng = np.random.default_rng(0)
    start = rng.normal(size=features.inputs.shape).astype(np.float32)
    end = rng.normal(size=features.inputs.shape).astype(np.float32)
    rows_with_answer = features.start_positions > 0
    rows = np.flatnonzero(rows_with_answer)
    start[rows, features.start_positions[rows]] = 20.0
    end[rows, features.end_positions[rows]] = 20.0
    # What the rules need: for each example, a window holding the whole answer is the
    # max-context window of the answer's first token.
    for i in range(len(examples)):
        held = rows[features.example_index[rows] == i]
        assert features.token_is_max_context[held, features.start_positions[held]].any()
    config = SpanDecodingConfig()
    predictions = best_spans(start, end, features, config)
    assert [p.text for p in predictions] == [e.answers[0] for e in examples]
    answer_rows = [features.example_index[rows] == i for i in range(len(examples))]
    # The answers sit in different windows: not all in the first row of their example.
    assert any(_rows(features, i)[0] not in rows[mask] for i, mask in enumerate(answer_rows))
    assert predictions_by_uid(predictions, config) == {e.uid: e.answers[0] for e in examples}


def test_a_start_is_read_only_from_its_max_context_window(answered):
    _, features = answered
    rows = _rows(features, 2)
    # Consecutive full windows overlap: position p of row b is position p - stride of row a.
    b, a = rows[3], rows[4]
    shift = WINDOWS.doc_stride
    context = np.flatnonzero(features.token_to_word[b] >= 0)
    pos_b = next(p for p in context
                 if p - shift in context and not features.token_is_max_context[b, p]
                 and features.token_is_max_context[a, p - shift])
    pos_a = pos_b - shift
    assert features.inputs[b, pos_b] == features.inputs[a, pos_a]
    assert features.token_to_word[b, pos_b] == features.token_to_word[a, pos_a]
    start = np.full(features.inputs.shape, -10.0, np.float32)
    end = np.full(features.inputs.shape, -10.0, np.float32)
    start[b, pos_b] = end[b, pos_b] = 20.0  # the better-scored copy lacks context
    start[a, pos_a] = end[a, pos_a] = 8.0
    prediction = best_spans(start, end, features, SpanDecodingConfig())[2]
    top = prediction.n_best[0]
    assert (top.row, top.start_token, top.end_token) == (a, pos_a, pos_a)
    assert prediction.score == pytest.approx(16.0)
    assert prediction.text == features.words[2][features.token_to_word[a, pos_a]]
    assert all(answer.row != b or answer.start_token != pos_b for answer in prediction.n_best)


def _null_case(features, example):
    """Logits where the null score (min over windows) beats the best span by 0.2."""
    rows = _rows(features, example)
    start = np.full(features.inputs.shape, -10.0, np.float32)
    end = np.full(features.inputs.shape, -10.0, np.float32)
    start[rows[0], 0], end[rows[0], 0] = 1.0, 2.0  # null 3.0
    start[rows[1], 0], end[rows[1], 0] = 0.5, 0.5  # null 1.0: the smallest
    for row in rows[2:]:
        start[row, 0] = end[row, 0] = 4.0
    token = np.flatnonzero(features.token_is_max_context[rows[1]])[0]
    start[rows[1], token], end[rows[1], token] = 0.625, 0.125  # span 0.75
    return start, end, rows[1], token


def test_squad_2_answers_null_iff_its_score_beats_the_best_span_by_the_threshold(answered):
    _, features = answered
    start, end, null_row, token = _null_case(features, 1)
    v2 = SpanDecodingConfig(version_2=True)
    prediction = best_spans(start, end, features, v2)[1]
    word = features.words[1][features.token_to_word[null_row, token]]
    assert prediction.text == word
    assert prediction.null_score == pytest.approx(1.0)
    assert prediction.score == pytest.approx(0.75)
    assert prediction.null_score_diff == pytest.approx(0.25)
    null = next(a for a in prediction.n_best if a.text == "")
    assert (null.start_logit, null.end_logit, null.row) == (0.5, 0.5, null_row)
    assert (null.start_token, null.end_token, null.start_word) == (0, 0, -1)
    assert prediction.n_best[0].text == ""  # null (1.0) outranks the span (0.75)
    assert predictions_by_uid([prediction], v2) == {"q1": ""}
    for threshold, expected in ((0.2, ""), (0.3, word), (-1.0, "")):
        config = SpanDecodingConfig(version_2=True, null_score_diff_threshold=threshold)
        assert predictions_by_uid([prediction], config) == {"q1": expected}
    # SQuAD 1.1 ignores the null score and has no null answer.
    v1 = best_spans(start, end, features, SpanDecodingConfig())[1]
    assert v1.text == word and all(a.text for a in v1.n_best)
    assert predictions_by_uid([v1], SpanDecodingConfig()) == {"q1": word}


def test_no_valid_span_gives_empty_text_and_an_infinite_null_difference(answered):
    _, features = answered
    start = np.zeros(features.inputs.shape, np.float32)
    end = np.zeros(features.inputs.shape, np.float32)
    start[:, :2] = end[:, :2] = 5.0  # the only candidates: [CLS] and a query token
    for version_2 in (False, True):
        config = SpanDecodingConfig(n_best_size=2, version_2=version_2)
        predictions = best_spans(start, end, features, config)
        for prediction in predictions:
            assert prediction.text == "" and prediction.score == -math.inf
            assert prediction.null_score_diff == math.inf
            assert [a.text for a in prediction.n_best] == ([""] if version_2 else [])
        assert set(predictions_by_uid(predictions, config).values()) == {""}


def test_bad_logits_are_refused(answered):
    _, features = answered
    good = np.zeros(features.inputs.shape, np.float32)
    with pytest.raises(ValueError, match="start_logits has shape"):
        best_spans(good[:, :-1], good, features)
    bad = good.copy()
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="end_logits has NaN"):
        best_spans(good, bad, features)
    bad[0, 3] = np.inf
    with pytest.raises(ValueError, match=r"start_logits has NaN or \+inf"):
        best_spans(bad, good, features)


def test_minus_infinity_marks_positions_that_are_never_chosen(answered):
    examples, features = answered
    start = np.full(features.inputs.shape, -np.inf, np.float32)
    end = np.full(features.inputs.shape, -np.inf, np.float32)
    rows = np.flatnonzero(features.start_positions > 0)
    start[rows, features.start_positions[rows]] = 1.0
    end[rows, features.end_positions[rows]] = 1.0
    start[:, 0] = end[:, 0] = 0.0
    predictions = best_spans(start, end, features, SpanDecodingConfig(version_2=True))
    assert [p.text for p in predictions] == [e.answers[0] for e in examples]
    for prediction in predictions:
        assert prediction.null_score_diff == pytest.approx(-2.0)
        assert all(math.isfinite(a.probability) for a in prediction.n_best)


@pytest.mark.parametrize("kwargs, field", [
    (dict(n_best_size=0), "n_best_size"),
    (dict(max_answer_length=1.5), "max_answer_length"),
    (dict(null_score_diff_threshold=float("nan")), "null_score_diff_threshold"),
    (dict(version_2="yes"), "version_2"),
])
def test_decoding_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"SpanDecodingConfig.{field}="):
        SpanDecodingConfig(**kwargs)
