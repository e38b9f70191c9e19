"""GLUE tasks read from a prepared TFDS ``glue/<config>`` dataset, as ``TextExample``s.

``GLUE_TASKS`` describes the nine GLUE tasks and the diagnostic set AX as TFDS 4.9 stores them
(``tensorflow_datasets/text/glue.py``): the text features of each config, its label names (in the
order of the TFDS ``ClassLabel``, so a label index means the same thing here and there), its
splits, and whether it is a regression (STS-B) or a similarity task that GPT-1 reads in both
orders (MRPC, QQP, STS-B; Radford et al. 2018, "Improving Language Understanding by Generative
Pre-Training", section 3.3).

``glue_examples(task, split, data_dir)`` reads a split that was prepared beforehand with::

    tfds build glue/<config> --data_dir=<data_dir> --file_format=array_record

through ``tfds.data_source``, without TensorFlow; nothing is downloaded at run time (DESIGN.md,
"Data"). Test splits (and all of AX) carry ``NO_LABEL``.

TFDS shuffles records by key when it prepares a dataset; the examples come back sorted by their
``idx`` feature, i.e. in the order of the original TSV rows, which is also the order a GLUE test
submission lists them in.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from lmjax.data.sources import diagnosed_tfds_failure, held_log_records, resolved_data_dir
from lmjax.data.task_examples import NO_LABEL, TextExample

__all__ = [
    "GLUE_TASKS",
    "GlueTask",
    "all_records",
    "check_split",
    "decoded_text",
    "glue_examples",
    "glue_task",
    "prepared_tfds_records",
    "record_field",
]

_STANDARD_SPLITS = ("train", "validation", "test")
_MNLI_SPLITS = (
    "train",
    "validation_matched",
    "validation_mismatched",
    "test_matched",
    "test_mismatched",
)
_NLI_LABELS = ("entailment", "neutral", "contradiction")
_SPLIT_NAME = re.compile(r"^\s*([A-Za-z_][\w]*)\s*(\[[^\]]*\])?\s*$")
_READ_CHUNK = 1024  # records fetched per array_record batch read


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """How one GLUE task is stored in TFDS and how fine-tuning should read it.

    Attributes:
        name: the TFDS config (``'sst2'`` is ``glue/sst2``).
        text_keys: the TFDS text features, in input order (first segment, second segment).
        label_names: the ``ClassLabel`` names, index order; empty for a regression task.
        is_regression: the label is a float score (STS-B, 0 to 5), not a class index.
        splits: the TFDS split names of the config.
        symmetric: a similarity task without a natural order of its two texts; GPT-1 encodes
            both orders and adds the two hidden states (GPT-1 paper, section 3.3).
    """

    name: str
    text_keys: tuple[str, ...]
    label_names: tuple[str, ...]
    is_regression: bool = False
    splits: tuple[str, ...] = _STANDARD_SPLITS
    symmetric: bool = False

    def __post_init__(self):
        if not 1 <= len(self.text_keys) <= 2:
            raise ValueError(
                f"GlueTask {self.name!r}: text_keys={self.text_keys!r}; give one text feature "
                "(single sentence) or two (sentence pair)."
            )
        if self.is_regression == bool(self.label_names):
            raise ValueError(
                f"GlueTask {self.name!r}: label_names={self.label_names!r} with "
                f"is_regression={self.is_regression}; a regression task has no label names and "
                "a classification task needs them."
            )
        if not self.splits:
            raise ValueError(f"GlueTask {self.name!r}: splits is empty; list its TFDS splits.")
        if self.symmetric and len(self.text_keys) != 2:
            raise ValueError(
                f"GlueTask {self.name!r}: symmetric=True needs two text_keys, got "
                f"{self.text_keys!r}."
            )

    @property
    def tfds_name(self) -> str:
        """The TFDS dataset name, ``'glue/<config>'``."""
        return f"glue/{self.name}"

    @property
    def num_labels(self) -> int:
        """K of a classification head; 1 (a single score) for a regression task."""
        return 1 if self.is_regression else len(self.label_names)


GLUE_TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        GlueTask("cola", ("sentence",), ("unacceptable", "acceptable")),
        GlueTask("sst2", ("sentence",), ("negative", "positive")),
        GlueTask("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
                 symmetric=True),
        GlueTask("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"),
                 symmetric=True),
        GlueTask("stsb", ("sentence1", "sentence2"), (), is_regression=True, symmetric=True),
        GlueTask("mnli", ("premise", "hypothesis"), _NLI_LABELS, splits=_MNLI_SPLITS),
        GlueTask("qnli", ("question", "sentence"), ("entailment", "not_entailment")),
        GlueTask("rte", ("sentence1", "sentence2"), ("entailment", "not_entailment")),
        GlueTask("wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment")),
        GlueTask("ax", ("premise", "hypothesis"), _NLI_LABELS, splits=("test",)),
    )
}


def glue_task(name: str) -> GlueTask:
    """Returns the ``GLUE_TASKS`` entry of ``name`` (``'sst2'`` or ``'glue/sst2'``).

    Raises:
        ValueError: ``name`` is not a GLUE config; the message lists the known ones.
    """
    key = name[len("glue/"):] if name.startswith("glue/") else name
    if key not in GLUE_TASKS:
        hint = ""
        if key in ("mnli_matched", "mnli_mismatched"):
            hint = f" Use task 'mnli' with split 'validation_{key[5:]}' or 'test_{key[5:]}'."
        raise ValueError(
            f"Unknown GLUE task {name!r}; the known tasks are {sorted(GLUE_TASKS)}.{hint}"
        )
    return GLUE_TASKS[key]


def check_split(dataset: str, splits: Sequence[str], split: str, hint: str = "") -> None:
    """Raises ValueError unless every part of ``split`` (``a+b[:10%]``) names one of ``splits``.

    Args:
        dataset: what the splits belong to, for the message (``"GLUE task 'sst2'"``).
        splits: the split names of the dataset.
        split: the requested TFDS split, slice or sum of them.
        hint: a sentence added to the message.
    """
    for part in split.split("+"):
        match = _SPLIT_NAME.match(part)
        if match is None or match.group(1) not in splits:
            raise ValueError(
                f"Split {split!r} is not a split of {dataset}; its splits are {list(splits)} "
                f"(a TFDS slice such as 'train[:10%]' also works).{' ' + hint if hint else ''}"
            )


# --- Reading prepared TFDS datasets (shared with lmjax.data.squad) ---------------------------


def prepared_tfds_records(name: str, split: str, data_dir: str | None) -> Sequence[dict]:
    """Returns the records of a TFDS dataset prepared in ``data_dir``, opened without TensorFlow.

    The same checks as ``lmjax.data.sources.tfds_documents``, for datasets whose records have
    several fields: nothing is downloaded, and a dataset that is not prepared (in array_record)
    raises an error naming the dataset, the directory and the ``tfds build`` command.

    Args:
        name: e.g. ``'glue/sst2'`` or ``'squad/v2.0'``.
        split: a TFDS split or slice.
        data_dir: where it was prepared; empty means ``$LMJAX_DATA_DIR`` or
            ``~/.cache/lmjax/tensorflow_datasets`` (``lmjax.data.sources.resolved_data_dir``).

    Raises:
        FileNotFoundError: ``data_dir`` does not exist or holds no array_record preparation.
        ValueError: the split is empty.
    """
    import tensorflow_datasets as tfds

    data_dir = resolved_data_dir(data_dir)
    with held_log_records("absl") as tfds_warnings:
        try:
            records = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        except Exception as error:  # tfds raises several unrelated types for "not prepared"
            diagnosed = diagnosed_tfds_failure(
                name, split, data_dir, error, setting="task.data_dir",
                alternative="fine-tune on an offline task instead: task.name='docs_package'")
            if diagnosed is error:
                raise
            tfds_warnings.clear()  # the diagnosis says more than the folders TFDS probed
            raise diagnosed from error
    if len(records) == 0:
        raise ValueError(
            f"TFDS {name!r} split {split!r} in {data_dir!r} has no records; choose a non-empty "
            "split or slice."
        )
    return records


def all_records(records: Sequence[dict]) -> list[dict]:
    """Returns every record of a data source, read in batches where the source allows it.

    Batched ``__getitems__`` reads of array_record are about 3-4x faster than one record at a
    time (measured on 60k SST-2-sized records).
    """
    read_batch = getattr(records, "__getitems__", None)
    if read_batch is not None:
        starts = range(0, len(records), _READ_CHUNK)
        try:
            return [record for start in starts
                    for record in read_batch(list(range(start, min(start + _READ_CHUNK,
                                                                   len(records)))))]
        except TypeError:  # tfds.testing.mock_data installs a __getitems__ that cannot be called
            pass
    return [records[i] for i in range(len(records))]


def decoded_text(value: Any) -> str:
    """Returns a TFDS ``Text`` / string feature value (UTF-8 bytes from a data source) as str."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def record_field(record: dict, key: str, description: str) -> Any:
    """Returns ``record[key]``, or raises a KeyError naming the fields the record does have."""
    if key not in record:
        raise KeyError(
            f"Records of {description} have no field {key!r}; their fields are {sorted(record)}. "
            "Was the dataset prepared by another TFDS version? Rebuild it with this one."
        )
    return record[key]


