"""Hugging Face DistilBERT checkpoints -> lmjax DistilBERT parameters (``lmjax.models.distilbert``).

Reads a Hugging Face model directory (``config.json`` + safetensors, single or sharded) of a
``DistilBertForMaskedLM`` or a bare ``DistilBertModel`` and returns the lmjax model config
(``distilbert_model_config``) and parameter tree (``distilbert_params_from_hf``), in the scanned
or unscanned layout the config asks for. No PyTorch. ``mlm_head`` follows whether
``vocab_transform.*`` is stored.

Name correspondences (HF ``transformers/models/distilbert/modeling_distilbert.py``; ``nn.Linear``
stores ``weight`` [out, in], so kernels are transposed; prefix ``distilbert.`` in task models,
none in a bare ``DistilBertModel``):

==============================================  ===============================================
HF                                               lmjax (layer i; scanned: stacked [N, ...])
==============================================  ===============================================
``embeddings.word_embeddings.weight`` [V, E]     ``token_embed/embedding``
``embeddings.position_embeddings.weight`` [P, E] ``position_embed/embedding``
``embeddings.LayerNorm.{weight,bias}``           ``embed_norm/{scale,bias}``
``transformer.layer.i.attention.{q,k,v}_lin``    ``encoder/layers_i/attention/{query,key,value}``
                                                 kernel ``W^T`` -> [E, H, D], bias -> [H, D]
``transformer.layer.i.attention.out_lin``        ``.../attention/out`` kernel [H, D, E]
``transformer.layer.i.sa_layer_norm``            ``.../attention_norm``
``transformer.layer.i.ffn.lin1`` [F, E]          ``.../mlp/wi`` kernel [E, F]
``transformer.layer.i.ffn.lin2`` [E, F]          ``.../mlp/wo`` kernel [F, E]
``transformer.layer.i.output_layer_norm``        ``.../mlp_norm``
``vocab_transform``                              ``mlm_transform``
``vocab_layer_norm``                             ``mlm_norm``
``vocab_projector.bias`` [V]                     ``mlm_bias``
``vocab_projector.weight`` [V, E]                tied: checked equal to the word table
==============================================  ===============================================

HF splits the E output features of q/k/v as (H, D) row-major, so feature ``c`` is head
``c // D``, dim ``c % D``. The ``embeddings.position_ids`` buffer is skipped; any other unused
tensor, a missing one or a shape mismatch raises a ``ValueError`` naming the tensor.
``sinusoidal_pos_embds=True`` checkpoints store their fixed sinusoids as the position table, which
lmjax loads as a learned table (same forward values).

Axis legend: N layers, E embed, H heads, D head dim, F mlp, V vocab, P positions.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import ml_collections

from lmjax import models
from lmjax.convert import safetensors_checkpoint as ckpt
from lmjax.models import distilbert

# The HF activation names (ACT2FN) DistilBertConfig's ``activation`` takes -> lmjax names.
_ACTIVATIONS = {name: ckpt.HF_ACTIVATIONS[name] for name in ("gelu", "gelu_new", "relu")}
_SKIPPED = re.compile(r"(^|\.)embeddings\.position_ids$")
_PREFIX = "distilbert."
# TransformerBlock's tensor names (modeling_distilbert.py), under transformer.layer.i.
_LAYER_NAMES = ckpt.PostLNLayerNames(
    query="attention.q_lin", key="attention.k_lin", value="attention.v_lin",
    out="attention.out_lin", attention_norm="sa_layer_norm",
    mlp_in="ffn.lin1", mlp_out="ffn.lin2", mlp_norm="output_layer_norm",
)


def distilbert_config_fields(
    config: Mapping[str, Any], tensor_names: set[str] | None = None
) -> dict[str, Any]:
    """Returns the ``DistilBERTConfig`` fields an HF ``distilbert`` config.json fixes.

    Args:
      config: the parsed config.json.
      tensor_names: the checkpoint's tensor names; when given, ``mlm_head`` follows whether the
        MLM head (``vocab_transform``) is stored.

    Raises:
      ValueError: for another model type or an activation lmjax does not map.
    """
    if config.get("model_type") != "distilbert":
        raise ValueError(
            f"Unsupported Hugging Face model_type {config.get('model_type')!r}; "
            "lmjax.convert.hf_distilbert reads 'distilbert' (use hf_bert for bert / roberta)."
        )
    activation = config.get("activation", "gelu")
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"This distilbert config uses activation {activation!r}, which lmjax does not map "
            f"(supported: {sorted(_ACTIVATIONS)})."
        )
    get = config.get
    fields = dict(
        vocab_size=int(get("vocab_size")),
        max_len=int(get("max_position_embeddings")),
        num_layers=int(get("n_layers")),
        embed_dim=int(get("dim")),
        num_heads=int(get("n_heads")),
        mlp_dim=int(get("hidden_dim")),
        activation=_ACTIVATIONS[activation],
        layer_norm_eps=1e-12,  # hard-coded in modeling_distilbert.py
        hidden_dropout=float(get("dropout", 0.1)),
        attention_dropout=float(get("attention_dropout", 0.1)),
        init_std=float(get("initializer_range", 0.02)),
        pad_token_id=int(get("pad_token_id") or 0),
    )
    if tensor_names is not None:
        fields["mlm_head"] = "vocab_transform.weight" in set(tensor_names)
    return fields


def distilbert_model_config(
    directory: str | os.PathLike, **overrides: Any
) -> ml_collections.ConfigDict:
    """The lmjax model config (``family='distilbert'`` + every field) of an HF directory.

    The 'base' preset supplies unstated fields; ``overrides`` (e.g. ``scan_layers=False``) win.
    """
    fields = distilbert_config_fields(ckpt.hf_config(directory), set(ckpt.hf_tensors(directory)))
    fields.update(overrides)
    return models.config_dict("distilbert", "base", **fields)


def distilbert_params_from_hf(
    directory: str | os.PathLike, model_config=None, *, skip_unexpected: bool = False
) -> dict[str, Any]:
    """Returns lmjax DistilBERT parameters (NumPy arrays) converted from an HF checkpoint.

    Args:
      directory: a Hugging Face ``distilbert`` model directory (safetensors).
      model_config: a ``DistilBERTConfig`` or a ConfigDict / dict of its fields; default
        ``distilbert_model_config(directory)``. Its ``scan_layers`` picks the layout, its
        ``param_dtype`` the storage dtype and ``mlm_head`` whether the head is read.
      skip_unexpected: ignore stored tensors the model does not use (e.g. a classifier head).

    Returns:
      The ``params`` tree, matching ``distilbert.param_shapes(config)`` exactly.

    Raises:
      ValueError: naming the tensor, for missing and unexpected tensors and shape mismatches.
    """
    directory = os.fspath(directory)
    if model_config is None:
        model_config = distilbert_model_config(directory)
    cfg = ckpt.family_config(model_config, "distilbert", distilbert.DistilBERTConfig)
    tensors = ckpt.hf_tensors(directory)
    prefix = ckpt.encoder_prefix(set(tensors), _PREFIX)
    src = ckpt.CheckpointTensors(tensors, directory, _SKIPPED, "distilbert_model_config")
    e, v = cfg.embed_dim, cfg.vocab_size

    params = ckpt.embedding_params(src, f"{prefix}embeddings", v, cfg.max_len, e)  # no token types
    layers = [
        ckpt.post_ln_layer_params(
            src, f"{prefix}transformer.layer.{i}", _LAYER_NAMES, e, cfg.num_heads, cfg.mlp_dim
        )
        for i in range(cfg.num_layers)
    ]
    params["encoder"] = ckpt.layer_stack(layers, cfg.scan_layers)
    if cfg.mlm_head:
        params.update(ckpt.mlm_head_params(
            src, "DistilBERT", transform="vocab_transform", norm="vocab_layer_norm",
            bias="vocab_projector.bias", decoder="vocab_projector", hidden=e, width=e,
            token_table=params["token_embed"]["embedding"],
        ))
    return ckpt.finished_params(
        src, params, cfg, distilbert.param_shapes(cfg), "DistilBERT", skip_unexpected,
        user="this lmjax DistilBERT config", hint=", or set mlm_head=True",
    )


def load_hf_distilbert(
    directory: str | os.PathLike, **overrides: Any
) -> tuple[distilbert.DistilBERT, dict]:
    """Returns ``(model, params)``: the lmjax DistilBERT of an HF directory and its weights.

    Example:
      >>> model, params = load_hf_distilbert('/data/distilbert-base-uncased')
      >>> out = model.apply({'params': params}, ids, attention_mask=mask)
    """
    model_config = distilbert_model_config(directory, **overrides)
    return models.build(model_config), distilbert_params_from_hf(directory, model_config)


__all__ = [
    "distilbert_config_fields",
    "distilbert_model_config",
    "distilbert_params_from_hf",
    "load_hf_distilbert",
]
