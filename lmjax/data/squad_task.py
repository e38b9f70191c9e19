"""SQuAD 1.1 / 2.0 as a ``FinetuneTask``: doc-stride rows in, official EM / F1 out.

Devlin et al. 2019 (arXiv:1810.04805, sections 4.2-4.3); google-research/bert ``run_squad.py``
(``convert_examples_to_features`` for the rows, ``write_predictions`` for the answers) and the
official SQuAD v2.0 evaluation script (``evaluate-v2.0.py``, its ``find_all_best_thresh`` for
the no-answer threshold). The pieces are the data modules' and the evaluation modules':

- ``lmjax.data.squad.squad_examples``: the questions of a prepared TFDS ``squad/v1.1`` or
  ``squad/v2.0`` (train split ``train``, evaluation split ``validation``, the official dev set);
- ``lmjax.data.squad_features.squad_features``: ``[CLS] query [SEP] window [SEP]`` rows, several
  per question when the context is longer than a row (``task.doc_stride``);
- ``lmjax.eval.squad_decoding``: the best span of each question over its windows;
- ``lmjax.eval.squad_metrics``: exact match and F1 (x100), ``HasAns_*`` / ``NoAns_*`` on 2.0.

``lmjax finetune`` trains the ``'span'`` head (``start_logits`` / ``end_logits`` over every row
position) with the ``span_extraction`` objective on the rows, and after every epoch the split's
``score`` decodes the model's logits of all evaluation rows into one answer per question. The
best epoch is the one with the highest ``f1``.

On SQuAD 2.0 a question is answered ``""`` when its null score (``[CLS]`` start + end) beats its
best span by more than ``task.null_score_diff_threshold`` (BERT: 0.0, tuned on dev between -1.0
and -5.0); the scores also report the threshold that would have been best on this split
(``best_f1`` at ``best_f1_threshold``, ``best_exact`` at ``best_exact_threshold``), as the
official v2.0 script does, so a run shows what tuning the threshold gains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lmjax.data.encoder_vocab import encoder_special_ids
from lmjax.data.finetune_tasks import EncodedSplit, FinetuneTask
from lmjax.data.squad import squad_examples
from lmjax.data.squad_features import SquadWindowConfig, squad_features
from lmjax.data.task_examples import SquadExample
from lmjax.data.task_inputs import EncoderFormat, GPT1Format
from lmjax.data.tokenizers import Tokenizer
from lmjax.eval.squad_decoding import (
    Prediction,
    SpanDecodingConfig,
    best_spans,
    predictions_by_uid,
)
from lmjax.eval.squad_metrics import best_null_threshold, squad_scores

__all__ = [
    "SQUAD_TASKS",
    "null_threshold_scores",
    "squad_decoding_config",
    "squad_task",
    "squad_window_config",
]

# Task name -> SQuAD version (``lmjax.data.squad.SQUAD_VERSIONS``).
SQUAD_TASKS = {"squad/v1.1": "1.1", "squad/v2.0": "2.0"}


def _version_of(name: str) -> str:
    if name not in SQUAD_TASKS:
        raise ValueError(
            f"unknown SQuAD task {name!r}; use one of {sorted(SQUAD_TASKS)} (TFDS squad/v1.1 "
            "or squad/v2.0 prepared in task.data_dir)."
        )
    return SQUAD_TASKS[name]


def squad_window_config(task_cfg: Any) -> SquadWindowConfig:
    """The row layout of ``task_cfg``: ``seq_len``, ``doc_stride`` (128), ``max_query_len`` (64).

    Raises:
        ValueError: the three do not fit together (e.g. a short ``seq_len`` with BERT's stride of
            128); the message names the ``task.*`` fields and the values that would work.
    """
    seq_len = task_cfg.seq_len
    doc_stride = task_cfg.get("doc_stride", 128)
    max_query_len = task_cfg.get("max_query_len", 64)
    try:
        return SquadWindowConfig(max_seq_len=seq_len, doc_stride=doc_stride,
                                 max_query_len=max_query_len)
    except ValueError as error:
        numbers = all(isinstance(v, int) for v in (seq_len, doc_stride, max_query_len))
        window = seq_len - max_query_len - 3 if numbers else 0  # context tokens of a full row
        hint = (f"a window holds {window} context tokens (task.seq_len - task.max_query_len - 3)"
                if window > 0 else "no context fits in a row" if numbers else "use integers")
        raise ValueError(
            f"{task_cfg.name}: task.seq_len={seq_len}, task.doc_stride={doc_stride} and "
            f"task.max_query_len={max_query_len} do not fit together ({hint}); keep "
            "task.doc_stride below the window and task.max_query_len well below task.seq_len "
            "(run_squad: 384 / 128 / 64; for seq_len=64, e.g. doc_stride=16, max_query_len=16). "
            f"Details: {error}"
        ) from error


def squad_decoding_config(task_cfg: Any) -> SpanDecodingConfig:
    """Span decoding of ``task_cfg``: n-best 20, ``max_answer_length`` (30) tokens, and for
    SQuAD 2.0 ``null_score_diff_threshold`` (0.0), as ``run_squad.py``'s flags."""
    return SpanDecodingConfig(
        n_best_size=20,
        max_answer_length=task_cfg.get("max_answer_length", 30),
        null_score_diff_threshold=float(task_cfg.get("null_score_diff_threshold", 0.0)),
        version_2=_version_of(task_cfg.name) == "2.0",
    )


