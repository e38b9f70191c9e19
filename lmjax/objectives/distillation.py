"""Knowledge-distillation losses: DistilBERT's triple loss and TinyBERT's layer-wise losses.

Axis legend: B batch, L length, V vocab, E student width, T teacher width, H heads,
N_s / N_t student / teacher layers.

The losses read the outputs of ``lmjax.models.teacher_student.TeacherStudent``:
``outputs = {'student': {...}, 'teacher': {...}}`` (the teacher's already gradient-stopped), and
the batch of the encoder contract (``'inputs'``, ``'attention_mask'`` 1 = real token, and after MLM
corruption ``'mlm_targets'`` / ``'mlm_weights'``). Each returns ``(loss, metrics)`` with float32
scalars ``loss``, ``accuracy`` (the student's MLM accuracy over ``mlm_weights`` where the batch
has MLM targets, else 0), ``num_tokens`` (the real, non-pad tokens: the weight the train step
averages micro-batches with) and the component losses.

DistilBERT (Sanh et al. 2019, §2; HF ``examples/research_projects/distillation/distiller.py``
``Distiller.step``)::

    loss = alpha_ce * T^2 * KL(softmax(t / T) || softmax(s / T))   KLDivLoss(reduction='batchmean')
         + alpha_mlm * CE(s, mlm targets)                          mean over the predicted tokens
         + alpha_cos * (1 - cos(h_s, h_t))                         CosineEmbeddingLoss(target=1)

The KL is summed over the vocabulary and averaged over the selected positions: every real
(non-pad) token, the reference's default (``mask = attention_mask``), or only the MLM-predicted
tokens with ``restrict_ce_to_mask=True`` (the reference's ``--restrict_ce_to_mask``, where
``lm_labels > -1``). The cosine term compares the last hidden states ('hidden') and is averaged
over the real tokens. Defaults are the README's ``--alpha_ce 5.0 --alpha_mlm 2.0 --alpha_cos 1.0``
and ``train.py``'s ``--temperature 2.0``. The reference's optional CLM and MSE terms are left out.

TinyBERT (Jiao et al. 2020, §3.1-3.2; ``huawei-noah/Pretrained-Language-Model:TinyBERT/
general_distill.py`` and ``task_distill.py``), with ``k = N_t / N_s`` (the reference's
``layers_per_block``; it must divide)::

    att_loss  = sum_{i < N_s}  MSE(A_s[i], A_t[i*k + k - 1])         pre-softmax scores
    rep_loss  = sum_{i <= N_s} MSE(fit_dense(H_s[i]), H_t[i*k])      H[0] = the embedding output
    pred_loss = mean_tokens sum_V -softmax(z_t / T) * log_softmax(z_s / T)

Student layer ``m`` (1-indexed) is matched with teacher layer ``m*k``, e.g. teacher layers 3, 6,
9, 12 for 12 -> 4. Each MSE is the mean over all elements of the stacked [B, H, L, L] /
[B, L, T] arrays, padded positions included, as the reference's ``MSELoss()``; score entries at
padded keys are zeroed in both networks first (the reference zeroes entries <= -100, i.e. the
-10000-masked padded keys; lmjax's scores are unmasked, so the key mask does it). Stage
``'intermediate'``: ``loss = att_loss + rep_loss``; stage ``'prediction'``: ``loss = pred_loss``
over the MLM logits, averaged over ``mlm_weights`` when the batch has them, else over the real
tokens. The reference's ``soft_cross_entropy`` takes ``.mean()`` over the class axis as well (it
distils [B, C] classifier logits); here the class axis is summed (a proper cross-entropy per
token), and ``class_mean=True`` divides by V to reproduce the reference's scale.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from lmjax.objectives import masking, mlm
from lmjax.objectives.causal_lm import weighted_token_loss

MODEL_INPUTS = ("inputs", "token_type_ids", "attention_mask")
KINDS = ("distilbert", "tinybert_intermediate", "tinybert_prediction")
STAGES = ("intermediate", "prediction")
_COSINE_EPS = 1e-12  # torch CosineEmbeddingLoss's EPSILON under the square roots


def _split(outputs: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    if "student" not in outputs or "teacher" not in outputs:
        raise ValueError(
            f"Distillation losses read outputs['student'] and outputs['teacher'] (the "
            f"teacher_student model); got keys {sorted(outputs)}."
        )
    return outputs["student"], outputs["teacher"]


def _real_tokens(batch: Mapping[str, Any]) -> jax.Array:
    """float32 [B, L]: 1 at real tokens (all ones without ``attention_mask``)."""
    return masking.real_token_mask(dict(batch)).astype(jnp.float32)


def _weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    """sum(w * v) / sum(w), 0 when the weights sum to 0."""
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), jnp.finfo(jnp.float32).tiny)


def _student_mlm(student: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, jax.Array]:
    """The student's MLM loss and accuracy, where the batch has MLM targets (else zeros)."""
    if "mlm_targets" not in batch or "mlm_weights" not in batch or "logits" not in student:
        zero = jnp.zeros((), jnp.float32)
        return {"mlm_loss": zero, "accuracy": zero}
    loss, metrics = weighted_token_loss(
        student["logits"], batch["mlm_targets"], jnp.asarray(batch["mlm_weights"], jnp.float32)
    )
    return {"mlm_loss": loss, "accuracy": metrics["accuracy"]}


