"""Fine-tuning losses of the task heads (``lmjax.models.heads``), with GPT-1's auxiliary LM loss.

Axis legend: B batch, C choices, L length, K labels, V vocab.

Nothing is corrupted (``corrupt`` is identity). Each loss maps the task model's outputs and the
batch to ``(loss, metrics)``:

- 'classification': ``class_logits`` [B, K], ``labels`` int32 [B]; softmax CE mean.
- 'regression': ``prediction`` [B], ``labels`` float32 [B]; mean squared error.
- 'multiple_choice': ``choice_logits`` [B, C], ``labels`` int32 [B] (the right choice); softmax
  CE over the choices, mean.
- 'span': ``start_logits``, ``end_logits`` [B, L], ``start_positions``, ``end_positions`` int32
  [B]; ``(CE_start + CE_end) / 2``.
- 'token_classification': ``token_logits`` [B, L, K], ``labels`` int32 [B, L] and
  ``label_weights`` float32 [B, L]; weighted mean token CE.

References: BERT ``run_classifier.py::create_model`` (softmax CE), ``run_squad.py`` (the span
loss, ``(start_loss + end_loss) / 2``), HF ``BertForSequenceClassification`` (MSE when
``num_labels == 1``) and ``BertForTokenClassification``; GPT-1
``openai/finetune-transformer-lm:train.py`` (``loss = mean(clf) + lm_coef * mean(lm)``,
lm_coef 0.5).

``example_weights`` float32 [B] (optional, default 1) marks real rows (1) and the padding rows of
a last, partial eval batch (0): weight-0 rows never reach a loss or a metric (their labels may
be anything, e.g. ``NO_LABEL`` = -1). Means are weighted: ``sum(w * l) / sum(w)`` (0 when every
weight is 0).

Auxiliary LM loss (``lm_coef > 0``, a GPT backbone): ``outputs['lm_logits']`` [B(, C), L, V]
against ``lm_targets`` int32 [B(, C), L] weighted by ``lm_weights`` float32 [B(, C), L] (the data
side builds next-token targets over the non-pad positions, GPT-1's ``M[:, 1:]``); the total is
``task + lm_coef * lm``.

Metrics (float32 scalars): ``loss``, ``task_loss``, ``lm_loss`` (with lm_coef > 0),
``accuracy`` (classification, multiple choice: argmax hits; span: start and end both right;
token classification: weighted token hits), ``start_accuracy`` / ``end_accuracy`` (span), ``mse``
(regression, which has no ``accuracy``), and ``num_tokens``: the weight the train step gives this
micro-batch, i.e. ``sum(example_weights)``, or for token classification the summed token weights
(so accumulation gives the exact mean over labelled tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from lmjax.objectives.causal_lm import identity_corruption, weighted_token_loss

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]

# head (lmjax.models.heads.HEADS) -> the objective's registered name.
OBJECTIVE_NAMES = {
    "classification": "classification",
    "regression": "regression",
    "multiple_choice": "multiple_choice",
    "span": "span_extraction",
    "token_classification": "token_classification",
}


def _example_weights(batch: Batch, rows: int) -> jax.Array:
    """float32 [B]: ``batch['example_weights']`` or ones."""
    weights = batch.get("example_weights")
    if weights is None:
        return jnp.ones((rows,), jnp.float32)
    weights = jnp.asarray(weights, jnp.float32)
    if weights.shape != (rows,):
        raise ValueError(f"example_weights has shape {weights.shape}; expected ({rows},).")
    return weights


def _check_shape(name: str, value: jax.Array, shape: tuple[int, ...], source: str) -> None:
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"batch[{name!r}] has shape {value.shape}; {source} expects {shape}.")


def _safe_labels(labels: jax.Array, weights: jax.Array) -> jax.Array:
    """int32 labels with 0 where the weight is 0 (so any placeholder label gathers in range)."""
    return jnp.where(weights > 0, jnp.asarray(labels, jnp.int32), 0)


def weighted_cross_entropy(
    logits: jax.Array, labels: jax.Array, weights: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Weighted mean softmax cross-entropy and argmax accuracy over rows of ``logits``.

    Args:
      logits: [..., K] (cast to float32).
      labels: int [...] in [0, K) where ``weights`` > 0 (anything elsewhere).
      weights: float32 [...].

    Returns:
      ``(loss, accuracy)`` float32 scalars, both 0 when the weights sum to 0.
    """
    loss, metrics = weighted_token_loss(logits, _safe_labels(labels, weights), weights)
    return loss, metrics["accuracy"]


