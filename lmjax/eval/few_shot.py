"""GPT-3's few-shot in-context evaluation: zero-, one- and few-shot prompts, no training.

The protocol (Brown et al. 2020, "Language Models are Few-Shot Learners", section 2.4; spec
text-models.md section 12):

* **Prompts** (:mod:`lmjax.eval.few_shot_tasks`). For each test example, K demonstrations are
  drawn at random from the task's training split (from its test split, never the example itself,
  when there is no training split), formatted with their answers, joined by newlines, and
  followed by the test example without its answer. Draws are seeded by ``(seed, test example
  index)``: the same seed gives the same prompts, and fewer shots take a prefix of the same draw.
  When a prompt does not fit the model's positions, demonstrations are dropped from the front
  until it does (the table's notes say how often); the test example itself is never cut.
* **Multiple choice.** Each completion c of context x is scored by its log-likelihood
  ``log P(c | x)``, summed over c's tokens; GPT-3 normalises it per token for most tasks
  (``log P(c | x) / |c|``) and, for ARC, OpenBookQA and RACE, by the unconditional likelihood
  ``log P(c | x) - log P(c | "Answer:")`` (EleutherAI, "Multiple Choice Normalization in LM
  Evaluation"). The table reports the accuracy of all three.
* **Free-form.** The answer is decoded with beam search (width 4, length penalty 0.6) or greedily,
  cut at the first newline, and scored by exact match after SQuAD's normalisation (lower case,
  no punctuation, articles or extra spaces; :mod:`lmjax.eval.squad_metrics`).

Scoring runs in batches of a fixed size, each padded to a bucket length (a power of two, at most
the model's ``max_len``), so a jitted forward compiles once per bucket.

Axis legend: B batch, L bucket length, P (context, completion) pairs, N examples, C choices.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
from collections.abc import Sequence
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from lmjax.decoding.beam_search import beam_search
from lmjax.decoding.generate import generate
from lmjax.decoding.text import TextTokenizer, model_max_len
from lmjax.eval.few_shot_tasks import (
    FewShotPrompt,
    FewShotTask,
    FreeFormTask,
    MultipleChoiceTask,
    default_few_shot_tasks,
    fitted_prompt,
)
from lmjax.eval.squad_metrics import exact_match, max_over_gold

__all__ = [
    "ChoiceScores",
    "FewShotRow",
    "NORMALISATIONS",
    "bucket_length",
    "completion_log_likelihoods",
    "evaluate_trained_run",
    "evaluated_indices",
    "few_shot_table",
    "format_table",
    "free_form_answers",
    "free_form_exact_match",
    "multiple_choice_scores",
    "task_rows",
]

log = logging.getLogger(__name__)

MIN_BUCKET = 32
# How a completion's log-likelihood is turned into its score (see ChoiceScores.normalised).
NORMALISATIONS = ("sum", "per_token", "unconditional")
_METRIC_NAMES = {
    "sum": "accuracy (sum log-lik)",
    "per_token": "accuracy (per-token)",
    "unconditional": "accuracy (unconditional)",
}
FREE_FORM_DECODERS = ("beam", "greedy")


def bucket_length(length: int, limit: Optional[int] = None) -> int:
    """Returns the smallest power of two >= ``length`` (at least ``MIN_BUCKET``), capped at
    ``limit``.

    Raises:
        ValueError: when ``length`` exceeds ``limit``.
    """
    if limit is not None and length > limit:
        raise ValueError(f"a row of {length} tokens does not fit in {limit} positions.")
    bucket = max(MIN_BUCKET, 1 << max(0, int(length) - 1).bit_length())
    return bucket if limit is None else min(bucket, limit)


# --- Multiple choice --------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("model",))
def _next_token_log_probs(model, params, tokens, segment_ids):
    """float32 [B, L - 1]: log P(tokens[:, t + 1] | tokens[:, :t + 1]) by one forward pass."""
    logits = model.apply({"params": params}, tokens, segment_ids=segment_ids)["logits"]
    log_probs = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)  # [B, L-1, V]
    return jnp.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)[..., 0]


def completion_log_likelihoods(
    model: Any,
    params: Any,
    contexts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    *,
    batch_size: int = 16,
    pad_id: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``log P(completion | context)`` summed over the completion's tokens, per pair.

    Each row ``context + completion`` is right-padded (segment id 0 on pads) to its batch's
    bucket length; rows are sorted by length so a batch pads little, and every batch has
    ``batch_size`` rows (filler rows repeat a real one), so the forward compiles once per bucket.

    Args:
        model: an lmjax decoder-only model; params: its parameters.
        contexts: P non-empty token-id lists.
        completions: P non-empty token-id lists.
        batch_size: rows per forward pass.
        pad_id: the id written on padding (never attended to).

    Returns:
        (float64 [P] summed log-likelihoods, int [P] completion lengths in tokens).

    Raises:
        ValueError: for an empty context or completion, or a pair longer than the model's
            ``max_len``.
    """
    if len(contexts) != len(completions):
        raise ValueError(f"{len(contexts)} contexts but {len(completions)} completions.")
    empty = [i for i, (x, c) in enumerate(zip(contexts, completions)) if not x or not c]
    if empty:
        raise ValueError(f"pairs {empty[:5]} have an empty context or completion.")
    max_len = model_max_len(model)
    rows = [list(x) + list(c) for x, c in zip(contexts, completions)]
    too_long = [i for i, row in enumerate(rows) if max_len is not None and len(row) > max_len]
    if too_long:
        raise ValueError(
            f"pairs {too_long[:5]} are longer than the model's max_len={max_len}; shorten them "
            "(see fitted_prompt)."
        )
    totals = np.zeros(len(rows), np.float64)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for start in range(0, len(order), batch_size):
        members = order[start : start + batch_size]
        length = bucket_length(max(len(rows[i]) for i in members), max_len)
        tokens = np.full((batch_size, length), pad_id, np.int32)  # [B, L]
        segment_ids = np.zeros((batch_size, length), np.int32)  # [B, L]
        for slot in range(batch_size):
            row = rows[members[min(slot, len(members) - 1)]]
            tokens[slot, : len(row)] = row
            segment_ids[slot, : len(row)] = 1
        log_probs = np.asarray(
            _next_token_log_probs(model, params, jnp.asarray(tokens), jnp.asarray(segment_ids))
        )  # [B, L - 1]; column t scores token t + 1
        for slot, i in enumerate(members):
            first, end = len(contexts[i]), len(rows[i])
            totals[i] = float(np.sum(log_probs[slot, first - 1 : end - 1], dtype=np.float64))
    return totals, np.array([len(c) for c in completions])


