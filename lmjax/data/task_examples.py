"""The examples of fine-tuning and evaluation tasks, as plain text, before any tokenizer sees them.

Every reader (TFDS GLUE and SQuAD, the offline tasks built from the embedded corpus) yields these,
and every input format (BERT segments, GPT-1's start / delimiter / extract transform, SQuAD
windows) consumes them, so a task and a model meet in one place.

- ``TextExample``: one text (single-sentence classification), two texts (a sentence pair:
  premise / hypothesis, question / sentence, ...), or a context with ``choices`` (multiple
  choice). ``label`` is a class index, a float score (STS-B) or the index of the right choice;
  ``NO_LABEL`` marks unlabelled examples (GLUE test splits).
- ``SquadExample``: a question about a context with its gold answers as character spans; no
  answers means unanswerable (SQuAD 2.0).
"""

from __future__ import annotations

import dataclasses

__all__ = ["NO_LABEL", "SquadExample", "TextExample"]

NO_LABEL = -1  # GLUE test splits (and AX) publish no labels; TFDS stores -1 there too.


@dataclasses.dataclass(frozen=True)
class TextExample:
    """A classification, regression, sentence-pair or multiple-choice example.

    Attributes:
        texts: one text, or two for a sentence pair; for multiple choice the shared context
            (one text, or two when the choices complete a second segment).
        label: class index, float score (regression), index into ``choices``, or ``NO_LABEL``.
        choices: the candidate endings of a multiple-choice example (empty otherwise).
        uid: the example's id in its source (TFDS ``idx``, a corpus path, ...).
    """

    texts: tuple[str, ...]
    label: int | float
    choices: tuple[str, ...] = ()
    uid: str = ""

    def __post_init__(self):
        if not 1 <= len(self.texts) <= 2:
            raise ValueError(f"a TextExample has one or two texts, got {len(self.texts)}.")
        if self.choices and isinstance(self.label, int) and not (
            self.label == NO_LABEL or 0 <= self.label < len(self.choices)
        ):
            raise ValueError(
                f"label {self.label} is not an index into the {len(self.choices)} choices."
            )


@dataclasses.dataclass(frozen=True)
class SquadExample:
    """An extractive question-answering example (SQuAD 1.1 / 2.0 format).

    Attributes:
        uid: the question id (the key of the official prediction file).
        question: the question text.
        context: the paragraph the answer is a span of.
        answers: gold answer texts; empty = unanswerable (SQuAD 2.0). Duplicates are kept, as
            the official data has them.
        answer_starts: character offset of each answer in ``context`` (a few official answers
            do not match the context exactly there; the feature builder skips those for
            training, as BERT's ``run_squad.py`` does, and still scores against them).
        title: the article title (not used by the models).
    """

    uid: str
    question: str
    context: str
    answers: tuple[str, ...] = ()
    answer_starts: tuple[int, ...] = ()
    title: str = ""

    def __post_init__(self):
        if len(self.answers) != len(self.answer_starts):
            raise ValueError(
                f"example {self.uid!r}: {len(self.answers)} answers but "
                f"{len(self.answer_starts)} answer_starts."
            )

    @property
    def is_impossible(self) -> bool:
        """True for an unanswerable question (SQuAD 2.0)."""
        return not self.answers
