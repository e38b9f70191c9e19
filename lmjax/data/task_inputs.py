"""Model inputs of fine-tuning examples: BERT's segments and GPT-1's input transformations.

Two formats turn ``lmjax.data.task_examples.TextExample`` lists into numpy arrays:

- **segments** (BERT, Devlin et al. 2019 §4; ``run_classifier.py::convert_single_example``):
  ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]``, token types 0 for the first segment (with its
  [CLS] and [SEP]) and 1 for the second; a pair longer than the row loses tokens from the end
  of the longer text first (``_truncate_seq_pair``). Multiple choice (SWAG) encodes each
  ``(context, choice)`` pair as its own row: ``[N, C, L]``.
- **gpt1** (Radford et al. 2018 §3.3; ``finetune-transformer-lm/train.py::transform_roc``):
  ``_start_ a _classify_`` for one text, ``_start_ a _delimiter_ b _classify_`` for a pair;
  a similarity task (no natural order) gets both orderings on a second axis ``[N, 2, L]``, whose
  features the head adds; multiple choice gets one row per choice ``[N, C, L]``. The rows also
  carry the auxiliary language-modelling targets (the next token at every position whose next
  token is real, the reference's ``M[:, 1:]``).

Arrays (``L`` = ``seq_len``; rows right-padded with ``pad_id``):
``'inputs'`` int32, ``'attention_mask'`` int32 (1 = real token), ``'token_type_ids'`` int32
(segments only), ``'lm_targets'`` int32 / ``'lm_weights'`` float32 (gpt1 only), ``'labels'``
(int32, or float32 for regression) [N] and ``'example_weights'`` float32 [N] (all ones; the
batcher zeroes the rows it pads).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from lmjax.data.task_examples import TextExample
from lmjax.data.tokenizers import Tokenizer

__all__ = ["EncoderFormat", "GPT1Format", "encoder_inputs", "gpt1_inputs", "truncated_pair"]


@dataclasses.dataclass(frozen=True)
class EncoderFormat:
    """BERT's layout: ``[CLS] a [SEP] (b [SEP])`` in rows of ``seq_len`` tokens."""

    cls_id: int
    sep_id: int
    pad_id: int
    seq_len: int


@dataclasses.dataclass(frozen=True)
class GPT1Format:
    """GPT-1's layout: ``_start_ a (_delimiter_ b) _classify_`` in rows of ``seq_len`` tokens.

    ``extract_id`` is the ``_classify_`` token whose final hidden state the head reads.
    """

    start_id: int
    delimiter_id: int
    extract_id: int
    pad_id: int
    seq_len: int