def soft_cross_entropy(
    student_logits: jax.Array, teacher_logits: jax.Array, temperature: float
) -> jax.Array:
    """float32 [...]: ``sum_V -softmax(t / T) * log_softmax(s / T)`` per position."""
    s = jnp.asarray(student_logits, jnp.float32) / temperature
    t = jnp.asarray(teacher_logits, jnp.float32) / temperature
    return -jnp.sum(jax.nn.softmax(t, axis=-1) * jax.nn.log_softmax(s, axis=-1), axis=-1)


def kl_divergence(
    student_logits: jax.Array, teacher_logits: jax.Array, temperature: float
) -> jax.Array:
    """float32 [...]: ``KL(softmax(t / T) || softmax(s / T))`` per position (sum over V)."""
    log_s = jax.nn.log_softmax(jnp.asarray(student_logits, jnp.float32) / temperature, axis=-1)
    log_t = jax.nn.log_softmax(jnp.asarray(teacher_logits, jnp.float32) / temperature, axis=-1)
    return jnp.sum(jnp.exp(log_t) * (log_t - log_s), axis=-1)


def cosine_distance(student_hidden: jax.Array, teacher_hidden: jax.Array) -> jax.Array:
    """float32 [...]: ``1 - cos(h_s, h_t)`` per position, torch CosineEmbeddingLoss's form
    ``x.y / sqrt((|x|^2 + eps) (|y|^2 + eps))`` with eps 1e-12."""
    s = jnp.asarray(student_hidden, jnp.float32)
    t = jnp.asarray(teacher_hidden, jnp.float32)
    dot = jnp.sum(s * t, axis=-1)
    norms = jnp.sqrt((jnp.sum(s * s, -1) + _COSINE_EPS) * (jnp.sum(t * t, -1) + _COSINE_EPS))
    return 1.0 - dot / norms


