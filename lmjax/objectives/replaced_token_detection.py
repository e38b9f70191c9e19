"""ELECTRA's replaced-token detection: sampling the generator, the discriminator's input and labels.

Axis legend: B batch, L length, V vocab.

Follows ``google-research/electra:run_pretraining.py::_get_fake_data`` and
``pretrain/pretrain_helpers.py::sample_from_softmax``. The generator's MLM batch comes from
``mlm.electra_masking`` (``'inputs'`` masked, ``'mlm_targets'``, ``'mlm_weights'``); the generator's
logits at the predicted positions are sampled with the Gumbel-max trick inside ``stop_gradient``
(no gradient flows from the discriminator into the generator), the samples are written into the
masked input at every predicted position (also the 15% left unmasked), and a position is labelled
replaced only where the sample differs from the original: a correctly sampled token is "original".
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def gumbel_sample(
    key: jax.Array,
    logits: jax.Array,
    *,
    temperature: float = 1.0,
    disallow: jax.Array | None = None,
) -> jax.Array:
    """int32 [...]: one sample per position from ``softmax(logits / temperature)``.

    Gumbel-max: ``argmax(logits / temperature + g)``, g = -log(-log(u)), computed on
    ``stop_gradient(logits)`` in float32. ``disallow`` (int ids, shape ``logits.shape[:-1]``)
    removes one id per position, as ELECTRA's ``disallow_correct`` does with the original token
    (off by default in ELECTRA).
    """
    logits = jax.lax.stop_gradient(jnp.asarray(logits, jnp.float32)) / temperature  # [B, L, V]
    if disallow is not None:
        banned = jax.nn.one_hot(disallow, logits.shape[-1], dtype=jnp.bool_)
        logits = jnp.where(banned, -jnp.inf, logits)
    gumbel = jax.random.gumbel(key, logits.shape, jnp.float32)
    return jnp.argmax(logits + gumbel, axis=-1).astype(jnp.int32)


def discriminator_inputs(masked_inputs: jax.Array, sampled: jax.Array, weights: jax.Array):
    """int [B, L]: ``masked_inputs`` with the samples written at the predicted positions."""
    return jnp.where(weights > 0, sampled.astype(masked_inputs.dtype), masked_inputs)


def is_replaced_labels(original: jax.Array, sampled: jax.Array, weights: jax.Array) -> jax.Array:
    """int32 [B, L]: 1 where a predicted position holds a sample different from the original."""
    return ((weights > 0) & (sampled != original)).astype(jnp.int32)


def replaced_token_detection(
    key: jax.Array,
    generator_logits: jax.Array,
    batch: dict[str, Any],
    *,
    temperature: float = 1.0,
    disallow_correct: bool = False,
) -> dict[str, Any]:
    """The discriminator's batch from the generator's MLM batch and logits.

    Args:
      key: PRNG key.
      generator_logits: [B, L, V] generator MLM logits.
      batch: a masked batch from ``mlm.electra_masking`` (``'inputs'``, ``'mlm_targets'``,
        ``'mlm_weights'``).
      temperature: sampling temperature (ELECTRA: 1.0).
      disallow_correct: never sample the original token.

    Returns:
      The batch plus ``'sampled_tokens'`` int32 [B, L] (the generator's samples, everywhere),
      ``'disc_inputs'`` [B, L] and ``'disc_labels'`` int32 [B, L] (1 = replaced).
    """
    original = batch["mlm_targets"]
    weights = batch["mlm_weights"]
    if generator_logits.shape[:-1] != original.shape:
        raise ValueError(
            f"generator_logits {generator_logits.shape} and mlm_targets {original.shape} "
            "disagree on [batch, length]."
        )
    sampled = gumbel_sample(
        key,
        generator_logits,
        temperature=temperature,
        disallow=original if disallow_correct else None,
    )
    out = dict(batch)
    out["sampled_tokens"] = sampled
    out["disc_inputs"] = discriminator_inputs(batch["inputs"], sampled, weights)
    out["disc_labels"] = is_replaced_labels(original, sampled, weights)
    return out


def discriminator_loss(
    disc_logits: jax.Array, labels: jax.Array, attention_mask: jax.Array | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean sigmoid cross-entropy over real tokens ([CLS]/[SEP] included, padding excluded).

    ELECTRA ``_get_discriminator_output``. Args: ``disc_logits`` [B, L], ``labels`` int [B, L]
    (1 = replaced), ``attention_mask`` [B, L] (none = all real).

    Returns:
      ``(loss, metrics)``: float32 ``loss``, ``accuracy`` (sign of the logit vs label) and
      ``num_tokens``.
    """
    logits = jnp.asarray(disc_logits, jnp.float32)
    labels_f = jnp.asarray(labels, jnp.float32)
    weights = (
        jnp.ones(logits.shape, jnp.float32)
        if attention_mask is None
        else jnp.asarray(attention_mask != 0, jnp.float32)
    )
    # -[y log s(x) + (1 - y) log(1 - s(x))] = softplus(x) - y * x
    per_token = jax.nn.softplus(logits) - labels_f * logits  # [B, L]
    num_tokens = jnp.sum(weights)
    denominator = jnp.maximum(num_tokens, jnp.finfo(jnp.float32).tiny)
    loss = jnp.sum(per_token * weights) / denominator
    hits = jnp.asarray((logits > 0) == (labels_f > 0.5), jnp.float32)
    accuracy = jnp.sum(hits * weights) / denominator
    return loss, {"loss": loss, "accuracy": accuracy, "num_tokens": num_tokens}