def truncated_pair(a: Sequence[int], b: Sequence[int], budget: int) -> tuple[list[int], list[int]]:
    """``a`` and ``b`` cut to at most ``budget`` tokens together, removing tokens from the end of
    the longer one first (BERT ``run_classifier.py::_truncate_seq_pair``)."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        (a if len(a) > len(b) else b).pop()
    return a, b


class _Encoded:
    """Token ids of each distinct text, encoded once."""

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._ids: dict[str, list[int]] = {}

    def __call__(self, text: str) -> list[int]:
        if text not in self._ids:
            self._ids[text] = self._tokenizer.encode(text)
        return self._ids[text]


def _segment_pairs(example: TextExample) -> list[tuple[str, str | None]]:
    """The (first, second) texts of each row an example becomes (one row, or one per choice)."""
    if example.choices:
        context = " ".join(example.texts)
        return [(context, choice) for choice in example.choices]
    return [(example.texts[0], example.texts[1] if len(example.texts) == 2 else None)]


def _labels(examples: Sequence[TextExample]) -> np.ndarray:
    labels = [example.label for example in examples]
    if any(isinstance(label, float) for label in labels):
        return np.asarray(labels, np.float32)
    return np.asarray(labels, np.int32)


def _check_rows(examples: Sequence[TextExample]) -> int:
    """The number of rows per example (1, or the number of choices), the same for all."""
    counts = {len(_segment_pairs(example)) for example in examples}
    if len(counts) != 1:
        raise ValueError(
            f"examples have different numbers of choices {sorted(counts)}; a batch needs the "
            "same number for every example (pad the choices or split the task)."
        )
    return counts.pop()


def encoder_inputs(
    examples: Sequence[TextExample], tokenizer: Tokenizer, fmt: EncoderFormat
) -> dict[str, np.ndarray]:
    """Encoder arrays of ``examples``: ``[N, L]``, or ``[N, C, L]`` for multiple choice."""
    if not examples:
        raise ValueError("no examples to encode.")
    per_example = _check_rows(examples)
    encode = _Encoded(tokenizer)
    rows = len(examples) * per_example
    inputs = np.full((rows, fmt.seq_len), fmt.pad_id, np.int32)
    types = np.zeros((rows, fmt.seq_len), np.int32)
    mask = np.zeros((rows, fmt.seq_len), np.int32)
    row = 0
    for example in examples:
        for first, second in _segment_pairs(example):
            if second is None:
                a, b = encode(first)[: fmt.seq_len - 2], None
            else:
                a, b = truncated_pair(encode(first), encode(second), fmt.seq_len - 3)
            ids = [fmt.cls_id, *a, fmt.sep_id]
            if b is not None:
                types[row, len(ids) : len(ids) + len(b) + 1] = 1
                ids += [*b, fmt.sep_id]
            inputs[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
            row += 1
    shape = (len(examples),) + ((per_example,) if examples[0].choices else ()) + (fmt.seq_len,)
    return {
        "inputs": inputs.reshape(shape),
        "token_type_ids": types.reshape(shape),
        "attention_mask": mask.reshape(shape),
        "labels": _labels(examples),
        "example_weights": np.ones(len(examples), np.float32),
    }


def _gpt1_rows(example: TextExample, encode: _Encoded, fmt: GPT1Format,
               both_orderings: bool) -> list[list[int]]:
    rows = []
    for first, second in _segment_pairs(example):
        if second is None:
            rows.append([fmt.start_id, *encode(first)[: fmt.seq_len - 2], fmt.extract_id])
            continue
        a, b = truncated_pair(encode(first), encode(second), fmt.seq_len - 3)
        rows.append([fmt.start_id, *a, fmt.delimiter_id, *b, fmt.extract_id])
        if both_orderings:
            rows.append([fmt.start_id, *b, fmt.delimiter_id, *a, fmt.extract_id])
    return rows


def gpt1_inputs(
    examples: Sequence[TextExample], tokenizer: Tokenizer, fmt: GPT1Format, *,
    both_orderings: bool = False,
) -> dict[str, np.ndarray]:
    """GPT-1 arrays of ``examples``: ``[N, L]``, or ``[N, C, L]`` for multiple choice and
    ``[N, 2, L]`` for pairs with ``both_orderings`` (similarity tasks)."""
    if not examples:
        raise ValueError("no examples to encode.")
    if both_orderings and any(example.choices or len(example.texts) != 2 for example in examples):
        raise ValueError("both_orderings is for sentence-pair tasks: every example needs two "
                         "texts and no choices.")
    encode = _Encoded(tokenizer)
    rows = [_gpt1_rows(example, encode, fmt, both_orderings) for example in examples]
    per_example = {len(r) for r in rows}
    if len(per_example) != 1:
        raise ValueError(f"examples have different numbers of choices {sorted(per_example)}.")
    flat = [row for example_rows in rows for row in example_rows]
    inputs = np.full((len(flat), fmt.seq_len), fmt.pad_id, np.int32)
    mask = np.zeros((len(flat), fmt.seq_len), np.int32)
    for index, ids in enumerate(flat):
        inputs[index, : len(ids)] = ids
        mask[index, : len(ids)] = 1
    lm_targets = np.zeros_like(inputs)
    lm_targets[:, :-1] = inputs[:, 1:]
    lm_weights = np.zeros(inputs.shape, np.float32)
    lm_weights[:, :-1] = mask[:, 1:]
    stacked = examples[0].choices or both_orderings
    shape = (len(examples),) + ((len(rows[0]),) if stacked else ()) + (fmt.seq_len,)
    return {
        "inputs": inputs.reshape(shape),
        "attention_mask": mask.reshape(shape),
        "lm_targets": lm_targets.reshape(shape),
        "lm_weights": lm_weights.reshape(shape),
        "labels": _labels(examples),
        "example_weights": np.ones(len(examples), np.float32),
    }
