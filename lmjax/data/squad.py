"""SQuAD v1.1 and v2.0 read from a prepared TFDS ``squad/<version>`` dataset, as ``SquadExample``s.

TFDS 4.9 (``tensorflow_datasets/datasets/squad/squad_dataset_builder.py``, v1.1 through
``question_answering/qa_utils.py::squadlike_features``) stores one record per question with the
features ``id``, ``title``, ``context``, ``question`` and ``answers`` (a sequence of ``text`` /
``answer_start``, character offsets into ``context``); v2.0 adds ``is_impossible`` and
``plausible_answers`` (the spans annotators marked for unanswerable questions, which no model is
trained or scored on and which are not read here). Splits: ``train`` and ``validation`` (the
official dev set).

Prepare once, where the network is reachable::

    tfds build squad/v1.1 --data_dir=<data_dir> --file_format=array_record

and read without TensorFlow; nothing is downloaded at run time (DESIGN.md, "Data").
"""

from __future__ import annotations

from lmjax.data.glue import (
    all_records,
    check_split,
    decoded_text,
    prepared_tfds_records,
    record_field,
)
from lmjax.data.task_examples import SquadExample

__all__ = ["SQUAD_SPLITS", "SQUAD_VERSIONS", "squad_examples"]

SQUAD_VERSIONS = ("1.1", "2.0")
SQUAD_SPLITS = ("train", "validation")


def _tfds_name(version: str) -> str:
    """Returns the TFDS name, ``'squad/v1.1'`` or ``'squad/v2.0'``, of ``version``.

    ``version`` is ``'1.1'`` or ``'2.0'``, with or without a leading ``'v'``.
    """
    number = version[1:] if version.startswith("v") else version
    if number not in SQUAD_VERSIONS:
        raise ValueError(
            f"SQuAD version {version!r} is unknown; use one of {list(SQUAD_VERSIONS)} "
            "(TFDS configs squad/v1.1 and squad/v2.0)."
        )
    return f"squad/v{number}"


def _squad_example(record: dict, description: str, is_v2: bool) -> SquadExample:
    """Returns one TFDS SQuAD record as a ``SquadExample`` (unanswerable: no answers)."""
    answers = record_field(record, "answers", description)
    texts = [decoded_text(text) for text in answers["text"]]
    starts = [int(start) for start in answers["answer_start"]]
    if is_v2 and bool(record_field(record, "is_impossible", description)):
        texts, starts = [], []
    return SquadExample(
        uid=decoded_text(record_field(record, "id", description)),
        question=decoded_text(record_field(record, "question", description)),
        context=decoded_text(record_field(record, "context", description)),
        answers=tuple(texts),
        answer_starts=tuple(starts),
        title=decoded_text(record.get("title", b"")),
    )


def squad_examples(version: str, split: str, data_dir: str | None) -> list[SquadExample]:
    """Returns the questions of a SQuAD split from a prepared TFDS ``squad/v<version>``.

    Args:
        version: ``'1.1'`` or ``'2.0'`` (a leading ``'v'`` is accepted).
        split: ``'train'`` or ``'validation'`` (the official dev set), optionally sliced.
        data_dir: the TFDS data_dir it was prepared in (array_record); empty means the default
            (``lmjax.data.sources.resolved_data_dir``).

    Returns:
        One ``SquadExample`` per question, in the prepared dataset's record order, with the
        official ``id`` as ``uid`` and every gold answer (duplicates kept, as the dev set has
        them); a SQuAD 2.0 unanswerable question has no answers.

    Raises:
        ValueError: unknown version or split, or an empty split.
        FileNotFoundError: ``data_dir`` is missing or the dataset is not prepared there; the
            message gives the ``tfds build squad/v<version> ... --file_format=array_record``
            command.
    """
    name = _tfds_name(version)
    check_split(f"TFDS {name!r}", SQUAD_SPLITS, split,
                hint="'validation' is the official dev set; there is no test split.")
    records = prepared_tfds_records(name, split, data_dir)
    is_v2 = name.endswith("2.0")
    description = f"TFDS {name!r} split {split!r}"
    return [_squad_example(record, description, is_v2) for record in all_records(records)]
