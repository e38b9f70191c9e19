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

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lmjax import models
from lmjax.convert.safetensors_checkpoint import (
    CheckpointTensors,
    check_matches_model,
    hf_config,
    hf_tensors,
    layer_norm_params,
)
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
# HF activation names (transformers/activations.py ACT2FN) -> lmjax names.
_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
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


def _encoder_prefix(names: set[str], prefix: str) -> str:
    """The encoder prefix the stored names use: ``prefix`` (task models) or '' (bare models)."""
    return prefix if any(n.startswith(prefix) for n in names) else ""


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
    get = config.get
    problems = []
    if get("position_embedding_type", "absolute") != "absolute":
        problems.append(f"position_embedding_type={get('position_embedding_type')!r}")
    if get("is_decoder", False) or get("add_cross_attention", False):
        problems.append("is_decoder / add_cross_attention (BERT as a decoder)")
    activation = get("hidden_act", "gelu")
    if activation not in _ACTIVATIONS:
        problems.append(f"hidden_act {activation!r} (supported: {sorted(_ACTIVATIONS)})")
    if problems:
        raise ValueError(
            f"This {model_type} config uses what lmjax's BERT does not implement: "
            + "; ".join(problems)
            + "."
        )
    fields = dict(
        vocab_size=int(get("vocab_size")),
        max_len=int(get("max_position_embeddings")),
        type_vocab_size=int(get("type_vocab_size", 2)),
        num_layers=int(get("num_hidden_layers")),
        embed_dim=int(get("hidden_size")),
        num_heads=int(get("num_attention_heads")),
        mlp_dim=int(get("intermediate_size")),
        activation=_ACTIVATIONS[activation],
        layer_norm_eps=float(get("layer_norm_eps", 1e-12)),
        hidden_dropout=float(get("hidden_dropout_prob", 0.1)),
        attention_dropout=float(get("attention_probs_dropout_prob", 0.1)),
        init_std=float(get("initializer_range", 0.02)),
        position_convention=layout["position_convention"],
        pad_token_id=int(get("pad_token_id") or 0),
    )
    if tensor_names is not None:
        names = set(tensor_names)
        prefix = _encoder_prefix(names, layout["prefix"])
        fields["pooler"] = f"{prefix}pooler.dense.weight" in names
        fields["mlm_head"] = any(n.startswith(layout["mlm"]) for n in names)
        fields["nsp_head"] = "cls.seq_relationship.weight" in names
    return fields


def bert_model_config(directory: str | os.PathLike, **overrides: Any) -> ml_collections.ConfigDict:
    """Returns the lmjax model config (``family='bert'`` + every BERTConfig field) of a directory.

    The 'base' preset supplies unstated fields for ``bert`` checkpoints, 'roberta-base' for
    ``roberta``; ``overrides`` (e.g. ``scan_layers=False``, ``dtype='bfloat16'``) win over both.
    """
    config = hf_config(directory)
    fields = bert_config_fields(config, set(hf_tensors(directory)))
    fields.update(overrides)
    return models.config_dict("bert", _LAYOUTS[_model_type(config)]["preset"], **fields)


def _dense(src: CheckpointTensors, name: str, n_in: int, n_out: int) -> dict[str, np.ndarray]:
    """An ``nn.Linear`` (weight [out, in]) as an lmjax kernel [in, out] and bias [out]."""
    return {
        "kernel": src.take(f"{name}.weight", (n_out, n_in)).T,
        "bias": src.take(f"{name}.bias", (n_out,)),
    }


def _layer_params(src: CheckpointTensors, p: str, cfg: bert.BERTConfig) -> dict[str, Any]:
    """One encoder layer's lmjax parameters (unscanned shapes) from HF tensors ``{p}.*``."""
    e, h, d, f = cfg.embed_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
    attention = {}
    for ours, theirs in (("query", "query"), ("key", "key"), ("value", "value")):
        linear = _dense(src, f"{p}.attention.self.{theirs}", e, e)
        attention[ours] = {
            "kernel": linear["kernel"].reshape(e, h, d),  # [E, H, D]
            "bias": linear["bias"].reshape(h, d),  # [H, D]
        }
    out = _dense(src, f"{p}.attention.output.dense", e, e)
    attention["out"] = {"kernel": out["kernel"].reshape(h, d, e), "bias": out["bias"]}  # [H, D, E]
    return {
        "attention": attention,
        "attention_norm": layer_norm_params(src, f"{p}.attention.output.LayerNorm", e),
        "mlp": {
            "wi": _dense(src, f"{p}.intermediate.dense", e, f),  # [E, F]
            "wo": _dense(src, f"{p}.output.dense", f, e),  # [F, E]
        },
        "mlp_norm": layer_norm_params(src, f"{p}.output.LayerNorm", e),
    }


