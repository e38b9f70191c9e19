"""Sensibleness and Specificity Average (SSA): labelling sheets, label files, majority, intervals.

Adiwardana et al. (2020), "Towards a Human-like Open-Domain Chatbot", arXiv:2001.09977, §3: crowd
workers read a context and a response and answer "does the response make sense?"; only if it does,
"is it specific to the context?". A response that is not sensible is automatically not specific.
Each response gets the majority label of its raters (the paper: 5 raters per response).
Sensibleness is the fraction of responses labelled sensible, specificity the fraction labelled
specific, and ``SSA = (sensibleness + specificity) / 2``.

Rules lmjax fixes (the paper leaves them open):

- **Majority with ties.** A response is sensible when MORE than half of its raters say so;
  a tie (possible with an even number of raters) counts as NOT sensible. Likewise for specific,
  where a rater who found the response not sensible counts as "not specific"; the response's
  specific label is then ANDed with its sensible label, so the two stay consistent.
- **Rater consistency.** A rater label ``{"sensible": false, "specific": true}`` is read as not
  specific (the protocol never asks for specificity then), not rejected.
- **Intervals.** Sensibleness and specificity are binomial proportions over responses: Wilson score
  intervals (Wilson, 1927). SSA averages two correlated proportions of the same responses, so its
  interval is a percentile bootstrap over responses (resampling responses with replacement;
  seeded, ``numpy.random.default_rng(seed)``).

Files:

- **Labels** (JSON Lines, one response per line; :func:`write_labels` / :func:`read_labels`)::

      {"context": ["Hi!", "Hey, what's up?"], "response": "Not much.", "model": "meena",
       "labels": [{"sensible": true, "specific": false}, ...]}

  ``context`` is a list of turns (a single string is read as one turn).
- **Labelling sheet** for raters (:func:`labelling_sheet` -> rows, :func:`write_labelling_sheet`
  as CSV or JSONL by extension, :func:`read_labelling_sheet` back into labelled responses): one row
  per (response, rater) with columns ``id, rater, model, context, response, sensible, specific``;
  raters fill ``sensible`` and ``specific`` with 1/0 (also yes/no, true/false); ``specific`` may be
  left empty when ``sensible`` is 0. Context turns are joined with ``CONTEXT_TURN_SEPARATOR`` in
  the CSV.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "CONTEXT_TURN_SEPARATOR",
    "LabelledResponse",
    "RaterLabel",
    "SSAReport",
    "labelling_sheet",
    "majority_label",
    "read_labelling_sheet",
    "read_labels",
    "ssa_by_model",
    "ssa_report",
    "wilson_interval",
    "write_labelling_sheet",
    "write_labels",
]

CONTEXT_TURN_SEPARATOR = " || "
MEENA_RATERS = 5
SHEET_COLUMNS = ("id", "rater", "model", "context", "response", "sensible", "specific")
_TRUE = ("1", "true", "yes", "y")
_FALSE = ("0", "false", "no", "n")


@dataclasses.dataclass(frozen=True)
class RaterLabel:
    """One rater's answers; ``specific`` is forced False when ``sensible`` is False."""

    sensible: bool
    specific: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "specific", bool(self.specific) and bool(self.sensible))
        object.__setattr__(self, "sensible", bool(self.sensible))


@dataclasses.dataclass(frozen=True)
class LabelledResponse:
    """A model response to a context and its raters' labels.

    Attributes:
      context: the turns before the response.
      response: the response text.
      model: the name of the system that produced it.
      labels: one ``RaterLabel`` per rater.
    """

    context: tuple[str, ...]
    response: str
    model: str
    labels: tuple[RaterLabel, ...]


@dataclasses.dataclass(frozen=True)
class SSAReport:
    """Sensibleness, specificity and SSA of a set of responses, with confidence intervals.

    Attributes:
      num_responses: n.
      sensibleness: fraction of responses whose majority label is sensible.
      specificity: fraction whose majority label is specific.
      ssa: ``(sensibleness + specificity) / 2``.
      sensibleness_interval: Wilson score interval (low, high).
      specificity_interval: Wilson score interval (low, high).
      ssa_interval: percentile bootstrap interval over responses (low, high).
      confidence: the intervals' confidence level.
      bootstrap_samples: bootstrap resamples behind ``ssa_interval``.
      seed: the bootstrap seed.
    """

    num_responses: int
    sensibleness: float
    specificity: float
    ssa: float
    sensibleness_interval: tuple[float, float]
    specificity_interval: tuple[float, float]
    ssa_interval: tuple[float, float]
    confidence: float
    bootstrap_samples: int
    seed: int


# --- Metrics ---------------------------------------------------------------------------------