@dataclasses.dataclass(frozen=True)
class ChoiceScores:
    """Log-likelihoods of every choice of N multiple-choice examples, padded to C choices.

    Attributes:
        log_likelihood: float64 [N, C], ``log P(choice | context)`` (-inf past an example's
            last choice).
        num_tokens: int [N, C], the choice's length in tokens (1 past the last choice).
        unconditional_log_likelihood: float64 [N, C], ``log P(choice | answer context)``.
    """

    log_likelihood: np.ndarray
    num_tokens: np.ndarray
    unconditional_log_likelihood: np.ndarray

    def normalised(self, normalisation: str) -> np.ndarray:
        """Returns float64 [N, C] scores: ``'sum'`` the log-likelihood, ``'per_token'`` divided by
        the choice's tokens, ``'unconditional'`` minus the unconditional log-likelihood."""
        if normalisation == "sum":
            return self.log_likelihood
        if normalisation == "per_token":
            return self.log_likelihood / self.num_tokens
        if normalisation == "unconditional":
            return self.log_likelihood - self.unconditional_log_likelihood
        raise ValueError(f"normalisation={normalisation!r}: use one of {NORMALISATIONS}.")


def multiple_choice_scores(
    model: Any,
    params: Any,
    tokenizer: TextTokenizer,
    contexts: Sequence[str],
    choices: Sequence[Sequence[str]],
    unconditional_context: str,
    *,
    batch_size: int = 16,
) -> ChoiceScores:
    """Scores every choice of every context by its log-likelihood (see :class:`ChoiceScores`).

    Contexts and choices are encoded separately, so a choice has the same tokens after every
    context. Each distinct choice is scored once after ``unconditional_context``.
    """
    if len(contexts) != len(choices):
        raise ValueError(f"{len(contexts)} contexts but {len(choices)} choice lists.")
    width = max(len(c) for c in choices)
    encoded = {text: list(tokenizer.encode(text)) for cs in choices for text in cs}
    context_ids = [list(tokenizer.encode(x)) for x in contexts]
    pairs = [(n, j) for n, cs in enumerate(choices) for j in range(len(cs))]
    distinct = sorted(encoded)
    answer_ids = list(tokenizer.encode(unconditional_context))
    sums, lengths = completion_log_likelihoods(
        model,
        params,
        [context_ids[n] for n, _ in pairs] + [answer_ids] * len(distinct),
        [encoded[choices[n][j]] for n, j in pairs] + [encoded[text] for text in distinct],
        batch_size=batch_size,
        pad_id=int(getattr(tokenizer, "pad_id", 0) or 0),
    )
    unconditional = dict(zip(distinct, sums[len(pairs):]))
    log_likelihood = np.full((len(contexts), width), -np.inf)
    num_tokens = np.ones((len(contexts), width), np.int64)
    answer_log_likelihood = np.zeros((len(contexts), width))
    for (n, j), total, length in zip(pairs, sums, lengths):
        log_likelihood[n, j] = total
        num_tokens[n, j] = length
        answer_log_likelihood[n, j] = unconditional[choices[n][j]]
    return ChoiceScores(log_likelihood, num_tokens, answer_log_likelihood)


