"""SQuAD 1.1 / 2.0 exact match and F1, and the SQuAD 2.0 no-answer threshold search.

The definitions are those of the official SQuAD v2.0 evaluation script (``evaluate-v2.0.py``;
ELECTRA ships a copy as ``finetune/qa/squad_official_eval.py``), written afresh:

- an answer is normalised by lower-casing, deleting every ``string.punctuation`` character,
  replacing the articles ``\\b(a|an|the)\\b`` by a space and collapsing whitespace;
- exact match (EM) compares normalised strings; F1 compares the bags of normalised tokens
  (precision and recall of the shared tokens, counted with multiplicity); if either side has no
  token, F1 is 1 when both are empty and 0 otherwise;
- a question scores the max over its gold answers (gold answers that normalise to nothing are
  dropped; none left means unanswerable, gold ``[""]``), and the totals average over questions.

Two deliberate departures, both where the official script is silent or lenient:

- a question with no prediction raises ``ValueError`` (the official script warns and scores it
  0); ``missing_as_empty=True`` scores it as the empty answer instead;
- ``best_null_threshold`` returns ``-inf`` when answering nothing is best (the script reports
  0.0, which is not a threshold that answers nothing when the scores can be negative, as BERT's
  null-score differences can) and counts tied scores together (the script may stop inside a
  group of equal scores, reporting a threshold that, applied, answers the whole group).
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Callable, Mapping, Sequence

import numpy as np

__all__ = [
    "best_null_threshold",
    "exact_match",
    "max_over_gold",
    "normalize_answer",
    "squad_scores",
    "token_f1",
]

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Returns ``text`` lower-cased, without punctuation or articles, single-spaced.

    "The Eiffel Tower!" -> "eiffel tower". Steps in the official script's order: lower-case,
    drop ``string.punctuation``, articles -> space, collapse whitespace.
    """
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """Returns 1.0 if the normalised prediction equals the normalised gold answer, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Returns the F1 of the normalised token bags of ``prediction`` and ``gold``.

    precision = shared / prediction tokens, recall = shared / gold tokens, where shared counts
    each token min(times in prediction, times in gold). If either side has no token, 1.0 when
    both are empty (a correct "no answer") and 0.0 otherwise.
    """
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    shared = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(pred_tokens), shared / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _scored_golds(golds: Sequence[str]) -> list[str]:
    """Returns the gold answers that normalise to some text, or ``[""]`` (unanswerable)."""
    if isinstance(golds, str):
        raise ValueError(
            f"gold answers must be a sequence of strings, got the string {golds!r}; wrap it: "
            f"[{golds!r}]."
        )
    return [g for g in golds if normalize_answer(g)] or [""]


def max_over_gold(metric: Callable[[str, str], float], prediction: str,
                  golds: Sequence[str]) -> float:
    """Returns the best ``metric(prediction, gold)`` over a question's gold answers.

    Gold answers that normalise to the empty string are dropped first, and an empty list (or
    one with nothing left) means unanswerable: the only gold is ``""``, which only the empty
    prediction matches. This is the official script's ``get_raw_scores``.

    Args:
        metric: ``exact_match`` or ``token_f1``.
        prediction: the predicted answer text ("" = no answer).
        golds: the question's gold answer texts (empty = unanswerable).
    """
    return max(metric(prediction, gold) for gold in _scored_golds(golds))


def _has_answer(golds: Sequence[str]) -> bool:
    """Whether a question is answerable: some gold answer is a non-empty string."""
    return any(golds)


def _checked_predictions(predictions: Mapping[str, str], gold: Mapping[str, Sequence[str]],
                         missing_as_empty: bool, what: str) -> dict[str, str]:
    """Returns a prediction for every gold question id, or raises naming the missing ones."""
    if not gold:
        raise ValueError(f"{what}: no gold questions to score.")
    missing = [qid for qid in gold if qid not in predictions]
    if missing and not missing_as_empty:
        raise ValueError(
            f"{what}: {len(missing)} of {len(gold)} questions have no prediction (first: "
            f"{missing[:5]}); predict every question of the split, or pass "
            "missing_as_empty=True to score them as the empty answer."
        )
    return {qid: predictions.get(qid, "") for qid in gold}


def _mean_percent(values: list[float]) -> float:
    return 100.0 * sum(values) / len(values)