def distilbert_loss(
    outputs: Mapping[str, Any],
    batch: Mapping[str, Any],
    *,
    temperature: float = 2.0,
    alpha_ce: float = 5.0,
    alpha_mlm: float = 2.0,
    alpha_cos: float = 1.0,
    restrict_ce_to_mask: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DistilBERT's triple loss (see the module docstring for the exact positions and forms).

    Args:
      outputs: ``{'student': {'logits' [B, L, V], 'hidden' [B, L, E]}, 'teacher': {same}}``.
      batch: ``'inputs'``, ``'attention_mask'``; ``'mlm_targets'`` / ``'mlm_weights'`` (needed
        when ``alpha_mlm > 0`` or ``restrict_ce_to_mask``).
      temperature: T of the softened distributions.
      alpha_ce: weight of ``T^2 * KL``.
      alpha_mlm: weight of the student's MLM cross-entropy.
      alpha_cos: weight of the hidden-state cosine distance.
      restrict_ce_to_mask: the KL over MLM-predicted tokens only (default: all real tokens).

    Returns:
      ``(loss, metrics)``: metrics ``loss``, ``accuracy``, ``num_tokens``, ``kl_loss``
      (``T^2 * KL``, the reference's ``loss_ce``), ``mlm_loss``, ``cos_loss``.
    """
    student, teacher = _split(outputs)
    if student["logits"].shape != teacher["logits"].shape:
        raise ValueError(
            f"Student logits {student['logits'].shape} and teacher logits "
            f"{teacher['logits'].shape} differ; distillation needs one vocabulary."
        )
    real = _real_tokens(batch)  # [B, L]
    needs_mlm = alpha_mlm > 0 or restrict_ce_to_mask
    if needs_mlm and ("mlm_targets" not in batch or "mlm_weights" not in batch):
        raise ValueError(
            "distilbert_loss needs batch['mlm_targets'] and batch['mlm_weights'] (MLM "
            "corruption) for alpha_mlm > 0 or restrict_ce_to_mask; corrupt the batch first."
        )
    ce_weights = jnp.asarray(batch["mlm_weights"], jnp.float32) if restrict_ce_to_mask else real
    kl = kl_divergence(student["logits"], teacher["logits"], temperature)  # [B, L]
    kl_loss = _weighted_mean(kl, ce_weights) * temperature**2
    mlm_metrics = _student_mlm(student, batch)
    cos_loss = _weighted_mean(cosine_distance(student["hidden"], teacher["hidden"]), real)
    loss = alpha_ce * kl_loss + alpha_mlm * mlm_metrics["mlm_loss"] + alpha_cos * cos_loss
    loss = jnp.asarray(loss, jnp.float32)
    metrics = {
        "loss": loss,
        "accuracy": mlm_metrics["accuracy"],
        "num_tokens": jnp.sum(real),
        "kl_loss": kl_loss,
        "mlm_loss": mlm_metrics["mlm_loss"],
        "cos_loss": cos_loss,
    }
    return loss, metrics


def layers_per_block(student_layers: int, teacher_layers: int) -> int:
    """TinyBERT's ``k = N_t / N_s``; raises ValueError unless N_s divides N_t."""
    if student_layers <= 0 or teacher_layers % student_layers:
        raise ValueError(
            f"TinyBERT maps student layer m to teacher layer m * N_t / N_s, which needs the "
            f"student's {student_layers} layers to divide the teacher's {teacher_layers}."
        )
    return teacher_layers // student_layers


def _per_layer(network: Mapping[str, Any], key: str, role: str) -> jax.Array:
    if key not in network:
        raise ValueError(
            f"tinybert_loss needs the {role}'s per-layer output {key!r}; build the "
            "teacher_student model with per_layer_outputs=True."
        )
    return jnp.asarray(network[key], jnp.float32)


def tinybert_intermediate_losses(
    outputs: Mapping[str, Any], batch: Mapping[str, Any]
) -> tuple[jax.Array, jax.Array]:
    """``(att_loss, rep_loss)`` of TinyBERT's intermediate-layer distillation (module docstring)."""
    student, teacher = _split(outputs)
    s_att = _per_layer(student, "attention_scores", "student")  # [N_s, B, H, L, L]
    t_att = _per_layer(teacher, "attention_scores", "teacher")  # [N_t, B, H, L, L]
    if s_att.shape[1:] != t_att.shape[1:]:
        raise ValueError(
            f"Student attention scores {s_att.shape[1:]} and teacher's {t_att.shape[1:]} differ "
            "per layer; TinyBERT's attention loss needs the same number of heads."
        )
    k = layers_per_block(s_att.shape[0], t_att.shape[0])
    real_keys = _real_tokens(batch)[None, :, None, None, :]  # [1, B, 1, 1, L]
    t_att = t_att[k - 1 :: k]  # [N_s, B, H, L, L]: teacher layers k-1, 2k-1, ...
    per_layer_att = jnp.mean(((s_att - t_att) * real_keys) ** 2, axis=(1, 2, 3, 4))  # [N_s]
    att_loss = jnp.sum(per_layer_att)

    s_rep = (
        _per_layer(student, "fit_hidden_states", "student")
        if "fit_hidden_states" in student
        else _per_layer(student, "hidden_states", "student")
    )  # [N_s + 1, B, L, T]
    t_rep = _per_layer(teacher, "hidden_states", "teacher")  # [N_t + 1, B, L, T]
    t_rep = t_rep[::k]  # [N_s + 1, B, L, T]: teacher reps 0, k, 2k, ...
    if s_rep.shape != t_rep.shape:
        raise ValueError(
            f"Student hidden states {s_rep.shape} (after fit_dense) and the mapped teacher "
            f"hidden states {t_rep.shape} differ; give the student fit_dense with teacher_dim "
            "equal to the teacher's width."
        )
    rep_loss = jnp.sum(jnp.mean((s_rep - t_rep) ** 2, axis=(1, 2, 3)))
    return att_loss, rep_loss


def tinybert_loss(
    outputs: Mapping[str, Any],
    batch: Mapping[str, Any],
    *,
    stage: str = "intermediate",
    temperature: float = 1.0,
    class_mean: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """TinyBERT's distillation loss of one stage (see the module docstring).

    Args:
      outputs: ``{'student', 'teacher'}`` with per-layer outputs (``'attention_scores'``,
        ``'hidden_states'``, the student's ``'fit_hidden_states'``) for the intermediate stage
        and ``'logits'`` for the prediction stage.
      batch: ``'inputs'``, ``'attention_mask'``; optionally ``'mlm_targets'`` / ``'mlm_weights'``.
      stage: ``'intermediate'`` (att + rep) or ``'prediction'`` (soft cross-entropy).
      temperature: the prediction stage's T (the reference's ``--temperature``, default 1).
      class_mean: divide the soft cross-entropy by V, as the reference's ``.mean()``.

    Returns:
      ``(loss, metrics)``: ``loss``, ``accuracy``, ``num_tokens``, and ``att_loss`` /
      ``rep_loss`` (intermediate) or ``pred_loss`` (prediction).
    """
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r} must be one of {STAGES}.")
    student, teacher = _split(outputs)
    real = _real_tokens(batch)
    accuracy = _student_mlm(student, batch)["accuracy"]
    metrics: dict[str, jax.Array] = {"accuracy": accuracy, "num_tokens": jnp.sum(real)}
    if stage == "intermediate":
        att_loss, rep_loss = tinybert_intermediate_losses(outputs, batch)
        loss = att_loss + rep_loss
        metrics.update(att_loss=att_loss, rep_loss=rep_loss)
    else:
        if "logits" not in student or "logits" not in teacher:
            raise ValueError("The prediction stage needs 'logits' from student and teacher.")
        if student["logits"].shape != teacher["logits"].shape:
            raise ValueError(
                f"Student logits {student['logits'].shape} and teacher logits "
                f"{teacher['logits'].shape} differ."
            )
        weights = (
            jnp.asarray(batch["mlm_weights"], jnp.float32) if "mlm_weights" in batch else real
        )
        per_token = soft_cross_entropy(student["logits"], teacher["logits"], temperature)
        if class_mean:
            per_token = per_token / student["logits"].shape[-1]
        loss = _weighted_mean(per_token, weights)
        metrics["pred_loss"] = loss
    loss = jnp.asarray(loss, jnp.float32)
    metrics["loss"] = loss
    return loss, metrics


def _with_encoder_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The batch with ``token_type_ids`` (zeros) and ``attention_mask`` (ones) where missing."""
    out = dict(batch)
    shape = batch["inputs"].shape
    out.setdefault("token_type_ids", jnp.zeros(shape, jnp.int32))
    out.setdefault("attention_mask", jnp.ones(shape, jnp.int32))
    return out


def distillation_objective(
    kind: str = "distilbert",
    *,
    name: str | None = None,
    mask: bool | None = None,
    loss_options: Mapping[str, Any] | None = None,
    **masking_kwargs: Any,
):
    """An ``lmjax.objectives.Objective`` for a distillation run of a teacher_student model.

    Args:
      kind: ``'distilbert'`` (``distilbert_loss``), ``'tinybert_intermediate'`` or
        ``'tinybert_prediction'`` (``tinybert_loss`` with that stage).
      name: the objective's name (default ``kind``).
      mask: apply ``lmjax.objectives.mlm.mlm_corruption`` in ``corrupt``; default True for
        DistilBERT (its MLM term) and False for TinyBERT, whose general distillation reads
        unmasked text (``corrupt`` then only fills in missing ``token_type_ids`` /
        ``attention_mask``).
      loss_options: keyword options of the loss (e.g. ``temperature``, ``alpha_ce``,
        ``restrict_ce_to_mask``, ``class_mean``).
      **masking_kwargs: options of ``mlm_corruption`` (``mask_id``, ``vocab_size``,
        ``special_ids``, ``rate``, ...). DistilBERT's reference samples positions with
        ``mlm_smoothing`` over the whole batch; lmjax uses BERT's per-row masking here.

    Returns:
      ``Objective(name, corrupt, loss, model_inputs=('inputs', 'token_type_ids',
      'attention_mask'))``.
    """
    from lmjax.objectives import Objective

    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} must be one of {KINDS}.")
    options = dict(loss_options or {})
    loss_fn = distilbert_loss if kind == "distilbert" else tinybert_loss
    known = [p for p in inspect.signature(loss_fn).parameters if p not in ("outputs", "batch")]
    unknown = sorted(set(options) - set(known) - {"stage"})
    if unknown or "stage" in options:
        raise ValueError(
            f"objective {kind!r} has no option(s) {unknown or ['stage']}; its loss options are "
            f"{', '.join(k for k in known if k != 'stage')} (and mlm_corruption's masking "
            "options where it masks)."
        )
    if kind == "distilbert":
        loss = functools.partial(distilbert_loss, **options)
        mask = True if mask is None else mask
    else:
        stage = kind.split("_", 1)[1]
        loss = functools.partial(tinybert_loss, stage=stage, **options)
        mask = False if mask is None else mask
    if masking_kwargs and not mask:
        raise ValueError(
            f"Masking options {sorted(masking_kwargs)} were given but mask=False for {kind!r}; "
            "pass mask=True to corrupt the inputs."
        )

    def corrupt(key: jax.Array, batch: dict[str, Any]) -> dict[str, Any]:
        batch = _with_encoder_inputs(batch)
        if mask:
            batch = mlm.mlm_corruption(key, batch, **masking_kwargs)
        return batch

    return Objective(name=name or kind, corrupt=corrupt, loss=loss, model_inputs=MODEL_INPUTS)


__all__ = [
    "KINDS",
    "MODEL_INPUTS",
    "STAGES",
    "cosine_distance",
    "distilbert_loss",
    "distillation_objective",
    "kl_divergence",
    "layers_per_block",
    "soft_cross_entropy",
    "tinybert_intermediate_losses",
    "tinybert_loss",
]
