"""The causal (next-token) language-modelling objective of GPT-1/2/3.

Axis legend: B batch, L length, V vocab.

The loss is the token cross-entropy between ``outputs['logits']`` and ``batch['targets']``,
weighted by ``batch['weights']`` and averaged over the weighted tokens (GPT-1
``openai/finetune-transformer-lm:train.py`` averages its LM loss over the non-pad positions
``M[:, 1:]``; packing masks are expressed the same way). The weights (float32 [B, L]) are 1 where
the target is a real next token of the same document and 0 for padding and across document
boundaries; the document mask of attention comes through ``batch['segment_ids']``, which the
model receives as an input (see ``MODEL_INPUTS``). Nothing is corrupted: ``corrupt`` is identity.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

MODEL_INPUTS = ("inputs", "positions", "segment_ids")


def identity_corruption(key: jax.Array, batch: dict[str, Any]) -> dict[str, Any]:
    """Causal LM corrupts nothing: returns ``batch`` unchanged (``key`` is unused)."""
    del key
    return batch


def token_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-token negative log-likelihood in float32.

    Args:
      logits: [B, L, V] (any float dtype; cast to float32).
      targets: int [B, L] ids in [0, V).

    Returns:
      float32 [B, L], ``logsumexp(logits) - logits[target]``.
    """
    logits = jnp.asarray(logits, jnp.float32)
    log_normaliser = jax.nn.logsumexp(logits, axis=-1)  # [B, L]
    target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]  # [B, L]
    return log_normaliser - target_logits


def causal_lm_loss(
    outputs: dict[str, jax.Array], batch: dict[str, jax.Array]
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted mean next-token cross-entropy.

    Args:
      outputs: the model's outputs; ``'logits'`` float32 [B, L, V].
      batch: ``'targets'`` int32 [B, L] and ``'weights'`` float32 [B, L] (missing weights = all 1).

    Returns:
      ``(loss, metrics)``: ``loss`` float32 scalar = ``sum(w * nll) / sum(w)`` (0 when the weights
      sum to 0); ``metrics`` float32 scalars ``loss``, ``accuracy`` (weighted share of argmax hits)
      and ``num_tokens`` (``sum(w)``).
    """
    logits = outputs["logits"]
    targets = batch["targets"]
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits {logits.shape} and targets {targets.shape} disagree on [batch, length]."
        )
    weights = batch.get("weights")
    weights = (
        jnp.ones(targets.shape, jnp.float32)
        if weights is None
        else jnp.asarray(weights, jnp.float32)
    )
    return weighted_token_loss(logits, targets, weights)


def weighted_token_loss(
    logits: jax.Array, targets: jax.Array, weights: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted mean token cross-entropy, shared by the causal-LM and masked-LM losses.

    Args:
      logits: [B, L, V]; targets: int [B, L]; weights: float32 [B, L].

    Returns:
      ``(loss, metrics)``: ``sum(w * nll) / sum(w)`` (0 when the weights sum to 0), and float32
      ``loss``, ``accuracy`` (weighted share of argmax hits), ``num_tokens`` (``sum(w)``).
    """
    nll = token_cross_entropy(logits, targets)  # [B, L]
    num_tokens = jnp.sum(weights)
    denominator = jnp.maximum(num_tokens, jnp.finfo(jnp.float32).tiny)
    loss = jnp.sum(nll * weights) / denominator
    hits = jnp.asarray(jnp.argmax(logits, axis=-1) == targets, jnp.float32)  # [B, L]
    accuracy = jnp.sum(hits * weights) / denominator
    return loss, {"loss": loss, "accuracy": accuracy, "num_tokens": num_tokens}
