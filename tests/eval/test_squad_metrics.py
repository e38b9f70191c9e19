"""SQuAD EM / F1 on hand-checked cases, the v2.0 HasAns / NoAns breakdown, the threshold search."""

import math

import numpy as np
import pytest

from lmjax.eval.squad_metrics import (
    best_null_threshold,
    exact_match,
    max_over_gold,
    normalize_answer,
    squad_scores,
    token_f1,
)


def test_normalize_answer():
    assert normalize_answer("The Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("  An  apple,\ta PEAR and the   fig. ") == "apple pear and fig"
    assert normalize_answer("U.S.") == "us"  # punctuation is deleted, not replaced by a space
    assert normalize_answer("theater anthem") == "theater anthem"  # articles only as whole words
    assert normalize_answer("the") == ""
    assert normalize_answer("") == ""


def test_exact_match_ignores_case_punctuation_and_articles():
    assert exact_match("The Eiffel Tower!", "eiffel tower") == 1.0
    assert exact_match("Eiffel Tower", "the tower") == 0.0
    assert exact_match("", "") == 1.0


def test_token_f1_by_hand():
    # "a cat sat" -> [cat, sat]; "the cat" -> [cat]. Shared 1: P = 1/2, R = 1/1,
    # F1 = 2 * 1/2 * 1 / (1/2 + 1) = 2/3.
    assert token_f1("a cat sat", "the cat") == pytest.approx(2 / 3, abs=1e-12)
    assert exact_match("a cat sat", "the cat") == 0.0
    # Tokens count with multiplicity: [cat, cat, cat] vs [cat, cat, dog] share min(3, 2) = 2:
    # P = 2/3, R = 2/3, F1 = 2/3.
    assert token_f1("the the cat cat cat", "cat cat dog") == pytest.approx(2 / 3, abs=1e-12)
    assert token_f1("red dog", "Red, dog.") == 1.0
    assert token_f1("blue", "red dog") == 0.0
    # Either side empty: 1 if both are, else 0.
    assert token_f1("", "") == 1.0
    assert token_f1("the", "") == 1.0  # "the" normalises to nothing
    assert token_f1("x", "") == 0.0
    assert token_f1("", "x") == 0.0


def test_max_over_several_golds():
    golds = ["big red dog", "dog", "red dog!"]
    assert max_over_gold(exact_match, "red dog", golds) == 1.0  # third gold, after normalising
    # "the big dog" -> [big, dog]. vs [big, red, dog]: P = 2/2, R = 2/3, F1 = 0.8.
    # vs [dog]: P = 1/2, R = 1, F1 = 2/3. vs [red, dog]: P = 1/2, R = 1/2, F1 = 1/2. Max 0.8.
    assert max_over_gold(token_f1, "the big dog", golds) == pytest.approx(0.8, abs=1e-12)
    assert max_over_gold(exact_match, "the big dog", golds) == 0.0


def test_unanswerable_gold():
    for unanswerable in ([], [""], ("",), ["the"]):  # "the" normalises to nothing: dropped
        assert max_over_gold(exact_match, "", unanswerable) == 1.0
        assert max_over_gold(token_f1, "", unanswerable) == 1.0
        assert max_over_gold(exact_match, "x", unanswerable) == 0.0
        assert max_over_gold(token_f1, "x", unanswerable) == 0.0
    # An answerable question: the empty prediction scores 0.
    assert max_over_gold(token_f1, "", ["Paris"]) == 0.0
    with pytest.raises(ValueError, match=r"wrap it: \['Paris'\]"):
        max_over_gold(exact_match, "Paris", "Paris")


GOLD = {
    "q1": ["Paris", "the city of Paris"],
    "q2": ["big red dog"],
    "q3": [],
    "q4": [],
}


def test_squad_v2_scores_with_breakdown():
    predictions = {"q1": "paris.", "q2": "red dog", "q3": "", "q4": "London", "extra": "ignored"}
    # EM: q1 1, q2 0, q3 1, q4 0 -> 50. F1: q1 1, q2 0.8 (P 1, R 2/3), q3 1, q4 0 -> 70.
    # HasAns (q1, q2): EM 50, F1 90. NoAns (q3, q4): EM 50, F1 50.
    scores = squad_scores(predictions, GOLD)
    assert scores == pytest.approx({
        "exact": 50.0, "f1": 70.0, "total": 4,
        "HasAns_exact": 50.0, "HasAns_f1": 90.0, "HasAns_total": 2,
        "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2,
    })
    assert list(scores)[:3] == ["exact", "f1", "total"]


def test_squad_v1_has_no_breakdown():
    gold = {"q1": GOLD["q1"], "q2": GOLD["q2"]}
    # EM: 1, 0 -> 50. F1: 1, 0.8 -> 90.
    assert squad_scores({"q1": "Paris", "q2": "red dog"}, gold) == pytest.approx(
        {"exact": 50.0, "f1": 90.0, "total": 2})


def test_squad_all_unanswerable_has_no_hasans_keys():
    scores = squad_scores({"q3": "", "q4": "x"}, {"q3": [], "q4": [""]})
    assert scores == pytest.approx({"exact": 50.0, "f1": 50.0, "total": 2, "NoAns_exact": 50.0,
                                    "NoAns_f1": 50.0, "NoAns_total": 2})


def test_missing_prediction():
    predictions = {"q1": "Paris", "q3": ""}
    with pytest.raises(ValueError, match=r"2 of 4 questions have no prediction \(first: "
                                         r"\['q2', 'q4'\]\).*missing_as_empty=True"):
        squad_scores(predictions, GOLD)
    # As "": q2 (answerable) scores 0, q4 (unanswerable) scores 1. EM = F1 = 3/4.
    scores = squad_scores(predictions, GOLD, missing_as_empty=True)
    assert scores["exact"] == scores["f1"] == 75.0
    with pytest.raises(ValueError, match="no gold questions"):
        squad_scores({}, {})


# The threshold toy case: (gold, best non-null answer, score_null - best_non_null).
TOY_GOLD = {"q1": ["paris"], "q2": [], "q3": ["big red dog"], "q4": ["blue whale"]}
TOY_ANSWERS = {"q1": "paris", "q2": "london", "q3": "red dog", "q4": "whale"}
TOY_DIFFS = {"q1": -2.0, "q2": -1.0, "q3": 0.5, "q4": 1.0}


def test_best_null_threshold_toy_case_f1():
    # Answering nothing scores q2 only: F1 total 1. Raising the threshold through each diff
    # switches one question to its answer; gain = F1(answer) - F1(""):
    #   -2.0 q1 +1      -> 2
    #   -1.0 q2 -1      -> 1
    #    0.5 q3 +0.8    -> 1.8   ("red dog" vs "big red dog": P 1, R 2/3)
    #    1.0 q4 +2/3    -> 2.467 ("whale" vs "blue whale": P 1, R 1/2)
    # Best: threshold 1.0 (answer everything), F1 = 2.467 / 4 = 61.67; EM there = 1/4 = 25.
    threshold, scores = best_null_threshold(TOY_DIFFS, TOY_ANSWERS, TOY_GOLD)
    assert threshold == 1.0
    assert scores["f1"] == pytest.approx(100 * (1 + 0.8 + 2 / 3) / 4)
    assert scores["exact"] == pytest.approx(25.0)
    assert scores["HasAns_f1"] == pytest.approx(100 * (1 + 0.8 + 2 / 3) / 3)
    assert scores["NoAns_f1"] == 0.0


def test_best_null_threshold_toy_case_exact():
    # EM gains: q1 +1, q2 -1, q3 0, q4 0 -> totals 1, 2, 1, 1, 1: best at -2.0 (answer q1
    # only), EM = 2/4 = 50 (q1 and q2 right); F1 there = 50 too.
    threshold, scores = best_null_threshold(TOY_DIFFS, TOY_ANSWERS, TOY_GOLD, metric="exact")
    assert threshold == -2.0
    assert scores["exact"] == scores["f1"] == 50.0


def test_best_null_threshold_answers_nothing_when_nothing_helps():
    gold = {"a": [], "b": []}
    threshold, scores = best_null_threshold({"a": -3.0, "b": 2.0}, {"a": "x", "b": "y"}, gold)
    assert threshold == -math.inf  # the official script would say 0.0, which answers "a"
    assert scores["exact"] == 100.0


def test_best_null_threshold_counts_tied_diffs_together():
    # All three share diff 0.0: a threshold >= 0 answers all three (gain +1 - 1 - 1 = -1), so
    # answering none (EM 2/3) is best. Stepping one question at a time, "a" first, would claim
    # threshold 0.0 with 3/3.
    gold = {"a": ["yes"], "b": [], "c": []}
    threshold, scores = best_null_threshold(
        {"a": 0.0, "b": 0.0, "c": 0.0}, {"a": "yes", "b": "no", "c": "no"}, gold)
    assert threshold == -math.inf
    assert scores["exact"] == pytest.approx(200 / 3)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("metric", ["f1", "exact"])
def test_best_null_threshold_beats_every_threshold(seed, metric):
    rng = np.random.default_rng(seed)
    words = ["red", "dog", "big", "the", "cat"]
    gold, answers, diffs = {}, {}, {}
    for i in range(15):
        qid = f"q{i}"
        gold[qid] = [] if rng.random() < 0.4 else [" ".join(rng.choice(words, rng.integers(1, 4)))]
        answers[qid] = " ".join(rng.choice(words, rng.integers(1, 3)))
        diffs[qid] = float(rng.integers(-3, 4))  # few distinct values: many ties
    threshold, scores = best_null_threshold(diffs, answers, gold, metric=metric)

    def scores_at(t):
        return squad_scores({q: "" if diffs[q] > t else answers[q] for q in gold}, gold)

    candidates = [-math.inf, *sorted(set(diffs.values()))]
    best = max(scores_at(t)[metric] for t in candidates)
    assert scores[metric] == pytest.approx(best)
    assert scores == scores_at(threshold)
    assert threshold == min(t for t in candidates if scores_at(t)[metric] >= best - 1e-9)


def test_best_null_threshold_errors():
    with pytest.raises(ValueError, match=r"1 of 4 questions are missing from null_score_diffs "
                                         r"\(first: \['q4'\]\)"):
        best_null_threshold({k: v for k, v in TOY_DIFFS.items() if k != "q4"}, TOY_ANSWERS,
                            TOY_GOLD)
    with pytest.raises(ValueError, match="missing from predictions_with_answer"):
        best_null_threshold(TOY_DIFFS, {}, TOY_GOLD)
    with pytest.raises(ValueError, match="metric 'em'"):
        best_null_threshold(TOY_DIFFS, TOY_ANSWERS, TOY_GOLD, metric="em")
    with pytest.raises(ValueError, match="NaN"):
        best_null_threshold({**TOY_DIFFS, "q1": float("nan")}, TOY_ANSWERS, TOY_GOLD)