# --- Free-form --------------------------------------------------------------------------------


def free_form_exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the prediction equals a gold answer after SQuAD's normalisation
    (:func:`lmjax.eval.squad_metrics.normalize_answer`: lower case, no punctuation, articles or
    extra spaces), else 0.0."""
    return max_over_gold(exact_match, prediction, answers)


def _first_line(text: str) -> str:
    return text.split("\n", 1)[0].strip()


def free_form_answers(
    model: Any,
    params: Any,
    tokenizer: TextTokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    decoder: str = "beam",
    beam_size: int = 4,
    length_penalty: float = 0.6,
    batch_size: int = 8,
) -> list[str]:
    """Returns each prompt's decoded answer: new tokens before EOS, decoded, cut at the first
    newline and stripped.

    Prompts are left-padded to a bucket width and decoded ``batch_size`` at a time (filler rows
    repeat a real one) with :func:`lmjax.decoding.beam_search.beam_search` (``decoder='beam'``,
    GPT-3's width 4 and length penalty 0.6) or greedy :func:`lmjax.decoding.generate`.

    Raises:
        ValueError: for an unknown decoder, or a prompt that leaves no room for the answer.
    """
    if decoder not in FREE_FORM_DECODERS:
        raise ValueError(f"decoder={decoder!r}: use one of {FREE_FORM_DECODERS}.")
    max_len = model_max_len(model)
    limit = None if max_len is None else max_len - max_new_tokens + 1
    encoded = [list(tokenizer.encode(p)) or [tokenizer.bos_id] for p in prompts]
    pad_id = int(tokenizer.pad_id or 0)
    answers: list[str] = [""] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    for start in range(0, len(order), batch_size):
        members = order[start : start + batch_size]
        width = bucket_length(max(len(encoded[i]) for i in members), limit)
        tokens = np.full((batch_size, width), pad_id, np.int32)  # [B, T] left-padded
        mask = np.zeros((batch_size, width), np.int32)
        for slot in range(batch_size):
            ids = encoded[members[min(slot, len(members) - 1)]]
            tokens[slot, width - len(ids) :] = ids
            mask[slot, width - len(ids) :] = 1
        if decoder == "beam":
            beams, _ = beam_search(
                model, params, tokens, mask, beam_size=beam_size, max_new_tokens=max_new_tokens,
                length_penalty=length_penalty, eos_id=tokenizer.eos_id, pad_id=pad_id,
            )
            new = np.asarray(beams[:, 0, width:])  # [B, N], the best beam
        else:
            sequences = generate(
                model, params, tokens, mask, max_new_tokens=max_new_tokens, greedy=True,
                eos_id=tokenizer.eos_id, pad_id=pad_id,
            )
            new = np.asarray(sequences[:, width:])  # [B, N]
        for slot, i in enumerate(members):
            ids = new[slot].tolist()
            if tokenizer.eos_id is not None and tokenizer.eos_id in ids:
                ids = ids[: ids.index(tokenizer.eos_id)]
            answers[i] = _first_line(tokenizer.decode(ids))
    return answers


# --- The protocol -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FewShotRow:
    """One line of the results table: a task's metric at each number of shots.

    Attributes:
        task: the task's name.
        format: ``'multiple choice'`` or ``'free-form'``.
        metric: what the values measure (accuracy under a normalisation, or exact match).
        values: shots -> the metric in [0, 1].
        num_examples: test examples evaluated.
        notes: how many prompts dropped demonstrations to fit the model, per shot count.
    """

    task: str
    format: str
    metric: str
    values: dict[int, float]
    num_examples: int
    notes: tuple[str, ...] = ()


def evaluated_indices(task: FewShotTask, num_examples: Optional[int], seed: int) -> list[int]:
    """Returns the test indices evaluated: all, or ``num_examples`` drawn with ``seed``."""
    total = len(task.test)
    if num_examples is None or num_examples >= total:
        return list(range(total))
    if num_examples < 1:
        raise ValueError(f"num_examples={num_examples} must be >= 1 (None = all).")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(total, size=num_examples, replace=False))


def _truncation_note(task: FewShotTask, shots: int, prompts: Sequence[FewShotPrompt],
                     max_len: Optional[int]) -> Optional[str]:
    dropped = [p for p in prompts if p.dropped]
    if not dropped:
        return None
    kept = np.mean([len(p.demonstrations) for p in prompts])
    note = (
        f"{task.name}, {shots}-shot: {len(dropped)} of {len(prompts)} prompts dropped "
        f"demonstrations from the front to fit {max_len} positions (mean "
        f"{kept:.1f} of {shots} kept)"
    )
    log.warning(note)
    return note


def task_rows(
    model: Any,
    params: Any,
    tokenizer: TextTokenizer,
    task: FewShotTask,
    shots: Sequence[int],
    num_examples: Optional[int],
    seed: int,
    *,
    batch_size: int = 16,
    free_form_decoder: str = "beam",
    beam_size: int = 4,
    length_penalty: float = 0.6,
    context_len: Optional[int] = None,
) -> list[FewShotRow]:
    """Evaluates one task at every shot count; returns its rows (one per metric).

    ``context_len`` caps the prompt length below the model's ``max_len`` (e.g. at the rows it
    was trained on: position embeddings beyond them never learned anything)."""
    max_len = model_max_len(model)
    if context_len is not None:
        max_len = context_len if max_len is None else min(max_len, context_len)
    indices = evaluated_indices(task, num_examples, seed)
    values: dict[str, dict[int, float]] = collections.defaultdict(dict)
    notes = []
    for k in shots:
        if isinstance(task, MultipleChoiceTask):
            examples = [task.test[i] for i in indices]
            budgets = [
                None if max_len is None
                else max_len - max(len(tokenizer.encode(c)) for c in e.choices)
                for e in examples
            ]
            prompts = [
                fitted_prompt(task, tokenizer, i, k, seed, budget)
                for i, budget in zip(indices, budgets)
            ]
            scores = multiple_choice_scores(
                model, params, tokenizer, [p.text for p in prompts],
                [e.choices for e in examples], task.unconditional_context,
                batch_size=batch_size,
            )
            labels = np.array([e.label for e in examples])
            for normalisation in NORMALISATIONS:
                predicted = np.argmax(scores.normalised(normalisation), axis=1)
                values[_METRIC_NAMES[normalisation]][k] = float(np.mean(predicted == labels))
        elif isinstance(task, FreeFormTask):
            budget = None if max_len is None else max_len - task.max_answer_tokens + 1
            prompts = [fitted_prompt(task, tokenizer, i, k, seed, budget) for i in indices]
            answers = free_form_answers(
                model, params, tokenizer, [p.text for p in prompts],
                max_new_tokens=task.max_answer_tokens, decoder=free_form_decoder,
                beam_size=beam_size, length_penalty=length_penalty, batch_size=batch_size,
            )
            matches = [
                free_form_exact_match(a, task.test[i].answers) for a, i in zip(answers, indices)
            ]
            values["exact match"][k] = float(np.mean(matches))
        else:
            raise ValueError(
                f"task {getattr(task, 'name', task)!r} is neither a MultipleChoiceTask nor a "
                "FreeFormTask."
            )
        note = _truncation_note(task, k, prompts, max_len)
        if note:
            notes.append(note)
    return [
        FewShotRow(task.name, task.format, metric, dict(by_shots), len(indices), tuple(notes))
        for metric, by_shots in values.items()
    ]


def few_shot_table(
    model: Any,
    params: Any,
    tokenizer: TextTokenizer,
    tasks: Sequence[FewShotTask],
    shots: Sequence[int] = (0, 1, 4),
    num_examples: Optional[int] = 50,
    seed: int = 0,
    *,
    batch_size: int = 16,
    free_form_decoder: str = "beam",
    beam_size: int = 4,
    length_penalty: float = 0.6,
    context_len: Optional[int] = None,
) -> list[FewShotRow]:
    """Evaluates every task zero-, one- and few-shot (GPT-3 section 2.4); returns the table rows.

    Args:
        model: an lmjax decoder-only model (KV-cache contract); params: its parameters.
        tokenizer: encodes prompts and decodes answers (``encode``, ``decode``, ``pad_id``,
            ``bos_id``, ``eos_id``).
        tasks: :class:`MultipleChoiceTask` and :class:`FreeFormTask` instances.
        shots: the numbers of demonstrations, e.g. ``(0, 1, K)``.
        num_examples: test examples per task (drawn with ``seed``); None = all.
        seed: seeds which test examples and which demonstrations are drawn.
        batch_size: rows per forward pass / decoding batch.
        free_form_decoder: ``'beam'`` (GPT-3: width ``beam_size``, ``length_penalty``) or
            ``'greedy'``.
        context_len: the longest prompt plus answer (default: the model's ``max_len``).

    Returns:
        Rows of :class:`FewShotRow`: three per multiple-choice task (accuracy by summed,
        per-token and unconditional-normalised likelihood), one per free-form task (exact match).
    """
    if not tasks:
        raise ValueError("no tasks to evaluate; pass e.g. default_few_shot_tasks().")
    if not shots or any(int(k) < 0 for k in shots):
        raise ValueError(f"shots={tuple(shots)} must be non-empty and >= 0, e.g. (0, 1, 4).")
    rows = []
    for task in tasks:
        rows.extend(
            task_rows(
                model, params, tokenizer, task, [int(k) for k in shots], num_examples, seed,
                batch_size=batch_size, free_form_decoder=free_form_decoder,
                beam_size=beam_size, length_penalty=length_penalty, context_len=context_len,
            )
        )
    return rows


def format_table(rows: Sequence[FewShotRow]) -> str:
    """Returns the rows as a text table: task, format, metric, then one column per shot count,
    followed by the notes on dropped demonstrations."""
    shots = sorted({k for row in rows for k in row.values})
    header = ["task", "format", "metric", "n"] + [f"{k}-shot" for k in shots]
    lines = [
        [row.task, row.format, row.metric, str(row.num_examples)]
        + [f"{row.values[k]:.3f}" if k in row.values else "-" for k in shots]
        for row in rows
    ]
    widths = [max(len(r[c]) for r in [header] + lines) for c in range(len(header))]
    text = [
        "  ".join(cell.ljust(w) if c < 3 else cell.rjust(w)
                  for c, (cell, w) in enumerate(zip(r, widths))).rstrip()
        for r in [header] + lines
    ]
    text.insert(1, "  ".join("-" * w for w in widths))
    notes = list(dict.fromkeys(note for row in rows for note in row.notes))
    if notes:
        text.append("")
        text.extend(f"note: {note}." for note in notes)
    return "\n".join(text)


def evaluate_trained_run(
    workdir: str,
    shots: Sequence[int] = (0, 1, 4),
    num_examples: Optional[int] = 50,
    seed: int = 0,
    *,
    tasks: Optional[Sequence[FewShotTask]] = None,
    passage_words: Optional[int] = None,
    free_form_decoder: str = "beam",
    batch_size: int = 16,
) -> str:
    """Loads a trained run and returns its zero / one / few-shot table as text.

    Args:
        workdir: a run directory written by ``lmjax train`` (see
            :func:`lmjax.train.trained_run.load_trained_run`).
        shots, num_examples, seed: as :func:`few_shot_table`.
        tasks: the tasks; None = :func:`default_few_shot_tasks` of the embedded corpus with
            ``passage_words`` words per passage (None: ``max_len // 12`` between 8 and 48, so
            a 128-position model still sees a demonstration or two and a 2048-position one
            sees K of them).
        free_form_decoder: ``'beam'`` or ``'greedy'``.
        batch_size: rows per forward pass.
    """
    # Imported here: lmjax.train imports lmjax.eval, so a top-level import would be circular.
    from lmjax.train.trained_run import load_trained_run

    run = load_trained_run(workdir)
    objective = run.config.get("objective", {}).get("name", "")
    if objective != "causal_lm":
        raise ValueError(
            f"{workdir} trained a {run.config.model.family!r} model with the {objective!r} "
            "objective; in-context evaluation scores language models trained with 'causal_lm' "
            "(the GPT experiments)."
        )
    trained_len = run.config.get("data", {}).get("seq_len")  # rows the positions learned
    if tasks is None:
        if passage_words is None:
            context = min(filter(None, (model_max_len(run.model), trained_len)), default=1024)
            passage_words = max(8, min(48, context // 12))
        tasks = default_few_shot_tasks(passage_words=passage_words)
    rows = few_shot_table(
        run.model, run.params, run.tokenizer, tasks, shots, num_examples, seed,
        batch_size=batch_size, free_form_decoder=free_form_decoder, context_len=trained_len,
    )
    title = (
        f"few-shot evaluation of {run.workdir} (step {run.step}); seed {seed}, "
        f"{free_form_decoder} decoding for free-form answers"
    )
    return title + "\n\n" + format_table(rows)
