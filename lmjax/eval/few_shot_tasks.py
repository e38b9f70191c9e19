"""Offline few-shot tasks built from the embedded Python-docs corpus, and their prompts.

GPT-3 evaluates "in context": a task is shown to the model as K solved examples followed by an
unsolved one (Brown et al. 2020, section 2, Figure 2.1). Each task here is a train split (where
demonstrations are drawn from), a test split, and a prompt format
(``format_example(example, with_answer)``); :mod:`lmjax.eval.few_shot` runs the protocol.

Two formats, as in GPT-3's evaluation (section 2.4):

* **multiple choice** (:class:`MultipleChoiceTask`): examples are
  :class:`lmjax.data.task_examples.TextExample` with ``texts=(context,)``, the candidate
  completions in ``choices`` and the index of the right one in ``label``. The task also names the
  "answer context" whose likelihood normalises a completion's (GPT-3's ``P(completion | context) /
  P(completion | "Answer: ")``, used for ARC, OpenBookQA and RACE).
* **free-form** (:class:`FreeFormTask`): examples are :class:`FreeFormExample` (a prompt and its
  gold answers); the model's decoded answer, cut at the first newline, is scored by exact match.

The tasks (documents are ``(source name, text)`` pairs from
:func:`lmjax.data.python_docs.python_docs_documents`):

* ``package`` (multiple choice): which standard-library package does this passage document? The
  label is the top directory of the module's source path (the ``docs_package`` fine-tuning task
  of :mod:`lmjax.data.docs_tasks`), which the passage text does not state; the choices are the
  task's packages.
* ``continuation`` (multiple choice, like GPT-3's StoryCloze / HellaSwag): which of four
  passages continues this one (``docs_continuation``: the distractors are passages of other
  modules).
* ``last word`` (free-form, LAMBADA-style; Paperno et al. 2016): the final word of a docs
  sentence, given the words before it. The target is a real word of the text.

Splits are **held out by module**: a stable hash of the document name decides, so all passages
of a module are demonstrations or all are test examples, and no test passage has a neighbour
among the demonstrations. Passages are flattened to single spaces: newlines separate
demonstrations and end free-form answers, so they never occur inside an example.

Prompts (GPT-3 section 2.4): :func:`fitted_prompt` draws K demonstrations for a test example
(:func:`demonstration_indices`, seeded by ``(seed, test index)``), joins them with their answers
and the test example without (:func:`prompt_text`), and drops demonstrations from the front
until the prompt fits the model; the test example is never cut.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Optional, Union

import numpy as np

from lmjax.data.docs_tasks import DocsTask, docs_task
from lmjax.data.splits import unit_interval_hash
from lmjax.data.task_examples import TextExample
from lmjax.decoding.text import TextTokenizer

__all__ = [
    "FewShotPrompt",
    "FewShotTask",
    "FreeFormExample",
    "FreeFormTask",
    "MultipleChoiceTask",
    "continuation_choice_task",
    "default_few_shot_tasks",
    "demonstration_indices",
    "fitted_prompt",
    "last_word_task",
    "package_choice_task",
    "prompt_text",
]

Documents = Iterable[tuple[str, str]]
_TRAIN, _HELD_OUT = "train", "validation"  # the split names of lmjax.data.docs_tasks


@dataclasses.dataclass(frozen=True)
class FreeFormExample:
    """A free-form question: a prompt ending in the answer cue, and its gold answers.

    Attributes:
        prompt: the formatted example without its answer (e.g. ``"Passage: ... ___.\\nAnswer:"``);
            no newline inside the question part of the text.
        answers: the gold answers (the first is the one shown in demonstrations).
        uid: the example's id in its source.
    """

    prompt: str
    answers: tuple[str, ...]
    uid: str = ""

    def __post_init__(self):
        if not self.answers or any(not a.strip() or "\n" in a for a in self.answers):
            raise ValueError(
                f"example {self.uid!r}: answers must be non-empty single-line strings, got "
                f"{self.answers!r}."
            )


def _checked_splits(name: str, train: Sequence, test: Sequence, kind: type) -> None:
    if not test:
        raise ValueError(f"task {name!r} has no test examples; build it from more documents.")
    for split, examples in (("train", train), ("test", test)):
        wrong = [type(e).__name__ for e in examples if not isinstance(e, kind)]
        if wrong:
            raise ValueError(
                f"task {name!r}: the {split} split holds {wrong[0]}, expected {kind.__name__}."
            )


@dataclasses.dataclass(frozen=True)
class MultipleChoiceTask:
    """A multiple-choice task: pick the completion of a context the model finds likeliest.

    Attributes:
        name: the task's name in the results table.
        train: demonstrations are drawn from here (may be empty: then from ``test``, never the
            example being answered, as GPT-3 does for tasks without a training set).
        test: the evaluated examples: ``TextExample(texts=(context,), choices, label)``.
        unconditional_context: the "answer context" of unconditional normalisation (GPT-3:
            ``"Answer:"``, with completions starting with a space).
        separator: what joins demonstrations and the test example (GPT-3: one or two newlines).
    """

    name: str
    train: tuple[TextExample, ...]
    test: tuple[TextExample, ...]
    unconditional_context: str = "Answer:"
    separator: str = "\n\n"
    format: ClassVar[str] = "multiple choice"

    def __post_init__(self):
        _checked_splits(self.name, self.train, self.test, TextExample)
        for example in self.train + self.test:
            if len(example.texts) != 1 or not example.choices:
                raise ValueError(
                    f"task {self.name!r}: example {example.uid!r} needs texts=(context,) and "
                    "choices."
                )
            if not isinstance(example.label, int) or not 0 <= example.label < len(
                example.choices
            ):
                raise ValueError(
                    f"task {self.name!r}: example {example.uid!r} has label {example.label!r}; "
                    "few-shot evaluation needs the index of the right choice."
                )
        if not self.unconditional_context:
            raise ValueError(f"task {self.name!r}: unconditional_context must not be empty.")

    def format_example(self, example: TextExample, with_answer: bool) -> str:
        """Returns the context, followed by the right completion when ``with_answer``."""
        context = example.texts[0]
        return context + example.choices[example.label] if with_answer else context


@dataclasses.dataclass(frozen=True)
class FreeFormTask:
    """A free-form task: the model writes the answer, scored by exact match.

    Attributes:
        name: the task's name in the results table.
        train: demonstrations are drawn from here (may be empty: then from ``test``).
        test: the evaluated examples.
        separator: what joins demonstrations and the test example.
        answer_separator: what joins a prompt and its answer in a demonstration.
        max_answer_tokens: how many tokens the decoder may write.
    """

    name: str
    train: tuple[FreeFormExample, ...]
    test: tuple[FreeFormExample, ...]
    separator: str = "\n\n"
    answer_separator: str = " "
    max_answer_tokens: int = 8
    format: ClassVar[str] = "free-form"

    def __post_init__(self):
        _checked_splits(self.name, self.train, self.test, FreeFormExample)
        if self.max_answer_tokens < 1:
            raise ValueError(
                f"task {self.name!r}: max_answer_tokens={self.max_answer_tokens} must be >= 1."
            )

    def format_example(self, example: FreeFormExample, with_answer: bool) -> str:
        """Returns the prompt, followed by the first gold answer when ``with_answer``."""
        if not with_answer:
            return example.prompt
        return example.prompt + self.answer_separator + example.answers[0]


FewShotTask = Union[MultipleChoiceTask, FreeFormTask]


def _held_out(name: str, test_fraction: float) -> bool:
    """Whether document ``name`` belongs to the test split (a stable hash of the name)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction} must be in (0, 1), e.g. 0.3.")
    return unit_interval_hash(name) < test_fraction


