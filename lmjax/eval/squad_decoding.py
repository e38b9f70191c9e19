"""SQuAD span decoding: start/end logits of doc-stride windows -> answer text per question.

Devlin et al. 2019 (arXiv:1810.04805, sections 4.2-4.3); google-research/bert
``run_squad.py::write_predictions`` and ``_get_best_indexes``. For every question, over all of
its windows (rows of :class:`~lmjax.data.squad_features.SquadFeatures`):

1. candidates pair each of the ``n_best_size`` highest start logits with each of the
   ``n_best_size`` highest end logits of the same row;
2. a candidate is kept iff both tokens are context tokens (``token_to_word >= 0``), the start
   token's max-context window is this row, ``end >= start`` and ``end - start + 1 <=
   max_answer_length`` tokens; its score is ``start_logit + end_logit``;
3. the null score is the smallest ``start[0] + end[0]`` (``[CLS]``) over the windows (SQuAD 2.0);
4. the n-best list: candidates by score, one per distinct text, at most ``n_best_size``, with the
   null answer ``""`` among them for SQuAD 2.0, and a softmax over their scores;
5. SQuAD 2.0 predicts ``""`` iff ``null_score - best_non_null_score > null_score_diff_threshold``.

Where we differ from the reference, and why:

* The text of a span is the context's whitespace words from the start token's word to the end
  token's word, joined by one space. ``run_squad``'s ``get_final_text`` realigns the
  normalised WordPiece text with those words to trim characters of the first and last word
  (``"Smith's"`` -> ``"Smith"``); it needs the tokenizer's normaliser, and where its heuristic
  fails it returns these same words. Our words *are* the context's whitespace words, so we
  return them, and the official metric's punctuation stripping absorbs most of what trimming
  would change.
* A question without any valid span gets the text ``""`` and score ``-inf`` (``run_squad``
  writes the nonce ``"empty"``); its ``null_score_diff`` is then ``+inf``, so SQuAD 2.0 answers
  ``""``.
* ``null_score`` and ``null_score_diff`` are computed for SQuAD 1.1 too (only 2.0 acts on them).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from lmjax.data.squad_features import SquadFeatures

__all__ = [
    "NBestAnswer",
    "Prediction",
    "SpanDecodingConfig",
    "best_spans",
    "predictions_by_uid",
]


@dataclasses.dataclass(frozen=True)
class SpanDecodingConfig:
    """How spans are chosen (``run_squad.py`` flags and defaults).

    Attributes:
        n_best_size: Start and end candidates per window, and answers kept in the n-best list.
        max_answer_length: Longest span, in tokens.
        null_score_diff_threshold: SQuAD 2.0 answers ``""`` when the null score beats the best
            span by more than this (BERT's README: tune it on dev, typically -1.0 to -5.0).
        version_2: SQuAD 2.0 (unanswerable questions exist); False for SQuAD 1.1.
    """

    n_best_size: int = 20
    max_answer_length: int = 30
    null_score_diff_threshold: float = 0.0
    version_2: bool = False

    def __post_init__(self):
        for name in ("n_best_size", "max_answer_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"SpanDecodingConfig.{name}={value!r}: use a positive integer.")
        threshold = self.null_score_diff_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) \
                or not math.isfinite(threshold):
            raise ValueError(
                f"SpanDecodingConfig.null_score_diff_threshold={threshold!r}: use a finite float "
                "(0.0 by default; tune it on dev data)."
            )
        if not isinstance(self.version_2, (bool, np.bool_)):
            raise ValueError(
                f"SpanDecodingConfig.version_2={self.version_2!r}: use True (SQuAD 2.0) or False."
            )


@dataclasses.dataclass(frozen=True)
class NBestAnswer:
    """One answer of a question's n-best list.

    Attributes:
        text: The answer words joined by spaces; ``""`` for the null answer.
        start_logit: Start logit of the span (``[CLS]``'s for the null answer).
        end_logit: End logit of the span.
        probability: Softmax of ``start_logit + end_logit`` over the n-best list.
        row: Feature row the span was read from.
        start_token, end_token: Row positions of its first and last token (0, 0 for null).
        start_word, end_word: Context word indices of the span (-1, -1 for null).
    """

    text: str
    start_logit: float
    end_logit: float
    probability: float
    row: int
    start_token: int
    end_token: int
    start_word: int
    end_word: int

    @property
    def score(self) -> float:
        """``start_logit + end_logit``."""
        return self.start_logit + self.end_logit


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The decoded answer of one question.

    Attributes:
        uid: The question's id.
        text: The best non-null span's text (``""`` when no span is valid).
        score: Its ``start_logit + end_logit`` (``-inf`` when no span is valid).
        null_score: Smallest ``start[0] + end[0]`` over the question's windows.
        null_score_diff: ``null_score - score`` (``+inf`` when no span is valid).
        n_best: Best answers first (the null one included for SQuAD 2.0).
    """

    uid: str
    text: str
    score: float
    null_score: float
    null_score_diff: float
    n_best: tuple[NBestAnswer, ...]


def _best_indexes(logits: np.ndarray, n_best_size: int) -> np.ndarray:
    """int [min(n, L)]: indexes of the largest logits, best first, earlier index on ties.

    ``run_squad.py::_get_best_indexes``.
    """
    return np.argsort(-logits, kind="stable")[:n_best_size]


def _softmax(scores: Sequence[float]) -> list[float]:
    """``run_squad.py::_compute_softmax``; uniform where every score is ``-inf``."""
    if not scores:
        return []
    if max(scores) == -math.inf:
        return [1.0 / len(scores)] * len(scores)
    shifted = np.exp(np.asarray(scores, np.float64) - max(scores))
    return (shifted / shifted.sum()).tolist()


def _checked_logits(name: str, logits, features: SquadFeatures) -> np.ndarray:
    array = np.asarray(logits, np.float32)
    if array.shape != features.inputs.shape:
        raise ValueError(
            f"{name} has shape {array.shape} but the features have {features.inputs.shape} "
            "[rows, max_seq_len]: pass the model's logits for exactly these rows, in order."
        )
    if np.isnan(array).any() or np.isposinf(array).any():
        raise ValueError(
            f"{name} has NaN or +inf values: check the model's outputs (-inf, for positions "
            "masked out, is allowed)."
        )
    return array


def _row_candidates(start: np.ndarray, end: np.ndarray, to_word: np.ndarray,
                    max_context: np.ndarray, config: SpanDecodingConfig) -> list[tuple]:
    """The valid ``(start_logit, end_logit, start_token, end_token)`` of one row, in
    run_squad's order."""
    starts = _best_indexes(start, config.n_best_size)  # [S]
    ends = _best_indexes(end, config.n_best_size)  # [S]
    s, e = np.meshgrid(starts, ends, indexing="ij")  # [S, S] each: start-major like run_squad
    valid = ((to_word[s] >= 0) & (to_word[e] >= 0) & max_context[s]
             & (e >= s) & (e - s + 1 <= config.max_answer_length))
    return [(float(start[i]), float(end[j]), int(i), int(j)) for i, j in zip(s[valid], e[valid])]


def _answer(features: SquadFeatures, words: Sequence[str], start_logit: float, end_logit: float,
            row: int, start_token: int, end_token: int) -> dict:
    """The fields of an :class:`NBestAnswer` but its probability; start 0 = the null answer."""
    if start_token == 0:
        start_word = end_word = -1
        text = ""
    else:
        start_word = int(features.token_to_word[row, start_token])
        end_word = int(features.token_to_word[row, end_token])
        text = " ".join(words[start_word:end_word + 1])
    return dict(text=text, start_logit=start_logit, end_logit=end_logit, row=row,
                start_token=start_token, end_token=end_token, start_word=start_word,
                end_word=end_word)


def best_spans(start_logits, end_logits, features: SquadFeatures,
               config: SpanDecodingConfig = SpanDecodingConfig()) -> list[Prediction]:
    """Returns one :class:`Prediction` per example that has rows, in example order.

    ``run_squad.py::write_predictions`` (see the module docstring for the rules).

    Args:
        start_logits: float [N, L]: the model's start logits for the rows of ``features``.
        end_logits: float [N, L]: its end logits.
        features: The rows (``lmjax.data.squad_features.squad_features``).
        config: n-best size, longest span, SQuAD version and null threshold.

    Raises:
        ValueError: The logits do not match the rows, or have NaN or +inf values.
    """
    start_logits = _checked_logits("start_logits", start_logits, features)  # [N, L]
    end_logits = _checked_logits("end_logits", end_logits, features)  # [N, L]
    rows_of: dict[int, list[int]] = {}
    for row, example in enumerate(features.example_index.tolist()):
        rows_of.setdefault(example, []).append(row)

    predictions = []
    for example in sorted(rows_of):
        words = features.words[example]
        candidates = []  # (start_logit, end_logit, row, start_token, end_token)
        null = None  # (score, start_logit, end_logit, row) of the smallest [CLS] score
        for row in rows_of[example]:
            start, end = start_logits[row], end_logits[row]
            row_null = float(start[0]) + float(end[0])
            if null is None or row_null < null[0]:
                null = (row_null, float(start[0]), float(end[0]), row)
            candidates.extend(
                (s_logit, e_logit, row, s, e) for s_logit, e_logit, s, e in _row_candidates(
                    start, end, features.token_to_word[row], features.token_is_max_context[row],
                    config))
        if config.version_2:
            candidates.append((null[1], null[2], null[3], 0, 0))
        candidates.sort(key=lambda c: c[0] + c[1], reverse=True)  # stable: run_squad's order

        answers, seen = [], set()
        for candidate in candidates:
            if len(answers) >= config.n_best_size:
                break
            answer = _answer(features, words, *candidate)
            if answer["text"] not in seen:
                seen.add(answer["text"])
                answers.append(answer)
        if config.version_2 and "" not in seen:
            answers.append(_answer(features, words, null[1], null[2], null[3], 0, 0))
        probabilities = _softmax([a["start_logit"] + a["end_logit"] for a in answers])
        n_best = tuple(NBestAnswer(probability=p, **a) for a, p in zip(answers, probabilities))

        # The best non-null span, even where n_best_size leaves it out of a 2.0 n-best list.
        best = next((_answer(features, words, *c) for c in candidates if c[3] != 0), None)
        score = best["start_logit"] + best["end_logit"] if best is not None else -math.inf
        predictions.append(Prediction(
            uid=features.uids[example],
            text=best["text"] if best is not None else "",
            score=score,
            null_score=null[0],
            null_score_diff=null[0] - score if best is not None else math.inf,
            n_best=n_best,
        ))
    return predictions


def predictions_by_uid(predictions: Sequence[Prediction],
                       config: SpanDecodingConfig = SpanDecodingConfig()) -> dict[str, str]:
    """Returns ``{uid: answer text}``, the official prediction file's content.

    SQuAD 1.1: the best span's text. SQuAD 2.0: ``""`` iff ``null_score_diff >
    null_score_diff_threshold``, else the best span's text (``run_squad.py::write_predictions``).
    """
    answers = {}
    for prediction in predictions:
        if config.version_2 and prediction.null_score_diff > config.null_score_diff_threshold:
            answers[prediction.uid] = ""
        else:
            answers[prediction.uid] = prediction.text
    return answers