def _as_bert_config(model_config) -> bert.BERTConfig:
    if isinstance(model_config, bert.BERTConfig):
        return model_config
    values = dict(model_config.to_dict() if hasattr(model_config, "to_dict") else model_config)
    values.setdefault("family", "bert")
    if values["family"] != "bert":
        raise ValueError(f"model_config is for family {values['family']!r}, not 'bert'.")
    return models.make_config(values)


def _tied(src: CheckpointTensors, name: str, expected: np.ndarray, what: str) -> None:
    """Checks that a stored tied copy (decoder weight / bias) equals what lmjax ties it to."""
    if src.has(name):
        if not np.array_equal(src.take(name, expected.shape), expected):
            raise ValueError(
                f"Tensor {name!r} differs from {what}, but lmjax's BERT ties them; this "
                "checkpoint cannot be converted exactly."
            )


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
    hf = hf_config(directory)
    layout = _LAYOUTS[_model_type(hf)]
    if model_config is None:
        model_config = bert_model_config(directory)
    cfg = _as_bert_config(model_config)
    tensors = hf_tensors(directory)
    prefix = _encoder_prefix(set(tensors), layout["prefix"])
    src = CheckpointTensors(tensors, directory, _SKIPPED, "bert_model_config")
    e, v = cfg.embed_dim, cfg.vocab_size

    emb = f"{prefix}embeddings"
    token_table = src.take(f"{emb}.word_embeddings.weight", (v, e))  # [V, E]
    params: dict[str, Any] = {
        "token_embed": {"embedding": token_table},
        "position_embed": {
            "embedding": src.take(f"{emb}.position_embeddings.weight", (cfg.max_len, e))
        },
        "embed_norm": layer_norm_params(src, f"{emb}.LayerNorm", e),
    }
    if cfg.type_vocab_size:
        params["type_embed"] = {
            "embedding": src.take(f"{emb}.token_type_embeddings.weight", (cfg.type_vocab_size, e))
        }
    layers = [
        _layer_params(src, f"{prefix}encoder.layer.{i}", cfg) for i in range(cfg.num_layers)
    ]
    if cfg.scan_layers:
        params["encoder"] = {"layers": jax.tree.map(lambda *xs: np.stack(xs), *layers)}  # [N, ...]
    else:
        params["encoder"] = {f"layers_{i}": layer for i, layer in enumerate(layers)}
    if cfg.pooler:
        params["pooler"] = _dense(src, f"{prefix}pooler.dense", e, e)
    if cfg.nsp_head:
        params["nsp"] = _dense(src, "cls.seq_relationship", e, 2)  # kernel [E, 2]
    if cfg.mlm_head:
        mlm = layout["mlm"]
        params["mlm_transform"] = _dense(src, layout["transform"], e, e)
        params["mlm_norm"] = layer_norm_params(src, layout["transform_norm"], e)
        params["mlm_bias"] = src.take(f"{mlm}bias", (v,))
        _tied(src, f"{mlm}decoder.weight", token_table, "the word embeddings")
        _tied(src, f"{mlm}decoder.bias", params["mlm_bias"], f"{mlm}bias")

    if src.unused() and not skip_unexpected:
        raise ValueError(
            f"The checkpoint in {directory} has tensors this lmjax BERT config does not use: "
            f"{src.unused()}. Pass skip_unexpected=True to ignore them, or enable the matching "
            "head (pooler / mlm_head / nsp_head)."
        )
    param_dtype = np.dtype(jnp.dtype(cfg.param_dtype))
    params = jax.tree.map(lambda x: np.asarray(x, dtype=param_dtype), params)
    check_matches_model(params, bert.param_shapes(cfg), "BERT")
    return params



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