def _finite_diffs(diffs: dict[str, float]) -> dict[str, float]:
    """``diffs`` with ``+inf`` (a question without any valid span, answered "" whatever the
    threshold) replaced by a value above every finite one, as ``best_null_threshold`` needs."""
    finite = [d for d in diffs.values() if math.isfinite(d)]
    ceiling = (max(finite) if finite else 0.0) + 1.0
    return {uid: (d if math.isfinite(d) else ceiling) for uid, d in diffs.items()}


def null_threshold_scores(predictions: Sequence[Prediction],
                          gold: dict[str, tuple[str, ...]]) -> dict[str, float]:
    """``best_f1`` / ``best_f1_threshold`` and ``best_exact`` / ``best_exact_threshold``: the
    official v2.0 script's threshold search on the null-score differences.

    A best threshold of ``-inf`` (answering nothing is best) is reported as the smallest
    difference minus 1, a finite threshold that answers nothing too (JSON has no infinity).
    """
    diffs = _finite_diffs({p.uid: p.null_score_diff for p in predictions})
    with_answer = {p.uid: p.text for p in predictions}
    scores = {}
    for metric in ("f1", "exact"):
        threshold, chosen = best_null_threshold(diffs, with_answer, gold, metric=metric)
        if not math.isfinite(threshold):
            threshold = min(diffs.values()) - 1.0
        scores[f"best_{metric}"] = chosen[metric]
        scores[f"best_{metric}_threshold"] = float(threshold)
    return scores


def _squad_encoder(window: SquadWindowConfig, decoding: SpanDecodingConfig):
    """``encode(examples, tokenizer, fmt, training) -> EncodedSplit`` of a SQuAD task."""

    def encode(examples: Sequence[SquadExample], tokenizer: Tokenizer,
               fmt: EncoderFormat | GPT1Format, training: bool) -> EncodedSplit:
        if isinstance(fmt, GPT1Format):
            raise ValueError(
                "SQuAD span extraction needs an encoder backbone (BERT, ALBERT, ELECTRA, ...: "
                "start / end logits over [CLS] query [SEP] context [SEP] rows); init.workdir "
                "names a GPT run. Fine-tune from an encoder pre-training run."
            )
        if fmt.seq_len != window.max_seq_len:
            raise ValueError(
                f"the input format has seq_len={fmt.seq_len} but the SQuAD rows were set up for "
                f"task.seq_len={window.max_seq_len}; build both from the same task.seq_len."
            )
        gold = {example.uid: tuple(example.answers) for example in examples}
        if len(gold) != len(examples):
            raise ValueError(
                f"{len(examples) - len(gold)} SQuAD examples share a uid with another; the "
                "official scoring keys answers by question id, so every uid must be unique."
            )
        features = squad_features(examples, tokenizer, encoder_special_ids(tokenizer), window,
                                  training=training)
        arrays = dict(features.arrays())
        arrays["example_weights"] = np.ones([len(features)], np.float32)  # [N]

        def score(outputs: dict[str, np.ndarray]) -> dict[str, float]:
            predictions = best_spans(outputs["start_logits"], outputs["end_logits"], features,
                                     decoding)
            scores = squad_scores(predictions_by_uid(predictions, decoding), gold)
            if decoding.version_2:
                scores.update(null_threshold_scores(predictions, gold))
            return scores

        return EncodedSplit(arrays, score)

    return encode


def squad_task(task_cfg: Any) -> FinetuneTask:
    """The SQuAD task ``task_cfg.name`` (``'squad/v1.1'`` or ``'squad/v2.0'``).

    Args:
        task_cfg: the ``task`` ConfigDict: ``name``, ``data_dir`` (the prepared TFDS
            data_dir), ``seq_len``; optional ``train_split`` (``'train'``), ``eval_split``
            (``'validation'``), ``doc_stride`` (128), ``max_query_len`` (64),
            ``max_answer_length`` (30), ``null_score_diff_threshold`` (0.0).

    Returns:
        A task with head ``'span'``, main metric ``'f1'``, the ``SquadExample``s of both
        splits, and ``encode`` building doc-stride rows (plus ``example_weights``) whose
        ``score`` decodes the start / end logits into answers and returns the official
        scores (``exact``, ``f1``, ``total``; on 2.0 also ``HasAns_*`` / ``NoAns_*`` and the
        best threshold's ``best_f1`` / ``best_f1_threshold`` / ``best_exact`` /
        ``best_exact_threshold``).

    Raises:
        ValueError: an unknown name or split, or a row layout that does not fit.
        FileNotFoundError: the dataset is not prepared in ``task_cfg.data_dir`` (the message
            gives the ``tfds build`` command).
    """
    version = _version_of(task_cfg.name)
    window = squad_window_config(task_cfg)  # before reading data: config errors come first
    decoding = squad_decoding_config(task_cfg)
    data_dir = task_cfg.get("data_dir") or None
    train = squad_examples(version, task_cfg.get("train_split") or "train", data_dir)
    evaluation = squad_examples(version, task_cfg.get("eval_split") or "validation", data_dir)
    return FinetuneTask(
        name=task_cfg.name, head="span", label_names=(), symmetric=False, train=train,
        evaluation=evaluation, main_metric="f1", encode=_squad_encoder(window, decoding),
    )