def _body_words(text: str) -> list[str]:
    """The words of a corpus document after its ``Module <name>`` first line."""
    body = text.split("\n", 1)[1] if text.startswith("Module ") and "\n" in text else text
    return body.split()


def _few_shot_splits(task: DocsTask) -> tuple[list, list]:
    return task.splits[_TRAIN], task.splits[_HELD_OUT]


def package_choice_task(
    documents: Documents,
    *,
    num_packages: int = 4,
    passage_words: int = 32,
    passages_per_module: int = 2,
    test_fraction: float = 0.3,
    name: str = "package",
) -> MultipleChoiceTask:
    """Builds "which package does this passage document" from corpus documents.

    The passages, labels and module split are those of the ``docs_package`` fine-tuning task
    (:func:`lmjax.data.docs_tasks.docs_task`: the ``num_packages`` packages with the most
    documented modules on both sides of the split, up to ``passages_per_module`` windows of
    ``passage_words`` words per module). Each becomes ``"Passage: <words>\\nPackage:"`` with
    choices ``" <package>"``; words naming the package (``distutils.archive_util``, the first
    word of some docstrings) are left out, so the label is not spelled in the passage.

    Raises:
        ValueError: when fewer than ``num_packages`` packages are usable (``num_packages`` < 2
            is rejected too: a single choice is no task).
    """
    if num_packages < 2:
        raise ValueError(f"num_packages={num_packages} must be >= 2.")
    task = docs_task(
        "docs_package", list(documents), words_per_passage=passage_words,
        max_passages_per_module=max(2, passages_per_module), num_classes=num_packages,
        validation_fraction=test_fraction,
    )
    packages = task.label_names
    choices = tuple(" " + package for package in packages)

    def example(passage: TextExample) -> TextExample:
        package = packages[passage.label]
        words = [w for w in passage.texts[0].split() if package not in w.lower()]
        return TextExample(
            texts=(f"Passage: {' '.join(words)}\nPackage:",),
            label=passage.label,
            choices=choices,
            uid=passage.uid,
        )

    def kept(passage: TextExample) -> bool:
        return int(passage.uid.rsplit("#", 1)[1]) < passages_per_module

    train, test = _few_shot_splits(task)
    return MultipleChoiceTask(
        name=name,
        train=tuple(example(e) for e in train if kept(e)),
        test=tuple(example(e) for e in test if kept(e)),
    )