def squad_scores(predictions: Mapping[str, str], gold: Mapping[str, Sequence[str]], *,
                 missing_as_empty: bool = False) -> dict[str, float]:
    """Returns SQuAD EM and F1 (×100, averaged over questions), as the official v2.0 script.

    Keys: ``exact``, ``f1``, ``total``. When some question is unanswerable (SQuAD 2.0) also
    ``NoAns_exact``, ``NoAns_f1``, ``NoAns_total`` over the unanswerable questions and, when
    some are answerable, ``HasAns_exact``, ``HasAns_f1``, ``HasAns_total`` over those.
    Predictions of ids not in ``gold`` are ignored, as the official script does.

    Args:
        predictions: question id -> predicted answer text ("" = no answer).
        gold: question id -> its gold answer texts (empty or ``[""]`` = unanswerable), e.g.
            ``{ex.uid: ex.answers for ex in squad_examples}``.
        missing_as_empty: score questions absent from ``predictions`` as "" instead of raising.

    Raises:
        ValueError: no gold questions, or questions without a prediction (unless
            ``missing_as_empty``).
    """
    predictions = _checked_predictions(predictions, gold, missing_as_empty, "squad_scores")
    exact = {qid: max_over_gold(exact_match, predictions[qid], golds)
             for qid, golds in gold.items()}
    f1 = {qid: max_over_gold(token_f1, predictions[qid], golds) for qid, golds in gold.items()}
    scores: dict[str, float] = {
        "exact": _mean_percent(list(exact.values())),
        "f1": _mean_percent(list(f1.values())),
        "total": len(gold),
    }
    has_ans = [qid for qid, golds in gold.items() if _has_answer(golds)]
    no_ans = [qid for qid, golds in gold.items() if not _has_answer(golds)]
    if no_ans:
        for prefix, qids in (("HasAns", has_ans), ("NoAns", no_ans)):
            if qids:
                scores[f"{prefix}_exact"] = _mean_percent([exact[q] for q in qids])
                scores[f"{prefix}_f1"] = _mean_percent([f1[q] for q in qids])
                scores[f"{prefix}_total"] = len(qids)
    return scores


def best_null_threshold(null_score_diffs: Mapping[str, float],
                        predictions_with_answer: Mapping[str, str],
                        gold: Mapping[str, Sequence[str]], *,
                        metric: str = "f1") -> tuple[float, dict[str, float]]:
    """Returns the no-answer threshold that maximises SQuAD 2.0 ``metric``, and the scores there.

    A question is answered "" when ``null_score_diffs[qid] > threshold``, else with
    ``predictions_with_answer[qid]``; this is BERT ``run_squad.py``'s rule with
    ``null_score_diff_threshold`` (diff = score_null - best non-null span score), and the
    official v2.0 script's ``find_best_thresh`` with the diff as its ``na_prob``. The search
    sorts the questions by diff and raises the threshold through each distinct value, adding the
    gain (answer's score - empty answer's score) of the questions it switches to answering; tied
    diffs switch together. Of equally good thresholds the lowest is returned, and ``-inf``
    (answer nothing) when no switch helps.

    Args:
        null_score_diffs: question id -> score_null - best non-null score (larger = more
            likely unanswerable).
        predictions_with_answer: question id -> the best non-empty answer text.
        gold: question id -> gold answer texts (empty = unanswerable).
        metric: "f1" or "exact", the score to maximise (BERT's README tunes on F1).

    Returns:
        (threshold, ``squad_scores`` of the predictions that threshold gives).

    Raises:
        ValueError: unknown metric, or a gold question without a diff or a prediction.
    """
    metrics = {"f1": token_f1, "exact": exact_match}
    if metric not in metrics:
        raise ValueError(f"metric {metric!r} is not one of {sorted(metrics)}.")
    if not gold:
        raise ValueError("best_null_threshold: no gold questions to score.")
    qids = list(gold)
    for name, given in (("null_score_diffs", null_score_diffs),
                        ("predictions_with_answer", predictions_with_answer)):
        missing = [q for q in qids if q not in given]
        if missing:
            raise ValueError(
                f"best_null_threshold: {len(missing)} of {len(qids)} questions are missing from "
                f"{name} (first: {missing[:5]}); pass a value for every gold question."
            )
    answers = predictions_with_answer
    diffs = np.array([float(null_score_diffs[q]) for q in qids])  # [Q]
    if not np.isfinite(diffs).all():
        raise ValueError("best_null_threshold: null_score_diffs hold NaN or inf.")
    score_of = metrics[metric]
    null_scores = np.array([max_over_gold(score_of, "", gold[q]) for q in qids])  # [Q]
    gains = np.array([max_over_gold(score_of, answers[q], gold[q]) for q in qids]) - null_scores
    thresholds, group = np.unique(diffs, return_inverse=True)  # [T] sorted distinct diffs
    gain_per_threshold = np.bincount(group.reshape(-1), weights=gains, minlength=thresholds.size)
    totals = np.concatenate([[0.0], np.cumsum(gain_per_threshold)])  # [T+1]; [0]: answer none
    # The lowest threshold whose total is the maximum, up to float rounding of the sums.
    best = int(np.flatnonzero(totals >= totals.max() - 1e-9)[0])
    threshold = float("-inf") if best == 0 else float(thresholds[best - 1])
    chosen = {q: ("" if null_score_diffs[q] > threshold else answers[q]) for q in qids}
    return threshold, squad_scores(chosen, gold)
