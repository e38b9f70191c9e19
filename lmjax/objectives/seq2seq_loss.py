"""The encoder-decoder (text-to-text) loss: token cross-entropy on the decoder targets.

Axis legend: B batch, Ld decoder length, V vocab.

Every seq2seq objective (T5 span corruption and prefix LM, BART denoising, Meena's dialogue
turns, text-to-text fine-tuning) ends in the same loss: the float32 cross-entropy between the
decoder's ``outputs['logits']`` [B, Ld, V] and ``batch['decoder_targets']`` [B, Ld], weighted by
``batch['decoder_weights']`` (1 on real target tokens, 0 on padding) and averaged over the
weighted tokens.

Optionally the t5x auxiliary "z-loss" is added (t5x ``t5x/losses.py::cross_entropy_with_logits``;
Chowdhery et al. 2022, PaLM, section 5 "z_loss"): ``z_loss * logsumexp(logits)**2`` per token,
which keeps the softmax normaliser close to 1 (``log Z`` near 0) and stabilises bf16 training.
The t5x T5 gin configs use ``1e-4`` (label smoothing 0); ``0`` turns the term off.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from lmjax.objectives.causal_lm import token_cross_entropy

# The decoder sees its own inputs; the encoder sees the corrupted text (the seq2seq contract).
SEQ2SEQ_MODEL_INPUTS = (
    "encoder_inputs",
    "decoder_inputs",
    "encoder_segment_ids",
    "decoder_segment_ids",
)

# The z-loss coefficient of the t5x T5 configs (``t5x/examples/t5/t5_1_1/base.gin``:
# ``Z_LOSS = 0.0001``).
T5X_Z_LOSS = 1e-4


def check_z_loss(z_loss: float) -> None:
    """Raises ValueError unless ``z_loss`` is a coefficient >= 0."""
    if not z_loss >= 0:
        raise ValueError(f"z_loss must be >= 0 (t5x uses 1e-4, 0 turns it off), got {z_loss}.")


def seq2seq_loss(
    outputs: dict[str, jax.Array], batch: dict[str, Any], z_loss: float = 0.0
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted mean decoder cross-entropy, plus t5x's z-loss when ``z_loss > 0``.

    Args:
      outputs: the model's outputs; ``'logits'`` [B, Ld, V] (cast to float32).
      batch: ``'decoder_targets'`` int [B, Ld] and ``'decoder_weights'`` float32 [B, Ld]
        (missing weights = all 1).
      z_loss: coefficient of ``logsumexp(logits)**2`` (t5x's T5 configs: ``1e-4``; 0 = off).

    Returns:
      ``(loss, metrics)``: ``loss`` float32 scalar = ``sum(w * (nll + z_loss * logZ**2)) /
      sum(w)`` (0 when the weights sum to 0). ``metrics`` float32 scalars: ``loss`` (the total),
      ``cross_entropy`` (the cross-entropy part), ``z_loss`` (the z-loss part, 0 when off),
      ``accuracy`` (weighted share of argmax hits) and ``num_tokens`` (``sum(w)``).

    Raises:
      ValueError: logits and targets disagree on [batch, length], or ``z_loss`` is negative.
    """
    check_z_loss(z_loss)
    logits = jnp.asarray(outputs["logits"], jnp.float32)  # [B, Ld, V]
    targets = batch["decoder_targets"]  # [B, Ld]
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits {logits.shape} and decoder_targets {targets.shape} disagree on "
            "[batch, decoder length]; the decoder must be fed batch['decoder_inputs'] of the "
            "same length as batch['decoder_targets']."
        )
    weights = batch.get("decoder_weights")
    weights = (
        jnp.ones(targets.shape, jnp.float32)
        if weights is None
        else jnp.asarray(weights, jnp.float32)
    )  # [B, Ld]
    nll = token_cross_entropy(logits, targets)  # [B, Ld]
    num_tokens = jnp.sum(weights)
    denominator = jnp.maximum(num_tokens, jnp.finfo(jnp.float32).tiny)
    cross_entropy = jnp.sum(nll * weights) / denominator
    if z_loss:
        log_normaliser = jax.nn.logsumexp(logits, axis=-1)  # [B, Ld]
        z_term = jnp.sum(z_loss * jnp.square(log_normaliser) * weights) / denominator
    else:
        z_term = jnp.zeros((), jnp.float32)
    loss = cross_entropy + z_term
    hits = jnp.asarray(jnp.argmax(logits, axis=-1) == targets, jnp.float32)  # [B, Ld]
    accuracy = jnp.sum(hits * weights) / denominator
    metrics = {
        "loss": loss,
        "cross_entropy": cross_entropy,
        "z_loss": z_term,
        "accuracy": accuracy,
        "num_tokens": num_tokens,
    }
    return loss, metrics


def shifted_right(targets: jax.Array, decoder_start_id: int) -> jax.Array:
    """Decoder inputs for ``targets`` [..., Ld]: ``decoder_start_id``, then ``targets[..., :-1]``.

    (T5 ``transformers modeling_t5.py::T5PreTrainedModel._shift_right``; t5x
    ``EncoderDecoderModel`` feeds ``decoder_input_tokens`` built the same way by seqio.)
    """
    start = jnp.full(targets.shape[:-1] + (1,), decoder_start_id, targets.dtype)
    return jnp.concatenate([start, targets[..., :-1]], axis=-1)