def majority_label(labels: Sequence[RaterLabel]) -> RaterLabel:
    """The response's label: strict majority of raters for each question (a tie is False)."""
    if not labels:
        raise ValueError("A response has no rater labels; every response needs at least one.")
    sensible = 2 * sum(label.sensible for label in labels) > len(labels)
    specific = 2 * sum(label.specific for label in labels) > len(labels)
    return RaterLabel(sensible=sensible, specific=specific)


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion ``successes / total``.

    ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with ``z`` the two-sided normal
    quantile of ``confidence`` (Wilson, 1927, JASA 22(158)).
    """
    if total <= 0 or not 0 <= successes <= total:
        raise ValueError(f"wilson_interval needs 0 <= successes <= total and total > 0, got "
                         f"{successes}/{total}.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must be in (0, 1), e.g. 0.95.")
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * np.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, float(centre - half)), min(1.0, float(centre + half)))


def ssa_report(
    responses: Sequence[LabelledResponse],
    *,
    confidence: float = 0.95,
    bootstrap_samples: int = 1000,
    seed: int = 0,
) -> SSAReport:
    """Sensibleness, specificity and SSA of ``responses`` (majority labels), with intervals.

    Raises:
      ValueError: no responses, a response without labels, or bad interval settings.
    """
    if not responses:
        raise ValueError("ssa_report needs at least one labelled response.")
    if bootstrap_samples < 1:
        raise ValueError(f"bootstrap_samples={bootstrap_samples} must be positive.")
    majority = [majority_label(r.labels) for r in responses]
    sensible = np.array([m.sensible for m in majority], np.float64)  # [n]
    specific = np.array([m.specific for m in majority], np.float64)  # [n]
    n = len(responses)
    per_response = (sensible + specific) / 2  # [n]; its mean is the SSA
    rng = np.random.default_rng(seed)
    resampled = rng.integers(0, n, size=(bootstrap_samples, n))  # [S, n]
    ssa_samples = per_response[resampled].mean(axis=1)  # [S]
    tail = (1 - confidence) / 2
    low, high = np.quantile(ssa_samples, [tail, 1 - tail])
    return SSAReport(
        num_responses=n,
        sensibleness=float(sensible.mean()),
        specificity=float(specific.mean()),
        ssa=float(per_response.mean()),
        sensibleness_interval=wilson_interval(int(sensible.sum()), n, confidence),
        specificity_interval=wilson_interval(int(specific.sum()), n, confidence),
        ssa_interval=(float(low), float(high)),
        confidence=confidence,
        bootstrap_samples=bootstrap_samples,
        seed=seed,
    )


def ssa_by_model(responses: Sequence[LabelledResponse], **kwargs: Any) -> dict[str, SSAReport]:
    """``ssa_report`` of each model's responses, keyed by model name (sorted)."""
    models = sorted({r.model for r in responses})
    return {m: ssa_report([r for r in responses if r.model == m], **kwargs) for m in models}


# --- Labels files ----------------------------------------------------------------------------


def _context_turns(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return tuple(value)
    raise ValueError(f"{where}: 'context' must be a list of turns (strings), got {value!r:.80}.")


def _label_of(value: Any, where: str) -> RaterLabel:
    if not isinstance(value, dict) or not isinstance(value.get("sensible"), bool):
        raise ValueError(
            f'{where}: each label must be {{"sensible": true|false, "specific": true|false}}, '
            f"got {value!r:.80}."
        )
    specific = value.get("specific", False)
    if not isinstance(specific, bool):
        raise ValueError(f"{where}: 'specific' must be true or false, got {specific!r}.")
    return RaterLabel(sensible=value["sensible"], specific=specific)


def read_labels(path: str) -> list[LabelledResponse]:
    """Reads a labels JSONL file (see the module docstring); errors name the line.

    Raises:
      ValueError: a line that is not a JSON object with context, response, model and a non-empty
        list of labels.
    """
    responses = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where} is not valid JSON ({error}).") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where} must be a JSON object, got {type(record).__name__}.")
            missing = [k for k in ("context", "response", "model", "labels") if k not in record]
            if missing:
                raise ValueError(f"{where} lacks {missing}; each line needs context, response, "
                                 "model and labels.")
            if not isinstance(record["response"], str) or not isinstance(record["model"], str):
                raise ValueError(f"{where}: 'response' and 'model' must be strings.")
            labels = record["labels"]
            if not isinstance(labels, list) or not labels:
                raise ValueError(f"{where}: 'labels' must be a non-empty list of rater labels.")
            responses.append(LabelledResponse(
                context=_context_turns(record["context"], where),
                response=record["response"],
                model=record["model"],
                labels=tuple(_label_of(label, where) for label in labels),
            ))
    if not responses:
        raise ValueError(f"{path} holds no labelled response.")
    return responses


def write_labels(responses: Iterable[LabelledResponse], path: str) -> None:
    """Writes ``responses`` as a labels JSONL file that :func:`read_labels` reads back."""
    with open(path, "w", encoding="utf-8") as handle:
        for r in responses:
            record = {"context": list(r.context), "response": r.response, "model": r.model,
                      "labels": [dataclasses.asdict(label) for label in r.labels]}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