def classification_loss(outputs: dict[str, jax.Array], batch: Batch) -> tuple[jax.Array, Metrics]:
    """Softmax CE of ``class_logits`` [B, K] against ``labels`` int32 [B]."""
    logits = outputs["class_logits"]
    weights = _example_weights(batch, logits.shape[0])
    _check_shape("labels", batch["labels"], logits.shape[:1], "head 'classification'")
    loss, accuracy = weighted_cross_entropy(logits, batch["labels"], weights)
    return loss, {"task_loss": loss, "accuracy": accuracy, "num_tokens": jnp.sum(weights)}


def multiple_choice_loss(
    outputs: dict[str, jax.Array], batch: Batch
) -> tuple[jax.Array, Metrics]:
    """Softmax CE over the choices of ``choice_logits`` [B, C] against ``labels`` int32 [B]."""
    logits = outputs["choice_logits"]
    weights = _example_weights(batch, logits.shape[0])
    _check_shape("labels", batch["labels"], logits.shape[:1], "head 'multiple_choice'")
    loss, accuracy = weighted_cross_entropy(logits, batch["labels"], weights)
    return loss, {"task_loss": loss, "accuracy": accuracy, "num_tokens": jnp.sum(weights)}


def regression_loss(outputs: dict[str, jax.Array], batch: Batch) -> tuple[jax.Array, Metrics]:
    """Mean squared error of ``prediction`` [B] against ``labels`` float32 [B]."""
    prediction = jnp.asarray(outputs["prediction"], jnp.float32)
    weights = _example_weights(batch, prediction.shape[0])
    _check_shape("labels", batch["labels"], prediction.shape, "head 'regression'")
    labels = jnp.where(weights > 0, jnp.asarray(batch["labels"], jnp.float32), 0.0)
    total = jnp.sum(weights)
    error = jnp.where(weights > 0, jnp.square(prediction - labels), 0.0)  # [B]
    mse = jnp.sum(weights * error) / jnp.maximum(total, jnp.finfo(jnp.float32).tiny)
    return mse, {"task_loss": mse, "mse": mse, "num_tokens": total}


def span_loss(outputs: dict[str, jax.Array], batch: Batch) -> tuple[jax.Array, Metrics]:
    """``(CE_start + CE_end) / 2`` over the positions of ``start_logits``/``end_logits`` [B, L]
    (BERT ``run_squad.py``)."""
    start_logits, end_logits = outputs["start_logits"], outputs["end_logits"]
    weights = _example_weights(batch, start_logits.shape[0])
    for name in ("start_positions", "end_positions"):
        _check_shape(name, batch[name], start_logits.shape[:1], "head 'span'")
    start, start_hit = weighted_cross_entropy(start_logits, batch["start_positions"], weights)
    end, end_hit = weighted_cross_entropy(end_logits, batch["end_positions"], weights)
    starts = _safe_labels(batch["start_positions"], weights)
    ends = _safe_labels(batch["end_positions"], weights)
    both = (jnp.argmax(start_logits, -1) == starts) & (jnp.argmax(end_logits, -1) == ends)
    total = jnp.sum(weights)
    accuracy = jnp.sum(weights * both) / jnp.maximum(total, jnp.finfo(jnp.float32).tiny)
    loss = (start + end) / 2
    metrics = {
        "task_loss": loss,
        "accuracy": accuracy,
        "start_accuracy": start_hit,
        "end_accuracy": end_hit,
        "num_tokens": total,
    }
    return loss, metrics


def token_classification_loss(
    outputs: dict[str, jax.Array], batch: Batch
) -> tuple[jax.Array, Metrics]:
    """Weighted token CE of ``token_logits`` [B, L, K] against ``labels`` int32 [B, L], with
    ``label_weights`` float32 [B, L] (0 at padding, special tokens and non-first word pieces)."""
    logits = outputs["token_logits"]
    weights = _example_weights(batch, logits.shape[0])
    _check_shape("labels", batch["labels"], logits.shape[:2], "head 'token_classification'")
    _check_shape("label_weights", batch["label_weights"], logits.shape[:2],
                 "head 'token_classification'")
    token_weights = jnp.asarray(batch["label_weights"], jnp.float32) * weights[:, None]
    loss, accuracy = weighted_cross_entropy(logits, batch["labels"], token_weights)
    return loss, {"task_loss": loss, "accuracy": accuracy, "num_tokens": jnp.sum(token_weights)}