# --- GLUE -------------------------------------------------------------------------------------


def _example_label(task: GlueTask, value: Any) -> int | float:
    """Returns the label of a record: class index, float score, or ``NO_LABEL`` (test splits)."""
    if task.is_regression:
        score = float(value)
        return NO_LABEL if score == NO_LABEL else score  # TFDS stores -1.0 for STS-B test
    return int(value)  # ClassLabel; -1 == NO_LABEL on test splits


def glue_examples(task: str | GlueTask, split: str, data_dir: str | None) -> list[TextExample]:
    """Returns the examples of a GLUE task's split from a prepared TFDS ``glue/<config>``.

    Args:
        task: a ``GLUE_TASKS`` name (``'sst2'``, ``'glue/mnli'``) or a ``GlueTask``.
        split: one of the task's splits (``'validation_matched'`` for MNLI), optionally sliced.
        data_dir: the TFDS data_dir the task was prepared in (array_record); empty means the
            default (``lmjax.data.sources.resolved_data_dir``).

    Returns:
        ``TextExample``s sorted by TFDS ``idx`` (the row order of the GLUE files), with
        ``texts`` in ``task.text_keys`` order, ``uid = str(idx)`` and ``label`` a class index
        (``task.label_names``), a float score (STS-B) or ``NO_LABEL`` (test splits, AX).

    Raises:
        ValueError: unknown task or split (the message lists the known ones), or an empty split.
        FileNotFoundError: ``data_dir`` is missing or the task is not prepared there; the message
            gives the ``tfds build glue/<config> ... --file_format=array_record`` command.
    """
    task = task if isinstance(task, GlueTask) else glue_task(task)
    check_split(f"GLUE task {task.name!r}", task.splits, split)
    records = prepared_tfds_records(task.tfds_name, split, data_dir)
    description = f"TFDS {task.tfds_name!r} split {split!r}"
    examples = []
    for record in all_records(records):
        idx = int(record_field(record, "idx", description))
        texts = tuple(decoded_text(record_field(record, key, description))
                      for key in task.text_keys)
        label = _example_label(task, record_field(record, "label", description))
        examples.append((idx, TextExample(texts=texts, label=label, uid=str(idx))))
    examples.sort(key=lambda pair: pair[0])
    return [example for _, example in examples]
