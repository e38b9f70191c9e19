"""ELECTRA's replaced-token detection: sampling the generator, the discriminator's input and labels.

Axis legend: B batch, L length, V vocab.

Follows ``google-research/electra:run_pretraining.py::_get_fake_data`` and
``pretrain/pretrain_helpers.py::sample_from_softmax``. The generator's MLM batch comes from
``mlm.electra_masking`` (``'inputs'`` masked, ``'mlm_targets'``, ``'mlm_weights'``); the generator's
logits at the predicted positions are sampled with the Gumbel-max trick inside ``stop_gradient``
(no gradient flows from the discriminator into the generator), the samples are written into the
masked input at every predicted position (also the 15% left unmasked), and a position is labelled
replaced only where the sample differs from the original: a correctly sampled token is "original".

``electra_loss`` is the pre-training loss of ``lmjax.models.electra.ElectraPretraining`` (which
samples inside the model with the ``'sample'`` rng) and ``electra_objective`` the ``Objective``
that pairs it with ``mlm.electra_masking``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from lmjax.objectives.mlm import electra_masking, mlm_loss


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


# The batch keys ElectraPretraining reads: the masked inputs and where samples go.
MODEL_INPUTS = ("inputs", "token_type_ids", "attention_mask", "mlm_weights")


def electra_loss(
    outputs: dict[str, jax.Array],
    batch: dict[str, jax.Array],
    *,
    discriminator_weight: float = 50.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """ELECTRA's pre-training loss: generator MLM + ``discriminator_weight`` × discriminator loss.

    ``run_pretraining.py``: ``total_loss = gen_weight (1.0) * mlm_loss + disc_weight (50.0) *
    disc_loss``. The MLM loss is ``mlm.mlm_loss`` over ``mlm_weights``; the discriminator loss is
    the mean sigmoid cross-entropy over real tokens (``attention_mask``; [CLS]/[SEP] included),
    labelled 1 where ``discriminator_inputs`` differs from ``mlm_targets`` at a predicted position
    (a correctly sampled token counts as original).

    Args:
      outputs: ``'generator_logits'`` [B, L, V], ``'discriminator_logits'`` [B, L] and
        ``'discriminator_inputs'`` int [B, L] (``ElectraPretraining``'s outputs).
      batch: ``'mlm_targets'`` int [B, L], ``'mlm_weights'`` [B, L], optional
        ``'attention_mask'`` [B, L] (none = every token real).
      discriminator_weight: λ of the paper (50).

    Returns:
      ``(loss, metrics)``, float32 scalars: ``loss``; ``accuracy`` (the discriminator's, over real
      tokens); ``num_tokens`` (real tokens); ``generator_loss`` / ``generator_accuracy`` (over
      predicted positions); ``discriminator_loss`` / ``discriminator_accuracy``;
      ``replaced_fraction`` (share of real tokens that are replaced: always answering "original"
      scores ``1 - replaced_fraction``); ``replaced_recall`` (accuracy on replaced tokens; that
      baseline scores 0).
    """
    generator_loss, generator_metrics = mlm_loss({"logits": outputs["generator_logits"]}, batch)
    targets = batch["mlm_targets"]
    disc_inputs = outputs["discriminator_inputs"]
    if disc_inputs.shape != targets.shape:
        raise ValueError(
            f"discriminator_inputs {disc_inputs.shape} and mlm_targets {targets.shape} disagree."
        )
    labels = is_replaced_labels(targets, disc_inputs, batch["mlm_weights"])  # int32 [B, L]
    attention_mask = batch.get("attention_mask")
    disc_loss, disc_metrics = discriminator_loss(
        outputs["discriminator_logits"], labels, attention_mask
    )
    real = (
        jnp.ones(labels.shape, jnp.float32)
        if attention_mask is None
        else jnp.asarray(attention_mask != 0, jnp.float32)
    )  # [B, L]
    replaced = jnp.asarray(labels, jnp.float32) * real  # [B, L]
    tiny = jnp.finfo(jnp.float32).tiny
    num_replaced = jnp.sum(replaced)
    predicted_replaced = jnp.asarray(outputs["discriminator_logits"] > 0, jnp.float32)
    replaced_recall = jnp.sum(predicted_replaced * replaced) / jnp.maximum(num_replaced, tiny)
    loss = generator_loss + discriminator_weight * disc_loss
    metrics = {
        "loss": loss,
        "accuracy": disc_metrics["accuracy"],
        "num_tokens": disc_metrics["num_tokens"],
        "generator_loss": generator_loss,
        "generator_accuracy": generator_metrics["accuracy"],
        "discriminator_loss": disc_loss,
        "discriminator_accuracy": disc_metrics["accuracy"],
        "replaced_fraction": num_replaced / jnp.maximum(disc_metrics["num_tokens"], tiny),
        "replaced_recall": replaced_recall,
    }
    return loss, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}


def electra_objective(*, discriminator_weight: float = 50.0, **masking_kwargs: Any):
    """The ELECTRA ``Objective``: ``mlm.electra_masking`` (``masking_kwargs``: ``mask_id``,
    ``special_ids``, ``rate``, ``max_predictions``, ``mask_prob``, ``with_replacement``) and
    ``electra_loss``; the model reads ``MODEL_INPUTS`` and samples with the ``'sample'`` rng.

    Register one for a vocabulary with
    ``objectives.register('electra', lambda: electra_objective(mask_id=..., special_ids=...))``.
    """
    from lmjax.objectives import Objective

    def corrupt(key: jax.Array, batch: dict[str, Any]) -> dict[str, Any]:
        return electra_masking(key, batch, **masking_kwargs)

    def loss(outputs, batch):
        return electra_loss(outputs, batch, discriminator_weight=discriminator_weight)

    return Objective(name="electra", corrupt=corrupt, loss=loss, model_inputs=MODEL_INPUTS)