TASK_LOSSES = {
    "classification": classification_loss,
    "regression": regression_loss,
    "multiple_choice": multiple_choice_loss,
    "span": span_loss,
    "token_classification": token_classification_loss,
}


def auxiliary_lm_loss(outputs: dict[str, jax.Array], batch: Batch) -> jax.Array:
    """GPT-1's auxiliary LM loss: weighted mean next-token CE of ``lm_logits``, weight-0 rows
    ignored.

    Args:
      outputs: ``'lm_logits'`` float32 [B(, C), L, V].
      batch: ``'lm_targets'`` int32 and ``'lm_weights'`` float32, both [B(, C), L]; optional
        ``'example_weights'`` [B].

    Returns:
      the float32 scalar loss (0 when no position is weighted).
    """
    if "lm_logits" not in outputs:
        raise ValueError(
            "lm_coef > 0 needs outputs['lm_logits'], which only a causal (GPT) backbone returns; "
            "set lm_coef=0.0 for this backbone."
        )
    logits = outputs["lm_logits"]
    for name in ("lm_targets", "lm_weights"):
        if name not in batch:
            raise ValueError(
                f"lm_coef > 0 needs batch[{name!r}] (next-token targets and weights over the "
                "non-pad positions); build them in the data pipeline or set lm_coef=0.0."
            )
        _check_shape(name, batch[name], logits.shape[:-1], "outputs['lm_logits']")
    rows = _example_weights(batch, logits.shape[0])
    rows = rows.reshape(rows.shape + (1,) * (logits.ndim - 2))  # [B, 1(, 1)]
    weights = jnp.asarray(batch["lm_weights"], jnp.float32) * rows
    loss, _ = weighted_token_loss(logits, _safe_labels(batch["lm_targets"], weights), weights)
    return loss


def task_loss_fn(head: str, lm_coef: float = 0.0) -> Any:
    """``(outputs, batch) -> (loss, metrics)`` of ``head``, plus ``lm_coef`` x the LM loss.

    Raises:
      ValueError: for an unknown head or a negative ``lm_coef``.
    """
    if head not in TASK_LOSSES:
        raise ValueError(f"head={head!r} must be one of {tuple(TASK_LOSSES)}.")
    if lm_coef < 0:
        raise ValueError(f"lm_coef={lm_coef} must be >= 0 (GPT-1 uses 0.5; 0 = no LM loss).")
    task = TASK_LOSSES[head]

    def loss_fn(outputs: dict[str, jax.Array], batch: Batch) -> tuple[jax.Array, Metrics]:
        loss, metrics = task(outputs, batch)
        if lm_coef > 0:
            lm = auxiliary_lm_loss(outputs, batch)
            loss = loss + lm_coef * lm
            metrics["lm_loss"] = lm
        metrics["loss"] = loss
        return loss, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

    return loss_fn


def task_objective(
    head: str,
    *,
    model_inputs: Sequence[str],
    lm_coef: float = 0.0,
    name: str | None = None,
) -> Any:
    """The fine-tuning ``Objective`` of ``head`` (identity corruption; module docstring).

    Args:
      head: one of ``lmjax.models.heads.HEADS``.
      model_inputs: the batch keys the task model takes, e.g. ``('inputs', 'token_type_ids',
        'attention_mask')`` (BERT) or ``('inputs', 'attention_mask')`` (GPT).
      lm_coef: weight of the auxiliary LM loss (GPT-1: 0.5).
      name: the objective's name (default: ``OBJECTIVE_NAMES[head]``).

    Raises:
      ValueError: for an unknown head, a negative ``lm_coef`` or no 'inputs' in model_inputs.
    """
    from lmjax.objectives import Objective

    if isinstance(model_inputs, str) or "inputs" not in model_inputs:
        raise ValueError(
            f"model_inputs={model_inputs!r} must be a sequence of batch keys including 'inputs', "
            "e.g. ('inputs', 'token_type_ids', 'attention_mask')."
        )
    loss = task_loss_fn(head, float(lm_coef))
    return Objective(
        name=name if name is not None else OBJECTIVE_NAMES[head],
        corrupt=identity_corruption,
        loss=loss,
        model_inputs=tuple(model_inputs),
    )