def continuation_choice_task(
    documents: Documents,
    *,
    passage_words: int = 16,
    passages_per_module: int = 3,
    test_fraction: float = 0.3,
    seed: int = 0,
    name: str = "continuation",
) -> MultipleChoiceTask:
    """Builds "which of four passages continues this one" from corpus documents.

    The examples are those of the ``docs_continuation`` fine-tuning task
    (:func:`lmjax.data.docs_tasks.docs_task`): the true next passage of the same module among
    three passages of other modules from the same split. Each becomes ``"Passage: <words>\\n
    Continuation:"`` with choices ``" <passage>"``. The continuation is long, so GPT-3's
    per-token or unconditional normalisation matters most here.
    """
    task = docs_task(
        "docs_continuation", list(documents), words_per_passage=passage_words,
        max_passages_per_module=max(2, passages_per_module), validation_fraction=test_fraction,
        seed=seed,
    )

    def example(passage: TextExample) -> TextExample:
        return TextExample(
            texts=(f"Passage: {passage.texts[0]}\nContinuation:",),
            label=passage.label,
            choices=tuple(" " + choice for choice in passage.choices),
            uid=passage.uid,
        )

    train, test = _few_shot_splits(task)
    return MultipleChoiceTask(
        name=name,
        train=tuple(example(e) for e in train),
        test=tuple(example(e) for e in test),
    )


# A sentence-final word: letters only (no code, numbers or abbreviations like "e.g."), then a
# full stop.
_FINAL_WORD = re.compile(r"^([A-Za-z]{3,})\.$")


def last_word_task(
    documents: Documents,
    *,
    context_words: int = 24,
    targets_per_document: int = 2,
    test_fraction: float = 0.3,
    name: str = "last word",
) -> FreeFormTask:
    """Builds a LAMBADA-style task: the last word of a docs sentence, given the words before it.

    A target is a word of 3+ letters ending a sentence (``word.``) with at least
    ``context_words`` words before it in its document; the prompt is those words, a blank and
    the cue: ``"Passage: <context> ___.\\nLast word:"``, answer ``"<word>"``. Targets of a
    document are at least ``context_words`` words apart, so their contexts do not overlap.
    Every document of the corpus takes part (the language-reference topics too), split by name.
    """
    if context_words < 1 or targets_per_document < 1:
        raise ValueError(
            f"context_words={context_words} and targets_per_document={targets_per_document} "
            "must be >= 1."
        )
    splits: dict[bool, list[FreeFormExample]] = {False: [], True: []}
    for source, text in documents:
        words = _body_words(text)
        taken, last = 0, -context_words
        for position in range(context_words, len(words)):
            if taken == targets_per_document:
                break
            match = _FINAL_WORD.match(words[position])
            if match is None or position - last < context_words:
                continue
            context = " ".join(words[position - context_words : position])
            splits[_held_out(source, test_fraction)].append(
                FreeFormExample(
                    prompt=f"Passage: {context} ___.\nLast word:",
                    answers=(match.group(1),),
                    uid=f"{source}@{position}",
                )
            )
            taken, last = taken + 1, position
    return FreeFormTask(name=name, train=tuple(splits[False]), test=tuple(splits[True]))


