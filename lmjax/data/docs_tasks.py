"""Offline fine-tuning tasks with real labels, built from the embedded Python-docs corpus.

Nothing is downloaded: the passages are windows of the standard-library documentation that ships
with Python (``lmjax.data.python_docs``), and every label is a fact about where a passage comes
from, never a human annotation the text could contradict:

- ``docs_package`` (single-text classification, 8 classes): which standard-library package a
  passage documents (``email``, ``asyncio``, ...). The label is the top directory of the module's
  file; the module name itself (the document's first line) is cut off.
- ``docs_consecutive`` (sentence pair, 2 classes, like BERT's next-sentence task): does passage
  B directly follow passage A in the same module (1), or is it a passage of another module (0)?
- ``docs_continuation`` (multiple choice, 4 choices, like SWAG / ROCStories): which of four
  passages continues the context passage? The distractors come from other modules.

Passages are split **by module** (a stable hash of the module's file name): a held-out passage
never sits next to a training passage, and distractors come from the same side of the split as
the example. The classes of ``docs_package`` are the packages with the most documented modules
that have modules on both sides; the majority class is the baseline to beat (the metrics print
it beside the score).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Iterable, Sequence

import numpy as np

from lmjax.data.package_passages import package_of
from lmjax.data.splits import unit_interval_hash
from lmjax.data.task_examples import TextExample

__all__ = ["DOCS_TASKS", "DocsTask", "docs_task", "embedded_documents", "module_passages"]

DOCS_TASKS = ("docs_package", "docs_consecutive", "docs_continuation")
TRAIN, VALIDATION = "train", "validation"
_CHOICES = 4


@dataclasses.dataclass(frozen=True)
class DocsTask:
    """One offline task: its examples per split and what the labels mean.

    Attributes:
        name: one of ``DOCS_TASKS``.
        kind: ``'classification'`` or ``'multiple_choice'``.
        label_names: the class names (for multiple choice: ``'choice 0'`` ...).
        splits: ``{'train': [...], 'validation': [...]}`` of ``TextExample``.
    """

    name: str
    kind: str
    label_names: tuple[str, ...]
    splits: dict[str, list[TextExample]]


@functools.lru_cache(maxsize=1)
def embedded_documents() -> tuple[tuple[str, str], ...]:
    """Every ``(source name, text)`` document of the embedded Python-docs corpus (read once)."""
    from lmjax.data.python_docs import python_docs_documents

    return tuple(python_docs_documents())


def _split_of_module(module: str, validation_fraction: float) -> str:
    return VALIDATION if unit_interval_hash(module) < validation_fraction else TRAIN


def module_passages(text: str, words_per_passage: int, max_passages: int) -> list[str]:
    """Consecutive passages of ``words_per_passage`` whitespace words of one module's text.

    The first line (``Module <dotted name>``) is dropped: it would name the package. A tail
    shorter than a quarter passage is dropped too.
    """
    body = text.split("\n", 1)[1] if "\n" in text else ""
    words = body.split()
    passages = []
    for start in range(0, len(words), words_per_passage):
        piece = words[start : start + words_per_passage]
        if len(piece) < max(1, words_per_passage // 4) or len(passages) == max_passages:
            break
        passages.append(" ".join(piece))
    return passages


def _modules_by_split(
    documents: Iterable[tuple[str, str]], words_per_passage: int, max_passages: int,
    validation_fraction: float,
) -> dict[str, dict[str, list[str]]]:
    """``{split: {module source name: [passage, ...]}}`` over the package modules."""
    by_split: dict[str, dict[str, list[str]]] = {TRAIN: {}, VALIDATION: {}}
    for source, text in sorted(documents):
        if package_of(source) is None:
            continue
        passages = module_passages(text, words_per_passage, max_passages)
        if passages:
            by_split[_split_of_module(source, validation_fraction)][source] = passages
    return by_split


def _package_examples(modules: dict[str, dict[str, list[str]]], num_classes: int):
    counts = {
        split: collections.Counter(package_of(m) for m in split_modules)
        for split, split_modules in modules.items()
    }
    both = [p for p in counts[TRAIN] if counts[VALIDATION][p]]
    if len(both) < num_classes:
        raise ValueError(
            f"only {len(both)} packages have modules in both splits; ask for num_classes <= "
            f"{len(both)}."
        )
    total = counts[TRAIN] + counts[VALIDATION]
    packages = tuple(sorted(both, key=lambda p: (-total[p], p))[:num_classes])
    splits = {
        split: [
            TextExample(texts=(passage,), label=packages.index(package_of(module)),
                        uid=f"{module}#{index}")
            for module, passages in split_modules.items() if package_of(module) in packages
            for index, passage in enumerate(passages)
        ]
        for split, split_modules in modules.items()
    }
    return packages, splits


def _other_module_passage(rng, split_modules: dict[str, list[str]], names: Sequence[str],
                          module: str) -> str:
    while True:
        other = names[rng.integers(len(names))]
        if other != module:
            passages = split_modules[other]
            return passages[rng.integers(len(passages))]


def _pair_examples(split_modules: dict[str, list[str]], rng) -> list[TextExample]:
    names = sorted(split_modules)
    examples = []
    for module in names:
        passages = split_modules[module]
        for index in range(len(passages) - 1):
            follows = bool(rng.integers(2))
            second = (passages[index + 1] if follows
                      else _other_module_passage(rng, split_modules, names, module))
            examples.append(TextExample(texts=(passages[index], second), label=int(follows),
                                        uid=f"{module}#{index}"))
    return examples


def _choice_examples(split_modules: dict[str, list[str]], rng) -> list[TextExample]:
    names = sorted(split_modules)
    examples = []
    for module in names:
        passages = split_modules[module]
        for index in range(len(passages) - 1):
            choices = [_other_module_passage(rng, split_modules, names, module)
                       for _ in range(_CHOICES - 1)]
            label = int(rng.integers(_CHOICES))
            choices.insert(label, passages[index + 1])
            examples.append(TextExample(texts=(passages[index],), label=label,
                                        choices=tuple(choices), uid=f"{module}#{index}"))
    return examples


def docs_task(
    name: str,
    documents: Iterable[tuple[str, str]] | None = None,
    *,
    words_per_passage: int = 48,
    max_passages_per_module: int = 24,
    num_classes: int = 8,
    validation_fraction: float = 0.3,
    seed: int = 0,
) -> DocsTask:
    """Builds an offline task from ``(source name, text)`` corpus documents.

    Args:
        name: one of ``DOCS_TASKS``.
        documents: the corpus; default: every document of the embedded Python-docs corpus.
        words_per_passage: passage length in whitespace words (a 128-token encoder row holds
            about one 48-word passage of this corpus, or two of 24 words).
        max_passages_per_module: at most this many passages from one module, so that the
            largest packages do not swamp the rest.
        num_classes: ``docs_package``'s number of packages.
        validation_fraction: the share of modules held out.
        seed: fixes the pairings and distractors (the examples are the same on every machine).

    Raises:
        ValueError: for an unknown name or impossible sizes.
    """
    if name not in DOCS_TASKS:
        raise ValueError(f"unknown offline task {name!r}; the docs tasks are {DOCS_TASKS}.")
    if words_per_passage < 4 or max_passages_per_module < 2:
        raise ValueError(
            f"words_per_passage={words_per_passage} (>= 4) and max_passages_per_module="
            f"{max_passages_per_module} (>= 2) are too small to build passages."
        )
    if documents is None:
        documents = embedded_documents()
    modules = _modules_by_split(documents, words_per_passage, max_passages_per_module,
                                validation_fraction)
    if name == "docs_package":
        packages, splits = _package_examples(modules, num_classes)
        return DocsTask(name, "classification", packages, splits)
    rng = np.random.default_rng(seed)
    if name == "docs_consecutive":
        splits = {split: _pair_examples(m, rng) for split, m in modules.items()}
        return DocsTask(name, "classification", ("other module", "follows"), splits)
    splits = {split: _choice_examples(m, rng) for split, m in modules.items()}
    return DocsTask(name, "multiple_choice", tuple(f"choice {i}" for i in range(_CHOICES)), splits)
