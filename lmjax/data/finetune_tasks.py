"""The tasks ``lmjax finetune`` trains on, by name: the offline docs tasks and TFDS GLUE.

``load_task(task_cfg)`` returns a ``FinetuneTask``: the examples of the training and evaluation
splits, what kind of head they need and how predictions are scored. Names:

- ``docs_package``, ``docs_consecutive``, ``docs_continuation``: built from the embedded corpus
  (``lmjax.data.docs_tasks``), no download; scored by accuracy beside the majority-class share.
- ``glue/<config>`` (``glue/sst2``, ``glue/mnli``, ...): TFDS GLUE from a prepared
  ``task.data_dir`` (``lmjax.data.glue``), scored as the GLUE scorer does
  (``lmjax.eval.glue_metrics``).

``task.encode(examples, tokenizer, fmt, training)`` turns examples into model rows in the
backbone's format (``lmjax.data.task_inputs``: BERT segments or GPT-1's transform; similarity
tasks get both orderings under GPT-1) and says how to score the model's outputs on them.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lmjax.data.task_examples import NO_LABEL, TextExample
from lmjax.data.task_inputs import EncoderFormat, GPT1Format, encoder_inputs, gpt1_inputs
from lmjax.data.tokenizers import Tokenizer

__all__ = [
    "EncodedSplit", "FinetuneTask", "load_task", "predictions_of",
    "text_task_encoder",
]

Scorer = Callable[[np.ndarray, np.ndarray], dict[str, float]]


@dataclasses.dataclass(frozen=True)
class EncodedSplit:
    """A split's model rows and how to score the model's outputs on them.

    Attributes:
        arrays: the rows (``lmjax.data.task_inputs`` keys, or a span task's feature keys), each
            with ``'example_weights'``.
        score: ``score(outputs) -> {metric: value}`` from the model's outputs on every row, in
            order (numpy, padding rows removed).
    """

    arrays: dict[str, np.ndarray]
    score: Callable[[dict[str, np.ndarray]], dict[str, float]]


@dataclasses.dataclass(frozen=True)
class FinetuneTask:
    """A task ready for fine-tuning.

    Attributes:
        name: the task's name (``docs_package``, ``glue/sst2``, ...).
        head: the head it needs (``lmjax.models.heads.HEADS``): ``'classification'``,
            ``'regression'``, ``'multiple_choice'`` or ``'span'``.
        label_names: class names (empty for regression and span tasks).
        symmetric: a sentence-pair task without a natural order (GPT-1 feeds both orderings).
        train / evaluation: the examples of the training and the evaluation split.
        main_metric: the key of the scores that picks the best epoch.
        encode: ``encode(examples, tokenizer, fmt, training) -> EncodedSplit``.
    """

    name: str
    head: str
    label_names: tuple[str, ...]
    symmetric: bool
    train: list[Any]
    evaluation: list[Any]
    main_metric: str
    encode: Callable[[Sequence[Any], Tokenizer, Any, bool], EncodedSplit]

    @property
    def num_labels(self) -> int:
        """Output width of the head: classes, or 1 for the other heads."""
        return len(self.label_names) if self.head == "classification" else 1


def predictions_of(head: str, outputs: dict[str, np.ndarray]) -> np.ndarray:
    """The predicted label (class, choice) or value (regression) of each row."""
    if head == "regression":
        return np.asarray(outputs["prediction"], np.float32)
    logits = outputs["choice_logits"] if head == "multiple_choice" else outputs["class_logits"]
    return np.argmax(np.asarray(logits), axis=-1)


def text_task_encoder(head: str, symmetric: bool, scorer: Scorer):
    """``encode`` of a task of ``TextExample``s: the backbone's format, scored by ``scorer``
    on the predicted labels."""

    def encode(examples: Sequence[TextExample], tokenizer: Tokenizer,
               fmt: EncoderFormat | GPT1Format, training: bool) -> EncodedSplit:
        if isinstance(fmt, GPT1Format):
            arrays = gpt1_inputs(examples, tokenizer, fmt, both_orderings=symmetric)
        else:
            arrays = encoder_inputs(examples, tokenizer, fmt)
        labels = arrays["labels"]
        return EncodedSplit(arrays, lambda outputs: scorer(predictions_of(head, outputs), labels))

    return encode


def _accuracy_scorer(train_labels: Sequence[int]) -> Scorer:
    """Accuracy, and (for reference) the accuracy of the training split's majority class."""
    majority = collections.Counter(int(label) for label in train_labels).most_common(1)[0][0]

    def score(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        labels = np.asarray(labels)
        return {
            "accuracy": float(np.mean(np.asarray(predictions) == labels)),
            "majority_baseline": float(np.mean(labels == majority)),
        }

    return score


def _docs_task(task_cfg: Any) -> FinetuneTask:
    from lmjax.data.docs_tasks import docs_task

    task = docs_task(
        task_cfg.name,
        words_per_passage=task_cfg.get("words_per_passage", 48),
        seed=task_cfg.get("seed", 0),
    )
    train = task.splits["train"]
    head = "multiple_choice" if task.kind == "multiple_choice" else "classification"
    scorer = _accuracy_scorer([e.label for e in train])
    return FinetuneTask(
        name=task.name, head=head, label_names=task.label_names, symmetric=False,
        train=train, evaluation=task.splits["validation"], main_metric="accuracy",
        encode=text_task_encoder(head, False, scorer),
    )


def _glue_task(task_cfg: Any) -> FinetuneTask:
    from lmjax.data import glue
    from lmjax.eval.glue_metrics import glue_scores

    config_name = task_cfg.name.split("/", 1)[1]
    if config_name not in glue.GLUE_TASKS:
        raise ValueError(
            f"unknown GLUE task {task_cfg.name!r}; choose glue/<one of {sorted(glue.GLUE_TASKS)}>."
        )
    spec = glue.GLUE_TASKS[config_name]
    train_split = task_cfg.get("train_split") or "train"
    eval_split = task_cfg.get("eval_split") or ("validation_matched" if config_name == "mnli"
                                                 else "validation")
    train = glue.glue_examples(config_name, train_split, task_cfg.data_dir)
    evaluation = glue.glue_examples(config_name, eval_split, task_cfg.data_dir)
    if any(e.label == NO_LABEL for e in evaluation):
        raise ValueError(
            f"task.eval_split={eval_split!r} of {task_cfg.name} has no labels (a test split); "
            "evaluate on a validation split."
        )

    def score(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return glue_scores(config_name, predictions, labels)

    head = "regression" if spec.is_regression else "classification"
    return FinetuneTask(
        name=task_cfg.name, head=head,
        label_names=() if spec.is_regression else tuple(spec.label_names),
        symmetric=spec.symmetric, train=train, evaluation=evaluation, main_metric="score",
        encode=text_task_encoder(head, spec.symmetric, score),
    )


def load_task(task_cfg: Any) -> FinetuneTask:
    """The task named by ``task_cfg.name`` (a ConfigDict or dict: name, data_dir, ...).

    ``max_train_examples`` / ``max_eval_examples`` (0 = all) keep a fixed random subset of each
    split (the same on every machine), for quick runs.

    Raises:
        ValueError: for an unknown name (listing the known ones) or an unlabelled eval split.
    """
    from lmjax.data.docs_tasks import DOCS_TASKS

    name = task_cfg.name
    if name in DOCS_TASKS:
        task = _docs_task(task_cfg)
    elif name.startswith("glue/"):
        task = _glue_task(task_cfg)
    elif name.startswith("squad/"):
        from lmjax.data.squad_task import squad_task
        task = squad_task(task_cfg)
    else:
        raise ValueError(_unknown_task_message(name))
    return dataclasses.replace(
        task, train=_subset(task.train, task_cfg.get("max_train_examples", 0)),
        evaluation=_subset(task.evaluation, task_cfg.get("max_eval_examples", 0)))


def _subset(examples: list[TextExample], limit: int) -> list[TextExample]:
    """At most ``limit`` examples (0 = all), drawn with a fixed seed, in their original order."""
    if not limit or limit >= len(examples):
        return examples
    keep = np.sort(np.random.default_rng(0).permutation(len(examples))[:limit])
    return [examples[i] for i in keep]


def _unknown_task_message(name: str) -> str:
    from lmjax.data.docs_tasks import DOCS_TASKS

    return (
        f"unknown fine-tuning task {name!r}; use one of {', '.join(DOCS_TASKS)} (offline) or "
        "glue/<config> (TFDS GLUE prepared in task.data_dir)."
    )