def default_few_shot_tasks(
    documents: Documents | None = None, *, passage_words: int = 24
) -> tuple[FewShotTask, ...]:
    """Returns the default task set: ``package`` and ``continuation`` (multiple choice) and
    ``last word`` (free-form).

    Args:
        documents: ``(source name, text)`` pairs; None reads the embedded corpus
            (:func:`lmjax.data.docs_tasks.embedded_documents`, ~3 s the first time).
        passage_words: words per passage / context (the continuation task uses half, since it
            shows two passages); lower it for models with few positions.
    """
    if documents is None:
        from lmjax.data.docs_tasks import embedded_documents

        documents = embedded_documents()
    documents = list(documents)
    return (
        package_choice_task(documents, passage_words=passage_words),
        continuation_choice_task(documents, passage_words=max(4, passage_words // 2)),
        last_word_task(documents, context_words=passage_words),
    )


# --- Prompts ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FewShotPrompt:
    """One test example's prompt.

    Attributes:
        text: the demonstrations (with answers), separators and the test example (without).
        demonstrations: indices into the demonstration pool, in prompt order.
        requested: K, the demonstrations asked for; ``requested - len(demonstrations)`` were
            dropped to fit the model.
    """

    text: str
    demonstrations: tuple[int, ...]
    requested: int

    @property
    def dropped(self) -> int:
        """How many demonstrations were dropped from the front to fit the model."""
        return self.requested - len(self.demonstrations)


def _demonstration_pool(task: FewShotTask) -> tuple:
    """The training split, or the test split when the task has no training split."""
    return task.train if task.train else task.test


def _same_example(a: Any, b: Any) -> bool:
    return a == b or bool(a.uid and a.uid == b.uid)


def demonstration_indices(
    task: FewShotTask, test_index: int, shots: int, seed: int
) -> tuple[int, ...]:
    """Returns ``shots`` pool indices drawn at random for test example ``test_index``.

    The draw is a permutation seeded by ``(seed, test_index)``, so fewer shots take a prefix of
    the same draw. Pool examples equal to (or with the uid of) the test example are skipped.

    Raises:
        ValueError: when the pool has fewer than ``shots`` other examples.
    """
    if shots < 0:
        raise ValueError(f"shots={shots} must be >= 0.")
    if shots == 0:
        return ()
    pool = _demonstration_pool(task)
    example = task.test[test_index]
    order = np.random.default_rng([seed, test_index]).permutation(len(pool))
    chosen = [int(i) for i in order if not _same_example(pool[i], example)][:shots]
    if len(chosen) < shots:
        raise ValueError(
            f"task {task.name!r} has only {len(chosen)} demonstrations for its test example "
            f"{test_index}; ask for at most {len(chosen)} shots."
        )
    return tuple(chosen)


def prompt_text(task: FewShotTask, demonstrations: Sequence[Any], example: Any) -> str:
    """Returns the demonstrations with answers and ``example`` without, joined by
    ``task.separator``."""
    parts = [task.format_example(d, with_answer=True) for d in demonstrations]
    parts.append(task.format_example(example, with_answer=False))
    return task.separator.join(parts)


def fitted_prompt(
    task: FewShotTask,
    tokenizer: TextTokenizer,
    test_index: int,
    shots: int,
    seed: int,
    max_tokens: Optional[int],
) -> FewShotPrompt:
    """Returns the K-shot prompt of test example ``test_index``, at most ``max_tokens`` tokens.

    Demonstrations are dropped from the front until the encoded prompt fits.

    Raises:
        ValueError: when the test example alone takes more than ``max_tokens`` tokens.
    """
    pool = _demonstration_pool(task)
    example = task.test[test_index]
    indices = demonstration_indices(task, test_index, shots, seed)
    while True:
        text = prompt_text(task, [pool[i] for i in indices], example)
        length = len(tokenizer.encode(text))
        if max_tokens is None or length <= max_tokens:
            return FewShotPrompt(text=text, demonstrations=indices, requested=shots)
        if not indices:
            raise ValueError(
                f"task {task.name!r}: test example {test_index} ({example.uid!r}) alone takes "
                f"{length} tokens, more than the {max_tokens} the model leaves for a prompt; "
                "build the task with shorter passages (e.g. passage_words=16) or use a model "
                "with more positions."
            )
        indices = indices[1:]
