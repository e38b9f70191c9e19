"""TinyBERT: a small BERT student with a ``fit_dense`` projection to the teacher's width, returning
the per-layer outputs its layer-wise distillation needs.

Axis legend: B batch, L length, N layers, E embed (student), T teacher width, H heads,
D head dim (E / H), F mlp, V vocab.

References:
- Jiao et al. 2020, "TinyBERT: Distilling BERT for Natural Language Understanding" §3.1-3.3
  (attention-based, hidden-state, embedding and prediction-layer distillation; TinyBERT4 =
  4 layers, hidden 312, FFN 1200, 12 heads, 14.5M parameters; TinyBERT6 = 6 layers, 768, 67M).
- ``huawei-noah/Pretrained-Language-Model:TinyBERT/transformer/modeling.py``
  (``TinyBertForPreTraining``: ``fit_dense = Linear(hidden_size, fit_size=768)`` applied to every
  returned hidden state; ``BertSelfAttention`` returns the pre-softmax ``attention_scores``, to
  which the extended mask, -10000 at padded keys, has been added) and ``general_distill.py``.

TinyBERT *is* BERT (the hub checkpoints are ``model_type: bert``): ``TinyBERTConfig`` subclasses
``lmjax.models.bert.BERTConfig`` and ``TinyBERT`` subclasses ``lmjax.models.bert.BERT``, keeping
its parameter names, so ``lmjax.convert.hf_bert`` loads TinyBERT and BERT checkpoints alike and a
BERT parameter tree drives a ``TinyBERT(fit_dense=False)`` (how ``lmjax.models.teacher_student``
gets a BERT teacher's per-layer outputs). Added parameters::

    fit_dense/kernel [E, T] (embed, mlp), fit_dense/bias [T] (mlp)     -- if fit_dense

Outputs (``model.apply({'params': p}, inputs, token_type_ids, attention_mask, ...)``)::

    'hidden'             [B, L, E]             the last layer's output
    'pooled'             [B, E]                if pooler
    'logits'             float32 [B, L, V]     if mlm_head
    'nsp_logits'         float32 [B, 2]        if nsp_head
    'fit_hidden'         float32 [B, L, T]     fit_dense('hidden'), if fit_dense
    'hidden_states'      float32 [N + 1, B, L, E]   if per_layer_outputs; [0] = embedding output
    'fit_hidden_states'  float32 [N + 1, B, L, T]   fit_dense of each, if both
    'attention_scores'   float32 [N, B, H, L, L]    if per_layer_outputs

Masking convention of ``attention_scores``: they are ``q.k / sqrt(D)`` *without* the padding
mask (padded keys keep their raw scores). The reference adds -10000 at padded keys and its loss
zeroes every entry <= -100 in student and teacher alike, i.e. it compares zeros at padded keys;
``lmjax.objectives.distillation.tinybert_loss`` zeroes the padded-key entries of both, which is
the same comparison without relying on a threshold.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax import axes
from lmjax.layers.dense import DenseGeneral
from lmjax.models import bert, encoder_parts, parameters


@dataclasses.dataclass(frozen=True)
class TinyBERTConfig(bert.BERTConfig):
    """A ``BERTConfig`` (every field of it, same meaning) plus the distillation fields.

    Attributes:
      fit_dense: the ``fit_dense`` projection E -> ``teacher_dim`` (the reference's).
      teacher_dim: T, the teacher's hidden width (``fit_size``, 768 for BERT-base).
      per_layer_outputs: return ``hidden_states``, ``attention_scores`` (and
        ``fit_hidden_states``); on in every preset, since distillation is what TinyBERT is for.
    """

    fit_dense: bool = True
    teacher_dim: int = 768
    per_layer_outputs: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fit_dense and self.teacher_dim <= 0:
            raise ValueError(
                f"Invalid TinyBERTConfig: teacher_dim={self.teacher_dim} must be positive when "
                "fit_dense=True (the teacher's hidden size, e.g. 768)."
            )


def from_bert_config(config: bert.BERTConfig, **overrides: Any) -> TinyBERTConfig:
    """A ``TinyBERTConfig`` with the fields of ``config`` (e.g. ``fit_dense=False`` for a BERT
    teacher that must return per-layer outputs)."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(bert.BERTConfig)}
    values.update(overrides)
    return TinyBERTConfig(**values)


def _tinybert(num_layers: int, embed_dim: int, mlp_dim: int) -> TinyBERTConfig:
    # General-distillation students: BERT uncased vocabulary, MLM head kept (prediction-layer
    # distillation on MLM logits), no NSP head (TinyBERT distils no NSP).
    return TinyBERTConfig(
        num_layers=num_layers, embed_dim=embed_dim, num_heads=12, mlp_dim=mlp_dim, nsp_head=False
    )


# huawei-noah/TinyBERT_General_4L_312D (hub config.json: 4 layers, 312, 12 heads, FFN 1200) and
# TinyBERT_General_6L_768D (README); 'tiny' for CPU tests, against a 128-wide tiny teacher.
PRESETS: dict[str, TinyBERTConfig] = {
    "tiny": TinyBERTConfig(
        vocab_size=2048,
        max_len=128,
        num_layers=2,
        embed_dim=128,
        num_heads=2,
        mlp_dim=512,
        nsp_head=False,
        teacher_dim=128,
    ),
    "4l-312": _tinybert(4, 312, 1200),
    "6l-768": _tinybert(6, 768, 3072),
}


class TinyBERT(bert.BERT):
    """BERT with per-layer outputs and ``fit_dense`` (see the module docstring).

    Attributes:
      config: the model's ``TinyBERTConfig``.
    """

    config: TinyBERTConfig

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        token_type_ids: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        deterministic: bool = True,
    ) -> dict[str, jax.Array]:
        """Runs the encoder, its heads and ``fit_dense``; arguments as ``bert.BERT``.

        Returns:
          the outputs listed in the module docstring.
        """
        cfg = self.config
        encoder_parts.check_inputs("TinyBERT", inputs, cfg.max_len)
        positions = self.checked_positions(inputs, positions)
        types = encoder_parts.token_types(inputs, token_type_ids, cfg.type_vocab_size)
        token_embed, x = encoder_parts.embed(cfg, inputs, positions, types, deterministic)
        mask = encoder_parts.encoder_mask(attention_mask, segment_ids, inputs.shape[1])
        per_layer = cfg.per_layer_outputs
        result = encoder_parts.encode(
            cfg, self.block_config(), x, mask, deterministic, per_layer_outputs=per_layer
        )
        outputs = encoder_parts.encoder_outputs(result, x, per_layer)
        x = outputs["hidden"]  # [B, L, E]
        if cfg.fit_dense:
            fit = DenseGeneral(
                cfg.teacher_dim,
                (axes.EMBED, axes.MLP),
                kernel_init=encoder_parts.truncated_normal(cfg),
                name="fit_dense",
                **encoder_parts.dtypes(cfg),
            )
            outputs["fit_hidden"] = jnp.asarray(fit(x), jnp.float32)  # [B, L, T]
            if cfg.per_layer_outputs:
                outputs["fit_hidden_states"] = jnp.asarray(
                    fit(outputs["hidden_states"]), jnp.float32
                )  # [N + 1, B, L, T]
        if cfg.pooler:
            outputs.update(encoder_parts.pooled_outputs(cfg, x, "nsp" if cfg.nsp_head else None))
        if cfg.mlm_head:
            outputs["logits"] = encoder_parts.mlm_logits(self, cfg, x, token_embed.attend)
        return outputs


Config = TinyBERTConfig  # the family protocol of lmjax.models: Config, PRESETS, Model
Model = TinyBERT


def param_shapes(config: TinyBERTConfig) -> Any:
    """The parameter tree as ``jax.ShapeDtypeStruct`` leaves (no allocation, via eval_shape)."""
    return parameters.abstract_params(TinyBERT(config))


def count_params(config: TinyBERTConfig) -> int:
    """The number of parameters of a model built from ``config`` (no allocation)."""
    return parameters.param_count(param_shapes(config))


to_scanned_layout = bert.to_scanned_layout
to_unscanned_layout = bert.to_unscanned_layout

__all__ = [
    "Config",
    "Model",
    "PRESETS",
    "TinyBERT",
    "TinyBERTConfig",
    "count_params",
    "from_bert_config",
    "param_shapes",
    "to_scanned_layout",
    "to_unscanned_layout",
]