# --- Labelling sheets ------------------------------------------------------------------------


def labelling_sheet(
    responses: Iterable[Mapping[str, Any]], num_raters: int = MEENA_RATERS
) -> list[dict[str, Any]]:
    """Rows for raters to fill: one per (response, rater), ``sensible`` / ``specific`` empty.

    Args:
      responses: mappings with 'context' (turns or a string), 'response' and 'model' (e.g. the
        outputs of sample-and-rank decoding over a list of contexts).
      num_raters: raters per response (Meena: 5).

    Returns:
      Dicts with the keys ``SHEET_COLUMNS``; 'id' numbers the responses from 0, 'rater' from 1.
    """
    if num_raters < 1:
        raise ValueError(f"num_raters={num_raters} must be at least 1 (Meena used 5).")
    rows = []
    for index, item in enumerate(responses):
        where = f"response {index}"
        missing = [k for k in ("context", "response", "model") if k not in item]
        if missing:
            raise ValueError(f"{where} lacks {missing}; give context, response and model.")
        context = list(_context_turns(item["context"], where))
        for rater in range(1, num_raters + 1):
            rows.append({"id": index, "rater": rater, "model": item["model"], "context": context,
                         "response": item["response"], "sensible": "", "specific": ""})
    return rows


def write_labelling_sheet(rows: Sequence[Mapping[str, Any]], path: str) -> None:
    """Writes sheet rows as CSV (``.csv``; context turns joined by ``CONTEXT_TURN_SEPARATOR``) or
    JSON Lines (any other extension)."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        if path.endswith(".csv"):
            writer = csv.DictWriter(handle, fieldnames=SHEET_COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "context": CONTEXT_TURN_SEPARATOR.join(row["context"])})
        else:
            for row in rows:
                handle.write(json.dumps({k: row[k] for k in SHEET_COLUMNS}, ensure_ascii=False)
                             + "\n")


def _answer(value: Any, column: str, where: str, allow_empty: bool) -> bool | None:
    """Parses a rater's cell: bools, 1/0, yes/no, true/false; empty -> None when allowed."""
    if isinstance(value, bool):
        return value
    text = "" if value is None else str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if text == "" and allow_empty:
        return None
    raise ValueError(f"{where}: column {column!r} is {value!r}; fill it with 1 or 0 "
                     f"(also yes/no, true/false).")


def _sheet_records(path: str) -> list[tuple[str, dict[str, Any]]]:
    with open(path, encoding="utf-8", newline="") as handle:
        if path.endswith(".csv"):
            reader = csv.DictReader(handle)
            missing = [c for c in SHEET_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise ValueError(f"{path} lacks the column(s) {missing}; write it with "
                                 "write_labelling_sheet.")
            records = []
            for row in reader:
                row = dict(row)
                row["context"] = row["context"].split(CONTEXT_TURN_SEPARATOR)
                records.append((f"{path}:{reader.line_num}", row))
            return records
        records = []
        for number, line in enumerate(handle, start=1):
            if line.strip():
                where = f"{path}:{number}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{where} is not valid JSON ({error}).") from None
                missing = [c for c in SHEET_COLUMNS if not isinstance(row, dict) or c not in row]
                if missing:
                    raise ValueError(f"{where} lacks {missing}.")
                records.append((where, row))
        return records


def read_labelling_sheet(path: str) -> list[LabelledResponse]:
    """Reads a filled sheet (CSV or JSONL) and groups its rows into labelled responses by 'id'.

    Raises:
      ValueError: a missing column, an unfilled or unreadable ``sensible`` cell, ``specific``
        empty although ``sensible`` is 1, rows of one id that disagree on the response, or the
        same rater twice for one response (each message names the file and line).
    """
    grouped: dict[str, dict[str, Any]] = {}
    for where, row in _sheet_records(path):
        sensible = _answer(row["sensible"], "sensible", where, allow_empty=False)
        specific = _answer(row["specific"], "specific", where, allow_empty=not sensible)
        key = str(row["id"])
        entry = grouped.setdefault(key, {"row": row, "labels": [], "raters": set()})
        first = entry["row"]
        if (first["response"], first["model"], list(first["context"])) != (
                row["response"], row["model"], list(row["context"])):
            raise ValueError(f"{where}: id {key} has another context, response or model than its "
                             "first row; every row of one id must show the same response.")
        if str(row["rater"]) in entry["raters"]:
            raise ValueError(f"{where}: rater {row['rater']} labelled id {key} twice.")
        entry["raters"].add(str(row["rater"]))
        entry["labels"].append(RaterLabel(sensible=sensible, specific=bool(specific)))
    if not grouped:
        raise ValueError(f"{os.fspath(path)} holds no rows.")
    return [
        LabelledResponse(context=tuple(e["row"]["context"]), response=e["row"]["response"],
                         model=e["row"]["model"], labels=tuple(e["labels"]))
        for e in grouped.values()
    ]
