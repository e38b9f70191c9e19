"""Hugging Face BERT / RoBERTa checkpoints -> lmjax BERT parameters (``lmjax.models.bert``).

Reads a Hugging Face model directory (``config.json`` + safetensors, single file or sharded) of a
``BertForPreTraining``, ``BertForMaskedLM``, ``BertModel``, ``RobertaForMaskedLM`` or
``RobertaModel`` and returns the lmjax model config (``bert_model_config``) and the parameter tree
(``bert_params_from_hf``) in the scanned or unscanned layout the config asks for. No PyTorch.

Which heads the lmjax model gets follows the tensors present: ``pooler`` if ``pooler.dense`` is
stored, ``mlm_head`` if ``cls.predictions.*`` / ``lm_head.*`` is, ``nsp_head`` if
``cls.seq_relationship`` is.

Name correspondences (HF ``transformers/models/bert/modeling_bert.py`` and
``roberta/modeling_roberta.py``; ``nn.Linear`` stores ``weight`` [out, in], so kernels are
transposed; prefix ``bert.`` / ``roberta.`` for the encoder, none for bare ``*Model`` files):

=================================================  =============================================
HF                                                  lmjax (layer i; scanned: stacked [N, ...])
=================================================  =============================================
``embeddings.word_embeddings.weight`` [V, E]        ``token_embed/embedding``
``embeddings.position_embeddings.weight`` [P, E]    ``position_embed/embedding``
``embeddings.token_type_embeddings.weight`` [T, E]  ``type_embed/embedding``
``embeddings.LayerNorm.{weight,bias}``              ``embed_norm/{scale,bias}``
``encoder.layer.i.attention.self.{q,k,v}`` [E, E]   ``encoder/layers_i/attention/{query,key,value}``
                                                    kernel ``W^T`` -> [E, H, D], bias -> [H, D]
``encoder.layer.i.attention.output.dense``          ``.../attention/out`` kernel [H, D, E]
``encoder.layer.i.attention.output.LayerNorm``      ``.../attention_norm``
``encoder.layer.i.intermediate.dense`` [F, E]       ``.../mlp/wi`` kernel [E, F]
``encoder.layer.i.output.dense`` [E, F]             ``.../mlp/wo`` kernel [F, E]
``encoder.layer.i.output.LayerNorm``                ``.../mlp_norm``
``pooler.dense``                                    ``pooler``
``cls.predictions.transform.dense`` / ``lm_head.dense``            ``mlm_transform``
``cls.predictions.transform.LayerNorm`` / ``lm_head.layer_norm``   ``mlm_norm``
``cls.predictions.bias`` / ``lm_head.bias`` [V]     ``mlm_bias``
``cls.predictions.decoder.weight`` / ``lm_head.decoder.weight``    tied: checked equal to the table
``cls.predictions.decoder.bias`` / ``lm_head.decoder.bias``        tied: checked equal, ``mlm_bias``
``cls.seq_relationship`` [2, E]                     ``nsp`` kernel [E, 2]
=================================================  =============================================

Heads: HF splits the E output features of q/k/v as (H, D) row-major (``view(..., H, D)``), so
feature ``c`` is head ``c // D``, dim ``c % D``. Buffers (``embeddings.position_ids``,
``embeddings.token_type_ids``) are skipped; any other unused tensor, a missing one or a shape
mismatch raises a ``ValueError`` naming the tensor.

Axis legend: N layers, E embed, H heads, D head dim, F mlp, V vocab, P positions, T token types.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import ml_collections

from lmjax import models
from lmjax.convert import safetensors_checkpoint as ckpt
from lmjax.models import bert

# Per model type: the encoder prefix, the MLM head's names and the preset for unstated fields.
_LAYOUTS = {
    "bert": dict(
        prefix="bert.",
        mlm="cls.predictions.",
        transform="cls.predictions.transform.dense",
        transform_norm="cls.predictions.transform.LayerNorm",
        preset="base",
        position_convention="arange",
    ),
    "roberta": dict(
        prefix="roberta.",
        mlm="lm_head.",
        transform="lm_head.dense",
        transform_norm="lm_head.layer_norm",
        preset="roberta-base",
        position_convention="fairseq",
    ),
}
_SKIPPED = re.compile(r"(^|\.)embeddings\.(position_ids|token_type_ids)$")


def _model_type(config: Mapping[str, Any]) -> str:
    model_type = config.get("model_type")
    if model_type not in _LAYOUTS:
        raise ValueError(
            f"Unsupported Hugging Face model_type {model_type!r}; lmjax.convert.hf_bert reads "
            f"{sorted(_LAYOUTS)}."
        )
    return model_type


def bert_config_fields(
    config: Mapping[str, Any], tensor_names: set[str] | None = None
) -> dict[str, Any]:
    """Returns the ``BERTConfig`` fields that an HF ``bert`` / ``roberta`` config.json fixes.

    Args:
      config: the parsed config.json.
      tensor_names: the checkpoint's tensor names; when given, ``pooler``, ``mlm_head`` and
        ``nsp_head`` follow which heads are stored.

    Raises:
      ValueError: for what lmjax's BERT does not implement (relative position embeddings, a
        decoder / cross-attention configuration, an unknown activation).
    """
    model_type = _model_type(config)
    layout = _LAYOUTS[model_type]
    problems = ckpt.encoder_config_problems(
        config, ckpt.HF_ACTIVATIONS, "gelu", " (BERT as a decoder)"
    )
    if problems:
        raise ValueError(
            f"This {model_type} config uses what lmjax's BERT does not implement: "
            + "; ".join(problems)
            + "."
        )
    fields = ckpt.encoder_config_fields(config, ckpt.HF_ACTIVATIONS)
    fields.update(
        position_convention=layout["position_convention"],
        pad_token_id=int(config.get("pad_token_id") or 0),
    )
    if tensor_names is not None:
        names = set(tensor_names)
        prefix = ckpt.encoder_prefix(names, layout["prefix"])
        fields["pooler"] = f"{prefix}pooler.dense.weight" in names
        fields["mlm_head"] = any(n.startswith(layout["mlm"]) for n in names)
        fields["nsp_head"] = "cls.seq_relationship.weight" in names
    return fields


def bert_model_config(directory: str | os.PathLike, **overrides: Any) -> ml_collections.ConfigDict:
    """Returns the lmjax model config (``family='bert'`` + every BERTConfig field) of a directory.

    The 'base' preset supplies unstated fields for ``bert`` checkpoints, 'roberta-base' for
    ``roberta``; ``overrides`` (e.g. ``scan_layers=False``, ``dtype='bfloat16'``) win over both.
    """
    config = ckpt.hf_config(directory)
    fields = bert_config_fields(config, set(ckpt.hf_tensors(directory)))
    fields.update(overrides)
    return models.config_dict("bert", _LAYOUTS[_model_type(config)]["preset"], **fields)


def bert_params_from_hf(
    directory: str | os.PathLike, model_config=None, *, skip_unexpected: bool = False
) -> dict[str, Any]:
    """Returns lmjax BERT parameters (NumPy arrays) converted from an HF BERT / RoBERTa checkpoint.

    Args:
      directory: a Hugging Face ``bert`` / ``roberta`` model directory (safetensors).
      model_config: a ``BERTConfig`` or a ConfigDict / dict of its fields; default
        ``bert_model_config(directory)``. Its ``scan_layers`` picks the layout, its
        ``param_dtype`` the storage dtype and its head flags which heads are read.
      skip_unexpected: ignore stored tensors the model does not use (e.g. a classifier head, or
        the NSP head of a checkpoint converted for a model with ``nsp_head=False``).

    Returns:
      The ``params`` tree for ``model.apply({'params': tree}, ...)``, matching
      ``lmjax.models.bert.param_shapes(config)`` in structure, shapes and dtype.

    Raises:
      ValueError: naming the tensor, for missing and unexpected tensors and shape mismatches.
    """
    directory = os.fspath(directory)
    hf = ckpt.hf_config(directory)
    layout = _LAYOUTS[_model_type(hf)]
    if model_config is None:
        model_config = bert_model_config(directory)
    cfg = ckpt.family_config(model_config, "bert", bert.BERTConfig)
    tensors = ckpt.hf_tensors(directory)
    prefix = ckpt.encoder_prefix(set(tensors), layout["prefix"])
    src = ckpt.CheckpointTensors(tensors, directory, _SKIPPED, "bert_model_config")
    e, v = cfg.embed_dim, cfg.vocab_size

    params = ckpt.embedding_params(
        src, f"{prefix}embeddings", v, cfg.max_len, e, cfg.type_vocab_size
    )
    layers = [
        ckpt.post_ln_layer_params(
            src, f"{prefix}encoder.layer.{i}", ckpt.PostLNLayerNames(), e, cfg.num_heads,
            cfg.mlp_dim,
        )
        for i in range(cfg.num_layers)
    ]
    params["encoder"] = ckpt.layer_stack(layers, cfg.scan_layers)
    if cfg.pooler:
        params["pooler"] = ckpt.dense_params(src, f"{prefix}pooler.dense", e, e)
    if cfg.nsp_head:
        params["nsp"] = ckpt.dense_params(src, "cls.seq_relationship", e, 2)  # kernel [E, 2]
    if cfg.mlm_head:
        params.update(ckpt.mlm_head_params(
            src, "BERT", transform=layout["transform"], norm=layout["transform_norm"],
            bias=f"{layout['mlm']}bias", decoder=f"{layout['mlm']}decoder", hidden=e, width=e,
            token_table=params["token_embed"]["embedding"],
        ))
    return ckpt.finished_params(
        src, params, cfg, bert.param_shapes(cfg), "BERT", skip_unexpected,
        user="this lmjax BERT config",
        hint=", or enable the matching head (pooler / mlm_head / nsp_head)",
    )


def load_hf_bert(directory: str | os.PathLike, **overrides: Any) -> tuple[bert.BERT, dict]:
    """Returns ``(model, params)``: the lmjax BERT described by an HF directory and its weights.

    Example:
      >>> model, params = load_hf_bert('/data/bert-base-uncased')
      >>> out = model.apply({'params': params}, ids, token_type_ids=types, attention_mask=mask)
    """
    model_config = bert_model_config(directory, **overrides)
    return models.build(model_config), bert_params_from_hf(directory, model_config)


def bert_config_from_hf(directory: str | os.PathLike, **overrides: Any) -> bert.BERTConfig:
    """Returns the ``BERTConfig`` dataclass of an HF directory (see ``bert_model_config``)."""
    return models.make_config(bert_model_config(directory, **overrides))


__all__ = [
    "bert_config_fields",
    "bert_config_from_hf",
    "bert_model_config",
    "bert_params_from_hf",
    "load_hf_bert",
]
